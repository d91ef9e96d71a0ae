//! Guessing passwords: nginx brakes sign-ins per client address; the API
//! reserves every password check (sign-in, password change) before hashing
//! and throttles failures per account and address and per address, while an
//! account's checks from unknown addresses share a budget; none of it can be
//! turned against the owner at another address. A wrong email costs the same
//! time as a wrong password.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use evergreen_api::config::AuthSettings;
use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD, TestStack};
use evergreen_tests::client::{Api, expect, expect_problem};
use evergreen_tests::gateway::Gateway;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::header;

fn retry_after(response: &reqwest::Response) -> u64 {
    header(response, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds")
}

/// A stack whose one instance throttles password checks with `change`d settings.
async fn stack_with(change: impl FnOnce(&mut AuthSettings)) -> TestStack {
    let mut stack = TestStack::sharing(0).await;
    let mut settings = stack.settings();
    change(&mut settings.auth);
    stack.spawn_app_with(settings).await;
    stack
}

/// Password checks instance 0 has run (argon2 verifications) so far.
fn checks_run(stack: &TestStack) -> u64 {
    let checks = &stack.apps[0].state.metrics.password_checks;
    checks.with_label_values(&["passed"]).get() + checks.with_label_values(&["failed"]).get()
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

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_wrong_email_takes_as_long_as_a_wrong_password() {
    // Arrange: no throttling in the way of 28 failures on one account.
    let stack = stack_with(|auth| {
        auth.password_failures_per_account_and_address = 1000;
        auth.password_checks_per_account_burst = 1000;
    })
    .await;
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
async fn a_strangers_wrong_guesses_never_keep_the_owner_out_at_another_address() {
    // Arrange: the default allowance, 5 failures per account and address.
    let stack = TestStack::start().await;
    let base_url = stack.apps[0].base_url.clone();
    let (attacker, owner_elsewhere) = (
        Api::from_address(&base_url, 2),
        Api::from_address(&base_url, 3),
    );
    let victim = stack.customer().await;

    // Act: 7 wrong passwords from the attacker's address.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            attacker
                .login(&victim.email, "wrong-password")
                .await
                .status(),
        );
    }
    let owner_at_attackers_address = attacker.login(&victim.email, &victim.password).await;
    let owner = owner_elsewhere.login(&victim.email, &victim.password).await;

    // Assert: the attacker's address is refused for this account after 5,
    // even with the right password; the owner elsewhere signs in.
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 2],
        "{statuses:?}"
    );
    let seconds = retry_after(&owner_at_attackers_address);
    assert!((1..=900).contains(&seconds), "Retry-After {seconds}");
    expect_problem(
        owner_at_attackers_address,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
    )
    .await;
    expect(owner, StatusCode::OK).await;
    assert_eq!(
        checks_run(&stack),
        1 + 5 + 1,
        "sign-up login, 5 guesses, the owner"
    );
}

#[tokio::test]
async fn forty_guesses_at_once_from_forty_addresses_run_at_most_the_accounts_budget() {
    // Arrange: the default budget (10 checks in a burst from addresses the
    // account never signed in from). The owner signed in from 127.0.0.3 before.
    let stack = TestStack::start().await;
    let base_url = stack.apps[0].base_url.clone();
    let victim = stack.customer().await;
    let owner_home = Api::from_address(&base_url, 3);
    owner_home.login_ok(&victim.email, &victim.password).await;
    let before = checks_run(&stack);

    // Act: 40 wrong guesses at the same moment, each from its own address.
    let attackers: Vec<Api> = (10..50)
        .map(|last| Api::from_address(&base_url, last))
        .collect();
    let guesses = join_all(
        attackers
            .iter()
            .map(|a| a.login(&victim.email, "wrong-password")),
    )
    .await;
    let checked = checks_run(&stack) - before;
    let owner_at_home = owner_home.login(&victim.email, &victim.password).await;
    let owner_travelling = Api::from_address(&base_url, 200)
        .login(&victim.email, &victim.password)
        .await;

    // Assert: at most the budget was hashed; the rest got 429 at once.
    let unauthorized = guesses
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    let refused: Vec<_> = guesses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!(
        "40 guesses at once: {unauthorized} checked (401), {} refused (429), {checked} password checks run",
        refused.len()
    );
    assert_eq!(unauthorized + refused.len(), 40);
    assert!(
        checked <= 10,
        "{checked} password checks for a budget of 10"
    );
    assert_eq!(checked, unauthorized as u64);
    assert!(refused.iter().all(|r| (1..=6).contains(&retry_after(r))));
    // The owner at an address it signed in from is never refused by the
    // budget; from a new one it is slowed down, not locked out.
    expect(owner_at_home, StatusCode::OK).await;
    assert_eq!(owner_travelling.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&owner_travelling);
    assert!((1..=6).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    Api::from_address(&base_url, 200)
        .login_ok(&victim.email, &victim.password)
        .await;
}

#[tokio::test]
async fn a_wrong_current_password_is_throttled_like_a_sign_in() {
    // Arrange
    let stack = TestStack::start().await;
    let base_url = stack.apps[0].base_url.clone();
    let thief = Api::from_address(&base_url, 2);
    let victim = stack.customer().await;
    let change =
        |current: &str| json!({"password": "a-new-password-123", "current_password": current});
    let before = checks_run(&stack);

    // Act: a stolen access token guessing the current password.
    let mut statuses = Vec::new();
    for n in 0..8 {
        let body = change(&format!("guess-{n}"));
        statuses.push(thief.update_me(&victim.access_token, &body).await.status());
    }
    let checked = checks_run(&stack) - before;
    let owner = Api::from_address(&base_url, 3)
        .update_me(&victim.access_token, &change(&victim.password))
        .await;

    // Assert: 5 checked (422), then 429 without hashing; the owner elsewhere changes it.
    assert_eq!(
        statuses[..5],
        [StatusCode::UNPROCESSABLE_ENTITY; 5],
        "{statuses:?}"
    );
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
    assert_eq!(checked, 5);
    expect(owner, StatusCode::OK).await;
}

#[tokio::test]
async fn behind_nginx_failures_count_for_the_real_client_whatever_it_claims() {
    // Arrange: nginx in front of an API that trusts it (and only it) to name
    // the client in X-Real-IP.
    let gateway = Gateway::start(1).await;
    let base_url = gateway.nginx.base_url();
    let (attacker, owner) = (
        Api::from_address(&base_url, 2),
        Api::from_address(&base_url, 3),
    );
    let victim = owner.new_customer().await;

    // Act: 6 wrong passwords, each claiming another client address.
    let mut statuses = Vec::new();
    for n in 0..6 {
        let response = attacker
            .raw(reqwest::Method::POST, "/api/v1/auth/login")
            .header("X-Real-IP", format!("203.0.113.{n}"))
            .header("X-Forwarded-For", format!("198.51.100.{n}"))
            .json(&json!({"email": victim.email, "password": "wrong-password"}))
            .send()
            .await
            .expect("nginx answers");
        statuses.push(response.status());
    }
    let owner_signs_in = owner.login(&victim.email, &victim.password).await;

    // Assert: counted for 127.0.0.2 all the same; the owner at 127.0.0.3 is in.
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    expect(owner_signs_in, StatusCode::OK).await;
}
