use evergreen_tests::app::TestStack;
use evergreen_tests::client::expect;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_customer_can_register_log_in_and_buy() {
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let product = api.new_product(&admin, 1299, 5).await;
    let customer = stack.customer().await;
    let id = product["id"].as_str().unwrap_or_default();
    let body = json!({"items": [{"product_id": id, "quantity": 2}]});
    let purchase = expect(
        api.purchase(&customer.access_token, Some("k1"), &body)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(purchase["total_cents"], 2598, "{purchase}");
    let product = expect(api.get_product(id).await, StatusCode::OK).await;
    assert_eq!(product["stock"], 3);
}
