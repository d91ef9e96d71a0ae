//! Tests of the test harness itself: the shipped Redis configuration starts a
//! working Sentinel topology, and the failure injections the end-to-end tests
//! rely on behave as they claim.

use std::path::Path;
use std::time::{Duration, Instant};

use evergreen_tests::redis_ha::{RedisHa, RedisHaOptions, templates_dir};
use evergreen_tests::wait;

/// Setting lines of a config template, comments and blank lines dropped.
fn directives(name: &str) -> Vec<String> {
    std::fs::read_to_string(templates_dir().join(name))
        .expect("the template exists")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_replica_template_is_the_master_template_plus_replicaof() {
    let mut expected = directives("master.conf.template");
    expected.push("replicaof ${MASTER_IP} ${MASTER_PORT}".to_owned());
    assert_eq!(directives("replica.conf.template"), expected);
}

#[tokio::test]
async fn the_topology_starts_with_two_replicas_in_sync_and_three_sentinels_agreeing() {
    let ha = RedisHa::start(RedisHaOptions::default()).await;
    let ports = ha.data_ports();
    assert_eq!(ha.sentinel_addrs().len(), 3);
    assert_eq!(ha.master_port().await, ports[0]);
    assert_eq!(ha.role(ports[0]).await, "master");
    for &replica in &ports[1..] {
        assert_eq!(ha.role(replica).await, "slave");
    }
    let info = ha.info_replication(ports[0]).await;
    assert_eq!(info.get("connected_slaves").map(String::as_str), Some("2"));

    let mut master = ha.connection(ports[0]).await;
    let _: () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query_async(&mut master)
        .await
        .expect("the master takes writes once both replicas are attached");
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(1000)
        .query_async(&mut master)
        .await
        .expect("WAIT answers");
    assert_eq!(acked, 2, "both replicas acknowledge the write");

    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}/", ports[0]))
        .expect("the URL is valid")
        .get_multiplexed_async_connection()
        .await;
    let refused = match anonymous {
        Err(e) => e.to_string(),
        Ok(mut conn) => redis::cmd("SET")
            .arg("greeting")
            .arg("intruder")
            .query_async::<()>(&mut conn)
            .await
            .expect_err("a write without the password is refused")
            .to_string(),
    };
    assert!(refused.contains("NOAUTH"), "{refused}");
}

#[tokio::test]
async fn pausing_the_master_promotes_a_replica_and_resuming_turns_the_old_master_into_a_replica() {
    let options = RedisHaOptions::default();
    let ha = RedisHa::start(options).await;
    let old = ha.master_port().await;

    let paused = Instant::now();
    ha.pause(old);
    let down_after = Duration::from_millis(options.down_after_ms);
    let new = ha
        .wait_for_master_change(old, down_after + Duration::from_secs(5))
        .await;
    eprintln!(
        "failover after pausing the master: {:.2} s (down-after {:.1} s)",
        paused.elapsed().as_secs_f64(),
        down_after.as_secs_f64(),
    );

    // The new master takes writes once Sentinel has pointed the other
    // replica at it (min-replicas-to-write 1): NOREPLICAS until then (seen
    // in CI right after the promotion), within seconds.
    let conn = ha.connection(new).await;
    wait::until(
        "the new master to take writes",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("SET")
                    .arg("after-failover")
                    .arg(1)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;

    let resumed = Instant::now();
    ha.resume(old);
    // For ~10 s the old master still says role:master; min-replicas-to-write
    // makes it refuse writes, since its replicas have left it for the new one.
    let mut stale = ha.connection(old).await;
    let refused = redis::cmd("SET")
        .arg("lost-write")
        .arg(1)
        .query_async::<()>(&mut stale)
        .await
        .expect_err("the old master refuses writes")
        .to_string();
    assert!(
        refused.contains("NOREPLICAS") || refused.contains("READONLY"),
        "{refused}"
    );
    drop(stale);
    // Sentinel converts a returning old master only after it has reported
    // role:master for 8 s (4 hello periods) and on its next INFO poll.
    ha.wait_until_replica_of(old, new, Duration::from_secs(30))
        .await;
    eprintln!(
        "old master replicating from the new one {:.2} s after resuming",
        resumed.elapsed().as_secs_f64(),
    );
    ha.wait_until_in_sync(new, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_killed_master_restarted_from_its_files_rejoins_as_a_replica_and_keeps_acknowledged_writes()
 {
    let options = RedisHaOptions::default();
    let mut ha = RedisHa::start(options).await;
    let old = ha.master_port().await;

    let mut conn = ha.connection(old).await;
    let _: () = redis::cmd("SET")
        .arg("order:1")
        .arg("paid")
        .query_async(&mut conn)
        .await
        .expect("the master takes writes");
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(1000)
        .query_async(&mut conn)
        .await
        .expect("WAIT answers");
    assert_eq!(acked, 2, "both replicas acknowledge the write");
    drop(conn);

    let killed = Instant::now();
    ha.kill(old);
    let new = ha
        .wait_for_master_change(
            old,
            Duration::from_millis(options.down_after_ms) + Duration::from_secs(5),
        )
        .await;
    eprintln!(
        "failover after killing the master: {:.2} s",
        killed.elapsed().as_secs_f64()
    );

    ha.restart(old).await;
    let restarted = Instant::now();
    ha.wait_until_replica_of(old, new, Duration::from_secs(30))
        .await;
    eprintln!(
        "restarted old master replicating from the new one after {:.2} s",
        restarted.elapsed().as_secs_f64()
    );

    for port in [new, old] {
        let mut conn = ha.connection(port).await;
        let value: Option<String> = redis::cmd("GET")
            .arg("order:1")
            .query_async(&mut conn)
            .await
            .expect("GET answers");
        assert_eq!(value.as_deref(), Some("paid"), "on :{port}");
    }
}

#[tokio::test]
async fn dropping_the_topology_kills_every_node_even_a_paused_one() {
    let ha = RedisHa::start(RedisHaOptions::default()).await;
    let pids = ha.pids();
    assert_eq!(pids.len(), 6);
    let ports = ha.data_ports();
    ha.pause(ports[0]);
    ha.pause(ports[1]);
    let dir = ha.dir().to_owned();
    drop(ha);

    let alive: Vec<u32> = pids
        .into_iter()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    assert!(!dir.exists(), "{} is removed", dir.display());
}
