//! Feature flags as this server sees them: the stored rollouts, read again
//! when a second old, so `settle flags set` (or `clear`, to roll back)
//! reaches every server sharing the database within about a second.

use settle_core::flags::{FlagDefinition, Rollout, enabled};
use settle_store::Store;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a read of the rollouts is used before it is read again.
const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct FeatureFlags {
    cached: tokio::sync::Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    read_at: Option<Instant>,
    rollouts: HashMap<String, Rollout>,
}

impl FeatureFlags {
    /// Whether the organization has the flag's behaviour. If the rollouts
    /// cannot be read, the last ones read stay in force (defaults before any).
    pub async fn enabled(&self, store: &Store, flag: &FlagDefinition, org_id: &str) -> bool {
        let mut cached = self.cached.lock().await;
        if cached.read_at.is_none_or(|at| at.elapsed() >= FRESH_FOR) {
            match store.feature_flags().await {
                Ok(records) => cached.rollouts = records.into_iter().map(|r| (r.name, r.rollout)).collect(),
                Err(e) => tracing::warn!(error = %e, "feature flags could not be read; the last ones read stay in force"),
            }
            cached.read_at = Some(Instant::now());
        }
        enabled(flag, cached.rollouts.get(flag.name), org_id)
    }
}
