//! API key authentication and scopes. Keys are looked up by the SHA-256 of
//! their secret; results are cached for under a second so that a revoked
//! key stops working within a second on every server sharing the database.

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use settle_core::tenancy::{Principal, Scope};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up key (or its absence) is trusted.
const CACHE_TTL: Duration = Duration::from_millis(500);
/// Entries kept before the cache is cleared (bounds memory under key guessing).
const CACHE_CAPACITY: usize = 10_000;

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Option<Principal>> {
        let entries = self.entries.lock().ok()?;
        let (principal, at) = entries.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| principal.clone())
    }

    fn put(&self, hash: String, principal: Option<Principal>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(hash, (principal, Instant::now()));
        }
    }
}

fn invalid_key(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::AuthenticationError, "invalid_api_key", message)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
        // Several layers (rate limit, signature, version) and the handler ask
        // for the principal; the first successful lookup serves them all.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| invalid_key("no API key: send Authorization: Bearer <secret>"))?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid_key("malformed Authorization header: send Authorization: Bearer <secret>"))?;
        let hash = hash_secret(secret);
        let principal = match state.keys.get(&hash) {
            Some(cached) => cached,
            None => {
                let found = state.store.find_api_key(hash.clone()).await?;
                let principal = found.filter(|k| k.revoked_at.is_none()).map(|k| Principal {
                    key_id: k.id,
                    org_id: k.org_id,
                    environment: k.environment,
                    tenant: k.tenant,
                    scopes: k.scopes,
                    api_version: k.api_version,
                    rate_limit: k.rate_limit,
                });
                state.keys.put(hash, principal.clone());
                principal
            }
        };
        let principal = principal.ok_or_else(|| invalid_key("the API key is unknown or revoked"))?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// Refuses a principal that lacks `scope`.
pub fn require(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, ErrorType::PermissionError, "insufficient_scope", format!("this API key lacks the {scope} scope")))
    }
}

/// A principal that may write to the ledger. Taken before the body, so a key
/// without `ledger:write` is refused (403) whatever the body holds.
pub struct Writer(pub Principal);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Writer, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        require(&principal, Scope::LedgerWrite)?;
        Ok(Writer(principal))
    }
}

/// A scope named by a type, for [`Scoped`].
pub trait ScopeName: Send + Sync {
    const SCOPE: Scope;
}

/// The scopes endpoints that take a body require, as types.
pub mod scope {
    use super::ScopeName;
    use settle_core::tenancy::Scope;

    macro_rules! names {
        ($($name:ident),* $(,)?) => {
            $(
                #[doc = concat!("`Scope::", stringify!($name), "`.")]
                pub struct $name;
                impl ScopeName for $name {
                    const SCOPE: Scope = Scope::$name;
                }
            )*
        };
    }

    names!(ReconciliationWrite, WebhooksWrite, CustomersWrite, CustomersReview, PaymentsWrite);
}

/// A principal holding scope `S`. Taken before the body, as [`Writer`] is
/// for the ledger: a key without the scope is refused (403) whatever the
/// body holds, and its body is never read.
pub struct Scoped<S: ScopeName>(pub Principal, pub std::marker::PhantomData<S>);

impl<S: ScopeName> FromRequestParts<AppState> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Scoped<S>, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        require(&principal, S::SCOPE)?;
        Ok(Scoped(principal, std::marker::PhantomData))
    }
}
