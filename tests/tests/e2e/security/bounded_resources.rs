//! One client cannot make the store keep unbounded state or work: writes
//! per user are rate limited, sessions per user are capped (the least
//! recently used ending first, the per-user session set no larger), and
//! nginx limits reads per client address.

use std::time::Duration;

use evergreen_api::config::Settings;
use evergreen_tests::app::{JWT_SECRET, TestStack};
use evergreen_tests::client::{Api, expect, expect_problem, json};
use evergreen_tests::gateway::{Gateway, GatewayOptions};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::header;

#[tokio::test]
async fn one_customer_writing_in_a_loop_gets_429_past_its_allowance_and_nobody_else_does() {
    // Arrange: the shipped limits (10 writes a second, bursts of 20).
    let mut stack = TestStack::sharing(0).await;
    let mut settings = stack.settings();
    settings.limits = Settings::load_with_overrides(&[("auth.jwt_secret", JWT_SECRET.to_owned())])
        .expect("defaults")
        .limits;
    stack.spawn_app_with(settings).await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = api.new_product(&admin, 100, 1000).await;
    let order = json!({"items": [{"product_id": product["id"], "quantity": 1}]});
    let (greedy, other) = (stack.customer().await, stack.customer().await);

    // Act: 40 purchases at once by one customer, then one by another.
    let sent = std::time::Instant::now();
    let attempts = join_all((0..40).map(|_| {
        let key = uuid::Uuid::new_v4().to_string();
        let (api, token, order) = (api.clone(), greedy.access_token.clone(), order.clone());
        async move { api.purchase(&token, Some(&key), &order).await }
    }))
    .await;
    let took = sent.elapsed();
    let others_purchase = api
        .purchase(
            &other.access_token,
            Some(&uuid::Uuid::new_v4().to_string()),
            &order,
        )
        .await;

    // Assert: the burst went through, plus one token per 100 ms the requests
    // took to arrive (a busy machine spreads them out); the rest changed nothing.
    let created = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::CREATED)
        .count();
    let limited: Vec<_> = attempts
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!(
        "40 purchases at once by one customer in {took:?}: {created} created, {} limited",
        limited.len()
    );
    let refilled = (took.as_millis() / 100) as usize + 1;
    assert!(
        (20..=20 + refilled).contains(&created),
        "{created} created in {took:?}"
    );
    assert_eq!(created + limited.len(), 40);
    let wait: u64 = header(&limited[0], "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert_eq!(wait, 1);
    let first = limited.into_iter().next().expect("one");
    expect_problem(first, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    expect(others_purchase, StatusCode::CREATED).await;
    let stock =
        json(api.get_product(product["id"].as_str().expect("id")).await).await["stock"].clone();
    assert_eq!(stock, 1000 - created as i64 - 1);
    // The allowance comes back: one token every 100 ms.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let key = uuid::Uuid::new_v4().to_string();
    expect(
        api.purchase(&greedy.access_token, Some(&key), &order).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn signing_in_past_the_session_cap_ends_the_least_recently_used_session() {
    // Arrange: the default cap, 20 sessions; the customer's first session
    // comes from signing up.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let customer = stack.customer().await;
    let mut sessions = vec![customer.clone()];

    // Act: 20 more sign-ins, one past the cap.
    for _ in 0..20 {
        sessions.push(api.login_ok(&customer.email, &customer.password).await);
    }

    // Assert: the first session ended, tokens and all; the next one lives.
    expect_problem(
        api.me(&sessions[0].access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect(
        api.refresh(&sessions[0].refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect(api.me(&sessions[1].access_token).await, StatusCode::OK).await;
    expect(api.me(&sessions[20].access_token).await, StatusCode::OK).await;
    let keys = stack.keys();
    let mut connection = stack.master_connection().await;
    let listed: u64 = redis::cmd("ZCARD")
        .arg(keys.user_sessions(customer.user_id))
        .query_async(&mut connection)
        .await
        .expect("ZCARD");
    assert_eq!(listed, 20);
}

#[tokio::test]
async fn a_refreshed_session_counts_as_recently_used() {
    // Arrange: 20 sessions; the oldest one is refreshed (used) last.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let customer = stack.customer().await;
    let mut sessions = vec![customer.clone()];
    for _ in 0..19 {
        sessions.push(api.login_ok(&customer.email, &customer.password).await);
    }
    let refreshed = expect(
        api.refresh(&sessions[0].refresh_token).await,
        StatusCode::OK,
    )
    .await;
    let refreshed_token = refreshed["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();

    // Act: one more sign-in, past the cap.
    api.login_ok(&customer.email, &customer.password).await;

    // Assert: the second session, now the least recently used, ended instead.
    expect(api.me(&refreshed_token).await, StatusCode::OK).await;
    expect(
        api.me(&sessions[1].access_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_reads_from_one_address_gets_429_from_nginx_and_others_read_on() {
    // Arrange: nginx with docker-compose.yml's read limit per address
    // (NGINX_READ_RATE 100r/s, NGINX_READ_BURST 200).
    let gateway = Gateway::start_with(
        1,
        GatewayOptions {
            read_rate: "100r/s".into(),
            read_burst: 200,
            ..GatewayOptions::default()
        },
    )
    .await;
    let base_url = gateway.nginx.base_url();
    let (flood, reader) = (
        Api::from_address(&base_url, 2),
        Api::from_address(&base_url, 3),
    );

    // Act: 600 catalog reads at once from one address, then one from another.
    let sent = std::time::Instant::now();
    let answers = join_all((0..600).map(|_| flood.list_products("?limit=1"))).await;
    let took = sent.elapsed();
    let other = reader.list_products("?limit=1").await;

    // Assert: the burst (and what the rate adds meanwhile) passed, the rest got
    // nginx's 429; the other address was not affected.
    let ok = answers
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    let limited: Vec<_> = answers
        .into_iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!(
        "600 reads at once from one address in {took:?}: {ok} served, {} limited by nginx",
        limited.len()
    );
    assert_eq!(ok + limited.len(), 600);
    // The burst, plus one request per 10 ms the flood took to arrive.
    let refilled = (took.as_millis() / 10) as usize + 1;
    assert!(
        (200..=200 + refilled).contains(&ok),
        "{ok} served in {took:?}"
    );
    let first = limited.into_iter().next().expect("one limited");
    let problem = expect_problem(first, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("from this address")),
        "{problem}"
    );
    expect(other, StatusCode::OK).await;
}
