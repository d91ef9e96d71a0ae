//! Buying, listing and cancelling.

use std::collections::BTreeMap;

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, get, post, web};
use uuid::Uuid;
use validator::Validate;

use super::model::{CreatePurchaseRequest, ListPurchasesQuery, MAX_QUANTITY, Purchase};
use super::store::{CancelOutcome, Order, PurchaseOutcome};
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, Code};
use crate::idempotency::{self, IDEMPOTENT_REPLAYED, IdempotencyKey};
use crate::pagination::{DEFAULT_LIMIT, Page, decode_optional_cursor};
use crate::state::AppState;
use crate::write_limits::{Bucket, too_many_writes};

fn not_found() -> ApiError {
    ApiError::NotFound("purchase not found".to_owned())
}

/// Adds up lines for the same product, in a stable order.
fn merge_lines(body: &CreatePurchaseRequest) -> Result<Vec<(Uuid, u32)>, ApiError> {
    let mut merged: BTreeMap<Uuid, u32> = BTreeMap::new();
    for line in &body.items {
        *merged.entry(line.product_id).or_default() += line.quantity;
    }
    if let Some((product_id, _)) = merged
        .iter()
        .find(|(_, quantity)| **quantity > MAX_QUANTITY)
    {
        return Err(ApiError::invalid_field(
            "items",
            "range",
            format!("at most {MAX_QUANTITY} units of product {product_id} per purchase"),
        ));
    }
    Ok(merged.into_iter().collect())
}

/// 422 naming the first line that asks for `product_id`.
fn unknown_product(body: &CreatePurchaseRequest, product_id: Uuid) -> ApiError {
    let index = body
        .items
        .iter()
        .position(|line| line.product_id == product_id)
        .unwrap_or(0);
    ApiError::invalid_field(
        &format!("items[{index}].product_id"),
        "not_found",
        format!("product {product_id} does not exist"),
    )
}

fn created(purchase: &Purchase, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, format!("/api/v1/purchases/{}", purchase.id)));
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.json(purchase)
}

/// Buy: every line or none, at the stored prices. Requires `Idempotency-Key`:
/// the same key with the same body returns the original purchase with
/// `Idempotent-Replayed: true`; with another body, 422; while the first
/// request is unconfirmed, 409. A 503 means "not confirmed": retry with the same key.
#[utoipa::path(
    operation_id = "create_purchase",
    tag = "purchases",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "Unique per order, e.g. a UUID; kept 24 h per user", pattern = "^[\\x21-\\x7E]{1,255}$")),
    request_body = CreatePurchaseRequest,
    responses(
        (status = 201, description = "Purchase made (or, with `Idempotent-Replayed: true`, the one this key made before)", body = Purchase, headers(("Location" = String), ("Idempotent-Replayed" = String))),
        (status = 400, description = "Missing Idempotency-Key or malformed body"),
        (status = 401),
        (status = 409, description = "Insufficient stock (names the product), archived product, or key in flight"),
        (status = 422, description = "Invalid lines, unknown product, or key reused with another body"),
        (status = 429, description = "Too many writes by this user; see Retry-After"),
        (status = 503, description = "Not confirmed; retry with the same key"),
    )
)]
#[post("/purchases")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Body<CreatePurchaseRequest>,
    key: IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    body.validate()?;
    let lines = merge_lines(&body)?;
    let fingerprint = idempotency::fingerprint(&*body);
    let order = Order::new(
        caller.user_id,
        (&key.0, &fingerprint),
        &lines,
        &state.store,
        Bucket::of(&state.limits),
    );
    match state.purchases().buy(order).await? {
        PurchaseOutcome::Created(purchase) => {
            state.metrics.record_purchase(purchase.total_cents);
            Ok(created(&purchase, false))
        }
        PurchaseOutcome::Replayed(purchase) => {
            state.metrics.idempotent_replays.inc();
            Ok(created(&purchase, true))
        }
        PurchaseOutcome::InFlight => Err(ApiError::conflict(
            Code::IdempotencyKeyInFlight,
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
        PurchaseOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        PurchaseOutcome::Limited { retry_after_ms } => Err(too_many_writes(retry_after_ms)),
        PurchaseOutcome::NotFound(product_id) => Err(unknown_product(&body, product_id)),
        PurchaseOutcome::Archived(product_id) => Err(ApiError::ProductUnavailable {
            product_id,
            reason: "it is archived",
        }),
        PurchaseOutcome::Insufficient {
            product_id,
            available,
        } => {
            state.metrics.stock_outs.inc();
            Err(ApiError::InsufficientStock {
                product_id,
                available,
            })
        }
    }
}

/// Own purchases, newest first. Admins may pass `user_id` to see another user's.
#[utoipa::path(
    operation_id = "list_purchases",
    tag = "purchases",
    security(("bearer" = [])),
    params(ListPurchasesQuery),
    responses(
        (status = 200, description = "A page of purchases, newest first", body = Page<Purchase>),
        (status = 401),
        (status = 403, description = "user_id of someone else, without the admin role"),
    )
)]
#[get("/purchases")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListPurchasesQuery>,
) -> Result<web::Json<Page<Purchase>>, ApiError> {
    query.validate()?;
    let user_id = match query.user_id {
        Some(user_id) if user_id != caller.user_id && !caller.is_admin() => {
            return Err(ApiError::Forbidden);
        }
        Some(user_id) => user_id,
        None => caller.user_id,
    };
    let scope = format!("purchases:{user_id}");
    let after = decode_optional_cursor(&scope, query.cursor.as_deref())?;
    let (items, next) = state
        .purchases()
        .list_for_user(
            user_id,
            after.as_deref(),
            query.limit.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
    Ok(web::Json(Page::new(items, next, &scope)))
}

/// One purchase: its owner or an admin; anyone else gets 404.
#[utoipa::path(
    operation_id = "get_purchase",
    tag = "purchases",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Purchase id")),
    responses(
        (status = 200, description = "The purchase", body = Purchase),
        (status = 404),
    )
)]
#[get("/purchases/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<web::Json<Purchase>, ApiError> {
    let purchase = state.purchases().get(*id).await?.ok_or_else(not_found)?;
    // 404 rather than 403: do not reveal that someone else's purchase exists.
    if purchase.user_id != caller.user_id && !caller.is_admin() {
        return Err(not_found());
    }
    Ok(web::Json(purchase))
}

/// Cancel a purchase and put its items back in stock, once. Safe to retry:
/// the session that cancelled it gets the cancelled purchase again (200,
/// `Idempotent-Replayed: true`); anyone else gets 409.
#[utoipa::path(
    operation_id = "cancel_purchase",
    tag = "purchases",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Purchase id")),
    responses(
        (status = 200, description = "The purchase, cancelled and restocked", body = Purchase, headers(("Idempotent-Replayed" = String, description = "`true` when this session had cancelled it already"))),
        (status = 404),
        (status = 409, description = "Already cancelled by another session"),
        (status = 429, description = "Too many writes by this user; see Retry-After"),
        (status = 503, description = "Not confirmed; retry"),
    )
)]
#[post("/purchases/{id}/cancel")]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    state.write_limits().take(caller.user_id).await?;
    let purchases = state.purchases();
    let purchase = purchases.get(*id).await?.ok_or_else(not_found)?;
    if purchase.user_id != caller.user_id && !caller.is_admin() {
        return Err(not_found());
    }
    match purchases.cancel(&purchase, caller.session_id).await? {
        CancelOutcome::Cancelled(purchase) => {
            state.metrics.cancellations.inc();
            Ok(HttpResponse::Ok().json(purchase))
        }
        CancelOutcome::Replayed(purchase) => Ok(HttpResponse::Ok()
            .insert_header((IDEMPOTENT_REPLAYED, "true"))
            .json(purchase)),
        CancelOutcome::Missing => Err(not_found()),
        CancelOutcome::AlreadyCancelled => Err(ApiError::conflict(
            Code::AlreadyCancelled,
            "this purchase was already cancelled by another session",
        )),
    }
}
