//! Products as clients see them, and the bodies and queries that touch them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::{Validate, ValidationError};

/// Prices are bounded so that a total of 100 lines of 1000 units stays exact
/// in Redis Lua's doubles (< 2^53).
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;
pub const MAX_STOCK: i64 = 1_000_000_000;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Product {
    pub id: Uuid,
    /// Unique stock-keeping unit.
    pub sku: String,
    pub name: String,
    pub description: String,
    /// Price in minor units of `currency` (cents for USD).
    pub price_cents: i64,
    /// ISO 4217; always the store's currency.
    pub currency: String,
    /// Units available to buy.
    pub stock: i64,
    pub category: String,
    /// Archived products stay readable but are not listed and cannot be bought.
    pub archived: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Bumped by every PATCH and by archiving (not by stock moves); the ETag.
    #[serde(skip)]
    pub version: u64,
    #[serde(skip)]
    pub created_ms: i64,
}

impl Product {
    /// Strong ETag of the product's editable state.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

fn sku_format(sku: &str) -> Result<(), ValidationError> {
    if !sku.is_empty()
        && sku.len() <= 64
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(ValidationError::new("format")
            .with_message("must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'".into()))
    }
}

pub(crate) fn category_format(category: &str) -> Result<(), ValidationError> {
    let valid = !category.is_empty()
        && category.len() <= 64
        && category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(ValidationError::new("format")
            .with_message("must be 1 to 64 characters of a-z, 0-9, '-', '_'".into()))
    }
}

fn text_line(text: &str) -> Result<(), ValidationError> {
    if text.trim().is_empty() || text.chars().count() > 200 || text.chars().any(char::is_control) {
        return Err(ValidationError::new("format")
            .with_message("must be 1 to 200 characters without control characters".into()));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    #[validate(custom(function = "sku_format"))]
    #[schema(example = "TEA-GREEN-100G", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    #[validate(custom(function = "text_line"))]
    #[schema(
        example = "Sencha green tea, 100 g",
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    #[validate(length(max = 5000))]
    #[schema(max_length = 5000)]
    #[serde(default)]
    pub description: String,
    #[validate(range(min = 0, max = 10_000_000_000_i64))]
    #[schema(example = 1299, minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: i64,
    /// Must be the store's currency.
    #[schema(example = "USD")]
    pub currency: String,
    #[validate(range(min = 0, max = 1_000_000_000_i64))]
    #[schema(example = 100, minimum = 0, maximum = 1_000_000_000_i64)]
    pub stock: i64,
    /// Lower-case slug.
    #[validate(custom(function = "category_format"))]
    #[schema(example = "tea", pattern = "^[a-z0-9_-]{1,64}$")]
    pub category: String,
}

/// Fields to change; absent or null ones stay as they are. Stock moves through `/stock`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[validate(custom(function = "text_line"))]
    #[schema(
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    #[validate(length(max = 5000))]
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    #[validate(range(min = 0, max = 10_000_000_000_i64))]
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: Option<i64>,
    #[validate(custom(function = "category_format"))]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub category: Option<String>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockDeltaRequest {
    /// Units to add (positive) or remove (negative); stock never goes below zero.
    #[validate(range(min = -1_000_000_000_i64, max = 1_000_000_000_i64), custom(function = "non_zero"))]
    #[schema(example = 25, schema_with = stock_delta_schema)]
    pub delta: i64,
}

/// -1e9..=1e9 without 0, which JSON Schema says as one of two ranges.
fn stock_delta_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    OneOfBuilder::new()
        .item(range(-MAX_STOCK, -1))
        .item(range(1, MAX_STOCK))
        .build()
        .into()
}

fn non_zero(delta: i64) -> Result<(), ValidationError> {
    if delta == 0 {
        Err(ValidationError::new("non_zero").with_message("must not be 0".into()))
    } else {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum ProductSort {
    #[serde(rename = "price")]
    PriceAscending,
    #[serde(rename = "-price")]
    PriceDescending,
    #[serde(rename = "created")]
    CreatedAscending,
    #[default]
    #[serde(rename = "-created")]
    CreatedDescending,
}

impl ProductSort {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PriceAscending => "price",
            Self::PriceDescending => "-price",
            Self::CreatedAscending => "created",
            Self::CreatedDescending => "-created",
        }
    }
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[validate(schema(function = "price_range"))]
pub struct ListProductsQuery {
    /// Items per page, 1 to 100 (default 20).
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (with the same filters and sort).
    #[param(pattern = "^[A-Za-z0-9_-]{1,600}$")]
    pub cursor: Option<String>,
    /// Only this category.
    #[validate(custom(function = "category_format"))]
    #[param(pattern = "^[a-z0-9_-]{1,64}$")]
    pub category: Option<String>,
    /// Lowest price in cents, inclusive.
    #[validate(range(min = 0, max = 10_000_000_000_i64))]
    #[param(minimum = 0, maximum = 10_000_000_000_i64)]
    pub min_price: Option<i64>,
    /// Highest price in cents, inclusive; not below `min_price`.
    #[validate(range(min = 0, max = 10_000_000_000_i64))]
    #[param(minimum = 0, maximum = 10_000_000_000_i64)]
    pub max_price: Option<i64>,
    /// Case-insensitive substring of the name.
    #[validate(length(min = 1, max = 100))]
    #[param(min_length = 1, max_length = 100)]
    pub q: Option<String>,
    /// `price`, `-price`, `created` or `-created` (default, newest first).
    #[param(inline)]
    pub sort: Option<ProductSort>,
}

fn price_range(query: &ListProductsQuery) -> Result<(), ValidationError> {
    match (query.min_price, query.max_price) {
        (Some(min), Some(max)) if min > max => Err(ValidationError::new("range")
            .with_message("min_price must not exceed max_price".into())),
        _ => Ok(()),
    }
}
