//! The catalog: creating, reading, listing (sorts, filters, cursors),
//! optimistic-concurrency updates, stock moves and archiving.

use std::collections::HashSet;

use evergreen_tests::client::{Api, expect, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    admin_stack, catalog, catalog_from, create_product, header, id_of, ids, keys_of, new_key,
    order, stock_of,
};

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Ids of `products` in the order `-created` lists them: newest first, ties
/// (same millisecond) broken by id, as the index does.
fn newest_first(products: &[Value]) -> Vec<String> {
    let mut keyed: Vec<(String, String)> = products
        .iter()
        .map(|p| {
            (
                p["created_at"].as_str().expect("created_at").to_owned(),
                id_of(p),
            )
        })
        .collect();
    keyed.sort();
    keyed.reverse();
    keyed.into_iter().map(|(_, id)| id).collect()
}

async fn product_with_etag(api: &Api, id: &str) -> (Value, String) {
    let response = api.get_product(id).await;
    let etag = header(&response, "etag").expect("GET answers with an ETag");
    (expect(response, StatusCode::OK).await, etag)
}

#[tokio::test]
async fn an_admin_creates_a_product_with_location_and_etag_and_anyone_reads_it() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let body = json!({
        "sku": "TEA-GREEN-100G", "name": "Sencha green tea", "description": "100 g",
        "price_cents": 1299, "currency": "USD", "stock": 40, "category": "tea",
    });

    // Act
    let response = api.create_product(&admin.access_token, &body).await;

    // Assert
    let location = header(&response, "location").expect("Location");
    let etag = header(&response, "etag").expect("ETag");
    let created = expect(response, StatusCode::CREATED).await;
    let id = id_of(&created);
    assert!(id.parse::<Uuid>().is_ok(), "{id}");
    assert_eq!(location, format!("/api/v1/products/{id}"));
    let fields = keys_of(&created);
    assert_eq!(
        fields,
        [
            "archived",
            "category",
            "created_at",
            "currency",
            "description",
            "id",
            "name",
            "price_cents",
            "sku",
            "stock",
            "updated_at"
        ]
    );
    for (field, value) in body.as_object().expect("object") {
        assert_eq!(&created[field], value, "{field}");
    }
    assert_eq!(created["archived"], false);
    let response = api
        .raw(reqwest::Method::GET, &location)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(header(&response, "etag"), Some(etag));
    assert_eq!(expect(response, StatusCode::OK).await, created);
    expect_problem(
        api.get_product(&Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_taken_sku_is_refused_with_409_and_the_original_kept() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let original = create_product(&api, &admin, json!({"sku": "MUG-1", "price_cents": 800})).await;

    // Act
    let response = api
        .create_product(
            &admin.access_token,
            &json!({"sku": "MUG-1", "name": "Impostor", "price_cents": 1, "currency": "USD",
                    "stock": 1, "category": "test"}),
        )
        .await;

    // Assert
    expect_problem(response, StatusCode::CONFLICT, "sku_taken").await;
    assert_eq!(catalog(&api, "").await, [id_of(&original)]);
    let kept = expect(api.get_product(&id_of(&original)).await, StatusCode::OK).await;
    assert_eq!(kept, original);
}

#[tokio::test]
async fn invalid_product_fields_are_refused_and_nothing_is_created() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let valid = json!({
        "sku": "PEN-1", "name": "Pen", "description": "", "price_cents": 150,
        "currency": "USD", "stock": 3, "category": "office",
    });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let cases = [
        (
            with("currency", json!("EUR")),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("currency"),
        ),
        (
            with("currency", json!("usd")),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("currency"),
        ),
        (
            with("price_cents", json!(-1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("price_cents"),
        ),
        (
            with("stock", json!(-1)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("stock"),
        ),
        (
            with("price_cents", json!(10_000_000_001_i64)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("price_cents"),
        ),
        (
            with("stock", json!(1_000_000_001_i64)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("stock"),
        ),
        (
            with("sku", json!("")),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("sku"),
        ),
        (
            with("category", json!("Not A Slug")),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("category"),
        ),
        (
            with("price_cents", json!(1.5)),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (with("archived", json!(true)), StatusCode::BAD_REQUEST, None),
        (
            with("id", json!(Uuid::new_v4())),
            StatusCode::BAD_REQUEST,
            None,
        ),
    ];

    for (body, status, field) in &cases {
        // Act
        let response = api.create_product(&admin.access_token, body).await;

        // Assert
        let code = if *status == StatusCode::BAD_REQUEST {
            "invalid_body"
        } else {
            "validation_failed"
        };
        let problem = expect_problem(response, *status, code).await;
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], *field, "{body}: {problem}");
        }
    }
    // Nothing was written: the catalog is empty and the SKU is still free.
    assert_eq!(catalog(&api, "").await, Vec::<String>::new());
    let created = expect(
        api.create_product(&admin.access_token, &valid).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["archived"], false);
}

#[tokio::test]
async fn the_catalog_lists_newest_first_by_default_and_sorts_by_price_or_creation() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let mut products = Vec::new();
    for price in [300, 100, 400, 200] {
        products.push(create_product(&api, &admin, json!({"price_cents": price})).await);
    }
    let by_price: Vec<String> = [1, 3, 0, 2].iter().map(|&i| id_of(&products[i])).collect();
    let newest = newest_first(&products);
    let oldest: Vec<String> = newest.iter().rev().cloned().collect();

    // Act
    let default = ids(&expect(api.list_products("").await, StatusCode::OK).await);
    let cases = [
        ("?sort=-created", newest.clone()),
        ("?sort=created", oldest),
        ("?sort=price", by_price.clone()),
        ("?sort=-price", by_price.iter().rev().cloned().collect()),
    ];

    // Assert
    assert_eq!(default, newest);
    for (query, expected) in cases {
        let page = expect(api.list_products(query).await, StatusCode::OK).await;
        assert_eq!(ids(&page), expected, "{query}");
        assert!(page["next_cursor"].is_null(), "{query}: {page}");
    }
}

#[tokio::test]
async fn the_catalog_filters_by_category_inclusive_price_range_and_name() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let green = create_product(
        &api,
        &admin,
        json!({"name": "Green Tea Sencha", "price_cents": 500, "category": "tea"}),
    )
    .await;
    let black = create_product(
        &api,
        &admin,
        json!({"name": "Black TEA Assam", "price_cents": 1000, "category": "tea"}),
    )
    .await;
    let coffee = create_product(
        &api,
        &admin,
        json!({"name": "Coffee Beans", "price_cents": 1500, "category": "coffee"}),
    )
    .await;
    let teapot = create_product(
        &api,
        &admin,
        json!({"name": "Teapot", "price_cents": 2000, "category": "kitchen"}),
    )
    .await;
    let [g, b, c, t] = [&green, &black, &coffee, &teapot].map(id_of);
    let unordered = [
        ("?category=tea", vec![&g, &b]),
        ("?category=coffee", vec![&c]),
        ("?category=nothing-here", vec![]),
        ("?min_price=1000", vec![&b, &c, &t]),
        ("?max_price=1500", vec![&g, &b, &c]),
        ("?min_price=1000&max_price=1500", vec![&b, &c]),
        ("?min_price=1000&max_price=1000", vec![&b]),
        ("?min_price=1001&max_price=1499", vec![]),
        ("?q=tea", vec![&g, &b, &t]),
        ("?q=TEA", vec![&g, &b, &t]),
        ("?q=ssa", vec![&b]),
        ("?q=tea&category=tea&max_price=700", vec![&g]),
    ];
    let ordered = [
        ("?sort=price&min_price=1000&max_price=1500", vec![&b, &c]),
        (
            "?sort=-price&min_price=500&max_price=1500",
            vec![&c, &b, &g],
        ),
        ("?sort=price&category=tea", vec![&g, &b]),
        ("?sort=-price&q=tea", vec![&t, &b, &g]),
    ];

    for (query, expected) in unordered {
        // Act
        let found = catalog(&api, query).await;

        // Assert
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(sorted(found), sorted(expected), "{query}");
    }
    for (query, expected) in ordered {
        let found = catalog(&api, query).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(found, expected, "{query}");
    }
}

#[tokio::test]
async fn a_sparse_search_examines_at_most_500_products_per_request_and_goes_on_by_cursor() {
    // Arrange: the one match is the oldest of 520 products.
    let (_stack, api, admin) = admin_stack().await;
    let needle = id_of(&create_product(&api, &admin, json!({"name": "Needle"})).await);
    for batch in 0..13 {
        futures_util::future::join_all((0..40).map(|n| {
            let name = format!("Hay {batch}-{n}");
            let (api, admin) = (api.clone(), admin.clone());
            async move { create_product(&api, &admin, json!({"name": name})).await }
        }))
        .await;
    }

    // Act: newest first, the needle lies past the examination budget.
    let first = expect(
        api.list_products("?q=needle&limit=10").await,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a cursor past the budget");
    let second = expect(
        api.list_products(&format!("?q=needle&limit=10&cursor={cursor}"))
            .await,
        StatusCode::OK,
    )
    .await;

    // Assert: a short (empty) page with a cursor, then the match.
    assert_eq!(ids(&first), Vec::<String>::new(), "{first}");
    assert_eq!(ids(&second), [needle], "{second}");
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn paging_returns_every_product_once_in_every_sort_and_20_by_default() {
    // Arrange: 21 products with distinct prices (100..2100) in shuffled order.
    let (_stack, api, admin) = admin_stack().await;
    let mut all = Vec::new();
    for price in (1..=21).map(|i| (i * 7 % 22) * 100) {
        all.push(id_of(
            &create_product(&api, &admin, json!({"price_cents": price})).await,
        ));
    }

    for sort in ["-created", "created", "price", "-price"] {
        // Act
        let paged = catalog(&api, &format!("?limit=2&sort={sort}")).await;
        let whole = ids(&expect(
            api.list_products(&format!("?limit=100&sort={sort}")).await,
            StatusCode::OK,
        )
        .await);

        // Assert
        assert_eq!(paged, whole, "{sort}: pages join into the full list");
        assert_eq!(sorted(paged), sorted(all.clone()), "{sort}");
    }
    let default = expect(api.list_products("").await, StatusCode::OK).await;
    assert_eq!(ids(&default).len(), 20, "the default page size");
    assert!(default["next_cursor"].is_string(), "{default}");
    // Filters page too (the name filter scans the index in batches).
    let paged = catalog(&api, "?limit=2&q=PRODUCT&min_price=200&max_price=600").await;
    assert_eq!(paged.len(), 5, "{paged:?}");
    assert_eq!(paged.iter().collect::<HashSet<_>>().len(), 5);
}

#[tokio::test]
async fn a_cursor_stays_valid_while_products_are_added() {
    // Arrange: five products, and the first page of two by price and by creation.
    let (_stack, api, admin) = admin_stack().await;
    let mut created = Vec::new();
    for price in [100, 200, 300, 400, 500] {
        created.push(create_product(&api, &admin, json!({"price_cents": price})).await);
    }
    let before: Vec<String> = created.iter().map(id_of).collect();
    let by_price = expect(
        api.list_products("?limit=2&sort=price").await,
        StatusCode::OK,
    )
    .await;
    let by_created = expect(api.list_products("?limit=2").await, StatusCode::OK).await;
    assert_eq!(ids(&by_price), before[..2]);

    // Act: products appear before and after the cursors, then the walks go on.
    let cheap = id_of(&create_product(&api, &admin, json!({"price_cents": 50})).await);
    let middle = id_of(&create_product(&api, &admin, json!({"price_cents": 350})).await);
    let cursor = by_price["next_cursor"].as_str().expect("a cursor");
    let rest_by_price = catalog_from(&api, "?limit=2&sort=price", cursor).await;
    let cursor = by_created["next_cursor"].as_str().expect("a cursor");
    let rest_by_created = catalog_from(&api, "?limit=2", cursor).await;

    // Assert: no duplicates, nothing skipped; the new product behind the cursor shows up.
    assert_eq!(
        rest_by_price,
        [
            before[2].clone(),
            middle.clone(),
            before[3].clone(),
            before[4].clone()
        ]
    );
    assert!(!rest_by_price.contains(&cheap));
    let mut walked: Vec<String> = ids(&by_created);
    walked.extend(rest_by_created);
    assert_eq!(walked, newest_first(&created));
}

#[tokio::test]
async fn invalid_pagination_and_unknown_parameters_are_refused() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    for _ in 0..3 {
        create_product(&api, &admin, json!({})).await;
    }
    let page = expect(
        api.list_products("?limit=1&sort=price").await,
        StatusCode::OK,
    )
    .await;
    let price_cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
    let cases = [
        (
            format!("?sort=-price&cursor={price_cursor}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("?cursor={price_cursor}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("?sort=price&category=test&cursor={price_cursor}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "?cursor=not-a-cursor!".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("?cursor=Zm9v".to_owned(), StatusCode::UNPROCESSABLE_ENTITY),
        ("?limit=0".to_owned(), StatusCode::UNPROCESSABLE_ENTITY),
        ("?limit=101".to_owned(), StatusCode::UNPROCESSABLE_ENTITY),
        ("?min_price=-1".to_owned(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "?min_price=10&max_price=9".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "?category=Not%20A%20Slug".to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("?limit=abc".to_owned(), StatusCode::BAD_REQUEST),
        ("?limit=-1".to_owned(), StatusCode::BAD_REQUEST),
        ("?min_price=1.5".to_owned(), StatusCode::BAD_REQUEST),
        ("?sort=name".to_owned(), StatusCode::BAD_REQUEST),
        ("?page=2".to_owned(), StatusCode::BAD_REQUEST),
    ];

    for (query, status) in &cases {
        // Act
        let response = api.list_products(query).await;

        // Assert
        let code = if *status == StatusCode::BAD_REQUEST {
            "invalid_query"
        } else {
            "validation_failed"
        };
        let actual = response.status();
        assert_eq!(actual, *status, "{query}");
        expect_problem(response, *status, code).await;
    }
    // The cursor is fine where it came from, and the edges of `limit` are accepted.
    let next = expect(
        api.list_products(&format!("?limit=1&sort=price&cursor={price_cursor}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&next).len(), 1);
    assert_eq!(
        ids(&expect(api.list_products("?limit=1").await, StatusCode::OK).await).len(),
        1
    );
    assert_eq!(
        ids(&expect(api.list_products("?limit=100").await, StatusCode::OK).await).len(),
        3
    );
}

/// The precondition is judged last: a customer without `If-Match` is told
/// it may not patch (403), an admin that a product is not there (404) or
/// that a field is invalid (422), never 428 first.
#[tokio::test]
async fn a_missing_if_match_never_answers_before_the_caller_the_body_or_the_product() {
    // Arrange
    let (stack, api, admin) = admin_stack().await;
    let customer = stack.customer().await;
    let id = id_of(&create_product(&api, &admin, json!({"name": "Original"})).await);
    let unknown = Uuid::new_v4().to_string();

    // Act
    let by_customer = api
        .update_product(&customer.access_token, &id, None, &json!({"name": "Mine"}))
        .await;
    let unknown_product = api
        .update_product(
            &admin.access_token,
            &unknown,
            None,
            &json!({"name": "Nobody"}),
        )
        .await;
    let invalid_field = api
        .update_product(&admin.access_token, &id, None, &json!({"price_cents": -1}))
        .await;

    // Assert
    expect_problem(by_customer, StatusCode::FORBIDDEN, "forbidden").await;
    expect_problem(unknown_product, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(
        invalid_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn a_patch_needs_the_current_etag_in_if_match() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let id = id_of(&create_product(&api, &admin, json!({"name": "Original"})).await);
    let (_, etag) = product_with_etag(&api, &id).await;
    let token = &admin.access_token;

    // Act
    let missing = api
        .update_product(token, &id, None, &json!({"name": "No precondition"}))
        .await;
    let stale = api
        .update_product(token, &id, Some("\"999\""), &json!({"name": "Stale"}))
        .await;
    let malformed = api
        .update_product(token, &id, Some("version-1"), &json!({"name": "Bad"}))
        .await;
    // Well-formed entity tags that are not the current version (RFC 9110): 412.
    let not_ours = api
        .update_product(token, &id, Some("\"stale\""), &json!({"name": "Bad"}))
        .await;
    let weak = api
        .update_product(
            token,
            &id,
            Some(&format!("W/{etag}")),
            &json!({"name": "Bad"}),
        )
        .await;
    let empty = api
        .update_product(token, &id, Some(&etag), &json!({}))
        .await;
    let stock = api
        .update_product(token, &id, Some(&etag), &json!({"stock": 99}))
        .await;
    let fresh = api
        .update_product(token, &id, Some(&etag), &json!({"name": "Renamed"}))
        .await;

    // Assert
    expect_problem(
        missing,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    )
    .await;
    expect_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;
    expect_problem(malformed, StatusCode::BAD_REQUEST, "invalid_if_match").await;
    for precondition in [not_ours, weak] {
        expect_problem(
            precondition,
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        )
        .await;
    }
    // `{}` changes nothing (schemathesis_findings has the whole story).
    assert_eq!(expect(empty, StatusCode::OK).await["name"], "Original");
    expect_problem(stock, StatusCode::BAD_REQUEST, "invalid_body").await;
    let new_etag = header(&fresh, "etag").expect("PATCH answers with the new ETag");
    let updated = expect(fresh, StatusCode::OK).await;
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["stock"], 10);
    assert_ne!(new_etag, etag);
    assert_ne!(updated["updated_at"], updated["created_at"]);
    // The old ETag is now stale: a second writer who read before loses, visibly.
    expect_problem(
        api.update_product(token, &id, Some(&etag), &json!({"name": "Lost update"}))
            .await,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;
    let (current, current_etag) = product_with_etag(&api, &id).await;
    assert_eq!(current["name"], "Renamed");
    assert_eq!(current_etag, new_etag);
    expect_problem(
        api.update_product(
            token,
            &Uuid::new_v4().to_string(),
            Some(&etag),
            &json!({"name": "x"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_price_or_category_change_moves_the_product_in_listings() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let mut tea = Vec::new();
    for price in [100, 200, 300] {
        tea.push(id_of(
            &create_product(
                &api,
                &admin,
                json!({"price_cents": price, "category": "tea"}),
            )
            .await,
        ));
    }
    let token = &admin.access_token;

    // Act
    let (_, etag) = product_with_etag(&api, &tea[0]).await;
    expect(
        api.update_product(token, &tea[0], Some(&etag), &json!({"price_cents": 250}))
            .await,
        StatusCode::OK,
    )
    .await;
    let (_, etag) = product_with_etag(&api, &tea[2]).await;
    expect(
        api.update_product(token, &tea[2], Some(&etag), &json!({"category": "coffee"}))
            .await,
        StatusCode::OK,
    )
    .await;

    // Assert
    assert_eq!(
        catalog(&api, "?sort=price").await,
        [&tea[1], &tea[0], &tea[2]].map(String::clone)
    );
    assert_eq!(
        catalog(&api, "?sort=-price&category=tea").await,
        [&tea[0], &tea[1]].map(String::clone)
    );
    assert_eq!(
        catalog(&api, "?sort=price&min_price=250&max_price=250").await,
        [tea[0].clone()]
    );
    assert_eq!(
        catalog(&api, "?sort=price&max_price=100").await,
        Vec::<String>::new()
    );
    assert_eq!(
        sorted(catalog(&api, "?category=tea").await),
        sorted(vec![tea[0].clone(), tea[1].clone()])
    );
    assert_eq!(catalog(&api, "?category=coffee").await, [tea[2].clone()]);
    assert_eq!(
        catalog(&api, "?category=coffee&sort=price").await,
        [tea[2].clone()]
    );
    let moved = expect(api.get_product(&tea[2]).await, StatusCode::OK).await;
    assert_eq!(moved["category"], "coffee");
}

#[tokio::test]
async fn stock_moves_by_delta_and_never_below_zero() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 5})).await);
    let token = &admin.access_token;

    // Act + Assert
    let added = expect(api.add_stock(token, &id, 3).await, StatusCode::OK).await;
    assert_eq!(added["stock"], 8);
    let short = expect_problem(
        api.add_stock(token, &id, -9).await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    )
    .await;
    assert_eq!(short["product_id"], id);
    assert_eq!(short["available"], 8);
    assert_eq!(
        stock_of(&api, &id).await,
        8,
        "a refused delta changes nothing"
    );
    expect_problem(
        api.add_stock(token, &id, 0).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let too_much = expect_problem(
        api.add_stock(token, &id, 1_000_000_000).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(too_much["errors"][0]["field"], "delta", "{too_much}");
    assert_eq!(stock_of(&api, &id).await, 8);
    let emptied = expect(api.add_stock(token, &id, -8).await, StatusCode::OK).await;
    assert_eq!(emptied["stock"], 0);
    expect_problem(
        api.add_stock(token, &id, -1).await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    )
    .await;
    assert_eq!(stock_of(&api, &id).await, 0);
    expect_problem(
        api.add_stock(token, &Uuid::new_v4().to_string(), 1).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_stock_delta_is_applied_once_per_idempotency_key_and_a_retry_returns_the_first_outcome() {
    // Arrange
    let (_stack, api, admin) = admin_stack().await;
    let id = id_of(&create_product(&api, &admin, json!({"stock": 5})).await);
    let token = &admin.access_token;
    let key = new_key();

    // Act: the delta, someone else's delta, then the first one retried.
    let first = api.add_stock_with_key(token, &id, 3, &key).await;
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let first = expect(first, StatusCode::OK).await;
    expect(api.add_stock(token, &id, 10).await, StatusCode::OK).await;
    let retry = api.add_stock_with_key(token, &id, 3, &key).await;

    // Assert: applied once; the retry answers what the first one did.
    assert_eq!(
        header(&retry, "idempotent-replayed").as_deref(),
        Some("true")
    );
    let retry = expect(retry, StatusCode::OK).await;
    assert_eq!(retry, first);
    assert_eq!(retry["stock"], 8);
    assert_eq!(stock_of(&api, &id).await, 18);
    expect_problem(
        api.add_stock_with_key(token, &id, 4, &key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let other = id_of(&create_product(&api, &admin, json!({"stock": 5})).await);
    expect_problem(
        api.add_stock_with_key(token, &other, 3, &key).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    // A refusal does not use the key up.
    let refused_key = new_key();
    expect_problem(
        api.add_stock_with_key(token, &id, -100, &refused_key).await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    )
    .await;
    let later = expect(
        api.add_stock_with_key(token, &id, -1, &refused_key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(later["stock"], 17);
    let unkeyed = api
        .raw(Method::POST, &format!("/api/v1/products/{id}/stock"))
        .bearer_auth(token)
        .json(&json!({"delta": 1}))
        .send()
        .await
        .expect("answers");
    expect_problem(unkeyed, StatusCode::BAD_REQUEST, "idempotency_key_missing").await;
    assert_eq!(stock_of(&api, &id).await, 17);
}

#[tokio::test]
async fn archiving_hides_a_product_from_the_catalog_but_keeps_it_readable_and_in_past_purchases() {
    // Arrange
    let (stack, api, admin) = admin_stack().await;
    let product = create_product(
        &api,
        &admin,
        json!({"name": "Old Kettle", "price_cents": 1234, "category": "kitchen"}),
    )
    .await;
    let kept = id_of(&create_product(&api, &admin, json!({"category": "kitchen"})).await);
    let id = id_of(&product);
    let customer = stack.customer().await;
    let purchase = expect(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&id, 2)]),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    expect(
        api.update_product(
            &admin.access_token,
            &id,
            Some("*"),
            &json!({"name": "New Kettle", "price_cents": 9999}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // Act
    let response = api.archive_product(&admin.access_token, &id).await;

    // Assert
    let archived = expect(response, StatusCode::OK).await;
    assert_eq!(archived["archived"], true);
    let read = expect(api.get_product(&id).await, StatusCode::OK).await;
    assert_eq!(read["archived"], true);
    assert_eq!(read["name"], "New Kettle");
    for query in [
        "",
        "?sort=price",
        "?sort=-price",
        "?sort=created",
        "?category=kitchen",
        "?category=kitchen&sort=price",
        "?q=kettle",
        "?min_price=9999&max_price=9999&sort=price",
    ] {
        let listed = catalog(&api, query).await;
        assert!(
            !listed.contains(&id),
            "{query} still lists the archived product"
        );
    }
    assert_eq!(catalog(&api, "?category=kitchen").await, [kept]);
    let refused = expect_problem(
        api.purchase(
            &customer.access_token,
            Some(&new_key()),
            &order(&[(&id, 1)]),
        )
        .await,
        StatusCode::CONFLICT,
        "product_unavailable",
    )
    .await;
    assert_eq!(refused["product_id"], id);
    assert_eq!(stock_of(&api, &id).await, 8);
    let past = expect(
        api.get_purchase(&customer.access_token, &id_of(&purchase))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(past["items"][0]["name"], "Old Kettle");
    assert_eq!(past["items"][0]["unit_price_cents"], 1234);
    assert_eq!(past["total_cents"], 2468);
    // Archiving again is harmless; changing an archived product is refused.
    expect(
        api.archive_product(&admin.access_token, &id).await,
        StatusCode::OK,
    )
    .await;
    expect_problem(
        api.update_product(
            &admin.access_token,
            &id,
            Some("*"),
            &json!({"name": "Revived"}),
        )
        .await,
        StatusCode::CONFLICT,
        "product_archived",
    )
    .await;
    expect_problem(
        api.archive_product(&admin.access_token, &Uuid::new_v4().to_string())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
