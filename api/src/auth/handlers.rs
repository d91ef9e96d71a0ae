//! Register, login, refresh and logout.

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, post, web};
use validator::Validate;

use super::extract::Caller;
use super::model::{LoginRequest, RefreshRequest, TokenPair};
use super::sign_in;
use crate::body::Body;
use crate::client_address::ClientAddress;
use crate::error::{ApiError, Code};
use crate::state::AppState;
use crate::users::model::{RegisterRequest, Role, User, normalize_email};
use crate::users::store::{NewUser, RegisterOutcome};

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
        RegisterOutcome::Created(user) => Ok(HttpResponse::Created()
            .insert_header((LOCATION, format!("/api/v1/users/{}", user.id)))
            .json(user)),
        RegisterOutcome::EmailTaken => Err(ApiError::conflict(
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
        (status = 429, description = "Too many failed attempts from this address, or from unknown addresses for this account; see Retry-After"),
    )
)]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    address: ClientAddress,
    body: Body<LoginRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    body.validate()?;
    let LoginRequest { email, password } = body.into_inner();
    sign_in::sign_in(&state, &normalize_email(&email), password, address)
        .await
        .map(web::Json)
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
    sign_in::refresh(&state, &body.into_inner().refresh_token)
        .await
        .map(web::Json)
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
