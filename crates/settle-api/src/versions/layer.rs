//! The version layer: axum middleware around every route.
//!
//! For each request it picks the version (the `Settle-Version` header, else
//! the key's organization's pin, else the newest), refuses an invalid header
//! before anything runs, turns an older-shape request body into the newest
//! shape, lets the handler run, turns the newest-shape response (also an
//! idempotent replay, which is stored in the newest shape) back into the
//! client's version, and adds `Settle-Version` and any deprecation headers.
//! When the version is the newest, bodies pass through untouched.

use super::json::Json;
use super::{Change, HEADER, NEWEST, changes_after, find, from_header, resolve_pin};
use crate::deprecation::{self, Notice};
use crate::error::{ApiError, PendingErrorBody};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use settle_core::api_version::ApiVersion;
use settle_core::limits::MAX_BATCH_BODY_BYTES;
use settle_core::tenancy::Principal;

/// The largest response body the layer will transform. Responses are ours
/// and bounded (pages of 100, batches of at most 16,384 transactions).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The version a request is served in, for handlers that show it.
#[derive(Clone, Copy, Debug)]
pub struct ServedVersion(pub ApiVersion);

fn with_version(mut response: Response, version: ApiVersion) -> Response {
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    serve(&state, request, |request| next.run(request)).await
}

/// [`layer`] around any continuation (see `middleware.rs`).
pub async fn serve<F: Future<Output = Response>>(state: &AppState, request: Request, next: impl FnOnce(Request) -> F) -> Response {
    let requested = match request.headers().get(HEADER).map(from_header).transpose() {
        Ok(v) => v,
        Err(error) => return with_version(error.into_response(), NEWEST),
    };
    let (mut parts, body) = request.into_parts();
    // A missing, bad or unknown key is the handler's to refuse; a key that
    // could not be looked up must not be answered in a shape it did not pin.
    let principal = if parts.headers.contains_key(header::AUTHORIZATION) {
        match Principal::from_request_parts(&mut parts, state).await {
            Ok(principal) => Some(principal),
            Err(error) if error.status == axum::http::StatusCode::UNAUTHORIZED => None,
            Err(error) => return with_version(error.into_response(), requested.unwrap_or(NEWEST)),
        }
    } else {
        None
    };
    let version = requested.or_else(|| principal.as_ref().map(|p| resolve_pin(p.api_version))).unwrap_or(NEWEST);
    let method = parts.method.clone();
    let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned());
    parts.extensions.insert(ServedVersion(version));
    let mut request = Request::from_parts(parts, body);

    let changes: Vec<&'static Change> = changes_after(version).collect();
    if let Some(route) = route.as_deref()
        && changes.iter().any(|c| (c.touches_request)(&method, route))
    {
        request = match upgrade_request(request, route, &changes).await {
            Ok(r) => r,
            Err(error) => return finish(error.into_response(), version, state, principal.as_ref(), &[]),
        };
    }

    let mut response = next(request).await;
    if !changes.is_empty() {
        response = downgrade_response(response, &changes).await;
    }

    let mut notices = Vec::new();
    if let Some(v) = find(version)
        && let Some(deprecated_at) = v.deprecated_at
    {
        notices.push(Notice { label: deprecation::version_label(version), deprecated_at, sunset_at: v.sunset_at, link: deprecation::VERSIONS_LINK.to_owned() });
    }
    if let Some(route) = route.as_deref() {
        for e in state.deprecated_endpoints.iter().filter(|e| e.method == method && e.route == route) {
            notices.push(Notice { label: e.label(), deprecated_at: e.deprecated_at, sunset_at: e.sunset_at, link: e.link.clone() });
        }
    }
    finish(response, version, state, principal.as_ref(), &notices)
}

fn finish(response: Response, version: ApiVersion, state: &AppState, principal: Option<&Principal>, notices: &[Notice]) -> Response {
    let mut response = with_version(response, version);
    deprecation::add_headers(response.headers_mut(), notices);
    if let Some(p) = principal {
        let now = state.clock.now();
        for n in notices {
            state.deprecation_usage.record(&p.key_id, &n.label, now);
        }
    }
    response
}

/// Applies the request upgrades oldest first. A body that is not a strict
/// JSON object passes through unchanged, so the handler refuses it exactly
/// as it refuses it in any version.
async fn upgrade_request(request: Request, route: &str, changes: &[&'static Change]) -> Result<Request, ApiError> {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BODY_BYTES) {
        // Too large for any endpoint: the handler answers 413 itself.
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BATCH_BODY_BYTES).await.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            crate::error::ErrorType::InvalidRequestError,
            "request_too_large",
            format!("request bodies are limited to {MAX_BATCH_BODY_BYTES} bytes"),
        )
    })?;
    let parsed = std::str::from_utf8(&bytes).ok().filter(|t| t.trim_start().starts_with('{')).and_then(|t| Json::parse(t).ok());
    let Some(mut json) = parsed else {
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    };
    let mut changed = false;
    for change in changes.iter().rev() {
        changed |= (change.upgrade_request)(route, &mut json)?;
    }
    if !changed {
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    }
    let upgraded = json.to_bytes().map_err(|e| ApiError::internal(&e))?;
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(upgraded.len()));
    Ok(Request::from_parts(parts, Body::from(upgraded)))
}

/// Applies the response downgrades newest first: to an error still to be
/// rendered (its `param`), or to a JSON body.
async fn downgrade_response(response: Response, changes: &[&'static Change]) -> Response {
    let (mut parts, body) = response.into_parts();
    if let Some(PendingErrorBody(error)) = parts.extensions.get_mut::<PendingErrorBody>() {
        for change in changes {
            if let Some(old) = error.param.as_deref().and_then(change.downgrade_param) {
                error.param = Some(old);
            }
        }
        return Response::from_parts(parts, body);
    }
    let is_json = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Response::from_parts(parts, body);
    }
    let bytes = match axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let Some(mut json) = std::str::from_utf8(&bytes).ok().and_then(|t| Json::parse(t).ok()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    for change in changes {
        (change.downgrade_response)(&mut json);
    }
    match json.to_bytes() {
        Ok(out) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}
