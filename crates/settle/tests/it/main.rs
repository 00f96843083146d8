//! End-to-end tests of the `settle` binary: real processes, real ports, real
//! signals. Each PostgreSQL case runs only when `SETTLE_TEST_POSTGRES_URL` is
//! set (CI sets it) and uses a fresh database of its own.

#![expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

mod durability;
mod flags;
mod harness;
mod lifecycle;
mod limits;
mod reconcile;
mod versioning;
