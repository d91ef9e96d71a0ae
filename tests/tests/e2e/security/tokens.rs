//! Access tokens an attacker made, altered, kept or misused: every one is a
//! 401 problem on every replica, and the genuine token beside it still works.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use evergreen_tests::app::{JWT_SECRET, TestStack};
use evergreen_tests::client::{expect, expect_problem};
use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{now_secs, sign};
use crate::support::claims_of;

/// Asserts `token` gets a 401 problem from every instance of `stack`.
async fn refused_everywhere(stack: &TestStack, what: &str, token: &str) {
    for index in 0..stack.apps.len() {
        let response = stack.api(index).me(token).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{what} must be refused by instance {index}"
        );
        expect_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

async fn two_instances() -> TestStack {
    TestStack::sharing(2).await
}

#[tokio::test]
async fn not_yet_valid_incomplete_and_refresh_tokens_are_refused_on_every_replica() {
    // Arrange: the claims of a real session, re-signed with the real key.
    let stack = two_instances().await;
    let session = stack.customer().await;
    let claims = claims_of(&session.access_token);
    let now = now_secs();
    let with = |field: &str, value: Value| {
        let mut changed = claims.clone();
        changed[field] = value;
        sign(&changed, Algorithm::HS256, JWT_SECRET)
    };
    let without = |field: &str| {
        let mut changed = claims.clone();
        changed.as_object_mut().expect("an object").remove(field);
        sign(&changed, Algorithm::HS256, JWT_SECRET)
    };
    let cases = [
        ("nbf an hour ahead", with("nbf", json!(now + 3600))),
        ("issued an hour from now", with("iat", json!(now + 3600))),
        ("without exp", without("exp")),
        ("without iat", without("iat")),
        ("without sub", without("sub")),
        ("without sid", without("sid")),
        ("without role", without("role")),
        ("without jti", without("jti")),
        ("sub not a UUID", with("sub", json!("admin"))),
        ("role not a role", with("role", json!("root"))),
        (
            "exp as a string",
            with("exp", json!((now + 600).to_string())),
        ),
        (
            "the refresh token as an access token",
            session.refresh_token.clone(),
        ),
    ];

    for (what, token) in &cases {
        // Act + Assert
        refused_everywhere(&stack, what, token).await;
    }
    // The same claims as issued, re-signed, still pass: the cases above
    // failed for what was changed, not for being re-signed.
    let resigned = sign(&claims, Algorithm::HS256, JWT_SECRET);
    for index in 0..2 {
        expect(stack.api(index).me(&resigned).await, StatusCode::OK).await;
    }
}

#[tokio::test]
async fn an_access_token_dies_on_every_replica_after_logout_password_change_or_disable() {
    // Arrange: three customers signed in through instance 0.
    let stack = two_instances().await;
    let (first, second) = (stack.api(0), stack.api(1));
    let admin = stack.admin().await;
    let logged_out = stack.customer().await;
    let changed_password = stack.customer().await;
    let other_device = first
        .login_ok(&changed_password.email, &changed_password.password)
        .await;
    let disabled = stack.customer().await;
    for token in [
        &logged_out.access_token,
        &other_device.access_token,
        &disabled.access_token,
    ] {
        expect(second.me(token).await, StatusCode::OK).await;
    }

    // Act: each ended on instance 1.
    expect(
        second.logout(&logged_out.access_token).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect(
        second
            .update_me(
                &changed_password.access_token,
                &json!({"password": "a-brand-new-password", "current_password": changed_password.password}),
            )
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        second
            .update_user(
                &admin.access_token,
                &disabled.user_id.to_string(),
                &json!({"disabled": true}),
            )
            .await,
        StatusCode::OK,
    )
    .await;

    // Assert: refused at once by both instances, refresh tokens included.
    refused_everywhere(&stack, "a logged-out token", &logged_out.access_token).await;
    refused_everywhere(
        &stack,
        "another session after a password change",
        &other_device.access_token,
    )
    .await;
    refused_everywhere(&stack, "a disabled user's token", &disabled.access_token).await;
    for (what, refresh_token) in [
        ("logged out", &logged_out.refresh_token),
        ("password changed", &other_device.refresh_token),
        ("disabled", &disabled.refresh_token),
    ] {
        for api in [&first, &second] {
            let response = api.refresh(refresh_token).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        }
    }
    // The session that changed the password lives on.
    expect(
        first.me(&changed_password.access_token).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn an_expired_access_token_is_refused_although_its_session_lives() {
    // Arrange: tokens signed with the real key for the real session, one
    // expired beyond the 5 s leeway and one still valid.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let session = stack.customer().await;
    let mut claims = claims_of(&session.access_token);
    let now = now_secs();
    claims["iat"] = json!(now - 1000);
    claims["exp"] = json!(now - 60);
    let expired = sign(&claims, Algorithm::HS256, JWT_SECRET);
    claims["exp"] = json!(now + 600);
    let valid = sign(&claims, Algorithm::HS256, JWT_SECRET);

    // Act
    let refused = api.me(&expired).await;
    let accepted = api.me(&valid).await;

    // Assert
    expect_problem(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let me = expect(accepted, StatusCode::OK).await;
    assert_eq!(me["id"], session.user_id.to_string());
}

#[tokio::test]
async fn forged_and_malformed_access_tokens_are_refused_on_every_replica() {
    // Arrange: claims of a real admin session, re-signed in ways the API must refuse.
    let stack = two_instances().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let claims = claims_of(&admin.access_token);
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let alg_none = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(&claims)
    );
    let unsigned_hs256 = format!(
        "{}.{}.",
        encode(&json!({"alg": "HS256", "typ": "JWT"})),
        encode(&claims)
    );
    let mut tampered_claims = claims.clone();
    tampered_claims["sub"] = json!(Uuid::new_v4());
    let [header_part, _, signature] = admin
        .access_token
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three parts");
    let tampered = format!("{header_part}.{}.{signature}", encode(&tampered_claims));
    let mut unknown_session = claims.clone();
    unknown_session["sid"] = json!(Uuid::new_v4());
    let mut other_user = claims.clone();
    other_user["sub"] = json!(Uuid::new_v4());
    let cases = [
        (
            "valid signature, session of another user",
            sign(&other_user, Algorithm::HS256, JWT_SECRET),
        ),
        (
            "signed with another key",
            sign(
                &claims,
                Algorithm::HS256,
                "another-secret-0123456789-abcdefghijklmnop",
            ),
        ),
        (
            "HS512 with the right key",
            sign(&claims, Algorithm::HS512, JWT_SECRET),
        ),
        ("alg none", alg_none),
        ("HS256 without a signature", unsigned_hs256),
        ("payload changed after signing", tampered),
        (
            "valid signature, unknown session",
            sign(&unknown_session, Algorithm::HS256, JWT_SECRET),
        ),
        ("not a JWT", "garbage".to_owned()),
    ];

    for (what, token) in &cases {
        // Act + Assert
        refused_everywhere(&stack, what, token).await;
    }
    for authorization in [
        format!("Basic {}", admin.access_token),
        "Bearer ".to_owned(),
        admin.access_token.clone(),
    ] {
        let response = api
            .raw(Method::GET, "/api/v1/users/me")
            .header("Authorization", &authorization)
            .send()
            .await
            .expect("the API answers");
        expect_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // The genuine token still works, so the refusals above were about the forgery.
    expect(
        api.list_users(&admin.access_token, "").await,
        StatusCode::OK,
    )
    .await;
}
