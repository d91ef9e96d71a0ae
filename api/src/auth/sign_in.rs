//! Signing in and refreshing: what the auth handlers call. Sign-in reserves
//! a password check (throttled per account and client address, see
//! [`super::throttle`]), checks the password (the same argon2 work whether or
//! not the email exists) and the account; refresh rotates the session's refresh
//! token, or hands out the same successor pair again to a retry.

use uuid::Uuid;

use super::model::TokenPair;
use super::store::Rotation;
use super::tokens;
use crate::client_address::ClientAddress;
use crate::error::ApiError;
use crate::state::AppState;
use crate::users::model::Role;

const INVALID_CREDENTIALS: &str = "invalid email or password";

/// A new session for `email` (normalised) and `password`, asked for from
/// `address`.
pub async fn sign_in(
    state: &AppState,
    email: &str,
    password: String,
    address: ClientAddress,
) -> Result<TokenPair, ApiError> {
    let checks = state.password_checks();
    let reservation = match checks.reserve(email, address).await {
        Ok(reservation) => reservation,
        Err(refused) => {
            if matches!(refused, ApiError::TooManyRequests { .. }) {
                state
                    .metrics
                    .logins_failed
                    .with_label_values(&["throttled"])
                    .inc();
            }
            return Err(refused);
        }
    };
    // The same argon2 work whether or not the email exists: no account probing by timing.
    let (valid, stored) = checks
        .settle(reservation, async {
            let stored = state.users().find_by_email(email).await?;
            let hash = stored.as_ref().map(|s| s.password_hash.clone());
            Ok((state.passwords.verify(password, hash).await?, stored))
        })
        .await?;
    let user = match stored {
        Some(stored) if valid => stored.user,
        _ => {
            state
                .metrics
                .logins_failed
                .with_label_values(&["credentials"])
                .inc();
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
    let session_id = Uuid::new_v4();
    let refresh_token = tokens::new_refresh_token(session_id);
    sessions_create(state, session_id, user.id, &refresh_token).await?;
    token_pair(state, user.id, session_id, user.role, refresh_token)
}

async fn sessions_create(
    state: &AppState,
    session_id: Uuid,
    user_id: Uuid,
    refresh_token: &str,
) -> Result<(), ApiError> {
    let ended = state
        .sessions()
        .create(session_id, user_id, &tokens::digest(refresh_token))
        .await?;
    if ended > 0 {
        tracing::info!(%user_id, ended, "sessions beyond the per-user cap ended");
    }
    Ok(())
}

/// The pair that replaces the one of refresh token `presented`.
pub async fn refresh(state: &AppState, presented: &str) -> Result<TokenPair, ApiError> {
    let (Some(session_id), Some(successor)) = (
        tokens::refresh_token_session(presented),
        state.tokens.successor_of(presented),
    ) else {
        return Err(ApiError::Unauthorized(
            "refresh token is malformed".to_owned(),
        ));
    };
    let rotation = state
        .sessions()
        .rotate(
            session_id,
            &tokens::digest(presented),
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
        .issue_rotated_access(user_id, session_id, live.role, presented, rotated_at_secs)
        .map_err(|e| ApiError::Internal(format!("cannot sign token: {e}")))?;
    let expires_at = rotated_at_secs + state.tokens.access_ttl_secs;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    Ok(TokenPair {
        access_token,
        refresh_token: successor,
        token_type: "Bearer",
        expires_in: expires_at.saturating_sub(now),
    })
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
