//! Every metric the API exports, registered in one registry per `Application`
//! (so several instances can live in one test process). HTTP request metrics
//! come from actix-web-prom (labelled by route pattern); this file adds the
//! business and Redis ones.

use std::time::Duration;

use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Cheap to clone: every field is an `Arc` inside.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Purchases created (not replays).
    pub purchases: IntCounter,
    /// Sum of `total_cents` of created purchases, in the store currency.
    pub revenue_cents: IntCounter,
    /// Purchases refused because a line lacked stock.
    pub stock_outs: IntCounter,
    /// Purchases cancelled.
    pub cancellations: IntCounter,
    /// Logins refused (wrong email or password, throttled, disabled user).
    pub logins_failed: IntCounterVec,
    /// Password checks (sign-ins, password changes) by outcome: `passed` and
    /// `failed` ran the hash, `refused` was throttled before it.
    pub password_checks: IntCounterVec,
    /// Purchases answered from their idempotency record.
    pub idempotent_replays: IntCounter,
    /// Redis round trips by operation and outcome.
    redis_duration: HistogramVec,
    /// Redis failures by kind.
    redis_errors: IntCounterVec,
    /// Replica acknowledgements returned by `WAIT` after confirmed writes.
    pub replica_acks: Histogram,
    /// Master changes this instance followed.
    pub failovers_followed: IntCounter,
    /// 1 for the master address this instance currently writes to.
    master: IntGaugeVec,
    /// Healthy replicas as reported by the Sentinels.
    pub healthy_replicas: IntGauge,
    /// Sentinels that answered the last poll.
    pub sentinels_reachable: IntGauge,
    /// Replica reads that fell back to the master.
    pub replica_read_fallbacks: IntCounter,
    /// Reads of a caller's own data (purchases) that the master could not
    /// answer in time and a replica served (during a failover).
    pub master_read_fallbacks: IntCounter,
}

const NAMESPACE: &str = "evergreen";

/// `reason` label values of `evergreen_logins_failed_total`.
pub const LOGIN_FAILURE_REASONS: [&str; 3] = ["credentials", "throttled", "disabled"];
/// `outcome` label values of `evergreen_password_checks_total`.
pub const PASSWORD_CHECK_OUTCOMES: [&str; 3] = ["passed", "failed", "refused"];
/// `kind` label values of `evergreen_redis_errors_total`
/// (`crate::redis::RedisError::kind`).
pub const REDIS_ERROR_KINDS: [&str; 4] =
    ["unavailable", "unconfirmed", "out_of_memory", "unexpected"];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::with_opts(Opts::new(name, help).namespace(NAMESPACE))
                .expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::with_opts(Opts::new(name, help).namespace(NAMESPACE))
                .expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let logins_failed = IntCounterVec::new(
            Opts::new("logins_failed_total", "Refused logins by reason").namespace(NAMESPACE),
            &["reason"],
        )
        .expect("valid metric");
        let redis_duration = HistogramVec::new(
            HistogramOpts::new(
                "redis_command_duration_seconds",
                "Redis round trips by operation and outcome",
            )
            .namespace(NAMESPACE)
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["op", "outcome"],
        )
        .expect("valid metric");
        let redis_errors = IntCounterVec::new(
            Opts::new("redis_errors_total", "Redis failures by kind").namespace(NAMESPACE),
            &["kind"],
        )
        .expect("valid metric");
        let replica_acks = Histogram::with_opts(
            HistogramOpts::new(
                "redis_replica_acks",
                "Replica acknowledgements per confirmed write",
            )
            .namespace(NAMESPACE)
            .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0]),
        )
        .expect("valid metric");
        let master = IntGaugeVec::new(
            Opts::new(
                "redis_master",
                "1 for the master address this instance writes to",
            )
            .namespace(NAMESPACE),
            &["address"],
        )
        .expect("valid metric");
        // Every known label value starts at 0, so the series exist before the
        // first failure: rates and dashboards read 0 instead of "no data".
        for reason in LOGIN_FAILURE_REASONS {
            logins_failed.with_label_values(&[reason]);
        }
        for kind in REDIS_ERROR_KINDS {
            redis_errors.with_label_values(&[kind]);
        }
        let password_checks = IntCounterVec::new(
            Opts::new(
                "password_checks_total",
                "Password checks (sign-ins, password changes) by outcome",
            )
            .namespace(NAMESPACE),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in PASSWORD_CHECK_OUTCOMES {
            password_checks.with_label_values(&[outcome]);
        }
        for metric in [
            Box::new(logins_failed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(password_checks.clone()),
            Box::new(redis_duration.clone()),
            Box::new(redis_errors.clone()),
            Box::new(replica_acks.clone()),
            Box::new(master.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        Self {
            purchases: counter("purchases_total", "Purchases created"),
            revenue_cents: counter(
                "revenue_cents_total",
                "Revenue of created purchases, in minor units",
            ),
            stock_outs: counter("stock_outs_total", "Purchases refused for lack of stock"),
            cancellations: counter("purchase_cancellations_total", "Purchases cancelled"),
            idempotent_replays: counter(
                "idempotent_replays_total",
                "Purchases answered from an idempotency record",
            ),
            failovers_followed: counter(
                "redis_failovers_followed_total",
                "Redis master changes followed",
            ),
            healthy_replicas: gauge(
                "redis_healthy_replicas",
                "Replicas the Sentinels report in sync",
            ),
            sentinels_reachable: gauge(
                "redis_sentinels_reachable",
                "Sentinels that answered the last poll",
            ),
            replica_read_fallbacks: counter(
                "redis_replica_read_fallbacks_total",
                "Reads meant for a replica that went to the master",
            ),
            master_read_fallbacks: counter(
                "redis_master_read_fallbacks_total",
                "Reads meant for the master that a replica served",
            ),
            logins_failed,
            password_checks,
            redis_duration,
            redis_errors,
            replica_acks,
            master,
            registry,
        }
    }

    /// Request count and latency by route pattern, method and status, in the same registry.
    pub fn http_middleware(&self) -> PrometheusMetrics {
        PrometheusMetricsBuilder::new(NAMESPACE)
            .registry(self.registry.clone())
            // Unknown paths share one label value instead of creating a series each.
            .mask_unmatched_patterns("UNKNOWN")
            .buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .build()
            .expect("valid HTTP metrics")
    }

    /// A purchase created (not a replay): counted, and its total added to revenue.
    pub fn record_purchase(&self, total_cents: i64) {
        self.purchases.inc();
        self.revenue_cents.inc_by(total_cents.max(0) as u64);
    }

    /// One Redis operation: `outcome` is "ok" or one of [`REDIS_ERROR_KINDS`].
    pub fn observe_redis(&self, op: &'static str, elapsed: Duration, outcome: &'static str) {
        self.redis_duration
            .with_label_values(&[op, outcome])
            .observe(elapsed.as_secs_f64());
        if outcome != "ok" {
            self.redis_errors.with_label_values(&[outcome]).inc();
        }
    }

    pub fn set_master(&self, address: &str) {
        self.master.reset();
        self.master.with_label_values(&[address]).set(1);
    }

    /// Prometheus text format of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(error) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
