//! Request bodies: size-limited, UTF-8, strict JSON (unknown fields and
//! wrong types are refused with the exact `param` at fault).

use crate::error::{ApiError, ErrorType};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use settle_core::limits::MAX_BODY_BYTES;

/// A JSON body of at most `LIMIT` bytes, plus its canonical form for
/// idempotency fingerprints (computed only when the request carries an
/// `Idempotency-Key`: it costs a second pass over the body).
pub struct JsonBody<T, const LIMIT: usize = MAX_BODY_BYTES> {
    pub value: T,
    /// The body re-serialized with sorted keys and no whitespace; empty
    /// when the request has neither an `Idempotency-Key` nor `Prefer: respond-async`.
    pub canonical: Vec<u8>,
    /// The body as received (`{}` for an empty one), for a handler that
    /// decides only after parsing that it needs the canonical form.
    pub raw: axum::body::Bytes,
}

/// An oversized body up to this size is read and discarded before the 413
/// goes out, so that ordinary clients read the error instead of a reset
/// connection; anything larger is cut off.
const MAX_DRAIN_BYTES: usize = 32 * 1024 * 1024;

async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > MAX_DRAIN_BYTES {
            break;
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorType::InvalidRequestError, "request_too_large", format!("request bodies are limited to {limit} bytes"))
}

/// Why a body could not be read: past its limit (`too_large`, a 413), or
/// broken on the way — chunked encoding that is not, a connection that
/// ended before the length it declared — which is the client's fault and
/// no size at all: a 400.
pub fn unreadable(error: axum::Error, too_large: impl FnOnce() -> ApiError) -> ApiError {
    let inner = error.into_inner();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return too_large();
        }
        cause = e.source();
    }
    ApiError::invalid("body", "the request body could not be read: its chunked encoding is broken or it ended before its Content-Length")
}

/// A body as read, before its type matters. This part and [`checked_text`]
/// are not generic, so they are compiled once rather than once per request
/// type (docs/benchmarks.md, "Build time").
struct Received {
    raw: axum::body::Bytes,
    wants_canonical: bool,
}

/// Reads at most `limit` bytes (`{}` for an empty body).
async fn receive(req: Request, limit: usize) -> Result<Received, ApiError> {
    let wants_canonical = req.headers().contains_key(crate::idempotency::HEADER) || crate::operations::prefers_async(req.headers());
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        if declared.is_some_and(|n| n <= MAX_DRAIN_BYTES) {
            drain(req.into_body()).await;
        }
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| unreadable(e, || too_large(limit)))?;
    let raw = if bytes.iter().all(u8::is_ascii_whitespace) { axum::body::Bytes::from_static(b"{}") } else { bytes };
    Ok(Received { raw, wants_canonical })
}

/// The body as text: UTF-8, a JSON object, no NUL.
fn checked_text(raw: &[u8]) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(raw).map_err(|_| ApiError::invalid("body", "the request body is not valid UTF-8"))?;
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::invalid("body", "the request body must be a JSON object"));
    }
    if has_nul_escape(text) {
        return Err(nul_refused(text));
    }
    Ok(text)
}

/// The error of a body that failed its typed parse, naming the field at
/// fault when the JSON itself is sound.
fn parse_error(path: String, inner: serde_json::Error) -> ApiError {
    if inner.is_syntax() || inner.is_eof() {
        ApiError::invalid("body", format!("the request body is not valid JSON: {inner}"))
    } else {
        ApiError::invalid(if path == "." { String::from("body") } else { path }, inner.to_string())
    }
}

/// Key order and whitespace do not change a request's fingerprint.
fn canonical(text: &str) -> Result<Vec<u8>, ApiError> {
    let generic: serde_json::Value = serde_json::from_str(text).map_err(|e| ApiError::invalid("body", format!("the request body is not valid JSON: {e}")))?;
    serde_json::to_vec(&generic).map_err(|e| ApiError::internal(&e))
}

/// The typed parse is the strict one (duplicate fields, trailing data,
/// unknown fields): it runs whether or not the request is keyed.
///
/// It runs without tracking the path first (tracking costs on every value of
/// every request); only a body that fails is parsed again with it, to name
/// the offending field.
fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = match <T as serde::Deserialize>::deserialize(&mut de) {
        Ok(value) => value,
        Err(_) => {
            de = serde_json::Deserializer::from_str(text);
            let tracked: Result<T, _> = serde_path_to_error::deserialize(&mut de);
            tracked.map_err(|e| {
                let path = e.path().to_string();
                parse_error(path, e.into_inner())
            })?
        }
    };
    de.end().map_err(|e| ApiError::invalid("body", format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let received = receive(req, LIMIT).await?;
        let text = checked_text(&received.raw)?;
        let value = parse::<T>(text)?;
        let canonical = if received.wants_canonical { canonical(text)? } else { Vec::new() };
        Ok(JsonBody { value, canonical, raw: received.raw })
    }
}

/// Whether the JSON text holds a `\u0000` escape, the only way a string of
/// JSON can carry a NUL character (raw control characters are not JSON).
/// No string of any request may: PostgreSQL's text cannot store one, so the
/// same name or description would be stored on SQLite and fail on
/// PostgreSQL. A backslash escaped itself (`\\u0000`) is text, not a NUL.
fn has_nul_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices("\\u0000").any(|(at, _)| bytes[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0)
}

/// The 400 for a body with a NUL, naming the first field that holds one
/// (as the typed parse names a field: `entries[0].description`, `metadata.key`).
fn nul_refused(text: &str) -> ApiError {
    let param = serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| nul_path(&v, String::new())).unwrap_or_else(|| String::from("body"));
    ApiError::invalid(param.clone(), format!("{param} must not contain the NUL character (\\u0000)"))
}

fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    let join = |key: &str| if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(if at.is_empty() { String::from("body") } else { at }),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| nul_path(item, format!("{at}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            // A key with a NUL is named by its object (the key itself could not be printed).
            if key.contains('\0') { Some(if at.is_empty() { String::from("body") } else { at.clone() }) } else { nul_path(item, join(key)) }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(has_nul_escape(r#"{"name":"a\u0000b"}"#));
        assert!(has_nul_escape(r#"{"name":"a\\\u0000"}"#), "an escaped backslash, then a NUL");
        assert!(!has_nul_escape(r#"{"name":"a\\u0000"}"#), "a backslash, then the text u0000");
        assert!(!has_nul_escape(r#"{"name":"a\u0001"}"#));
    }

    #[test]
    fn the_refusal_names_the_field_with_the_nul() {
        let param = |text: &str| nul_refused(text).param;
        assert_eq!(param(r#"{"name":"a\u0000"}"#).as_deref(), Some("name"));
        assert_eq!(param(r#"{"entries":[{"a":"x"},{"description":"\u0000"}]}"#).as_deref(), Some("entries[1].description"));
        assert_eq!(param(r#"{"metadata":{"k":"v\u0000"}}"#).as_deref(), Some("metadata.k"));
        assert_eq!(param(r#"{"metadata":{"k\u0000":"v"}}"#).as_deref(), Some("metadata"));
    }
}
