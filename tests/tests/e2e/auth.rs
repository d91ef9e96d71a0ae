//! Registration, login, refresh rotation and logout. Attacks on tokens and
//! sign-in live in `security`.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{expect, expect_problem};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{claims_of, header, keys_of};

fn unique_email() -> String {
    format!("ann-{}@example.com", Uuid::new_v4().simple())
}

#[tokio::test]
async fn registering_returns_the_user_without_any_password_material() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let email = unique_email();
    let password = "a-long-enough-password";

    // Act
    let response = api
        .register(&format!("  {}  ", email.to_uppercase()), password, "Ann")
        .await;

    // Assert
    let location = header(&response, "location");
    let text = response.text().await.expect("a body");
    assert!(!text.contains(password), "the password leaked: {text}");
    assert!(!text.contains("argon2"), "the hash leaked: {text}");
    assert!(!text.to_lowercase().contains("hash"), "{text}");
    let user: Value = serde_json::from_str(&text).expect("JSON");
    let fields = keys_of(&user);
    assert_eq!(
        fields,
        ["created_at", "disabled", "email", "id", "name", "role"]
    );
    assert_eq!(user["email"], email, "email is trimmed and lower-cased");
    assert_eq!(user["name"], "Ann");
    assert_eq!(user["role"], "customer");
    assert_eq!(user["disabled"], false);
    let created_at = user["created_at"].as_str().expect("created_at");
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created_at}"
    );
    let id: Uuid = user["id"].as_str().expect("id").parse().expect("a UUID");
    assert_eq!(location, Some(format!("/api/v1/users/{id}")));
    let session = api.login_ok(&email, password).await;
    assert_eq!(session.user_id, id);
}

#[tokio::test]
async fn an_email_is_taken_whatever_its_case_and_surrounding_spaces() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let email = unique_email();
    expect(
        api.register(&email, "first-password", "First").await,
        StatusCode::CREATED,
    )
    .await;

    for variant in [
        email.clone(),
        email.to_uppercase(),
        format!("  {email}\t"),
        format!(" {} ", email.to_uppercase()),
    ] {
        // Act
        let response = api.register(&variant, "second-password", "Second").await;

        // Assert
        expect_problem(response, StatusCode::CONFLICT, "email_taken").await;
    }
    // The first account is intact: its password still works (whatever the
    // case of the email typed), the second does not.
    api.login_ok(&format!(" {} ", email.to_uppercase()), "first-password")
        .await;
    expect(
        api.login(&email, "second-password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn a_password_outside_8_to_128_characters_is_refused_per_field_without_echoing_it() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let email = unique_email();
    let too_short = "Sh0rt!x";
    let too_long = format!("L0ng-{}", "p".repeat(124));
    assert_eq!((too_short.len(), too_long.len()), (7, 129));

    for password in [too_short.to_owned(), too_long] {
        // Act
        let response = api.register(&email, &password, "Ann").await;

        // Assert
        let body = expect_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .expect("a per-field list")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert_eq!(fields, ["password"], "{body}");
        assert!(
            !body.to_string().contains(&password),
            "the password leaked: {body}"
        );
    }
    // Nothing was written: the email is still free, and 8 and 128 characters are fine.
    expect(
        api.register(&email, "exactly8", "Ann").await,
        StatusCode::CREATED,
    )
    .await;
    expect(
        api.register(&unique_email(), &"x".repeat(128), "Bob").await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn login_returns_a_bearer_pair_and_the_same_401_for_a_wrong_password_or_email() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let customer = stack.customer().await;

    // Act
    let ok = expect(
        api.login(&customer.email, &customer.password).await,
        StatusCode::OK,
    )
    .await;
    let wrong_password = api.login(&customer.email, "not-the-password").await;
    let wrong_password_auth = header(&wrong_password, "www-authenticate");
    let wrong_password =
        expect_problem(wrong_password, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let unknown_email = api.login(&unique_email(), "not-the-password").await;
    let unknown_email_auth = header(&unknown_email, "www-authenticate");
    let unknown_email =
        expect_problem(unknown_email, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Assert
    assert!(
        ok["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "{ok}"
    );
    assert!(
        ok["refresh_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{ok}"
    );
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 900);
    let claims = claims_of(ok["access_token"].as_str().expect("access_token"));
    for claim in ["exp", "iat", "jti", "sub", "role"] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
    assert_eq!(claims["sub"], customer.user_id.to_string());
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
    assert_eq!(
        wrong_password, unknown_email,
        "the two failures must look alike"
    );
    assert_eq!(wrong_password_auth, unknown_email_auth);
    assert_eq!(wrong_password_auth.as_deref(), Some("Bearer"));
}

#[tokio::test]
async fn a_refresh_rotates_the_pair_and_reusing_an_old_refresh_token_ends_the_session() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let session = stack.customer().await;
    let other_session = api.login_ok(&session.email, &session.password).await;

    // Act: a normal rotation.
    let rotated = expect(api.refresh(&session.refresh_token).await, StatusCode::OK).await;
    let new_access = rotated["access_token"].as_str().expect("access_token");
    let new_refresh = rotated["refresh_token"].as_str().expect("refresh_token");

    // Assert: a new pair that works.
    assert_ne!(new_refresh, session.refresh_token);
    assert_ne!(new_access, session.access_token);
    assert_eq!(rotated["token_type"], "Bearer");
    expect(api.me(new_access).await, StatusCode::OK).await;

    // Act: the new refresh token is rotated in turn, then the first one is
    // presented again (a leaked copy: no retry, its successor is used up).
    let next = expect(api.refresh(new_refresh).await, StatusCode::OK).await;
    let reuse = api.refresh(&session.refresh_token).await;

    // Assert: refused, and the whole session is over, newest tokens included.
    expect_problem(reuse, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for refresh in [new_refresh, next["refresh_token"].as_str().expect("token")] {
        expect_problem(
            api.refresh(refresh).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    for access in [
        new_access,
        next["access_token"].as_str().expect("token"),
        &session.access_token,
    ] {
        expect_problem(
            api.me(access).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    // Only that session: the user's other session lives on.
    expect(api.me(&other_session.access_token).await, StatusCode::OK).await;
    expect(
        api.refresh(&other_session.refresh_token).await,
        StatusCode::OK,
    )
    .await;
    // A made-up refresh token is refused too.
    expect_problem(
        api.refresh("rt.not-a-session.secret").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

/// A client whose refresh got a 503, or whose answer was lost, retries with
/// the same refresh token: within the reuse interval it gets the very same
/// pair, and the session goes on.
#[tokio::test]
async fn a_refresh_retried_within_the_reuse_interval_returns_the_same_pair() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let session = stack.customer().await;

    // Act
    let first = expect(api.refresh(&session.refresh_token).await, StatusCode::OK).await;
    let retry = expect(api.refresh(&session.refresh_token).await, StatusCode::OK).await;

    // Assert
    assert_eq!(retry["access_token"], first["access_token"]);
    assert_eq!(retry["refresh_token"], first["refresh_token"]);
    let access = first["access_token"].as_str().expect("access_token");
    expect(api.me(access).await, StatusCode::OK).await;
    let next = expect(
        api.refresh(first["refresh_token"].as_str().expect("refresh_token"))
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        api.me(next["access_token"].as_str().expect("access_token"))
            .await,
        StatusCode::OK,
    )
    .await;
}

/// With no reuse interval, presenting a rotated token at once is reuse.
#[tokio::test]
async fn without_a_reuse_interval_a_repeated_refresh_ends_the_session() {
    // Arrange
    let mut stack = TestStack::sharing(0).await;
    let mut settings = stack.settings();
    settings.auth.refresh_reuse_interval_secs = 0;
    stack.spawn_app_with(settings).await;
    let api = stack.api(0);
    let session = stack.customer().await;
    let first = expect(api.refresh(&session.refresh_token).await, StatusCode::OK).await;

    // Act
    let again = api.refresh(&session.refresh_token).await;

    // Assert
    expect_problem(again, StatusCode::UNAUTHORIZED, "unauthorized").await;
    expect_problem(
        api.me(first["access_token"].as_str().expect("access_token"))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn logout_ends_the_session_at_once_on_another_instance() {
    // Arrange
    let stack = TestStack::sharing(2).await;
    let (first, second) = (stack.api(0), stack.api(1));
    let session = first.new_customer().await;
    let survivor = first.login_ok(&session.email, &session.password).await;
    expect(second.me(&session.access_token).await, StatusCode::OK).await;

    // Act
    let response = first.logout(&session.access_token).await;

    // Assert: no polling: the very next request on the other instance is refused.
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_problem(
        second.me(&session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_problem(
        second.refresh(&session.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_problem(
        first.logout(&session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect(second.me(&survivor.access_token).await, StatusCode::OK).await;
}
