//! Typed settings: compiled-in defaults < optional file < `EVERGREEN_*` environment,
//! validated once at startup so that every problem is reported together.

use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use validator::{Validate, ValidationError, ValidationErrors};

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Shortest JWT secret accepted: HS256 needs at least 256 bits of key.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// The password policy, in characters: for registration, password changes
/// and the bootstrap admin alike (SPEC: 8..128).
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP listeners.
    #[validate(nested)]
    pub server: ServerSettings,
    /// Where Redis is found and how long we wait for it.
    #[validate(nested)]
    pub redis: RedisSettings,
    /// Token lifetimes, the signing key, password-check throttling, sessions.
    #[validate(nested)]
    pub auth: AuthSettings,
    /// The admin account created at startup.
    #[validate(nested)]
    pub bootstrap_admin: BootstrapAdminSettings,
    /// Store-wide business settings.
    #[validate(nested)]
    pub store: StoreSettings,
    /// Per-user rate limits on writes.
    #[validate(nested)]
    pub limits: LimitSettings,
}

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Bind address of both listeners.
    pub host: String,
    /// Public API port; 0 lets the OS choose (read it back from `Application::port`).
    pub port: u16,
    /// Port of the Prometheus `/metrics` listener; 0 lets the OS choose.
    pub metrics_port: u16,
    /// Actix workers; 0 means one per core.
    #[validate(range(max = 256))]
    pub workers: usize,
    /// Largest JSON body accepted, in bytes.
    #[validate(range(min = 1024, max = 10485760))]
    pub json_body_limit_bytes: usize,
    /// Grace period for in-flight requests on shutdown.
    #[validate(range(max = 300))]
    pub shutdown_timeout_secs: u64,
    /// Peers (addresses or CIDR blocks) whose `X-Real-IP` header names the
    /// client: the reverse proxy in front. From anyone else the header is
    /// ignored and the connection's own address is the client's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `host:port` of every Sentinel.
    #[validate(length(min = 1, message = "at least one Sentinel address is required"))]
    #[validate(custom(function = "validate_addresses"))]
    pub sentinels: Vec<String>,
    /// Name of the monitored master (`sentinel monitor <name> ...`).
    #[validate(length(min = 1))]
    pub master_name: String,
    /// The API's ACL user on the data nodes and the Sentinels (`user
    /// evergreen-api` in `redis/*.conf.template`); empty: the `default` user.
    pub username: String,
    /// That user's password on the data nodes; empty disables AUTH.
    pub password: SecretString,
    /// That user's password on the Sentinels; empty disables AUTH.
    pub sentinel_password: SecretString,
    /// Prefix of every key this service reads or writes.
    #[validate(length(min = 1, max = 64))]
    pub key_prefix: String,
    /// TCP connect plus handshake bound for any Redis or Sentinel connection.
    #[validate(range(min = 10, max = 500))]
    pub connect_timeout_ms: u64,
    /// Bound on any single command or pipeline.
    #[validate(range(min = 10, max = 2000))]
    pub command_timeout_ms: u64,
    /// Bound on one whole Redis operation, retries and replica confirmation included.
    #[validate(range(min = 100, max = 5000))]
    pub operation_timeout_ms: u64,
    /// `WAIT` timeout: how long a write waits for replica acknowledgements.
    #[validate(range(min = 10, max = 1900))]
    pub replica_ack_timeout_ms: u64,
    /// Interval between two rounds of asking the Sentinels for the master.
    #[validate(range(min = 50, max = 5000))]
    pub sentinel_poll_interval_ms: u64,
    /// Maximum connections in each pool.
    #[validate(range(min = 1, max = 1024))]
    pub pool_max_size: usize,
    /// Longest wait for a pooled connection.
    #[validate(range(min = 10, max = 5000))]
    pub pool_wait_timeout_ms: u64,
    /// Whether reads that tolerate replication lag go to replicas.
    pub read_from_replicas: bool,
}

impl RedisSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
// A struct-level check: field-level custom validators would copy the secret
// into the error's parameters.
#[validate(schema(function = "validate_jwt_secret"))]
pub struct AuthSettings {
    /// HMAC-SHA256 key for access tokens.
    pub jwt_secret: SecretString,
    /// Lifetime of an access token.
    #[validate(range(min = 10, max = 86400))]
    pub access_token_ttl_secs: u64,
    /// Lifetime of a session (and of its refresh token), renewed at each refresh.
    #[validate(range(min = 60, max = 31536000))]
    pub refresh_token_ttl_secs: u64,
    /// How long after a rotation the previous refresh token still returns the
    /// same new pair (a client retrying a refresh whose answer it never got)
    /// instead of counting as reuse. 0 turns retries into reuse.
    #[validate(range(max = 300))]
    pub refresh_reuse_interval_secs: u64,
    /// Password checks (sign-in, password change) of one account from one
    /// client address that may fail within the window; then that address
    /// gets 429 for that account until the window ends.
    #[validate(range(min = 1, max = 1000))]
    pub password_failures_per_account_and_address: u64,
    /// Failed password checks one client address may make within the window,
    /// whatever the accounts (credential stuffing); then it gets 429.
    #[validate(range(min = 1, max = 100000))]
    pub password_failures_per_address: u64,
    /// Failures older than this are forgotten.
    #[validate(range(min = 1, max = 86400))]
    pub password_failure_window_secs: u64,
    /// Checks of one account from addresses it never signed in from, in a
    /// burst: they share this budget, so guesses from many addresses slow
    /// down, while an address the owner signed in from is never refused by it.
    #[validate(range(min = 1, max = 1000))]
    pub password_checks_per_account_burst: u64,
    /// Milliseconds for one spent check to come back to that budget.
    #[validate(range(min = 1, max = 3600000))]
    pub password_check_refill_ms: u64,
    /// Most sessions one user may have; a new sign-in beyond it ends the
    /// least recently used one.
    #[validate(range(min = 1, max = 1000))]
    pub sessions_per_user: u64,
    /// Threads computing password hashes (each hash holds 7 MiB); 0 means one
    /// per CPU core. Sign-ins beyond them wait up to 3 s, then get 503.
    #[validate(range(max = 1024))]
    pub password_hashing_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
#[validate(schema(function = "validate_bootstrap_admin"))]
pub struct BootstrapAdminSettings {
    /// Email of the first admin; empty skips the bootstrap.
    pub email: String,
    /// Its password (only used when the account is created).
    pub password: SecretString,
    /// Its display name.
    #[validate(length(min = 1, max = 100))]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Writes (purchases, cancels, stock changes) one user may make per
    /// second, sustained, on all replicas together.
    #[validate(range(min = 0.01, max = 100000.0))]
    pub writes_per_second_per_user: f64,
    /// Writes one user may make in a burst above that rate.
    #[validate(range(min = 1, max = 100000))]
    pub write_burst_per_user: u64,
}

#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// ISO 4217 code of the store's single currency.
    #[validate(custom(function = "validate_currency"))]
    pub currency: String,
    /// How long idempotency keys (purchases, stock deltas) are remembered.
    #[validate(range(min = 60, max = 604800))]
    pub idempotency_key_ttl_secs: u64,
    /// Window in which a repeated key is treated as "still in flight".
    #[validate(range(min = 1, max = 600))]
    pub idempotency_in_flight_secs: u64,
}

/// The variables that name a setting: `EVERGREEN_<SECTION>__<KEY>`. Other
/// `EVERGREEN_*` variables are not settings (`EVERGREEN_CONFIG`, the compose
/// image tag `EVERGREEN_VERSION` that `.env` holds) and would otherwise be
/// refused as unknown fields.
fn setting_variables(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("EVERGREEN_")
            .is_some_and(|rest| rest.contains("__"))
    })
    .collect()
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration:\n{0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults, then the file named by `EVERGREEN_CONFIG` if set, then the
    /// environment's `EVERGREEN_<SECTION>__<KEY>` variables.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("EVERGREEN_CONFIG").ok();
        let settings = setting_variables(std::env::vars());
        Self::load_from(
            file.as_deref(),
            Environment::with_prefix("EVERGREEN").source(Some(settings)),
        )
    }

    /// Loads from the defaults and explicit overrides; tests use this with their own values.
    pub fn load_with_overrides(overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.as_str())?;
        }
        Self::finish(builder.build()?)
    }

    fn load_from(file: Option<&str>, env: Environment) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::with_name(path).required(true));
        }
        let env = env
            .separator("__")
            .prefix_separator("_")
            .list_separator(",")
            .with_list_parse_key("redis.sentinels")
            .with_list_parse_key("server.trusted_proxies")
            .try_parsing(true);
        Self::finish(builder.add_source(env).build()?)
    }

    fn finish(config: Config) -> Result<Self, ConfigError> {
        let settings: Settings = config.try_deserialize()?;
        settings
            .validate()
            .map_err(|errors| ConfigError::Invalid(describe(&errors)))?;
        Ok(settings)
    }
}

/// One `section.field: message` line per problem. Values are never printed:
/// they may be secrets.
fn describe(errors: &ValidationErrors) -> String {
    crate::validation::field_errors(errors)
        .iter()
        .map(|error| format!("  {}: {}", error.field, error.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn validate_addresses(addresses: &[String]) -> Result<(), ValidationError> {
    for address in addresses {
        let valid = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(ValidationError::new("address")
                .with_message(format!("`{address}` is not host:port").into()));
        }
    }
    Ok(())
}

fn validate_jwt_secret(auth: &AuthSettings) -> Result<(), ValidationError> {
    let secret = auth.jwt_secret.expose_secret();
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(ValidationError::new("weak_secret").with_message(
            format!(
                "jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes (got {}); generate one with `openssl rand -base64 48`",
                secret.len()
            )
            .into(),
        ));
    }
    let lowered = secret.to_ascii_lowercase();
    let distinct = secret
        .bytes()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if lowered.contains("change-me") || lowered.contains("changeme") || distinct < 8 {
        return Err(ValidationError::new("weak_secret").with_message(
            "jwt_secret is a placeholder or has too little variety; generate a random one".into(),
        ));
    }
    Ok(())
}

fn validate_bootstrap_admin(admin: &BootstrapAdminSettings) -> Result<(), ValidationError> {
    if admin.email.is_empty() {
        return Ok(());
    }
    if !validator::ValidateEmail::validate_email(&admin.email) {
        return Err(
            ValidationError::new("email").with_message("email is not a valid address".into())
        );
    }
    let length = admin.password.expose_secret().chars().count();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&length) {
        return Err(ValidationError::new("password")
            .with_message("password must be 8 to 128 characters".into()));
    }
    Ok(())
}

fn validate_currency(code: &str) -> Result<(), ValidationError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ValidationError::new("currency")
            .with_message("must be an upper-case ISO 4217 code such as USD".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_SECRET: &str = "kW3p9vQz7Lr2Xy8Nb5Tc1Hd6Jf4Gm0Sa";

    #[test]
    fn defaults_with_a_strong_secret_are_valid() {
        let settings =
            Settings::load_with_overrides(&[("auth.jwt_secret", GOOD_SECRET.to_owned())])
                .expect("defaults must validate");
        assert_eq!(settings.store.currency, "USD");
        assert_eq!(settings.redis.connect_timeout_ms, 500);
    }

    #[test]
    fn a_missing_jwt_secret_is_refused_with_a_clear_message() {
        let error = Settings::load_with_overrides(&[]).expect_err("empty secret must fail");
        let message = error.to_string();
        assert!(message.contains("auth: jwt_secret"), "{message}");
        assert!(message.contains("at least 32 bytes"), "{message}");
    }

    #[test]
    fn a_placeholder_jwt_secret_is_refused() {
        let error = Settings::load_with_overrides(&[(
            "auth.jwt_secret",
            "change-me-change-me-change-me-change-me".to_owned(),
        )])
        .expect_err("placeholder must fail");
        assert!(error.to_string().contains("placeholder"));
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let error = Settings::load_with_overrides(&[
            ("redis.connect_timeout_ms", "5000".to_owned()),
            ("store.currency", "usd".to_owned()),
        ])
        .expect_err("must fail");
        let message = error.to_string();
        for field in [
            "auth: jwt_secret",
            "redis.connect_timeout_ms",
            "store.currency",
        ] {
            assert!(message.contains(field), "{field} missing from {message}");
        }
    }

    /// `.env` (compose's file, which `scripts/run-local` loads) holds
    /// `EVERGREEN_VERSION`, the image tag: not a setting, so not an error.
    #[test]
    fn only_section_variables_are_settings() {
        let vars = [
            ("EVERGREEN_VERSION", "latest"),
            ("EVERGREEN_CONFIG", "/etc/evergreen.toml"),
            ("EVERGREEN_AUTH__JWT_SECRET", GOOD_SECRET),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let settings = setting_variables(vars.into_iter());
        assert_eq!(
            settings.keys().collect::<Vec<_>>(),
            ["EVERGREEN_AUTH__JWT_SECRET"]
        );
        let env = Environment::with_prefix("EVERGREEN").source(Some(settings));
        assert!(Settings::load_from(None, env).is_ok());
    }

    #[test]
    fn sentinels_are_read_from_a_comma_separated_environment_variable() {
        let env = Environment::default().source(Some(
            [
                (
                    "EVERGREEN_REDIS__SENTINELS".to_owned(),
                    "s1:26379,s2:26379".to_owned(),
                ),
                (
                    "EVERGREEN_AUTH__JWT_SECRET".to_owned(),
                    GOOD_SECRET.to_owned(),
                ),
            ]
            .into_iter()
            .collect(),
        ));
        let settings = Settings::load_from(None, env.prefix("EVERGREEN")).expect("valid");
        assert_eq!(settings.redis.sentinels, vec!["s1:26379", "s2:26379"]);
    }
}
