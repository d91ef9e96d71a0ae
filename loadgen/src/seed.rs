//! Before the load: check the store answers, create the catalog and the
//! customer accounts the scenario asks for, through the public API.
//!
//! Auth routes are rate limited per client address at nginx (429 with
//! `Retry-After`), and sign-ins beyond the API's hashing threads wait, then
//! get 503: seeding honours `Retry-After` and retries, so a scenario with many
//! customers seeds slowly but surely against the default stack.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::scenario::Scenario;

/// Requests in flight while seeding.
const SEED_CONCURRENCY: usize = 8;
/// A preflight or seeding request that takes longer than this is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A GET /products walk of an existing catalog stops after this many.
const MAX_EXISTING_PRODUCTS: usize = 5_000;

/// A customer account and its current access token.
#[derive(Debug, Clone)]
pub struct Customer {
    pub email: String,
    pub password: String,
    pub access_token: String,
}

/// What the traffic works on.
#[derive(Debug)]
pub struct SeededData {
    pub product_ids: Vec<String>,
    pub categories: Vec<String>,
    pub customers: Vec<Customer>,
    /// Tells this run's accounts and SKUs apart from every other run's.
    pub run_id: String,
}

/// Admin credentials, needed only to create products.
#[derive(Debug, Clone)]
pub struct Admin {
    pub email: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "cannot reach the store at {url}: {reason} (is it running? `scripts/up` starts it on http://localhost:8080)"
    )]
    Unreachable { url: String, reason: String },
    #[error("the store at {url} is not ready: GET /health/ready answered {status}")]
    NotReady { url: String, status: StatusCode },
    #[error(
        "seed.products is {0}: creating products needs an admin; pass --admin-email and --admin-password (or ADMIN_EMAIL / ADMIN_PASSWORD, as in .env), or set seed.products to 0 to use the existing catalog"
    )]
    NoAdmin(u32),
    #[error("the catalog is empty and seed.products is 0: the mix needs products to view and buy")]
    EmptyCatalog,
    #[error("{what} failed: {status} {body}")]
    Refused {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{what} failed: {source}")]
    Http {
        what: String,
        source: reqwest::Error,
    },
}

/// Sends a request, retrying as long as the answer says while it is 429
/// (nginx's sign-in brake) or 503 (the API's hashing threads are busy, or a
/// Redis failover is under way). The run's time limit bounds the retries.
async fn send(what: &str, build: impl Fn() -> RequestBuilder) -> Result<Response, SeedError> {
    loop {
        let response = build()
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|source| SeedError::Http {
                what: what.to_owned(),
                source,
            })?;
        if !matches!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            return Ok(response);
        }
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 30);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// The JSON body of a response with the expected status, else `Refused`.
async fn expect(what: &str, response: Response, status: StatusCode) -> Result<Value, SeedError> {
    let actual = response.status();
    let body = response.text().await.unwrap_or_default();
    if actual != status {
        return Err(SeedError::Refused {
            what: what.to_owned(),
            status: actual,
            body,
        });
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// `GET /health/ready`, so a dead or wrong URL fails in seconds with a clear
/// message instead of a run full of connection errors.
pub async fn check_reachable(http: &Client, base_url: &str) -> Result<(), SeedError> {
    let url = format!("{base_url}/health/ready");
    let response = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| SeedError::Unreachable {
            url: base_url.to_owned(),
            reason: describe(&e),
        })?;
    if !response.status().is_success() {
        return Err(SeedError::NotReady {
            url: base_url.to_owned(),
            status: response.status(),
        });
    }
    Ok(())
}

/// The innermost cause of a reqwest error ("Connection refused", not
/// "error sending request").
pub fn describe(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else {
        source.to_string()
    }
}

pub async fn login(
    http: &Client,
    base_url: &str,
    email: &str,
    password: &str,
) -> Result<String, SeedError> {
    let what = format!("logging in {email}");
    let response = send(&what, || {
        http.post(format!("{base_url}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
    })
    .await?;
    let body = expect(&what, response, StatusCode::OK).await?;
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}

pub async fn seed(
    http: &Client,
    base_url: &str,
    scenario: &Scenario,
    admin: Option<&Admin>,
) -> Result<SeededData, SeedError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let product_ids = if scenario.seed.products > 0 {
        let admin = admin.ok_or(SeedError::NoAdmin(scenario.seed.products))?;
        create_products(http, base_url, scenario, admin, &run_id).await?
    } else if scenario.needs_products() {
        let ids = existing_products(http, base_url).await?;
        if ids.is_empty() {
            return Err(SeedError::EmptyCatalog);
        }
        ids
    } else {
        Vec::new()
    };
    let customers = create_customers(http, base_url, scenario.seed.customers, &run_id).await?;
    Ok(SeededData {
        product_ids,
        categories: scenario.seed.categories.clone(),
        customers,
        run_id,
    })
}

async fn create_products(
    http: &Client,
    base_url: &str,
    scenario: &Scenario,
    admin: &Admin,
    run_id: &str,
) -> Result<Vec<String>, SeedError> {
    let token = Arc::new(login(http, base_url, &admin.email, &admin.password).await?);
    let seed = &scenario.seed;
    stream::iter(0..seed.products)
        .map(|n| {
            let token = token.clone();
            let mut rng = rand::rng();
            let body = json!({
                "sku": format!("LOADGEN-{run_id}-{n:05}"),
                "name": format!("Load test item {n} ({run_id})"),
                "description": "Created by loadgen.",
                "price_cents": rng.random_range(seed.price_cents.min..=seed.price_cents.max),
                "currency": "USD",
                "stock": seed.stock_per_product,
                "category": seed.categories[n as usize % seed.categories.len()],
            });
            async move {
                let what = format!("creating product {n}");
                let response = send(&what, || {
                    http.post(format!("{base_url}/api/v1/products"))
                        .bearer_auth(token.as_str())
                        .json(&body)
                })
                .await?;
                let product = expect(&what, response, StatusCode::CREATED).await?;
                Ok(product["id"].as_str().unwrap_or_default().to_owned())
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect()
        .await
}

/// Ids of the products already in the catalog (the first pages of it).
async fn existing_products(http: &Client, base_url: &str) -> Result<Vec<String>, SeedError> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base_url}/api/v1/products?limit=100");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = send("listing the catalog", || http.get(&url)).await?;
        let page = expect("listing the catalog", response, StatusCode::OK).await?;
        ids.extend(
            page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["stock"].as_i64().unwrap_or(0) > 0)
                .filter_map(|p| p["id"].as_str().map(str::to_owned)),
        );
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || ids.len() >= MAX_EXISTING_PRODUCTS {
            return Ok(ids);
        }
    }
}

async fn create_customers(
    http: &Client,
    base_url: &str,
    count: u32,
    run_id: &str,
) -> Result<Vec<Customer>, SeedError> {
    let password = format!("loadgen-{}", uuid::Uuid::new_v4().simple());
    stream::iter(0..count)
        .map(|n| {
            let email = format!("loadgen-{run_id}-{n}@example.com");
            let password = password.clone();
            async move {
                register(http, base_url, &email, &password).await?;
                let access_token = login(http, base_url, &email, &password).await?;
                Ok(Customer {
                    email,
                    password,
                    access_token,
                })
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect()
        .await
}

async fn register(
    http: &Client,
    base_url: &str,
    email: &str,
    password: &str,
) -> Result<(), SeedError> {
    let what = format!("registering {email}");
    let response = send(&what, || {
        http.post(format!("{base_url}/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": "Load Test"}))
    })
    .await?;
    expect(&what, response, StatusCode::CREATED).await?;
    Ok(())
}
