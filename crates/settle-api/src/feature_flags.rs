//! Feature flags as this server sees them: the stored rollouts, read again
//! when a second old, so `settle flags set` (or `clear`, to roll back)
//! reaches every server sharing the database within about a second.
//!
//! [`Refreshed`] is that pattern on its own; sandbox faults (`faults`) use it too.

use settle_core::flags::{FlagDefinition, Rollout, enabled};
use settle_store::{Store, StoreError};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a read of the rollouts is used before it is read again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A value read from the database and read again once it is [`FRESH_FOR`]
/// old, so that a change made through any server reaches this one within
/// about a second. When a read fails, the last value read stays in force
/// (the default before any).
#[derive(Debug, Default)]
pub struct Refreshed<T> {
    cached: tokio::sync::Mutex<Cached<T>>,
}

#[derive(Debug, Default)]
struct Cached<T> {
    read_at: Option<Instant>,
    value: T,
}

impl<T> Refreshed<T> {
    /// Calls `f` with the value, reading it again first with `load` if it is stale.
    pub async fn with<R, Fut>(&self, what: &str, load: impl FnOnce() -> Fut, f: impl FnOnce(&T) -> R) -> R
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut cached = self.cached.lock().await;
        if cached.read_at.is_none_or(|at| at.elapsed() >= FRESH_FOR) {
            match load().await {
                Ok(value) => cached.value = value,
                Err(e) => tracing::warn!(error = %e, what, "could not be read; the last value read stays in force"),
            }
            cached.read_at = Some(Instant::now());
        }
        f(&cached.value)
    }

    /// Makes the next use read again: this server changed the value.
    pub async fn invalidate(&self) {
        self.cached.lock().await.read_at = None;
    }
}

#[derive(Debug, Default)]
pub struct FeatureFlags {
    rollouts: Refreshed<HashMap<String, Rollout>>,
}

impl FeatureFlags {
    /// Whether the organization has the flag's behaviour. If the rollouts
    /// cannot be read, the last ones read stay in force (defaults before any).
    pub async fn enabled(&self, store: &Store, flag: &FlagDefinition, org_id: &str) -> bool {
        let load = || async { Ok(store.feature_flags().await?.into_iter().map(|r| (r.name, r.rollout)).collect()) };
        self.rollouts.with("feature flags", load, |rollouts| enabled(flag, rollouts.get(flag.name), org_id)).await
    }
}
