//! Request ids and access logs. Every response carries `Request-Id`; every
//! error body names it; one JSON log line per request, with no secrets
//! (headers and bodies are never logged).

use crate::error::PendingErrorBody;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The id of the current request, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_request_id() -> String {
    // Process-unique and time-ordered: a random per-process prefix would add
    // nothing a log reader needs, so use the start time and a counter.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0));
    format!("req_{start:x}{:08x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub async fn request_layer(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = new_request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Some(PendingErrorBody(error)) = response.extensions_mut().remove::<PendingErrorBody>() {
        let body = error.body(&id);
        // Keep the status and the headers the error was raised with (Retry-After, RateLimit).
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        response = Response::from_parts(parts, axum::body::Body::from(body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::error!(request_id = %id, %method, %path, status, latency_us, "request");
    } else {
        tracing::info!(request_id = %id, %method, %path, status, latency_us, "request");
    }
    response
}
