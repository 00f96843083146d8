//! Request ids and access logs. Every response carries `Request-Id`; every
//! error body names it; one JSON log line per request, with no secrets
//! (headers and bodies are never logged).
//!
//! Each request also runs inside a `request` span carrying `request_id`,
//! `correlation_id` and `trace_id`, so every log line written while it runs
//! names them (see `correlation` and `trace_context`). With an OTLP
//! exporter that span is the request's exported server span, named
//! `{method} {route}`, with the method, route template and status as
//! attributes (never the path, a header or a body).

use crate::correlation::{self, Correlation};
use crate::error::PendingErrorBody;
use crate::state::AppState;
use crate::trace_context::{self, TraceContext};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The address of the connection's peer, for audit records. Proxy headers
/// (`X-Forwarded-For`) are not trusted: behind a proxy this is the proxy.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())))
    }
}

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

pub async fn request_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    observe(&state, req, |req| next.run(req)).await
}

/// [`request_layer`] around any continuation (see `middleware.rs`).
pub async fn observe<F: Future<Output = Response>>(state: &AppState, mut req: Request, next: impl FnOnce(Request) -> F) -> Response {
    let started = Instant::now();
    let id = new_request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The route template, never the path itself: metrics labels stay bounded.
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    req.extensions_mut().insert(RequestId(id.clone()));
    let sent = crate::hygiene::SentHeaders::of(req.headers());
    req.extensions_mut().insert(sent);
    let (correlation_id, refusal) = correlation::resolve(req.headers_mut());
    let mut trace = TraceContext::from_headers(req.headers());
    // OpenTelemetry's name, kind and HTTP attributes are recorded only when
    // spans are exported: the access log stays as it was without an exporter.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        correlation_id = %correlation_id,
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    let exporting = trace_context::is_exporting();
    if exporting {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
        span.set_attribute("http.request.method", method.to_string());
        span.set_attribute("http.route", route.clone());
    }
    // With an exporter the span's ids become the request's (the response's
    // `traceparent` names the exported span).
    trace.adopt(&span);
    let trace_id = trace.trace_id_hex();
    span.record("trace_id", trace_id.as_str());
    // Refusals from layers outside the version layer (a bad correlation id, a
    // bad signature) still say which version they are rendered in.
    let version = req.headers().get(crate::versions::HEADER).and_then(|v| crate::versions::from_header(v).ok()).unwrap_or(crate::versions::NEWEST);
    req.extensions_mut().insert(Correlation(correlation_id.clone()));
    req.extensions_mut().insert(trace.clone());
    let mut response = match refusal {
        Some(error) => axum::response::IntoResponse::into_response(error),
        None => next(req).instrument(span.clone()).await,
    };
    if let Some(PendingErrorBody(error)) = response.extensions_mut().remove::<PendingErrorBody>() {
        state.metrics.error(error.code);
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
    if !response.headers().contains_key(crate::versions::HEADER)
        && let Ok(value) = HeaderValue::from_str(&version.to_string())
    {
        response.headers_mut().insert(crate::versions::HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(correlation_id.as_str()) {
        response.headers_mut().insert(correlation::HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
        response.headers_mut().insert(trace_context::TRACEPARENT, value);
    }
    if let Some(value) = trace.tracestate.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
        response.headers_mut().insert(trace_context::TRACESTATE, value);
    }
    if let Some(crate::error::AnsweredCode(code)) = response.extensions().get::<crate::error::AnsweredCode>() {
        state.metrics.error(code);
    }
    let status = response.status().as_u16();
    if response.headers().contains_key("idempotent-replayed") {
        state.metrics.idempotent_replays.inc();
    }
    if response.headers().contains_key("deprecation") {
        state.metrics.deprecated_requests.inc();
    }
    state.metrics.request(method.as_str(), &route, status, started.elapsed());
    let latency_us = started.elapsed().as_micros() as u64;
    if exporting {
        span.set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.set_status(opentelemetry::trace::Status::error("server error"));
        }
    }
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(request_id = %id, %correlation_id, %trace_id, %method, %path, status, latency_us, "request");
        } else {
            tracing::info!(request_id = %id, %correlation_id, %trace_id, %method, %path, status, latency_us, "request");
        }
    });
    response
}
