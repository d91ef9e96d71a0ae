//! Users: profiles and admin management. Registration and sign-in live in `auth`.

mod handlers;
pub mod model;
pub mod store;

pub fn configure(config: &mut utoipa_actix_web::service_config::ServiceConfig) {
    // `/users/me` before `/users/{id}`: "me" is not a UUID and would be a 400.
    config
        .service(handlers::me)
        .service(handlers::update_me)
        .service(handlers::list)
        .service(handlers::get)
        .service(handlers::update);
}
