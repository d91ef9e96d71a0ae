//! Own profile and admin user management.

use actix_web::{get, patch, web};
use uuid::Uuid;
use validator::Validate;

use super::model::{AdminUpdateUserRequest, Role, UpdateMeRequest, User};
use super::store::{EndSessions, UpdateUserOutcome, UserChanges};
use crate::auth::{Admin, Caller};
use crate::body::Body;
use crate::client_address::ClientAddress;
use crate::error::{ApiError, Code};
use crate::pagination::{Page, PageQuery, decode_optional_cursor};
use crate::state::AppState;

const USERS_CURSOR_SCOPE: &str = "users";

/// The signed-in user.
#[utoipa::path(
    operation_id = "get_me",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = User),
        (status = 401),
    )
)]
#[get("/users/me")]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<web::Json<User>, ApiError> {
    let stored = state
        .users()
        .get(caller.user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("user not found".to_owned()))?;
    Ok(web::Json(stored.user))
}

/// Change one's name or password. A password change needs `current_password`
/// and ends every other session.
#[utoipa::path(
    operation_id = "update_me",
    tag = "users",
    security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "The updated profile", body = User),
        (status = 401),
        (status = 422, description = "Invalid fields or wrong current password"),
        (status = 429, description = "Too many wrong passwords; see Retry-After"),
    )
)]
#[patch("/users/me")]
pub async fn update_me(
    state: web::Data<AppState>,
    caller: Caller,
    address: ClientAddress,
    body: Body<UpdateMeRequest>,
) -> Result<web::Json<User>, ApiError> {
    body.validate()?;
    let UpdateMeRequest {
        name,
        password,
        current_password,
    } = body.into_inner();
    let mut changes = UserChanges {
        name: name.map(|name| name.trim().to_owned()),
        ..UserChanges::default()
    };
    if let Some(password) = password {
        changes.password_hash =
            Some(new_password_hash(&state, &caller, address, current_password, password).await?);
        changes.end_sessions = EndSessions::AllBut(caller.session_id);
    }
    updated(
        state
            .users()
            .update(caller.user_id, caller.user_id, &changes)
            .await?,
    )
}

/// The hash of `password`, once `current` is shown to be the caller's
/// password (422 otherwise: a password change needs it). The check is
/// throttled like a sign-in: a stolen access token is no way to guess the
/// password faster.
async fn new_password_hash(
    state: &AppState,
    caller: &Caller,
    address: ClientAddress,
    current: Option<String>,
    password: String,
) -> Result<String, ApiError> {
    let current = current.ok_or_else(|| {
        ApiError::invalid_field(
            "current_password",
            "required",
            "is required to change the password",
        )
    })?;
    let stored = state
        .users()
        .get(caller.user_id)
        .await?
        .ok_or_else(user_not_found)?;
    let checks = state.password_checks();
    let reservation = checks.reserve(&stored.user.email, address).await?;
    let verify = async {
        let valid = state
            .passwords
            .verify(current, Some(stored.password_hash))
            .await?;
        Ok((valid, ()))
    };
    if !checks.settle(reservation, verify).await?.0 {
        return Err(ApiError::invalid_field(
            "current_password",
            "mismatch",
            "is not the current password",
        ));
    }
    state.passwords.hash(password).await
}

fn updated(outcome: UpdateUserOutcome) -> Result<web::Json<User>, ApiError> {
    match outcome {
        UpdateUserOutcome::Updated(stored) => Ok(web::Json(stored.user)),
        UpdateUserOutcome::Missing => Err(user_not_found()),
        UpdateUserOutcome::LastAdmin => Err(ApiError::conflict(
            Code::LastAdmin,
            "this is the last enabled admin: promote another one first",
        )),
    }
}

fn user_not_found() -> ApiError {
    ApiError::NotFound("user not found".to_owned())
}

/// All users, oldest first (admin).
#[utoipa::path(
    operation_id = "list_users",
    tag = "users",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = Page<User>),
        (status = 401),
        (status = 403),
    )
)]
#[get("/users")]
pub async fn list(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<User>>, ApiError> {
    query.validate()?;
    let after = decode_optional_cursor(USERS_CURSOR_SCOPE, query.cursor.as_deref())?;
    let (items, next) = state.users().list(after.as_deref(), query.limit()).await?;
    Ok(web::Json(Page::new(items, next, USERS_CURSOR_SCOPE)))
}

/// One user (admin).
#[utoipa::path(
    operation_id = "get_user",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 403),
        (status = 404),
    )
)]
#[get("/users/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<web::Json<User>, ApiError> {
    let stored = state.users().get(*id).await?.ok_or_else(user_not_found)?;
    Ok(web::Json(stored.user))
}

/// Change a user's role or disable it (admin). Disabling ends its sessions at once.
/// Admins cannot demote or disable themselves, nor the last enabled admin.
#[utoipa::path(
    operation_id = "update_user",
    tag = "users",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = AdminUpdateUserRequest,
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 403),
        (status = 404),
        (status = 409, description = "An admin tried to demote or disable themselves, or the last enabled admin"),
    )
)]
#[patch("/users/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<Uuid>,
    body: Body<AdminUpdateUserRequest>,
) -> Result<web::Json<User>, ApiError> {
    body.validate()?;
    let id = id.into_inner();
    let AdminUpdateUserRequest { role, disabled } = body.into_inner();
    if id == admin.user_id && (role == Some(Role::Customer) || disabled == Some(true)) {
        return Err(ApiError::conflict(
            Code::SelfLockout,
            "admins cannot demote or disable themselves",
        ));
    }
    let changes = UserChanges {
        role,
        disabled,
        // Disabling ends every session at once.
        end_sessions: if disabled == Some(true) {
            EndSessions::All
        } else {
            EndSessions::None
        },
        ..UserChanges::default()
    };
    updated(state.users().update(id, admin.user_id, &changes).await?)
}
