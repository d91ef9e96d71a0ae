//! Purchases: atomic, idempotent orders and their cancellation.

mod handlers;
pub mod model;
pub mod store;

pub fn configure(config: &mut utoipa_actix_web::service_config::ServiceConfig) {
    config
        .service(handlers::create)
        .service(handlers::list)
        .service(handlers::get)
        .service(handlers::cancel);
}
