//! Structured JSON logs and the per-request line. The request id comes from
//! nginx's `X-Request-Id` when it is a sane token, otherwise one is made; it
//! sits on the request span (so every log line of the request carries it) and
//! goes back to the client in the response.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// JSON lines on stdout; `RUST_LOG` filters (default `info`).
pub fn init_subscriber() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_span_events(FmtSpan::NONE)
        .flatten_event(true)
        .try_init();
}

/// Accepts ids nginx or a client would send: 1..=128 chars of `[A-Za-z0-9._-]`.
fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let valid = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid.then(|| text.to_owned())
}

/// Middleware: request id, request span, and one log line per request.
pub async fn request_log(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, Error> {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let method = request.method().to_string();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "UNKNOWN".to_owned());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let result = next.call(request).instrument(span.clone()).await;
    let _entered = span.enter();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            if let Some(error) = response.response().error() {
                // Internal details stay in the log, tied to the request id.
                if status >= 500 {
                    tracing::error!(status, elapsed_ms, error = %error, "request failed");
                } else {
                    tracing::info!(status, elapsed_ms, error = %error, "request");
                }
            } else {
                tracing::info!(status, elapsed_ms, "request");
            }
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        }
        Err(error) => {
            tracing::error!(elapsed_ms, error = %error, "request failed before a response");
            Err(error)
        }
    }
}
