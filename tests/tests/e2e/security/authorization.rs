//! The authorization matrix of every route of the API: anonymous callers,
//! customers, another customer, and admins; and mass assignment of fields
//! that only the server sets.

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, Session, expect, expect_problem};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::{catalog, id_of, new_key, order, stock_of};

/// One request of the matrix.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn route(method: Method, path: impl Into<String>, body: Option<Value>) -> Route {
    Route {
        method,
        path: path.into(),
        body,
    }
}

impl Route {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Sends it, with a bearer token if given. Every request carries an
    /// `Idempotency-Key` and an `If-Match: *` so that only the caller decides.
    async fn send(&self, api: &Api, token: Option<&str>) -> Response {
        let mut builder = api
            .raw(self.method.clone(), &format!("/api/v1{}", self.path))
            .header("Idempotency-Key", new_key())
            .header("If-Match", "*");
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = &self.body {
            builder = builder.json(body);
        }
        builder.send().await.expect("the API answers")
    }
}

/// A catalog with one product and a customer who bought it once.
struct World {
    stack: TestStack,
    api: Api,
    admin: Session,
    owner: Session,
    product_id: String,
    purchase_id: String,
}

impl World {
    async fn new() -> Self {
        let stack = TestStack::start().await;
        let api = stack.api(0);
        let admin = stack.admin().await;
        let owner = stack.customer().await;
        let product_id = id_of(&api.new_product(&admin, 500, 10).await);
        let purchase = expect(
            api.purchase(
                &owner.access_token,
                Some(&new_key()),
                &order(&[(&product_id, 1)]),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        Self {
            stack,
            api,
            admin,
            owner,
            purchase_id: id_of(&purchase),
            product_id,
        }
    }

    /// Every route that needs the admin role.
    fn admin_routes(&self) -> Vec<Route> {
        let (product, user) = (&self.product_id, self.owner.user_id);
        vec![
            route(Method::GET, "/users", None),
            route(Method::GET, format!("/users/{user}"), None),
            route(
                Method::PATCH,
                format!("/users/{user}"),
                Some(json!({"role": "admin"})),
            ),
            route(
                Method::POST,
                "/products",
                Some(json!({
                    "sku": format!("SKU-{}", uuid::Uuid::new_v4().simple()), "name": "Intruder",
                    "description": "", "price_cents": 1, "currency": "USD", "stock": 1, "category": "test",
                })),
            ),
            route(
                Method::PATCH,
                format!("/products/{product}"),
                Some(json!({"price_cents": 1})),
            ),
            route(
                Method::POST,
                format!("/products/{product}/stock"),
                Some(json!({"delta": 100})),
            ),
            route(Method::DELETE, format!("/products/{product}"), None),
        ]
    }

    /// Every route that needs a signed-in caller of any role.
    fn signed_in_routes(&self) -> Vec<Route> {
        let (product, purchase) = (&self.product_id, &self.purchase_id);
        vec![
            route(Method::POST, "/auth/logout", None),
            route(Method::GET, "/users/me", None),
            route(Method::PATCH, "/users/me", Some(json!({"name": "Mallory"}))),
            route(
                Method::POST,
                "/purchases",
                Some(order(&[(product.as_str(), 1)])),
            ),
            route(Method::GET, "/purchases", None),
            route(Method::GET, format!("/purchases/{purchase}"), None),
            route(Method::POST, format!("/purchases/{purchase}/cancel"), None),
        ]
    }

    /// The product and the purchase as they were set up.
    async fn assert_untouched(&self) {
        let product = expect(self.api.get_product(&self.product_id).await, StatusCode::OK).await;
        assert_eq!(product["stock"], 9, "{product}");
        assert_eq!(product["price_cents"], 500, "{product}");
        assert_eq!(product["archived"], false, "{product}");
        let purchase = expect(
            self.api
                .get_purchase(&self.admin.access_token, &self.purchase_id)
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(purchase["status"], "completed", "{purchase}");
        let owner = expect(
            self.api
                .get_user(&self.admin.access_token, &self.owner.user_id.to_string())
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(owner["role"], "customer");
        assert_eq!(owner["name"], "Test Customer");
        assert_eq!(catalog(&self.api, "").await, [self.product_id.as_str()]);
    }
}

#[tokio::test]
async fn anonymous_callers_get_401_on_every_protected_route_and_can_browse_and_sign_up() {
    // Arrange
    let world = World::new().await;
    let api = &world.api;
    let protected: Vec<Route> = world
        .admin_routes()
        .into_iter()
        .chain(world.signed_in_routes())
        .collect();

    for route in &protected {
        // Act
        let response = route.send(api, None).await;

        // Assert
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            route.name()
        );
        expect_problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    world.assert_untouched().await;

    // The public routes answer without credentials.
    let email = format!("anon-{}@example.com", uuid::Uuid::new_v4().simple());
    let public = [
        (route(Method::GET, "/products", None), StatusCode::OK),
        (
            route(Method::GET, format!("/products/{}", world.product_id), None),
            StatusCode::OK,
        ),
        (
            route(
                Method::POST,
                "/auth/register",
                Some(json!({"email": email, "password": "anonymous-1", "name": "Anon"})),
            ),
            StatusCode::CREATED,
        ),
        (
            route(
                Method::POST,
                "/auth/login",
                Some(json!({"email": email, "password": "anonymous-1"})),
            ),
            StatusCode::OK,
        ),
        (
            route(
                Method::POST,
                "/auth/refresh",
                Some(json!({"refresh_token": world.owner.refresh_token})),
            ),
            StatusCode::OK,
        ),
    ];
    for (route, status) in &public {
        let response = route.send(api, None).await;
        expect(response, *status).await;
    }
}

#[tokio::test]
async fn customers_get_403_on_every_admin_route_and_change_nothing() {
    // Arrange
    let world = World::new().await;
    let customer = world.stack.customer().await;

    for route in world.admin_routes() {
        // Act
        let response = route.send(&world.api, Some(&customer.access_token)).await;

        // Assert
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{}", route.name());
        expect_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    world.assert_untouched().await;
}

#[tokio::test]
async fn a_customer_cannot_see_cancel_or_list_another_customers_purchases() {
    // Arrange
    let world = World::new().await;
    let (api, other) = (&world.api, world.stack.customer().await);
    let owner_id = world.owner.user_id.to_string();

    // Act
    let get = api
        .get_purchase(&other.access_token, &world.purchase_id)
        .await;
    let cancel = api
        .cancel_purchase(&other.access_token, &world.purchase_id)
        .await;
    let list = api
        .list_purchases(&other.access_token, &format!("?user_id={owner_id}"))
        .await;
    let own = api.list_purchases(&other.access_token, "").await;
    let own_by_id = api
        .list_purchases(&other.access_token, &format!("?user_id={}", other.user_id))
        .await;

    // Assert: 404 (not 403) hides that the purchase exists.
    let not_found = expect_problem(get, StatusCode::NOT_FOUND, "not_found").await;
    let unknown = expect_problem(
        api.get_purchase(&other.access_token, &uuid::Uuid::new_v4().to_string())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        not_found, unknown,
        "someone else's purchase looks like no purchase"
    );
    expect_problem(cancel, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(list, StatusCode::FORBIDDEN, "forbidden").await;
    let own = expect(own, StatusCode::OK).await;
    assert_eq!(own["items"], json!([]), "{own}");
    expect(own_by_id, StatusCode::OK).await;
    world.assert_untouched().await;
    // The owner sees it.
    expect(
        api.get_purchase(&world.owner.access_token, &world.purchase_id)
            .await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn admins_may_use_every_route_including_other_users_purchases() {
    // Arrange
    let world = World::new().await;
    let (api, admin) = (&world.api, &world.admin);
    let owner_id = world.owner.user_id.to_string();

    // Act + Assert: the admin-only routes (DELETE last: it archives the product).
    for route in world.admin_routes() {
        let response = route.send(api, Some(&admin.access_token)).await;
        let status = response.status();
        let body = expect(response, status).await;
        assert!(
            status.is_success(),
            "{} answered {status}: {body}",
            route.name()
        );
    }
    let product = expect(api.get_product(&world.product_id).await, StatusCode::OK).await;
    assert_eq!(
        (product["price_cents"].clone(), product["archived"].clone()),
        (json!(1), json!(true))
    );

    // Another user's purchases: list, read, cancel.
    let listed = expect(
        api.list_purchases(&admin.access_token, &format!("?user_id={owner_id}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(crate::support::ids(&listed), [world.purchase_id.as_str()]);
    let read = expect(
        api.get_purchase(&admin.access_token, &world.purchase_id)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["user_id"], owner_id);
    let cancelled = expect(
        api.cancel_purchase(&admin.access_token, &world.purchase_id)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(stock_of(api, &world.product_id).await, 110);

    // The signed-in routes work for an admin too, logout last.
    let mut routes: Vec<Route> = world
        .signed_in_routes()
        .into_iter()
        .filter(|r| {
            r.method == Method::GET || r.path.starts_with("/users/me") || r.path == "/auth/logout"
        })
        .collect();
    routes.sort_by_key(|r| r.path == "/auth/logout");
    assert_eq!(routes.len(), 5);
    for route in routes {
        let response = route.send(api, Some(&admin.access_token)).await;
        let status = response.status();
        assert!(status.is_success(), "{} answered {status}", route.name());
    }
    expect(api.me(&admin.access_token).await, StatusCode::UNAUTHORIZED).await;
    // PATCH /users/{id} above promoted the owner.
    let admin = world.stack.admin().await;
    let owner = expect(
        api.get_user(&admin.access_token, &owner_id).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(owner["role"], "admin");
}

#[tokio::test]
async fn fields_only_the_server_sets_are_refused_in_every_body_and_change_nothing() {
    // Arrange
    let world = World::new().await;
    let (api, admin, owner) = (&world.api, &world.admin, &world.owner);
    let (product, user) = (&world.product_id, owner.user_id);
    let email = format!("mallory-{}@example.com", uuid::Uuid::new_v4().simple());
    let registration = json!({"email": email, "password": "mallory-password", "name": "Mallory"});
    let with = |base: &Value, field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let new_product = json!({"sku": "MASS-1", "name": "Mass", "description": "", "price_cents": 1,
                             "currency": "USD", "stock": 1, "category": "test"});
    let mut attempts: Vec<(Route, Option<&str>)> = Vec::new();
    for (field, value) in [
        ("role", json!("admin")),
        ("id", json!(uuid::Uuid::new_v4())),
        ("created_at", json!("2000-01-01T00:00:00Z")),
        ("disabled", json!(false)),
        (
            "password_hash",
            json!("$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA"),
        ),
    ] {
        attempts.push((
            route(
                Method::POST,
                "/auth/register",
                Some(with(&registration, field, value.clone())),
            ),
            None,
        ));
        attempts.push((
            route(
                Method::PATCH,
                "/users/me",
                Some(json!({"name": "Mallory", field: value.clone()})),
            ),
            Some(&owner.access_token),
        ));
    }
    for (field, value) in [
        ("email", json!("other@example.com")),
        ("id", json!(uuid::Uuid::new_v4())),
        ("created_at", json!("2000-01-01T00:00:00Z")),
        ("password_hash", json!("x")),
    ] {
        attempts.push((
            route(
                Method::PATCH,
                format!("/users/{user}"),
                Some(json!({"role": "admin", field: value})),
            ),
            Some(&admin.access_token),
        ));
    }
    for (field, value) in [
        ("id", json!(uuid::Uuid::new_v4())),
        ("created_at", json!("2000-01-01T00:00:00Z")),
        ("updated_at", json!("2000-01-01T00:00:00Z")),
        ("archived", json!(true)),
        ("version", json!(7)),
    ] {
        attempts.push((
            route(
                Method::POST,
                "/products",
                Some(with(&new_product, field, value.clone())),
            ),
            Some(&admin.access_token),
        ));
        attempts.push((
            route(
                Method::PATCH,
                format!("/products/{product}"),
                Some(json!({"price_cents": 1, field: value})),
            ),
            Some(&admin.access_token),
        ));
    }
    attempts.push((
        route(
            Method::PATCH,
            format!("/products/{product}"),
            Some(json!({"stock": 1_000_000})),
        ),
        Some(&admin.access_token),
    ));
    for line_field in ["unit_price_cents", "price_cents", "name"] {
        attempts.push((
            route(
                Method::POST,
                "/purchases",
                Some(json!({"items": [{"product_id": product, "quantity": 1, line_field: 1}]})),
            ),
            Some(&owner.access_token),
        ));
    }
    for (field, value) in [
        ("total_cents", json!(1)),
        ("user_id", json!(uuid::Uuid::new_v4())),
        ("status", json!("cancelled")),
        ("id", json!(uuid::Uuid::new_v4())),
    ] {
        attempts.push((
            route(
                Method::POST,
                "/purchases",
                Some(json!({"items": [{"product_id": product, "quantity": 1}], field: value})),
            ),
            Some(&owner.access_token),
        ));
    }

    for (route, token) in &attempts {
        // Act
        let response = route.send(api, *token).await;

        // Assert: an unknown field is a 400 naming it.
        let body = expect_problem(response, StatusCode::BAD_REQUEST, "invalid_body").await;
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("unknown field")),
            "{}: {body}",
            route.name()
        );
    }
    world.assert_untouched().await;
    expect_problem(
        api.login(&email, "mallory-password").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let purchases = expect(
        api.list_purchases(&owner.access_token, "").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        crate::support::ids(&purchases),
        [world.purchase_id.as_str()]
    );
    assert!(attempts.len() >= 30, "{} attempts", attempts.len());
}
