//! Hostile input: deep, malformed and oversized JSON, very long strings in
//! every field, numbers out of every range, and look-alike emails. Each is a
//! 4xx problem and writes nothing.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, Session, expect, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{catalog, new_key, order};

/// A shop with one product (stock 10) and one customer.
struct Shop {
    _stack: TestStack,
    api: Api,
    admin: Session,
    customer: Session,
    product: Value,
    product_id: String,
}

impl Shop {
    async fn new() -> Self {
        let stack = TestStack::start().await;
        let api = stack.api(0);
        let admin = stack.admin().await;
        let customer = stack.customer().await;
        let product = api.new_product(&admin, 500, 10).await;
        let product_id = product["id"].as_str().expect("id").to_owned();
        Self {
            _stack: stack,
            api,
            admin,
            customer,
            product,
            product_id,
        }
    }

    /// Everything the shop held before the attack, and nothing more.
    async fn assert_nothing_written(&self) {
        let api = &self.api;
        assert_eq!(catalog(api, "").await, [self.product_id.as_str()]);
        let product = expect(api.get_product(&self.product_id).await, StatusCode::OK).await;
        assert_eq!(product, self.product);
        let purchases = expect(
            api.list_purchases(&self.customer.access_token, "").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(purchases["items"], json!([]));
        let users = api.all_pages(&self.admin.access_token, "/users").await;
        assert_eq!(users.len(), 2, "only the admin and the customer");
        let me = expect(api.me(&self.customer.access_token).await, StatusCode::OK).await;
        assert_eq!(me["name"], "Test Customer");
        api.login_ok(&self.customer.email, &self.customer.password)
            .await;
    }
}

/// Sends `body` (raw bytes, as JSON) and returns the status.
async fn send_raw(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> StatusCode {
    let mut request = api
        .raw(method, path)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", new_key())
        .header("If-Match", "*")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let content_type = crate::support::header(&response, "content-type").unwrap_or_default();
    assert_eq!(content_type, "application/problem+json", "{path}");
    status
}

#[tokio::test]
async fn deep_malformed_and_non_utf8_json_is_a_400_everywhere_and_writes_nothing() {
    // Arrange
    let shop = Shop::new().await;
    let (api, admin, customer, product) =
        (&shop.api, &shop.admin, &shop.customer, &shop.product_id);
    let deep_array = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes();
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes();
    let mut invalid_utf8 = br#"{"email": "ann@example.com", "password": "x"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    invalid_utf8.extend_from_slice(br#"yz12345", "name": "Ann"}"#);
    let lone_surrogate = br#"{"name": "\ud800"}"#.to_vec();
    let bodies = [
        ("20,000 nested arrays", deep_array),
        ("5,000 nested objects", deep_object),
        ("invalid UTF-8", invalid_utf8),
        ("a lone surrogate", lone_surrogate),
        ("two documents", br#"{"delta": 1}{"delta": 1}"#.to_vec()),
        ("a NUL byte", b"{\"delta\": 1\x00}".to_vec()),
        (
            "a key given twice",
            br#"{"name": "a", "delta": 1, "name": "b"}"#.to_vec(),
        ),
    ];
    let routes: Vec<(Method, String, Option<&str>)> = vec![
        (Method::POST, "/api/v1/auth/register".into(), None),
        (Method::POST, "/api/v1/auth/login".into(), None),
        (
            Method::PATCH,
            "/api/v1/users/me".into(),
            Some(&customer.access_token),
        ),
        (
            Method::POST,
            "/api/v1/products".into(),
            Some(&admin.access_token),
        ),
        (
            Method::PATCH,
            format!("/api/v1/products/{product}"),
            Some(&admin.access_token),
        ),
        (
            Method::POST,
            format!("/api/v1/products/{product}/stock"),
            Some(&admin.access_token),
        ),
        (
            Method::POST,
            "/api/v1/purchases".into(),
            Some(&customer.access_token),
        ),
    ];

    for (what, body) in &bodies {
        for (method, path, token) in &routes {
            // Act
            let status = send_raw(api, method.clone(), path, *token, body.clone()).await;

            // Assert
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what} to {method} {path}");
        }
    }
    shop.assert_nothing_written().await;
}

#[tokio::test]
async fn ten_thousand_characters_in_any_field_are_refused_and_write_nothing() {
    // Arrange
    let shop = Shop::new().await;
    let (api, admin, customer, product) =
        (&shop.api, &shop.admin, &shop.customer, &shop.product_id);
    let long = "x".repeat(10_000);
    let long_email = format!("{long}@example.com");
    let register = json!({"email": "new@example.com", "password": "long-enough-1", "name": "New"});
    let create = json!({"sku": "LONG-1", "name": "Long", "description": "", "price_cents": 1,
                        "currency": "USD", "stock": 1, "category": "test"});
    let with = |base: &Value, field: &str, value: &str| {
        let mut body = base.clone();
        body[field] = json!(value);
        body
    };
    let mut attempts: Vec<(Method, String, Option<&str>, Value)> = Vec::new();
    for field in ["email", "password", "name"] {
        let value = if field == "email" { &long_email } else { &long };
        attempts.push((
            Method::POST,
            "/api/v1/auth/register".into(),
            None,
            with(&register, field, value),
        ));
    }
    attempts.push((
        Method::POST,
        "/api/v1/auth/login".into(),
        None,
        json!({"email": long_email, "password": "x"}),
    ));
    attempts.push((
        Method::POST,
        "/api/v1/auth/login".into(),
        None,
        json!({"email": customer.email, "password": long}),
    ));
    attempts.push((
        Method::POST,
        "/api/v1/auth/refresh".into(),
        None,
        json!({"refresh_token": long}),
    ));
    for field in ["name", "password"] {
        attempts.push((
            Method::PATCH,
            "/api/v1/users/me".into(),
            Some(&customer.access_token),
            json!({field: long, "current_password": customer.password}),
        ));
    }
    for field in ["sku", "name", "description", "currency", "category"] {
        let value = if field == "description" {
            "x".repeat(5_001)
        } else {
            long.clone()
        };
        attempts.push((
            Method::POST,
            "/api/v1/products".into(),
            Some(&admin.access_token),
            with(&create, field, &value),
        ));
    }
    for field in ["name", "description", "category"] {
        let value = if field == "description" {
            "x".repeat(5_001)
        } else {
            long.clone()
        };
        attempts.push((
            Method::PATCH,
            format!("/api/v1/products/{product}"),
            Some(&admin.access_token),
            json!({field: value}),
        ));
    }

    for (method, path, token, body) in &attempts {
        // Act
        let status = send_raw(
            api,
            method.clone(),
            path,
            *token,
            body.to_string().into_bytes(),
        )
        .await;

        // Assert: a field error.
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path} to {}",
            &body.to_string()[..80]
        );
    }
    // An Idempotency-Key over 255 characters.
    let response = api
        .raw(Method::POST, "/api/v1/purchases")
        .bearer_auth(&customer.access_token)
        .header("Idempotency-Key", "k".repeat(256))
        .json(&order(&[(product, 1)]))
        .send()
        .await
        .expect("answers");
    expect_problem(response, StatusCode::BAD_REQUEST, "idempotency_key_invalid").await;
    shop.assert_nothing_written().await;
}

#[tokio::test]
async fn quantities_prices_stock_and_deltas_outside_their_ranges_are_refused() {
    // Arrange
    let shop = Shop::new().await;
    let (api, admin, customer, product) =
        (&shop.api, &shop.admin, &shop.customer, &shop.product_id);
    let out_of_range = [
        json!(0),
        json!(-1),
        json!(1001),
        json!(4_294_967_296_u64),
        json!(9_223_372_036_854_775_808_u64),
        json!(-9_223_372_036_854_775_807_i64),
        json!(1e30),
        json!(1.5),
        json!("1"),
        json!(null),
    ];
    let create = json!({"sku": "RANGE-1", "name": "Range", "description": "", "price_cents": 1,
                        "currency": "USD", "stock": 1, "category": "test"});
    let mut attempts: Vec<(Method, String, &str, Value)> = Vec::new();
    for quantity in &out_of_range {
        attempts.push((
            Method::POST,
            "/api/v1/purchases".into(),
            &customer.access_token,
            json!({"items": [{"product_id": product, "quantity": quantity}]}),
        ));
    }
    for price in [
        json!(-1),
        json!(10_000_000_001_i64),
        json!(9_223_372_036_854_775_808_u64),
        json!(1e20),
        json!(0.5),
    ] {
        let mut body = create.clone();
        body["price_cents"] = price.clone();
        attempts.push((
            Method::POST,
            "/api/v1/products".into(),
            &admin.access_token,
            body,
        ));
        attempts.push((
            Method::PATCH,
            format!("/api/v1/products/{product}"),
            &admin.access_token,
            json!({"price_cents": price}),
        ));
    }
    for stock in [json!(-1), json!(1_000_000_001), json!(1e20)] {
        let mut body = create.clone();
        body["stock"] = stock;
        attempts.push((
            Method::POST,
            "/api/v1/products".into(),
            &admin.access_token,
            body,
        ));
    }
    for delta in [
        json!(0),
        json!(-11),
        json!(1_000_000_001),
        json!(-9_223_372_036_854_775_808_i64),
        json!(2.5),
    ] {
        attempts.push((
            Method::POST,
            format!("/api/v1/products/{product}/stock"),
            &admin.access_token,
            json!({"delta": delta}),
        ));
    }
    // 100 lines of 1000 units of one product: summed, far over the stock.
    let lines: Vec<(&str, i64)> = (0..100).map(|_| (product.as_str(), 1000)).collect();
    attempts.push((
        Method::POST,
        "/api/v1/purchases".into(),
        &customer.access_token,
        order(&lines),
    ));
    // 101 lines: over the limit of lines.
    let lines: Vec<(&str, i64)> = (0..101).map(|_| (product.as_str(), 1)).collect();
    attempts.push((
        Method::POST,
        "/api/v1/purchases".into(),
        &customer.access_token,
        order(&lines),
    ));

    for (method, path, token, body) in &attempts {
        // Act
        let status = send_raw(
            api,
            method.clone(),
            path,
            Some(token),
            body.to_string().into_bytes(),
        )
        .await;

        // Assert: a type error (400), a rule (422) or the stock (409).
        assert!(
            [
                StatusCode::BAD_REQUEST,
                StatusCode::CONFLICT,
                StatusCode::UNPROCESSABLE_ENTITY
            ]
            .contains(&status),
            "{method} {path} answered {status} to {body}"
        );
    }
    shop.assert_nothing_written().await;
}

#[tokio::test]
async fn look_alike_emails_are_the_same_account_or_refused() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    expect(
        api.register("ann@example.com", "ann-password-1", "Ann")
            .await,
        StatusCode::CREATED,
    )
    .await;

    // Act + Assert: NFKC makes these ann@example.com, which is taken.
    for taken in [
        "ＡＮＮ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "Ann@Example.COM",
        " ann@example.com\t",
        "ann@ｅxample.com",
    ] {
        expect_problem(
            api.register(taken, "mallory-password", "Mallory").await,
            StatusCode::CONFLICT,
            "email_taken",
        )
        .await;
    }
    // What NFKC leaves non-ASCII would read like Ann's address: refused.
    for confusable in [
        "ann@exаmple.com",         // Cyrillic а
        "аnn@example.com",         // Cyrillic а
        "ann\u{200b}@example.com", // zero-width space
        "ann@example.com\u{0301}", // combining accent
        "ännchen@example.com",
    ] {
        let response = api
            .register(confusable, "mallory-password", "Mallory")
            .await;
        let problem = expect_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(
            problem["errors"][0]["field"], "email",
            "{confusable}: {problem}"
        );
    }
    // The fullwidth form signs Ann in: one account, one normal form.
    api.login_ok("ＡＮＮ@ｅｘａｍｐｌｅ.ｃｏｍ", "ann-password-1")
        .await;
    let users = api.all_pages(&admin.access_token, "/users").await;
    let emails: Vec<&str> = users.iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails.len(), 2, "{emails:?}");
    assert!(emails.contains(&"ann@example.com"), "{emails:?}");
}
