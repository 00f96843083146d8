//! End-to-end tests of the `settle` binary: real processes, real ports, real
//! signals. Each PostgreSQL case runs only when `SETTLE_TEST_POSTGRES_URL` is
//! set (CI sets it) and uses a fresh database of its own.

#![expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

mod audit;
mod durability;
mod flags;
mod harness;
mod lifecycle;
mod limits;
mod reconcile;
mod traces;
mod versioning;
mod webhooks;

/// A reqwest client builder, after installing the process's TLS provider
/// (the workspace's reqwest has none by default; see `install_tls_provider`).
pub fn tls_builder() -> reqwest::ClientBuilder {
    settle_api::webhooks::worker::install_tls_provider();
    reqwest::Client::builder()
}

/// A default reqwest client (see [`tls_builder`]).
pub fn tls_client() -> reqwest::Client {
    tls_builder().build().unwrap()
}
