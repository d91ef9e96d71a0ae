//! Purchases as clients see them, and the order body.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use validator::Validate;

pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PurchaseStatus {
    Completed,
    Cancelled,
}

/// A line as bought: name and unit price are copied at purchase time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurchaseItem {
    pub product_id: Uuid,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Purchase {
    pub id: Uuid,
    pub user_id: Uuid,
    pub items: Vec<PurchaseItem>,
    /// Sum of unit price × quantity, from the prices stored at purchase time.
    pub total_cents: i64,
    pub currency: String,
    pub status: PurchaseStatus,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub product_id: Uuid,
    #[validate(range(min = 1, max = 1000))]
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: u32,
}

/// An order. Lines for the same product are added up before the stock check.
#[derive(Debug, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePurchaseRequest {
    #[validate(length(min = 1, max = 100), nested)]
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderLine>,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPurchasesQuery {
    /// Items per page, 1 to 100 (default 20).
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,600}$")]
    pub cursor: Option<String>,
    /// Admins only: the purchases of this user instead of their own.
    pub user_id: Option<Uuid>,
}
