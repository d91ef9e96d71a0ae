//! Cursor pagination shared by every list endpoint.
//!
//! A cursor is the last index member a page returned (see `redis::keys`), with
//! the sort it belongs to, base64url-encoded. It is opaque to clients and stays
//! valid while items are added or removed around it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of the list identified by `scope`; `next` is the store's last
    /// member when more items follow.
    pub fn new(items: Vec<T>, next: Option<String>, scope: &str) -> Self {
        Self {
            items,
            next_cursor: next.map(|member| encode_cursor(scope, &member)),
        }
    }
}

/// `limit` and `cursor` of list endpoints without other filters.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,600}$")]
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }
}

/// Encodes the position after `member` in the list identified by `scope`.
pub fn encode_cursor(scope: &str, member: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}\n{member}"))
}

/// The member to continue after, from an optional `cursor` query parameter.
pub fn decode_optional_cursor(
    scope: &str,
    cursor: Option<&str>,
) -> Result<Option<String>, ApiError> {
    cursor
        .map(|cursor| decode_cursor(scope, cursor))
        .transpose()
}

/// Decodes a cursor made by [`encode_cursor`] for the same `scope`.
pub fn decode_cursor(scope: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid =
        || ApiError::invalid_field("cursor", "cursor", "is not a cursor returned by this list");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (cursor_scope, member) = text.split_once('\n').ok_or_else(invalid)?;
    if cursor_scope != scope || member.is_empty() || member.len() > 200 {
        return Err(invalid());
    }
    Ok(member.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_within_its_scope_only() {
        let cursor = encode_cursor("products:price", "00000000000000000100:abc");
        assert_eq!(
            decode_cursor("products:price", &cursor).ok().as_deref(),
            Some("00000000000000000100:abc")
        );
        assert!(decode_cursor("products:-price", &cursor).is_err());
        assert!(decode_cursor("products:price", "not base64 !").is_err());
    }
}
