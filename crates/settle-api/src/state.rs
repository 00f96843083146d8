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
}

impl AppState {
    pub fn new(store: Store, engine: EngineHandle, clock: Arc<dyn Clock>) -> AppState {
        AppState { store, engine, clock, keys: Arc::default(), in_flight: Arc::default() }
    }
}
