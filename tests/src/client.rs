//! A thin HTTP client with one method per endpoint, returning the raw response
//! so tests can assert status, headers and body.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Api {
    base_url: String,
    http: reqwest::Client,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: Uuid,
    pub email: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// Reads a JSON body, panicking with the body text if it is not JSON.
pub async fn json(response: Response) -> Value {
    let text = response.text().await.expect("a readable body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"))
}

/// Asserts the status, returning the JSON body; prints the body on mismatch.
pub async fn expect(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("a readable body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Asserts an error response: status, problem+json media type and `code`.
pub async fn expect_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = expect(response, status).await;
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "body: {body}"
    );
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["status"], status.as_u16(), "body: {body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks `{field}`: {body}");
    }
    body
}

/// `expect(response, status)`, or an error to try again on nginx's 429.
async fn unless_throttled(response: Response, status: StatusCode) -> Result<Value, String> {
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        return Err("429 from nginx".to_owned());
    }
    Ok(expect(response, status).await)
}

impl Api {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a client can be built");
        Self {
            base_url: base_url.to_owned(),
            http,
        }
    }

    /// A client whose connections come from loopback address 127.0.0.`last`:
    /// to the API (or nginx) it is another client address.
    pub fn from_address(base_url: &str, last: u8) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127, 0, 0, last,
            )))
            .build()
            .expect("a client can be built");
        Self {
            base_url: base_url.to_owned(),
            http,
        }
    }

    pub fn raw(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
    }

    /// The served OpenAPI document (`GET /api/v1/openapi.json`, 200).
    pub async fn openapi_document(&self) -> Value {
        expect(
            self.raw(Method::GET, "/api/v1/openapi.json")
                .send()
                .await
                .expect("answers"),
            StatusCode::OK,
        )
        .await
    }

    fn authed(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.raw(method, &format!("/api/v1{path}"))
            .bearer_auth(token)
    }

    async fn send(builder: RequestBuilder) -> Response {
        builder.send().await.expect("the API answers")
    }

    // --- auth ---
    pub async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        Self::send(
            self.raw(Method::POST, "/api/v1/auth/register")
                .json(&json!({"email": email, "password": password, "name": name})),
        )
        .await
    }
    pub async fn login(&self, email: &str, password: &str) -> Response {
        Self::send(
            self.raw(Method::POST, "/api/v1/auth/login")
                .json(&json!({"email": email, "password": password})),
        )
        .await
    }
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        Self::send(
            self.raw(Method::POST, "/api/v1/auth/refresh")
                .json(&json!({"refresh_token": refresh_token})),
        )
        .await
    }
    pub async fn logout(&self, token: &str) -> Response {
        Self::send(self.authed(Method::POST, "/auth/logout", token)).await
    }

    // --- users ---
    pub async fn me(&self, token: &str) -> Response {
        Self::send(self.authed(Method::GET, "/users/me", token)).await
    }
    pub async fn update_me(&self, token: &str, body: &Value) -> Response {
        Self::send(self.authed(Method::PATCH, "/users/me", token).json(body)).await
    }
    pub async fn list_users(&self, token: &str, query: &str) -> Response {
        Self::send(self.authed(Method::GET, &format!("/users{query}"), token)).await
    }
    pub async fn get_user(&self, token: &str, id: &str) -> Response {
        Self::send(self.authed(Method::GET, &format!("/users/{id}"), token)).await
    }
    pub async fn update_user(&self, token: &str, id: &str, body: &Value) -> Response {
        Self::send(
            self.authed(Method::PATCH, &format!("/users/{id}"), token)
                .json(body),
        )
        .await
    }

    // --- products ---
    pub async fn list_products(&self, query: &str) -> Response {
        Self::send(self.raw(Method::GET, &format!("/api/v1/products{query}"))).await
    }
    pub async fn get_product(&self, id: &str) -> Response {
        Self::send(self.raw(Method::GET, &format!("/api/v1/products/{id}"))).await
    }
    pub async fn create_product(&self, token: &str, body: &Value) -> Response {
        Self::send(self.authed(Method::POST, "/products", token).json(body)).await
    }
    pub async fn update_product(
        &self,
        token: &str,
        id: &str,
        if_match: Option<&str>,
        body: &Value,
    ) -> Response {
        let mut builder = self
            .authed(Method::PATCH, &format!("/products/{id}"), token)
            .json(body);
        if let Some(etag) = if_match {
            builder = builder.header("If-Match", etag);
        }
        Self::send(builder).await
    }
    /// A stock delta under a fresh `Idempotency-Key`.
    pub async fn add_stock(&self, token: &str, id: &str, delta: i64) -> Response {
        self.add_stock_with_key(token, id, delta, &uuid::Uuid::new_v4().to_string())
            .await
    }
    pub async fn add_stock_with_key(
        &self,
        token: &str,
        id: &str,
        delta: i64,
        key: &str,
    ) -> Response {
        Self::send(
            self.authed(Method::POST, &format!("/products/{id}/stock"), token)
                .header("Idempotency-Key", key)
                .json(&json!({"delta": delta})),
        )
        .await
    }
    pub async fn archive_product(&self, token: &str, id: &str) -> Response {
        Self::send(self.authed(Method::DELETE, &format!("/products/{id}"), token)).await
    }

    // --- purchases ---
    pub async fn purchase(
        &self,
        token: &str,
        idempotency_key: Option<&str>,
        body: &Value,
    ) -> Response {
        let mut builder = self.authed(Method::POST, "/purchases", token).json(body);
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        Self::send(builder).await
    }
    pub async fn list_purchases(&self, token: &str, query: &str) -> Response {
        Self::send(self.authed(Method::GET, &format!("/purchases{query}"), token)).await
    }
    pub async fn get_purchase(&self, token: &str, id: &str) -> Response {
        Self::send(self.authed(Method::GET, &format!("/purchases/{id}"), token)).await
    }
    pub async fn cancel_purchase(&self, token: &str, id: &str) -> Response {
        Self::send(self.authed(Method::POST, &format!("/purchases/{id}/cancel"), token)).await
    }

    // --- helpers built on the endpoints ---
    /// Every item of a paginated list (`path` under `/api/v1`, with or
    /// without a query), following `next_cursor` 100 items at a time.
    pub async fn all_pages(&self, token: &str, path: &str) -> Vec<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let url = format!("{path}{separator}limit=100{cursor}");
            let page = expect(
                Self::send(self.authed(Method::GET, &url, token)).await,
                StatusCode::OK,
            )
            .await;
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return items,
            }
        }
    }

    /// Polls `/health/ready` until it answers 2xx, or panics after `deadline`.
    pub async fn wait_until_ready(&self, deadline: std::time::Duration) {
        crate::wait::until("the API to report ready", deadline, || async {
            let response = self.raw(Method::GET, "/health/ready").send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    pub async fn login_ok(&self, email: &str, password: &str) -> Session {
        let tokens = expect(self.login(email, password).await, StatusCode::OK).await;
        self.session(email, password, &tokens).await
    }

    /// The session a sign-in answered with `tokens` (its user id from /users/me).
    pub async fn session(&self, email: &str, password: &str, tokens: &Value) -> Session {
        let access_token = tokens["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        let me = expect(self.me(&access_token).await, StatusCode::OK).await;
        Session {
            user_id: me["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("user id"),
            email: email.to_owned(),
            password: password.to_owned(),
            access_token,
            refresh_token: tokens["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }

    /// Registers a fresh customer and signs it in.
    pub async fn new_customer(&self) -> Session {
        let email = format!("customer-{}@example.com", Uuid::new_v4().simple());
        let password = "customer-password-1";
        expect(
            self.register(&email, password, "Test Customer").await,
            StatusCode::CREATED,
        )
        .await;
        self.login_ok(&email, password).await
    }

    /// A fresh customer registered and signed in through nginx, which allows
    /// 2 sign-ins or registrations a second per address (bursts of 10): like
    /// a polite client, it tries again while nginx answers 429.
    pub async fn new_customer_through_nginx(&self) -> Session {
        let email = format!("buyer-{}@example.com", Uuid::new_v4().simple());
        let password = "buyer-password-1";
        crate::wait::until(
            "nginx to accept a registration",
            std::time::Duration::from_secs(30),
            || async {
                unless_throttled(
                    self.register(&email, password, "Buyer").await,
                    StatusCode::CREATED,
                )
                .await
            },
        )
        .await;
        self.login_through_nginx(&email, password).await
    }

    /// Signs in through nginx, trying again while it answers 429.
    pub async fn login_through_nginx(&self, email: &str, password: &str) -> Session {
        let tokens = crate::wait::until(
            "nginx to accept a sign-in",
            std::time::Duration::from_secs(30),
            || async { unless_throttled(self.login(email, password).await, StatusCode::OK).await },
        )
        .await;
        self.session(email, password, &tokens).await
    }

    /// Creates a product as `admin` and returns its JSON.
    pub async fn new_product(&self, admin: &Session, price_cents: i64, stock: i64) -> Value {
        self.new_product_with(admin, json!({"price_cents": price_cents, "stock": stock}))
            .await
    }

    /// Creates a test product (1000 cents, 10 in stock, category `test`, a
    /// fresh SKU) with `fields` overriding those, and returns its JSON.
    pub async fn new_product_with(&self, admin: &Session, fields: Value) -> Value {
        let sku = format!("SKU-{}", Uuid::new_v4().simple());
        let mut body = json!({
            "sku": sku, "name": format!("Product {sku}"), "description": "A test product",
            "price_cents": 1000, "currency": "USD", "stock": 10, "category": "test",
        });
        for (key, value) in fields.as_object().expect("fields are an object") {
            body[key] = value.clone();
        }
        expect(
            self.create_product(&admin.access_token, &body).await,
            StatusCode::CREATED,
        )
        .await
    }
}
