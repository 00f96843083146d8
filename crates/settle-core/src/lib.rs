//! Settle's domain core: the types and rules that decide what may happen to money.
//!
//! Nothing here does I/O, spawns tasks or knows about HTTP or SQL. The engine
//! (in `settle-store`) loads state, asks this crate what a command does, and
//! writes the effects it returns.

pub mod api_version;
pub mod calendar;
pub mod chain;
pub mod clock;
pub mod correlation;
pub mod customers;
pub mod faults;
pub mod flags;
pub mod ids;
pub mod json_text;
pub mod ledger;
pub mod limits;
pub mod metadata;
pub mod money;
pub mod operations;
pub mod tenancy;
