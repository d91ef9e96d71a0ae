//! Liveness (the process answers) and readiness (the Redis master answers and
//! the first admin has been bootstrapped), for nginx, compose and orchestrators.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// `host:port` of the Redis master this instance writes to (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

/// The process is up.
#[utoipa::path(tag = "health", responses((status = 200, description = "The process is up", body = Health)))]
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        master: None,
    })
}

/// Ready to serve: the Redis master (found through the Sentinels) answers.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "The Redis master answers: ready for traffic", body = Health),
        (status = 503, description = "Redis master unreachable or startup not finished"),
    )
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.bootstrap_finished() {
        return Err(ApiError::Unavailable(
            "the first admin is still being created".to_owned(),
        ));
    }
    state.redis.ping_master().await?;
    let master = state.redis.topology().master.map(|m| m.to_string());
    Ok(HttpResponse::Ok().json(Health {
        status: "ok",
        master,
    }))
}

pub fn configure(config: &mut utoipa_actix_web::service_config::ServiceConfig) {
    config.service(live).service(ready);
}
