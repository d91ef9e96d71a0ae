//! Buying (atomic, at server prices, idempotent), listing, reading and
//! cancelling purchases.

use std::collections::HashSet;
use std::time::Duration;

use evergreen_tests::app::TestStack;
use evergreen_tests::client::{Api, Session, expect, expect_problem, json};
use evergreen_tests::wait;
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    collect_pages, create_product, header, id_of, ids, keys_of, new_key, order, stock_of,
};

/// A stack with an admin and a signed-in customer.
async fn shop() -> (TestStack, Api, Session, Session) {
    let stack = TestStack::start().await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;
    (stack, api, admin, customer)
}

async fn purchases_of(api: &Api, session: &Session) -> Vec<String> {
    ids(&expect(
        api.list_purchases(&session.access_token, "?limit=100")
            .await,
        StatusCode::OK,
    )
    .await)
}

#[tokio::test]
async fn a_purchase_takes_the_stock_at_server_prices_and_answers_with_its_location() {
    // Arrange
    let (_stack, api, admin, customer) = shop().await;
    let tea = create_product(
        &api,
        &admin,
        json!({"name": "Tea", "price_cents": 1299, "stock": 10}),
    )
    .await;
    let cup = create_product(
        &api,
        &admin,
        json!({"name": "Cup", "price_cents": 250, "stock": 4}),
    )
    .await;
    let (tea_id, cup_id) = (id_of(&tea), id_of(&cup));

    // Act
    let response = api
        .purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&tea_id, 2), (&cup_id, 3)]),
        )
        .await;

    // Assert
    let location = header(&response, "location").expect("Location");
    assert_eq!(header(&response, "idempotent-replayed"), None);
    let purchase = expect(response, StatusCode::CREATED).await;
    let id = id_of(&purchase);
    assert_eq!(location, format!("/api/v1/purchases/{id}"));
    let fields = keys_of(&purchase);
    assert_eq!(
        fields,
        [
            "created_at",
            "currency",
            "id",
            "items",
            "status",
            "total_cents",
            "user_id"
        ]
    );
    assert_eq!(purchase["user_id"], customer.user_id.to_string());
    assert_eq!(purchase["total_cents"], 2 * 1299 + 3 * 250);
    assert_eq!(purchase["currency"], "USD");
    assert_eq!(purchase["status"], "completed");
    assert!(
        purchase["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{purchase}"
    );
    let mut items: Vec<Value> = purchase["items"].as_array().expect("items").clone();
    items.sort_by_key(|item| item["name"].as_str().map(str::to_owned));
    assert_eq!(
        items,
        [
            json!({"product_id": cup_id, "name": "Cup", "unit_price_cents": 250, "quantity": 3}),
            json!({"product_id": tea_id, "name": "Tea", "unit_price_cents": 1299, "quantity": 2}),
        ]
    );
    assert_eq!(stock_of(&api, &tea_id).await, 8);
    assert_eq!(stock_of(&api, &cup_id).await, 1);
    let response = api
        .raw(Method::GET, &location)
        .bearer_auth(&customer.access_token)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(expect(response, StatusCode::OK).await, purchase);
}

#[tokio::test]
async fn a_purchase_without_a_valid_idempotency_key_is_refused_and_buys_nothing() {
    // Arrange
    let (_stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 5})).await);
    let body = order(&[(&id, 1)]);

    // Act
    let missing = api.purchase(&customer.access_token, None, &body).await;
    let too_long = api
        .purchase(&customer.access_token, Some(&"k".repeat(256)), &body)
        .await;

    // Assert
    expect_problem(missing, StatusCode::BAD_REQUEST, "idempotency_key_missing").await;
    expect_problem(too_long, StatusCode::BAD_REQUEST, "idempotency_key_invalid").await;
    assert_eq!(stock_of(&api, &id).await, 5);
    assert_eq!(purchases_of(&api, &customer).await, Vec::<String>::new());
}

#[tokio::test]
async fn lines_for_one_product_are_summed_before_the_stock_check() {
    // Arrange
    let (_stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 5, "price_cents": 100})).await);

    // Act
    let refused = api
        .purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&id, 3), (&id, 3)]),
        )
        .await;
    let accepted = api
        .purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&id, 2), (&id, 3)]),
        )
        .await;

    // Assert
    let problem = expect_problem(refused, StatusCode::CONFLICT, "insufficient_stock").await;
    assert_eq!(problem["product_id"], id);
    assert_eq!(problem["available"], 5);
    let purchase = expect(accepted, StatusCode::CREATED).await;
    assert_eq!(
        purchase["items"].as_array().map(Vec::len),
        Some(1),
        "{purchase}"
    );
    assert_eq!(purchase["items"][0]["quantity"], 5);
    assert_eq!(purchase["total_cents"], 500);
    assert_eq!(stock_of(&api, &id).await, 0);
}

#[tokio::test]
async fn a_line_short_of_stock_fails_the_whole_order_and_names_its_product() {
    // Arrange: the first line could be served, the second cannot.
    let (_stack, api, admin, customer) = shop().await;
    let plenty = id_of(&create_product(&api, &admin, json!({"stock": 10})).await);
    let scarce = id_of(&create_product(&api, &admin, json!({"stock": 1})).await);
    let key = new_key();
    let body = order(&[(&plenty, 2), (&scarce, 2)]);

    // Act
    let response = api
        .purchase(&customer.access_token, Some(&key), &body)
        .await;

    // Assert: nothing of the order was taken.
    let problem = expect_problem(response, StatusCode::CONFLICT, "insufficient_stock").await;
    assert_eq!(problem["product_id"], scarce);
    assert_eq!(problem["available"], 1);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&scarce)),
        "{problem}"
    );
    assert_eq!(stock_of(&api, &plenty).await, 10);
    assert_eq!(stock_of(&api, &scarce).await, 1);
    assert_eq!(purchases_of(&api, &customer).await, Vec::<String>::new());
    // The refusal did not use up the key: once restocked, the same request goes through.
    expect(
        api.add_stock(&admin.access_token, &scarce, 1).await,
        StatusCode::OK,
    )
    .await;
    let response = api
        .purchase(&customer.access_token, Some(&key), &body)
        .await;
    assert_eq!(header(&response, "idempotent-replayed"), None);
    expect(response, StatusCode::CREATED).await;
    assert_eq!(stock_of(&api, &plenty).await, 8);
    assert_eq!(stock_of(&api, &scarce).await, 0);
}

#[tokio::test]
async fn invalid_orders_are_refused_and_write_nothing() {
    // Arrange
    let (_stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 2000, "price_cents": 100})).await);
    let key = new_key();
    let unknown = Uuid::new_v4().to_string();
    let cases = [
        (
            order(&[(&id, 1), (&unknown, 1)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            order(&[(&id, 0)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            order(&[(&id, 1001)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            order(&[(&id, 600), (&id, 600)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            order(&[]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (order(&[(&id, -1)]), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            json!({"items": [{"product_id": id, "quantity": 1, "price_cents": 1}]}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"items": [{"product_id": id, "quantity": 1}], "total_cents": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"items": [{"product_id": "not-a-uuid", "quantity": 1}]}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"items": [{"product_id": id, "quantity": "1"}]}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_body"),
    ];

    for (body, status, code) in &cases {
        // Act
        let response = api.purchase(&customer.access_token, Some(&key), body).await;

        // Assert
        assert_eq!(response.status(), *status, "{body}");
        let problem = expect_problem(response, *status, code).await;
        if body["items"][1]["product_id"] == unknown {
            assert_eq!(
                problem["errors"][0]["field"], "items[1].product_id",
                "{problem}"
            );
        }
    }
    assert_eq!(stock_of(&api, &id).await, 2000);
    assert_eq!(purchases_of(&api, &customer).await, Vec::<String>::new());
    // The key was never recorded: a valid order with it is a first purchase.
    let response = api
        .purchase(&customer.access_token, Some(&key), &order(&[(&id, 1000)]))
        .await;
    assert_eq!(header(&response, "idempotent-replayed"), None);
    let purchase = expect(response, StatusCode::CREATED).await;
    assert_eq!(purchase["total_cents"], 100_000);
}

#[tokio::test]
async fn the_same_key_replays_the_original_purchase_and_refuses_another_body() {
    // Arrange
    let (stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 10})).await);
    let other_id = id_of(&create_product(&api, &admin, json!({"stock": 10})).await);
    let key = new_key();
    let body = order(&[(&id, 2)]);
    let original = expect(
        api.purchase(&customer.access_token, Some(&key), &body)
            .await,
        StatusCode::CREATED,
    )
    .await;

    // Act
    let replay = api
        .purchase(&customer.access_token, Some(&key), &body)
        .await;
    let other_body = api
        .purchase(&customer.access_token, Some(&key), &order(&[(&id, 3)]))
        .await;
    let other_product = api
        .purchase(
            &customer.access_token,
            Some(&key),
            &order(&[(&other_id, 2)]),
        )
        .await;

    // Assert
    assert_eq!(
        header(&replay, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&replay, "location"),
        Some(format!("/api/v1/purchases/{}", id_of(&original)))
    );
    assert_eq!(expect(replay, StatusCode::CREATED).await, original);
    expect_problem(
        other_body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    expect_problem(
        other_product,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(stock_of(&api, &id).await, 8, "the stock was taken once");
    assert_eq!(stock_of(&api, &other_id).await, 10);
    assert_eq!(purchases_of(&api, &customer).await, [id_of(&original)]);

    // Keys are per user: another customer's identical key is a new purchase.
    let other = stack.customer().await;
    let response = api.purchase(&other.access_token, Some(&key), &body).await;
    assert_eq!(header(&response, "idempotent-replayed"), None);
    let theirs = expect(response, StatusCode::CREATED).await;
    assert_ne!(id_of(&theirs), id_of(&original));
    assert_eq!(theirs["user_id"], other.user_id.to_string());
    assert_eq!(stock_of(&api, &id).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_make_exactly_one_purchase() {
    // Arrange
    let (_stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 100, "price_cents": 10})).await);
    let key = new_key();
    let body = order(&[(&id, 3)]);

    // Act
    let responses = join_all((0..20).map(|_| {
        let (api, token, key, body) = (
            api.clone(),
            customer.access_token.clone(),
            key.clone(),
            body.clone(),
        );
        async move {
            let response = api.purchase(&token, Some(&key), &body).await;
            let status = response.status();
            let replayed = header(&response, "idempotent-replayed");
            (status, replayed, json(response).await)
        }
    }))
    .await;

    // Assert
    let mut created = Vec::new();
    let mut replayed = Vec::new();
    for (status, replay, body) in &responses {
        match (*status, replay.as_deref()) {
            (StatusCode::CREATED, None) => created.push(id_of(body)),
            (StatusCode::CREATED, Some("true")) => replayed.push(id_of(body)),
            (StatusCode::CONFLICT, None) => {
                assert_eq!(body["code"], "idempotency_key_in_flight", "{body}")
            }
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    println!(
        "20 requests with one key: {} created, {} replayed, {} in flight",
        created.len(),
        replayed.len(),
        responses.len() - created.len() - replayed.len()
    );
    assert_eq!(created.len(), 1, "{responses:?}");
    assert!(replayed.iter().all(|id| *id == created[0]), "{responses:?}");
    assert_eq!(stock_of(&api, &id).await, 97, "the stock was taken once");
    assert_eq!(purchases_of(&api, &customer).await, created);
    // Once settled, the key replays the purchase.
    let response = api
        .purchase(&customer.access_token, Some(&key), &body)
        .await;
    assert_eq!(
        header(&response, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(
        id_of(&expect(response, StatusCode::CREATED).await),
        created[0]
    );
}

/// SPEC: "Keys live 24 h, per user" — with the API's own configuration, not a
/// TTL a test passes to the script.
#[tokio::test]
async fn a_purchase_key_is_kept_24_hours_by_the_shipped_configuration() {
    // Arrange
    let (stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 10})).await);
    let key = new_key();

    // Act
    expect(
        api.purchase(&customer.access_token, Some(&key), &order(&[(&id, 1)]))
            .await,
        StatusCode::CREATED,
    )
    .await;

    // Assert
    let record = stack.keys().idempotency(customer.user_id, &key);
    let mut redis = stack.master_connection().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&record)
        .query_async(&mut redis)
        .await
        .expect("TTL");
    assert!(
        (86_400 - 60..=86_400).contains(&ttl),
        "the key's record lives 24 h: TTL {ttl} s"
    );
}

#[tokio::test]
async fn a_retry_while_the_first_request_is_unconfirmed_gets_409_and_later_the_original() {
    // Arrange: an instance with a 1 s in-flight window, and a purchase whose
    // idempotency record is left "pending", as when the first request's write
    // could not be confirmed (503) or its instance died before answering.
    let mut stack = TestStack::sharing(0).await;
    let mut settings = stack.settings();
    settings.store.idempotency_in_flight_secs = 1;
    stack.spawn_app_with(settings).await;
    let api = stack.api(0);
    let admin = stack.admin().await;
    let customer = stack.customer().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 10})).await);
    let (key, body) = (new_key(), order(&[(&id, 4)]));
    let original = expect(
        api.purchase(&customer.access_token, Some(&key), &body)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let record = stack.keys().idempotency(customer.user_id, &key);
    let mut redis = stack.master_connection().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis();
    // The record is "<state>|<created ms>|<purchase id>|<fingerprint>".
    let settled: String = redis::cmd("GET")
        .arg(&record)
        .query_async(&mut redis)
        .await
        .expect("GET");
    let fields: Vec<&str> = settled.splitn(4, '|').collect();
    assert_eq!(fields[0], "completed", "the 201 settled the record");
    let pending = format!("pending|{now_ms}|{}|{}", fields[2], fields[3]);
    let _: () = redis::cmd("SET")
        .arg(&record)
        .arg(pending)
        .arg("KEEPTTL")
        .query_async(&mut redis)
        .await
        .expect("SET");

    // Act
    let retry = api
        .purchase(&customer.access_token, Some(&key), &body)
        .await;

    // Assert: told to retry, not a second purchase; after the window, the original.
    expect_problem(retry, StatusCode::CONFLICT, "idempotency_key_in_flight").await;
    let replayed = wait::until(
        "the in-flight window to pass and the retry to replay",
        Duration::from_secs(5),
        || async {
            let response = api
                .purchase(&customer.access_token, Some(&key), &body)
                .await;
            (response.status() == StatusCode::CREATED).then_some(response)
        },
    )
    .await;
    assert_eq!(
        header(&replayed, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(expect(replayed, StatusCode::CREATED).await, original);
    assert_eq!(stock_of(&api, &id).await, 6, "the stock was taken once");
    assert_eq!(purchases_of(&api, &customer).await, [id_of(&original)]);
}

#[tokio::test]
async fn customers_list_their_own_purchases_newest_first_page_by_page() {
    // Arrange
    let (stack, api, admin, customer) = shop().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 100})).await);
    let mut mine = Vec::new();
    for quantity in 1..=5 {
        let purchase = api
            .purchase(
                &customer.access_token,
                Some(&new_key()),
                &order(&[(&id, quantity)]),
            )
            .await;
        mine.push(expect(purchase, StatusCode::CREATED).await);
    }
    let other = stack.customer().await;
    expect(
        api.purchase(&other.access_token, Some(&new_key()), &order(&[(&id, 1)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    // Newest first; purchases in the same millisecond are ordered by id, like the index.
    let mut expected: Vec<(String, String)> = mine
        .iter()
        .map(|p| {
            (
                p["created_at"].as_str().expect("created_at").to_owned(),
                id_of(p),
            )
        })
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().rev().map(|(_, id)| id).collect();

    // Act
    let paged = collect_pages("?limit=2", |query| {
        let (api, token) = (api.clone(), customer.access_token.clone());
        async move { api.list_purchases(&token, &query).await }
    })
    .await;
    let for_admin = collect_pages(&format!("?limit=2&user_id={}", customer.user_id), |query| {
        let (api, token) = (api.clone(), admin.access_token.clone());
        async move { api.list_purchases(&token, &query).await }
    })
    .await;

    // Assert
    assert_eq!(paged, expected);
    assert_eq!(paged.iter().collect::<HashSet<_>>().len(), 5);
    assert_eq!(for_admin, expected);
    assert_eq!(
        purchases_of(&api, &admin).await,
        Vec::<String>::new(),
        "the admin bought nothing"
    );
    let first = expect(
        api.list_purchases(&customer.access_token, "?limit=2").await,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a cursor");
    for query in [
        format!("?limit=2&cursor={cursor}&user_id={}", other.user_id),
        "?cursor=garbage".to_owned(),
        "?limit=0".to_owned(),
        "?limit=101".to_owned(),
    ] {
        let token = &admin.access_token;
        expect_problem(
            api.list_purchases(token, &query).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    expect_problem(
        api.list_purchases(&customer.access_token, "?user_id=nope")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn cancelling_restocks_once_and_a_retry_by_the_same_session_gets_the_cancelled_purchase() {
    // Arrange
    let (_stack, api, admin, customer) = shop().await;
    let tea = id_of(&create_product(&api, &admin, json!({"stock": 10})).await);
    let cup = id_of(&create_product(&api, &admin, json!({"stock": 5})).await);
    let purchase = expect(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&tea, 3), (&cup, 1)]),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = id_of(&purchase);
    assert_eq!(
        (stock_of(&api, &tea).await, stock_of(&api, &cup).await),
        (7, 4)
    );

    // Act: cancel, the same session again (a retry after a 503 or a lost
    // answer), then another session of the same customer.
    let first = api.cancel_purchase(&customer.access_token, &id).await;
    let retry = api.cancel_purchase(&customer.access_token, &id).await;
    let elsewhere = api.login_ok(&customer.email, &customer.password).await;
    let other_session = api.cancel_purchase(&elsewhere.access_token, &id).await;

    // Assert
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let cancelled = expect(first, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], id);
    assert_eq!(cancelled["total_cents"], purchase["total_cents"]);
    assert_eq!(
        header(&retry, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(expect(retry, StatusCode::OK).await, cancelled);
    expect_problem(other_session, StatusCode::CONFLICT, "already_cancelled").await;
    assert_eq!(
        (stock_of(&api, &tea).await, stock_of(&api, &cup).await),
        (10, 5)
    );
    let read = expect(
        api.get_purchase(&customer.access_token, &id).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(read["status"], "cancelled");
    expect_problem(
        api.cancel_purchase(&customer.access_token, &Uuid::new_v4().to_string())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
