//! Redis failures under real traffic. Each test runs buyers and readers against
//! two API instances, breaks the Redis master in one of the ways that lost
//! acknowledged writes with a stock Sentinel pool (paused with an idle pool,
//! killed, a graceful failover), lets Sentinel heal it, and then checks that every
//! purchase acknowledged with 201 is still there, that stock matches the
//! purchases recorded, and that no request took longer than the bound
//! ([`Scenario::conclude`]). Each prints its measured write-unavailability
//! window and the acknowledged writes lost (which must be 0).

use std::time::{Duration, Instant};

use evergreen_tests::scenario::{HEAL_DEADLINE, Scenario};
use evergreen_tests::traffic::Report;
use evergreen_tests::wait;

/// SIGSTOP the master under traffic (what `docker compose pause` does), wait
/// for the promotion and for writes to come back, SIGCONT it, and wait until
/// it is a replica of the new master; then verify and print.
async fn pause_and_resume_the_master(scenario: &Scenario, name: &str) {
    let old_master = scenario.redis().master_port().await;
    let traffic = scenario.flowing_traffic().await;

    let fault = traffic.now();
    scenario.redis().pause(old_master);
    let new_master = scenario.failed_over_from(old_master, &traffic, fault).await;
    scenario.redis().resume(old_master);
    scenario
        .rejoined(old_master, new_master, traffic, fault, name)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_master_under_load_fails_over_without_losing_acknowledged_purchases() {
    let scenario = Scenario::start().await;
    pause_and_resume_the_master(&scenario, "master paused").await;
}

/// The same through the shipped nginx in front of API processes: reads never
/// fail, writes come back by themselves, the resumed master rejoins as a
/// replica holding exactly the new master's purchases (`verify` compares every
/// node), and no purchase is recorded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_master_behind_nginx_fails_over_and_rejoins_without_a_split() {
    let scenario = Scenario::behind_nginx().await;
    pause_and_resume_the_master(&scenario, "master paused, through nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_pool_never_writes_to_a_master_resumed_after_a_failover() {
    let scenario = Scenario::start().await;
    let old_master = scenario.redis().master_port().await;
    // Warm both instances' pools so idle connections to the master exist.
    let origin = Instant::now();
    let warmup = scenario.traffic_since(origin);
    wait::until("traffic to flow", HEAL_DEADLINE, || async {
        (warmup.successes_after(Duration::ZERO) > 40).then_some(())
    })
    .await;
    let warmup = warmup.finish().await;
    let scripts_before = scenario.redis().script_calls(old_master).await;
    assert!(scripts_before > 40, "the warm-up bought on this master");

    // Act: pause the master with no traffic at all, let Sentinel promote a
    // replica and the idle instances follow it (their watchers poll through
    // the outage), resume the old master (it still says role:master for
    // ~10 s), and only then send traffic again.
    scenario.redis().pause(old_master);
    let new_master = scenario
        .redis()
        .wait_for_master_change(old_master, HEAL_DEADLINE)
        .await;
    scenario.instances_follow(new_master).await;
    scenario.redis().resume(old_master);
    let fault = origin.elapsed();
    let traffic = scenario.traffic_since(origin);
    scenario
        .redis()
        .wait_until_replica_of(old_master, new_master, HEAL_DEADLINE)
        .await;
    let report = traffic.finish().await;

    let mut writes = warmup.writes.clone();
    writes.extend(report.writes.iter().cloned());
    let all = Report {
        writes,
        reads: report.reads.clone(),
    };
    scenario
        .conclude("idle pool, master paused then resumed", &all, fault)
        .await;
    // What a stale pooled connection would have done: a purchase on the
    // resumed old master, refused there (503, retried) or lost at its resync.
    // Nothing of the traffic after the switch may reach it.
    let scripts_after = scenario.redis().script_calls(old_master).await;
    assert_eq!(
        scripts_after, scripts_before,
        "purchases were sent to the resumed old master"
    );
}

/// How a master process goes away before it is started again from its files.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: a crash (`docker compose kill -s KILL`).
    Kill,
    /// SIGTERM: Redis saves and exits (`docker compose stop`).
    Terminate,
}

/// Stops the master under traffic, lets Sentinel promote a replica, starts
/// the old master again from its own RDB/AOF files while traffic continues,
/// and waits until it replicates from the new one; then verifies and prints.
async fn stop_and_restart_the_master(how: Stop, name: &str) {
    let mut scenario = Scenario::start().await;
    let old_master = scenario.redis().master_port().await;
    let traffic = scenario.flowing_traffic().await;

    let fault = traffic.now();
    match how {
        Stop::Kill => scenario.redis_mut().kill(old_master),
        Stop::Terminate => scenario.redis_mut().stop(old_master).await,
    }
    let new_master = scenario.failed_over_from(old_master, &traffic, fault).await;
    scenario.redis_mut().restart(old_master).await;
    scenario
        .rejoined(old_master, new_master, traffic, fault, name)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_restarted_from_its_files_loses_no_acknowledged_purchase() {
    stop_and_restart_the_master(Stop::Kill, "master killed and restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_stopped_with_sigterm_and_started_again_loses_no_acknowledged_purchase() {
    stop_and_restart_the_master(Stop::Terminate, "master stopped (SIGTERM) and started").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_sentinel_failover_under_steady_writes_loses_no_acknowledged_purchase() {
    let scenario = Scenario::start().await;
    let old_master = scenario.redis().master_port().await;
    let traffic = scenario.flowing_traffic().await;

    // Act: SENTINEL FAILOVER. The old master keeps role:master and accepts
    // writes for ~10 s after the switch: the hardest case for acknowledged writes.
    let fault = traffic.now();
    scenario.redis().sentinel_failover().await;
    let new_master = scenario.failed_over_from(old_master, &traffic, fault).await;
    scenario
        .rejoined(
            old_master,
            new_master,
            traffic,
            fault,
            "graceful SENTINEL FAILOVER",
        )
        .await;
}

/// Reads tolerate a paused replica, and writes keep being confirmed by the
/// other replica once Sentinel marks the paused one down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_slows_nothing_for_long_and_loses_nothing() {
    let scenario = Scenario::start().await;
    let master = scenario.redis().master_port().await;
    let replica = scenario
        .redis()
        .data_ports()
        .into_iter()
        .find(|port| *port != master)
        .expect("a replica");
    let traffic = scenario.flowing_traffic().await;

    let fault = traffic.now();
    scenario.redis().pause(replica);
    // Long enough for Sentinel to mark it down (2 s) and the API to notice.
    wait::until(
        "writes to flow again with one replica paused",
        HEAL_DEADLINE,
        || async { (traffic.successes_after(fault + Duration::from_secs(4)) > 20).then_some(()) },
    )
    .await;
    scenario.redis().resume(replica);
    scenario
        .redis()
        .wait_until_in_sync(master, HEAL_DEADLINE)
        .await;
    let report = traffic.finish().await;

    scenario.conclude("replica paused", &report, fault).await;
}
