//! What an attacker can reach besides the API's own routes: Redis and
//! Sentinel without a password, the metrics, nginx's headers and own error
//! pages, and the body of a 500.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, expect_problem};
use evergreen_tests::gateway::Gateway;
use evergreen_tests::redis_ha::users;
use redis::AsyncCommands;
use reqwest::{Method, RequestBuilder, StatusCode};

use crate::support::header;

/// Runs `PING` on 127.0.0.1:`port` as `(user, password)` (none: no AUTH at all).
async fn ping(port: u16, credentials: Option<(&str, &str)>) -> Result<String, String> {
    let url = match credentials {
        Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    };
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn redis_and_sentinel_refuse_every_command_without_a_users_password() {
    // Arrange
    let stack = TestStack::sharing(0).await;
    let redis = &stack.redis;
    let credentials = redis.credentials();
    let everyone = [
        (users::ADMIN, credentials.admin.as_str()),
        (users::API, credentials.api.as_str()),
        (users::SENTINEL, credentials.sentinel.as_str()),
        (users::MONITOR, credentials.monitor.as_str()),
    ];

    for port in redis.data_ports().into_iter().chain(redis.sentinel_ports()) {
        // Act
        let anonymous = ping(port, None).await;
        let default_with_apis = ping(port, Some((users::ADMIN, &credentials.api))).await;
        let api_with_monitors = ping(port, Some((users::API, &credentials.monitor))).await;

        // Assert: no session without a password; each user has its own, and
        // the operators' `default` is no exception.
        let anonymous = anonymous.expect_err("no password, no command");
        assert!(anonymous.contains("NOAUTH"), ":{port} {anonymous}");
        for refused in [default_with_apis, api_with_monitors] {
            let refused = refused.expect_err("another user's password");
            assert!(
                refused.contains("WRONGPASS") || refused.contains("AuthenticationFailed"),
                ":{port} {refused}"
            );
        }
        for (user, password) in everyone {
            assert_eq!(
                ping(port, Some((user, password))).await.as_deref(),
                Ok("PONG"),
                ":{port} as {user}"
            );
        }
    }
}

#[tokio::test]
async fn a_500_names_no_key_field_value_or_library() {
    // Arrange: a product whose stored price is not a number.
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = api.new_product(&admin, 500, 10).await;
    let id = product["id"].as_str().expect("id");
    let key = format!("{}product:{id}", stack.key_prefix);
    let mut master = stack.master_connection().await;
    let _: () = master
        .hset(&key, "price_cents", "corrupted-by-test")
        .await
        .expect("HSET");

    // Act
    let response = api.get_product(id).await;

    // Assert
    let request_id = header(&response, "x-request-id").expect("a request id to quote");
    let problem = expect_problem(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    let text = problem.to_string();
    for secret in [
        "corrupted-by-test",
        "price_cents",
        &key,
        &stack.key_prefix,
        "redis",
        "Redis",
        "parse",
    ] {
        assert!(!text.contains(secret), "the 500 reveals {secret:?}: {text}");
    }
    assert!(!request_id.is_empty());
}

#[tokio::test]
async fn the_gateway_sends_security_headers_hides_versions_metrics_and_speaks_problem_json() {
    // Arrange
    let gateway = Gateway::start(1).await;
    let api = Api::new(&gateway.nginx.base_url());
    let big_body = vec![b'x'; 300 * 1024];
    let huge_header = "h".repeat(20 * 1024);
    let send = |request: RequestBuilder| async { request.send().await.expect("answers") };

    // Act: the API's answers, and the answers nginx makes itself.
    let answers = vec![
        ("an API 200", api.list_products("").await, StatusCode::OK),
        (
            "/metrics",
            send(api.raw(Method::GET, "/metrics")).await,
            StatusCode::NOT_FOUND,
        ),
        (
            "/stub_status",
            send(api.raw(Method::GET, "/stub_status")).await,
            StatusCode::NOT_FOUND,
        ),
        (
            "a 300 KiB body",
            send(
                api.raw(Method::POST, "/api/v1/auth/login")
                    .header("Content-Type", "application/json")
                    .body(big_body),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "a 20 KiB header",
            send(
                api.raw(Method::GET, "/api/v1/products")
                    .header("X-Padding", huge_header),
            )
            .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "TRACE",
            send(api.raw(Method::TRACE, "/api/v1/users/me")).await,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];

    // Assert
    for (what, response, status) in answers {
        assert_eq!(response.status(), status, "{what}");
        let headers = response.headers();
        assert_eq!(headers["server"], "nginx", "{what}: no version in Server");
        assert!(!headers.contains_key("x-powered-by"), "{what}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(headers["x-frame-options"], "DENY", "{what}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
        let content_type = header(&response, "content-type").unwrap_or_default();
        let body = response.text().await.expect("a body");
        assert!(
            !body.contains("nginx/"),
            "{what}: a version in the body: {body}"
        );
        if status != StatusCode::OK {
            assert_eq!(content_type, "application/problem+json", "{what}: {body}");
        }
    }
    // The metrics are still there, on the replica's own port.
    let metrics = reqwest::get(format!("http://{}/metrics", gateway.metrics_targets()[0]))
        .await
        .expect("the metrics port answers");
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.expect("a body");
    assert!(text.contains("evergreen_"), "{text}");
}
