//! Nobody holds more than they need, and nobody can take the store's last
//! admin away: each Redis and Sentinel user (the API, replication, Sentinel,
//! the exporters) runs what its job needs and is refused the rest; two admins
//! demoting each other at the same moment leave one.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{expect, expect_problem};
use evergreen_tests::redis_ha::{MASTER_NAME, users};
use redis::Value;
use redis::aio::MultiplexedConnection;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_the_store_one_admin() {
    // Arrange: a second admin beside the bootstrap one.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let mut survivor = stack.admin().await;
    let mut other = stack.customer().await;
    let mut refused_by_the_check = 0;
    for round in 1..=10 {
        let promote = json!({"role": "admin"});
        let other_id = other.user_id.to_string();
        expect(
            api.update_user(&survivor.access_token, &other_id, &promote)
                .await,
            StatusCode::OK,
        )
        .await;
        // A token carries the role it was issued with: sign in as an admin.
        let promoted = api.login_ok(&other.email, &other.password).await;
        let (a, b) = (survivor.clone(), promoted);
        let (a_id, b_id) = (a.user_id.to_string(), b.user_id.to_string());
        let demote = json!({"role": "customer"});

        // Act: each demotes the other, at the same moment.
        let (by_a, by_b) = tokio::join!(
            api.update_user(&a.access_token, &b_id, &demote),
            api.update_user(&b.access_token, &a_id, &demote),
        );

        // Assert: one change went through. The other was refused: by the
        // atomic check (409 last_admin) when both passed authorization at
        // once, or as a non-admin (403) when it came second.
        let statuses = [by_a.status(), by_b.status()];
        println!("round {round}, each demoting the other at once: {statuses:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{statuses:?}"
        );
        let (refused, kept, demoted) = if by_a.status() == StatusCode::OK {
            (by_b, a, b)
        } else {
            (by_a, b, a)
        };
        if refused.status() == StatusCode::CONFLICT {
            expect_problem(refused, StatusCode::CONFLICT, "last_admin").await;
            refused_by_the_check += 1;
        } else {
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
        let users = api.all_pages(&kept.access_token, "/users").await;
        let admins = users.iter().filter(|u| u["role"] == "admin").count();
        assert_eq!(admins, 1, "{users:?}");
        if refused_by_the_check >= 2 {
            return;
        }
        (survivor, other) = (kept, demoted);
    }
    panic!("the two demotions never raced past authorization together: {refused_by_the_check}");
}

/// Runs `args` on `connection`; `Err` carries Redis's error text.
async fn run(connection: &mut MultiplexedConnection, args: &[&str]) -> Result<Value, String> {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async::<Value>(connection)
        .await
        .map_err(|e| e.to_string())
}

/// Asserts `args` runs for `who` (a reply that is not an error).
async fn allowed(connection: &mut MultiplexedConnection, who: &str, args: &[&str]) {
    if let Err(e) = run(connection, args).await {
        panic!("{who} may run {args:?}, got {e}");
    }
}

/// Asserts `args` is refused to `who` by its ACL (NOPERM), not for another reason.
async fn refused(connection: &mut MultiplexedConnection, who: &str, args: &[&str]) {
    match run(connection, args).await {
        Ok(reply) => panic!("{who} ran {args:?}: {reply:?}"),
        Err(e) => assert!(e.to_uppercase().contains("NOPERM"), "{who} {args:?}: {e}"),
    }
}

#[tokio::test]
async fn each_redis_user_runs_what_its_job_needs_and_is_refused_the_rest() {
    // Arrange: the shipped ACLs (redis/*.conf.template) on a real topology.
    let stack = TestStack::start_own().await;
    let redis = &stack.redis;
    let credentials = redis.credentials();
    let master = redis.master_port().await;
    let sentinel = redis.sentinel_ports()[0];
    let as_user = |port: u16, user: &'static str, password: &str| {
        let password = password.to_owned();
        async move {
            redis
                .connect_as(port, user, &password)
                .await
                .unwrap_or_else(|e| panic!("{user} signs in on :{port}: {e}"))
        }
    };
    let wipe_or_reconfigure: [&[&str]; 8] = [
        &["FLUSHALL"],
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
        &["KEYS", "*"],
        &["SCRIPT", "FLUSH"],
        &["CLIENT", "KILL", "TYPE", "normal"],
        &["ACL", "SETUSER", "intruder", "on", ">secret", "+@all", "~*"],
        &["REPLICAOF", "127.0.0.1", "1"],
        &["SHUTDOWN", "NOSAVE"],
    ];

    // Act + Assert, data node. The API: its own keys, its scripts, WAIT.
    let mut api = as_user(master, users::API, &credentials.api).await;
    let own_key = format!("{}least-privilege", stack.key_prefix);
    allowed(&mut api, "api", &["SET", &own_key, "1"]).await;
    allowed(&mut api, "api", &["SCRIPT", "LOAD", "return 1"]).await;
    allowed(&mut api, "api", &["WAIT", "0", "10"]).await;
    allowed(&mut api, "api", &["ROLE"]).await;
    allowed(&mut api, "api", &["INFO", "replication"]).await;
    refused(&mut api, "api", &["GET", "someone-elses:key"]).await;
    refused(&mut api, "api", &["EVAL", "return 1", "0"]).await;
    refused(&mut api, "api", &["PUBLISH", "__sentinel__:hello", "x"]).await;
    for args in wipe_or_reconfigure {
        refused(&mut api, "api", args).await;
    }
    // The exporters and healthchecks: server state, no data.
    let mut monitor = as_user(master, users::MONITOR, &credentials.monitor).await;
    allowed(&mut monitor, "monitor", &["INFO"]).await;
    allowed(&mut monitor, "monitor", &["CONFIG", "GET", "maxmemory"]).await;
    refused(&mut monitor, "monitor", &["GET", &own_key]).await;
    refused(&mut monitor, "monitor", &["SET", &own_key, "2"]).await;
    for args in wipe_or_reconfigure {
        refused(&mut monitor, "monitor", args).await;
    }
    // Replication and Sentinel: their protocols, no data.
    let mut replication = as_user(master, users::REPLICATION, &credentials.replication).await;
    allowed(&mut replication, "replication", &["PING"]).await;
    refused(&mut replication, "replication", &["GET", &own_key]).await;
    refused(&mut replication, "replication", &["INFO"]).await;
    let mut sentinel_user = as_user(master, users::SENTINEL, &credentials.sentinel).await;
    allowed(&mut sentinel_user, "sentinel", &["INFO", "replication"]).await;
    refused(&mut sentinel_user, "sentinel", &["GET", &own_key]).await;
    refused(&mut sentinel_user, "sentinel", &["FLUSHALL"]).await;

    // Sentinel: the API and the monitor read, only an operator fails over
    // or reconfigures.
    let reconfigure_sentinel: [&[&str]; 4] = [
        &["SENTINEL", "FAILOVER", MASTER_NAME],
        &["SENTINEL", "SET", MASTER_NAME, "quorum", "1"],
        &["SENTINEL", "REMOVE", MASTER_NAME],
        &["SENTINEL", "MONITOR", "intruder", "127.0.0.1", "1", "1"],
    ];
    let mut api = as_user(sentinel, users::API, &credentials.api).await;
    allowed(
        &mut api,
        "api",
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
    )
    .await;
    allowed(&mut api, "api", &["SENTINEL", "REPLICAS", MASTER_NAME]).await;
    let mut monitor = as_user(sentinel, users::MONITOR, &credentials.monitor).await;
    allowed(
        &mut monitor,
        "monitor",
        &["SENTINEL", "CKQUORUM", MASTER_NAME],
    )
    .await;
    let mut peer = as_user(sentinel, users::SENTINEL, &credentials.sentinel).await;
    for (who, connection) in [
        ("api", &mut api),
        ("monitor", &mut monitor),
        ("sentinel", &mut peer),
    ] {
        for args in reconfigure_sentinel {
            refused(connection, who, args).await;
        }
    }
    let mut admin = as_user(sentinel, users::ADMIN, &credentials.admin).await;
    allowed(&mut admin, "admin", &["SENTINEL", "CKQUORUM", MASTER_NAME]).await;
}
