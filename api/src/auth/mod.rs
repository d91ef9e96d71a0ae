//! Authentication: passwords, tokens, sessions, signing in and refreshing,
//! and the request guards.

pub mod extract;
mod handlers;
pub mod model;
pub mod password;
mod sign_in;
pub mod store;
pub mod throttle;
pub mod tokens;

pub use extract::{Admin, Caller};

pub fn configure(config: &mut utoipa_actix_web::service_config::ServiceConfig) {
    config
        .service(handlers::register)
        .service(handlers::login)
        .service(handlers::refresh)
        .service(handlers::logout);
}
