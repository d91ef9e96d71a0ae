//! Own profile (`/users/me`) and admin user management (`/users`), and the
//! bootstrap admin.

use std::collections::HashSet;
use std::time::Duration;

use evergreen_api::startup::Application;
use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD, TestStack};
use evergreen_tests::client::{Api, expect, expect_problem};
use evergreen_tests::wait;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{claims_of, collect_pages};

#[tokio::test]
async fn a_user_reads_and_renames_itself_but_cannot_change_its_role() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let customer = stack.customer().await;

    // Act
    let renamed = api
        .update_me(&customer.access_token, &json!({"name": "  Ann Example  "}))
        .await;
    let escalation = api
        .update_me(&customer.access_token, &json!({"role": "admin"}))
        .await;

    // Assert
    let renamed = expect(renamed, StatusCode::OK).await;
    assert_eq!(renamed["name"], "Ann Example");
    assert_eq!(renamed["id"], customer.user_id.to_string());
    expect_problem(escalation, StatusCode::BAD_REQUEST, "invalid_body").await;
    let me = expect(api.me(&customer.access_token).await, StatusCode::OK).await;
    assert_eq!(me["name"], "Ann Example");
    assert_eq!(me["email"], customer.email);
    assert_eq!(me["role"], "customer");
    assert!(me.get("password_hash").is_none(), "{me}");
}

#[tokio::test]
async fn a_password_change_needs_the_right_current_password() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let customer = stack.customer().await;

    // Act
    let without = api
        .update_me(
            &customer.access_token,
            &json!({"password": "new-password-1"}),
        )
        .await;
    let wrong = api
        .update_me(
            &customer.access_token,
            &json!({"password": "new-password-1", "current_password": "not-it-at-all"}),
        )
        .await;

    let short = api
        .update_me(
            &customer.access_token,
            &json!({"password": "short", "current_password": customer.password}),
        )
        .await;

    // Assert
    let body = expect_problem(short, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "password", "{body}");
    for response in [without, wrong] {
        let body = expect_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "current_password", "{body}");
    }
    // Nothing changed: the old password works, the new one does not.
    api.login_ok(&customer.email, &customer.password).await;
    expect(
        api.login(&customer.email, "new-password-1").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_keeps_the_current_one() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let current = stack.customer().await;
    let other = api.login_ok(&current.email, &current.password).await;

    // Act
    let response = api
        .update_me(
            &current.access_token,
            &json!({"password": "brand-new-password", "current_password": current.password}),
        )
        .await;

    // Assert
    expect(response, StatusCode::OK).await;
    expect_problem(
        api.me(&other.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect(
        api.refresh(&other.refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect(api.me(&current.access_token).await, StatusCode::OK).await;
    expect(api.refresh(&current.refresh_token).await, StatusCode::OK).await;
    expect(
        api.login(&current.email, &current.password).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    api.login_ok(&current.email, "brand-new-password").await;
}

#[tokio::test]
async fn a_session_kept_alive_by_refreshes_is_still_ended_by_a_password_change() {
    // Arrange: a session signed in long ago (its keys about to expire, as if
    // 30 days had passed), renewed by a refresh just now.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let old = stack.customer().await;
    let keys = stack.keys();
    let session_id: Uuid = claims_of(&old.access_token)["sid"]
        .as_str()
        .and_then(|sid| sid.parse().ok())
        .expect("a session id claim");
    let sessions_set = keys.user_sessions(old.user_id);
    let mut redis = stack.master_connection().await;
    let _: () = redis::pipe()
        .cmd("EXPIRE")
        .arg(keys.session(session_id))
        .arg(2)
        .ignore()
        .cmd("EXPIRE")
        .arg(&sessions_set)
        .arg(2)
        .ignore()
        .query_async(&mut redis)
        .await
        .expect("EXPIRE");
    let refreshed = expect(api.refresh(&old.refresh_token).await, StatusCode::OK).await;
    let refreshed_access = refreshed["access_token"].as_str().expect("access_token");
    let refreshed_refresh = refreshed["refresh_token"].as_str().expect("refresh_token");
    // The login-time lifetime of the user's session index runs out (or was renewed).
    wait::until(
        "the session index to expire or to have been renewed",
        Duration::from_secs(10),
        || {
            let mut redis = redis.clone();
            let set = sessions_set.clone();
            async move {
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&set)
                    .query_async(&mut redis)
                    .await
                    .ok()?;
                (ttl == -2 || ttl > 10_000).then_some(())
            }
        },
    )
    .await;
    expect(api.me(refreshed_access).await, StatusCode::OK).await;
    let current = api.login_ok(&old.email, &old.password).await;

    // Act
    let response = api
        .update_me(
            &current.access_token,
            &json!({"password": "brand-new-password", "current_password": old.password}),
        )
        .await;

    // Assert: the refreshed session is one of the "other sessions".
    expect(response, StatusCode::OK).await;
    expect_problem(
        api.me(refreshed_access).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect(
        api.refresh(refreshed_refresh).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect(api.me(&current.access_token).await, StatusCode::OK).await;
}

#[tokio::test]
async fn an_admin_pages_through_users_one_at_a_time_oldest_first() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let mut customers = Vec::new();
    for _ in 0..3 {
        customers.push(api.new_customer().await.user_id.to_string());
    }
    let page = |query: String| {
        let (api, token) = (api.clone(), admin.access_token.clone());
        async move { api.list_users(&token, &query).await }
    };

    // Act
    let first_walk = collect_pages("?limit=1", page).await;
    let second_walk = collect_pages("?limit=1", page).await;
    let one_page = expect(
        api.list_users(&admin.access_token, "?limit=100").await,
        StatusCode::OK,
    )
    .await;

    // Assert: every user once, the admin (created first) then the customers in order.
    let mut expected = vec![admin.user_id.to_string()];
    expected.extend(customers);
    assert_eq!(first_walk, expected);
    assert_eq!(second_walk, first_walk, "pages are stable");
    assert_eq!(crate::support::ids(&one_page), expected);
    assert!(one_page["next_cursor"].is_null(), "{one_page}");
    let unique: HashSet<&String> = first_walk.iter().collect();
    assert_eq!(unique.len(), first_walk.len(), "no duplicates");
    for (query, status, code) in [
        (
            "?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "?limit=101",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "?cursor=Z2FyYmFnZQ",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        ("?limit=x", StatusCode::BAD_REQUEST, "invalid_query"),
        ("?role=admin", StatusCode::BAD_REQUEST, "invalid_query"),
    ] {
        expect_problem(
            api.list_users(&admin.access_token, query).await,
            status,
            code,
        )
        .await;
    }
    let first = &one_page["items"][0];
    assert_eq!(first["email"], ADMIN_EMAIL);
    assert_eq!(first["role"], "admin");
    assert!(first.get("password_hash").is_none(), "{first}");
}

#[tokio::test]
async fn an_admin_reads_one_user_by_id_and_gets_404_for_an_unknown_one() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;

    // Act
    let found = api
        .get_user(&admin.access_token, &customer.user_id.to_string())
        .await;
    let missing = api
        .get_user(&admin.access_token, &Uuid::new_v4().to_string())
        .await;
    let missing_update = api
        .update_user(
            &admin.access_token,
            &Uuid::new_v4().to_string(),
            &json!({"disabled": true}),
        )
        .await;

    // Assert
    let found = expect(found, StatusCode::OK).await;
    assert_eq!(found["email"], customer.email);
    assert_eq!(found["role"], "customer");
    assert_eq!(found["disabled"], false);
    expect_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(missing_update, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn disabling_a_user_ends_its_sessions_at_once_and_blocks_its_login() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;
    let id = customer.user_id.to_string();

    // Act
    let response = api
        .update_user(&admin.access_token, &id, &json!({"disabled": true}))
        .await;

    // Assert
    let user = expect(response, StatusCode::OK).await;
    assert_eq!(user["disabled"], true);
    expect_problem(
        api.me(&customer.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect(
        api.refresh(&customer.refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect_problem(
        api.login(&customer.email, &customer.password).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // Re-enabling lets the user sign in again (the old sessions stay ended).
    let user = expect(
        api.update_user(&admin.access_token, &id, &json!({"disabled": false}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(user["disabled"], false);
    expect(
        api.me(&customer.access_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    api.login_ok(&customer.email, &customer.password).await;
}

#[tokio::test]
async fn a_role_change_applies_to_existing_tokens_at_once() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;
    let id = customer.user_id.to_string();
    expect(
        api.list_users(&customer.access_token, "").await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Act: promote.
    let promoted = expect(
        api.update_user(&admin.access_token, &id, &json!({"role": "admin"}))
            .await,
        StatusCode::OK,
    )
    .await;

    // Assert: the token issued to a customer now carries admin rights.
    assert_eq!(promoted["role"], "admin");
    expect(
        api.list_users(&customer.access_token, "").await,
        StatusCode::OK,
    )
    .await;

    // Act + Assert: demote, and the same token loses them again.
    expect(
        api.update_user(&admin.access_token, &id, &json!({"role": "customer"}))
            .await,
        StatusCode::OK,
    )
    .await;
    expect_problem(
        api.list_users(&customer.access_token, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        api.update_user(&admin.access_token, &id, &json!({"role": "root"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn an_admin_can_neither_disable_nor_demote_itself() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let id = admin.user_id.to_string();

    for body in [
        json!({"disabled": true}),
        json!({"role": "customer"}),
        json!({"role": "customer", "disabled": true}),
    ] {
        // Act
        let response = api.update_user(&admin.access_token, &id, &body).await;

        // Assert
        expect_problem(response, StatusCode::CONFLICT, "self_lockout").await;
    }
    let me = expect(api.me(&admin.access_token).await, StatusCode::OK).await;
    assert_eq!(
        (me["role"].clone(), me["disabled"].clone()),
        (json!("admin"), json!(false))
    );
    expect(
        api.list_users(&admin.access_token, "").await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn two_instances_starting_at_once_create_the_bootstrap_admin_exactly_once() {
    // Arrange: Redis only, then two instances built and started concurrently.
    let mut stack = TestStack::sharing(0).await;
    let (first, second) = tokio::join!(
        Application::build(stack.settings()),
        Application::build(stack.settings())
    );
    let apis: Vec<Api> = [first, second]
        .into_iter()
        .map(|application| {
            let application = application.expect("the API binds its ports");
            let api = Api::new(&format!("http://127.0.0.1:{}", application.port()));
            tokio::spawn(application.run_until_stopped());
            api
        })
        .collect();

    // Act: both report ready, i.e. both finished their bootstrap.
    for api in &apis {
        wait::until(
            "an instance to report ready",
            Duration::from_secs(15),
            || async {
                let response = api.raw(Method::GET, "/health/ready").send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }
    // A third instance starting later (a restart) must not create another.
    stack.spawn_app().await;

    // Assert
    let admin = apis[1].login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let users = expect(
        apis[0].list_users(&admin.access_token, "?limit=100").await,
        StatusCode::OK,
    )
    .await;
    let admins: Vec<&serde_json::Value> = users["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|user| user["email"] == ADMIN_EMAIL)
        .collect();
    assert_eq!(admins.len(), 1, "{users}");
    assert_eq!(admins[0]["role"], "admin");
    assert_eq!(admins[0]["id"], admin.user_id.to_string());
    assert_eq!(users["items"].as_array().map(Vec::len), Some(1), "{users}");
    let via_third = stack.api(0).login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(via_third.user_id, admin.user_id);
}
