//! Health probes, Prometheus metrics, request ids and the OpenAPI document.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{expect, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{header, id_of, new_key, order, sample};

/// Every route of the contract (SPEC.md section 2), as `(method, path)` the
/// OpenAPI document names them.
const ROUTES: [(&str, &str); 21] = [
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/users/me"),
    ("patch", "/api/v1/users/me"),
    ("get", "/api/v1/users"),
    ("get", "/api/v1/users/{id}"),
    ("patch", "/api/v1/users/{id}"),
    ("get", "/api/v1/products"),
    ("get", "/api/v1/products/{id}"),
    ("post", "/api/v1/products"),
    ("patch", "/api/v1/products/{id}"),
    ("post", "/api/v1/products/{id}/stock"),
    ("delete", "/api/v1/products/{id}"),
    ("post", "/api/v1/purchases"),
    ("get", "/api/v1/purchases"),
    ("get", "/api/v1/purchases/{id}"),
    ("post", "/api/v1/purchases/{id}/cancel"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
];

#[tokio::test]
async fn liveness_and_readiness_answer_200_and_readiness_names_the_master() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let master = stack.redis.master_port().await;

    // Act
    let live = api
        .raw(Method::GET, "/health/live")
        .send()
        .await
        .expect("answers");
    let ready = api
        .raw(Method::GET, "/health/ready")
        .send()
        .await
        .expect("answers");

    // Assert
    let live = expect(live, StatusCode::OK).await;
    assert_eq!(live["status"], "ok");
    let ready = expect(ready, StatusCode::OK).await;
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["master"], format!("127.0.0.1:{master}"));
}

#[tokio::test]
async fn metrics_are_served_on_the_metrics_port_only_and_labelled_by_route_pattern() {
    // Arrange: a purchase, one refused for stock, a read of a product by its
    // id, and a failed login.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = id_of(&api.new_product(&admin, 1250, 5).await);
    let customer = stack.customer().await;
    expect(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&product, 2)]),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    expect_problem(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&product, 4)]),
        )
        .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    )
    .await;
    expect(api.get_product(&product).await, StatusCode::OK).await;
    expect(
        api.login(&customer.email, "wrong-password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let unknown_path = format!("/no-such-route-{}", Uuid::new_v4().simple());
    expect(
        api.raw(Method::GET, &unknown_path)
            .send()
            .await
            .expect("answers"),
        StatusCode::NOT_FOUND,
    )
    .await;
    let metrics_url = format!("http://127.0.0.1:{}/metrics", stack.apps[0].metrics_port);

    // Act
    let response = reqwest::get(&metrics_url)
        .await
        .expect("the metrics port answers");
    let on_public_port = api
        .raw(Method::GET, "/metrics")
        .send()
        .await
        .expect("answers");

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("a body");
    assert!(
        sample(
            &text,
            "evergreen_http_requests_total",
            &[
                r#"endpoint="/api/v1/products/{id}""#,
                r#"method="GET""#,
                r#"status="200""#
            ],
        )
        .is_some_and(|count| count >= 1.0),
        "no request count by route pattern:\n{text}"
    );
    assert!(
        text.contains("evergreen_http_requests_duration_seconds_bucket")
            && text.contains(r#"endpoint="/api/v1/purchases""#),
        "no latency histogram by route:\n{text}"
    );
    assert!(
        !text.contains(&product),
        "a raw id became a label value:\n{text}"
    );
    assert_eq!(
        sample(&text, "evergreen_purchases_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "evergreen_revenue_cents_total", &[]),
        Some(2500.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "evergreen_stock_outs_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "evergreen_logins_failed_total",
            &[r#"reason="credentials""#]
        ) == Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("evergreen_redis_command_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"evergreen_redis_master{{address="127.0.0.1:{}"}} 1"#,
            stack.redis.master_port().await
        )),
        "{text}"
    );
    assert!(
        !text.contains(&unknown_path),
        "an unmatched path became a label value:\n{text}"
    );
    expect_problem(on_public_port, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_sane_incoming_one_is_echoed() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);

    // Act
    let echoed = api
        .raw(Method::GET, "/api/v1/products")
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .expect("answers");
    let echoed_on_error = api
        .raw(Method::GET, "/api/v1/users/me")
        .header("X-Request-Id", "err-456")
        .send()
        .await
        .expect("answers");
    let made = [
        api.raw(Method::GET, "/health/live")
            .send()
            .await
            .expect("answers"),
        api.raw(Method::GET, "/api/v1/products")
            .send()
            .await
            .expect("answers"),
        api.raw(Method::GET, "/api/v1/products/not-a-uuid")
            .send()
            .await
            .expect("answers"),
        api.raw(Method::GET, "/nowhere")
            .send()
            .await
            .expect("answers"),
    ];
    let insane = api
        .raw(Method::GET, "/health/live")
        .header("X-Request-Id", "has spaces; and \"quotes\"")
        .send()
        .await
        .expect("answers");

    // Assert
    assert_eq!(header(&echoed, "x-request-id").as_deref(), Some("abc-123"));
    assert_eq!(echoed_on_error.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&echoed_on_error, "x-request-id").as_deref(),
        Some("err-456")
    );
    let ids: Vec<String> = made
        .iter()
        .map(|response| header(response, "x-request-id").expect("a request id on every response"))
        .collect();
    for id in &ids {
        assert!(id.parse::<Uuid>().is_ok(), "a made-up id is a UUID: {id}");
    }
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        ids.len()
    );
    let replaced = header(&insane, "x-request-id").expect("a request id");
    assert!(
        replaced.parse::<Uuid>().is_ok(),
        "an unsafe id is replaced: {replaced}"
    );
}

/// Code generators and importers (Postman among them) read the document with
/// their own validators: one of them, openapi-spec-validator (PyPI), must
/// accept it as OpenAPI 3.1 (every response with a description, every
/// schema and reference sound). scripts/test installs it and names it in
/// EVERGREEN_OPENAPI_VALIDATOR.
#[tokio::test]
async fn the_served_openapi_document_passes_an_independent_validator() {
    // Arrange
    let stack = TestStack::start().await;
    let validator = std::env::var("EVERGREEN_OPENAPI_VALIDATOR")
        .unwrap_or_else(|_| "openapi-spec-validator".to_owned());
    let file = tempfile::NamedTempFile::new().expect("a temp file");

    // Act
    let document = stack.api(0).openapi_document().await;
    std::fs::write(file.path(), document.to_string()).expect("written");
    let output = std::process::Command::new(&validator)
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| panic!("{validator}: {e} (scripts/test installs it)"));

    // Assert
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{validator} refused it:\n{said}");
    assert!(said.contains("OK"), "{said}");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_the_docs_page_is_html() {
    // Arrange
    let stack = TestStack::start().await;
    let api = stack.api(0);

    // Act
    let document = api
        .raw(Method::GET, "/api/v1/openapi.json")
        .send()
        .await
        .expect("answers");
    let docs = api
        .raw(Method::GET, "/api/v1/docs/")
        .send()
        .await
        .expect("answers");

    // Assert
    assert_eq!(document.status(), StatusCode::OK);
    let document: Value =
        serde_json::from_str(&document.text().await.expect("a body")).expect("valid JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} is missing; paths: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    let operations: usize = paths
        .values()
        .map(|item| {
            item.as_object().map_or(0, |o| {
                o.keys()
                    .filter(|k| ROUTES.iter().any(|(m, _)| m == k))
                    .count()
            })
        })
        .sum();
    assert_eq!(operations, ROUTES.len(), "no undocumented extra operations");
    assert!(document["components"]["schemas"]["Problem"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(docs.status(), StatusCode::OK);
    let content_type = header(&docs, "content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = docs.text().await.expect("a body");
    assert!(html.to_lowercase().contains("<html"), "{html}");
    assert!(html.contains("swagger"), "{html}");
}
