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

/// Everything that can go wrong, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (JSON syntax, wrong types, unknown fields,
    /// bad query string, bad path parameter, missing header).
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
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
    Conflict { code: &'static str, detail: String },
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
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
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

    /// Stable machine-readable code; part of the API contract.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => code,
            Self::Validation { .. } => "validation_failed",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InsufficientStock { .. } => "insufficient_stock",
            Self::ProductUnavailable { .. } => "product_unavailable",
            Self::PreconditionFailed { .. } => "precondition_failed",
            Self::PreconditionRequired => "precondition_required",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::Unavailable(_) => "service_unavailable",
            Self::StorageFull => "storage_full",
            Self::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "Malformed request",
            Self::Validation { .. } => "Invalid fields",
            Self::Unauthorized(_) => "Authentication required",
            Self::Forbidden => "Forbidden",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::Conflict { .. } => "Conflict",
            Self::InsufficientStock { .. } => "Insufficient stock",
            Self::ProductUnavailable { .. } => "Product unavailable",
            Self::PreconditionFailed { .. } => "Precondition failed",
            Self::PreconditionRequired => "Precondition required",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::IdempotencyKeyReused => "Idempotency key reused",
            Self::TooManyRequests { .. } => "Too many requests",
            Self::Unavailable(_) => "Service unavailable",
            Self::StorageFull => "Storage full",
            Self::Internal(_) => "Internal server error",
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
            problem_type: format!("urn:evergreen:problem:{code}"),
            title: self.title(),
            status: status.as_u16(),
            detail,
            code,
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
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. }
            | Self::InsufficientStock { .. }
            | Self::ProductUnavailable { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
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
                "invalid_body",
                format!("request body does not match the schema: {inner}"),
            ),
            E::Deserialize(inner) => ApiError::bad_request(
                "malformed_json",
                format!("request body is not valid JSON: {inner}"),
            ),
            other => {
                ApiError::bad_request("invalid_body", format!("cannot read request body: {other}"))
            }
        };
        api_error.into()
    }
}

/// Rejections of `web::Query`.
pub fn query_error_handler(
    error: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", format!("invalid query string: {error}")).into()
}

/// Rejections of `web::Path` (e.g. an id that is not a UUID).
pub fn path_error_handler(error: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_path", format!("invalid path parameter: {error}")).into()
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
