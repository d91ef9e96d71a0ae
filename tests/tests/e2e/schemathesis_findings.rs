//! One regular test per bug schemathesis (scripts/fuzz) found, so that each
//! stays fixed without the fuzzer: see "Fuzzing" in docs/testing.md.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, expect, expect_problem};
use evergreen_tests::gateway::Gateway;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{header, new_key, stock_of};

/// Found: `PATCH /users/{id}` with the body `[null, null]` answered 200
/// (serde reads a struct from an array).
#[tokio::test]
async fn an_array_or_a_scalar_is_not_a_body_and_changes_nothing() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;
    let user = customer.user_id.to_string();
    let product = api.new_product(&admin, 500, 10).await;
    let product_id = product["id"].as_str().expect("id");

    for body in [
        json!([null, null]),
        json!(["admin", true]),
        json!("admin"),
        json!(7),
        json!(null),
    ] {
        // Act
        let responses = [
            api.update_user(&admin.access_token, &user, &body).await,
            api.update_me(&customer.access_token, &body).await,
            api.raw(
                Method::POST,
                &format!("/api/v1/products/{product_id}/stock"),
            )
            .bearer_auth(&admin.access_token)
            .header("Idempotency-Key", new_key())
            .json(&body)
            .send()
            .await
            .expect("answers"),
        ];

        // Assert
        for response in responses {
            let problem = expect_problem(response, StatusCode::BAD_REQUEST, "invalid_body").await;
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("JSON object")),
                "{body}: {problem}"
            );
        }
    }
    let stored = expect(
        api.get_user(&admin.access_token, &user).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (stored["role"].clone(), stored["disabled"].clone()),
        (json!("customer"), json!(false))
    );
    assert_eq!(stock_of(&api, product_id).await, 10);
}

/// Found: `1627.0` for `price_cents`, `stock`, `delta` or `quantity` was a
/// 400, though JSON Schema (and so our document) calls it an integer.
#[tokio::test]
async fn a_whole_number_written_with_a_decimal_point_is_that_integer() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;

    // Act
    let created = api
        .create_product(
            &admin.access_token,
            &json!({"sku": "FLOAT-1", "name": "Float", "description": "", "price_cents": 1299.0,
                    "currency": "USD", "stock": 10.0, "category": "test"}),
        )
        .await;
    let created = expect(created, StatusCode::CREATED).await;
    let id = created["id"].as_str().expect("id");
    let moved = api
        .raw(Method::POST, &format!("/api/v1/products/{id}/stock"))
        .bearer_auth(&admin.access_token)
        .header("Idempotency-Key", new_key())
        .json(&json!({"delta": -2.0}))
        .send()
        .await
        .expect("answers");
    let bought = api
        .purchase(
            &customer.access_token,
            Some(&new_key()),
            &json!({"items": [{"product_id": id, "quantity": 3.0}]}),
        )
        .await;
    let fraction = api
        .purchase(
            &customer.access_token,
            Some(&new_key()),
            &json!({"items": [{"product_id": id, "quantity": 1.5}]}),
        )
        .await;

    // Assert
    assert_eq!(
        (created["price_cents"].clone(), created["stock"].clone()),
        (json!(1299), json!(10))
    );
    expect(moved, StatusCode::OK).await;
    let bought = expect(bought, StatusCode::CREATED).await;
    assert_eq!(bought["items"][0]["quantity"], 3, "{bought}");
    assert_eq!(bought["total_cents"], 3897);
    expect_problem(fraction, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert_eq!(stock_of(&api, id).await, 5);
}

/// Found: `PATCH /products/{id}` with `{}` (schema-valid: no field is
/// required) was a 422. It is now the no-op of a JSON merge patch, and the
/// ETag rules still hold.
#[tokio::test]
async fn an_empty_product_patch_changes_nothing_and_still_needs_the_etag() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = api.new_product(&admin, 500, 10).await;
    let id = product["id"].as_str().expect("id");
    let etag = header(&api.get_product(id).await, "etag").expect("an ETag");
    let patch = |if_match: Option<&str>, body: Value| {
        let mut request = api
            .raw(Method::PATCH, &format!("/api/v1/products/{id}"))
            .bearer_auth(&admin.access_token)
            .json(&body);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        request.send()
    };

    // Act
    let empty = patch(Some(&etag), json!({})).await.expect("answers");
    let nulls = patch(Some(&etag), json!({"name": null, "price_cents": null}))
        .await
        .expect("answers");
    let stale = patch(Some("\"999\""), json!({})).await.expect("answers");
    let missing = patch(None, json!({})).await.expect("answers");

    // Assert
    assert_eq!(header(&empty, "etag").as_deref(), Some(etag.as_str()));
    assert_eq!(expect(empty, StatusCode::OK).await, product);
    assert_eq!(expect(nulls, StatusCode::OK).await, product);
    expect_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;
    expect_problem(
        missing,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    )
    .await;
    assert_eq!(
        expect(api.get_product(id).await, StatusCode::OK).await,
        product
    );
}

/// Found: a method a path does not have was a 404 from the API, and TRACE an
/// HTML 405 from nginx without `Allow` (later a 500). Now: 405, `Allow`,
/// problem+json, directly and through nginx.
#[tokio::test]
async fn a_method_a_path_lacks_is_405_with_allow_directly_and_through_nginx() {
    // Arrange
    let gateway = Gateway::start(1).await;
    let through_nginx = Api::new(&gateway.nginx.base_url());
    let direct = Api::new(&gateway.replicas[0].base_url());
    let product = uuid::Uuid::new_v4();
    let cases = [
        (Method::PUT, "/api/v1/users/me".to_owned(), "GET, PATCH"),
        (Method::TRACE, "/api/v1/users/me".to_owned(), "GET, PATCH"),
        (Method::DELETE, "/api/v1/auth/login".to_owned(), "POST"),
        (
            Method::POST,
            format!("/api/v1/products/{product}"),
            "GET, PATCH, DELETE",
        ),
        (Method::TRACE, "/health/live".to_owned(), "GET"),
    ];

    for api in [&direct, &through_nginx] {
        for (method, path, allow) in &cases {
            // Act
            let response = api.raw(method.clone(), path).send().await.expect("answers");

            // Assert
            assert_eq!(
                header(&response, "allow").as_deref(),
                Some(*allow),
                "{method} {path}"
            );
            let problem = expect_problem(
                response,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            )
            .await;
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(*allow)),
                "{problem}"
            );
        }
        // A path that does not exist is still a 404.
        let response = api
            .raw(Method::PUT, "/api/v1/nothing")
            .send()
            .await
            .expect("answers");
        expect_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

/// Found: operations answered 400, 401, 403, 413, 415, 422 and 503 that
/// their documentation did not list, and query and body fields accepted less
/// than their schemas said (no bounds on `min_price`, no patterns on
/// `category`, `sku`, `name`, no format on `email`, ...).
#[tokio::test]
async fn every_operation_documents_the_refusals_it_can_give_and_the_bounds_it_enforces() {
    // Arrange
    let stack = TestStack::start().await;
    let document = stack.api(0).openapi_document().await;

    // Act + Assert: every operation.
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for (method, operation) in item.as_object().expect("an item") {
            operations += 1;
            let responses = operation["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            let name = format!("{method} {path}");
            let body = operation.get("requestBody").is_some();
            let parameters = operation["parameters"]
                .as_array()
                .is_some_and(|p| !p.is_empty());
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            assert!(has("503"), "{name}: 503 undocumented");
            assert!(
                !(body || parameters) || has("400"),
                "{name}: 400 undocumented"
            );
            assert!(!secured || has("401"), "{name}: 401 undocumented");
            assert!(
                !body || (has("413") && has("415") && has("422")),
                "{name}: body refusals undocumented"
            );
            assert!(
                !path.starts_with("/api/v1/auth/") || has("429"),
                "{name}: 429 undocumented"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{name} {status}: not application/problem+json"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 19);
    // The bounds the API enforces are in the document.
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["CreateProductRequest"]["properties"]["currency"]["enum"],
        json!(["USD"])
    );
    assert!(schemas["CreateProductRequest"]["properties"]["sku"]["pattern"].is_string());
    assert!(schemas["CreateProductRequest"]["properties"]["name"]["pattern"].is_string());
    assert_eq!(
        schemas["RegisterRequest"]["properties"]["email"]["format"],
        "email"
    );
    assert_eq!(
        schemas["StockDeltaRequest"]["properties"]["delta"]["oneOf"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let list = document["paths"]["/api/v1/products"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let parameter =
        |name: &str| list.iter().find(|p| p["name"] == name).expect(name)["schema"].clone();
    assert_eq!(parameter("min_price")["minimum"], 0);
    assert!(parameter("category")["pattern"].is_string());
    assert!(parameter("cursor")["pattern"].is_string());
    assert_eq!(parameter("q")["maxLength"], 100);
}
