//! The API's middleware, composed into two layers around every route.
//!
//! Each concern keeps its own module (`observe`, `hygiene`, `rate_limit`,
//! `signing`, `versions`) and offers a function that takes the rest of the
//! request's handling as a continuation; here they are nested into one
//! future. Why: every `from_fn` layer boxes its future and a clone of the
//! service inside it for each request, and with eight of them that was a
//! large share of a worker's time when clients send one transfer per
//! request. CORS, a `tower-http` layer, sits between the two, where it
//! always was. Order, outermost first: security headers, observe (request
//! id, log, metrics), CORS, header limits, timeout, rate limit, signature,
//! version.

use crate::state::AppState;
use crate::{hygiene, observe, rate_limit, signing, versions};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Outside CORS: the security headers on every answer (refusals of
/// `observe` included), then the request id, access log and metrics.
pub async fn outer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = observe::observe(&state, request, |request| next.run(request)).await;
    hygiene::secure(&state, response)
}

/// Inside CORS: every check a request passes before its handler, and the
/// version's reshaping of its body and answer.
pub async fn inner(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let state = &state;
    hygiene::limit_headers(request, |request| {
        hygiene::bounded(state, request, |request| {
            rate_limit::limit(state, request, |request| {
                signing::verify_request(state, request, |request| versions::layer::serve(state, request, |request| next.run(request)))
            })
        })
    })
    .await
}
