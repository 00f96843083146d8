//! How domain objects look on the wire. Renderers are plain functions so the
//! engine can store a response in the same transaction as its effect.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde::Serialize;
use settle_core::ledger::{Balances, Counters, Entry, EntryStatus, Transaction, TransactionStatus};
use settle_core::metadata::Metadata;
use settle_store::engine::{CommandError, Outcome};
use settle_store::records::{AccountRecord, EntryRow, StoredResponse};
use utoipa::ToSchema;

/// Balances in minor units, signed by the account's normal side.
#[derive(Serialize, ToSchema)]
#[schema(as = Balances)]
pub struct BalancesJson {
    /// Sum of posted entries.
    pub posted: i64,
    /// Posted plus every pending entry.
    pub pending: i64,
    /// Posted minus pending entries that take money away: what can be spent.
    pub available: i64,
}

/// Raw sums of debits and credits, in minor units.
#[derive(Serialize, ToSchema)]
#[schema(as = Totals)]
pub struct TotalsJson {
    pub posted_debits: i64,
    pub posted_credits: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
}

pub fn balances_json(counters: &Counters, normal: settle_core::ledger::NormalBalance) -> Result<(BalancesJson, TotalsJson), ApiError> {
    let Balances { posted, pending, available } = counters.balances(normal).ok_or_else(|| ApiError::internal(&"stored balance does not fit in i64"))?;
    Ok((
        BalancesJson { posted, pending, available },
        TotalsJson {
            posted_debits: counters.posted_debits,
            posted_credits: counters.posted_credits,
            pending_debits: counters.pending_debits,
            pending_credits: counters.pending_credits,
        },
    ))
}

/// A ledger account.
#[derive(Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountJson<'a> {
    #[schema(value_type = String, example = "account")]
    object: &'static str,
    #[schema(value_type = String, example = "acct_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    id: &'a str,
    #[schema(value_type = String)]
    name: &'a str,
    #[schema(value_type = String, example = "USD")]
    currency: &'a str,
    #[schema(value_type = String, example = "credit")]
    normal_balance: &'static str,
    min_available_balance: Option<i64>,
    balances: BalancesJson,
    totals: TotalsJson,
    /// Increases by one with every change of the account's balances; `expected_lock_versions` compares against it.
    lock_version: i64,
    #[schema(value_type = Option<String>)]
    external_id: Option<&'a str>,
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: &'a Metadata,
    /// The customer the account belongs to, if any.
    #[schema(value_type = Option<String>)]
    customer_id: Option<&'a str>,
    /// The `X-Correlation-Id` of the request that created the object.
    #[schema(value_type = Option<String>)]
    correlation_id: Option<&'a str>,
    #[schema(format = DateTime)]
    created_at: String,
}

pub fn account(a: &AccountRecord) -> Result<AccountJson<'_>, ApiError> {
    let (balances, totals) = balances_json(&a.state.counters, a.state.normal_balance)?;
    Ok(AccountJson {
        object: "account",
        id: a.state.id.as_str(),
        name: &a.name,
        currency: a.state.currency.code(),
        normal_balance: a.state.normal_balance.as_str(),
        min_available_balance: a.state.min_available_balance,
        balances,
        totals,
        lock_version: a.state.version,
        external_id: a.external_id.as_deref(),
        metadata: &a.metadata,
        customer_id: a.customer.as_ref().map(|c| c.customer_id.as_str()),
        correlation_id: a.correlation_id.as_ref().map(|c| c.as_str()),
        created_at: a.created_at.to_rfc3339(),
    })
}

/// One leg of a transaction, as it affects one account.
#[derive(Serialize, ToSchema)]
#[schema(as = Entry)]
pub struct EntryJson<'a> {
    #[schema(value_type = String, example = "entry")]
    object: &'static str,
    #[schema(value_type = String)]
    id: &'a str,
    #[schema(value_type = String)]
    transaction_id: &'a str,
    #[schema(value_type = String)]
    account_id: &'a str,
    #[schema(value_type = String, example = "debit")]
    direction: &'static str,
    amount: i64,
    #[schema(value_type = String, example = "USD")]
    currency: &'a str,
    /// `pending`, `posted` or `voided`.
    #[schema(value_type = String, example = "posted")]
    status: &'static str,
    #[schema(format = DateTime)]
    effective_at: String,
    #[schema(format = DateTime)]
    created_at: String,
}

pub fn entry(e: &Entry, status: TransactionStatus) -> EntryJson<'_> {
    EntryJson {
        object: "entry",
        id: e.id.as_str(),
        transaction_id: e.transaction_id.as_str(),
        account_id: e.account_id.as_str(),
        direction: e.direction.as_str(),
        amount: e.amount,
        currency: e.currency.code(),
        status: EntryStatus::of(e.leg, status).as_str(),
        effective_at: e.effective_at.to_rfc3339(),
        created_at: e.created_at.to_rfc3339(),
    }
}

pub fn entry_row(row: &EntryRow) -> EntryJson<'_> {
    entry(&row.entry, row.transaction_status)
}

/// A balanced set of entries.
#[derive(Serialize, ToSchema)]
#[schema(as = Transaction)]
pub struct TransactionJson<'a> {
    #[schema(value_type = String, example = "transaction")]
    object: &'static str,
    #[schema(value_type = String, example = "ltx_01jdx3r0ab5c7d9e1f3g5h7j9k")]
    id: &'a str,
    /// `pending`, `posted` or `voided`.
    #[schema(value_type = String, example = "posted")]
    status: &'static str,
    entries: Vec<EntryJson<'a>>,
    #[schema(value_type = Option<String>)]
    description: Option<&'a str>,
    #[schema(value_type = Option<String>)]
    external_id: Option<&'a str>,
    #[schema(format = DateTime)]
    effective_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    posted_at: Option<String>,
    #[schema(format = DateTime)]
    voided_at: Option<String>,
    /// `requested` or `expired`.
    #[schema(value_type = Option<String>)]
    void_reason: Option<&'static str>,
    /// The transaction this one reverses.
    #[schema(value_type = Option<String>)]
    reverses: Option<&'a str>,
    /// The reversal of this transaction.
    #[schema(value_type = Option<String>)]
    reversed_by: Option<&'a str>,
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: &'a Metadata,
    /// The `X-Correlation-Id` of the request that created the object.
    #[schema(value_type = Option<String>)]
    correlation_id: Option<&'a str>,
    #[schema(format = DateTime)]
    created_at: String,
}

pub fn transaction(t: &Transaction) -> TransactionJson<'_> {
    TransactionJson {
        object: "transaction",
        id: t.id.as_str(),
        status: t.status.as_str(),
        entries: t.current_entries().map(|e| entry(e, t.status)).collect(),
        description: t.description.as_deref(),
        external_id: t.external_id.as_deref(),
        effective_at: t.effective_at.to_rfc3339(),
        expires_at: t.expires_at.map(|x| x.to_rfc3339()),
        posted_at: t.posted_at.map(|x| x.to_rfc3339()),
        voided_at: t.voided_at.map(|x| x.to_rfc3339()),
        void_reason: t.void_reason.map(|r| r.as_str()),
        reverses: t.reverses.as_ref().map(|x| x.as_str()),
        reversed_by: t.reversed_by.as_ref().map(|x| x.as_str()),
        metadata: &t.metadata,
        correlation_id: t.correlation_id.as_ref().map(|c| c.as_str()),
        created_at: t.created_at.to_rfc3339(),
    }
}

/// A page of objects, oldest first; `has_more` says whether another page follows.
#[derive(Serialize, ToSchema)]
pub struct ListJson<T: Serialize> {
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    data: Vec<T>,
    has_more: bool,
}

pub fn list<T: Serialize>(data: Vec<T>, has_more: bool) -> ListJson<T> {
    ListJson { object: "list", data, has_more }
}

fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))
}

fn error_response(error: &ApiError, request_id: &str) -> StoredResponse {
    StoredResponse { status: error.status.as_u16(), body: error.body(request_id) }
}

/// The outcome of one transaction of a batch, in request order.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchItem)]
pub struct BatchItemJson<'a> {
    index: usize,
    /// The status the transaction alone would have answered.
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<TransactionJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::error::ErrorBody>)]
    error: Option<serde_json::Value>,
}

/// What a batch did, item by item.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchResult)]
pub struct BatchJson<'a> {
    #[schema(value_type = String, example = "batch_result")]
    object: &'static str,
    succeeded: usize,
    failed: usize,
    results: Vec<BatchItemJson<'a>>,
}

/// An account's balances now, or as of an instant.
#[derive(Serialize, ToSchema)]
#[schema(as = AccountBalances)]
pub struct AccountBalancesJson<'a> {
    #[schema(value_type = String, example = "account_balances")]
    pub object: &'static str,
    #[schema(value_type = String)]
    pub account_id: &'a str,
    #[schema(value_type = String, example = "USD")]
    pub currency: &'a str,
    /// The instant the balances are for (a future `as_of` answers as of now).
    #[schema(format = DateTime)]
    pub as_of: String,
    pub balances: BalancesJson,
    pub totals: TotalsJson,
}

fn outcome_bytes(outcome: &Outcome, success: StatusCode) -> Result<(StatusCode, Vec<u8>), ApiError> {
    match outcome {
        Outcome::Account(a) => Ok((success, json_bytes(&account(a)?)?)),
        Outcome::Transaction(t) | Outcome::Reversal(t) => Ok((success, json_bytes(&transaction(t))?)),
        Outcome::Batch(items) => {
            let results: Vec<BatchItemJson<'_>> = items
                .iter()
                .enumerate()
                .map(|(index, r)| match r {
                    Ok(t) => BatchItemJson { index, status: 201, transaction: Some(transaction(t)), error: None },
                    Err(e) => {
                        let error = ApiError::from(e);
                        BatchItemJson { index, status: error.status.as_u16(), transaction: None, error: Some(error.item_json()) }
                    }
                })
                .collect();
            let succeeded = items.iter().filter(|r| r.is_ok()).count();
            Ok((StatusCode::OK, json_bytes(&BatchJson { object: "batch_result", succeeded, failed: items.len() - succeeded, results })?))
        }
        // Issued by the operator's reconciliation, never by a request.
        Outcome::CountersRepaired { .. } => Err(ApiError::internal(&"a counter repair has no HTTP rendering")),
    }
}

fn render(result: &Result<Outcome, CommandError>, request_id: &str, success: StatusCode) -> StoredResponse {
    let rendered = match result {
        Ok(outcome) => outcome_bytes(outcome, success),
        Err(e) => Err(ApiError::from(e)),
    };
    match rendered {
        Ok((status, body)) => StoredResponse { status: status.as_u16(), body },
        Err(error) => error_response(&error, request_id),
    }
}

/// Renders an outcome whose success is `201 Created`.
pub fn render_created(result: &Result<Outcome, CommandError>, request_id: &str) -> StoredResponse {
    render(result, request_id, StatusCode::CREATED)
}

/// Renders an outcome whose success is `200 OK`.
pub fn render_ok(result: &Result<Outcome, CommandError>, request_id: &str) -> StoredResponse {
    render(result, request_id, StatusCode::OK)
}
