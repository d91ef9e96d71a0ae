//! The one error type at the HTTP edge. Every failure a client can see is an
//! [`ApiError`] variant; this file is the only place a status code is chosen and
//! every body is `application/problem+json` (RFC 9457) with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::ValidationErrors;

use crate::redis::RedisError;
pub use crate::validation::FieldError;
use crate::validation::field_errors;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI naming the problem type, `urn:evergreen:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: &'static str,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Product that lacks stock (`insufficient_stock`) or is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    /// Units that were available (`insufficient_stock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
}

/// Declares [`Code`] from one line per problem: the variant, its stable code,
/// status and title. The enum, `Code::ALL` and the lookups come from the same
/// lines, so adding a code is one line here (and one row in `docs/api.md`,
/// which a test compares with this table).
macro_rules! problem_codes {
    ($($(#[$doc:meta])* $variant:ident => ($code:literal, $status:ident, $title:literal),)*) => {
        /// Every problem the API answers with: the one table of codes, statuses
        /// and titles (pinned by a test and listed in `docs/api.md`). Variants
        /// of [`ApiError`] and the handlers pick a code from here; nothing else
        /// chooses a status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// (stable code, status, title): the code's line of the table.
            fn entry(self) -> (&'static str, StatusCode, &'static str) {
                match self {
                    $(Code::$variant => ($code, StatusCode::$status, $title),)*
                }
            }
        }
    };
}

problem_codes! {
    MalformedJson => ("malformed_json", BAD_REQUEST, "Malformed request"),
    InvalidBody => ("invalid_body", BAD_REQUEST, "Malformed request"),
    InvalidQuery => ("invalid_query", BAD_REQUEST, "Malformed request"),
    InvalidPath => ("invalid_path", BAD_REQUEST, "Malformed request"),
    InvalidIfMatch => ("invalid_if_match", BAD_REQUEST, "Malformed request"),
    IdempotencyKeyMissing => ("idempotency_key_missing", BAD_REQUEST, "Malformed request"),
    IdempotencyKeyInvalid => ("idempotency_key_invalid", BAD_REQUEST, "Malformed request"),
    Unauthorized => ("unauthorized", UNAUTHORIZED, "Authentication required"),
    Forbidden => ("forbidden", FORBIDDEN, "Forbidden"),
    NotFound => ("not_found", NOT_FOUND, "Not found"),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed"),
    EmailTaken => ("email_taken", CONFLICT, "Conflict"),
    SkuTaken => ("sku_taken", CONFLICT, "Conflict"),
    ProductArchived => ("product_archived", CONFLICT, "Conflict"),
    ConcurrentUpdate => ("concurrent_update", CONFLICT, "Conflict"),
    SelfLockout => ("self_lockout", CONFLICT, "Conflict"),
    LastAdmin => ("last_admin", CONFLICT, "Conflict"),
    AlreadyCancelled => ("already_cancelled", CONFLICT, "Conflict"),
    IdempotencyKeyInFlight => ("idempotency_key_in_flight", CONFLICT, "Conflict"),
    InsufficientStock => ("insufficient_stock", CONFLICT, "Insufficient stock"),
    ProductUnavailable => ("product_unavailable", CONFLICT, "Product unavailable"),
    PreconditionFailed => ("precondition_failed", PRECONDITION_FAILED, "Precondition failed"),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE, "Payload too large"),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
    ValidationFailed => ("validation_failed", UNPROCESSABLE_ENTITY, "Invalid fields"),
    IdempotencyKeyReused => ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Idempotency key reused"),
    PreconditionRequired => ("precondition_required", PRECONDITION_REQUIRED, "Precondition required"),
    TooManyRequests => ("too_many_requests", TOO_MANY_REQUESTS, "Too many requests"),
    InternalError => ("internal_error", INTERNAL_SERVER_ERROR, "Internal server error"),
    ServiceUnavailable => ("service_unavailable", SERVICE_UNAVAILABLE, "Service unavailable"),
    StorageFull => ("storage_full", SERVICE_UNAVAILABLE, "Storage full"),
    /// Answered by nginx itself (nginx/templates), never by the API: a
    /// request line or headers it cannot read, a request target too long.
    GatewayBadRequest => ("bad_request", BAD_REQUEST, "Malformed request"),
    GatewayUriTooLong => ("uri_too_long", URI_TOO_LONG, "URI too long"),
}

impl Code {
    /// The stable machine-readable code; part of the API contract.
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }
    pub fn status(self) -> StatusCode {
        self.entry().1
    }
    pub fn title(self) -> &'static str {
        self.entry().2
    }
}

/// Everything that can go wrong, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (JSON syntax, wrong types, unknown fields,
    /// bad query string, bad path parameter, missing header).
    #[error("{detail}")]
    BadRequest { code: Code, detail: String },
    /// 422: the request is well-formed but fields break the rules.
    #[error("validation failed")]
    Validation { errors: Vec<FieldError> },
    /// 401: no credentials, or credentials that are invalid, expired or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role does not allow this.
    #[error("this operation needs the admin role")]
    Forbidden,
    /// 404: nothing here, or nothing this caller may see.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not; `Allow` lists the ones that do.
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },
    /// 409: the request conflicts with the current state.
    #[error("{detail}")]
    Conflict { code: Code, detail: String },
    /// 409: a purchase line asks for more than the stock holds.
    #[error("not enough stock for product {product_id}: {available} available")]
    InsufficientStock { product_id: Uuid, available: i64 },
    /// 409: the product is archived or unknown at purchase time.
    #[error("product {product_id} cannot be bought: {reason}")]
    ProductUnavailable {
        product_id: Uuid,
        reason: &'static str,
    },
    /// 412: `If-Match` does not name the current version.
    #[error("the resource changed since it was read (current ETag {current})")]
    PreconditionFailed { current: String },
    /// 428: an `If-Match` header is required for this write.
    #[error("this write needs an If-Match header with the ETag from a GET")]
    PreconditionRequired,
    /// 413: body bigger than the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: body is not `application/json`.
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// 422: an idempotency key was reused with a different request body.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// 429: too many attempts; retry after the given seconds.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    /// 503: Redis (or the replicas that must confirm a write) is unavailable.
    /// The write was not confirmed; retrying with the same idempotency key is safe.
    #[error("{0}")]
    Unavailable(String),
    /// 503: Redis is full (`maxmemory` reached) and refuses writes; nothing
    /// was written and reads still work. Retrying is safe; it succeeds once
    /// an operator has made room (see the `RedisOutOfMemory` alert).
    #[error("the store cannot take new writes right now (storage is full); retry later")]
    StorageFull,
    /// 500: a bug or an unexpected state. Details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Seconds a client should wait before retrying a 503: about one Sentinel failover.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;
/// Seconds before retrying when Redis is full: room is made by an operator,
/// not by a failover, so retrying every 2 s would only add load.
const STORAGE_FULL_RETRY_AFTER_SECS: u64 = 30;

impl ApiError {
    /// A 400 with one of the table's malformed-request codes.
    pub fn bad_request(code: Code, detail: impl Into<String>) -> Self {
        debug_assert_eq!(code.status(), StatusCode::BAD_REQUEST, "{code:?}");
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// A 409 with one of the table's conflict codes.
    pub fn conflict(code: Code, detail: impl Into<String>) -> Self {
        debug_assert_eq!(code.status(), StatusCode::CONFLICT, "{code:?}");
        Self::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn invalid_field(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self::Validation {
            errors: vec![FieldError {
                field: field.to_owned(),
                code: code.to_owned(),
                message: message.into(),
            }],
        }
    }

    /// Its entry in the table of codes.
    pub fn code(&self) -> Code {
        match self {
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => *code,
            Self::Validation { .. } => Code::ValidationFailed,
            Self::Unauthorized(_) => Code::Unauthorized,
            Self::Forbidden => Code::Forbidden,
            Self::NotFound(_) => Code::NotFound,
            Self::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            Self::InsufficientStock { .. } => Code::InsufficientStock,
            Self::ProductUnavailable { .. } => Code::ProductUnavailable,
            Self::PreconditionFailed { .. } => Code::PreconditionFailed,
            Self::PreconditionRequired => Code::PreconditionRequired,
            Self::PayloadTooLarge { .. } => Code::PayloadTooLarge,
            Self::UnsupportedMediaType => Code::UnsupportedMediaType,
            Self::IdempotencyKeyReused => Code::IdempotencyKeyReused,
            Self::TooManyRequests { .. } => Code::TooManyRequests,
            Self::Unavailable(_) => Code::ServiceUnavailable,
            Self::StorageFull => Code::StorageFull,
            Self::Internal(_) => Code::InternalError,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let detail = match self {
            // Internals are logged by the request logger, never sent.
            Self::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let code = self.code();
        Problem {
            problem_type: format!("urn:evergreen:problem:{}", code.as_str()),
            title: code.title(),
            status: status.as_u16(),
            detail,
            code: code.as_str(),
            errors: match self {
                Self::Validation { errors } => errors.clone(),
                _ => Vec::new(),
            },
            product_id: match self {
                Self::InsufficientStock { product_id, .. }
                | Self::ProductUnavailable { product_id, .. } => Some(*product_id),
                _ => None,
            },
            available: match self {
                Self::InsufficientStock { available, .. } => Some(*available),
                _ => None,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        match self {
            Self::Unauthorized(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::TooManyRequests {
                retry_after_secs, ..
            } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            Self::Unavailable(_) => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                ));
            }
            Self::StorageFull => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from(STORAGE_FULL_RETRY_AFTER_SECS),
                ));
            }
            _ => {}
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        response.body(body)
    }
}

impl From<RedisError> for ApiError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Unavailable(detail) => Self::Unavailable(detail),
            RedisError::CutOff => Self::Unavailable(RedisError::CutOff.to_string()),
            RedisError::Unconfirmed => Self::Unavailable(
                "the write could not be confirmed by a replica; it may not have been saved. \
                 Retry (with the same Idempotency-Key for purchases)"
                    .to_owned(),
            ),
            RedisError::OutOfMemory => Self::StorageFull,
            RedisError::Unexpected(detail) => Self::Internal(detail),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Validation {
            errors: field_errors(&errors),
        }
    }
}

/// Rejections of `web::Json`: size, media type, syntax, types, unknown fields.
pub fn json_error_handler(
    limit: usize,
) -> impl Fn(actix_web::error::JsonPayloadError, &HttpRequest) -> actix_web::Error + Clone {
    move |error, _request| {
        use actix_web::error::JsonPayloadError as E;
        let api_error = match &error {
            E::Overflow { .. } | E::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            E::ContentType => ApiError::UnsupportedMediaType,
            E::Deserialize(inner) if inner.is_data() => ApiError::bad_request(
                Code::InvalidBody,
                format!("request body does not match the schema: {inner}"),
            ),
            E::Deserialize(inner) => ApiError::bad_request(
                Code::MalformedJson,
                format!("request body is not valid JSON: {inner}"),
            ),
            other => ApiError::bad_request(
                Code::InvalidBody,
                format!("cannot read request body: {other}"),
            ),
        };
        api_error.into()
    }
}

/// Rejections of `web::Query`.
pub fn query_error_handler(
    error: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(Code::InvalidQuery, format!("invalid query string: {error}")).into()
}

/// Rejections of `web::Path` (e.g. an id that is not a UUID).
pub fn path_error_handler(error: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(
        Code::InvalidPath,
        format!("invalid path parameter: {error}"),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.error_response();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = to_bytes(response.into_body()).await.expect("body");
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).expect("json body"),
        )
    }

    /// The contract: changing a line here changes what clients rely on.
    #[test]
    fn the_table_of_codes_is_pinned() {
        let table: Vec<String> = Code::ALL
            .iter()
            .map(|code| {
                format!(
                    "{} {} {}",
                    code.as_str(),
                    code.status().as_u16(),
                    code.title()
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                "malformed_json 400 Malformed request",
                "invalid_body 400 Malformed request",
                "invalid_query 400 Malformed request",
                "invalid_path 400 Malformed request",
                "invalid_if_match 400 Malformed request",
                "idempotency_key_missing 400 Malformed request",
                "idempotency_key_invalid 400 Malformed request",
                "unauthorized 401 Authentication required",
                "forbidden 403 Forbidden",
                "not_found 404 Not found",
                "method_not_allowed 405 Method not allowed",
                "email_taken 409 Conflict",
                "sku_taken 409 Conflict",
                "product_archived 409 Conflict",
                "concurrent_update 409 Conflict",
                "self_lockout 409 Conflict",
                "last_admin 409 Conflict",
                "already_cancelled 409 Conflict",
                "idempotency_key_in_flight 409 Conflict",
                "insufficient_stock 409 Insufficient stock",
                "product_unavailable 409 Product unavailable",
                "precondition_failed 412 Precondition failed",
                "payload_too_large 413 Payload too large",
                "unsupported_media_type 415 Unsupported media type",
                "validation_failed 422 Invalid fields",
                "idempotency_key_reused 422 Idempotency key reused",
                "precondition_required 428 Precondition required",
                "too_many_requests 429 Too many requests",
                "internal_error 500 Internal server error",
                "service_unavailable 503 Service unavailable",
                "storage_full 503 Storage full",
                "bad_request 400 Malformed request",
                "uri_too_long 414 URI too long",
            ]
        );
        let distinct: std::collections::HashSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), Code::ALL.len(), "codes are unique");
    }

    #[actix_web::test]
    async fn internal_errors_never_leak_their_details() {
        let (status, content_type, body) = render(ApiError::Internal(
            "redis said WRONGTYPE at key secret:1".into(),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));
        assert!(!body.to_string().contains("WRONGTYPE"), "{body}");
        assert_eq!(body["code"], "internal_error");
    }

    #[actix_web::test]
    async fn unavailable_is_a_retryable_503() {
        let response = ApiError::Unavailable("no master".into()).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }

    #[actix_web::test]
    async fn stock_conflicts_name_the_product() {
        let product_id = Uuid::new_v4();
        let (status, _, body) = render(ApiError::InsufficientStock {
            product_id,
            available: 3,
        })
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["product_id"], product_id.to_string());
        assert_eq!(body["available"], 3);
        assert_eq!(body["type"], "urn:evergreen:problem:insufficient_stock");
    }
}
