//! `TestStack`: a real Redis HA topology plus one or more API instances built
//! with the same `Application::build` as production, each on its own port, all
//! sharing one key namespace that no other test uses.

use std::sync::Arc;
use std::time::Duration;

use evergreen_api::config::Settings;
use evergreen_api::startup::Application;
use evergreen_api::state::AppState;

use crate::client::{Api, Session};
use crate::lab::Lab;
use crate::redis_ha::{RedisHa, RedisHaOptions};

pub const ADMIN_EMAIL: &str = "admin@evergreen.test";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The key every test instance signs access tokens with; tests forge tokens with it.
pub const JWT_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Per-user write limits no test's traffic meets.
pub fn unlimited_writes() -> evergreen_api::config::LimitSettings {
    evergreen_api::config::LimitSettings {
        writes_per_second_per_user: 100_000.0,
        write_burst_per_user: 100_000,
    }
}

/// One running API instance.
#[derive(Debug)]
pub struct TestApp {
    pub base_url: String,
    pub port: u16,
    pub metrics_port: u16,
    pub state: Arc<AppState>,
}

/// Redis HA plus API instances.
#[derive(Debug)]
pub struct TestStack {
    pub redis: RedisHa,
    pub apps: Vec<TestApp>,
    pub key_prefix: String,
}

impl TestStack {
    /// One instance over the topology `scripts/test` shares between the
    /// tests that break nothing ([`RedisHa::shared`]), or over a topology
    /// of its own when none is shared. A test that breaks Redis uses
    /// [`Self::start_own`].
    pub async fn start() -> Self {
        Self::sharing(1).await
    }

    /// `instances` instances over the shared topology, or over one of their
    /// own when none is shared (see [`Self::start`]).
    pub async fn sharing(instances: usize) -> Self {
        match RedisHa::shared() {
            Some(redis) => Self::with_redis(instances, redis).await,
            None => Self::start_with(instances, RedisHaOptions::default()).await,
        }
    }

    /// One instance over a topology of its own, which the test may break.
    pub async fn start_own() -> Self {
        Self::start_with(1, RedisHaOptions::default()).await
    }

    pub async fn start_with(instances: usize, options: RedisHaOptions) -> Self {
        Self::with_redis(instances, RedisHa::start(options).await).await
    }

    /// Redis HA in `lab` (a namespace per node), API instances in this
    /// process, which reaches the lab through its own leg.
    pub async fn start_in(instances: usize, options: RedisHaOptions, lab: Arc<Lab>) -> Self {
        Self::with_redis(instances, RedisHa::start_in(options, lab).await).await
    }

    async fn with_redis(instances: usize, redis: RedisHa) -> Self {
        let key_prefix = format!("evergreen-test:{}:", uuid::Uuid::new_v4().simple());
        let mut stack = Self {
            redis,
            apps: Vec::new(),
            key_prefix,
        };
        for _ in 0..instances {
            stack.spawn_app().await;
        }
        stack
    }

    /// An admin connection to the current master, for reading (or planting)
    /// what the API wrote.
    pub async fn master_connection(&self) -> redis::aio::MultiplexedConnection {
        self.redis.connection(self.redis.master_port().await).await
    }

    /// The keys of this stack's prefix.
    pub fn keys(&self) -> evergreen_api::redis::Keys {
        evergreen_api::redis::Keys::new(self.key_prefix.clone())
    }

    /// Settings every instance of this stack uses; tests may change them before
    /// calling [`Self::spawn_app_with`].
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::load_with_overrides(&[
            ("auth.jwt_secret", JWT_SECRET.to_owned()),
            ("bootstrap_admin.email", ADMIN_EMAIL.to_owned()),
            ("bootstrap_admin.password", ADMIN_PASSWORD.to_owned()),
            ("server.port", "0".to_owned()),
            ("server.metrics_port", "0".to_owned()),
            ("server.workers", "2".to_owned()),
        ])
        .expect("test settings are valid");
        settings.redis.sentinels = self.redis.sentinel_addrs();
        // The API's own ACL user, as in compose (its default `redis.username`).
        let password = &self.redis.credentials().api;
        settings.redis.password = password.clone().into();
        settings.redis.sentinel_password = password.clone().into();
        settings.redis.key_prefix = self.key_prefix.clone();
        // Buyers in a loop (failover traffic, concurrency) write far faster
        // than a shopper: the per-user limit is tested apart, at its defaults
        // (security::bounded_resources).
        settings.limits = unlimited_writes();
        settings
    }

    pub async fn spawn_app(&mut self) -> &TestApp {
        let settings = self.settings();
        self.spawn_app_with(settings).await
    }

    /// Starts an instance and waits until it is ready.
    pub async fn spawn_app_with(&mut self, settings: Settings) -> &TestApp {
        if std::env::var_os("EVERGREEN_TEST_LOG").is_some() {
            evergreen_api::telemetry::init_subscriber();
        }
        let application = Application::build(settings)
            .await
            .expect("the API binds its ports");
        let app = TestApp {
            base_url: format!("http://127.0.0.1:{}", application.port()),
            port: application.port(),
            metrics_port: application.metrics_port(),
            state: application.state(),
        };
        tokio::spawn(application.run_until_stopped());
        Api::new(&app.base_url)
            .wait_until_ready(Duration::from_secs(15))
            .await;
        self.apps.push(app);
        self.apps.last().expect("just pushed")
    }

    /// A client of instance `index`.
    pub fn api(&self, index: usize) -> Api {
        Api::new(&self.apps[index].base_url)
    }

    /// The bootstrap admin, signed in on instance 0.
    pub async fn admin(&self) -> Session {
        self.api(0).login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// A new customer, registered and signed in on instance 0.
    pub async fn customer(&self) -> Session {
        self.api(0).new_customer().await
    }
}
