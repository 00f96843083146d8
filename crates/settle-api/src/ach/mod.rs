//! The ACH rail over HTTP (issue 7): counterparties and their bank accounts
//! (`counterparties`), payments and their state machine (`payments`), NACHA
//! files cut per FedACH window, return and NOC files read back, and the
//! scheduler that cuts and settles (`files`), the originator's return rates
//! and their alerts (`return_rates`), the compliance reviews a return opens
//! (`reviews`), the sweep that re-applies a ledger effect refused after its
//! payment moved (`repairs`), and the sandbox's test clocks
//! that payments may follow instead of the real clock (`test_clocks`).
//!
//! The rail's rules and formats are pure code in `settle-ach`; this module
//! does the I/O. Payments, counterparties and files are bookkeeping rows
//! (`settle_store::ach`); every movement of money is an ordinary ledger
//! transaction submitted to the engine:
//!
//! | payment move | credit (money out) | debit (money in) |
//! |---|---|---|
//! | created | hold: account → ACH clearing (pending) | pending: ACH clearing → account |
//! | submitted (file cut) | hold posted | — |
//! | canceled / failed | hold voided | pending voided |
//! | settled | — | pending posted, and an availability hold placed that expires after the hold period |
//! | returned | posted hold reversed | voided (before settlement), or availability hold voided and credit reversed |
//!
//! The ACH clearing account is opened per organization and environment on
//! first use (`external_id` `settle_ach_clearing_USD`, no balance limit):
//! it stands for money in flight between Settle and the originating bank.

pub mod counterparties;
pub mod files;
pub mod payments;
pub mod prenotes;
pub mod repairs;
pub mod return_rates;
pub mod reviews;
pub mod test_clocks;

use crate::error::{ApiError, ErrorType};
use crate::state::AppState;
use axum::http::StatusCode;
use settle_ach::nacha::Originator;
use settle_ach::routing::RoutingNumber;
use settle_ach::window::{DEFAULT_SAME_DAY_LIMIT_MINOR, DEFAULT_WINDOWS, Window};
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, IdGenerator};
use settle_core::ledger::Direction;
use settle_core::metadata::Metadata;
use settle_core::money::Currency;
use settle_core::tenancy::TenantId;
use settle_store::engine::{Command, CommandError, Outcome, Reply};
use settle_store::events::NewEvent;
use settle_store::records::NewAccount;

/// Payments in one file at most; the rest wait for the next window.
pub const MAX_ENTRIES_PER_FILE: i64 = 10_000;
/// A settled debit's money is available this many banking days after settlement
/// (a return can still arrive: R01 within 2 banking days).
pub const DEFAULT_DEBIT_HOLD_BANKING_DAYS: u32 = 2;
/// Bank accounts on one counterparty.
pub const MAX_BANK_ACCOUNTS: usize = 10;

/// The rail's settings, from the server's configuration (`settle serve --ach-…`).
#[derive(Clone, Debug)]
pub struct AchConfig {
    pub originator: Originator,
    /// Submission windows, New York time, in time order.
    pub windows: Vec<Window>,
    /// Same-day payments above this are refused (minor units of USD).
    pub same_day_limit_minor: i64,
    /// Banking days after a debit settles before its money is available (0: at once).
    pub debit_hold_banking_days: u32,
    /// How a payment returned for funds (R01, R09) may be originated again.
    pub retry: RetryPolicy,
}

/// NACHA lets an entry returned R01/R09 be reinitiated at most twice within
/// 180 days of the original; an originator may be stricter, not looser.
pub const NACHA_MAX_RETRIES: u32 = 2;
/// See [`NACHA_MAX_RETRIES`].
pub const NACHA_RETRY_WINDOW_DAYS: u32 = 180;
/// Banking days at most between a return and its automatic retry.
pub const MAX_RETRY_DELAY_BANKING_DAYS: u32 = 30;

/// The reinitiation policy of payments returned for insufficient or
/// uncollected funds (`settle serve --ach-retry-…`): it bounds both the
/// explicit `POST /v1/payments/{id}/retry` and the automatic retries of
/// payments created with `auto_retry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries per original payment (0 to [`NACHA_MAX_RETRIES`]; 0: none).
    pub max_retries: u32,
    /// Calendar days after the original's creation within which a retry may start.
    pub window_days: u32,
    /// Banking days after the return an automatic retry is originated (at
    /// 00:00 New York of that day; 0: at once), so that the receiver's funds
    /// have had time to arrive (payday).
    pub delay_banking_days: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: NACHA_MAX_RETRIES, window_days: NACHA_RETRY_WINDOW_DAYS, delay_banking_days: 2 }
    }
}

impl Default for AchConfig {
    /// Sandbox defaults: the Federal Reserve as destination, a sandbox bank as ODFI.
    fn default() -> Self {
        AchConfig {
            originator: Originator {
                immediate_destination: RoutingNumber::SANDBOX_FEDERAL_RESERVE,
                immediate_destination_name: String::from("FEDERAL RESERVE BANK"),
                immediate_origin: RoutingNumber::SANDBOX_ODFI.to_string(),
                immediate_origin_name: String::from("SETTLE SANDBOX BANK"),
                company_name: String::from("SETTLE SANDBOX"),
                company_identification: String::from("1234567890"),
                odfi: RoutingNumber::SANDBOX_ODFI,
            },
            windows: DEFAULT_WINDOWS.to_vec(),
            same_day_limit_minor: DEFAULT_SAME_DAY_LIMIT_MINOR,
            debit_hold_banking_days: DEFAULT_DEBIT_HOLD_BANKING_DAYS,
            retry: RetryPolicy::default(),
        }
    }
}

/// What the handlers share.
#[derive(Default)]
pub struct Ach {
    pub config: AchConfig,
    pub ids: IdGenerator,
}

/// The external id of the tenant's ACH clearing account.
pub fn clearing_external_id(currency: Currency) -> String {
    format!("settle_ach_clearing_{}", currency.code())
}

/// The tenant's ACH clearing account, opened on first use (idempotent
/// through its reserved external id, like the sandbox funding account).
pub async fn clearing_account(state: &AppState, tenant: TenantId, currency: Currency) -> Result<AccountId, ApiError> {
    let new = NewAccount {
        name: format!("ACH clearing ({})", currency.code()),
        currency,
        normal_balance: Direction::Debit,
        min_available_balance: None,
        external_id: Some(clearing_external_id(currency)),
        metadata: Metadata::from([(String::from("settle_rail"), String::from("ach"))]),
        customer: None,
    };
    match submit_ledger(state, tenant, Command::CreateAccount(new)).await {
        Ok(Outcome::Account(account)) => Ok(account.state.id),
        Err(LedgerRefusal::Refused(CommandError::DuplicateExternalId { existing })) => {
            AccountId::parse(&existing).ok_or_else(|| ApiError::internal(&"the ACH clearing account's id is malformed"))
        }
        Err(e) => Err(e.into_api()),
        Ok(_) => Err(ApiError::internal(&"unexpected engine outcome while opening the ACH clearing account")),
    }
}

/// A ledger command that did not go through.
#[derive(Debug)]
pub enum LedgerRefusal {
    /// A rule refused it (or the database was unavailable): the engine's error.
    Refused(CommandError),
    /// The engine is stopped or answered out of protocol.
    Unavailable,
}

impl LedgerRefusal {
    pub fn into_api(self) -> ApiError {
        match self {
            LedgerRefusal::Refused(e) => ApiError::from(&e),
            LedgerRefusal::Unavailable => ApiError::unavailable(),
        }
    }
}

/// Submits one ledger command without an idempotency key (the payment row
/// carries the request's key; ledger transactions carry the payment's id in
/// their external id, so a repeat is refused as a duplicate).
pub async fn submit_ledger(state: &AppState, tenant: TenantId, command: Command) -> Result<Outcome, LedgerRefusal> {
    match state.engine.submit(tenant, command, None).await {
        Ok(Reply::Done { result: Ok(outcome), .. }) => Ok(outcome),
        Ok(Reply::Done { result: Err(e), .. }) => Err(LedgerRefusal::Refused(e)),
        Ok(Reply::Replay(_) | Reply::KeyReused) | Err(_) => Err(LedgerRefusal::Unavailable),
    }
}

pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorType::ConflictError, code, message)
}

pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, code, message)
}

/// Rows hold JSON written by this crate; a row that does not parse is corrupt.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(data: &str) -> Result<T, ApiError> {
    serde_json::from_str(data).map_err(|e| ApiError::internal(&format!("an ACH row does not parse: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::internal(&e))
}

pub(crate) fn applied(result: Result<(), settle_store::ach::ApplyError>, stale: impl FnOnce() -> ApiError) -> Result<(), ApiError> {
    match result {
        Ok(()) => Ok(()),
        Err(settle_store::ach::ApplyError::Stale) => Err(stale()),
        Err(settle_store::ach::ApplyError::Store(e)) => Err(ApiError::from(e)),
    }
}

/// An event of the rail (`payment.*`, `ach.*`), written with the change it
/// reports (in the same `ach_apply` transaction) rather than projected from
/// the ledger log: `object` as the API renders it now, `previous` the
/// attributes it changed, `sequence` the change's place among the object's.
pub(crate) fn new_event(
    state: &AppState,
    tenant: TenantId,
    kind: String,
    (object_id, sequence): (&str, i64),
    object: serde_json::Value,
    previous: Option<serde_json::Value>,
    now: Timestamp,
) -> Result<NewEvent, ApiError> {
    let id = state.events.ids.event();
    let body = crate::events::EventJson {
        object: String::from("event"),
        id: id.as_str().to_owned(),
        kind: kind.clone(),
        api_version: crate::versions::NEWEST.to_string(),
        created_at: now.to_rfc3339(),
        data: crate::events::EventDataJson { object, previous_attributes: previous },
        request: crate::events::EventRequestJson::default(),
        correlation_id: None,
        sequence,
    };
    Ok(NewEvent {
        id,
        tenant,
        kind,
        object_id: object_id.to_owned(),
        sequence,
        log_seq: None,
        created_at: now,
        body: serde_json::to_vec(&body).map_err(|e| ApiError::internal(&e))?,
    })
}
