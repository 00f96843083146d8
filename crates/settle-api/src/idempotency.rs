//! `Idempotency-Key`: the first outcome of a request is stored with a
//! fingerprint of the request in the same database transaction as its
//! effect (the engine does that); this module validates keys, replays
//! stored outcomes, and refuses a retry while the first is still running.

use crate::error::{ApiError, ErrorType};
use axum::http::{HeaderMap, StatusCode};
use settle_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use settle_core::tenancy::{Principal, TenantId};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub const HEADER: &str = "idempotency-key";

/// The key from the request, if any, validated: sent once, 1–255 printable ASCII characters.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    // Two keys would leave it to chance which one guards the request.
    if headers.get_all(HEADER).iter().nth(1).is_some() {
        return Err(ApiError::invalid("Idempotency-Key", "Idempotency-Key must be sent once"));
    }
    let bad = || ApiError::invalid("Idempotency-Key", format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"));
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY_BYTES || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(bad());
    }
    if crate::operations::is_reserved_key(text) {
        return Err(ApiError::invalid("Idempotency-Key", "Idempotency-Key values of the form op_…/chunk/… are reserved for operations"));
    }
    Ok(Some(text.to_owned()))
}

/// SHA-256 over the API key id, method, path and canonical body.
pub fn fingerprint(principal: &Principal, method: &str, path: &str, canonical_body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [principal.key_id.as_str().as_bytes(), method.as_bytes(), path.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(canonical_body);
    hex::encode(h.finalize())
}

pub fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorType::IdempotencyError,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request",
    )
    .with_param("Idempotency-Key")
}

pub fn in_use() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorType::IdempotencyError,
        "idempotency_key_in_use",
        "a request with this Idempotency-Key is still being processed; retry shortly",
    )
    .with_param("Idempotency-Key")
}

/// Keys whose first request is running in this process.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<(TenantId, String)>>,
}

/// Holds a key in flight until dropped (also on cancellation).
pub struct InFlightGuard {
    owner: Arc<InFlight>,
    key: (TenantId, String),
}

impl InFlight {
    /// Claims the key, or `None` when another request holds it.
    pub fn claim(self: &Arc<Self>, tenant: TenantId, key: &str) -> Option<InFlightGuard> {
        let mut keys = self.keys.lock().ok()?;
        let entry = (tenant, key.to_owned());
        if !keys.insert(entry.clone()) {
            return None;
        }
        Some(InFlightGuard { owner: Arc::clone(self), key: entry })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.owner.keys.lock() {
            keys.remove(&self.key);
        }
    }
}
