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

/// A batch item's rendering through serde (the reference [`direct`] is held to).
fn batch_item(index: usize, r: &Result<Transaction, CommandError>) -> BatchItemJson<'_> {
    match r {
        Ok(t) => BatchItemJson { index, status: 201, transaction: Some(transaction(t)), error: None },
        Err(e) => {
            let error = ApiError::from(e);
            BatchItemJson { index, status: error.status.as_u16(), transaction: None, error: Some(error.item_json()) }
        }
    }
}

fn outcome_bytes(outcome: &Outcome, success: StatusCode) -> Result<(StatusCode, Vec<u8>), ApiError> {
    match outcome {
        Outcome::Account(a) => Ok((success, json_bytes(&account(a)?)?)),
        Outcome::Transaction(t) | Outcome::Reversal(t) => {
            let mut out = Vec::with_capacity(direct::TRANSACTION_BYTES);
            direct::transaction(&mut out, t)?;
            Ok((success, out))
        }
        Outcome::Batch(items) => Ok((StatusCode::OK, direct::batch(items)?)),
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

/// Transactions and batch results written as JSON directly, byte for byte
/// what serde writes for [`TransactionJson`] and [`BatchJson`].
///
/// Why: a batch's answer carries up to 1,000 transactions, and through serde
/// rendering it was about 30 % of the HTTP workers' CPU in a batched run
/// (every field name escaped, a vector per transaction's entries and per
/// batch). Here field names are literals, ids and enum names go out as they
/// are when they need no escaping, and text a client chose (description,
/// external id, metadata, correlation id) goes through serde_json's own
/// escaping. The tests compare both for every shape a transaction takes.
mod direct {
    use super::{ApiError, batch_item};
    use settle_core::clock::Timestamp;
    use settle_core::ledger::{Entry, EntryStatus, Transaction};
    use settle_store::engine::CommandError;
    use std::io::Write;

    /// About what one posted transfer with two entries takes.
    pub const TRANSACTION_BYTES: usize = 1_100;

    fn failed(e: impl std::fmt::Display) -> ApiError {
        ApiError::internal(&e)
    }

    /// A JSON string: as it is when nothing in it needs escaping (ids, enum
    /// names, timestamps always), else escaped as serde_json escapes.
    fn text(out: &mut Vec<u8>, s: &str) -> Result<(), ApiError> {
        if settle_core::json_text::is_plain(s) {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
            Ok(())
        } else {
            serde_json::to_writer(&mut *out, s).map_err(failed)
        }
    }

    /// A time (digits, `-`, `:`, `T`, `.`, `Z`: nothing to escape).
    fn time(out: &mut Vec<u8>, at: Timestamp) -> Result<(), ApiError> {
        out.push(b'"');
        at.write_rfc3339(out);
        out.push(b'"');
        Ok(())
    }

    /// `value` written by `write`, or `null`.
    fn or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: fn(&mut Vec<u8>, T) -> Result<(), ApiError>) -> Result<(), ApiError> {
        match value {
            Some(value) => write(out, value),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }

    fn integer(out: &mut Vec<u8>, n: impl std::fmt::Display) -> Result<(), ApiError> {
        write!(out, "{n}").map_err(failed)
    }

    fn entry(out: &mut Vec<u8>, e: &Entry, t: &Transaction) -> Result<(), ApiError> {
        out.extend_from_slice(br#"{"object":"entry","id":"#);
        text(out, e.id.as_str())?;
        out.extend_from_slice(br#","transaction_id":"#);
        text(out, e.transaction_id.as_str())?;
        out.extend_from_slice(br#","account_id":"#);
        text(out, e.account_id.as_str())?;
        out.extend_from_slice(br#","direction":"#);
        text(out, e.direction.as_str())?;
        out.extend_from_slice(br#","amount":"#);
        integer(out, e.amount)?;
        out.extend_from_slice(br#","currency":"#);
        text(out, e.currency.code())?;
        out.extend_from_slice(br#","status":"#);
        text(out, EntryStatus::of(e.leg, t.status).as_str())?;
        out.extend_from_slice(br#","effective_at":"#);
        time(out, e.effective_at)?;
        out.extend_from_slice(br#","created_at":"#);
        time(out, e.created_at)?;
        out.push(b'}');
        Ok(())
    }

    /// What `serde_json::to_vec(&render::transaction(t))` writes.
    pub fn transaction(out: &mut Vec<u8>, t: &Transaction) -> Result<(), ApiError> {
        out.extend_from_slice(br#"{"object":"transaction","id":"#);
        text(out, t.id.as_str())?;
        out.extend_from_slice(br#","status":"#);
        text(out, t.status.as_str())?;
        out.extend_from_slice(br#","entries":["#);
        for (i, e) in t.current_entries().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            entry(out, e, t)?;
        }
        out.extend_from_slice(br#"],"description":"#);
        or_null(out, t.description.as_deref(), text)?;
        out.extend_from_slice(br#","external_id":"#);
        or_null(out, t.external_id.as_deref(), text)?;
        out.extend_from_slice(br#","effective_at":"#);
        time(out, t.effective_at)?;
        out.extend_from_slice(br#","expires_at":"#);
        or_null(out, t.expires_at, time)?;
        out.extend_from_slice(br#","posted_at":"#);
        or_null(out, t.posted_at, time)?;
        out.extend_from_slice(br#","voided_at":"#);
        or_null(out, t.voided_at, time)?;
        out.extend_from_slice(br#","void_reason":"#);
        or_null(out, t.void_reason.map(|r| r.as_str()), text)?;
        out.extend_from_slice(br#","reverses":"#);
        or_null(out, t.reverses.as_ref().map(|x| x.as_str()), text)?;
        out.extend_from_slice(br#","reversed_by":"#);
        or_null(out, t.reversed_by.as_ref().map(|x| x.as_str()), text)?;
        out.extend_from_slice(br#","metadata":{"#);
        for (i, (key, value)) in t.metadata.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text(out, key)?;
            out.push(b':');
            text(out, value)?;
        }
        out.extend_from_slice(br#"},"correlation_id":"#);
        or_null(out, t.correlation_id.as_ref().map(|c| c.as_str()), text)?;
        out.extend_from_slice(br#","created_at":"#);
        time(out, t.created_at)?;
        out.push(b'}');
        Ok(())
    }

    /// What `serde_json::to_vec` writes for the batch's [`super::BatchJson`].
    pub fn batch(items: &[Result<Transaction, CommandError>]) -> Result<Vec<u8>, ApiError> {
        let succeeded = items.iter().filter(|r| r.is_ok()).count();
        let mut out = Vec::with_capacity(64 + items.len() * (TRANSACTION_BYTES + 32));
        write!(out, r#"{{"object":"batch_result","succeeded":{succeeded},"failed":{},"results":["#, items.len() - succeeded).map_err(failed)?;
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            match item {
                Ok(t) => {
                    write!(out, r#"{{"index":{index},"status":201,"transaction":"#).map_err(failed)?;
                    transaction(&mut out, t)?;
                    out.push(b'}');
                }
                // Refusals are few and carry an error body: serde writes them.
                Err(_) => serde_json::to_writer(&mut out, &batch_item(index, item)).map_err(failed)?,
            }
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use settle_core::clock::Timestamp;
    use settle_core::correlation::CorrelationId;
    use settle_core::ids::{AccountId, EntryId, IdGenerator, TransactionId};
    use settle_core::ledger::{Direction, LedgerError, Leg, VoidReason};
    use settle_core::money::Currency;
    use settle_core::tenancy::TenantId;

    /// What serde writes for a batch: the reference [`direct::batch`] must match.
    fn serde_batch(items: &[Result<Transaction, CommandError>]) -> Vec<u8> {
        let succeeded = items.iter().filter(|r| r.is_ok()).count();
        let results = items.iter().enumerate().map(|(i, r)| batch_item(i, r)).collect();
        serde_json::to_vec(&BatchJson { object: "batch_result", succeeded, failed: items.len() - succeeded, results }).expect("serializes")
    }

    /// Text a client may send: plain, quoted, escaped, control characters, non-ASCII.
    fn client_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 _-]{0,12}",
            Just(String::from("say \"hi\" \\ back")),
            Just(String::from("line\nbreak\ttab\u{1}\u{1f}\u{7f}")),
            Just(String::from("café ✓ 𝄞 \u{2028}")),
            any::<String>(),
        ]
    }

    prop_compose! {
        fn a_transaction()(
            status in 0..3usize,
            legs in 1..4usize,
            amounts in proptest::collection::vec(1..i64::MAX, 6),
            description in proptest::option::of(client_text()),
            external_id in proptest::option::of(client_text()),
            metadata in proptest::collection::btree_map(client_text(), client_text(), 0..4),
            micros in proptest::collection::vec(0..253_402_300_799_999_999i64, 5),
            expires in any::<bool>(),
            reversal in 0..3usize,
            correlation in proptest::option::of("[a-zA-Z0-9._:-]{1,40}"),
            expired in any::<bool>(),
        ) -> Transaction {
            let ids = IdGenerator::default();
            let id = ids.transaction();
            let status = [TransactionStatus::Pending, TransactionStatus::Posted, TransactionStatus::Voided][status];
            let at = |i: usize| Timestamp::from_micros(micros[i]);
            let mut entries = Vec::new();
            // A posted hold keeps its pending legs beside the posted ones.
            for (posted, leg) in [(false, Leg::Pending), (true, Leg::Posted)] {
                if leg == Leg::Posted && status != TransactionStatus::Posted {
                    continue;
                }
                for position in 0..legs {
                    entries.push(Entry {
                        id: EntryId::for_transaction(&id, position, posted),
                        transaction_id: id.clone(),
                        account_id: AccountId::from_trusted(ids.account().as_str().to_owned()),
                        direction: if position % 2 == 0 { Direction::Debit } else { Direction::Credit },
                        amount: amounts[position],
                        currency: Currency::parse(["USD", "JPY", "KWD"][position % 3]).expect("a currency"),
                        leg,
                        effective_at: at(0),
                        created_at: at(position % 2),
                    });
                }
            }
            Transaction {
                id,
                tenant: TenantId(1),
                status,
                description,
                external_id,
                effective_at: at(0),
                expires_at: expires.then(|| at(2)),
                created_at: at(1),
                posted_at: (status == TransactionStatus::Posted).then(|| at(3)),
                voided_at: (status == TransactionStatus::Voided).then(|| at(4)),
                void_reason: (status == TransactionStatus::Voided).then_some(if expired { VoidReason::Expired } else { VoidReason::Requested }),
                reverses: (reversal == 1).then(|| ids.transaction()),
                reversed_by: (reversal == 2).then(|| ids.transaction()),
                metadata,
                correlation_id: correlation.map(CorrelationId::from_trusted),
                entries,
            }
        }
    }

    proptest! {
        #[test]
        fn a_transaction_written_directly_is_byte_for_byte_what_serde_writes(t in a_transaction()) {
            let mut direct = Vec::new();
            direct::transaction(&mut direct, &t).expect("renders");
            let reference = serde_json::to_vec(&transaction(&t)).expect("serializes");
            prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&reference));
        }

        #[test]
        fn a_batch_written_directly_is_byte_for_byte_what_serde_writes(
            items in proptest::collection::vec(proptest::option::of(a_transaction()), 0..6),
        ) {
            let items: Vec<Result<Transaction, CommandError>> = items
                .into_iter()
                .enumerate()
                .map(|(i, t)| t.ok_or_else(|| if i % 2 == 0 {
                    CommandError::BatchAborted
                } else {
                    CommandError::Ledger(LedgerError::AccountNotFound(AccountId::from_trusted(String::from("acct_01arz3ndektsv4rrffq69g5fav"))))
                }))
                .collect();
            let direct = direct::batch(&items).expect("renders");
            let reference = serde_batch(&items);
            prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&reference));
        }
    }

    #[test]
    fn an_id_that_needs_escaping_is_escaped() {
        // Ids are ours and never need it, but the writer does not rely on that.
        let mut out = Vec::new();
        direct::transaction(&mut out, &Transaction { id: TransactionId::from_trusted(String::from("ltx_\"\n")), ..sample() }).expect("renders");
        let reference =
            serde_json::to_vec(&transaction(&Transaction { id: TransactionId::from_trusted(String::from("ltx_\"\n")), ..sample() })).expect("serializes");
        assert_eq!(out, reference);
        assert!(String::from_utf8_lossy(&out).contains(r#""id":"ltx_\"\n""#));
    }

    fn sample() -> Transaction {
        Transaction {
            id: IdGenerator::default().transaction(),
            tenant: TenantId(1),
            status: TransactionStatus::Posted,
            description: None,
            external_id: None,
            effective_at: Timestamp::from_micros(0),
            expires_at: None,
            created_at: Timestamp::from_micros(0),
            posted_at: None,
            voided_at: None,
            void_reason: None,
            reverses: None,
            reversed_by: None,
            metadata: Metadata::new(),
            correlation_id: None,
            entries: Vec::new(),
        }
    }
}
