//! The traffic itself, as one Goose scenario: every virtual user runs one
//! transaction per iteration, and each run sends exactly one request of an
//! operation drawn from the scenario's weighted mix. A shared budget makes
//! the whole run send exactly `-n` requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goose::goose::Scenario as GooseScenario;
use goose::prelude::*;
use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::scenario::{Operation, Scenario};
use crate::seed::SeededData;
use crate::timeline::{Kind, Timeline};

/// Purchases a virtual user remembers for cancelling.
const REMEMBERED_PURCHASES: usize = 50;

/// Requests sent and failed so far, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
}

/// Everything the virtual users share.
#[derive(Debug)]
pub struct Plan {
    scenario: Scenario,
    data: SeededData,
    operations: Vec<Operation>,
    weights: WeightedIndex<u32>,
    /// Requests not yet claimed by a virtual user.
    budget: AtomicU64,
    /// The run's time limit: no request starts after it.
    deadline: Instant,
    /// `--rate`: the n-th request is sent no earlier than n × this after
    /// the start, whatever the concurrency.
    pace: Option<Duration>,
    requests: u64,
    registered: AtomicU64,
    pub progress: Progress,
    pub timeline: Timeline,
}

impl Plan {
    pub fn new(
        scenario: Scenario,
        data: SeededData,
        requests: u64,
        deadline: Instant,
        rate: Option<f64>,
    ) -> Self {
        let operations: Vec<Operation> = scenario.mix.used().collect();
        let weights = WeightedIndex::new(operations.iter().map(|&o| scenario.mix.weight(o)))
            .expect("validation keeps at least one weight above 0");
        Self {
            scenario,
            data,
            operations,
            weights,
            budget: AtomicU64::new(requests),
            deadline,
            pace: rate.map(|per_second| Duration::from_secs_f64(1.0 / per_second)),
            requests,
            registered: AtomicU64::new(0),
            progress: Progress::default(),
            timeline: Timeline::new(),
        }
    }

    /// Takes one request from the budget, unless it is spent or time is up
    /// (then the whole run stops), and returns when to send it: at once, or
    /// at its slot under `--rate`. Goose clears its kill switch when a run
    /// starts, so a time limit that passed during seeding is caught here too.
    fn claim_one(&self) -> Option<Instant> {
        if Instant::now() >= self.deadline {
            goose::trigger_killswitch("time limit");
            return None;
        }
        let left = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .ok()?;
        let claimed_before = u32::try_from(self.requests - left).unwrap_or(u32::MAX);
        Some(self.pace.map_or_else(Instant::now, |pace| {
            self.timeline.started() + pace * claimed_before
        }))
    }
}

/// One virtual user's state between its requests.
#[derive(Debug, Clone, Default)]
struct Shopper {
    /// Index into the seeded customers, if there are any.
    customer: Option<usize>,
    access_token: String,
    /// The last login was refused or a token expired: log in next.
    must_log_in: bool,
    purchases: Vec<String>,
}

/// The Goose scenario for `plan` (Goose's word; the scenario *file* is
/// `crate::scenario::Scenario`).
pub fn goose_scenario(plan: Arc<Plan>) -> GooseScenario {
    let start_plan = plan.clone();
    let on_start: TransactionFunction = Arc::new(move |user| {
        let plan = start_plan.clone();
        Box::pin(async move {
            let customers = &plan.data.customers;
            let customer =
                (!customers.is_empty()).then(|| user.weighted_users_index % customers.len());
            user.set_session_data(Shopper {
                customer,
                access_token: customer
                    .map(|c| customers[c].access_token.clone())
                    .unwrap_or_default(),
                must_log_in: false,
                purchases: Vec::new(),
            });
            Ok(())
        })
    });
    let act: TransactionFunction = Arc::new(move |user| {
        let plan = plan.clone();
        Box::pin(async move {
            let Some(slot) = plan.claim_one() else {
                return Ok(());
            };
            tokio::time::sleep_until(slot.into()).await;
            let started = Instant::now();
            let sent = one_request(user, &plan).await?;
            plan.timeline
                .record(sent.kind, started.elapsed(), sent.status);
            plan.progress.sent.fetch_add(1, Ordering::Relaxed);
            if !sent.succeeded() {
                plan.progress.failed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    });
    GooseScenario::new("shopper")
        .register_transaction(
            Transaction::new(on_start)
                .set_name("sign in")
                .set_on_start(),
        )
        .register_transaction(Transaction::new(act).set_name("one request"))
}

async fn one_request(user: &mut GooseUser, plan: &Plan) -> Result<Sent, Box<TransactionError>> {
    // Taken out for the request (which borrows the user) and put back after,
    // whatever the request did.
    let mut shopper = std::mem::take(
        user.get_session_data_mut::<Shopper>()
            .expect("set on start"),
    );
    let sent = send_one(user, plan, &mut shopper).await;
    user.set_session_data(shopper);
    sent
}

/// One operation for `shopper`, drawn from the mix (or the sign-in it owes).
async fn send_one(
    user: &mut GooseUser,
    plan: &Plan,
    shopper: &mut Shopper,
) -> Result<Sent, Box<TransactionError>> {
    let operation = if shopper.must_log_in && shopper.customer.is_some() {
        Operation::Login
    } else {
        plan.operations[plan.weights.sample(&mut rand::rng())]
    };
    let sent = match operation {
        Operation::BrowseProducts => {
            let path = browse_path(plan);
            send(user, operation, GooseMethod::Get, &path, None, None).await?
        }
        Operation::ViewProduct => {
            let id = plan
                .data
                .product_ids
                .choose(&mut rand::rng())
                .expect("seeded");
            let path = format!("/api/v1/products/{id}");
            send(user, operation, GooseMethod::Get, &path, None, None).await?
        }
        Operation::Register => {
            let n = plan.registered.fetch_add(1, Ordering::Relaxed);
            let email = format!("loadgen-{}-r{n}@example.com", plan.data.run_id);
            let body = json!({"email": email, "password": "loadgen-password", "name": "Load Test"});
            send(
                user,
                operation,
                GooseMethod::Post,
                "/api/v1/auth/register",
                Some(body),
                None,
            )
            .await?
        }
        Operation::Login => {
            let customer = &plan.data.customers[shopper.customer.expect("validated")];
            let body = json!({"email": customer.email, "password": customer.password});
            let sent = send(
                user,
                operation,
                GooseMethod::Post,
                "/api/v1/auth/login",
                Some(body),
                None,
            )
            .await?;
            if let Some(token) = sent.body.as_ref().and_then(|b| b["access_token"].as_str()) {
                shopper.access_token = token.to_owned();
            }
            // One forced attempt: a refused one (429, 503) must not turn this
            // user into a stream of sign-ins against a server pushing back.
            shopper.must_log_in = false;
            sent
        }
        Operation::Buy => buy(user, plan, shopper).await?,
        Operation::ListOwnPurchases => {
            let token = shopper.access_token.clone();
            send(
                user,
                operation,
                GooseMethod::Get,
                "/api/v1/purchases?limit=20",
                None,
                Some(&token),
            )
            .await?
        }
        Operation::Cancel => match shopper.purchases.pop() {
            None => buy(user, plan, shopper).await?,
            Some(id) => {
                let token = shopper.access_token.clone();
                let path = format!("/api/v1/purchases/{id}/cancel");
                send(
                    user,
                    operation,
                    GooseMethod::Post,
                    &path,
                    None,
                    Some(&token),
                )
                .await?
            }
        },
    };
    // An expired or revoked token: the next request of this user logs in.
    shopper.must_log_in |= operation != Operation::Login && sent.status == Some(401);
    Ok(sent)
}

async fn buy(
    user: &mut GooseUser,
    plan: &Plan,
    shopper: &mut Shopper,
) -> Result<Sent, Box<TransactionError>> {
    let items = basket(plan);
    let token = shopper.access_token.clone();
    let sent = send(
        user,
        Operation::Buy,
        GooseMethod::Post,
        "/api/v1/purchases",
        Some(json!({"items": items})),
        Some(&token),
    )
    .await?;
    if let Some(id) = sent.body.as_ref().and_then(|b| b["id"].as_str()) {
        if shopper.purchases.len() == REMEMBERED_PURCHASES {
            shopper.purchases.remove(0);
        }
        shopper.purchases.push(id.to_owned());
    }
    Ok(sent)
}

/// `GET /products` with the scenario's page size, sometimes by category.
/// (The thread-local generator must not live across an await: the future
/// moves between threads.)
fn browse_path(plan: &Plan) -> String {
    let browse = plan.scenario.browse;
    let mut rng = rand::rng();
    let mut path = format!("/api/v1/products?limit={}", browse.limit);
    if rng.random_range(0..100) < browse.category_filter_percent
        && let Some(category) = plan.data.categories.choose(&mut rng)
    {
        path.push_str(&format!("&category={category}"));
    }
    path
}

/// 1..=max_lines distinct products, each 1..=max_quantity.
fn basket(plan: &Plan) -> Vec<Value> {
    let buy = plan.scenario.buy;
    let mut rng = rand::rng();
    let lines = rng.random_range(1..=buy.max_lines as usize);
    let ids: Vec<&String> = plan
        .data
        .product_ids
        .choose_multiple(&mut rng, lines)
        .collect();
    ids.into_iter()
        .map(|id| json!({"product_id": id, "quantity": rng.random_range(1..=buy.max_quantity)}))
        .collect()
}

/// What one request got back: no status when it never got a response.
#[derive(Debug)]
struct Sent {
    kind: Kind,
    status: Option<u16>,
    /// The JSON body of a 2xx response.
    body: Option<Value>,
}

impl Sent {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends one request named after its operation (Goose groups metrics by
/// `METHOD name`).
async fn send(
    user: &mut GooseUser,
    operation: Operation,
    method: GooseMethod,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Result<Sent, Box<TransactionError>> {
    let kind = if method == GooseMethod::Get {
        Kind::Read
    } else {
        Kind::Write
    };
    let mut builder = user.get_request_builder(&method, path)?;
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if operation == Operation::Buy {
        builder = builder.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(operation.name())
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    let Ok(response) = goose.response else {
        return Ok(Sent {
            kind,
            status: None,
            body: None,
        });
    };
    let status = response.status();
    let body = if status.is_success() {
        response.json::<Value>().await.ok()
    } else {
        None
    };
    Ok(Sent {
        kind,
        status: Some(status.as_u16()),
        body,
    })
}
