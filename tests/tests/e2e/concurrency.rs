//! Stock under contention: many buyers, two API instances, one product.

use std::collections::HashMap;

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Session, json};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

const STOCK: i64 = 50;
const ATTEMPTS: usize = 500;
const BUYERS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_buyers_on_two_instances_take_exactly_the_stock() {
    // Arrange: two instances, one product with 50 units, ten signed-in buyers.
    let stack = TestStack::sharing(2).await;
    let admin = stack.admin().await;
    let product = stack.api(0).new_product(&admin, 250, STOCK).await;
    let product_id = product["id"].as_str().expect("id").to_owned();
    let buyers: Vec<Session> = join_all((0..BUYERS).map(|i| {
        let api = stack.api(i % 2);
        async move { api.new_customer().await }
    }))
    .await;

    // Act: 500 single-unit purchases at once, alternating between the instances.
    let body = json!({"items": [{"product_id": product_id, "quantity": 1}]});
    let apis = [stack.api(0), stack.api(1)];
    let started = std::time::Instant::now();
    let responses = join_all((0..ATTEMPTS).map(|i| {
        let api = apis[i % 2].clone();
        let buyer = buyers[i % BUYERS].clone();
        let body = body.clone();
        async move {
            let response = api
                .purchase(
                    &buyer.access_token,
                    Some(&uuid::Uuid::new_v4().to_string()),
                    &body,
                )
                .await;
            let status = response.status();
            (status, json(response).await)
        }
    }))
    .await;
    let elapsed = started.elapsed();

    // Assert: exactly the stock was sold, everyone else was told why, nothing failed.
    let mut by_status: HashMap<StatusCode, usize> = HashMap::new();
    for (status, _) in &responses {
        *by_status.entry(*status).or_default() += 1;
    }
    println!(
        "{ATTEMPTS} concurrent purchases in {:.2} s: {by_status:?}",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        by_status.get(&StatusCode::CREATED).copied(),
        Some(STOCK as usize),
        "{by_status:?}"
    );
    assert_eq!(
        by_status.get(&StatusCode::CONFLICT).copied(),
        Some(ATTEMPTS - STOCK as usize),
        "{by_status:?}"
    );
    let sold: i64 = responses
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body["items"][0]["quantity"].as_i64().expect("quantity"))
        .sum();
    assert_eq!(sold, STOCK);
    for (status, body) in &responses {
        if *status == StatusCode::CONFLICT {
            assert_eq!(body["code"], "insufficient_stock", "{body}");
            assert_eq!(body["product_id"], product_id.as_str());
            assert!(
                body["available"].as_i64().expect("available") >= 0,
                "{body}"
            );
        }
    }
    let product = json(stack.api(1).get_product(&product_id).await).await;
    assert_eq!(product["stock"], 0, "{product}");

    // The purchases recorded in Redis account for every unit taken, no more.
    let mut recorded = 0;
    for buyer in &buyers {
        let page = json(
            stack
                .api(0)
                .list_purchases(&buyer.access_token, "?limit=100")
                .await,
        )
        .await;
        recorded += page["items"].as_array().expect("items").len() as i64;
    }
    assert_eq!(recorded, STOCK);
}
