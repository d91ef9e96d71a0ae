//! The one error type at the HTTP edge. Every failure a client can see is an
//! [`ApiError`] variant; this file is the only place a status code is chosen and
//! every body is `application/problem+json` (RFC 9457) with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{ValidationErrors, ValidationErrorsKind};

use crate::redis::RedisError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `items[0].quantity`.
    pub field: String,
    /// Machine-readable rule that failed, e.g. `length`, `range`, `email`.
    pub code: String,
    /// Human-readable explanation. Never echoes the submitted value.
    pub message: String,
}

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

/// Every problem the API answers with: the one table of codes, statuses and
/// titles (`Code::ALL`, pinned by a test and listed in the README). Variants
/// of [`ApiError`] and the handlers pick a code from here; nothing else
/// chooses a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    InvalidBody,
    InvalidQuery,
    InvalidPath,
    InvalidIfMatch,
    IdempotencyKeyMissing,
    IdempotencyKeyInvalid,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    SkuTaken,
    ProductArchived,
    ConcurrentUpdate,
    SelfLockout,
    LastAdmin,
    AlreadyCancelled,
    IdempotencyKeyInFlight,
    InsufficientStock,
    ProductUnavailable,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    IdempotencyKeyReused,
    PreconditionRequired,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    StorageFull,
    /// Answered by nginx itself (nginx/templates), never by the API: a
    /// request line or headers it cannot read, a request target too long.
    GatewayBadRequest,
    GatewayUriTooLong,
}

impl Code {
    pub const ALL: [Code; 33] = [
        Code::MalformedJson,
        Code::InvalidBody,
        Code::InvalidQuery,
        Code::InvalidPath,
        Code::InvalidIfMatch,
        Code::IdempotencyKeyMissing,
        Code::IdempotencyKeyInvalid,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::EmailTaken,
        Code::SkuTaken,
        Code::ProductArchived,
        Code::ConcurrentUpdate,
        Code::SelfLockout,
        Code::LastAdmin,
        Code::AlreadyCancelled,
        Code::IdempotencyKeyInFlight,
        Code::InsufficientStock,
        Code::ProductUnavailable,
        Code::PreconditionFailed,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::ValidationFailed,
        Code::IdempotencyKeyReused,
        Code::PreconditionRequired,
        Code::TooManyRequests,
        Code::InternalError,
        Code::ServiceUnavailable,
        Code::StorageFull,
        Code::GatewayBadRequest,
        Code::GatewayUriTooLong,
    ];

    /// (stable code, status, title): the table.
    fn entry(self) -> (&'static str, StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Code::MalformedJson => ("malformed_json", S::BAD_REQUEST, "Malformed request"),
            Code::InvalidBody => ("invalid_body", S::BAD_REQUEST, "Malformed request"),
            Code::InvalidQuery => ("invalid_query", S::BAD_REQUEST, "Malformed request"),
            Code::InvalidPath => ("invalid_path", S::BAD_REQUEST, "Malformed request"),
            Code::InvalidIfMatch => ("invalid_if_match", S::BAD_REQUEST, "Malformed request"),
            Code::IdempotencyKeyMissing => (
                "idempotency_key_missing",
                S::BAD_REQUEST,
                "Malformed request",
            ),
            Code::IdempotencyKeyInvalid => (
                "idempotency_key_invalid",
                S::BAD_REQUEST,
                "Malformed request",
            ),
            Code::Unauthorized => ("unauthorized", S::UNAUTHORIZED, "Authentication required"),
            Code::Forbidden => ("forbidden", S::FORBIDDEN, "Forbidden"),
            Code::NotFound => ("not_found", S::NOT_FOUND, "Not found"),
            Code::MethodNotAllowed => (
                "method_not_allowed",
                S::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            Code::EmailTaken => ("email_taken", S::CONFLICT, "Conflict"),
            Code::SkuTaken => ("sku_taken", S::CONFLICT, "Conflict"),
            Code::ProductArchived => ("product_archived", S::CONFLICT, "Conflict"),
            Code::ConcurrentUpdate => ("concurrent_update", S::CONFLICT, "Conflict"),
            Code::SelfLockout => ("self_lockout", S::CONFLICT, "Conflict"),
            Code::LastAdmin => ("last_admin", S::CONFLICT, "Conflict"),
            Code::AlreadyCancelled => ("already_cancelled", S::CONFLICT, "Conflict"),
            Code::IdempotencyKeyInFlight => ("idempotency_key_in_flight", S::CONFLICT, "Conflict"),
            Code::InsufficientStock => ("insufficient_stock", S::CONFLICT, "Insufficient stock"),
            Code::ProductUnavailable => ("product_unavailable", S::CONFLICT, "Product unavailable"),
            Code::PreconditionFailed => (
                "precondition_failed",
                S::PRECONDITION_FAILED,
                "Precondition failed",
            ),
            Code::PayloadTooLarge => (
                "payload_too_large",
                S::PAYLOAD_TOO_LARGE,
                "Payload too large",
            ),
            Code::UnsupportedMediaType => (
                "unsupported_media_type",
                S::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            Code::ValidationFailed => (
                "validation_failed",
                S::UNPROCESSABLE_ENTITY,
                "Invalid fields",
            ),
            Code::IdempotencyKeyReused => (
                "idempotency_key_reused",
                S::UNPROCESSABLE_ENTITY,
                "Idempotency key reused",
            ),
            Code::PreconditionRequired => (
                "precondition_required",
                S::PRECONDITION_REQUIRED,
                "Precondition required",
            ),
            Code::TooManyRequests => (
                "too_many_requests",
                S::TOO_MANY_REQUESTS,
                "Too many requests",
            ),
            Code::InternalError => (
                "internal_error",
                S::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ),
            Code::ServiceUnavailable => (
                "service_unavailable",
                S::SERVICE_UNAVAILABLE,
                "Service unavailable",
            ),
            Code::StorageFull => ("storage_full", S::SERVICE_UNAVAILABLE, "Storage full"),
            Code::GatewayBadRequest => ("bad_request", S::BAD_REQUEST, "Malformed request"),
            Code::GatewayUriTooLong => ("uri_too_long", S::URI_TOO_LONG, "URI too long"),
        }
    }

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

/// validator's error tree as a flat list sorted by field path.
pub fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut list = Vec::new();
    flatten_validation(errors, "", &mut list);
    list.sort_by(|a, b| a.field.cmp(&b.field));
    list
}

/// Turns validator's tree into a flat list. `params.value` (the submitted value,
/// possibly a password) is deliberately dropped.
fn flatten_validation(errors: &ValidationErrors, path: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let name = match (path.is_empty(), field.as_ref()) {
            // Struct-level (schema) errors belong to the struct itself.
            (_, "__all__") => path.to_owned(),
            (true, f) => f.to_owned(),
            (false, f) => format!("{path}.{f}"),
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let message = error
                        .message
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| {
                            match (error.params.get("min"), error.params.get("max")) {
                                (Some(min), Some(max)) => {
                                    format!("must be between {min} and {max}")
                                }
                                (Some(min), None) => format!("must be at least {min}"),
                                (None, Some(max)) => format!("must be at most {max}"),
                                (None, None) => format!("is invalid ({})", error.code),
                            }
                        });
                    out.push(FieldError {
                        field: name.clone(),
                        code: error.code.to_string(),
                        message,
                    });
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten_validation(inner, &name, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten_validation(inner, &format!("{name}[{index}]"), out);
                }
            }
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
