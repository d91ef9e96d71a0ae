//! Every 503 that tells a client to retry is safe to retry with the same
//! request, and the retry returns the first outcome. Shown against real
//! Redis in the two ways a write is refused: its `WAIT` fails (both replicas
//! frozen: the write reached the master but no replica confirmed it, so it
//! may or may not survive a failover) and the master is out of memory.

use std::time::Duration;

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, Session, expect, expect_problem};
use evergreen_tests::wait;
use redis::AsyncCommands;
use reqwest::StatusCode;

use crate::support::{header, id_of, new_key, order, stock_of};

const DEADLINE: Duration = Duration::from_secs(30);

/// A product with 100 in stock, a customer with one purchase of it.
async fn shop(stack: &TestStack) -> (Api, Session, Session, String, String) {
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = id_of(&api.new_product(&admin, 250, 100).await);
    let customer = stack.customer().await;
    let purchase = expect(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&product, 2)]),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    (api, admin, customer, product, id_of(&purchase))
}

fn retryable(response: &reqwest::Response) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        header(response, "retry-after").is_some(),
        "a 503 says when to retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_whose_wait_failed_are_answered_503_and_their_retries_return_the_first_outcome() {
    // Arrange: both replicas frozen, and the API told so by the Sentinels
    // (its session reads then go to the master). The master still takes
    // writes (min-replicas-max-lag 10 s) but no replica confirms them.
    let stack = TestStack::start_own().await;
    let (api, admin, customer, product, purchase) = shop(&stack).await;
    let master = stack.redis.master_port().await;
    let replicas: Vec<u16> = stack
        .redis
        .data_ports()
        .into_iter()
        .filter(|port| *port != master)
        .collect();
    for replica in &replicas {
        stack.redis.pause(*replica);
    }
    let redis = &stack.apps[0].state.redis;
    wait::until(
        "the Sentinels to report both replicas down",
        DEADLINE,
        || async {
            redis.refresh_topology().await;
            let topology = redis.topology();
            (topology.replicas.is_empty() && topology.promotable_replicas == 0)
                .then_some(())
                .ok_or(topology)
        },
    )
    .await;
    let (stock_key, order_key) = (new_key(), new_key());

    // The same four requests, sent twice: first while no replica can
    // confirm them, then again as a client retries.
    let send = || async {
        (
            api.refresh(&customer.refresh_token).await,
            api.add_stock_with_key(&admin.access_token, &product, 5, &stock_key)
                .await,
            api.cancel_purchase(&customer.access_token, &purchase).await,
            api.purchase(
                &customer.access_token,
                Some(&order_key),
                &order(&[(&product, 1)]),
            )
            .await,
        )
    };

    // Act: four writes, each applied on the master and not confirmed.
    let (refreshed, stocked, cancelled, bought) = send().await;

    // Assert: each a retryable 503, although the master did apply it: the
    // hard case for a retry.
    for response in [&refreshed, &stocked, &cancelled, &bought] {
        retryable(response);
    }
    let mut on_master = stack.redis.connection(master).await;
    let keys = stack.keys();
    let stock: i64 = on_master
        .hget(keys.product(product.parse().expect("uuid")), "stock")
        .await
        .expect("HGET");
    assert_eq!(
        stock,
        100 - 2 + 5 + 2 - 1,
        "the master applied the delta, the cancel and the purchase"
    );

    // Act: the replicas come back; the client retries each request as it was.
    for replica in &replicas {
        stack.redis.resume(*replica);
    }
    stack.redis.wait_until_in_sync(master, DEADLINE).await;
    let (refreshed, stocked, cancelled, bought) = send().await;
    let refreshed_again = api.refresh(&customer.refresh_token).await;

    // Assert: the first outcome of each, applied once, session alive.
    let pair = expect(refreshed, StatusCode::OK).await;
    let again = expect(refreshed_again, StatusCode::OK).await;
    for field in ["access_token", "refresh_token", "token_type"] {
        assert_eq!(again[field], pair[field], "the same pair: {field}");
    }
    // `expires_in` is what is left of the access token's life at each
    // answer: the second may come a second boundary later.
    let left = |pair: &serde_json::Value| pair["expires_in"].as_i64().expect("expires_in");
    assert!(
        (0..=1).contains(&(left(&pair) - left(&again))),
        "{pair} then {again}"
    );
    let access = pair["access_token"].as_str().expect("access token");
    expect(api.me(access).await, StatusCode::OK).await;
    expect(
        api.refresh(pair["refresh_token"].as_str().expect("refresh token"))
            .await,
        StatusCode::OK,
    )
    .await;
    for response in [&stocked, &cancelled, &bought] {
        assert_eq!(
            header(response, "idempotent-replayed").as_deref(),
            Some("true"),
            "{}",
            response.url()
        );
    }
    let stocked = expect(stocked, StatusCode::OK).await;
    assert_eq!(
        stocked["stock"],
        100 - 2 + 5,
        "as the first request left it"
    );
    assert_eq!(
        expect(cancelled, StatusCode::OK).await["status"],
        "cancelled"
    );
    expect(bought, StatusCode::CREATED).await;
    assert_eq!(stock_of(&api, &product).await, 100 - 2 + 5 + 2 - 1);
    let purchases = api.all_pages(&customer.access_token, "/purchases").await;
    assert_eq!(purchases.len(), 2, "one purchase per key: {purchases:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_redis_answers_writes_with_a_retryable_503_counts_them_and_keeps_serving_reads() {
    // Arrange: the master's maxmemory below what it holds (policy noeviction).
    let stack = TestStack::start_own().await;
    let (api, _admin, customer, product, purchase) = shop(&stack).await;
    let master = stack.redis.master_port().await;
    let mut on_master = stack.redis.connection(master).await;
    let set_maxmemory = |bytes: u64| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .to_owned()
    };
    let _: () = set_maxmemory(1)
        .query_async(&mut on_master)
        .await
        .expect("CONFIG SET");
    let key = new_key();

    // Act: a purchase (a script), a sign-in (a MULTI transaction), reads.
    let bought = api
        .purchase(&customer.access_token, Some(&key), &order(&[(&product, 1)]))
        .await;
    let signed_in = api.login(&customer.email, &customer.password).await;
    let product_read = api.get_product(&product).await;
    let purchase_read = api.get_purchase(&customer.access_token, &purchase).await;

    // Assert
    assert_eq!(
        header(&bought, "retry-after").as_deref(),
        Some("30"),
        "room is made by an operator, not by a failover"
    );
    expect_problem(bought, StatusCode::SERVICE_UNAVAILABLE, "storage_full").await;
    expect_problem(signed_in, StatusCode::SERVICE_UNAVAILABLE, "storage_full").await;
    expect(product_read, StatusCode::OK).await;
    expect(purchase_read, StatusCode::OK).await;
    assert_eq!(stock_of(&api, &product).await, 98, "nothing was written");
    let metrics = reqwest::get(format!(
        "http://127.0.0.1:{}/metrics",
        stack.apps[0].metrics_port
    ))
    .await
    .expect("metrics")
    .text()
    .await
    .expect("text");
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("evergreen_redis_errors_total{kind=\"out_of_memory\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the out_of_memory series");
    assert!(refused >= 2.0, "both refusals counted: {refused}");

    // Act: room is made; the client retries with the same key.
    let _: () = set_maxmemory(0)
        .query_async(&mut on_master)
        .await
        .expect("CONFIG SET");
    let retried = api
        .purchase(&customer.access_token, Some(&key), &order(&[(&product, 1)]))
        .await;

    // Assert
    expect(retried, StatusCode::CREATED).await;
    assert_eq!(stock_of(&api, &product).await, 97);
}
