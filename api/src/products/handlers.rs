//! Catalog reads (public) and admin product writes.

use actix_web::http::header::{ETAG, LOCATION};
use actix_web::{HttpResponse, delete, get, patch, post, web};
use uuid::Uuid;
use validator::Validate;

use super::model::{
    CreateProductRequest, ListProductsQuery, Product, StockDeltaRequest, UpdateProductRequest,
};
use super::store::{
    ArchiveOutcome, CreateOutcome, NewProduct, ProductChanges, ProductFilter, StockDelta,
    StockOutcome, UpdateOutcome,
};
use crate::auth::Admin;
use crate::body::Body;
use crate::error::{ApiError, Code};
use crate::idempotency::{self, IDEMPOTENT_REPLAYED, IdempotencyKey};
use crate::if_match::IfMatch;
use crate::pagination::{DEFAULT_LIMIT, Page, decode_optional_cursor};
use crate::state::AppState;

fn not_found() -> ApiError {
    ApiError::NotFound("product not found".to_owned())
}

fn with_etag(mut response: actix_web::HttpResponseBuilder, product: &Product) -> HttpResponse {
    response.insert_header((ETAG, product.etag())).json(product)
}

/// Products, filtered, sorted and paginated. Archived products are not listed.
#[utoipa::path(
    operation_id = "list_products",
    tag = "products",
    params(ListProductsQuery),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 400, description = "Unknown parameter or wrong type"),
        (status = 422, description = "Out-of-range value or invalid cursor"),
    )
)]
#[get("/products")]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListProductsQuery>,
) -> Result<web::Json<Page<Product>>, ApiError> {
    query.validate()?;
    let query = query.into_inner();
    let filter = ProductFilter {
        category: query.category,
        min_price: query.min_price,
        max_price: query.max_price,
        name_contains: query.q.map(|q| q.to_lowercase()),
        sort: query.sort.unwrap_or_default(),
    };
    // The cursor is only valid for the index it was taken from.
    let scope = format!(
        "products:{}:{}",
        filter.sort.as_str(),
        filter.category.as_deref().unwrap_or("")
    );
    let after = decode_optional_cursor(&scope, query.cursor.as_deref())?;
    let (items, next) = state
        .products()
        .list(
            &filter,
            after.as_deref(),
            query.limit.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
    Ok(web::Json(Page::new(items, next, &scope)))
}

/// One product, archived or not, with its ETag.
#[utoipa::path(
    operation_id = "get_product",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product, headers(("ETag" = String, description = "Version for If-Match"))),
        (status = 400, description = "Not a UUID"),
        (status = 404),
    )
)]
#[get("/products/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let product = state.products().get(*id).await?.ok_or_else(not_found)?;
    Ok(with_etag(HttpResponse::Ok(), &product))
}

/// Create a product (admin).
#[utoipa::path(
    operation_id = "create_product",
    tag = "products",
    security(("bearer" = [])),
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Product created", body = Product, headers(("Location" = String), ("ETag" = String))),
        (status = 403),
        (status = 409, description = "SKU taken"),
        (status = 422),
    )
)]
#[post("/products")]
pub async fn create(
    state: web::Data<AppState>,
    _admin: Admin,
    body: Body<CreateProductRequest>,
) -> Result<HttpResponse, ApiError> {
    body.validate()?;
    let body = body.into_inner();
    if body.currency != state.store.currency {
        return Err(ApiError::invalid_field(
            "currency",
            "currency",
            format!("must be the store currency {}", state.store.currency),
        ));
    }
    let new = NewProduct {
        sku: body.sku,
        name: body.name.trim().to_owned(),
        description: body.description,
        price_cents: body.price_cents,
        currency: body.currency,
        stock: body.stock,
        category: body.category,
    };
    match state.products().create(new).await? {
        CreateOutcome::Created(product) => {
            let mut response = HttpResponse::Created();
            response.insert_header((LOCATION, format!("/api/v1/products/{}", product.id)));
            Ok(with_etag(response, &product))
        }
        CreateOutcome::SkuTaken => Err(ApiError::conflict(
            Code::SkuTaken,
            "a product with this SKU already exists",
        )),
    }
}

/// Change a product (admin). Needs `If-Match` with the ETag of a GET: a
/// concurrent change gives 412 instead of being overwritten.
#[utoipa::path(
    operation_id = "update_product",
    tag = "products",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Product id"),
        ("If-Match" = String, Header, description = "ETag from a GET, e.g. \"3\", or *", pattern = "^(\\*|\"[0-9]{1,19}\"( *, *\"[0-9]{1,19}\")*)$"),
    ),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "The updated product", body = Product, headers(("ETag" = String))),
        (status = 403, description = "Not an admin"),
        (status = 404),
        (status = 409, description = "Product archived"),
        (status = 412, description = "ETag does not match"),
        (status = 428, description = "If-Match missing"),
    )
)]
#[patch("/products/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<Uuid>,
    body: Body<UpdateProductRequest>,
    // Judged after the caller, the body and the product: actix polls every
    // extractor at once, and a header that is ready first must not answer
    // for a caller who may not patch at all (403) or a product that is not
    // there (404).
    if_match: Result<IfMatch, ApiError>,
) -> Result<HttpResponse, ApiError> {
    body.validate()?;
    let body = body.into_inner();
    let products = state.products();
    let current = products.get_latest(*id).await?.ok_or_else(not_found)?;
    // A tag that is well-formed but not current, or a weak one, is a 412.
    if !if_match?.matches(current.version) {
        return Err(ApiError::PreconditionFailed {
            current: current.etag(),
        });
    }
    let expected = current.version;
    // As in a JSON merge patch, nothing to change is a valid no-op (`{}` and
    // `{"name": null}` are schema-valid bodies): the product as it is.
    if body.name.is_none()
        && body.description.is_none()
        && body.price_cents.is_none()
        && body.category.is_none()
    {
        if current.archived {
            return Err(archived_conflict());
        }
        return Ok(with_etag(HttpResponse::Ok(), &current));
    }
    let changes = ProductChanges {
        name: body.name.map(|n| n.trim().to_owned()),
        description: body.description,
        price_cents: body.price_cents,
        category: body.category,
    };
    match products.update(&current, expected, changes).await? {
        UpdateOutcome::Updated(product) => Ok(with_etag(HttpResponse::Ok(), &product)),
        UpdateOutcome::Missing => Err(not_found()),
        UpdateOutcome::Archived => Err(archived_conflict()),
        UpdateOutcome::VersionChanged(version) => Err(ApiError::PreconditionFailed {
            current: format!("\"{version}\""),
        }),
    }
}

fn archived_conflict() -> ApiError {
    ApiError::conflict(Code::ProductArchived, "archived products cannot be changed")
}

/// Add or remove stock (admin). Requires `Idempotency-Key`: a retry with the
/// same key and body returns the product as the first request left it (with
/// `Idempotent-Replayed: true`) instead of applying the delta twice.
#[utoipa::path(
    operation_id = "add_stock",
    tag = "products",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Product id"),
        ("Idempotency-Key" = String, Header, description = "Unique per change, e.g. a UUID; kept 24 h per admin", pattern = "^[\\x21-\\x7E]{1,255}$"),
    ),
    request_body = StockDeltaRequest,
    responses(
        (status = 200, description = "The product after the delta (or, replayed, as that delta left it)", body = Product, headers(("ETag" = String), ("Idempotent-Replayed" = String))),
        (status = 400, description = "Missing Idempotency-Key or malformed body"),
        (status = 403, description = "Not an admin"),
        (status = 404),
        (status = 409, description = "Stock would go below zero"),
        (status = 422, description = "Out-of-range delta, or key reused with another request"),
        (status = 429, description = "Too many writes by this admin; see Retry-After"),
        (status = 503, description = "Not confirmed; retry with the same key"),
    )
)]
#[post("/products/{id}/stock")]
pub async fn add_stock(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<Uuid>,
    body: Body<StockDeltaRequest>,
    key: IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    body.validate()?;
    state.write_limits().take(admin.0.user_id).await?;
    let product_id = id.into_inner();
    let change = StockDelta {
        product_id,
        delta: body.delta,
        admin_id: admin.0.user_id,
        idempotency_key: &key.0,
        fingerprint: &idempotency::fingerprint(&(product_id, body.delta)),
        key_ttl_secs: state.store.idempotency_key_ttl_secs,
    };
    match state.products().add_stock(change).await? {
        StockOutcome::Applied(product) => Ok(with_etag(HttpResponse::Ok(), &product)),
        StockOutcome::Replayed(product) => {
            let mut response = HttpResponse::Ok();
            response.insert_header((IDEMPOTENT_REPLAYED, "true"));
            Ok(with_etag(response, &product))
        }
        StockOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        StockOutcome::Missing => Err(not_found()),
        StockOutcome::Insufficient(available) => Err(ApiError::InsufficientStock {
            product_id,
            available,
        }),
        StockOutcome::TooLarge(current) => Err(ApiError::invalid_field(
            "delta",
            "range",
            format!(
                "stock would exceed {} (currently {current})",
                super::model::MAX_STOCK
            ),
        )),
    }
}

/// Archive a product (admin): it stays readable, leaves the catalog and can
/// no longer be bought. Past purchases keep their data. Idempotent.
#[utoipa::path(
    operation_id = "archive_product",
    tag = "products",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The archived product", body = Product),
        (status = 403, description = "Not an admin"),
        (status = 404),
    )
)]
#[delete("/products/{id}")]
pub async fn archive(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    match state.products().archive(*id).await? {
        ArchiveOutcome::Archived(product) => Ok(with_etag(HttpResponse::Ok(), &product)),
        ArchiveOutcome::Missing => Err(not_found()),
        ArchiveOutcome::KeptChanging => Err(ApiError::conflict(
            Code::ConcurrentUpdate,
            "the product kept changing; try again",
        )),
    }
}
