//! What every handler shares.

use crate::auth::KeyCache;
use crate::idempotency::InFlight;
use crate::signing::Signing;
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
    pub signing: Arc<Signing>,
}

impl AppState {
    pub fn new(store: Store, engine: EngineHandle, clock: Arc<dyn Clock>) -> AppState {
        AppState { store, engine, clock, keys: Arc::default(), in_flight: Arc::default(), signing: Arc::default() }
    }

    /// Where this server finds the master key that decrypts signing secrets.
    pub fn with_signing(mut self, signing: Signing) -> AppState {
        self.signing = Arc::new(signing);
        self
    }
}
