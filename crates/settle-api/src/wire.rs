//! Request shapes and their conversion into domain types, once, at the
//! boundary. Each refusal names the exact parameter at fault.

use crate::error::{ApiError, ErrorType};
use axum::http::StatusCode;
use serde::Deserialize;
use settle_core::clock::Timestamp;
use settle_core::ids::AccountId;
use settle_core::ledger::{Direction, EntryDraft, TransactionDraft, TransactionStatus};
use settle_core::limits::{MAX_EXTERNAL_ID_CHARS, MAX_TEXT_CHARS};
use settle_core::metadata::{self, Metadata};
use settle_core::money::{Amount, Currency};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Which side of the account an entry lands on.
#[derive(Deserialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Direction)]
pub enum DirectionRequest {
    Debit,
    Credit,
}

impl From<DirectionRequest> for Direction {
    fn from(d: DirectionRequest) -> Direction {
        match d {
            DirectionRequest::Debit => Direction::Debit,
            DirectionRequest::Credit => Direction::Credit,
        }
    }
}

/// The status a new transaction starts in: `pending` is a hold.
#[derive(Deserialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = NewTransactionStatus)]
pub enum NewStatusRequest {
    Pending,
    Posted,
}

/// Opens an account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// 1 to 1000 characters.
    #[schema(example = "Alice wallet", min_length = 1, max_length = 1000)]
    pub name: String,
    /// ISO 4217 code, upper case.
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// `credit` for liabilities and income (a customer's wallet), `debit` for assets and expenses.
    pub normal_balance: DirectionRequest,
    /// The lowest available balance a transaction may leave; absent means no limit.
    #[serde(default)]
    #[schema(example = 0)]
    pub min_available_balance: Option<i64>,
    /// Your own id for this account, unique per organization and environment (1 to 255 characters).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Up to 50 keys of 1 to 40 characters, values of at most 500 characters.
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
    /// The customer (`cus_…`) the account belongs to, linked in the same
    /// transaction; needs the `customers:write` scope. Money stops on it
    /// while the customer is blocked by sanctions screening.
    #[serde(default)]
    #[schema(example = "cus_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub customer_id: Option<String>,
}

/// One leg of a transaction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    #[schema(example = "acct_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub account_id: String,
    pub direction: DirectionRequest,
    /// Positive, in the currency's minor units (cents for USD).
    #[schema(minimum = 1, example = 2500)]
    pub amount: i64,
    /// Defaults to the account's currency; if given, it must match it.
    #[serde(default)]
    #[schema(example = "USD")]
    pub currency: Option<String>,
}

/// A balanced set of entries: per currency, debits equal credits.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransactionRequest {
    /// 2 to 100 entries.
    pub entries: Vec<EntryRequest>,
    /// `posted` (the default) moves money now; `pending` places a hold to post or void later.
    #[serde(default)]
    pub status: Option<NewStatusRequest>,
    #[serde(default)]
    pub description: Option<String>,
    /// Your own id, unique per organization and environment.
    #[serde(default)]
    pub external_id: Option<String>,
    /// RFC 3339; when the money moved in the real world (defaults to now).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub effective_at: Option<String>,
    /// RFC 3339, pending only: the hold is voided at this instant unless posted first.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Optimistic concurrency: account id to the `lock_version` the transaction expects it to be at.
    /// The name `expected_versions` (API version 2026-11-25) is still accepted as a deprecated alias.
    #[serde(default, alias = "expected_versions")]
    pub expected_lock_versions: Option<BTreeMap<String, i64>>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

/// Up to 1000 transactions in one request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// `true`: all or nothing. `false`: each transaction succeeds or fails on its own.
    pub atomic: bool,
    pub transactions: Vec<CreateTransactionRequest>,
}

/// Posts a pending transaction, in full or in part.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostRequest {
    /// The entries to post, each at most its held amount; absent posts the hold in full.
    #[serde(default)]
    pub entries: Option<Vec<EntryRequest>>,
}

/// No fields: send `{}` (or no body).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

// Each check names its parameter only when it fails: the `…_at` forms take
// the name as a closure, so a batch of a thousand transfers does not format
// ten parameter names per transfer that no error will show.

pub fn text(param: &str, value: Option<String>, max_chars: usize) -> Result<Option<String>, ApiError> {
    text_at(|| param.to_owned(), value, max_chars)
}

fn text_at(param: impl FnOnce() -> String, value: Option<String>, max_chars: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > max_chars => {
            let param = param();
            let message = format!("{param} must be 1 to {max_chars} characters");
            Err(ApiError::invalid(param, message))
        }
        other => Ok(other),
    }
}

pub fn metadata_of(param: &str, value: Option<Metadata>) -> Result<Metadata, ApiError> {
    metadata_at(|| param.to_owned(), value)
}

fn metadata_at(param: impl FnOnce() -> String, value: Option<Metadata>) -> Result<Metadata, ApiError> {
    let m = value.unwrap_or_default();
    metadata::validate(&m).map_err(|e| ApiError::invalid(param(), e.to_string()))?;
    Ok(m)
}

pub fn currency(param: &str, code: &str) -> Result<Currency, ApiError> {
    currency_at(|| param.to_owned(), code)
}

fn currency_at(param: impl FnOnce() -> String, code: &str) -> Result<Currency, ApiError> {
    Currency::parse(code).ok_or_else(|| ApiError::invalid(param(), format!("{code:?} is not an ISO 4217 currency code (upper case, e.g. USD)")))
}

fn timestamp_at(param: impl FnOnce() -> String, value: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            Timestamp::parse_rfc3339(&v).ok_or_else(|| {
                let param = param();
                let message = format!("{param} must be an RFC 3339 timestamp between 1900 and 9999 with at most microsecond precision");
                ApiError::invalid(param, message)
            })
        })
        .transpose()
}

/// An account id inside a body: a malformed one is as unknown as a missing one.
pub fn body_account_id(param: &str, text: &str) -> Result<AccountId, ApiError> {
    body_account_id_at(|| param.to_owned(), text)
}

fn body_account_id_at(param: impl FnOnce() -> String, text: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(text).ok_or_else(|| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::LedgerError, "account_not_found", format!("no account {text}")).with_param(param())
    })
}

pub fn entries(prefix: &str, entries: Vec<EntryRequest>) -> Result<Vec<EntryDraft>, ApiError> {
    entries_at(&|| prefix.to_owned(), entries)
}

fn entries_at(prefix: &dyn Fn() -> String, entries: Vec<EntryRequest>) -> Result<Vec<EntryDraft>, ApiError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let param = |field: &str| format!("{}[{i}].{field}", prefix());
            let amount = Amount::new(e.amount).ok_or_else(|| ApiError::invalid(param("amount"), "amount must be a positive integer in minor units"))?;
            let currency = e.currency.as_deref().map(|c| currency_at(|| param("currency"), c)).transpose()?;
            Ok(EntryDraft { account_id: body_account_id_at(|| param("account_id"), &e.account_id)?, direction: e.direction.into(), amount, currency })
        })
        .collect()
}

/// Converts one create-transaction request; `prefix` locates it inside a batch.
pub fn transaction_draft(prefix: &str, req: CreateTransactionRequest) -> Result<TransactionDraft, ApiError> {
    let p = |field: &str| format!("{prefix}{field}");
    let status = match req.status {
        None | Some(NewStatusRequest::Posted) => TransactionStatus::Posted,
        Some(NewStatusRequest::Pending) => TransactionStatus::Pending,
    };
    let expires_at = timestamp_at(|| p("expires_at"), req.expires_at)?;
    let mut expected_versions = BTreeMap::new();
    for (id, version) in req.expected_lock_versions.unwrap_or_default() {
        let account = body_account_id_at(|| p("expected_lock_versions"), &id)?;
        expected_versions.insert(account, version);
    }
    let draft = TransactionDraft {
        entries: entries_at(&|| p("entries"), req.entries)?,
        status,
        description: text_at(|| p("description"), req.description, MAX_TEXT_CHARS)?,
        external_id: text_at(|| p("external_id"), req.external_id, MAX_EXTERNAL_ID_CHARS)?,
        effective_at: timestamp_at(|| p("effective_at"), req.effective_at)?,
        expires_at,
        expected_versions,
        metadata: metadata_at(|| p("metadata"), req.metadata)?,
    };
    draft.validate().map_err(|e| {
        let field = match e {
            settle_core::ledger::DraftError::ExpiryOnPosted => "expires_at",
            settle_core::ledger::DraftError::VoidedOnCreate => "status",
            settle_core::ledger::DraftError::TooFewEntries | settle_core::ledger::DraftError::TooManyEntries => "entries",
        };
        ApiError::invalid(p(field), e.to_string())
    })?;
    Ok(draft)
}
