//! Signed requests. A key created with `--require-signature` must send, on
//! every request, `Content-Digest` (RFC 9530, sha-256 of the exact body) and
//! an HTTP Message Signature (RFC 9421) made with HMAC-SHA256 under the key's
//! signing secret, covering at least `@method`, `@path` and
//! `content-digest`, with `created`, `nonce`, `keyid` (the API key id) and
//! optionally `alg="hmac-sha256"`.
//!
//! The check runs as a layer, before any handler: a missing, malformed,
//! wrong, stale (`created` more than 5 minutes from the server's clock) or
//! replayed signature answers `401 invalid_signature` and executes nothing.
//! Nonces are recorded in the database, so servers sharing it refuse a
//! replay too. Keys without the requirement are not checked (a signature
//! they send is ignored).

pub mod message;
pub mod vault;

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use message::{Malformed, MessageView};
use settle_core::clock::Timestamp;
use settle_core::ids::ApiKeyId;
use settle_core::limits::MAX_BATCH_BODY_BYTES;
use settle_core::tenancy::Principal;
use settle_store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use vault::{MasterKey, SigningSecret};

/// How far `created` may be from the server's clock, either way.
pub const SIGNATURE_WINDOW_SECS: i64 = 300;
/// Longest nonce accepted, in characters.
pub const MAX_NONCE_CHARS: usize = 128;
/// Components every signature must cover.
pub const REQUIRED_COMPONENTS: [&str; 3] = ["@method", "@path", "content-digest"];
/// The only algorithm accepted.
pub const ALGORITHM: &str = "hmac-sha256";
/// How long a key's signing requirement (and secret) is trusted in memory.
const CACHE_TTL: Duration = Duration::from_millis(500);
/// Entries kept before the cache is cleared.
const CACHE_CAPACITY: usize = 10_000;
/// Expired nonces are deleted at most this often, per server.
const NONCE_PURGE_INTERVAL_SECS: i64 = 60;

/// What the signature layer keeps: where the master key is, and a short
/// cache of keys' signing secrets.
#[derive(Default)]
pub struct Signing {
    master: OnceLock<MasterKey>,
    /// Read on first need when no key was given: a key created by
    /// `settle keys create --require-signature` after the server started.
    master_file: Option<PathBuf>,
    cache: Mutex<HashMap<ApiKeyId, (Option<SigningSecret>, Instant)>>,
    last_purge_secs: AtomicI64,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing").field("master_file", &self.master_file).finish_non_exhaustive()
    }
}

impl Signing {
    /// `master`: the key, when known now; `master_file`: where to read it
    /// later otherwise.
    pub fn new(master: Option<MasterKey>, master_file: Option<PathBuf>) -> Signing {
        let cell = OnceLock::new();
        if let Some(key) = master {
            let _ = cell.set(key);
        }
        Signing { master: cell, master_file, cache: Mutex::default(), last_purge_secs: AtomicI64::new(0) }
    }

    pub(crate) fn master_key(&self) -> Option<&MasterKey> {
        if let Some(key) = self.master.get() {
            return Some(key);
        }
        let path = self.master_file.as_ref()?;
        match MasterKey::read_file(path) {
            Ok(Some(key)) => Some(self.master.get_or_init(|| key)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the master key");
                None
            }
        }
    }

    /// The key's signing secret; `None` when the key does not require signatures.
    async fn secret_for(&self, store: &Store, key_id: &ApiKeyId) -> Result<Option<SigningSecret>, ApiError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((secret, at)) = cache.get(key_id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(secret.clone());
        }
        let secret = match store.signing_secret(key_id).await? {
            None => None,
            Some(stored) => {
                let Some(master) = self.master_key() else {
                    tracing::error!(key_id = %key_id, "a key requires signatures but this server has no master key: set SETTLE_MASTER_KEY or <data-dir>/master.key");
                    return Err(cannot_verify());
                };
                match master.decrypt(key_id, &stored) {
                    Ok(secret) => Some(secret),
                    Err(e) => {
                        tracing::error!(key_id = %key_id, error = %e, "cannot decrypt a signing secret");
                        return Err(cannot_verify());
                    }
                }
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key_id.clone(), (secret.clone(), Instant::now()));
        }
        Ok(secret)
    }
}

/// The server is misconfigured (no master key, or another one): a retry
/// may reach a server that can verify.
fn cannot_verify() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::ApiError,
        "service_unavailable",
        "this server cannot verify request signatures right now; nothing was executed",
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::AuthenticationError, "invalid_signature", message)
}

impl From<Malformed> for ApiError {
    fn from(m: Malformed) -> ApiError {
        invalid(m.message).with_param(m.header)
    }
}

/// The layer: checks signatures of keys that require them, before the handler.
pub async fn verify_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    verify_request(&state, req, |req| next.run(req)).await
}

/// [`verify_layer`] around any continuation (see `middleware.rs`).
pub async fn verify_request<F: Future<Output = Response>>(state: &AppState, req: Request, next: impl FnOnce(Request) -> F) -> Response {
    if !req.uri().path().starts_with("/v1/") || !req.headers().contains_key(header::AUTHORIZATION) {
        return next(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let principal = match Principal::from_request_parts(&mut parts, state).await {
        Ok(principal) => principal,
        // A malformed, unknown or revoked key is the handler's 401 (the lookup is cached for it).
        Err(error) if error.status == axum::http::StatusCode::UNAUTHORIZED => return next(Request::from_parts(parts, body)).await,
        // The key could not be looked up (database trouble): whether it must
        // sign is unknown, so nothing may run unverified.
        Err(error) => return error.into_response(),
    };
    let secret = match state.signing.secret_for(&state.store, &principal.key_id).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return next(Request::from_parts(parts, body)).await,
        Err(error) => return error.into_response(),
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BODY_BYTES) {
        return too_large().into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_BATCH_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => return crate::body::unreadable(e, too_large).into_response(),
    };
    let view = MessageView { method: parts.method.as_str(), path: parts.uri.path(), query: parts.uri.query(), headers: &parts.headers };
    if let Err(error) = verify(state, &principal.key_id, &secret, &view, &bytes).await {
        tracing::info!(key_id = %principal.key_id, code = error.code, reason = %error.message, "request signature refused");
        return error.into_response();
    }
    next(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorType::InvalidRequestError,
        "request_too_large",
        format!("request bodies are limited to {MAX_BATCH_BODY_BYTES} bytes"),
    )
}

/// Every check, in an order that lets no unsigned request spend a nonce:
/// shape, key id, algorithm, components, clock, digest, HMAC, then the nonce.
async fn verify(state: &AppState, key_id: &ApiKeyId, secret: &SigningSecret, view: &MessageView<'_>, body: &[u8]) -> Result<(), ApiError> {
    let input_header = message::combined(view.headers, "signature-input").ok_or_else(|| {
        invalid("this API key must sign its requests: send Signature-Input and Signature (RFC 9421) and Content-Digest").with_param("Signature-Input")
    })?;
    let signature_header = message::combined(view.headers, "signature").ok_or_else(|| invalid("Signature is missing").with_param("Signature"))?;
    let inputs = message::parse_signature_input(&input_header)?;
    let mut mine = inputs.into_iter().filter(|i| i.keyid.as_deref() == Some(key_id.as_str()));
    let input = mine
        .next()
        .ok_or_else(|| invalid(format!("Signature-Input has no signature with keyid=\"{key_id}\" (the id of this API key)")).with_param("Signature-Input"))?;
    if mine.next().is_some() {
        return Err(invalid(format!("Signature-Input has more than one signature with keyid=\"{key_id}\"")).with_param("Signature-Input"));
    }
    if input.alg.as_deref().is_some_and(|alg| alg != ALGORITHM) {
        return Err(invalid(format!("alg must be \"{ALGORITHM}\" (or left out)")).with_param("Signature-Input"));
    }
    for required in REQUIRED_COMPONENTS {
        if !input.components.iter().any(|c| c == required) {
            return Err(invalid(format!("the signature must cover \"{required}\" (it must cover \"@method\", \"@path\" and \"content-digest\")"))
                .with_param("Signature-Input"));
        }
    }
    let nonce = input.nonce.as_deref().ok_or_else(|| invalid("the signature must carry a nonce parameter").with_param("Signature-Input"))?;
    if nonce.is_empty() || nonce.len() > MAX_NONCE_CHARS {
        return Err(invalid(format!("nonce must be 1 to {MAX_NONCE_CHARS} characters")).with_param("Signature-Input"));
    }
    let created = input.created.ok_or_else(|| invalid("the signature must carry a created parameter (Unix seconds)").with_param("Signature-Input"))?;
    let now = state.clock.now();
    let now_secs = now.micros().div_euclid(1_000_000);
    if (created - now_secs).abs() > SIGNATURE_WINDOW_SECS {
        return Err(invalid(format!(
            "the signature is stale: created={created} is more than {SIGNATURE_WINDOW_SECS} seconds from the server's clock ({now_secs})"
        ))
        .with_param("Signature-Input"));
    }
    if input.expires.is_some_and(|expires| expires < now_secs) {
        return Err(invalid("the signature has expired (its expires parameter is past)").with_param("Signature-Input"));
    }
    let digest = message::combined(view.headers, "content-digest").ok_or_else(|| invalid("Content-Digest is missing").with_param("Content-Digest"))?;
    message::check_content_digest(&digest, body)?;
    let base = message::signature_base(&input, view)?;
    let signature = message::signature_bytes(&signature_header, &input.label)?;
    if !message::verify_hmac_sha256(secret.expose().as_bytes(), base.as_bytes(), &signature) {
        return Err(invalid("the signature does not match the request (see docs/signing.md for how the signature base is built)").with_param("Signature"));
    }
    // Remembered until `created` leaves the window: a replay after that is stale anyway.
    let remember_until = Timestamp::from_micros(created.saturating_add(SIGNATURE_WINDOW_SECS).saturating_mul(1_000_000));
    if !state.store.record_nonce(key_id, nonce, remember_until).await? {
        return Err(invalid("this nonce was already used with this key: a replayed request is refused").with_param("Signature-Input"));
    }
    purge_now_and_then(state, now);
    Ok(())
}

/// Deletes expired nonces in the background, at most once a minute per server.
fn purge_now_and_then(state: &AppState, now: Timestamp) {
    let now_secs = now.micros().div_euclid(1_000_000);
    let last = state.signing.last_purge_secs.load(Ordering::Relaxed);
    if now_secs - last < NONCE_PURGE_INTERVAL_SECS
        || state.signing.last_purge_secs.compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        match store.purge_nonces(now).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired request nonces removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "request nonce purge failed"),
        }
    });
}
