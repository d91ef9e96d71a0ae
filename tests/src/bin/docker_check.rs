//! The Docker check: runs the real `docker-compose.yml` and does what its
//! users do, asserting each outcome and printing what it measured:
//!
//! 1. `up -d`: every service healthy; register, sign in, buy through nginx
//!    on the published port; `/metrics` not reachable there.
//! 2. `up -d --scale api=4`: all four replicas serve, nginx not restarted.
//! 3. `pause redis-master` under purchases and reads: Sentinel promotes a
//!    replica, reads never fail, writes come back by themselves; `unpause`
//!    turns the old master into a replica; every acknowledged purchase is
//!    there, none twice.
//! 4. `down` and `up` (volumes kept): every user, product and purchase is
//!    still there.
//!
//! Needs the images the compose file names (scripts/docker-check builds
//! offline stand-ins). Run from the repository root:
//! `cargo run -p evergreen-tests --bin docker-check`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evergreen_tests::client::{Api, Session, expect};
use evergreen_tests::compose::{ADMIN_EMAIL, ComposeProject};
use evergreen_tests::measure::longest_gap_without_success;
use evergreen_tests::monitoring::MonitoringApi;
use evergreen_tests::wait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Prometheus targets with 2 API replicas: itself, Alertmanager, 2 api,
/// 3 Redis, 3 Sentinels, 2 exporters' own, nginx.
const DEFAULT_TARGETS: usize = 13;
const STARTUP_DEADLINE: Duration = Duration::from_secs(180);
/// down-after 5 s + election + the old master's conversion (~10 s) + margin.
const HEAL_DEADLINE: Duration = Duration::from_secs(60);
const STOCK: i64 = 100_000;

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let name = format!("evergreen-check-{}", std::process::id());
    let stack = ComposeProject::new(&root, &name);
    let api = Api::new(&stack.base_url());
    let monitoring = MonitoringApi::new(
        &format!("http://127.0.0.1:{}", stack.prometheus_port),
        &format!("http://127.0.0.1:{}", stack.alertmanager_port),
    );

    let skipped = stack.unavailable_services();
    if !skipped.is_empty() {
        println!(
            "not started (image unavailable offline): {skipped:?}; its provisioning and dashboards \
             are checked by the test suite (tests/tests/e2e/monitoring.rs)"
        );
    }
    step("docker compose up -d");
    let up = Instant::now();
    up_until_healthy(&stack).await;
    println!(
        "all {} containers healthy {:.1} s after `up`",
        default_containers(&stack),
        up.elapsed().as_secs_f64()
    );
    let (admin, customer, product_id) = first_purchase(&api, &stack).await;
    wait_for_targets_up(&monitoring, DEFAULT_TARGETS, 2).await;
    println!(
        "Prometheus (published on :{}) scrapes all {DEFAULT_TARGETS} targets {:.1} s after `up`",
        stack.prometheus_port,
        up.elapsed().as_secs_f64()
    );

    step("docker compose up -d --scale api=4");
    scale_to_four(&stack, &api, &monitoring).await;

    step("docker compose pause redis-master, under purchases and reads");
    let buyers = vec![customer.clone(), api.new_customer().await];
    let acknowledged = failover(&stack, &api, &monitoring, &buyers, &product_id).await;

    step("docker compose down, then up again (volumes kept)");
    let restart = Instant::now();
    stack.run(&["down", "--timeout", "30"]);
    up_until_healthy(&stack).await;
    println!(
        "down + up: healthy again after {:.1} s",
        restart.elapsed().as_secs_f64()
    );
    data_survived(&api, &admin, &buyers, &product_id, &acknowledged).await;

    println!(
        "\nDocker check passed in {:.0} s (project {name})",
        started.elapsed().as_secs_f64()
    );
}

/// One container per service started, two for `api` (its default scale).
fn default_containers(stack: &ComposeProject) -> usize {
    stack.services().len() + 1
}

/// Waits until Prometheus has `total` targets up, `api` of them API replicas.
async fn wait_for_targets_up(monitoring: &MonitoringApi, total: usize, api: usize) {
    wait::until(
        "Prometheus to scrape every target",
        STARTUP_DEADLINE,
        || async {
            let targets = monitoring.targets().await?;
            let up: Vec<_> = targets.iter().filter(|(_, _, h)| h == "up").collect();
            let api_up = up.iter().filter(|(job, _, _)| job == "api").count();
            if up.len() == total && targets.len() == total && api_up == api {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} up ({api_up} api): {targets:?}",
                    up.len(),
                    targets.len()
                ))
            }
        },
    )
    .await;
}

/// `up -d`, then what `up --wait` does on Compose v2 (v1 lacks it).
async fn up_until_healthy(stack: &ComposeProject) {
    stack.up(&[]);
    stack
        .wait_healthy(default_containers(stack), STARTUP_DEADLINE)
        .await;
}

/// Sign in as the bootstrap admin, create a product, register a customer and
/// buy through nginx. Returns the admin, the customer and the product id.
async fn first_purchase(api: &Api, stack: &ComposeProject) -> (Session, Session, String) {
    let admin = api.login_ok(ADMIN_EMAIL, &stack.admin_password).await;
    let product = api.new_product(&admin, 250, STOCK).await;
    let product_id = product["id"].as_str().expect("product id").to_owned();
    let customer = api.new_customer().await;
    let purchase = expect(
        api.purchase(
            &customer.access_token,
            Some(&uuid::Uuid::new_v4().to_string()),
            &json!({"items": [{"product_id": product_id, "quantity": 2}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(purchase["total_cents"], 500);
    let mine = expect(
        api.list_purchases(&customer.access_token, "").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mine["items"][0]["id"], purchase["id"]);
    let metrics = api
        .raw(Method::GET, "/metrics")
        .send()
        .await
        .expect("nginx");
    assert_eq!(
        metrics.status(),
        StatusCode::NOT_FOUND,
        "/metrics must stay internal"
    );
    println!(
        "register, sign in, buy and list through nginx on :{}: ok",
        stack.http_port
    );
    (admin, customer, product_id)
}

/// Distinct API replicas (`ip:port`) in nginx's access log.
fn upstreams_seen(stack: &ComposeProject) -> BTreeSet<String> {
    stack
        .json_log("nginx")
        .iter()
        .filter_map(|line| line["upstream_addr"].as_str().map(str::to_owned))
        .flat_map(|addrs| {
            addrs
                .split(", ")
                .filter(|a| a.contains(':'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn scale_to_four(stack: &ComposeProject, api: &Api, monitoring: &MonitoringApi) {
    let scaled = Instant::now();
    stack.up(&["--scale", "api=4"]);
    stack
        .wait_healthy(default_containers(stack) + 2, STARTUP_DEADLINE)
        .await;
    let healthy = scaled.elapsed();
    // Round-robin over the DNS answer: a few requests reach every replica once
    // nginx has re-resolved (valid=5s).
    let seen = wait::until(
        "nginx to send requests to all four replicas",
        Duration::from_secs(60),
        || async {
            for _ in 0..8 {
                let _ = api
                    .raw(Method::GET, "/api/v1/products?limit=1")
                    .send()
                    .await;
            }
            let seen = upstreams_seen(stack);
            if seen.len() >= 4 { Ok(seen) } else { Err(seen) }
        },
    )
    .await;
    assert_eq!(stack.containers("api").len(), 4);
    let serving = scaled.elapsed();
    wait_for_targets_up(monitoring, DEFAULT_TARGETS + 2, 4).await;
    println!(
        "scaled to 4: new replicas healthy {:.1} s after `up --scale` began, all 4 serving through nginx after {:.1} s \
         ({seen:?}), all 4 scraped by Prometheus after {:.1} s",
        healthy.as_secs_f64(),
        serving.as_secs_f64(),
        scaled.elapsed().as_secs_f64()
    );
}

#[derive(Debug, Clone)]
struct Attempt {
    started: Duration,
    finished: Duration,
    status: Option<StatusCode>,
    purchase_id: Option<String>,
}

/// Pauses the master under traffic, resumes it, checks the outcome and
/// returns the acknowledged purchase ids.
async fn failover(
    stack: &ComposeProject,
    api: &Api,
    monitoring: &MonitoringApi,
    buyers: &[Session],
    product_id: &str,
) -> Vec<String> {
    let old_master = stack.master_seen_by("sentinel-1");
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let mut tasks = Vec::new();
    for buyer in buyers {
        let (api, buyer, stop, writes) = (api.clone(), buyer.clone(), stop.clone(), writes.clone());
        let body = json!({"items": [{"product_id": product_id, "quantity": 1}]});
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A careful client: retry a failed purchase with the same key.
                let key = uuid::Uuid::new_v4().to_string();
                loop {
                    let started = origin.elapsed();
                    let response = api
                        .raw(Method::POST, "/api/v1/purchases")
                        .bearer_auth(&buyer.access_token)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let (status, reply) = match response {
                        Ok(response) => (
                            Some(response.status()),
                            response.json::<Value>().await.unwrap_or_default(),
                        ),
                        Err(_) => (None, Value::Null),
                    };
                    writes.lock().expect("lock").push(Attempt {
                        started,
                        finished: origin.elapsed(),
                        status,
                        purchase_id: reply["id"].as_str().map(str::to_owned),
                    });
                    if status == Some(StatusCode::CREATED) || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    {
        let (api, stop, reads) = (api.clone(), stop.clone(), reads.clone());
        let path = format!("/api/v1/products/{product_id}");
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = origin.elapsed();
                let status = api
                    .raw(Method::GET, &path)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status());
                reads.lock().expect("lock").push(Attempt {
                    started,
                    finished: origin.elapsed(),
                    status,
                    purchase_id: None,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let succeeded_after = |instant: Duration| {
        writes
            .lock()
            .expect("lock")
            .iter()
            .filter(|w| w.started >= instant && w.status == Some(StatusCode::CREATED))
            .map(|w| w.finished)
            .min()
    };
    wait::until("purchases to flow", HEAL_DEADLINE, || async {
        succeeded_after(Duration::ZERO)
    })
    .await;

    let fault = origin.elapsed();
    stack.run(&["pause", "redis-master"]);
    let new_master = wait::until("Sentinel to promote a replica", HEAL_DEADLINE, || async {
        let now = stack.master_seen_by("sentinel-2");
        if now == old_master { Err(now) } else { Ok(now) }
    })
    .await;
    let promoted_at = origin.elapsed();
    wait::until(
        "a purchase to succeed after the promotion",
        HEAL_DEADLINE,
        || async { succeeded_after(promoted_at) },
    )
    .await;
    // Keep it paused until the alert has gone all the way to the receiver.
    let alert_deadline = Duration::from_secs(90);
    monitoring
        .wait_for_firing("RedisDown", alert_deadline)
        .await;
    let alert_fired = origin.elapsed() - fault;
    wait::until(
        "the alert webhook to log RedisDown",
        alert_deadline,
        || async {
            stack
                .json_log("alert-webhook")
                .iter()
                .any(|line| {
                    line["notification"]
                        .as_str()
                        .is_some_and(|n| n.contains("RedisDown"))
                })
                .then_some(())
        },
    )
    .await;
    let alert_delivered = origin.elapsed() - fault;
    stack.run(&["unpause", "redis-master"]);
    let resumed = Instant::now();
    wait::until(
        "the old master to become a replica of the new one",
        HEAL_DEADLINE,
        || async {
            let info = stack.redis_cli("redis-master", &["info", "replication"]);
            let host = new_master.split(':').next().unwrap_or_default();
            (info.contains("role:slave")
                && info.contains(&format!("master_host:{host}"))
                && info.contains("master_link_status:up"))
            .then_some(())
            .ok_or(info)
        },
    )
    .await;
    let demoted = resumed.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("traffic task");
    }

    let writes = writes.lock().expect("lock").clone();
    let reads = reads.lock().expect("lock").clone();
    let acknowledged: Vec<String> = writes
        .iter()
        .filter(|w| w.status == Some(StatusCode::CREATED))
        .filter_map(|w| w.purchase_id.clone())
        .collect();
    let failed_writes = writes
        .iter()
        .filter(|w| w.status != Some(StatusCode::CREATED))
        .count();
    let failed_reads: Vec<_> = reads
        .iter()
        .filter(|r| r.status != Some(StatusCode::OK))
        .collect();
    let unexpected: Vec<_> = writes
        .iter()
        .filter(|w| {
            !matches!(
                w.status,
                Some(StatusCode::CREATED | StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT)
            )
        })
        .collect();
    let slowest = writes
        .iter()
        .chain(&reads)
        .map(|a| a.finished - a.started)
        .max()
        .unwrap_or_default();
    println!(
        "master {old_master} paused: Sentinel promoted {new_master} after {:.1} s; \
         write-unavailability window {:.1} s; RedisDown firing after {:.1} s, delivered to the \
         webhook after {:.1} s; old master a replica {:.1} s after unpause; \
         purchases acknowledged {}, failed attempts {failed_writes} (retried); \
         failed reads {} of {}; slowest request {:.2} s",
        (promoted_at - fault).as_secs_f64(),
        longest_gap_without_success(
            writes
                .iter()
                .filter(|w| w.status == Some(StatusCode::CREATED))
                .map(|w| w.finished),
            fault
        )
        .as_secs_f64(),
        alert_fired.as_secs_f64(),
        alert_delivered.as_secs_f64(),
        demoted.as_secs_f64(),
        acknowledged.len(),
        failed_reads.len(),
        reads.len(),
        slowest.as_secs_f64()
    );
    assert!(
        failed_reads.is_empty(),
        "reads must keep working: {failed_reads:?}"
    );
    assert!(
        unexpected.is_empty(),
        "only 201, or 503/409 to retry: {unexpected:?}"
    );
    assert!(
        slowest < Duration::from_secs(8),
        "a request took {slowest:?}"
    );
    assert!(
        acknowledged.len() > 20,
        "too little traffic to prove anything"
    );
    acknowledged
}

/// After `down` + `up`: the users sign in, the product and every
/// acknowledged purchase are there, and stock matches the purchases.
async fn data_survived(
    api: &Api,
    admin: &Session,
    buyers: &[Session],
    product_id: &str,
    acknowledged: &[String],
) {
    let admin = api.login_ok(&admin.email, &admin.password).await;
    let mut recorded: Vec<Value> = Vec::new();
    for buyer in buyers {
        let buyer = api.login_ok(&buyer.email, &buyer.password).await;
        recorded.extend(api.all_pages(&buyer.access_token, "/purchases").await);
    }
    let ids: BTreeSet<&str> = recorded.iter().filter_map(|p| p["id"].as_str()).collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged purchases lost: {missing:?}"
    );
    let taken: i64 = recorded
        .iter()
        .flat_map(|p| p["items"].as_array().cloned().unwrap_or_default())
        .filter(|line| line["product_id"] == product_id)
        .map(|line| line["quantity"].as_i64().unwrap_or(0))
        .sum();
    let product = expect(api.get_product(product_id).await, StatusCode::OK).await;
    assert_eq!(
        STOCK - product["stock"].as_i64().expect("stock"),
        taken,
        "stock taken must equal the purchases recorded"
    );
    // No duplicates: one purchase per acknowledged key, plus at most one
    // unacknowledged attempt per buyer that may have landed as the run stopped.
    let first_purchase = 1;
    assert!(
        ids.len() <= acknowledged.len() + first_purchase + buyers.len(),
        "{} purchases recorded for {} acknowledged",
        ids.len(),
        acknowledged.len()
    );
    let users = expect(
        api.list_users(&admin.access_token, "?limit=100").await,
        StatusCode::OK,
    )
    .await;
    println!(
        "after down + up: {} users, product stock {} (= {STOCK} - {taken}), \
         all {} acknowledged purchases present ({} recorded)",
        users["items"].as_array().map_or(0, Vec::len),
        product["stock"],
        acknowledged.len(),
        ids.len()
    );
}
