//! What every handler shares.

use crate::auth::KeyCache;
use crate::deprecation::{DeprecationCounter, EndpointDeprecation};
use crate::idempotency::InFlight;
use crate::operations::{Operations, OperationsConfig};
use crate::signing::Signing;
use settle_core::clock::Clock;
use settle_store::Store;
use settle_store::engine::EngineHandle;
use std::sync::Arc;

/// Cloned for every request by every layer and extractor that takes state,
/// so it is one `Arc`: a clone is one reference count, not a dozen (profiles
/// of one-transfer requests showed the clones and drops of the unshared form
/// at about 9% of all CPU).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; reached through `Deref` (`state.store`, …).
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub engine: EngineHandle,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<KeyCache>,
    pub in_flight: Arc<InFlight>,
    pub signing: Arc<Signing>,
    /// Uses of deprecated versions and endpoints, per key, not yet stored.
    pub deprecation_usage: Arc<DeprecationCounter>,
    pub deprecated_endpoints: Arc<Vec<EndpointDeprecation>>,
    pub operations: Arc<Operations>,
    /// Rate limits, timeouts, CORS and security headers (see `hygiene`).
    pub http: Arc<crate::hygiene::HttpPolicy>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Feature flag rollouts, read again every second.
    pub flags: Arc<crate::feature_flags::FeatureFlags>,
    /// Sandbox faults in force, read again every second.
    pub faults: Arc<crate::faults::Faults>,
    /// Ids of bank statements, their lines, matches and audited actions.
    pub reconciliation_ids: Arc<settle_core::ids::IdGenerator>,
    /// The event projector's and the delivery worker's wake-ups and ids.
    pub events: crate::events::Hub,
    /// Webhook delivery settings and HTTP clients.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Customers: the keyring of their data keys, the loaded sanctions lists.
    pub customers: Arc<crate::customers::Customers>,
    /// The ACH rail: originator settings, windows, same-day cap, ids.
    pub ach: Arc<crate::ach::Ach>,
}

impl AppState {
    pub fn new(store: Store, engine: EngineHandle, clock: Arc<dyn Clock>) -> AppState {
        AppState(Arc::new(Shared {
            store,
            engine,
            clock,
            keys: Arc::default(),
            in_flight: Arc::default(),
            signing: Arc::default(),
            deprecation_usage: Arc::default(),
            deprecated_endpoints: Arc::new(crate::deprecation::deprecated_endpoints()),
            operations: Arc::default(),
            http: Arc::default(),
            metrics: Arc::default(),
            flags: Arc::default(),
            faults: Arc::default(),
            reconciliation_ids: Arc::default(),
            events: Arc::default(),
            webhooks: Arc::default(),
            customers: Arc::default(),
            ach: Arc::default(),
        }))
    }

    /// For the builders below, used while the server is set up (before any clone is shared).
    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    /// The same state with another HTTP policy (rate limits, timeout, CORS, headers).
    pub fn with_http(mut self, http: crate::hygiene::HttpPolicy) -> AppState {
        self.shared_mut().http = Arc::new(http);
        self
    }

    /// Metrics shared with the engine (which reports its batches to them).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> AppState {
        self.shared_mut().metrics = metrics;
        self
    }

    /// The same state with these settings for long-running operations.
    pub fn with_operations(mut self, config: OperationsConfig) -> AppState {
        self.shared_mut().operations = Arc::new(Operations::new(config));
        self
    }

    /// The event hub shared with the engine's commit signal.
    pub fn with_events(mut self, hub: crate::events::Hub) -> AppState {
        self.shared_mut().events = hub;
        self
    }

    /// The same state with these webhook delivery settings.
    pub fn with_webhooks(mut self, webhooks: crate::webhooks::Webhooks) -> AppState {
        self.shared_mut().webhooks = Arc::new(webhooks);
        self
    }

    /// Where this server finds the master key that decrypts signing secrets.
    pub fn with_signing(mut self, signing: Signing) -> AppState {
        self.shared_mut().signing = Arc::new(signing);
        self
    }

    /// Where this server finds customers' key-encryption keys (see `customers::keyring`).
    pub fn with_customers(mut self, customers: crate::customers::Customers) -> AppState {
        self.shared_mut().customers = Arc::new(customers);
        self
    }

    /// The ACH rail's settings (see `crate::ach::AchConfig`).
    pub fn with_ach(mut self, config: crate::ach::AchConfig) -> AppState {
        self.shared_mut().ach = Arc::new(crate::ach::Ach { config, ..crate::ach::Ach::default() });
        self
    }

    /// Marks one more endpoint deprecated (its requests get the deprecation headers and are counted).
    pub fn with_deprecated_endpoint(mut self, endpoint: EndpointDeprecation) -> AppState {
        let mut list = self.deprecated_endpoints.as_ref().clone();
        list.push(endpoint);
        self.shared_mut().deprecated_endpoints = Arc::new(list);
        self
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
