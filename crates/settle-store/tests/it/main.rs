//! The store conformance suite: every scenario runs against SQLite (always)
//! and PostgreSQL (when `SETTLE_TEST_POSTGRES_URL` is set; CI sets it), each
//! on a fresh database of its own. A scenario `foo` becomes the tests
//! `<module>::sqlite::foo` and `<module>::postgres::foo`, so a failure names
//! its backend. Every scenario ends with `settle audit verify` on what it wrote.

#![expect(clippy::unwrap_used, reason = "test code: a panic is the failure report")]

mod harness;

mod account_stream;
mod commit;
mod concurrency;
mod history;
mod idempotency;
mod ledger;
mod log;
mod pagination;
mod purge;
mod reconcile;
