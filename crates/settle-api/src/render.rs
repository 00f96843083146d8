//! How domain objects look on the wire. Renderers are plain functions so the
//! engine can store a response in the same transaction as its effect.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde::Serialize;
use settle_core::ledger::{Balances, Counters, Entry, EntryStatus, Transaction, TransactionStatus};
use settle_core::metadata::Metadata;
use settle_store::engine::{CommandError, Outcome};
use settle_store::records::{AccountRecord, EntryRow, StoredResponse};

#[derive(Serialize)]
pub struct BalancesJson {
    pub posted: i64,
    pub pending: i64,
    pub available: i64,
}

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct AccountJson<'a> {
    object: &'static str,
    id: &'a str,
    name: &'a str,
    currency: &'a str,
    normal_balance: &'static str,
    min_available_balance: Option<i64>,
    balances: BalancesJson,
    totals: TotalsJson,
    lock_version: i64,
    external_id: Option<&'a str>,
    metadata: &'a Metadata,
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
        created_at: a.created_at.to_rfc3339(),
    })
}

#[derive(Serialize)]
pub struct EntryJson<'a> {
    object: &'static str,
    id: &'a str,
    transaction_id: &'a str,
    account_id: &'a str,
    direction: &'static str,
    amount: i64,
    currency: &'a str,
    status: &'static str,
    effective_at: String,
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

#[derive(Serialize)]
pub struct TransactionJson<'a> {
    object: &'static str,
    id: &'a str,
    status: &'static str,
    entries: Vec<EntryJson<'a>>,
    description: Option<&'a str>,
    external_id: Option<&'a str>,
    effective_at: String,
    expires_at: Option<String>,
    posted_at: Option<String>,
    voided_at: Option<String>,
    void_reason: Option<&'static str>,
    reverses: Option<&'a str>,
    reversed_by: Option<&'a str>,
    metadata: &'a Metadata,
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
        created_at: t.created_at.to_rfc3339(),
    }
}

#[derive(Serialize)]
pub struct ListJson<T: Serialize> {
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

#[derive(Serialize)]
struct BatchItemJson<'a> {
    index: usize,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction: Option<TransactionJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct BatchJson<'a> {
    object: &'static str,
    succeeded: usize,
    failed: usize,
    results: Vec<BatchItemJson<'a>>,
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
