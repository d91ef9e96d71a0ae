//! Products: the public catalog and admin writes.

mod handlers;
pub mod model;
pub mod store;

pub fn configure(config: &mut utoipa_actix_web::service_config::ServiceConfig) {
    config
        .service(handlers::list)
        .service(handlers::get)
        .service(handlers::create)
        .service(handlers::update)
        .service(handlers::add_stock)
        .service(handlers::archive);
}
