//! The ACH rail, pure: everything about ACH that is not I/O.
//!
//! - [`routing`]: ABA routing transit numbers and their check digit.
//! - [`nacha`]: the NACHA file format — 94-character records, batches,
//!   blocking, entry hash and totals — written from payments and parsed back
//!   (including returns, addenda `99`, and notifications of change, addenda
//!   `98`), with line-numbered errors.
//! - [`returns`]: the return reason codes and change codes with what each
//!   means for the bank account.
//! - [`window`]: FedACH submission windows and effective dates on Federal
//!   Reserve banking days.
//!
//! The crate has no database, HTTP or clock of its own: the server passes
//! the time in. That is the rail module boundary every later rail copies
//! (see `ARCHITECTURE.md`).

pub mod nacha;
pub mod payment;
pub mod returns;
pub mod routing;
pub mod window;
