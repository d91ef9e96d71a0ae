//! The data tier as an operator handles it: a Sentinel lost before a master
//! failure, the whole tier stopped and started again from its files, and a
//! master that refuses writes for want of in-sync replicas.

use std::time::{Duration, Instant};

use evergreen_api::redis::{RedisError, transaction};
use evergreen_tests::app::TestStack;
use evergreen_tests::client::{expect, json};
use evergreen_tests::redis_ha::RedisHa;
use evergreen_tests::wait;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{metrics_at, sample};

const DEADLINE: Duration = Duration::from_secs(40);

/// A master short of in-sync replicas answers a write inside the API's
/// transaction pipeline (MULTI, the writes, EXEC, WAIT) with NOREPLICAS,
/// which redis-rs wraps as a pipeline error with no code of its own: the
/// API must read it as "unavailable, retry", never as a bug (500), and the
/// write must not have happened.
#[tokio::test]
async fn a_noreplicas_refusal_inside_a_write_pipeline_is_retryable_and_writes_nothing() {
    // Arrange: the real topology; the master now wants more replicas than it has.
    let redis = RedisHa::start(Default::default()).await;
    let master = redis.master_port().await;
    let mut connection = redis.connection(master).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(3)
        .query_async(&mut connection)
        .await
        .expect("CONFIG SET");
    let mut pipe = transaction(|pipe| {
        pipe.cmd("HSET").arg("noreplicas-probe").arg("f").arg(1);
    });
    pipe.cmd("WAIT").arg(1).arg(100);

    // Act
    let refused = pipe
        .query_async::<Vec<redis::Value>>(&mut connection)
        .await
        .expect_err("the master refuses the write");

    // Assert
    assert!(refused.to_string().contains("NOREPLICAS"), "{refused}");
    assert!(
        matches!(
            RedisError::from(refused.clone()),
            RedisError::Unavailable(_)
        ),
        "{refused}"
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg("noreplicas-probe")
        .query_async(&mut connection)
        .await
        .expect("EXISTS");
    assert!(!exists, "nothing of the refused transaction was applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failure_still_fails_over_with_one_sentinel_dead() {
    let mut stack = TestStack::start_own().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = api.new_product(&admin, 100, 1000).await;
    let customer = stack.customer().await;
    let order = json!({"items": [{"product_id": product["id"], "quantity": 1}]});

    let metrics_url = format!("http://127.0.0.1:{}/metrics", stack.apps[0].metrics_port);
    let followed = || async {
        sample(
            &metrics_at(&metrics_url).await,
            "evergreen_redis_failovers_followed_total",
            &[],
        )
        .expect("the counter is exported")
    };
    let followed_before = followed().await;

    // Act: lose one Sentinel of three, then pause the master.
    stack.redis.kill_sentinel(0);
    let old_master = stack.redis.master_port().await;
    let paused = Instant::now();
    stack.redis.pause(old_master);
    let new_master = stack
        .redis
        .wait_for_master_change(old_master, DEADLINE)
        .await;

    // Assert: the two remaining Sentinels (quorum 2) promoted a replica and the
    // API writes to it by itself.
    wait::until(
        "a purchase to succeed on the new master",
        DEADLINE,
        || async {
            let key = uuid::Uuid::new_v4().to_string();
            let response = api
                .purchase(&customer.access_token, Some(&key), &order)
                .await;
            (response.status() == StatusCode::CREATED).then_some(())
        },
    )
    .await;
    println!(
        "with one Sentinel dead: master :{old_master} paused, :{new_master} promoted, writes back after {:.2} s",
        paused.elapsed().as_secs_f64()
    );
    let bound = Duration::from_millis(stack.redis.options().down_after_ms) + Duration::from_secs(4);
    assert!(
        paused.elapsed() < bound,
        "two Sentinels of three fail over as fast as three: {:?}",
        paused.elapsed()
    );
    let followed_after = followed().await;
    assert!(
        followed_after > followed_before,
        "the instance counts the master change it followed: {followed_before} -> {followed_after}"
    );
    stack.redis.resume(old_master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_data_tier_stopped_and_started_again_keeps_every_user_product_and_purchase() {
    let mut stack = TestStack::start_own().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = api.new_product(&admin, 250, 100).await;
    let product_id = product["id"].as_str().expect("id").to_owned();
    let mut customers = Vec::new();
    let mut purchases = Vec::new();
    for _ in 0..3 {
        let customer = stack.customer().await;
        let order = json!({"items": [{"product_id": product_id, "quantity": 2}]});
        let key = uuid::Uuid::new_v4().to_string();
        let purchase = expect(
            api.purchase(&customer.access_token, Some(&key), &order)
                .await,
            StatusCode::CREATED,
        )
        .await;
        purchases.push(purchase["id"].as_str().expect("id").to_owned());
        customers.push(customer);
    }

    // Act: stop every Redis and Sentinel process (SIGTERM, as `docker compose
    // down` does), check the API fails fast meanwhile, then start them again.
    stack.redis.stop_all().await;
    let asked = Instant::now();
    let ready = api
        .raw(reqwest::Method::GET, "/health/ready")
        .send()
        .await
        .expect("answer");
    let waited = asked.elapsed();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waited < Duration::from_secs(5),
        "readiness took {waited:?} with Redis down"
    );
    let restarted = Instant::now();
    stack.redis.start_all().await;
    api.wait_until_ready(DEADLINE).await;
    println!(
        "data tier down: readiness answered 503 in {:.3} s; ready again {:.2} s after the restart began",
        waited.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );

    // Assert: users (and their sessions), the product and the purchases survived.
    let product = json(api.get_product(&product_id).await).await;
    assert_eq!(product["stock"], 100 - 2 * 3, "{product}");
    for (customer, purchase_id) in customers.iter().zip(&purchases) {
        expect(api.me(&customer.access_token).await, StatusCode::OK).await;
        let purchase = expect(
            api.get_purchase(&customer.access_token, purchase_id).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(purchase["total_cents"], 500);
        api.login_ok(&customer.email, &customer.password).await;
    }
    let users = expect(
        api.list_users(&admin.access_token, "?limit=100").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        users["items"].as_array().expect("items").len(),
        4,
        "admin + 3 customers"
    );
}
