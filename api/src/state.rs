//! `AppState`: what every worker of one instance shares, and the stores
//! handlers reach Redis through (`state.purchases()`, ...). Apart from
//! `startup.rs`, so that no handler depends on the file that binds sockets.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::web;

use crate::auth::password::Passwords;
use crate::auth::store::SessionStore;
use crate::auth::throttle::PasswordChecks;
use crate::auth::tokens::Tokens;
use crate::client_address::TrustedProxies;
use crate::config::{AuthSettings, LimitSettings, Settings, StoreSettings};
use crate::metrics::Metrics;
use crate::products::store::ProductStore;
use crate::purchases::store::PurchaseStore;
use crate::redis::{Keys, Redis};
use crate::users::store::UserStore;
use crate::write_limits::WriteLimits;

/// Shared by every worker of one instance.
#[derive(Debug)]
pub struct AppState {
    /// Pools to the Redis master and replicas, following the Sentinels.
    pub redis: Redis,
    /// Builds every key under this deployment's prefix.
    pub keys: Keys,
    /// Signs and verifies access tokens.
    pub tokens: Tokens,
    /// argon2id hashing on the blocking pool.
    pub passwords: Passwords,
    /// Business and Redis metrics (HTTP metrics come from the middleware).
    pub metrics: Metrics,
    /// Token lifetimes and login throttling.
    pub auth: AuthSettings,
    /// Currency and idempotency settings.
    pub store: StoreSettings,
    /// Per-user write limits.
    pub limits: LimitSettings,
    /// Reverse proxies whose `X-Real-IP` names the client.
    pub trusted_proxies: web::Data<TrustedProxies>,
    /// Set once the bootstrap admin exists (or none is configured); readiness waits for it.
    bootstrap_done: AtomicBool,
}

impl AppState {
    /// Starts the Redis pools (Redis is found in the background) and builds
    /// everything else from `settings`.
    pub fn new(settings: &Settings, metrics: Metrics) -> Self {
        Self {
            redis: Redis::start(&settings.redis, metrics.clone()),
            keys: Keys::new(settings.redis.key_prefix.clone()),
            tokens: Tokens::new(
                &settings.auth.jwt_secret,
                settings.auth.access_token_ttl_secs,
            ),
            passwords: Passwords::new(settings.auth.password_hashing_concurrency),
            metrics,
            auth: settings.auth.clone(),
            store: settings.store.clone(),
            limits: settings.limits.clone(),
            trusted_proxies: web::Data::new(TrustedProxies(
                settings.server.trusted_proxies.clone(),
            )),
            bootstrap_done: AtomicBool::new(false),
        }
    }

    pub fn users(&self) -> UserStore<'_> {
        UserStore {
            redis: &self.redis,
            keys: &self.keys,
        }
    }
    pub fn sessions(&self) -> SessionStore<'_> {
        SessionStore {
            redis: &self.redis,
            keys: &self.keys,
            settings: &self.auth,
        }
    }
    pub fn password_checks(&self) -> PasswordChecks<'_> {
        PasswordChecks {
            redis: &self.redis,
            keys: &self.keys,
            settings: &self.auth,
            metrics: &self.metrics,
        }
    }

    pub fn write_limits(&self) -> WriteLimits<'_> {
        WriteLimits {
            redis: &self.redis,
            keys: &self.keys,
            settings: &self.limits,
        }
    }

    pub fn products(&self) -> ProductStore<'_> {
        ProductStore {
            redis: &self.redis,
            keys: &self.keys,
        }
    }
    pub fn purchases(&self) -> PurchaseStore<'_> {
        PurchaseStore {
            redis: &self.redis,
            keys: &self.keys,
        }
    }
    pub fn bootstrap_finished(&self) -> bool {
        self.bootstrap_done.load(Ordering::Acquire)
    }
    pub(crate) fn finish_bootstrap(&self) {
        self.bootstrap_done.store(true, Ordering::Release);
    }
}
