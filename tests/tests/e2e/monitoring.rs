//! The shipped Prometheus, Alertmanager and alert rules against the native
//! stack (nginx, two API processes, Redis HA) with Debian's exporters: every
//! tier is scraped, every metric the rules use exists, and a paused master
//! fires `RedisDown` all the way to the webhook.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use evergreen_tests::client::Api;
use evergreen_tests::gateway::Gateway;
use evergreen_tests::monitoring::Monitoring;
use evergreen_tests::wait;
use reqwest::StatusCode;

/// Scrape targets of the native stack: Prometheus, Alertmanager, 2 API
/// replicas, 3 Redis nodes, 3 Sentinels, the 2 Redis exporters, nginx.
const TARGETS: usize = 13;

async fn start() -> (Gateway, Monitoring, Api) {
    let gateway = Gateway::start(2).await;
    let monitoring = Monitoring::start(&gateway).await;
    let api = Api::new(&gateway.nginx.base_url());
    (gateway, monitoring, api)
}

async fn wait_until_every_target_is_up(monitoring: &Monitoring) -> Duration {
    let started = Instant::now();
    wait::until(
        "every scrape target up",
        Duration::from_secs(60),
        || async {
            let targets = monitoring.api.targets().await?;
            let down: Vec<_> = targets.iter().filter(|(_, _, h)| h != "up").collect();
            if targets.len() == TARGETS && down.is_empty() {
                Ok(())
            } else {
                Err(format!("{} targets, not up: {down:?}", targets.len()))
            }
        },
    )
    .await;
    started.elapsed()
}

/// Metric names in the shipped rules: every identifier right before a label
/// matcher `{` or a range `[` (recording-rule names contain `:` and are
/// skipped, as are annotation templates).
fn metric_names_used_by_rules() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prometheus/rules/evergreen.yml"),
    )
    .expect("rules");
    let mut names = BTreeSet::new();
    for line in rules.lines().filter(|line| !line.contains("{{")) {
        for (at, _) in line.match_indices(['{', '[']) {
            let name: String = line[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !name.is_empty() && !name.contains(':') {
                names.insert(name);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_every_tier_and_every_metric_the_rules_use_exists() {
    let (_gateway, monitoring, api) = start().await;

    // Traffic so that request, purchase and nginx counters have samples.
    for _ in 0..20 {
        assert_eq!(api.list_products("?limit=1").await.status(), StatusCode::OK);
    }
    let up_after = wait_until_every_target_is_up(&monitoring).await;

    let used = metric_names_used_by_rules();
    assert!(
        used.len() >= 10,
        "the rules parser found too little: {used:?}"
    );
    let missing = wait::until(
        "every metric the alert rules use to have a series",
        Duration::from_secs(30),
        || async {
            let mut missing = Vec::new();
            for name in &used {
                if monitoring
                    .api
                    .query(&format!("count({name})"))
                    .await?
                    .is_empty()
                {
                    missing.push(name.clone());
                }
            }
            if missing.is_empty() {
                Ok(missing)
            } else {
                Err(format!("{missing:?}"))
            }
        },
    )
    .await;
    assert!(missing.is_empty());

    // Each tier as a user of the dashboards needs it.
    for (what, query) in [
        (
            "API requests by route",
            r#"evergreen_http_requests_total{job="api", endpoint="/api/v1/products"}"#,
        ),
        (
            "the master each API replica writes to",
            r#"evergreen_redis_master{job="api"} == 1"#,
        ),
        (
            "a master among the Redis nodes",
            r#"redis_instance_info{job="redis", role="master"}"#,
        ),
        (
            "Sentinels agreeing on the master",
            r#"redis_sentinel_master_ok_sentinels{job="sentinel"}"#,
        ),
        (
            "nginx request counter",
            r#"nginx_http_requests_total{job="nginx"}"#,
        ),
    ] {
        let result = monitoring.api.query(query).await.expect("query");
        assert!(!result.is_empty(), "no series for {what}: {query}");
    }
    let api_replicas = monitoring
        .api
        .query(r#"evergreen_redis_master{job="api"} == 1"#)
        .await
        .expect("query");
    assert_eq!(
        api_replicas.len(),
        2,
        "both API replicas report their master"
    );
    println!(
        "all {TARGETS} targets up {:.1} s after Prometheus was ready; the {} metric names the rules use all have series: {used:?}",
        up_after.as_secs_f64(),
        used.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_master_fires_redis_down_through_alertmanager_to_the_webhook() {
    let (gateway, monitoring, _api) = start().await;
    wait_until_every_target_is_up(&monitoring).await;
    let master = gateway.redis.master_port().await;

    // Act: pause the master (what `docker compose pause redis-master` does).
    gateway.redis.pause(master);
    let paused = Instant::now();
    wait::until(
        "RedisDown to fire in Prometheus",
        Duration::from_secs(90),
        || async {
            let alerts = monitoring.api.alerts().await?;
            alerts
                .iter()
                .any(|(name, state)| name == "RedisDown" && state == "firing")
                .then_some(())
                .ok_or(format!("{alerts:?}"))
        },
    )
    .await;
    let fired = paused.elapsed();
    wait::until(
        "Alertmanager to call the webhook",
        Duration::from_secs(30),
        || async {
            monitoring
                .webhook
                .notifications()
                .iter()
                .any(|n| {
                    n["status"] == "firing"
                        && n["alerts"].as_array().is_some_and(|a| {
                            a.iter().any(|a| a["labels"]["alertname"] == "RedisDown")
                        })
                })
                .then_some(())
        },
    )
    .await;
    let notified = paused.elapsed();
    let held = monitoring
        .api
        .alertmanager_alerts()
        .await
        .expect("alertmanager");
    gateway.redis.resume(master);

    println!(
        "master paused: RedisDown firing after {:.1} s (for: 30s + scrape 5s + evaluation 10s), webhook called after {:.1} s",
        fired.as_secs_f64(),
        notified.as_secs_f64()
    );
    assert!(held.iter().any(|name| name == "RedisDown"), "{held:?}");
    // for (30 s) + one scrape interval (5 s) + one evaluation interval (10 s),
    // plus the exporter's 3 s connection timeout and slack for a busy machine.
    assert!(fired <= Duration::from_secs(55), "RedisDown took {fired:?}");
    assert!(
        fired >= Duration::from_secs(30),
        "RedisDown fired before its for: {fired:?}"
    );
}
