//! Bad requests of every kind are 4xx `application/problem+json` answers and
//! write nothing.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, Session, expect, expect_problem};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{admin_stack, catalog, header, id_of, new_key, order, stock_of};

fn post_product(api: &Api, admin: &Session) -> RequestBuilder {
    api.raw(Method::POST, "/api/v1/products")
        .bearer_auth(&admin.access_token)
}

async fn send(builder: RequestBuilder) -> Response {
    builder.send().await.expect("the API answers")
}

/// Asserts the full problem shape: `type` derived from `code`, a title, the
/// status, a detail, and for validation problems a per-field list.
async fn expect_full_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_problem(response, status, code).await;
    assert_eq!(
        body["type"],
        format!("urn:evergreen:problem:{code}"),
        "{body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    if code == "validation_failed" {
        let errors = body["errors"].as_array().expect("a per-field list");
        assert!(!errors.is_empty(), "{body}");
        for error in errors {
            for key in ["field", "code", "message"] {
                assert!(error[key].is_string(), "{key} missing: {body}");
            }
        }
    }
    body
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413_and_nothing_is_written() {
    // Arrange
    let (stack, api, admin) = admin_stack().await;
    let big = json!({
        "sku": "BIG-1", "name": "Big", "description": "x".repeat(70 * 1024), "price_cents": 1,
        "currency": "USD", "stock": 1, "category": "test",
    });
    let customer = stack.customer().await;
    let product = id_of(&api.new_product(&admin, 100, 5).await);
    let mut big_order = order(&[(&product, 1)]);
    big_order["padding"] = json!("y".repeat(70 * 1024));

    // Act
    let create = send(post_product(&api, &admin).json(&big)).await;
    let register = send(api.raw(Method::POST, "/api/v1/auth/register").json(
        &json!({"email": "big@example.com", "password": "x".repeat(70 * 1024), "name": "Big"}),
    ))
    .await;
    let purchase = api
        .purchase(&customer.access_token, Some(&new_key()), &big_order)
        .await;

    // Assert
    for response in [create, register, purchase] {
        expect_full_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    assert_eq!(catalog(&api, "").await, [product.as_str()]);
    assert_eq!(stock_of(&api, &product).await, 5);
    expect(
        api.login("big@example.com", "whatever-password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // A body just under the limit is read (and judged on its content).
    let mut near = big.clone();
    near["description"] = json!("x".repeat(5000));
    expect(
        send(post_product(&api, &admin).json(&near)).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn malformed_json_wrong_types_and_wrong_media_types_are_4xx_and_write_nothing() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let valid = json!({
        "sku": "OK-1", "name": "Fine", "description": "", "price_cents": 100,
        "currency": "USD", "stock": 1, "category": "test",
    });
    let as_json = |builder: RequestBuilder, text: &str| {
        builder
            .header("Content-Type", "application/json")
            .body(text.to_owned())
    };
    let mut wrong_type = valid.clone();
    wrong_type["price_cents"] = json!("100");
    let mut null_field = valid.clone();
    null_field["stock"] = Value::Null;
    let cases = [
        (
            as_json(post_product(&api, &admin), r#"{"sku": "OK-1", "name": "#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            as_json(post_product(&api, &admin), ""),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            as_json(post_product(&api, &admin), &format!("{valid} trailing")),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post_product(&api, &admin).json(&wrong_type),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post_product(&api, &admin).json(&null_field),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post_product(&api, &admin).json(&json!([valid])),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            post_product(&api, &admin)
                .header("Content-Type", "text/plain")
                .body(valid.to_string()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post_product(&api, &admin)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("sku=OK-1"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post_product(&api, &admin).body(valid.to_string()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            as_json(
                api.raw(Method::POST, "/api/v1/auth/register"),
                r#"{"email": "a@example.com", "password": 12345678, "name": "A"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            as_json(
                api.raw(Method::POST, "/api/v1/auth/login"),
                "{'email': 'a@example.com'}",
            ),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];

    for (request, status, code) in cases {
        // Act
        let response = send(request).await;

        // Assert
        expect_full_problem(response, status, code).await;
    }
    assert_eq!(catalog(&api, "").await, Vec::<String>::new());
    expect(
        api.login("a@example.com", "12345678").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The SKU is still free: nothing half-written.
    expect(
        api.create_product(&admin.access_token, &valid).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_a_400_on_every_route_that_takes_one() {
    // Arrange
    let (stack, api, admin) = admin_stack().await;
    let customer = stack.customer().await;
    let product = id_of(&api.new_product(&admin, 100, 5).await);
    let cases = [
        (Method::GET, "/products/not-a-uuid", None, &admin),
        (
            Method::PATCH,
            "/products/not-a-uuid",
            Some(json!({"name": "x"})),
            &admin,
        ),
        (
            Method::POST,
            "/products/42/stock",
            Some(json!({"delta": 1})),
            &admin,
        ),
        (Method::DELETE, "/products/not-a-uuid", None, &admin),
        (Method::GET, "/users/not-a-uuid", None, &admin),
        (
            Method::PATCH,
            "/users/not-a-uuid",
            Some(json!({"disabled": true})),
            &admin,
        ),
        (Method::GET, "/purchases/not-a-uuid", None, &customer),
        (
            Method::POST,
            "/purchases/not-a-uuid/cancel",
            None,
            &customer,
        ),
        (
            Method::GET,
            "/products/00000000-0000-0000-0000-00000000000g",
            None,
            &admin,
        ),
    ];

    for (method, path, body, session) in cases {
        // Act
        let mut request = api
            .raw(method.clone(), &format!("/api/v1{path}"))
            .bearer_auth(&session.access_token)
            .header("If-Match", "*");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = send(request).await;

        // Assert
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        expect_full_problem(response, StatusCode::BAD_REQUEST, "invalid_path").await;
    }
    assert_eq!(stock_of(&api, &product).await, 5);
    assert_eq!(catalog(&api, "").await, [product]);
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let product = Uuid::new_v4();
    let cases = [
        (Method::GET, "/api/v1/nothing-here".to_owned()),
        (Method::GET, "/api/v2/products".to_owned()),
        (Method::GET, "/".to_owned()),
        (Method::POST, format!("/api/v1/products/{product}/nothing")),
        (Method::GET, "/api/v1/users/me/extra".to_owned()),
    ];

    for (method, path) in cases {
        // Act
        let response = send(api.raw(method.clone(), &path)).await;

        // Assert
        assert!(
            header(&response, "x-request-id").is_some(),
            "{method} {path}"
        );
        expect_full_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // A known path with a method it does not take: a 4xx problem too.
    for (method, path) in [
        (Method::PUT, "/api/v1/products".to_owned()),
        (Method::DELETE, "/api/v1/users/me".to_owned()),
        (Method::GET, "/api/v1/auth/login".to_owned()),
    ] {
        let response = send(api.raw(method.clone(), &path)).await;
        let status = response.status();
        assert!(
            [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&status),
            "{method} {path}: {status}"
        );
        let body = expect_problem(
            response,
            status,
            if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "method_not_allowed"
            },
        )
        .await;
        assert!(body["detail"].is_string());
    }
}

#[tokio::test]
async fn every_kind_of_refusal_is_a_complete_problem_document() {
    // Arrange: one request per status the API chooses.
    let (stack, api, admin) = admin_stack().await;
    let customer = stack.customer().await;
    let product = id_of(&api.new_product(&admin, 100, 1).await);
    let token = &admin.access_token;

    // Act + Assert
    expect_full_problem(
        api.me("nonsense").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_full_problem(
        api.list_users(&customer.access_token, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_full_problem(
        api.get_product(&Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_full_problem(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&product, 2)]),
        )
        .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    )
    .await;
    expect_full_problem(
        api.update_product(token, &product, Some("\"7\""), &json!({"name": "x"}))
            .await,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;
    expect_full_problem(
        api.update_product(token, &product, None, &json!({"name": "x"}))
            .await,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    )
    .await;
    let invalid = expect_full_problem(
        api.register("not-an-email", "short", "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["email", "name", "password"], "{invalid}");
    expect_full_problem(
        api.purchase(&customer.access_token, None, &order(&[(&product, 1)]))
            .await,
        StatusCode::BAD_REQUEST,
        "idempotency_key_missing",
    )
    .await;
    assert_eq!(stock_of(&api, &product).await, 1);
}

/// The table of error codes in docs/api.md is the code's: every code, with its
/// status, and no other.
#[test]
fn the_api_docs_list_every_error_code_with_its_status() {
    use evergreen_api::error::Code;
    let docs = include_str!("../../../docs/api.md");
    let section = docs
        .split("\n## Error codes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/api.md has an Error codes section");
    let listed: Vec<(String, u16)> = section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((code.to_owned(), cells.get(2)?.parse().ok()?))
        })
        .collect();
    let mut expected: Vec<(String, u16)> = Code::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), code.status().as_u16()))
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    expected.sort();
    assert_eq!(listed_sorted, expected);
}
