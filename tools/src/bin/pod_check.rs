//! The pod check: the dev overlay of `deploy/kubernetes`, rendered by
//! `kubectl kustomize`, run as pods on Docker ([`evergreen_tools::pods`]:
//! pause containers, init containers, probes, cluster DNS, Service VIPs)
//! and broken the ways a cluster breaks it:
//!
//! 1. All Redis and Sentinel pods start at once: exactly one master
//!    (redis-0), both others replicating from it, every Sentinel naming it.
//! 2. Under purchases and reads through nginx's Service: the master pod is
//!    deleted and the StatefulSet brings it back at a new pod IP (same VIP,
//!    same volume): a failover within down-after + 3 s (writes back within
//!    1 s more), no Sentinel in TILT, the old master back as a replica.
//! 3. A replica pod is killed and comes back with an empty volume (moved to
//!    a node its volume cannot follow): its init container asks the
//!    Sentinels for the master and it resyncs; clients notice nothing.
//! 4. The master pod killed and back at once (a crashed container that
//!    kubelet restarts before down-after): no failover, nothing lost.
//! 5. The master pod killed with its volume: its init container waits for
//!    the failover instead of starting an empty master, and it returns as a
//!    replica.
//! 6. A Sentinel pod deleted and back at a new IP: clients notice nothing.
//! 7. A rolling restart of the API Deployment (a new pod ready first, the
//!    old one out of DNS, its preStop sleep, SIGTERM): no request fails.
//!
//! In the end every acknowledged purchase is in the store. Needs the images
//! the manifests name (scripts/docker-check builds offline stand-ins) and
//! root (VIPs are addresses on the network's bridge). Run from the
//! repository root: `cargo run -p evergreen-tools --bin pod-check`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use evergreen_tests::client::Api;
use evergreen_tests::kubernetes::{Rendered, name_of};
use evergreen_tests::traffic::Traffic;
use evergreen_tests::wait;
use evergreen_tools::pods::Cluster;
use serde_json::json;

const DATA_PODS: [&str; 3] = ["redis-0", "redis-1", "redis-2"];
const SENTINEL_PODS: [&str; 3] = ["sentinel-0", "sentinel-1", "sentinel-2"];
const STARTUP: Duration = Duration::from_secs(180);
/// As the Docker check: down-after 5 s + 3 s for the failover (SPEC), and
/// up to 1 s more until the promoted master takes writes.
const WINDOW_BOUND: Duration = Duration::from_secs(9);
/// From the deleted pod's end (SIGTERM, Redis saving and exiting) to a
/// Sentinel majority naming the promoted replica: the SPEC's down-after + 3 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(8);
const BUYERS: usize = 6;

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let started = Instant::now();
    let mut rendered = Rendered::overlay("dev");
    // As the Docker check: the buyers drive far more purchases than one
    // shopper's write limit, and all traffic comes from this host's address.
    set_config(
        &mut rendered,
        "api-settings",
        "EVERGREEN_LIMITS__WRITES_PER_SECOND_PER_USER",
        "100000",
    );
    set_config(
        &mut rendered,
        "api-settings",
        "EVERGREEN_LIMITS__WRITE_BURST_PER_USER",
        "100000",
    );
    set_env(&mut rendered, "nginx", "NGINX_READ_RATE", "100000r/s");
    set_env(&mut rendered, "nginx", "NGINX_READ_BURST", "100000");
    let admin_email = rendered.secrets["ADMIN_EMAIL"].clone();
    let admin_password = rendered.secrets["ADMIN_PASSWORD"].clone();
    let cluster = Cluster::start(rendered).await;
    println!(
        "namespace {}, Service VIPs: redis-0 {}, sentinel-0 {}, nginx {}",
        cluster.namespace,
        cluster.vip("redis-0"),
        cluster.vip("sentinel-0"),
        cluster.vip("nginx")
    );

    step("all Redis and Sentinel pods at once (podManagementPolicy: Parallel)");
    let up = Instant::now();
    tokio::join!(
        cluster.start_stateful_pods("redis", &DATA_PODS),
        cluster.start_stateful_pods("sentinel", &SENTINEL_PODS),
    );
    for pod in DATA_PODS.iter().chain(&SENTINEL_PODS) {
        cluster.wait_ready(pod, STARTUP).await;
    }
    println!(
        "6 pods ready {:.1} s after they were created",
        up.elapsed().as_secs_f64()
    );
    let master = exactly_one_master(&cluster).await;
    assert_eq!(master, "redis-0", "redis-0 is the master at first start");

    step("the API (2 pods) and nginx");
    let apis = [
        cluster.add_deployment_pod("api").await,
        cluster.add_deployment_pod("api").await,
    ];
    let nginx = cluster.add_deployment_pod("nginx").await;
    for pod in apis.iter().chain([&nginx]) {
        cluster.wait_ready(pod, STARTUP).await;
    }
    let api = Api::new(&format!("http://{}", cluster.vip("nginx")));
    // nginx may have started before any API pod was ready: it finds them
    // when it next resolves the headless Service.
    let routed = Instant::now();
    wait::until("nginx to reach an API pod", STARTUP, || async {
        let response = api.raw(reqwest::Method::GET, "/health/ready").send().await;
        match response {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    println!(
        "nginx routes to the API {:.1} s after its pods were ready",
        routed.elapsed().as_secs_f64()
    );
    let admin = api.login_through_nginx(&admin_email, &admin_password).await;
    let product = api.new_product(&admin, 250, 1_000_000).await;
    let product_id = product["id"].as_str().expect("product id").to_owned();
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        buyers.push(api.new_customer_through_nginx().await);
    }
    println!("sign-in, product and {BUYERS} customers through nginx's Service: ok");

    step("traffic through nginx's Service; the master pod deleted, back at a new IP");
    let traffic = Traffic::start(
        std::slice::from_ref(&api),
        &buyers,
        &product_id,
        2,
        Instant::now(),
    );
    settle(&traffic).await;
    let master_deleted = master_pod_deleted(&cluster, &traffic).await;

    step("a replica pod killed, back with an empty volume");
    settle(&traffic).await;
    let replica_lost = replica_rescheduled_empty(&cluster, &traffic).await;

    step("the master pod killed and back at once (kubelet restarting a crashed pod)");
    settle(&traffic).await;
    let master_crashed = master_pod_killed_and_back_at_once(&cluster, &traffic).await;

    step("the master pod lost with its volume (rescheduled to a node its volume cannot follow)");
    settle(&traffic).await;
    let master_emptied = master_pod_back_empty(&cluster, &traffic).await;

    step("a Sentinel pod deleted, back at a new IP");
    settle(&traffic).await;
    let sentinel_moved = sentinel_pod_deleted(&cluster, &traffic).await;

    step("a rolling restart of the API Deployment");
    settle(&traffic).await;
    let rollout = rolling_restart(&cluster, &traffic).await;

    let report = traffic.finish().await;
    step("every acknowledged purchase is in the store");
    let master = exactly_one_master(&cluster).await;
    let recorded = purchase_log(&cluster, &master);
    let acknowledged = report.acknowledged();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(&id.to_string()))
        .collect();
    println!(
        "{} purchases acknowledged, {} in the purchase log of {master}, {} lost",
        acknowledged.len(),
        recorded.len(),
        lost.len()
    );

    println!(
        "\n| fault | failover | write-unavailability window | reads ok / failed | purchase attempts refused (503, retried) | Sentinel TILT | nginx errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    let faults = [
        &master_deleted,
        &master_crashed,
        &replica_lost,
        &master_emptied,
        &sentinel_moved,
        &rollout,
    ];
    for fault in faults {
        println!(
            "| {} | {} | {:.1} s | {} / {} | {} | {} | {} |",
            fault.name,
            fault
                .failover
                .map_or("none".to_owned(), |f| format!("{:.1} s", f.as_secs_f64())),
            fault.window.as_secs_f64(),
            fault.reads - fault.failed_reads,
            fault.failed_reads,
            fault.refused,
            fault.logs.tilt,
            fault.logs.nginx_errors
        );
    }
    // What nginx logged during the faults (its last lines: the start-up's
    // come before), for the reader of a run that logged any.
    let during_faults: usize = faults.iter().map(|f| f.logs.nginx_errors).sum();
    let nginx_errors = nginx_error_lines(&cluster);
    let shown = during_faults.min(10);
    for line in &nginx_errors[nginx_errors.len().saturating_sub(shown)..] {
        println!("nginx: {line}");
    }
    let mut problems = Vec::new();
    if !lost.is_empty() {
        problems.push(format!("{} acknowledged purchases lost", lost.len()));
    }
    for fault in faults {
        if fault.window > WINDOW_BOUND {
            problems.push(format!(
                "{}: window {:?} > {WINDOW_BOUND:?}",
                fault.name, fault.window
            ));
        }
        if fault.failed_reads * 100 > fault.reads {
            problems.push(format!(
                "{}: {} of {} reads failed",
                fault.name, fault.failed_reads, fault.reads
            ));
        }
        if fault.logs.tilt > 0 {
            problems.push(format!("{}: a Sentinel entered TILT", fault.name));
        }
    }
    for fault in [&master_deleted, &master_emptied] {
        if fault.failover.is_none_or(|f| f > FAILOVER_BOUND) {
            problems.push(format!("{}: failover {:?}", fault.name, fault.failover));
        }
    }
    if rollout.logs.nginx_errors > 0 {
        problems.push(format!(
            "rolling restart: nginx logged {} upstream errors (preStop too short?)",
            rollout.logs.nginx_errors
        ));
    }
    for fault in [&replica_lost, &sentinel_moved, &rollout] {
        if fault.failed_reads + fault.refused > 0 {
            problems.push(format!("{}: clients noticed", fault.name));
        }
    }
    let unexpected = report.unexpected_write_statuses();
    if !unexpected.is_empty() {
        problems.push(format!(
            "purchases answered other than 201/503/409: {unexpected:?}"
        ));
    }
    let unresolved: usize = SENTINEL_PODS
        .iter()
        .map(|pod| {
            cluster
                .logs(pod, "sentinel")
                .matches("Failed to resolve")
                .count()
        })
        .sum();
    if unresolved > 0 {
        problems.push(format!(
            "Sentinels logged {unresolved} names they could not resolve"
        ));
    }
    assert!(
        problems.is_empty(),
        "the pods broke the guarantees:\n{}",
        problems.join("\n")
    );
    println!(
        "\npod check passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// What one fault cost.
struct Fault {
    name: &'static str,
    failover: Option<Duration>,
    window: Duration,
    reads: usize,
    failed_reads: usize,
    /// Purchase attempts answered 503 (retried with their key) or not at all.
    refused: usize,
    /// What the components logged during the fault.
    logs: LogCounts,
}

fn set_config(rendered: &mut Rendered, config_map: &str, key: &str, value: &str) {
    let name = name_of(rendered.get("ConfigMap", config_map)).to_owned();
    let object = rendered
        .objects
        .iter_mut()
        .find(|o| o["kind"] == "ConfigMap" && name_of(o) == name)
        .expect("ConfigMap");
    object["data"][key] = json!(value);
}

fn set_env(rendered: &mut Rendered, deployment: &str, name: &str, value: &str) {
    let object = rendered
        .objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" && name_of(o) == deployment)
        .expect("Deployment");
    let env = object["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("env");
    let var = env
        .iter_mut()
        .find(|v| v["name"] == name)
        .expect("the variable");
    var["value"] = json!(value);
}

/// `redis-cli` in a data pod, signed in as the admin (`default`) user.
fn redis_cli(cluster: &Cluster, pod: &str, args: &[&str]) -> Result<String, String> {
    let password = cluster.rendered.secrets["REDIS_ADMIN_PASSWORD"].clone();
    let mut full = vec!["env", "REDISCLI_AUTH=", "redis-cli", "--no-auth-warning"];
    let auth = format!("REDISCLI_AUTH={password}");
    full[1] = &auth;
    full.extend(args);
    cluster.exec(pod, "redis", &full)
}

fn sentinel_master(cluster: &Cluster, sentinel: &str) -> Result<String, String> {
    let password = cluster.rendered.secrets["REDIS_ADMIN_PASSWORD"].clone();
    let auth = format!("REDISCLI_AUTH={password}");
    cluster
        .exec(
            sentinel,
            "sentinel",
            &[
                "env",
                &auth,
                "redis-cli",
                "--no-auth-warning",
                "-p",
                "26379",
                "sentinel",
                "get-master-addr-by-name",
                "evergreen",
            ],
        )
        .map(|out| out.lines().next().unwrap_or("").to_owned())
}

/// The data pod whose Service VIP `address` is.
fn pod_at(cluster: &Cluster, address: &str) -> Option<&'static str> {
    DATA_PODS
        .into_iter()
        .find(|pod| cluster.vip(pod).to_string() == address)
}

/// Waits until exactly one data pod says role:master, the others replicate
/// from its VIP with their link up, and every Sentinel names it; returns it.
async fn exactly_one_master(cluster: &Cluster) -> String {
    wait::until(
        "one master, two replicas in sync, three Sentinels agreeing",
        STARTUP,
        || async {
            let mut masters = Vec::new();
            for pod in DATA_PODS {
                let info = redis_cli(cluster, pod, &["info", "replication"])?;
                if info.contains("role:master") {
                    masters.push(pod);
                }
            }
            let [master] = masters[..] else {
                return Err(format!("masters: {masters:?}"));
            };
            let vip = cluster.vip(master).to_string();
            for pod in DATA_PODS.into_iter().filter(|p| *p != master) {
                let info = redis_cli(cluster, pod, &["info", "replication"])?;
                if !(info.contains(&format!("master_host:{vip}"))
                    && info.contains("master_link_status:up"))
                {
                    return Err(format!("{pod} does not replicate from {master} ({vip})"));
                }
            }
            for sentinel in SENTINEL_PODS {
                let named = sentinel_master(cluster, sentinel)?;
                if named != vip {
                    return Err(format!("{sentinel} names {named}, not {master} ({vip})"));
                }
            }
            Ok(master.to_owned())
        },
    )
    .await
}

/// The `[error]` lines nginx logged so far (an upstream or a name that
/// failed it).
fn nginx_error_lines(cluster: &Cluster) -> Vec<String> {
    cluster
        .pods_of("nginx")
        .iter()
        .flat_map(|pod| {
            cluster
                .logs(pod, "nginx")
                .lines()
                .filter(|line| line.contains("[error]"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Lines of the components' own logs that tell of trouble.
#[derive(Debug, Clone, Copy)]
struct LogCounts {
    /// `+tilt` of the Sentinels.
    tilt: usize,
    /// `[error]` of nginx (an upstream that failed it).
    nginx_errors: usize,
}

impl LogCounts {
    fn read(cluster: &Cluster) -> Self {
        Self {
            tilt: SENTINEL_PODS
                .iter()
                .map(|pod| cluster.logs(pod, "sentinel").matches("+tilt").count())
                .sum(),
            nginx_errors: nginx_error_lines(cluster).len(),
        }
    }

    /// What was logged since `before`.
    fn since(cluster: &Cluster, before: Self) -> Self {
        let now = Self::read(cluster);
        Self {
            tilt: now.tilt.saturating_sub(before.tilt),
            nginx_errors: now.nginx_errors.saturating_sub(before.nginx_errors),
        }
    }
}

/// Lets the traffic run a few seconds between faults.
async fn settle(traffic: &Traffic) {
    let from = traffic.now();
    wait::until("purchases to succeed", Duration::from_secs(60), || async {
        (traffic.successes_after(from) >= 20).then_some(())
    })
    .await;
}

impl Fault {
    /// The traffic's figures between `started` and `ended`.
    fn measure(
        name: &'static str,
        traffic: &Traffic,
        (started, ended): (Duration, Duration),
        failover: Option<Duration>,
        logs: LogCounts,
    ) -> Self {
        let report = traffic.snapshot();
        let reads = report.reads_between(started, ended);
        Self {
            name,
            failover,
            window: report.write_gap_within(started, ended),
            reads: reads.len(),
            failed_reads: reads.iter().filter(|r| !r.ok()).count(),
            refused: report
                .writes
                .iter()
                .filter(|w| w.started >= started && w.started <= ended && !w.succeeded())
                .count(),
            logs,
        }
    }
}

async fn master_pod_deleted(cluster: &Cluster, traffic: &Traffic) -> Fault {
    let logs = LogCounts::read(cluster);
    let master = exactly_one_master(cluster).await;
    let old_ip = cluster.pod_ip(&master).expect("master pod");
    let vip = cluster.vip(&master).to_string();
    let started = traffic.now();
    cluster.delete_pod(&master).await;
    // Sentinel's down-after counts from here at the latest: the pod is gone.
    let gone = traffic.now();
    let new_master = promotion(cluster, &vip).await;
    let promoted = traffic.now();
    // Back once the Sentinels have moved on (a pod rescheduled elsewhere),
    // at a new pod IP behind the same VIP and with the same volume.
    cluster.recreate_stateful_pod("redis", &master).await;
    let new_ip: Ipv4Addr = cluster.pod_ip(&master).expect("recreated pod");
    assert_ne!(old_ip, new_ip, "the recreated pod has a new IP");
    cluster.wait_ready(&master, STARTUP).await;
    let now_master = exactly_one_master(cluster).await;
    let ended = traffic.now();
    let promoted_pod = pod_at(cluster, &new_master).expect("a data pod's VIP");
    assert_eq!(now_master, promoted_pod);
    println!(
        "{master} deleted and recreated ({old_ip} -> {new_ip}, VIP {vip}); the pod was gone \
         {:.1} s after the delete; {promoted_pod} promoted {:.1} s after that; {master} replicates from it",
        (gone - started).as_secs_f64(),
        (promoted - gone).as_secs_f64()
    );
    Fault::measure(
        "delete the master pod, back at a new IP after the failover",
        traffic,
        (started, ended),
        Some(promoted - gone),
        LogCounts::since(cluster, logs),
    )
}

async fn replica_rescheduled_empty(cluster: &Cluster, traffic: &Traffic) -> Fault {
    let logs = LogCounts::read(cluster);
    let master = exactly_one_master(cluster).await;
    let replica = DATA_PODS
        .into_iter()
        .find(|p| *p != master)
        .expect("a replica");
    let started = traffic.now();
    cluster.kill_pod(replica).await;
    cluster.delete_claim("data", replica).await;
    cluster.recreate_stateful_pod("redis", replica).await;
    cluster.wait_ready(replica, STARTUP).await;
    assert_eq!(
        exactly_one_master(cluster).await,
        master,
        "no failover for a replica"
    );
    let replicaof =
        redis_cli(cluster, replica, &["config", "get", "replicaof"]).expect("CONFIG GET");
    let ended = traffic.now();
    println!(
        "{replica} back on an empty volume, replicating from {master} (replicaof {})",
        replicaof.lines().nth(1).unwrap_or("?")
    );
    Fault::measure(
        "kill a replica pod, back on an empty volume",
        traffic,
        (started, ended),
        None,
        LogCounts::since(cluster, logs),
    )
}

/// A crashed master restarted by kubelet before the Sentinels' down-after:
/// no failover, writes back when it is, nothing lost (its AOF holds every
/// write it acknowledged: a killed process loses nothing the kernel has).
async fn master_pod_killed_and_back_at_once(cluster: &Cluster, traffic: &Traffic) -> Fault {
    let logs = LogCounts::read(cluster);
    let master = exactly_one_master(cluster).await;
    let started = traffic.now();
    cluster.kill_pod(&master).await;
    cluster.recreate_stateful_pod("redis", &master).await;
    cluster.wait_ready(&master, STARTUP).await;
    let now = exactly_one_master(cluster).await;
    let ended = traffic.now();
    println!("{master} killed and back at once; the master now: {now}");
    Fault::measure(
        "kill the master pod, back at once",
        traffic,
        (started, ended),
        None,
        LogCounts::since(cluster, logs),
    )
}

/// Waits until a majority of Sentinels names a master other than `old_vip`;
/// returns its address.
async fn promotion(cluster: &Cluster, old_vip: &str) -> String {
    wait::until(
        "a Sentinel majority to name another master",
        Duration::from_secs(60),
        || async {
            let named: Vec<String> = SENTINEL_PODS
                .iter()
                .filter_map(|s| sentinel_master(cluster, s).ok())
                .filter(|address| address != old_vip)
                .collect();
            (named.len() >= 2).then(|| named[0].clone()).ok_or(named)
        },
    )
    .await
}

/// The master's pod and volume gone at once: its init container must not
/// start it as an empty master (the replicas would drop their data to copy
/// it) but wait for the failover and come back as a replica.
async fn master_pod_back_empty(cluster: &Cluster, traffic: &Traffic) -> Fault {
    let logs = LogCounts::read(cluster);
    let master = exactly_one_master(cluster).await;
    let vip = cluster.vip(&master).to_string();
    let started = traffic.now();
    cluster.kill_pod(&master).await;
    cluster.delete_claim("data", &master).await;
    let gone = traffic.now();
    // Recreated at once: its init container waits for the failover.
    let (promoted, ()) = tokio::join!(
        async {
            promotion(cluster, &vip).await;
            traffic.now()
        },
        cluster.recreate_stateful_pod("redis", &master),
    );
    let now = exactly_one_master(cluster).await;
    assert_ne!(now, master, "an empty pod never becomes the master");
    assert_ne!(cluster.vip(&now).to_string(), vip);
    cluster.wait_ready(&master, STARTUP).await;
    let ended = traffic.now();
    println!(
        "{master} lost with its volume; {now} promoted {:.1} s later; {master} back as its replica",
        (promoted - gone).as_secs_f64()
    );
    Fault::measure(
        "kill the master pod and delete its volume",
        traffic,
        (started, ended),
        Some(promoted - gone),
        LogCounts::since(cluster, logs),
    )
}

/// A Sentinel rescheduled: the others know it by its Service's VIP, which
/// stays; it comes back with its rewritten config and rejoins.
async fn sentinel_pod_deleted(cluster: &Cluster, traffic: &Traffic) -> Fault {
    let logs = LogCounts::read(cluster);
    let sentinel = SENTINEL_PODS[0];
    let old_ip = cluster.pod_ip(sentinel).expect("the Sentinel pod");
    let started = traffic.now();
    cluster.delete_pod(sentinel).await;
    cluster.recreate_stateful_pod("sentinel", sentinel).await;
    cluster.wait_ready(sentinel, STARTUP).await;
    exactly_one_master(cluster).await;
    let ended = traffic.now();
    println!(
        "{sentinel} back at {} (was {old_ip}), ready and naming the master",
        cluster.pod_ip(sentinel).expect("the Sentinel pod")
    );
    Fault::measure(
        "delete a Sentinel pod, back at a new IP",
        traffic,
        (started, ended),
        None,
        LogCounts::since(cluster, logs),
    )
}

async fn rolling_restart(cluster: &Cluster, traffic: &Traffic) -> Fault {
    let logs = LogCounts::read(cluster);
    let started = traffic.now();
    for old in cluster.pods_of("api") {
        // maxSurge 1, maxUnavailable 0: the new pod ready before the old goes.
        let new = cluster.add_deployment_pod("api").await;
        cluster.wait_ready(&new, STARTUP).await;
        cluster.delete_pod(&old).await;
        println!("rolled {old} -> {new}");
    }
    let ended = traffic.now();
    Fault::measure(
        "rolling restart of the API",
        traffic,
        (started, ended),
        None,
        LogCounts::since(cluster, logs),
    )
}

/// Every purchase id in the store-wide purchase log on `master`.
fn purchase_log(cluster: &Cluster, master: &str) -> BTreeSet<String> {
    let out = redis_cli(
        cluster,
        master,
        &["xrange", "evergreen:v1:purchase-log", "-", "+"],
    )
    .expect("XRANGE");
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "id")
        .map(|pair| pair[1].to_owned())
        .collect()
}
