//! Register, login, refresh and logout.

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, post, web};
use uuid::Uuid;
use validator::Validate;

use super::extract::Caller;
use super::model::{LoginRequest, RefreshRequest, TokenPair};
use super::store::Rotation;
use super::tokens;
use crate::body::Body;
use crate::error::{ApiError, Code};
use crate::state::AppState;
use crate::users::model::{RegisterRequest, Role, User, normalize_email};
use crate::users::store::NewUser;

const INVALID_CREDENTIALS: &str = "invalid email or password";

/// Create a customer account.
#[utoipa::path(
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = User),
        (status = 409, description = "Email already registered"),
        (status = 422, description = "Invalid fields"),
    )
)]
#[post("/auth/register")]
pub async fn register(
    state: web::Data<AppState>,
    body: Body<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut body = body.into_inner();
    // Validate the email as it is stored: " Ann@Example.com " is ann@example.com.
    body.email = normalize_email(&body.email);
    body.validate()?;
    let RegisterRequest {
        email,
        password,
        name,
    } = body;
    let password_hash = state.passwords.hash(password).await?;
    let new = NewUser {
        email: &email,
        name: name.trim(),
        role: Role::Customer,
        password_hash: &password_hash,
    };
    match state.users().create(new).await? {
        Ok(user) => Ok(HttpResponse::Created()
            .insert_header((LOCATION, format!("/api/v1/users/{}", user.id)))
            .json(user)),
        Err(_) => Err(ApiError::conflict(
            Code::EmailTaken,
            "an account with this email already exists",
        )),
    }
}

/// Exchange email and password for a token pair.
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 401, description = "Wrong email or password, or disabled account"),
        (status = 429, description = "Too many failed attempts; see Retry-After"),
    )
)]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    body: Body<LoginRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    body.validate()?;
    let LoginRequest { email, password } = body.into_inner();
    let email = normalize_email(&email);
    let sessions = state.sessions();
    if let Some(retry_after_secs) = sessions.lock_remaining(&email).await? {
        state
            .metrics
            .logins_failed
            .with_label_values(&["locked"])
            .inc();
        return Err(ApiError::TooManyRequests {
            detail: "too many failed logins for this account; try again later".to_owned(),
            retry_after_secs,
        });
    }
    let stored = state.users().find_by_email(&email).await?;
    // The same argon2 work whether or not the email exists: no account probing by timing.
    let valid = state
        .passwords
        .verify(password, stored.as_ref().map(|s| s.password_hash.clone()))
        .await?;
    let user = match stored {
        Some(stored) if valid => stored.user,
        _ => {
            state
                .metrics
                .logins_failed
                .with_label_values(&["credentials"])
                .inc();
            sessions.record_failure(&email).await?;
            return Err(ApiError::Unauthorized(INVALID_CREDENTIALS.to_owned()));
        }
    };
    if user.disabled {
        state
            .metrics
            .logins_failed
            .with_label_values(&["disabled"])
            .inc();
        return Err(ApiError::Unauthorized(
            "this account is disabled".to_owned(),
        ));
    }
    sessions.clear_failures(&email).await?;
    let session_id = Uuid::new_v4();
    let refresh_token = tokens::new_refresh_token(session_id);
    sessions
        .create(session_id, user.id, &tokens::digest(&refresh_token))
        .await?;
    token_pair(&state, user.id, session_id, user.role, refresh_token).map(web::Json)
}

/// Exchange a refresh token for a new pair. Each refresh token works once;
/// presenting an already used one ends the whole session, except within a
/// short reuse interval after its rotation: a retry (after a 503 or a lost
/// answer) gets the same new pair again.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair", body = TokenPair),
        (status = 401, description = "Invalid, expired or reused refresh token"),
        (status = 503, description = "Not confirmed; retry with the same refresh token"),
    )
)]
#[post("/auth/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    body: Body<RefreshRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    body.validate()?;
    let presented = body.into_inner().refresh_token;
    let (Some(session_id), Some(successor)) = (
        tokens::refresh_token_session(&presented),
        state.tokens.successor_of(&presented),
    ) else {
        return Err(ApiError::Unauthorized(
            "refresh token is malformed".to_owned(),
        ));
    };
    let rotation = state
        .sessions()
        .rotate(
            session_id,
            &tokens::digest(&presented),
            &tokens::digest(&successor),
        )
        .await?;
    let (user_id, rotated_at_ms) = match rotation {
        Rotation::Rotated {
            user_id,
            rotated_at_ms,
        } => (user_id, rotated_at_ms),
        Rotation::Missing => {
            return Err(ApiError::Unauthorized(
                "refresh token is invalid or expired".to_owned(),
            ));
        }
        Rotation::Reused => {
            tracing::warn!(%session_id, "refresh token reused; session ended");
            return Err(ApiError::Unauthorized(
                "refresh token was already used; the session has been ended".to_owned(),
            ));
        }
    };
    let live = state
        .sessions()
        .check(session_id, user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account is disabled".to_owned()))?;
    let rotated_at_secs = rotated_at_ms / 1000;
    let access_token = state
        .tokens
        .issue_rotated_access(user_id, session_id, live.role, &presented, rotated_at_secs)
        .map_err(|e| ApiError::Internal(format!("cannot sign token: {e}")))?;
    let expires_at = rotated_at_secs + state.tokens.access_ttl_secs;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    Ok(web::Json(TokenPair {
        access_token,
        refresh_token: successor,
        token_type: "Bearer",
        expires_in: expires_at.saturating_sub(now),
    }))
}

/// End the current session: its access and refresh tokens stop working on every replica.
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in"),
    )
)]
#[post("/auth/logout")]
pub async fn logout(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state
        .sessions()
        .revoke(caller.session_id, caller.user_id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

fn token_pair(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    role: Role,
    refresh_token: String,
) -> Result<TokenPair, ApiError> {
    let access_token = state
        .tokens
        .issue_access(user_id, session_id, role)
        .map_err(|e| ApiError::Internal(format!("cannot sign token: {e}")))?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl_secs,
    })
}
