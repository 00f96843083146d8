//! `X-Correlation-Id`: accepted when valid, generated (`corr_…`) when absent,
//! echoed on every response, written into every log line of the request and
//! stored on every object the request creates.
//!
//! The request layer resolves the id once and writes the resolved value back
//! into the request's headers (as tower-http's request-id layer does), so
//! every later reader — the idempotent write path included — sees one value.

use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue};
use settle_core::correlation::{CorrelationId, MAX_CORRELATION_ID_CHARS};

pub const HEADER: &str = "x-correlation-id";

/// The request's correlation id, also available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct Correlation(pub CorrelationId);

/// Resolves the request's correlation id and writes it into `headers`.
/// An invalid id is an error; the request then carries a generated id, so
/// the refusal is still logged and answered under one.
pub fn resolve(headers: &mut HeaderMap) -> (CorrelationId, Option<ApiError>) {
    let mut values = headers.get_all(HEADER).iter();
    let (first, second) = (values.next(), values.next());
    let (id, refusal) = match (first, second) {
        (None, _) => (CorrelationId::generate(), None),
        (Some(value), None) => match value.to_str().ok().and_then(CorrelationId::parse) {
            Some(id) => (id, None),
            None => (CorrelationId::generate(), Some(invalid())),
        },
        (Some(_), Some(_)) => (CorrelationId::generate(), Some(invalid())),
    };
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        headers.insert(HEADER, value);
    }
    (id, refusal)
}

/// The id [`resolve`] left in the request's headers.
pub fn from_headers(headers: &HeaderMap) -> Option<CorrelationId> {
    headers.get(HEADER).and_then(|v| v.to_str().ok()).and_then(CorrelationId::parse)
}

fn invalid() -> ApiError {
    ApiError::invalid(
        "X-Correlation-Id",
        format!("X-Correlation-Id must be sent once, as 1 to {MAX_CORRELATION_ID_CHARS} characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"),
    )
}
