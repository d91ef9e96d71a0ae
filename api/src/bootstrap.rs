//! Creates the first admin from configuration, never from a public endpoint.
//! Runs in the background at startup and retries until Redis answers; safe to
//! run on every replica at every start (the email index makes it idempotent).

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::BootstrapAdminSettings;
use crate::state::AppState;
use crate::users::model::{Role, normalize_email};
use crate::users::store::{NewUser, RegisterOutcome};

/// Retries until the admin exists (or is found to be taken by a customer).
pub async fn ensure_admin(state: &AppState, settings: &BootstrapAdminSettings) {
    if settings.email.is_empty() {
        return;
    }
    let email = normalize_email(&settings.email);
    let mut delay = Duration::from_millis(100);
    loop {
        match try_once(state, settings, &email).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "bootstrap admin: Redis not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn try_once(
    state: &AppState,
    settings: &BootstrapAdminSettings,
    email: &str,
) -> Result<(), crate::error::ApiError> {
    let users = state.users();
    if let Some(existing) = users.find_by_email(email).await? {
        if existing.user.role != Role::Admin {
            // Someone registered this email as a customer. Promoting that
            // account would hand admin rights to whoever owns its password.
            tracing::error!(
                email,
                "bootstrap admin email belongs to a customer account; not promoting it"
            );
        }
        return Ok(());
    }
    let password_hash = state
        .passwords
        .hash(settings.password.expose_secret().to_owned())
        .await?;
    let new = NewUser {
        email,
        name: &settings.name,
        role: Role::Admin,
        password_hash: &password_hash,
    };
    match users.create(new).await? {
        RegisterOutcome::Created(user) => {
            tracing::info!(user_id = %user.id, "bootstrap admin created");
        }
        RegisterOutcome::EmailTaken => tracing::info!("bootstrap admin already exists"),
    }
    Ok(())
}
