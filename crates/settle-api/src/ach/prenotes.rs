//! Prenotes: verifying a counterparty's bank account with a zero-dollar
//! entry before live entries go to it (NACHA's prenotification).
//!
//! A prenote is a payment row with `prenote: true`, `amount: 0` and no
//! ledger account: it is cut into the next file like any entry (same
//! windows, batching and trace numbers; transaction code 23/33 for a credit
//! prenote, 28/38 for a debit one), settles on its effective date, and may
//! be returned or corrected (NOC) by the receiving bank like any entry, but
//! it never touches the ledger. Its outcome is the bank account's
//! `verification`:
//!
//! - `pending` from the request until decided;
//! - `verified` at 00:00 New York on the third banking day after the
//!   prenote's settlement (effective) date, when no return came: NACHA lets
//!   live entries follow no sooner than that;
//! - `failed` when it is returned (with the return code; the code's usual
//!   action also runs: R02/R03/R04 disable the account, …), or when it could
//!   not be filed (the bank account was disabled meanwhile);
//! - back to `unverified` when the prenote is canceled before its file.
//!
//! A return is decided in the return's own transaction; the other outcomes
//! by [`decide_due`], which the scheduler runs each round and a test clock's
//! advance at each of its instants. Pending verifications are rows of
//! `ach_prenotes` (one per prenote, `pending` until decided), so neither
//! reads every settled payment. Every change of a verification writes a
//! `counterparty.bank_account.verification_updated` event in its transaction.

use super::counterparties::{BankAccountJson, BankAccountRecord, bank_account_row, load_bank_account};
use super::payments::{NewEntry, PaymentDirection, PaymentJson};
use super::{applied, conflict, decode, encode, unprocessable};
use crate::auth::{Scoped, scope};
use crate::body::JsonBody;
use crate::customers::{idempotency_record, json_response, keyed};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use settle_ach::nacha::SecCode;
use settle_ach::payment::PaymentStatus;
use settle_core::clock::Timestamp;
use settle_core::ids::{BankAccountId, CounterpartyId};
use settle_core::tenancy::{Environment, Principal, TenantId};
use settle_store::ach::{AchRow, AchTable, AchWrite};
use settle_store::events::NewEvent;
use utoipa::ToSchema;

/// NACHA: live entries may follow a prenote no sooner than this many banking
/// days after the prenote's settlement date.
pub const PRENOTE_WAIT_BANKING_DAYS: u32 = 3;
/// The company entry description of a prenote unless the request names one.
const DEFAULT_DESCRIPTION: &str = "PRENOTE";
/// Pending verifications read per tenant and round.
const MAX_PENDING_SCANNED: i64 = 10_000;
/// The event of a changed verification.
pub const VERIFICATION_EVENT: &str = "counterparty.bank_account.verification_updated";

/// A bank account's verification by prenote.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct BankAccountVerificationJson {
    /// `unverified`, `pending` (a prenote is on its way), `verified` or
    /// `failed` (the prenote was returned or could not be filed). Payments
    /// to an account whose verification is `pending` or `failed` are refused.
    #[schema(example = "unverified")]
    pub status: String,
    /// The latest prenote (a payment with `prenote: true`).
    pub prenote_payment_id: Option<String>,
    pub requested_at: Option<String>,
    /// Once the prenote settled: when it becomes `verified` if no return comes first.
    pub verifiable_at: Option<String>,
    pub verified_at: Option<String>,
    pub failed_at: Option<String>,
    /// The prenote's return code (`R03`…), when it was returned.
    pub return_code: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
}

impl Default for BankAccountVerificationJson {
    fn default() -> Self {
        BankAccountVerificationJson {
            status: String::from("unverified"),
            prenote_payment_id: None,
            requested_at: None,
            verifiable_at: None,
            verified_at: None,
            failed_at: None,
            return_code: None,
            failure_reason: None,
        }
    }
}

/// How to verify a bank account: `POST …/verify`, or `verify: true` on a
/// new counterparty's bank account (which takes the defaults).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct VerifyBankAccountRequest {
    /// The prenote's direction: `credit` (default; transaction code 23/33)
    /// or `debit` (28/38), as the live entries that will follow.
    pub direction: Option<PaymentDirection>,
    /// `PPD`, `CCD`, `WEB` or `TEL`; default `PPD` when the counterparty is a
    /// customer, `CCD` otherwise.
    pub sec_code: Option<String>,
    /// 1 to 10 printable ASCII characters; default `PRENOTE`.
    pub company_entry_description: Option<String>,
    /// Sandbox only: a test clock (`clock_…`) the prenote follows.
    pub test_clock: Option<String>,
}

/// What a prenote is sent with, checked.
pub struct PrenoteTerms {
    direction: PaymentDirection,
    sec: SecCode,
    description: String,
    test_clock: Option<String>,
}

/// The work list row of a prenote whose verification is not decided yet.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct PrenoteRecord {
    payment_id: String,
    bank_account_id: String,
    test_clock: Option<String>,
}

/// Checks the terms of a prenote (`param` prefixes the fields named in errors).
pub async fn terms(state: &AppState, principal: &Principal, req: VerifyBankAccountRequest, is_customer: bool, param: &str) -> Result<PrenoteTerms, ApiError> {
    let sec = match req.sec_code.as_deref() {
        Some(text) => SecCode::parse(text).ok_or_else(|| ApiError::invalid(format!("{param}sec_code"), "sec_code must be PPD, CCD, WEB or TEL"))?,
        None if is_customer => SecCode::Ppd,
        None => SecCode::Ccd,
    };
    let description = match req.company_entry_description {
        Some(text) => {
            let n = text.chars().count();
            if n == 0 || n > 10 || !text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
                return Err(ApiError::invalid(
                    format!("{param}company_entry_description"),
                    "company_entry_description must be 1 to 10 printable ASCII characters",
                ));
            }
            text
        }
        None => String::from(DEFAULT_DESCRIPTION),
    };
    let test_clock = match req.test_clock {
        Some(_) if principal.environment != Environment::Sandbox => {
            return Err(ApiError::invalid(format!("{param}test_clock"), "test clocks exist only in the sandbox"));
        }
        Some(id) => Some(
            super::test_clocks::load(state, principal.tenant, &id)
                .await
                .map_err(|_| ApiError::invalid(format!("{param}test_clock"), "no such test clock"))?
                .0
                .id,
        ),
        None => None,
    };
    Ok(PrenoteTerms { direction: req.direction.unwrap_or(PaymentDirection::Credit), sec, description, test_clock })
}

/// A payment to a bank account whose verification is pending or failed is refused.
pub fn refuse_unverified(bank: &BankAccountJson) -> Result<(), ApiError> {
    match bank.verification.status.as_str() {
        "pending" => Err(unprocessable(
            "bank_account_verification_pending",
            "the bank account's prenote is not decided yet; live entries may follow three banking days after it settles",
        )),
        "failed" => Err(unprocessable("bank_account_verification_failed", "the bank account's prenote failed (see its verification); verify it again first")),
        _ => Ok(()),
    }
}

/// Starts the verification of `bank` (an active bank account): its
/// `verification` becomes `pending` and a prenote payment is made. Answers
/// the writes (the prenote payment and its work list row; the caller writes
/// the bank account itself) and the payment's event; the verification's
/// event is the caller's, once the bank account is final.
pub fn start(
    state: &AppState,
    tenant: TenantId,
    bank: &mut BankAccountRecord,
    terms: &PrenoteTerms,
    (at, now): (Timestamp, Timestamp),
) -> Result<(Vec<AchWrite>, Vec<NewEvent>), ApiError> {
    let id = state.ach.ids.payment().to_string();
    let mut payment = PaymentJson::pending(
        id.clone(),
        NewEntry { direction: terms.direction, amount: 0, bank: &bank.json, sec: terms.sec, description: terms.description.clone() },
        at,
        format!("prenote verifying {}", bank.json.id),
    );
    payment.prenote = true;
    payment.test_clock = terms.test_clock.clone();
    bank.json.verification = BankAccountVerificationJson {
        status: String::from("pending"),
        prenote_payment_id: Some(id.clone()),
        requested_at: Some(at.to_rfc3339()),
        ..BankAccountVerificationJson::default()
    };
    let record = PrenoteRecord { payment_id: id.clone(), bank_account_id: bank.json.id.clone(), test_clock: terms.test_clock.clone() };
    let row = AchRow {
        id,
        tenant,
        status: String::from("pending"),
        lookup: Some(bank.json.id.clone()),
        external_id: None,
        version: 1,
        data: encode(&record)?,
        created_at: now.micros(),
    };
    let writes =
        vec![AchWrite::Insert(AchTable::Payments, super::payments::payment_row(tenant, &payment, 1, now.micros())?), AchWrite::Insert(AchTable::Prenotes, row)];
    Ok((writes, vec![super::payments::event(state, tenant, &payment)?]))
}

/// The `counterparty.bank_account.verification_updated` event of `bank` at
/// its row version `version`, whose verification was `previous` before.
pub fn verification_event(
    state: &AppState,
    tenant: TenantId,
    bank: &BankAccountJson,
    previous: &str,
    version: i64,
    now: Timestamp,
) -> Result<NewEvent, ApiError> {
    let object = serde_json::to_value(bank).map_err(|e| ApiError::internal(&e))?;
    let previous = serde_json::json!({"verification": {"status": previous}});
    super::new_event(state, tenant, String::from(VERIFICATION_EVENT), (&bank.id, version), object, Some(previous), now)
}

/// Marks `bank`'s verification by prenote `p` failed (when it is the one
/// pending), with the return `code` if returned. `true` when it changed.
pub fn mark_failed(bank: &mut BankAccountRecord, p: &PaymentJson, code: Option<&str>, reason: String, at: Timestamp) -> bool {
    let v = &mut bank.json.verification;
    if v.status != "pending" || v.prenote_payment_id.as_deref() != Some(p.id.as_str()) {
        return false;
    }
    v.status = String::from("failed");
    v.failed_at = Some(at.to_rfc3339());
    v.return_code = code.map(str::to_owned);
    v.failure_reason = Some(reason);
    true
}

/// The write that closes prenote `payment_id`'s work list row as `status`
/// (none when it is closed already).
pub async fn close_row(state: &AppState, tenant: TenantId, payment_id: &str, status: &str) -> Result<Option<AchWrite>, ApiError> {
    let Some(row) = state.store.ach_get(AchTable::Prenotes, tenant, payment_id.to_owned()).await? else { return Ok(None) };
    if row.status != "pending" {
        return Ok(None);
    }
    Ok(Some(AchWrite::Update(AchTable::Prenotes, AchRow { status: status.to_owned(), version: row.version + 1, ..row })))
}

/// The instant a prenote settled on `effective` is verified, if not returned.
pub fn verifiable_at(effective: &str) -> Option<Timestamp> {
    let date = super::payments::date("effective_date", effective).ok()?;
    super::payments::new_york_instant(settle_core::calendar::add_banking_days(date, PRENOTE_WAIT_BANKING_DAYS)?, 0, 0)
}

/// Decides the tenant's pending verifications whose prenote follows
/// `test_clock` (none: the real clock) at `at`: verified once the wait after
/// its settlement passed, failed when it failed (or was returned and the
/// return's own write lost a race), unverified again when it was canceled.
/// Run by the scheduler each round and by a test clock's advance.
pub async fn decide_due(state: &AppState, tenant: TenantId, at: Timestamp, test_clock: Option<&str>) -> Result<(), ApiError> {
    for row in state.store.ach_in_status(AchTable::Prenotes, tenant, "pending", MAX_PENDING_SCANNED).await? {
        let record: PrenoteRecord = decode(&row.data)?;
        if record.test_clock.as_deref() != test_clock {
            continue;
        }
        if let Err(e) = decide(state, tenant, row, &record, at).await {
            // Another server decided it, or the bank account moved meanwhile: the next round looks again.
            tracing::warn!(payment_id = %record.payment_id, code = e.code, message = %e.message, "deciding a prenote's verification failed; the next round retries");
        }
    }
    Ok(())
}

async fn decide(state: &AppState, tenant: TenantId, row: AchRow, record: &PrenoteRecord, at: Timestamp) -> Result<(), ApiError> {
    let now = state.clock.now();
    let (p, _) = super::payments::load(state, tenant, &record.payment_id).await?;
    let (mut bank, bank_row) = load_bank_account(state, tenant, &record.bank_account_id, "bank_account_id").await?;
    let previous = bank.json.verification.status.clone();
    let is_current = bank.json.verification.status == "pending" && bank.json.verification.prenote_payment_id.as_deref() == Some(p.id.as_str());
    let outcome = match p.status {
        PaymentStatus::Settled => {
            let Some(when) = p.effective_date.as_deref().and_then(verifiable_at) else { return Ok(()) };
            if at < when {
                // Say when it will be verified, once (no event: nothing was decided).
                if is_current && bank.json.verification.verifiable_at.is_none() {
                    bank.json.verification.verifiable_at = Some(when.to_rfc3339());
                    let write = AchWrite::Update(AchTable::BankAccounts, bank_account_row(tenant, &bank, bank_row.version + 1, bank_row.created_at)?);
                    applied(state.store.ach_apply(vec![write], Vec::new(), None, now).await, stale)?;
                }
                return Ok(());
            }
            if is_current {
                let v = &mut bank.json.verification;
                v.status = String::from("verified");
                v.verifiable_at = Some(when.to_rfc3339());
                v.verified_at = Some(when.to_rfc3339());
            }
            "verified"
        }
        PaymentStatus::Returned => {
            let code = p.return_code.clone();
            mark_failed(&mut bank, &p, code.as_deref(), format!("prenote {} returned", p.id), at);
            "failed"
        }
        PaymentStatus::Failed => {
            let why = p.history.last().and_then(|h| h.reason.clone()).unwrap_or_default();
            mark_failed(&mut bank, &p, None, format!("prenote {} not filed: {why}", p.id), at);
            "failed"
        }
        PaymentStatus::Canceled => {
            if is_current {
                bank.json.verification = BankAccountVerificationJson::default();
            }
            "canceled"
        }
        PaymentStatus::Pending | PaymentStatus::Submitted => return Ok(()),
    };
    let mut writes = vec![AchWrite::Update(AchTable::Prenotes, AchRow { status: outcome.to_owned(), version: row.version + 1, ..row })];
    let mut events = Vec::new();
    if is_current {
        let version = bank_row.version + 1;
        writes.push(AchWrite::Update(AchTable::BankAccounts, bank_account_row(tenant, &bank, version, bank_row.created_at)?));
        events.push(verification_event(state, tenant, &bank.json, &previous, version, now)?);
    }
    applied(state.store.ach_apply(writes, events, None, now).await, stale)
}

fn stale() -> ApiError {
    conflict("payment_conflict", "the bank account or its prenote changed meanwhile; read it again and retry")
}

/// The two ids of `/v1/counterparties/{id}/bank_accounts/{bank_account_id}/…`;
/// a segment that is not UTF-8 names nothing (404).
pub struct BankAccountPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for BankAccountPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((counterparty, bank))) => Ok(BankAccountPath(counterparty, bank)),
            Err(_) => Err(ApiError::not_found("bank account")),
        }
    }
}

/// Verifies a bank account by prenote: a zero-dollar entry in the next file.
#[utoipa::path(post, path = "/v1/counterparties/{id}/bank_accounts/{bank_account_id}/verify", tag = "Payments", operation_id = "verify_bank_account",
    params(("id" = String, Path, description = "A counterparty id (`cp_…`)."),
           ("bank_account_id" = String, Path, description = "One of its bank accounts (`ba_…`)."),
           crate::openapi::IdempotencyKey),
    request_body = VerifyBankAccountRequest,
    responses((status = 200, description = "The bank account, its verification `pending`; `verification.prenote_payment_id` names the prenote.", body = BankAccountJson)))]
pub async fn verify(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::PaymentsWrite>,
    headers: HeaderMap,
    BankAccountPath(counterparty_id, bank_id): BankAccountPath,
    body: JsonBody<VerifyBankAccountRequest>,
) -> Result<Response, ApiError> {
    let path = format!("/v1/counterparties/{counterparty_id}/bank_accounts/{bank_id}/verify");
    let keyed = keyed(&state, &principal, &headers, &path, &body.canonical).await?;
    if let Some(replay) = keyed.replay {
        return Ok(replay);
    }
    let tenant = principal.tenant;
    let missing = || ApiError::not_found("bank account");
    if CounterpartyId::parse(&counterparty_id).is_none() || BankAccountId::parse(&bank_id).is_none() {
        return Err(missing());
    }
    let counterparty_row = state.store.ach_get(AchTable::Counterparties, tenant, counterparty_id.clone()).await?.ok_or_else(missing)?;
    let counterparty: super::counterparties::CounterpartyRecord = decode(&counterparty_row.data)?;
    let (mut bank, bank_row) =
        load_bank_account(&state, tenant, &bank_id, "bank_account_id").await.map_err(|e| if e.code == "invalid_request" { missing() } else { e })?;
    if bank.json.counterparty_id != counterparty_id {
        return Err(missing());
    }
    let terms = terms(&state, &principal, body.value, counterparty.customer_id.is_some(), "").await?;
    if bank.json.status != "active" {
        return Err(unprocessable("bank_account_disabled", "the bank account is disabled or frozen (see its disabled_reason); it cannot be verified"));
    }
    if bank.json.verification.status == "pending" {
        return Err(refuse_unverified(&bank.json).err().unwrap_or_else(|| conflict("payment_conflict", "a prenote is pending")));
    }
    let now = state.clock.now();
    let at = super::test_clocks::now_of(&state, tenant, terms.test_clock.as_deref()).await?;
    let previous = bank.json.verification.status.clone();
    let (mut writes, mut events) = start(&state, tenant, &mut bank, &terms, (at, now))?;
    let version = bank_row.version + 1;
    writes.push(AchWrite::Update(AchTable::BankAccounts, bank_account_row(tenant, &bank, version, bank_row.created_at)?));
    events.push(verification_event(&state, tenant, &bank.json, &previous, version, now)?);
    let (response, bytes) = json_response(StatusCode::OK, &bank.json)?;
    let idempotency = idempotency_record(tenant, keyed.key, StatusCode::OK, bytes, now);
    applied(state.store.ach_apply(writes, events, idempotency, now).await, stale)?;
    Ok(response)
}
