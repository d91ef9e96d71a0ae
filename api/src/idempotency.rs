//! The `Idempotency-Key` header of writes that would repeat their effect if
//! sent twice (purchases, stock deltas), and the fingerprint that ties a key
//! to one request body. The records themselves are written by the Lua script
//! of each write, in the same atomic step as the write (`api/lua/`).

use std::future::{Ready, ready};

use actix_web::http::header::HeaderName;
use actix_web::{FromRequest, HttpRequest, dev::Payload};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Code};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A client's key for one write: 1 to 255 visible ASCII characters, e.g. a
/// fresh UUID. Required: a request without it gets 400.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse(request))
    }
}

fn parse(request: &HttpRequest) -> Result<IdempotencyKey, ApiError> {
    let header = request.headers().get(IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::bad_request(
            Code::IdempotencyKeyMissing,
            "the Idempotency-Key header is required (e.g. a fresh UUID per write)",
        )
    })?;
    let key = header.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            Code::IdempotencyKeyInvalid,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(IdempotencyKey(key.to_owned()))
}

/// SHA-256 (hex) of a request as parsed: the same key with another request
/// is refused (422) instead of replaying an answer to a different question.
pub fn fingerprint(request: &impl Serialize) -> String {
    Sha256::digest(serde_json::to_vec(request).unwrap_or_default())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
