//! Small helpers the functional modules share: reading headers and ids,
//! paging through lists, and the current stock of a product.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, Session, expect};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// A header as text, if present.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `id` of a JSON object, as text.
pub fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_owned()
}

/// The ids of a page's `items`, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(id_of)
        .collect()
}

/// A fresh idempotency key.
pub fn new_key() -> String {
    Uuid::new_v4().to_string()
}

/// Sends every page of a list (`fetch(cursor_query)`), following `next_cursor`
/// until it is null, and returns the ids in the order they came.
pub async fn collect_pages<F, Fut>(query: &str, fetch: F) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    collect_pages_from(query, None, fetch).await
}

/// Like [`collect_pages`], starting at `cursor` (a `next_cursor` seen earlier).
pub async fn collect_pages_from<F, Fut>(
    query: &str,
    mut cursor: Option<String>,
    mut fetch: F,
) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let separator = if query.is_empty() { "?" } else { "&" };
    let mut collected = Vec::new();
    for _ in 0..1000 {
        let full = match &cursor {
            None => query.to_owned(),
            Some(cursor) => format!("{query}{separator}cursor={cursor}"),
        };
        let page = expect(fetch(full).await, StatusCode::OK).await;
        collected.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                return collected;
            }
        }
    }
    panic!("a list did not end after 1000 pages");
}

/// Every product the public catalog lists for `query` (e.g. `?sort=price`).
pub async fn catalog(api: &Api, query: &str) -> Vec<String> {
    collect_pages(query, |q| {
        let api = api.clone();
        async move { api.list_products(&q).await }
    })
    .await
}

/// The rest of a catalog walk, from `cursor` on.
pub async fn catalog_from(api: &Api, query: &str, cursor: &str) -> Vec<String> {
    collect_pages_from(query, Some(cursor.to_owned()), |q| {
        let api = api.clone();
        async move { api.list_products(&q).await }
    })
    .await
}

/// Redis HA, one API instance, and its bootstrap admin signed in.
pub async fn admin_stack() -> (TestStack, Api, Session) {
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    (stack, api, admin)
}

/// The field names of a JSON object, sorted.
pub fn keys_of(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// The stock of a product as the API reports it.
pub async fn stock_of(api: &Api, product_id: &str) -> i64 {
    let product = expect(api.get_product(product_id).await, StatusCode::OK).await;
    product["stock"]
        .as_i64()
        .unwrap_or_else(|| panic!("no stock in {product}"))
}

/// A test product with `fields` overriding the defaults (see
/// [`Api::new_product_with`]).
pub async fn create_product(api: &Api, admin: &Session, fields: Value) -> Value {
    api.new_product_with(admin, fields).await
}

/// The body of an order of `(product id, quantity)` lines.
pub fn order(lines: &[(&str, i64)]) -> Value {
    json!({
        "items": lines
            .iter()
            .map(|(product_id, quantity)| json!({"product_id": product_id, "quantity": quantity}))
            .collect::<Vec<_>>()
    })
}

/// The claims of a JWT, read without checking its signature.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}

/// The value of the sample `name{labels}` in a Prometheus text exposition,
/// where every label in `labels` must be present.
pub fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// What a metrics endpoint (`http://127.0.0.1:<metrics port>/metrics`) serves now.
pub async fn metrics_at(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("the metrics port answers")
        .text()
        .await
        .expect("a body")
}
