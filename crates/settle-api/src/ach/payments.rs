//! `/v1/payments`: ACH credits and debits, their state machine and history,
//! cancellation before submission, and the sandbox's settle and return
//! helpers. Every move of a payment is applied to its row first (only from
//! the version that was read, so concurrent moves cannot both win) and its
//! ledger effect second; see the table in `super`.

use super::counterparties::{BankAccountJson, BankAccountRecord, bank_account_row, load_bank_account};
use super::{LedgerRefusal, applied, clearing_account, conflict, decode, encode, submit_ledger, unprocessable};
use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::customers::{idempotency_record, json_response, keyed};
use crate::error::ApiError;
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use crate::wire::EmptyRequest;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_ach::nacha::{MAX_ENTRY_AMOUNT_MINOR, SecCode};
use settle_ach::payment::PaymentStatus;
use settle_ach::returns::{ReturnAction, return_reason};
use settle_core::clock::Timestamp;
use settle_core::ids::{PaymentId, TransactionId};
use settle_core::ledger::{Direction, EntryDraft, LedgerError, TransactionDraft, TransactionStatus};
use settle_core::metadata::Metadata;
use settle_core::money::{Amount, Currency};
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite};
use settle_store::engine::{Command, CommandError, Outcome};
use settle_store::events::NewEvent;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// NACHA's company entry description field.
const MAX_DESCRIPTION_CHARS: usize = 10;
/// One addenda record's payment related information.
const MAX_ADDENDA_CHARS: usize = 80;
const MAX_EXTERNAL_ID_CHARS: usize = 255;

#[derive(Deserialize, Serialize, ToSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PaymentDirection {
    /// Money out: from the ledger account to the counterparty.
    Credit,
    /// Money in: pulled from the counterparty into the ledger account.
    Debit,
}

/// `POST /v1/payments`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// `ach` (the only rail so far).
    #[schema(example = "ach")]
    pub rail: String,
    pub direction: PaymentDirection,
    /// Minor units (cents), 1 to 9,999,999,999.
    #[schema(minimum = 1, example = 12500)]
    pub amount: i64,
    /// `USD`.
    #[schema(example = "USD")]
    pub currency: String,
    /// The ledger account the money leaves (credit) or arrives in (debit).
    pub ledger_account_id: String,
    /// The counterparty's bank account (`ba_…`).
    pub counterparty_bank_account_id: String,
    /// `PPD`, `CCD`, `WEB` or `TEL`.
    #[schema(example = "PPD")]
    pub sec_code: String,
    /// 1 to 10 printable ASCII characters; the receiver's bank statement shows it.
    #[schema(example = "PAYROLL")]
    pub company_entry_description: String,
    /// Same-day ACH (at most the same-day cap, 1,000,000.00 USD by default).
    #[serde(default)]
    pub same_day: bool,
    /// `YYYY-MM-DD`, New York date, not before today: the earliest effective entry date wanted.
    pub effective_date: Option<String>,
    /// Up to 80 printable ASCII characters, sent as one addenda record.
    pub addenda: Option<String>,
    /// Your reference, unique per environment (1 to 255 characters).
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
    /// Sandbox only: a test clock (`clock_…`) the payment follows; its
    /// cutoffs, settlement, return windows and hold period run on that
    /// clock's time, when the clock is advanced.
    pub test_clock: Option<String>,
    /// Originate it again by itself when it is returned for insufficient or
    /// uncollected funds (R01, R09), after the retry policy's delay and
    /// within its limits (default `false`: retries are requested explicitly).
    #[serde(default)]
    pub auto_retry: bool,
}

/// The dishonor of a late return: Settle, as the originator's bank, sends
/// the return back to the receiving bank as untimely.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct DishonoredReturnJson {
    pub payment_id: String,
    /// `R68` (untimely return).
    #[schema(example = "R68")]
    pub dishonor_code: String,
    /// The late return's reason code (`R01`…).
    pub return_code: String,
    /// The late return entry's trace number.
    pub return_trace_number: String,
    pub received_at: String,
    /// `pending` (waiting for the next file), `submitted`, or `contested`
    /// (the receiving bank contested the dishonor, R71–R77: the original
    /// return stands and was applied).
    pub status: String,
    /// The file that carries the dishonored return, once `submitted`.
    pub ach_file_id: Option<String>,
    /// The dishonored return entry's trace number, once `submitted`.
    pub trace_number: Option<String>,
    /// The payment's test clock, if it follows one (its cut carries the dishonor).
    #[serde(default)]
    pub test_clock: Option<String>,
    /// Once `contested`: the contested dishonored return's reason code (`R71`…`R77`).
    #[serde(default)]
    pub contested_code: Option<String>,
    /// Once `contested`: when the contest arrived (the payment's clock).
    #[serde(default)]
    pub contested_at: Option<String>,
}

/// Contested dishonored return reason codes: the receiving bank's answer to a dishonor.
pub fn is_contested_dishonor_code(code: &str) -> bool {
    matches!(code, "R71" | "R72" | "R73" | "R74" | "R75" | "R76" | "R77")
}

/// NACHA's dishonored-return reason code for a return received after its window.
pub const UNTIMELY_RETURN_DISHONOR_CODE: &str = "R68";

/// The row of a dishonored return: one per payment (its id is the
/// payment's, with a suffix), so a second late return of the same payment
/// is not dishonored twice.
pub fn dishonor_row(tenant: TenantId, d: &DishonoredReturnJson, version: i64, created_at: i64) -> Result<AchRow, ApiError> {
    Ok(AchRow {
        id: format!("{}:dishonor", d.payment_id),
        tenant,
        status: d.status.clone(),
        lookup: Some(d.payment_id.clone()),
        external_id: None,
        version,
        data: encode(d)?,
        created_at,
    })
}

/// Records the dishonor of a late return of `p` (`code`, received in a
/// return entry traced `return_trace`): the payment is unchanged but for
/// `dishonored_return`, and the next file cut carries an `R68` entry.
/// `false` when the payment has a dishonored return already.
pub async fn record_dishonor(state: &AppState, tenant: TenantId, id: &str, code: &str, return_trace: &str) -> Result<bool, ApiError> {
    let now = state.clock.now();
    let (mut p, row) = load(state, tenant, id).await?;
    if p.dishonored_return.is_some() {
        return Ok(false);
    }
    let at = super::test_clocks::payment_now(state, tenant, &p).await?;
    let dishonor = DishonoredReturnJson {
        payment_id: p.id.clone(),
        dishonor_code: UNTIMELY_RETURN_DISHONOR_CODE.to_owned(),
        return_code: code.to_owned(),
        return_trace_number: return_trace.to_owned(),
        received_at: at.to_rfc3339(),
        status: String::from("pending"),
        ach_file_id: None,
        trace_number: None,
        test_clock: p.test_clock.clone(),
        contested_code: None,
        contested_at: None,
    };
    p.dishonored_return = Some(dishonor.clone());
    p.updated_at = at.to_rfc3339();
    let writes = vec![AchWrite::Insert(AchTable::DishonoredReturns, dishonor_row(tenant, &dishonor, 1, now.micros())?), update(tenant, &p, &row)?];
    match state.store.ach_apply(writes, Vec::new(), None, now).await {
        Ok(()) => Ok(true),
        Err(settle_store::ach::ApplyError::Stale) => Ok(false),
        Err(settle_store::ach::ApplyError::Store(e)) => Err(ApiError::from(e)),
    }
}

/// One move of a payment.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct PaymentHistoryJson {
    pub at: String,
    /// The status before (none for the creation).
    #[schema(value_type = Option<String>)]
    pub from: Option<PaymentStatus>,
    #[schema(value_type = String)]
    pub to: PaymentStatus,
    pub reason: Option<String>,
}

/// A ledger issue of a payment that the repair sweep resolved.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct LedgerRepairJson {
    /// The issue as first recorded (`ledger_issue`).
    pub issue: String,
    /// What the sweep applied (for example `reversed (reversal ltx_…)`), or
    /// `nothing left to apply` when the ledger already agreed.
    pub applied: String,
    /// Attempts it took, this one included.
    pub attempts: u32,
    /// When it was repaired (real time).
    pub repaired_at: String,
}

/// A payment on a rail.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
#[schema(as = Payment)]
pub struct PaymentJson {
    #[schema(example = "pay_01jd3k3z7m8q9r0s1t2v3w4x5y")]
    pub id: String,
    #[schema(example = "payment")]
    pub object: String,
    #[schema(example = "ach")]
    pub rail: String,
    pub direction: PaymentDirection,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `submitted`, `settled`, `returned`, `canceled` or `failed`.
    #[schema(value_type = String, example = "pending")]
    pub status: PaymentStatus,
    /// The ledger account the money leaves (credit) or arrives in (debit);
    /// none for a prenote, which moves no money.
    pub ledger_account_id: Option<String>,
    pub counterparty_id: String,
    pub counterparty_bank_account_id: String,
    pub sec_code: String,
    pub company_entry_description: String,
    pub same_day: bool,
    /// Requested at creation; the effective entry date once in a file.
    pub effective_date: Option<String>,
    pub addenda: Option<String>,
    pub external_id: Option<String>,
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Metadata,
    /// The ledger transaction that holds (credit) or expects (debit) the
    /// money; none for a prenote.
    pub ledger_transaction_id: Option<String>,
    /// A prenote: a zero-dollar entry (transaction code 23/28, 33/38) that
    /// verifies the bank account (`POST /v1/counterparties/{id}/bank_accounts/{bank_account_id}/verify`);
    /// it has no ledger effect, and its outcome is the bank account's `verification`.
    #[serde(default)]
    pub prenote: bool,
    /// The reversal of that transaction, after a return.
    pub reversal_transaction_id: Option<String>,
    /// A settled debit: the pending transaction that keeps its money
    /// unavailable until `available_at` (it expires then by itself).
    #[serde(default)]
    pub availability_hold_transaction_id: Option<String>,
    /// A settled debit: when its money becomes available.
    #[serde(default)]
    pub available_at: Option<String>,
    /// The entry's trace number, once in a file.
    pub trace_number: Option<String>,
    pub ach_file_id: Option<String>,
    /// The return reason code (`R01`…), once returned.
    pub return_code: Option<String>,
    pub return_reason: Option<String>,
    /// A retry (`POST /v1/payments/{id}/retry`): the original payment.
    #[serde(default)]
    pub retry_of: Option<String>,
    /// The original: how many times it was originated again.
    #[serde(default)]
    pub retry_count: u32,
    /// Originated again by itself after an R01/R09 return (its retries inherit it).
    #[serde(default)]
    pub auto_retry: bool,
    /// Returned R01/R09 with `auto_retry`: when the scheduler (or its test
    /// clock's advance) originates it again; cleared once retried.
    #[serde(default)]
    pub retry_due_at: Option<String>,
    /// Why a due automatic retry was not originated (its error code and
    /// message, for example `payment_not_retryable` past the policy's limits).
    #[serde(default)]
    pub retry_issue: Option<String>,
    /// Set when a ledger effect could not be applied after the payment moved
    /// (for example a reversal refused for insufficient funds after a late
    /// return): the repair sweep applies it again each scheduler round (with
    /// backoff) and clears this once the ledger agrees with the payment; a
    /// failed attempt appends its refusal.
    pub ledger_issue: Option<String>,
    /// Repair attempts made on the open `ledger_issue` (0 before the first).
    #[serde(default)]
    pub ledger_issue_attempts: u32,
    /// When the repair sweep tries the open `ledger_issue` again (after a failed attempt).
    #[serde(default)]
    pub ledger_issue_next_attempt_at: Option<String>,
    /// Ledger issues the repair sweep resolved, oldest first.
    #[serde(default)]
    pub ledger_repairs: Vec<LedgerRepairJson>,
    /// Sandbox: the test clock this payment follows (none: the real clock).
    #[serde(default)]
    pub test_clock: Option<String>,
    /// A return that arrived after its window, refused and dishonored (`R68`)
    /// in the next file: the payment keeps its status and its money.
    #[serde(default)]
    pub dishonored_return: Option<DishonoredReturnJson>,
    pub history: Vec<PaymentHistoryJson>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn payment_row(tenant: TenantId, p: &PaymentJson, version: i64, created_at: i64) -> Result<AchRow, ApiError> {
    Ok(AchRow {
        id: p.id.clone(),
        tenant,
        status: p.status.as_str().to_owned(),
        lookup: p.trace_number.clone(),
        external_id: p.external_id.clone(),
        version,
        data: encode(p)?,
        created_at,
    })
}

/// The event of `p`'s latest move (`payment.created`, `payment.submitted`,
/// …): the payment as it is now, and on moves its previous status. Its
/// sequence is the move's place in the history (1 for the creation).
pub fn event(state: &AppState, tenant: TenantId, p: &PaymentJson) -> Result<NewEvent, ApiError> {
    let from = p.history.last().and_then(|h| h.from);
    let kind = match from {
        None => String::from("payment.created"),
        Some(_) => format!("payment.{}", p.status.as_str()),
    };
    // Events are stamped with the real time, like their ids, so that time
    // filters on events stay true; a test-clock payment's own times are its clock's.
    let now = match p.test_clock {
        Some(_) => state.clock.now(),
        None => Timestamp::parse_rfc3339(&p.updated_at).unwrap_or_else(|| state.clock.now()),
    };
    let sequence = sequence_of(p);
    let object = serde_json::to_value(p).map_err(|e| ApiError::internal(&e))?;
    let previous = from.map(|f| serde_json::json!({"status": f.as_str()}));
    super::new_event(state, tenant, kind, (&p.id, sequence), object, previous, now)
}

/// The `payment.return_dishonored` event of `p`, whose dishonored return
/// was just put in a file (`dishonored_return.status: submitted`).
pub fn dishonor_event(state: &AppState, tenant: TenantId, p: &PaymentJson) -> Result<NewEvent, ApiError> {
    let sequence = sequence_of(p);
    let object = serde_json::to_value(p).map_err(|e| ApiError::internal(&e))?;
    let previous = serde_json::json!({"dishonored_return": {"status": "pending"}});
    super::new_event(state, tenant, String::from("payment.return_dishonored"), (&p.id, sequence), object, Some(previous), state.clock.now())
}

/// The sequence of `p`'s latest change among its events: its moves and the
/// ledger repairs made since, so a repair's event sorts after the move it
/// repaired and before the next move.
pub fn sequence_of(p: &PaymentJson) -> i64 {
    i64::try_from(p.history.len() + p.ledger_repairs.len()).unwrap_or(i64::MAX)
}

/// Moves `p` to `to` with a history line, or refuses the move (409).
pub fn move_to(p: &mut PaymentJson, to: PaymentStatus, reason: Option<String>, now: Timestamp) -> Result<(), ApiError> {
    if !p.status.can_move_to(to) {
        return Err(conflict("payment_invalid_state", format!("a {} payment cannot become {}", p.status.as_str(), to.as_str())));
    }
    p.history.push(PaymentHistoryJson { at: now.to_rfc3339(), from: Some(p.status), to, reason });
    p.status = to;
    p.updated_at = now.to_rfc3339();
    Ok(())
}

/// The write that stores `p` over the row version `read`.
pub fn update(tenant: TenantId, p: &PaymentJson, row: &AchRow) -> Result<AchWrite, ApiError> {
    Ok(AchWrite::Update(AchTable::Payments, payment_row(tenant, p, row.version + 1, row.created_at)?))
}

fn stale() -> ApiError {
    conflict("payment_conflict", "the payment changed while the request was decided; nothing was written, read it again and retry")
}

/// The tenant's payment `id` with its row, or 404.
pub async fn load(state: &AppState, tenant: TenantId, id: &str) -> Result<(PaymentJson, AchRow), ApiError> {
    if PaymentId::parse(id).is_none() {
        return Err(ApiError::not_found("payment"));
    }
    let row = state.store.ach_get(AchTable::Payments, tenant, id.to_owned()).await?.ok_or_else(|| ApiError::not_found("payment"))?;
    Ok((decode(&row.data)?, row))
}

fn transaction_id(text: Option<&str>) -> Result<TransactionId, ApiError> {
    text.and_then(TransactionId::parse).ok_or_else(|| ApiError::internal(&"a payment's ledger transaction id is malformed"))
}

/// Posts a payment's pending transaction; one already posted counts as done.
pub async fn post_ledger(state: &AppState, tenant: TenantId, p: &PaymentJson) -> Result<(), LedgerRefusal> {
    if p.prenote {
        return Ok(());
    }
    let id = transaction_id(p.ledger_transaction_id.as_deref()).map_err(|_| LedgerRefusal::Unavailable)?;
    match submit_ledger(state, tenant, Command::PostTransaction { id, entries: None }).await {
        Ok(_) | Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(_)))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Voids a payment's pending transaction; one already voided counts as done.
pub async fn void_ledger(state: &AppState, tenant: TenantId, p: &PaymentJson) -> Result<(), LedgerRefusal> {
    if p.prenote {
        return Ok(());
    }
    let id = transaction_id(p.ledger_transaction_id.as_deref()).map_err(|_| LedgerRefusal::Unavailable)?;
    match submit_ledger(state, tenant, Command::VoidTransaction { id }).await {
        Ok(_) | Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(_)))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reverses a payment's posted transaction; returns the reversal's id.
pub async fn reverse_ledger(state: &AppState, tenant: TenantId, p: &PaymentJson) -> Result<Option<String>, LedgerRefusal> {
    if p.prenote {
        return Ok(None);
    }
    let id = transaction_id(p.ledger_transaction_id.as_deref()).map_err(|_| LedgerRefusal::Unavailable)?;
    match submit_ledger(state, tenant, Command::ReverseTransaction { id }).await {
        Ok(Outcome::Reversal(t)) => Ok(Some(t.id.to_string())),
        Ok(_) => Ok(None),
        Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::AlreadyReversed { .. }))) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A payment's row is re-read this many times when it moved while its
/// ledger issue was being recorded.
const MAX_ISSUE_RECORD_TRIES: usize = 3;

/// Writes down a ledger effect that could not be applied after the payment
/// moved, so that it is never silent: `ledger_issue` on the payment and an
/// `open` row of the repair sweep's work list (`ach_ledger_repairs`), in one
/// transaction (best effort: logged if even this fails).
pub(crate) async fn record_ledger_issue(state: &AppState, tenant: TenantId, payment_id: &str, issue: String) {
    let result = async {
        for _ in 0..MAX_ISSUE_RECORD_TRIES {
            let now = state.clock.now();
            let (mut p, row) = load(state, tenant, payment_id).await?;
            p.ledger_issue = Some(issue.clone());
            p.ledger_issue_attempts = 0;
            p.ledger_issue_next_attempt_at = None;
            let open = super::repairs::open_write(state, tenant, &p, &issue, now).await?;
            match state.store.ach_apply(vec![update(tenant, &p, &row)?, open], Vec::new(), None, now).await {
                Ok(()) => return Ok(()),
                // The payment moved meanwhile (or another server listed it): read it again.
                Err(settle_store::ach::ApplyError::Stale) => continue,
                Err(settle_store::ach::ApplyError::Store(e)) => return Err(ApiError::from(e)),
            }
        }
        Err(stale())
    }
    .await;
    tracing::error!(payment_id, issue = %issue, recorded = result.is_ok(), "an ACH payment's ledger effect was not applied");
}

pub(crate) fn issue_of(e: &LedgerRefusal) -> String {
    match e {
        LedgerRefusal::Refused(c) => ApiError::from(c).code.to_owned(),
        LedgerRefusal::Unavailable => String::from("ledger_unavailable"),
    }
}

fn ascii_text(param: &str, text: &str, max: usize) -> Result<String, ApiError> {
    let n = text.chars().count();
    if n == 0 || n > max || !text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(ApiError::invalid(param, format!("{param} must be 1 to {max} printable ASCII characters")));
    }
    Ok(text.to_owned())
}

/// A `YYYY-MM-DD` date.
pub fn date(param: &str, text: &str) -> Result<time::Date, ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format).map_err(|_| ApiError::invalid(param, format!("{param} must be a date, YYYY-MM-DD")))
}

/// Today in New York, where the ACH calendar lives.
pub fn new_york_today(now: Timestamp) -> time::Date {
    settle_ach::window::new_york(utc(now)).date()
}

pub fn utc(now: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now.micros()) * 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Creates a payment: checks it, places its ledger hold (credit) or pending
/// credit (debit), and stores it `pending` until the next file.
#[utoipa::path(post, path = "/v1/payments", tag = "Payments", operation_id = "create_payment",
    params(crate::openapi::IdempotencyKey),
    request_body = CreatePaymentRequest,
    responses((status = 201, description = "The new payment, pending.", body = PaymentJson)))]
pub async fn create(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::PaymentsWrite>,
    headers: HeaderMap,
    body: JsonBody<CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    let keyed = keyed(&state, &principal, &headers, "/v1/payments", &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let req = body.value;
    let tenant = principal.tenant;
    let now = state.clock.now();
    let test_clock = match &req.test_clock {
        Some(_) if principal.environment != settle_core::tenancy::Environment::Sandbox => {
            return Err(ApiError::invalid("test_clock", "test clocks exist only in the sandbox"));
        }
        Some(id) => Some(super::test_clocks::load(&state, tenant, id).await.map_err(|_| ApiError::invalid("test_clock", "no such test clock"))?.0.id),
        None => None,
    };
    // The payment's own time: its test clock's, or now.
    let at = super::test_clocks::now_of(&state, tenant, test_clock.as_deref()).await?;
    if req.rail != "ach" {
        return Err(ApiError::invalid("rail", "rail must be ach"));
    }
    if req.amount < 1 || req.amount > MAX_ENTRY_AMOUNT_MINOR {
        return Err(ApiError::invalid("amount", format!("amount must be 1 to {MAX_ENTRY_AMOUNT_MINOR} minor units")));
    }
    if req.currency != "USD" {
        return Err(ApiError::invalid("currency", "ACH payments are in USD"));
    }
    let sec = SecCode::parse(&req.sec_code).ok_or_else(|| ApiError::invalid("sec_code", "sec_code must be PPD, CCD, WEB or TEL"))?;
    let description = ascii_text("company_entry_description", &req.company_entry_description, MAX_DESCRIPTION_CHARS)?;
    let addenda = req.addenda.as_deref().map(|a| ascii_text("addenda", a, MAX_ADDENDA_CHARS)).transpose()?;
    let external_id = crate::wire::text("external_id", req.external_id, MAX_EXTERNAL_ID_CHARS)?;
    let metadata = crate::wire::metadata_of("metadata", req.metadata)?;
    let effective_date = match &req.effective_date {
        Some(text) => {
            let d = date("effective_date", text)?;
            if d < new_york_today(at) {
                return Err(ApiError::invalid("effective_date", "effective_date must not be before today (New York)"));
            }
            Some(d.to_string())
        }
        None => None,
    };
    if req.same_day && req.amount > state.ach.config.same_day_limit_minor {
        return Err(unprocessable(
            "same_day_limit_exceeded",
            format!("a same-day ACH payment is at most {} minor units", state.ach.config.same_day_limit_minor),
        )
        .with_param("amount"));
    }
    let account_id = crate::wire::body_account_id("ledger_account_id", &req.ledger_account_id)?;
    let account = state.store.get_account(tenant, account_id.clone(), now).await?.ok_or_else(|| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, crate::error::ErrorType::LedgerError, "account_not_found", "no such ledger account")
            .with_param("ledger_account_id")
    })?;
    let usd = Currency::parse("USD").ok_or_else(|| ApiError::internal(&"USD is not a known currency"))?;
    if account.state.currency != usd {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            crate::error::ErrorType::LedgerError,
            "currency_mismatch",
            "the ledger account is not in USD",
        )
        .with_param("ledger_account_id"));
    }
    let (bank, _) = load_bank_account(&state, tenant, &req.counterparty_bank_account_id, "counterparty_bank_account_id").await?;
    if bank.json.status != "active" {
        return Err(unprocessable("bank_account_disabled", "the counterparty's bank account is disabled (see its disabled_reason)")
            .with_param("counterparty_bank_account_id"));
    }
    super::prenotes::refuse_unverified(&bank.json).map_err(|e| e.with_param("counterparty_bank_account_id"))?;
    if let Some(existing) = &external_id
        && let Some(row) = state.store.ach_get_by_external_id(AchTable::Payments, tenant, existing.clone()).await?
    {
        return Err(conflict("duplicate_external_id", format!("external_id is already used by {}", row.id)).with_param("external_id"));
    }
    if req.direction == PaymentDirection::Debit && sec.is_consumer() {
        // At the payment's time: a test clock's payment sees the consents in force at its clock's time.
        require_debit_authorization(&state, tenant, &bank.json.counterparty_id, at).await?;
    }
    crate::customers::accounts::refuse_blocked(&state, tenant, &[&account_id]).await?;
    let mut payment = PaymentJson::pending(
        state.ach.ids.payment().to_string(),
        NewEntry { direction: req.direction, amount: req.amount, bank: &bank.json, sec, description },
        at,
        String::from("created"),
    );
    payment.ledger_account_id = Some(account_id.to_string());
    payment.same_day = req.same_day;
    payment.effective_date = effective_date;
    payment.addenda = addenda;
    payment.external_id = external_id;
    payment.metadata = metadata;
    payment.auto_retry = req.auto_retry;
    payment.test_clock = test_clock;
    let (response, _) = open_payment(&state, tenant, payment, account.state.normal_balance, Vec::new(), keyed.key, now).await?;
    Ok(response)
}

/// What every new entry names: its direction and amount, where it goes
/// and how it is filed.
pub struct NewEntry<'a> {
    pub direction: PaymentDirection,
    pub amount: i64,
    pub bank: &'a BankAccountJson,
    pub sec: SecCode,
    pub description: String,
}

impl PaymentJson {
    /// A new `pending` payment of `entry` created at `at` for `reason` (its
    /// first history line): nothing filed, settled, returned or retried
    /// yet, no ledger account (the caller sets it, and the other options).
    pub fn pending(id: String, entry: NewEntry<'_>, at: Timestamp, reason: String) -> PaymentJson {
        PaymentJson {
            id,
            object: String::from("payment"),
            rail: String::from("ach"),
            direction: entry.direction,
            amount: entry.amount,
            currency: String::from("USD"),
            status: PaymentStatus::Pending,
            ledger_account_id: None,
            counterparty_id: entry.bank.counterparty_id.clone(),
            counterparty_bank_account_id: entry.bank.id.clone(),
            sec_code: entry.sec.as_str().to_owned(),
            company_entry_description: entry.description,
            same_day: false,
            effective_date: None,
            addenda: None,
            external_id: None,
            metadata: Metadata::default(),
            ledger_transaction_id: None,
            prenote: false,
            reversal_transaction_id: None,
            availability_hold_transaction_id: None,
            available_at: None,
            trace_number: None,
            ach_file_id: None,
            return_code: None,
            return_reason: None,
            retry_of: None,
            retry_count: 0,
            auto_retry: false,
            retry_due_at: None,
            retry_issue: None,
            ledger_issue: None,
            ledger_issue_attempts: 0,
            ledger_issue_next_attempt_at: None,
            ledger_repairs: Vec::new(),
            test_clock: None,
            dishonored_return: None,
            history: vec![PaymentHistoryJson { at: at.to_rfc3339(), from: None, to: PaymentStatus::Pending, reason: Some(reason) }],
            created_at: at.to_rfc3339(),
            updated_at: at.to_rfc3339(),
        }
    }
}

/// Places a new payment's ledger hold (credit: account → clearing; debit:
/// clearing → account, pending) and stores the payment with its event,
/// `extra` writes and the request's idempotency record; if the payment
/// cannot be stored, the hold is released again.
async fn open_payment(
    state: &AppState,
    tenant: TenantId,
    mut payment: PaymentJson,
    normal: Direction,
    extra: Vec<AchWrite>,
    key: Option<(String, String)>,
    now: Timestamp,
) -> Result<(Response, PaymentJson), ApiError> {
    let usd = Currency::parse("USD").ok_or_else(|| ApiError::internal(&"USD is not a known currency"))?;
    let clearing = clearing_account(state, tenant, usd).await?;
    let account_id = settle_core::ids::AccountId::parse(payment.ledger_account_id.as_deref().unwrap_or(""))
        .ok_or_else(|| ApiError::internal(&"a payment's account id is malformed"))?;
    let amount = Amount::new(payment.amount).ok_or_else(|| ApiError::invalid("amount", "amount must be positive"))?;
    let opposite = |d: Direction| match d {
        Direction::Debit => Direction::Credit,
        Direction::Credit => Direction::Debit,
    };
    // A credit lowers the account on its normal side; a debit raises it.
    let (account_side, word) = match payment.direction {
        PaymentDirection::Credit => (opposite(normal), "credit"),
        PaymentDirection::Debit => (normal, "debit"),
    };
    let id = payment.id.clone();
    let draft = TransactionDraft {
        entries: vec![
            EntryDraft { account_id, direction: account_side, amount, currency: None },
            EntryDraft { account_id: clearing, direction: opposite(account_side), amount, currency: None },
        ],
        status: TransactionStatus::Pending,
        description: Some(format!("ACH {word} {id}")),
        external_id: Some(format!("ach:{id}")),
        effective_at: None,
        expires_at: None,
        expected_versions: BTreeMap::new(),
        metadata: Metadata::from([(String::from("payment_id"), id.clone())]),
    };
    let transaction = match submit_ledger(state, tenant, Command::CreateTransaction(Box::new(draft))).await {
        Ok(Outcome::Transaction(t)) => t,
        Ok(_) => return Err(ApiError::internal(&"unexpected engine outcome for a payment's hold")),
        Err(e) => return Err(e.into_api().with_param("ledger_account_id")),
    };
    payment.ledger_transaction_id = Some(transaction.id.to_string());
    let (response, bytes) = json_response(StatusCode::CREATED, &payment)?;
    let idempotency = idempotency_record(tenant, key, StatusCode::CREATED, bytes, now);
    let mut writes = vec![AchWrite::Insert(AchTable::Payments, payment_row(tenant, &payment, 1, now.micros())?)];
    writes.extend(extra);
    let events = vec![event(state, tenant, &payment)?];
    if let Err(e) = applied(state.store.ach_apply(writes, events, idempotency, now).await, stale) {
        // Not stored (a concurrent request took the external id, or moved
        // what `extra` updates): release the hold this request placed.
        if let Err(refusal) = void_ledger(state, tenant, &payment).await {
            tracing::error!(payment_id = %payment.id, issue = %issue_of(&refusal), "an unstored payment's hold was not voided");
        }
        return Err(if e.code == "payment_conflict" && payment.external_id.is_some() {
            conflict("duplicate_external_id", "external_id is already used").with_param("external_id")
        } else {
            e
        });
    }
    Ok((response, payment))
}

/// Due automatic retries read per tenant and round.
const MAX_DUE_RETRIES_SCANNED: i64 = 10_000;

/// Originates a payment returned for insufficient or uncollected funds (R01,
/// R09) again: a new payment with the same terms, within the retry policy
/// (by default at most twice within 180 days of the original, NACHA's
/// reinitiation limits; `--ach-retry-max`, `--ach-retry-window-days`).
#[utoipa::path(post, path = "/v1/payments/{id}/retry", tag = "Payments", operation_id = "retry_payment",
    params(("id" = String, Path, description = "A returned payment id (`pay_…`)."), crate::openapi::IdempotencyKey),
    request_body = EmptyRequest,
    responses((status = 201, description = "The new payment, pending; `retry_of` names the original.", body = PaymentJson)))]
pub async fn retry(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::PaymentsWrite>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let path = format!("/v1/payments/{id}/retry");
    let keyed = keyed(&state, &principal, &headers, &path, &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let (response, _) = originate_retry(&state, principal.tenant, &id, keyed.key, None).await?;
    Ok(response)
}

/// Originates the payment `id`, returned R01 or R09, again under the retry
/// policy (`AchConfig::retry`) at `at` (none: its clock's now): a new pending payment with the same terms
/// and `retry_of` the original, whose `retry_count` counts it. The returned
/// payment's due automatic retry is cleared in the same write, and the
/// original's version check makes a concurrent second retry (another
/// server's scheduler, an explicit request) lose with `payment_conflict`.
pub async fn originate_retry(
    state: &AppState,
    tenant: TenantId,
    id: &str,
    key: Option<(String, String)>,
    at: Option<Timestamp>,
) -> Result<(Response, PaymentJson), ApiError> {
    let policy = state.ach.config.retry;
    let now = state.clock.now();
    let (returned, returned_row) = load(state, tenant, id).await?;
    // A scheduler round (or a test clock's advance) passes its instant.
    let at = match at {
        Some(at) => at,
        None => super::test_clocks::payment_now(state, tenant, &returned).await?,
    };
    let code = returned.return_code.as_deref().unwrap_or("");
    let retryable =
        !returned.prenote && returned.status == PaymentStatus::Returned && return_reason(code).is_some_and(|r| r.action == ReturnAction::RetryAllowed);
    if !retryable {
        return Err(unprocessable("payment_not_retryable", "only a payment returned R01 or R09 (insufficient or uncollected funds) may be originated again"));
    }
    let root_id = returned.retry_of.clone().unwrap_or_else(|| returned.id.clone());
    let (mut root, root_row) = load(state, tenant, &root_id).await?;
    let root_created = Timestamp::parse_rfc3339(&root.created_at).unwrap_or(at);
    if root.retry_count >= policy.max_retries || at.micros() - root_created.micros() > i64::from(policy.window_days) * 86_400_000_000 {
        return Err(unprocessable(
            "payment_not_retryable",
            format!("a payment may be originated again at most {} times within {} days of the original", policy.max_retries, policy.window_days),
        ));
    }
    let (bank, _) = load_bank_account(state, tenant, &returned.counterparty_bank_account_id, "counterparty_bank_account_id").await?;
    if bank.json.status != "active" {
        return Err(unprocessable("bank_account_disabled", "the counterparty's bank account is disabled (see its disabled_reason)"));
    }
    super::prenotes::refuse_unverified(&bank.json)?;
    let account_id = settle_core::ids::AccountId::parse(returned.ledger_account_id.as_deref().unwrap_or(""))
        .ok_or_else(|| ApiError::internal(&"a payment's account id is malformed"))?;
    let account = state.store.get_account(tenant, account_id.clone(), now).await?.ok_or_else(|| ApiError::not_found("account"))?;
    crate::customers::accounts::refuse_blocked(state, tenant, &[&account_id]).await?;
    if returned.direction == PaymentDirection::Debit && SecCode::parse(&returned.sec_code).is_some_and(SecCode::is_consumer) {
        require_debit_authorization(state, tenant, &returned.counterparty_id, at).await?;
    }
    root.retry_count += 1;
    root.updated_at = at.to_rfc3339();
    let mut extra = Vec::new();
    if returned.id == root.id {
        root.retry_due_at = None;
    } else if returned.retry_due_at.is_some() {
        let mut cleared = returned.clone();
        cleared.retry_due_at = None;
        cleared.updated_at = at.to_rfc3339();
        extra.push(update(tenant, &cleared, &returned_row)?);
    }
    extra.insert(0, AchWrite::Update(AchTable::Payments, payment_row(tenant, &root, root_row.version + 1, root_row.created_at)?));
    let sec = SecCode::parse(&returned.sec_code).ok_or_else(|| ApiError::internal(&"a stored payment's SEC code is unknown"))?;
    let entry =
        NewEntry { direction: returned.direction, amount: returned.amount, bank: &bank.json, sec, description: returned.company_entry_description.clone() };
    let reason = format!("retry {} of {root_id}", root.retry_count);
    // A new entry like any other; it keeps how the returned one was asked for.
    let mut payment = PaymentJson::pending(state.ach.ids.payment().to_string(), entry, at, reason);
    payment.ledger_account_id = returned.ledger_account_id;
    payment.same_day = returned.same_day;
    payment.addenda = returned.addenda;
    payment.metadata = returned.metadata;
    payment.prenote = returned.prenote;
    payment.auto_retry = returned.auto_retry;
    payment.test_clock = returned.test_clock;
    payment.retry_of = Some(root_id.clone());
    open_payment(state, tenant, payment, account.state.normal_balance, extra, key, now).await
}

/// A payment whose automatic retry is due (a row of `ach_retries`, `due`
/// until the retry is originated, refused or made explicitly).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct DueRetry {
    payment_id: String,
    test_clock: Option<String>,
    due_at: String,
}

/// The work list row of `p`'s due automatic retry.
fn due_retry_row(tenant: TenantId, p: &PaymentJson, due_at: &str, now: Timestamp) -> Result<AchWrite, ApiError> {
    let due = DueRetry { payment_id: p.id.clone(), test_clock: p.test_clock.clone(), due_at: due_at.to_owned() };
    Ok(AchWrite::Insert(
        AchTable::Retries,
        AchRow {
            id: p.id.clone(),
            tenant,
            status: String::from("due"),
            lookup: None,
            external_id: None,
            version: 1,
            data: encode(&due)?,
            created_at: now.micros(),
        },
    ))
}

/// Originates again the tenant's payments returned R01/R09 with `auto_retry`
/// that follow `test_clock` (none: the real clock) and whose retry is due at
/// `at`; run by the scheduler and by a test clock's advance. A retry the
/// policy or the payment's state refuses is not tried again: its reason is
/// kept in `retry_issue`. Reads the due retries (`ach_retries` rows in
/// status `due`, at most [`MAX_DUE_RETRIES_SCANNED`] per tenant), not the
/// returned payments; a row leaves the list once its payment's
/// `retry_due_at` is cleared.
pub async fn retry_due(state: &AppState, tenant: TenantId, at: Timestamp, test_clock: Option<&str>) -> Result<(), ApiError> {
    for row in state.store.ach_in_status(AchTable::Retries, tenant, "due", MAX_DUE_RETRIES_SCANNED).await? {
        let due: DueRetry = decode(&row.data)?;
        if due.test_clock.as_deref() != test_clock {
            continue;
        }
        if Timestamp::parse_rfc3339(&due.due_at).is_some_and(|when| when > at) {
            continue;
        }
        let (p, _) = load(state, tenant, &due.payment_id).await?;
        if p.retry_due_at.is_some() {
            retry_one(state, tenant, &p, at).await?;
        }
        // Retried, refused (and recorded) or retried explicitly: off the list.
        if load(state, tenant, &due.payment_id).await?.0.retry_due_at.is_none() {
            let done = AchWrite::Update(AchTable::Retries, AchRow { status: String::from("done"), version: row.version + 1, ..row });
            if let Err(e) = applied(state.store.ach_apply(vec![done], Vec::new(), None, state.clock.now()).await, stale) {
                tracing::warn!(payment_id = %due.payment_id, code = e.code, "closing a due retry failed; the next round closes it");
            }
        }
    }
    Ok(())
}

/// Originates `p`'s due automatic retry at `at`, or records why not.
async fn retry_one(state: &AppState, tenant: TenantId, p: &PaymentJson, at: Timestamp) -> Result<(), ApiError> {
    match originate_retry(state, tenant, &p.id, None, Some(at)).await {
        Ok(_) => {}
        // Another server (or an explicit retry) got there first.
        Err(e) if e.code == "payment_conflict" => {}
        Err(e) if e.status.is_client_error() => {
            let (mut fresh, fresh_row) = load(state, tenant, &p.id).await?;
            fresh.retry_due_at = None;
            fresh.retry_issue = Some(format!("{}: {}", e.code, e.message));
            let now = state.clock.now();
            if let Err(e) = applied(state.store.ach_apply(vec![update(tenant, &fresh, &fresh_row)?], Vec::new(), None, now).await, stale) {
                tracing::warn!(payment_id = %p.id, code = e.code, "recording a refused automatic retry failed; the next round retries");
            }
        }
        Err(e) => tracing::warn!(payment_id = %p.id, code = e.code, message = %e.message, "an automatic ACH retry failed; the next round retries"),
    }
    Ok(())
}

/// Revokes the active `ach_debit_authorization` consent of the payment's
/// counterparty's customer (audited as done by `settle-ach`); `false` when
/// there is none to revoke. The consent is the one in force at the
/// payment's time `at` (its test clock's), or else now; the revocation takes
/// effect at the earlier of the two, so that neither a real-time payment
/// nor one on the clock can debit under it any more.
async fn revoke_debit_authorization(
    state: &AppState,
    tenant: TenantId,
    p: &PaymentJson,
    code: &str,
    description: &str,
    (at, now): (Timestamp, Timestamp),
) -> Result<bool, ApiError> {
    let Some(row) = state.store.ach_get(AchTable::Counterparties, tenant, p.counterparty_id.clone()).await? else { return Ok(false) };
    let counterparty: super::counterparties::CounterpartyRecord = decode(&row.data)?;
    let Some(customer) = counterparty.customer_id else { return Ok(false) };
    let kind = String::from("ach_debit_authorization");
    let consent = match state.store.active_consent(tenant, customer.clone(), kind.clone(), at.micros()).await? {
        Some(c) => Some(c),
        None if at != now => state.store.active_consent(tenant, customer, kind, now.micros()).await?,
        None => None,
    };
    let Some(consent) = consent else { return Ok(false) };
    let actor = crate::customers::Actor::system(tenant, "settle-ach");
    let reason = format!("ACH return {code} ({description}) of {}", p.id);
    let revocation = settle_store::customers::RevocationRecord {
        id: state.customers.ids.consent_revocation().to_string(),
        consent_id: consent.id.clone(),
        reason: reason.clone(),
        revoked_at: at.min(now).micros(),
        actor: actor.actor.clone(),
        created_at: now.micros(),
    };
    let audit = vec![actor.audit(&state.customers.ids, "consent.revoked", ("consent", &consent.id), vec![String::from("status")], Some(reason), now)];
    state.store.revoke_consent(tenant, revocation, audit, None).await?;
    Ok(true)
}

/// A consumer debit (PPD, WEB, TEL) needs the receiver's authorization: the
/// counterparty is a customer with an active `ach_debit_authorization`
/// consent at the payment's time `now` (its test clock's, if it follows one;
/// a revoked one stops future debits at once).
async fn require_debit_authorization(state: &AppState, tenant: TenantId, counterparty_id: &str, now: Timestamp) -> Result<(), ApiError> {
    let missing = || {
        unprocessable(
            "debit_authorization_missing",
            "a consumer debit (PPD, WEB, TEL) needs the counterparty to be a customer with an active ach_debit_authorization consent",
        )
        .with_param("sec_code")
    };
    let row = state.store.ach_get(AchTable::Counterparties, tenant, counterparty_id.to_owned()).await?.ok_or_else(missing)?;
    let counterparty: super::counterparties::CounterpartyRecord = decode(&row.data)?;
    let Some(customer) = counterparty.customer_id else { return Err(missing()) };
    match state.store.active_consent(tenant, customer, String::from("ach_debit_authorization"), now.micros()).await? {
        Some(_) => Ok(()),
        None => Err(missing()),
    }
}

/// A payment with its history.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "Payments", operation_id = "get_payment",
    params(("id" = String, Path, description = "A payment id (`pay_…`).")),
    responses((status = 200, description = "The payment.", body = PaymentJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    let (p, _) = load(&state, principal.tenant, &id).await?;
    Ok(axum::Json(p).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// Only payments in this status.
    pub status: Option<String>,
}

/// Payments, newest first.
#[utoipa::path(get, path = "/v1/payments", tag = "Payments", operation_id = "list_payments",
    params(PaymentListParams),
    responses((status = 200, description = "A page of payments.", body = inline(crate::render::ListJson<PaymentJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsRead)?;
    let params: PaymentListParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| PaymentId::parse(id).is_some())?;
    let status = match params.status {
        Some(s) => Some(PaymentStatus::parse(&s).ok_or_else(|| ApiError::invalid("status", "status must be a payment status"))?.as_str().to_owned()),
        None => None,
    };
    let result = state.store.ach_list(AchTable::Payments, principal.tenant, status, page).await?;
    let items = result.items.iter().map(|r| decode::<PaymentJson>(&r.data)).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(crate::render::list(items, result.has_more)).into_response())
}

/// Cancels a payment that is not yet in a file, releasing its ledger hold.
#[utoipa::path(post, path = "/v1/payments/{id}/cancel", tag = "Payments", operation_id = "cancel_payment",
    params(("id" = String, Path, description = "A payment id (`pay_…`)."), crate::openapi::IdempotencyKey),
    request_body = EmptyRequest,
    responses((status = 200, description = "The canceled payment.", body = PaymentJson)))]
pub async fn cancel(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::PaymentsWrite>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let path = format!("/v1/payments/{id}/cancel");
    let keyed = keyed(&state, &principal, &headers, &path, &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let tenant = principal.tenant;
    let now = state.clock.now();
    let (mut p, row) = load(&state, tenant, &id).await?;
    if p.status != PaymentStatus::Pending {
        return Err(conflict("payment_not_cancelable", format!("a {} payment can no longer be canceled", p.status.as_str())));
    }
    let at = super::test_clocks::payment_now(&state, tenant, &p).await?;
    move_to(&mut p, PaymentStatus::Canceled, Some(String::from("canceled by request")), at)?;
    let (response, bytes) = json_response(StatusCode::OK, &p)?;
    let idempotency = idempotency_record(tenant, keyed.key, StatusCode::OK, bytes, now);
    applied(state.store.ach_apply(vec![update(tenant, &p, &row)?], vec![event(&state, tenant, &p)?], idempotency, now).await, stale)?;
    if let Err(e) = void_ledger(&state, tenant, &p).await {
        record_ledger_issue(&state, tenant, &p.id, format!("hold not voided: {}", issue_of(&e))).await;
    }
    Ok(response)
}

/// Marks a submitted payment settled; a debit's pending credit is posted.
/// `at` is the payment's time (its test clock's while a clock advances);
/// `None` reads it from the payment's clock.
pub async fn settle(state: &AppState, tenant: TenantId, id: &str, reason: &str, at: Option<Timestamp>) -> Result<PaymentJson, ApiError> {
    let now = state.clock.now();
    let (mut p, row) = load(state, tenant, id).await?;
    let at = match at {
        Some(at) => at,
        None => super::test_clocks::payment_now(state, tenant, &p).await?,
    };
    move_to(&mut p, PaymentStatus::Settled, Some(reason.to_owned()), at)?;
    applied(state.store.ach_apply(vec![update(tenant, &p, &row)?], vec![event(state, tenant, &p)?], None, now).await, stale)?;
    if p.direction == PaymentDirection::Debit && !p.prenote {
        if let Err(e) = post_ledger(state, tenant, &p).await {
            record_ledger_issue(state, tenant, &p.id, format!("pending credit not posted: {}", issue_of(&e))).await;
            return Ok(load(state, tenant, id).await?.0);
        }
        let days = state.ach.config.debit_hold_banking_days;
        if days > 0 {
            match availability_hold(state, tenant, &p, days, at).await {
                Ok(None) => {}
                Ok(Some((hold, until))) => {
                    let (mut fresh, row) = load(state, tenant, id).await?;
                    fresh.availability_hold_transaction_id = Some(hold);
                    fresh.available_at = Some(until.to_rfc3339());
                    applied(state.store.ach_apply(vec![update(tenant, &fresh, &row)?], Vec::new(), None, now).await, stale)?;
                    return Ok(fresh);
                }
                Err(e) => record_ledger_issue(state, tenant, &p.id, format!("availability hold not placed: {}", issue_of(&e))).await,
            }
            return Ok(load(state, tenant, id).await?.0);
        }
    }
    Ok(p)
}

/// Midnight New York at the start of the `days`th banking day after `date`.
fn start_of_banking_day_after(date: time::Date, days: u32) -> Option<Timestamp> {
    new_york_instant(settle_core::calendar::add_banking_days(date, days)?, 0, 0)
}

/// `hour:minute` New York time on `day` (the offset is New York's at noon
/// UTC that day, which is never within an hour of a daylight-saving switch).
pub fn new_york_instant(day: time::Date, hour: u8, minute: u8) -> Option<Timestamp> {
    let noon = day.with_hms(12, 0, 0).ok()?.assume_utc();
    let offset = settle_ach::window::new_york_offset(noon);
    let local = day.with_hms(hour, minute, 0).ok()?.assume_offset(offset);
    let micros = i64::try_from(local.unix_timestamp_nanos() / 1000).ok()?;
    Some(Timestamp::from_micros(micros))
}

/// When a settled debit's money becomes available: 00:00 New York on the
/// `days`th banking day after its effective date (`at`'s date without one).
pub(crate) fn hold_until(p: &PaymentJson, days: u32, at: Timestamp) -> Option<Timestamp> {
    let settled = p.effective_date.as_deref().and_then(|d| date("effective_date", d).ok()).unwrap_or_else(|| new_york_today(at));
    start_of_banking_day_after(settled, days)
}

/// Places a settled debit's availability hold: a pending transaction from
/// the account back to the clearing account for the amount, expiring when
/// the hold period ends. Until then the money counts in `posted` but not in
/// `available`, so a return inside the period voids the hold and reverses
/// the credit without ever taking the account below its limit.
///
/// A test-clock payment's hold has no ledger expiry (the ledger runs on the
/// real clock): advancing the clock past `available_at` voids it. `None`
/// when its hold period has already passed on its clock.
pub(crate) async fn availability_hold(
    state: &AppState,
    tenant: TenantId,
    p: &PaymentJson,
    days: u32,
    at: Timestamp,
) -> Result<Option<(String, Timestamp)>, LedgerRefusal> {
    let now = state.clock.now();
    let until = hold_until(p, days, at).ok_or(LedgerRefusal::Unavailable)?;
    if until <= at {
        if p.test_clock.is_some() {
            return Ok(None);
        }
        return Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::ExpiryNotInFuture)));
    }
    let account_id = settle_core::ids::AccountId::parse(p.ledger_account_id.as_deref().unwrap_or("")).ok_or(LedgerRefusal::Unavailable)?;
    let account = state.store.get_account(tenant, account_id.clone(), now).await.map_err(|_| LedgerRefusal::Unavailable)?.ok_or(LedgerRefusal::Unavailable)?;
    let usd = Currency::parse("USD").ok_or(LedgerRefusal::Unavailable)?;
    let clearing = clearing_account(state, tenant, usd).await.map_err(|_| LedgerRefusal::Unavailable)?;
    let amount = Amount::new(p.amount).ok_or(LedgerRefusal::Unavailable)?;
    let normal = account.state.normal_balance;
    let out = match normal {
        Direction::Debit => Direction::Credit,
        Direction::Credit => Direction::Debit,
    };
    let draft = TransactionDraft {
        entries: vec![
            EntryDraft { account_id, direction: out, amount, currency: None },
            EntryDraft { account_id: clearing, direction: normal, amount, currency: None },
        ],
        status: TransactionStatus::Pending,
        description: Some(format!("ACH debit {} availability hold", p.id)),
        external_id: Some(format!("ach:{}:availability", p.id)),
        effective_at: None,
        expires_at: if p.test_clock.is_some() { None } else { Some(until) },
        expected_versions: BTreeMap::new(),
        metadata: Metadata::from([(String::from("payment_id"), p.id.clone())]),
    };
    match submit_ledger(state, tenant, Command::CreateTransaction(Box::new(draft))).await? {
        Outcome::Transaction(t) => Ok(Some((t.id.to_string(), until))),
        _ => Err(LedgerRefusal::Unavailable),
    }
}

/// Applies a return with `code` to a submitted or settled payment: the
/// payment becomes `returned`, its ledger effect is undone (a pending debit
/// voided, anything posted reversed), and the code's automatic action runs
/// (disabling the bank account for R02, R03, R04…, revoking the debit
/// authorization and opening a compliance review for unauthorized codes,
/// freezing the bank account and opening a review for R16).
pub async fn apply_return(state: &AppState, tenant: TenantId, id: &str, code: &str, source: &str) -> Result<PaymentJson, ApiError> {
    apply_return_with(state, tenant, id, code, source, None).await
}

/// Applies the receiving bank's contested dishonored return (`contested`,
/// R71–R77) of payment `id`'s submitted dishonor: NACHA lets the
/// originator's bank not dishonor it again, so the original late return
/// stands and is applied now, outside its window, with its ledger effect
/// and automatic action; the dishonor becomes `contested`.
pub async fn apply_contested_dishonor(state: &AppState, tenant: TenantId, id: &str, contested: &str, source: &str) -> Result<PaymentJson, ApiError> {
    if !is_contested_dishonor_code(contested) {
        return Err(ApiError::invalid("code", "code must be a contested dishonored return code, R71 to R77"));
    }
    let (p, _) = load(state, tenant, id).await?;
    let Some(dishonor) = p.dishonored_return.as_ref().filter(|d| d.status == "submitted") else {
        return Err(conflict("payment_invalid_state", "the payment has no dishonored return sent to contest"));
    };
    let code = dishonor.return_code.clone();
    apply_return_with(state, tenant, id, &code, source, Some(contested)).await
}

async fn apply_return_with(state: &AppState, tenant: TenantId, id: &str, code: &str, source: &str, contested: Option<&str>) -> Result<PaymentJson, ApiError> {
    let reason = return_reason(code).ok_or_else(|| ApiError::invalid("code", "code must be a return reason code, R01 to R85"))?;
    let now = state.clock.now();
    let (mut p, row) = load(state, tenant, id).await?;
    let at = super::test_clocks::payment_now(state, tenant, &p).await?;
    let was_settled = p.status == PaymentStatus::Settled;
    // A contested dishonor's return is applied outside its window: the window was the dishonor's reason.
    if let Some(effective) = p.effective_date.as_deref().filter(|_| contested.is_none()) {
        let settled = date("effective_date", effective)?;
        if !settle_ach::returns::is_timely(reason, settled, new_york_today(at)) {
            return Err(unprocessable(
                "return_window_elapsed",
                format!("{} must arrive within its return window after the {effective} settlement; the payment is unchanged", reason.code),
            )
            .with_param("code"));
        }
    }
    let why = match contested {
        Some(c) => format!("{} {} ({source}; dishonor contested {c})", reason.code, reason.description),
        None => format!("{} {} ({source})", reason.code, reason.description),
    };
    move_to(&mut p, PaymentStatus::Returned, Some(why), at)?;
    p.return_code = Some(reason.code.to_owned());
    p.return_reason = Some(reason.description.to_owned());
    // R01/R09 of an `auto_retry` payment: its retry falls due after the
    // policy's delay (the limits are checked when it is originated).
    if reason.action == ReturnAction::RetryAllowed && p.auto_retry && state.ach.config.retry.max_retries > 0 {
        let delay = state.ach.config.retry.delay_banking_days;
        let due = if delay == 0 { Some(at) } else { start_of_banking_day_after(new_york_today(at), delay) };
        p.retry_due_at = due.map(|t| t.to_rfc3339());
    }
    let mut contested_write = None;
    if let Some(c) = contested
        && let Some(d) = p.dishonored_return.as_mut()
    {
        d.status = String::from("contested");
        d.contested_code = Some(c.to_owned());
        d.contested_at = Some(at.to_rfc3339());
        let d_row = state.store.ach_get(AchTable::DishonoredReturns, tenant, format!("{}:dishonor", p.id)).await?.ok_or_else(stale)?;
        contested_write = Some(AchWrite::Update(AchTable::DishonoredReturns, dishonor_row(tenant, d, d_row.version + 1, d_row.created_at)?));
    }
    let mut writes = vec![update(tenant, &p, &row)?];
    writes.extend(contested_write);
    if let Some(due_at) = p.retry_due_at.as_deref() {
        writes.push(due_retry_row(tenant, &p, due_at, now)?);
    }
    let mut audit = Vec::new();
    // An unauthorized-debit return revokes the customer's debit authorization;
    // without one on record (a corporate counterparty) the bank account is disabled instead.
    let revoked = if reason.action == ReturnAction::RevokeAuthorization {
        revoke_debit_authorization(state, tenant, &p, reason.code, reason.description, (at, now)).await?
    } else {
        false
    };
    let disables = reason.action == ReturnAction::DisableBankAccount || (reason.action == ReturnAction::RevokeAuthorization && !revoked);
    let freezes = reason.action == ReturnAction::FreezeAndReview;
    let mut events = vec![event(state, tenant, &p)?];
    if disables || freezes || p.prenote {
        let (mut bank, bank_row): (BankAccountRecord, AchRow) =
            load_bank_account(state, tenant, &p.counterparty_bank_account_id, "counterparty_bank_account_id").await?;
        let previous_verification = bank.json.verification.status.clone();
        // A returned prenote fails the verification it was sent for.
        let verification_failed = p.prenote
            && super::prenotes::mark_failed(&mut bank, &p, Some(reason.code), format!("prenote returned {} ({})", reason.code, reason.description), at);
        if p.prenote
            && let Some(write) = super::prenotes::close_row(state, tenant, &p.id, "failed").await?
        {
            writes.push(write);
        }
        let mut bank_changed = verification_failed;
        if (disables || freezes) && bank.json.status == "active" {
            bank_changed = true;
            bank.json.status = String::from(if freezes { "frozen" } else { "disabled" });
            bank.json.disabled_reason = Some(reason.code.to_owned());
            if freezes {
                let actor = crate::customers::Actor::system(tenant, "settle-ach");
                let why = format!("ACH return {} ({}) of {}", reason.code, reason.description, p.id);
                audit.push(actor.audit(
                    &state.customers.ids,
                    "bank_account.frozen",
                    ("bank_account", &bank.json.id),
                    vec![String::from("status")],
                    Some(why),
                    now,
                ));
            }
        }
        if bank_changed {
            let version = bank_row.version + 1;
            writes.push(AchWrite::Update(AchTable::BankAccounts, bank_account_row(tenant, &bank, version, bank_row.created_at)?));
            if verification_failed {
                events.push(super::prenotes::verification_event(state, tenant, &bank.json, &previous_verification, version, now)?);
            }
        }
    }
    // Unauthorized and frozen-account returns open a compliance review and
    // flag the customer (audited, in the transaction of the return).
    let review = match reason.action {
        ReturnAction::RevokeAuthorization => Some(super::reviews::ReviewKind::AchUnauthorizedReturn),
        ReturnAction::FreezeAndReview => Some(super::reviews::ReviewKind::AchAccountFrozen),
        _ => None,
    };
    if let Some(kind) = review {
        let customer_id = match state.store.ach_get(AchTable::Counterparties, tenant, p.counterparty_id.clone()).await? {
            Some(row) => decode::<super::counterparties::CounterpartyRecord>(&row.data)?.customer_id,
            None => None,
        };
        let (write, records, opened) = super::reviews::open(state, tenant, kind, &p, customer_id, (reason.code, reason.description), (at, now))?;
        writes.push(write);
        audit.extend(records);
        events.push(opened);
    }
    applied(state.store.ach_apply_audited(writes, events, audit, None, now).await, stale)?;
    state.metrics.ach_return(reason);
    // A settled debit still in its hold period: release the hold first, so
    // the reversal takes money the account never had available.
    if let Some(hold) = p.availability_hold_transaction_id.as_deref().and_then(TransactionId::parse)
        && let Err(e) = match submit_ledger(state, tenant, Command::VoidTransaction { id: hold }).await {
            Ok(_) | Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(_)))) => Ok(()),
            Err(e) => Err(e),
        }
    {
        tracing::warn!(payment_id = %p.id, issue = %issue_of(&e), "an availability hold was not voided before a return");
    }
    let undone = match (p.direction, was_settled) {
        (PaymentDirection::Debit, false) => void_ledger(state, tenant, &p).await.map(|()| None),
        _ => reverse_ledger(state, tenant, &p).await,
    };
    match undone {
        Ok(Some(reversal)) => {
            let (mut fresh, fresh_row) = load(state, tenant, id).await?;
            fresh.reversal_transaction_id = Some(reversal);
            applied(state.store.ach_apply(vec![update(tenant, &fresh, &fresh_row)?], Vec::new(), None, now).await, stale)?;
            return Ok(fresh);
        }
        Ok(None) => {}
        Err(e) => {
            record_ledger_issue(state, tenant, &p.id, format!("return not reflected in the ledger: {}", issue_of(&e))).await;
            return Ok(load(state, tenant, id).await?.0);
        }
    }
    Ok(p)
}

/// `POST /v1/test_helpers/payments/{id}/return`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateReturnRequest {
    /// A return reason code, `R01` to `R85`.
    #[schema(example = "R01")]
    pub code: String,
}

/// Sandbox only: the receiving bank returns the payment with `code`.
#[utoipa::path(post, path = "/v1/test_helpers/payments/{id}/return", tag = "Test helpers", operation_id = "simulate_payment_return",
    params(("id" = String, Path, description = "A payment id (`pay_…`).")),
    request_body = SimulateReturnRequest,
    responses((status = 200, description = "The returned payment.", body = PaymentJson)))]
pub async fn simulate_return(
    State(state): State<AppState>,
    crate::test_helpers::SandboxWriter(principal): crate::test_helpers::SandboxWriter,
    IdPath(id): IdPath,
    body: JsonBody<SimulateReturnRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    let p = apply_return(&state, principal.tenant, &id, &body.value.code, "sandbox").await?;
    // A sandbox `duplicate` rails fault: the simulated bank delivers the return twice.
    if state.faults.rails(&state, principal.tenant, &[settle_core::faults::FaultMode::Duplicate]).await.duplicate {
        super::files::redelivered(&id, apply_return(&state, principal.tenant, &id, &body.value.code, "sandbox").await);
    }
    super::return_rates::evaluate_after_change(&state, principal.tenant).await;
    Ok(axum::Json(p).into_response())
}

/// `POST /v1/test_helpers/payments/{id}/contest_dishonor`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateContestRequest {
    /// A contested dishonored return code, `R71` to `R77`.
    #[schema(example = "R73")]
    pub code: String,
}

/// Sandbox only: the receiving bank contests the payment's dishonored return (R71–R77); the original return is applied.
#[utoipa::path(post, path = "/v1/test_helpers/payments/{id}/contest_dishonor", tag = "Test helpers", operation_id = "simulate_contested_dishonor",
    params(("id" = String, Path, description = "A payment id (`pay_…`) whose dishonored return was sent.")),
    request_body = SimulateContestRequest,
    responses((status = 200, description = "The returned payment, its dishonored return `contested`.", body = PaymentJson)))]
pub async fn simulate_contest(
    State(state): State<AppState>,
    crate::test_helpers::SandboxWriter(principal): crate::test_helpers::SandboxWriter,
    IdPath(id): IdPath,
    body: JsonBody<SimulateContestRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    let p = apply_contested_dishonor(&state, principal.tenant, &id, &body.value.code, "sandbox").await?;
    super::return_rates::evaluate_after_change(&state, principal.tenant).await;
    Ok(axum::Json(p).into_response())
}

/// Sandbox only: the payment settles now (a debit's money is posted).
#[utoipa::path(post, path = "/v1/test_helpers/payments/{id}/settle", tag = "Test helpers", operation_id = "simulate_payment_settlement",
    params(("id" = String, Path, description = "A payment id (`pay_…`).")),
    request_body = EmptyRequest,
    responses((status = 200, description = "The settled payment.", body = PaymentJson)))]
pub async fn simulate_settle(
    State(state): State<AppState>,
    crate::test_helpers::SandboxWriter(principal): crate::test_helpers::SandboxWriter,
    IdPath(id): IdPath,
    _body: JsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::PaymentsWrite)?;
    let p = settle(&state, principal.tenant, &id, "settled (sandbox)", None).await?;
    // A sandbox `duplicate` rails fault: the simulated bank reports the settlement twice.
    if state.faults.rails(&state, principal.tenant, &[settle_core::faults::FaultMode::Duplicate]).await.duplicate {
        super::files::redelivered(&id, settle(&state, principal.tenant, &id, "settled (sandbox)", None).await);
    }
    Ok(axum::Json(p).into_response())
}
