//! Request guards: [`Caller`] (any signed-in user) and [`Admin`].
//!
//! A bearer token is accepted when its signature and expiry are valid AND its
//! session still exists in Redis AND its user is not disabled. The role used is
//! the one stored now, not the one in the token, so a demotion takes effect at
//! once.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use crate::users::model::Role;

/// The authenticated user of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A caller with the admin role (403 otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub Caller);

fn bearer(request: &HttpRequest) -> Result<String, ApiError> {
    let header = request.headers().get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing Authorization: Bearer <access token>".to_owned())
    })?;
    let text = header.to_str().map_err(|_| {
        ApiError::Unauthorized("Authorization header is not readable text".to_owned())
    })?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <access token>`".to_owned(),
        )),
    }
}

async fn authenticate(
    state: web::Data<AppState>,
    token: Result<String, ApiError>,
) -> Result<Caller, ApiError> {
    let token = token?;
    let claims = state
        .tokens
        .verify_access(&token)
        .map_err(|error| ApiError::Unauthorized(format!("access token rejected: {error}")))?;
    let live = state
        .sessions()
        .check(claims.sid, claims.sub)
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized("the session has ended or the account is disabled".to_owned())
        })?;
    Ok(Caller {
        user_id: claims.sub,
        session_id: claims.sid,
        role: live.role,
    })
}

fn state_of(request: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    request
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state is not configured".to_owned()))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state_of(request);
        let token = bearer(request);
        Box::pin(async move { authenticate(state?, token).await })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(request, payload);
        Box::pin(async move {
            let caller = caller.await?;
            if caller.is_admin() {
                Ok(Admin(caller))
            } else {
                Err(ApiError::Forbidden)
            }
        })
    }
}
