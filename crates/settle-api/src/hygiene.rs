//! HTTP hygiene: the bounds and headers every request and response gets,
//! whatever the endpoint. Header limits, a per-request timeout, CORS (off
//! unless origins are configured) and security headers; body limits live in
//! `body`, engine overload in `commands`. See docs/http.md.

use crate::error::{ApiError, ErrorType};
use crate::rate_limit::RateLimits;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers accepted before 431. Hyper refuses more than 100 on its
/// own (a bare 431 and a closed connection); this answers first, with the
/// error envelope.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// Bytes of request header names and values accepted before 431 (hyper's own
/// bound is its ~400 KiB read buffer).
pub const MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;
/// Default time a request may take, from the first byte of its body to its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long browsers may cache a CORS preflight.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);
/// What `Retry-After` says on 503s: come back in a second.
pub const RETRY_AFTER_SECS: &str = "1";

/// The HTTP-level configuration of a server. Plain data plus the limiter.
pub struct HttpPolicy {
    pub rate_limits: RateLimits,
    /// A request still unanswered after this gets 503 `request_timeout`.
    pub request_timeout: Duration,
    /// Origins allowed to call the API from a browser; empty: CORS is off.
    pub cors_allow_origins: Vec<HeaderValue>,
    /// `Strict-Transport-Security: max-age=…` on every response; `None`: not sent.
    pub hsts_max_age_secs: Option<u64>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy { rate_limits: RateLimits::default(), request_timeout: DEFAULT_REQUEST_TIMEOUT, cors_allow_origins: Vec::new(), hsts_max_age_secs: None }
    }
}

/// 503 with `Retry-After`, for refusals that are about load, not the request.
pub fn unavailable_now(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// The headers the client sent, counted before the request layer adds its
/// own (a generated `X-Correlation-Id`): the limits bound what a client
/// sends, so exactly the limit passes.
#[derive(Clone, Copy, Debug)]
pub struct SentHeaders {
    count: usize,
    bytes: usize,
}

impl SentHeaders {
    pub fn of(headers: &axum::http::HeaderMap) -> SentHeaders {
        SentHeaders { count: headers.len(), bytes: headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum() }
    }
}

/// 431 for too many or too large request headers, before anything else runs.
pub async fn header_limits(request: Request, next: Next) -> Response {
    limit_headers(request, |request| next.run(request)).await
}

/// [`header_limits`] around any continuation (see `middleware.rs`).
pub async fn limit_headers<F: Future<Output = Response>>(request: Request, next: impl FnOnce(Request) -> F) -> Response {
    let SentHeaders { count, bytes } = request.extensions().get::<SentHeaders>().copied().unwrap_or_else(|| SentHeaders::of(request.headers()));
    if count > MAX_REQUEST_HEADERS || bytes > MAX_REQUEST_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorType::InvalidRequestError,
            "request_headers_too_large",
            format!("requests may carry at most {MAX_REQUEST_HEADERS} headers of at most {MAX_REQUEST_HEADER_BYTES} bytes in all"),
        )
        .into_response();
    }
    next(request).await
}

/// Bounds the time of a request. The handler is dropped on expiry; a write
/// already handed to the engine may still commit, so the answer says to
/// retry with the same `Idempotency-Key` to learn the outcome.
pub async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    bounded(&state, request, |request| next.run(request)).await
}

/// [`timeout`] around any continuation (see `middleware.rs`).
pub async fn bounded<F: Future<Output = Response>>(state: &AppState, request: Request, next: impl FnOnce(Request) -> F) -> Response {
    let limit = state.http.request_timeout;
    match tokio::time::timeout(limit, next(request)).await {
        Ok(response) => response,
        Err(_) => unavailable_now(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ApiError,
            "request_timeout",
            format!(
                "the request was not answered within {} ms; a write may or may not have been applied, so retry with the same Idempotency-Key to learn which",
                limit.as_millis()
            ),
        )),
    }
}

/// Security headers on every response. `Cache-Control` and the others are
/// only set when a handler did not choose its own.
pub async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    secure(&state, next.run(request).await)
}

/// Adds the security headers to an answer (see [`security_headers`]).
pub fn secure(state: &AppState, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if let Some(max_age) = state.http.hsts_max_age_secs
        && let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}"))
    {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    response
}

/// CORS for the configured origins, or nothing (no CORS headers, preflights
/// answer 405 like any OPTIONS) when none are configured.
pub fn cors(state: &AppState) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    let origins = &state.http.cors_allow_origins;
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("settle-version"),
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("content-digest"),
            HeaderName::from_static("signature-input"),
            HeaderName::from_static("signature"),
        ])
        .expose_headers([
            HeaderName::from_static("request-id"),
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            header::RETRY_AFTER,
            HeaderName::from_static("settle-version"),
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            header::LOCATION,
            HeaderName::from_static("preference-applied"),
            HeaderName::from_static("deprecation"),
            HeaderName::from_static("sunset"),
            header::LINK,
        ])
        .max_age(CORS_MAX_AGE);
    tower::util::Either::Left(layer)
}
