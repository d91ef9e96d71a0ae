//! Guessing passwords: nginx brakes sign-ins per client address, the API
//! locks an account per email for a time that grows and is capped, and a
//! wrong email costs the same time as a wrong password.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD, TestStack};
use evergreen_tests::client::{Api, expect, expect_problem};
use evergreen_tests::gateway::Gateway;
use evergreen_tests::redis_ha::RedisHaOptions;
use evergreen_tests::wait;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::header;

fn retry_after(response: &reqwest::Response) -> u64 {
    header(response, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

/// A stack whose one instance locks accounts after `failures` failures,
/// first for `base` seconds, at most for `max`.
async fn stack_with_lock(failures: u64, base: u64, max: u64) -> TestStack {
    let mut stack = TestStack::start_with(0, RedisHaOptions::default()).await;
    let mut settings = stack.settings();
    settings.auth.login_max_failures = failures;
    settings.auth.login_lock_base_secs = base;
    settings.auth.login_lock_max_secs = max;
    stack.spawn_app_with(settings).await;
    stack
}

#[tokio::test]
async fn nginx_brakes_sign_ins_per_client_address_with_retry_after() {
    // Arrange: two clients of the same gateway from two loopback addresses.
    let gateway = Gateway::start(1).await;
    let url = format!("{}/api/v1/auth/login", gateway.nginx.base_url());
    let client_from = |last: u8| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .build()
            .expect("a client")
    };
    let (attacker, bystander) = (client_from(1), client_from(2));
    // Another email each time: only nginx (per address), not the API's
    // per-account lock, can refuse these.
    let body = |n: usize| json!({"email": format!("nobody-{n}@example.com"), "password": "wrong-password"});

    // Act: 40 sign-ins at once from the attacker's address, then one from the bystander's.
    let attempts = join_all((0..40).map(|n| attacker.post(&url).json(&body(n)).send())).await;
    let bystander_attempt = bystander
        .post(&url)
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("nginx answers");

    // Assert
    let limited: Vec<_> = attempts
        .into_iter()
        .map(|r| r.expect("nginx answers"))
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!(
        "sign-ins from one address limited by nginx: {} of 40",
        limited.len()
    );
    assert!(limited.len() >= 20, "{} limited", limited.len());
    let first = limited.into_iter().next().expect("one limited");
    assert!(retry_after(&first) >= 1);
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            header(&first, name).as_deref(),
            Some(value),
            "{name} on nginx's 429"
        );
    }
    let problem = expect_problem(first, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("from this address")),
        "nginx's 429, not the API's: {problem}"
    );
    expect(bystander_attempt, StatusCode::OK).await;
}

#[tokio::test]
async fn an_account_lock_ends_by_itself_grows_with_each_failure_and_is_capped() {
    // Arrange: lock after 3 failures, for 1 s, doubling, at most 2 s.
    let stack = stack_with_lock(3, 1, 2).await;
    let api = stack.api(0);
    let customer = stack.customer().await;
    let wrong = |api: &Api| {
        let (api, email) = (api.clone(), customer.email.clone());
        async move { api.login(&email, "wrong-password").await }
    };
    for _ in 0..3 {
        expect(wrong(&api).await, StatusCode::UNAUTHORIZED).await;
    }

    // Act + Assert: locked for 1 s; even the right password waits.
    let locked = api.login(&customer.email, &customer.password).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&locked), 1);
    // After the lock, one more failure locks for 2 s (doubled).
    lock_ended(&stack, &customer.email).await;
    expect(wrong(&api).await, StatusCode::UNAUTHORIZED).await;
    let doubled = api.login(&customer.email, &customer.password).await;
    assert_eq!(doubled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&doubled), 2);
    // And one more stays at the 2 s cap instead of 4 s.
    lock_ended(&stack, &customer.email).await;
    expect(wrong(&api).await, StatusCode::UNAUTHORIZED).await;
    let capped = api.login(&customer.email, &customer.password).await;
    assert_eq!(capped.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&capped), 2);
    // The owner gets in once the lock ends, and that forgives the failures.
    lock_ended(&stack, &customer.email).await;
    api.login_ok(&customer.email, &customer.password).await;
    expect(wrong(&api).await, StatusCode::UNAUTHORIZED).await;
    api.login_ok(&customer.email, &customer.password).await;
}

/// Waits (polling the lock's key, which no attempt touches) until the
/// account's lock has expired.
async fn lock_ended(stack: &TestStack, email: &str) {
    let keys = evergreen_api::redis::Keys::new(stack.key_prefix.clone());
    let key = keys.login_lock(email);
    let master = stack.redis.master_port().await;
    let connection = stack.redis.connection(master).await;
    wait::until("the account lock to end", Duration::from_secs(10), || {
        let (key, mut connection) = (key.clone(), connection.clone());
        async move {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            (pttl == -2).then_some(()).ok_or(format!("{pttl} ms left"))
        }
    })
    .await;
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_wrong_email_takes_as_long_as_a_wrong_password() {
    // Arrange: no lock in the way of 25 failures on one account.
    let stack = stack_with_lock(1000, 1, 1).await;
    let api = stack.api(0);
    let customer = stack.customer().await;
    let mut unknown_email = Vec::new();
    let mut wrong_password = Vec::new();
    let timed = |email: String| {
        let api = api.clone();
        async move {
            let started = Instant::now();
            let response = api.login(&email, "wrong-password-123").await;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            expect_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
            elapsed
        }
    };
    for _ in 0..3 {
        timed(customer.email.clone()).await;
    }

    // Act: interleaved, so that load on the machine hits both alike.
    for n in 0..25 {
        unknown_email.push(timed(format!("nobody-{n}@example.com")).await);
        wrong_password.push(timed(customer.email.clone()).await);
    }

    // Assert: without the dummy hash a wrong email answers ~20x faster.
    let (email_ms, password_ms) = (median(&mut unknown_email), median(&mut wrong_password));
    println!(
        "login timing medians over 25 attempts each: unknown email {email_ms:.1} ms, wrong password {password_ms:.1} ms (ratio {:.2})",
        email_ms / password_ms
    );
    let ratio = email_ms / password_ms;
    assert!(
        (0.67..=1.5).contains(&ratio),
        "unknown email {email_ms:.1} ms vs wrong password {password_ms:.1} ms"
    );
}

#[tokio::test]
async fn five_failed_logins_lock_the_account_with_retry_after() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let customer = stack.customer().await;
    for attempt in 1..=5 {
        let response = api.login(&customer.email, "wrong-password").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }

    // Act: the right password, too late.
    let response = api.login(&customer.email, &customer.password).await;

    // Assert
    let retry_after = header(&response, "retry-after");
    expect_problem(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let seconds: u64 = retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=900).contains(&seconds), "Retry-After {seconds}");
    // Per account: another account signs in as usual, and existing sessions live on.
    api.login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    expect(api.me(&customer.access_token).await, StatusCode::OK).await;
}
