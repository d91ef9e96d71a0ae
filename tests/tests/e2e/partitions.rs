//! Partitions without Docker: every Redis node and Sentinel (and, behind
//! nginx, every API replica) in a network namespace of its own, cut off with
//! iptables inside its namespace ([`Lab`]); the same cases as the Docker
//! check's partitions, so that `scripts/test partitions` reproduces them on
//! any Linux machine. Each prints the figures of the failover tests and
//! checks, through `conclude`, that no acknowledged purchase is lost, that no
//! node holds other purchases than the master once healed, and that reads
//! kept working. Needs root for the namespaces: ignored (reported skipped by
//! the runner) unless run with `--run-ignored`, which `scripts/test` passes
//! as root and in CI, where a lab that cannot be made fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evergreen_tests::client::Api;
use evergreen_tests::gateway::GatewayOptions;
use evergreen_tests::lab::Lab;
use evergreen_tests::traffic::{Report, Traffic};
use evergreen_tests::wait;
use reqwest::StatusCode;

use evergreen_tests::scenario::{HEAL_DEADLINE, Scenario};

/// How long a partition lasts: past the failover (down-after 2 s + ~2 s),
/// so that clients meet the old master after the promotion.
const PARTITION: Duration = Duration::from_secs(8);

/// The lab, or a failure: these tests are `#[ignore]`d, so nextest reports
/// them skipped unless asked to run them (`scripts/test` does where it is
/// root, and always in CI), and then a lab that cannot be made fails them.
fn lab() -> Arc<Lab> {
    Arc::new(Lab::create().unwrap_or_else(|reason| {
        panic!("network namespaces cannot be made here (root is needed): {reason}")
    }))
}

/// Waits until the partition made at `fault` has lasted [`PARTITION`].
async fn hold(traffic: &Traffic, fault: Duration) {
    wait::until("the partition to have lasted", PARTITION * 2, || async {
        (traffic.now() >= fault + PARTITION).then_some(())
    })
    .await;
}

/// Purchase attempts answered 503 from `fault` on, and from the first to the
/// last of them.
fn refused(report: &Report, fault: Duration) -> (usize, Duration) {
    let times: Vec<Duration> = report
        .writes
        .iter()
        .filter(|w| w.started >= fault && w.status == Some(StatusCode::SERVICE_UNAVAILABLE))
        .map(|w| w.started)
        .collect();
    let span = match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    (times.len(), span)
}

/// Cuts the master off with `peers` (empty: from everyone) for
/// [`PARTITION`], waits for the failover and the heal, and concludes.
async fn partition_the_master(name: &str, peers_of: impl FnOnce(&Scenario, u16) -> Vec<String>) {
    let lab = lab();
    let scenario = Scenario::in_lab(lab.clone()).await;
    let old_master = scenario.redis().master_port().await;
    let namespace = scenario
        .redis()
        .namespace_of(old_master)
        .expect("in the lab")
        .to_owned();
    let peers = peers_of(&scenario, old_master);
    let traffic = scenario.flowing_traffic().await;

    let fault = traffic.now();
    lab.cut(&namespace, &peers);
    let new_master = scenario.failed_over_from(old_master, &traffic, fault).await;
    hold(&traffic, fault).await;
    lab.heal(&namespace);
    let report = scenario
        .rejoined(old_master, new_master, traffic, fault, name)
        .await;
    let (refused, span) = refused(&report, fault);
    println!(
        "{name}: purchases refused (503, retried with their key) {refused} in {:.2} s",
        span.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root for network namespaces: scripts/test runs it as root and in CI"]
async fn a_master_cut_off_from_everyone_fails_over_and_rejoins_holding_the_new_masters_data() {
    partition_the_master("master cut off from everyone", |_, _| Vec::new()).await;
}

/// The Jepsen case: the old master keeps accepting writes from the API
/// instances, which still reach it, while the Sentinels promote a replica.
/// Every write it accepted after the cut is refused to the client (its
/// `WAIT` cannot be met, or the Sentinels no longer confirm it), and the
/// retries with the same key land on the new master: `conclude` finds every
/// acknowledged purchase on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root for network namespaces: scripts/test runs it as root and in CI"]
async fn the_master_cut_off_from_the_sentinels_and_a_replica_but_not_from_the_api_loses_no_acknowledged_write()
 {
    partition_the_master(
        "master cut off from the Sentinels and one replica, not from the API",
        |scenario, master| {
            let redis = scenario.redis();
            let replica = redis
                .data_ports()
                .into_iter()
                .find(|port| *port != master)
                .expect("a replica");
            let mut peers = redis.sentinel_hosts();
            peers.push(redis.host_of(replica).to_owned());
            peers
        },
    )
    .await;
}

/// One Sentinel on its own (a minority) can neither declare the master down
/// nor fail it over: clients notice nothing, and it follows the master again
/// once the partition heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root for network namespaces: scripts/test runs it as root and in CI"]
async fn a_sentinel_cut_off_alone_changes_nothing_and_rejoins() {
    let lab = lab();
    let scenario = Scenario::in_lab(lab.clone()).await;
    let master = scenario.redis().master_port().await;
    let namespace = scenario
        .redis()
        .sentinel_namespace(0)
        .expect("in the lab")
        .to_owned();
    let traffic = scenario.flowing_traffic().await;

    let fault = traffic.now();
    lab.cut(&namespace, &[]);
    hold(&traffic, fault).await;
    assert_eq!(
        scenario.redis().master_port().await,
        master,
        "one Sentinel must not cause a failover"
    );
    lab.heal(&namespace);
    wait::until(
        "the Sentinel to follow the master again",
        HEAL_DEADLINE,
        || async {
            match scenario.redis().master_port_seen_by(0).await {
                Ok(port) if port == master => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    let report = traffic.finish().await;

    scenario
        .conclude("one Sentinel cut off", &report, fault)
        .await;
    let failed_writes = report.writes.iter().filter(|w| !w.succeeded()).count();
    assert_eq!(failed_writes, 0, "clients must not notice a lone Sentinel");
}

/// One API replica cut off from every Redis node and Sentinel, not from
/// nginx: its requests end within the Redis timeouts with 503 (nothing
/// hangs), and once it knows it is cut off, at once; nginx sends GETs that
/// failed there to the other replica, and purchases refused there are
/// retried by their key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root for network namespaces: scripts/test runs it as root and in CI"]
async fn an_api_replica_cut_off_from_redis_fails_fast_and_nginx_moves_reads_to_the_other() {
    let lab = lab();
    let scenario = Scenario::behind_nginx_with(GatewayOptions {
        lab: Some(lab.clone()),
        ..GatewayOptions::default()
    })
    .await;
    let gateway = scenario.gateway().expect("behind nginx");
    let (_, namespace) = gateway.replicas[0].namespace.clone().expect("in the lab");
    let redis = scenario.redis();
    let mut peers: Vec<String> = redis
        .data_ports()
        .into_iter()
        .map(|port| redis.host_of(port).to_owned())
        .collect();
    peers.extend(redis.sentinel_hosts());
    let traffic = scenario.flowing_traffic().await;

    let fault = traffic.now();
    lab.cut(&namespace, &peers);
    // Past CUT_OFF_AFTER without a Sentinel, and once a master operation
    // failed there, the replica knows it is cut off. Asked directly, it
    // answers at once. The asks are purchases
    // (refused ones write nothing): the first may still wait for the master.
    wait::until("the cut to have lasted 5 s", PARTITION, || async {
        (traffic.now() >= fault + Duration::from_secs(5)).then_some(())
    })
    .await;
    let cut_off = Api::new(&gateway.replicas[0].base_url());
    let mut refusal_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (buyer, product_id) = scenario.buyer();
        let key = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({"items": [{"product_id": product_id, "quantity": 1}]});
        let response = cut_off
            .purchase(&buyer.access_token, Some(&key), &body)
            .await;
        refusal_times.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    hold(&traffic, fault).await;
    lab.heal(&namespace);
    let healed = traffic.now();
    wait::until(
        "purchases on both replicas again",
        HEAL_DEADLINE,
        || async { (traffic.successes_after(healed + Duration::from_secs(2)) > 40).then_some(()) },
    )
    .await;
    let report = traffic.finish().await;

    let (refused, span) = refused(&report, fault);
    refusal_times.sort();
    let median = refusal_times
        .get(refusal_times.len() / 2)
        .copied()
        .unwrap_or_default();
    println!(
        "API replica cut off from Redis: purchases refused (503, retried) {refused} in {:.2} s; \
         asked directly, it refused in {:.0} ms (median of 5)",
        span.as_secs_f64(),
        median.as_secs_f64() * 1000.0
    );
    assert!(
        refused > 0,
        "purchases sent to the cut-off replica are refused"
    );
    assert!(
        median < Duration::from_millis(500),
        "a replica that knows it is cut off answers at once, not after the timeouts: {median:?}"
    );
    scenario
        .conclude("one API replica cut off from Redis", &report, fault)
        .await;
}
