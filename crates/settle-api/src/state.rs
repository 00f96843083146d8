//! What every handler shares.

use crate::auth::KeyCache;
use crate::idempotency::InFlight;
use crate::operations::{Operations, OperationsConfig};
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
    pub operations: Arc<Operations>,
}

impl AppState {
    pub fn new(store: Store, engine: EngineHandle, clock: Arc<dyn Clock>) -> AppState {
        AppState { store, engine, clock, keys: Arc::default(), in_flight: Arc::default(), operations: Arc::default() }
    }

    /// The same state with these settings for long-running operations.
    pub fn with_operations(mut self, config: OperationsConfig) -> AppState {
        self.operations = Arc::new(Operations::new(config));
        self
    }
}
