//! Settle's storage: SQLite and PostgreSQL behind one set of operations,
//! migrations per backend, and the group-commit engine that is the only
//! writer of ledger state.

pub mod ach;
pub mod audit;
pub mod bank_recon;
pub mod blocking;
pub mod customers;
pub mod engine;
pub mod error;
pub(crate) mod event_runs;
pub mod events;
pub mod faults;
pub mod flags;
pub mod history;
pub mod log_content;
pub mod operations;
pub mod postgres;
pub mod priority;
pub mod reconcile;
pub mod records;
pub mod rows;
pub mod sqlite;
pub mod store;
pub mod versioning;
pub mod webhooks;

pub use error::StoreError;
pub use store::Store;
