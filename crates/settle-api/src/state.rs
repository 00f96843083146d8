//! What every handler shares.

use crate::auth::KeyCache;
use crate::idempotency::InFlight;
use settle_core::clock::Clock;
use settle_store::Store;
use settle_store::engine::EngineHandle;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub engine: EngineHandle,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<KeyCache>,
    pub in_flight: Arc<InFlight>,
    /// Rate limits, timeouts, CORS and security headers (see `hygiene`).
    pub http: Arc<crate::hygiene::HttpPolicy>,
}

impl AppState {
    pub fn new(store: Store, engine: EngineHandle, clock: Arc<dyn Clock>) -> AppState {
        AppState { store, engine, clock, keys: Arc::default(), in_flight: Arc::default(), http: Arc::default() }
    }

    /// The same state with another HTTP policy (rate limits, timeout, CORS, headers).
    pub fn with_http(mut self, http: crate::hygiene::HttpPolicy) -> AppState {
        self.http = Arc::new(http);
        self
    }
}
