//! The shipped Prometheus, Alertmanager and alert rules against the native
//! stack (nginx, two API processes, Redis HA) with Debian's exporters: every
//! tier is scraped, every metric the rules use exists, and a paused master
//! fires `RedisDown` all the way to the webhook.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use evergreen_tests::client::Api;
use evergreen_tests::gateway::Gateway;
use evergreen_tests::monitoring::{Monitoring, metric_names, shipped_file};
use evergreen_tests::wait;
use reqwest::StatusCode;
use serde_json::Value;

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

/// Where the provisioned Grafana data source and dashboards live.
const DATASOURCE_UID: &str = "evergreen-prometheus";
const DASHBOARDS: [&str; 3] = ["api", "redis-ha", "nginx"];

fn dashboard(name: &str) -> Value {
    let text = shipped_file(&format!("grafana/dashboards/{name}.json"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json is not JSON: {e}"))
}

/// Every PromQL expression of every shipped dashboard.
fn dashboard_exprs() -> Vec<String> {
    DASHBOARDS
        .iter()
        .flat_map(|name| {
            dashboard(name)["panels"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_every_tier_and_every_metric_the_rules_and_dashboards_use_exists() {
    let (gateway, monitoring, api) = start().await;

    // Traffic so that request, purchase and nginx counters have samples.
    for _ in 0..20 {
        assert_eq!(api.list_products("?limit=1").await.status(), StatusCode::OK);
    }
    let up_after = wait_until_every_target_is_up(&monitoring).await;

    let mut used = metric_names(&shipped_file("prometheus/rules/evergreen.yml"));
    let from_rules = used.len();
    for expr in dashboard_exprs() {
        used.extend(metric_names(&expr));
    }
    assert!(
        from_rules >= 12 && used.len() > from_rules,
        "the parser found too little: {used:?}"
    );
    let missing = wait::until(
        "every metric the alert rules and dashboards use to have a series",
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
    // The exporters scraped every node and Sentinel as the read-only
    // `monitor` user without being refused anything.
    let denials = gateway.redis.acl_denials().await;
    assert!(denials.is_empty(), "refused by the ACLs: {denials:#?}");
    println!(
        "all {TARGETS} targets up {:.1} s after Prometheus was ready; the {} metric names the alert rules and dashboards use all have series: {used:?}",
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
    monitoring
        .api
        .wait_for_firing("RedisDown", Duration::from_secs(90))
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

#[test]
fn grafana_provisioning_and_dashboards_hold_together() {
    let datasource = shipped_file("grafana/provisioning/datasources/prometheus.yml");
    assert!(
        datasource.contains(&format!("uid: {DATASOURCE_UID}")),
        "{datasource}"
    );
    assert!(
        datasource.contains("url: http://prometheus:9090"),
        "{datasource}"
    );
    let provider = shipped_file("grafana/provisioning/dashboards/evergreen.yml");
    let compose = shipped_file("docker-compose.yml");
    assert!(
        provider.contains("path: /var/lib/grafana/dashboards")
            && compose.contains("./grafana/dashboards:/var/lib/grafana/dashboards:ro"),
        "the provider must read the folder compose mounts"
    );

    let mut uids = std::collections::BTreeSet::new();
    let mut panels_seen = 0;
    for name in DASHBOARDS {
        let board = dashboard(name);
        let uid = board["uid"].as_str().expect("a fixed uid");
        assert!(uids.insert(uid.to_owned()), "uid {uid} used twice");
        assert!(board["title"].as_str().is_some_and(|t| !t.is_empty()));
        let panels = board["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name} has no panel");
        let mut ids = std::collections::BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(panel["id"].as_i64().expect("panel id")),
                "{name}: duplicate panel id"
            );
            assert_eq!(panel["datasource"]["uid"], DATASOURCE_UID, "{name}/{title}");
            for field in ["x", "y", "w", "h"] {
                assert!(
                    panel["gridPos"][field].is_u64(),
                    "{name}/{title}: gridPos.{field}"
                );
            }
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}/{title} queries nothing");
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], DATASOURCE_UID,
                    "{name}/{title}"
                );
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !metric_names(expr).is_empty(),
                    "{name}/{title}: no metric in {expr:?}"
                );
            }
            panels_seen += 1;
        }
    }
    println!(
        "{} dashboards, {panels_seen} panels, all on data source {DATASOURCE_UID}",
        DASHBOARDS.len()
    );
}

/// Posts alerts (name, severity as in the rules) to Alertmanager's API as
/// Prometheus would.
async fn post_alerts(monitoring: &Monitoring, alerts: &[(&str, &str)]) {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(name, severity)| {
            serde_json::json!({
                "labels": {"alertname": name, "severity": severity, "stack": "evergreen",
                           "instance": "redis-replica-1:6379", "job": "redis"},
                "annotations": {"summary": format!("{name} (test)")},
            })
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/alerts",
            monitoring.api.alertmanager_url()
        ))
        .json(&alerts)
        .send()
        .await
        .expect("alertmanager answers");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_inhibits_replication_alerts_and_only_it_reaches_the_webhook() {
    let (_gateway, monitoring, _api) = start().await;

    // Act: a dead node raises both alerts at once.
    post_alerts(
        &monitoring,
        &[
            ("RedisDown", "critical"),
            ("RedisReplicationBroken", "warning"),
        ],
    )
    .await;

    let notified = wait::until(
        "the webhook to be called",
        Duration::from_secs(30),
        || async {
            let names: BTreeSet<String> = monitoring
                .webhook
                .notifications()
                .iter()
                .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
                .collect();
            (!names.is_empty()).then_some(names)
        },
    )
    .await;
    // The warning's group waits 10 s (group_wait): past it, it would have
    // been sent had it not been inhibited.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let notified: BTreeSet<String> = monitoring
        .webhook
        .notifications()
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .chain(notified)
        .collect();
    let inhibited = monitoring
        .api
        .inhibited_alerts()
        .await
        .expect("alertmanager");
    println!("webhook received {notified:?}; inhibited: {inhibited:?}");
    assert_eq!(notified, BTreeSet::from(["RedisDown".to_owned()]));
    assert_eq!(inhibited, vec!["RedisReplicationBroken".to_owned()]);
}
