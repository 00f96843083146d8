//! HTTP integration tests of the ledger API: the real router over a real
//! store (SQLite always, PostgreSQL when `SETTLE_TEST_POSTGRES_URL` is set),
//! served on a free port and called with reqwest like a client would.
//!
//! Each test is named for the behaviour it proves and asserts exact statuses,
//! codes and amounts. Nothing sleeps to wait for work: time is a manual
//! clock, and background work (the expiry sweep) is polled with a deadline.

#![expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

mod accounts;
mod ach;
mod app;
mod batches;
mod compliance;
mod correlation;
mod customers;
mod events;
mod faults;
mod holds;
mod idempotency;
mod invariants;
mod limits;
mod metrics;
mod openapi;
mod operations;
mod races;
mod rail_faults;
mod reconciliation;
mod signing;
mod tenancy;
mod test_helpers;
mod transactions;
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
