//! `/v1/reconciliation`: bank statements imported and matched against the
//! ledger, manual match and unmatch (audited), and reports.
//!
//! The use cases ([`import`], [`report`]) are plain functions over the
//! [`Store`], so the CLI (`settle reconcile import|report`) runs exactly the
//! code the API runs. Reconciliation writes bookkeeping rows directly; it
//! never sends a command to the engine and never changes a ledger entry.
//!
//! Candidates come from the ledger only: posted transactions with an entry on
//! the statement's ledger account. A future `payments` source adds its own
//! [`settle_recon::matcher::Candidate`]s here; the matcher needs no change.

use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorType};
use crate::idempotency;
use crate::observe::RequestId;
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, BankStatementId, BankStatementLineId, IdGenerator, TransactionId};
use settle_core::ledger::{Transaction, TransactionStatus};
use settle_core::money::Currency;
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_recon::matcher::{self, Candidate, LineInput};
use settle_recon::{Format, ParseError, Statement};
use settle_store::Store;
use settle_store::bank_recon::{AuditRecord, InsertStatement, LineRecord, ManualChange, MatchRecord, StatementRecord};
use settle_store::records::{Cursor, IdempotencyRecord, PageRequest, StoredResponse};
use std::collections::{BTreeMap, HashMap, HashSet};
use time::Date;
use utoipa::{IntoParams, ToSchema};

/// A statement request carries the file as JSON text, escaped: up to the
/// parser's 10 MiB of statement plus room for escaping and the other fields.
pub const MAX_STATEMENT_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Length of a manual action's reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Ledger transactions read per statement when looking for candidates.
pub const MAX_CANDIDATES: usize = 100_000;
/// Candidates are read newest first and the scan stops at transactions
/// created this long before the statement's first day (less the window):
/// bank movements are booked in the ledger around the day they happen.
pub const CANDIDATE_HORIZON_DAYS: i64 = 35;
/// The widest date window a request may ask for.
pub const MAX_DATE_WINDOW_DAYS: i64 = 31;

// ---- wire shapes ----------------------------------------------------------

/// `content` is the statement file's text (UTF-8), as a JSON string.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportStatementRequest {
    /// `camt.053`, `camt.054`, `mt940`, `bai2` or `csv`.
    #[schema(example = "camt.053")]
    pub format: String,
    /// The file's text, at most 10 MiB.
    pub content: String,
    /// The ledger account that books this bank account's movements.
    #[schema(example = "acct_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub ledger_account_id: String,
    /// For `csv`: which column holds what (see docs/reconciliation.md); default: the documented layout.
    #[schema(value_type = Option<Object>)]
    pub csv_profile: Option<serde_json::Value>,
    /// Days either side of a line's date a ledger transaction may be dated to match by amount (default 3, at most 31).
    pub date_window_days: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualMatchRequest {
    #[schema(example = "ltx_01jdx3r0ab5c7d9e1f3g5h7j9k")]
    pub transaction_id: String,
    /// Why, for the audit (1 to 500 characters).
    pub reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnmatchRequest {
    /// Why, for the audit (1 to 500 characters).
    pub reason: String,
}

/// Lines per match status.
#[derive(Serialize, ToSchema)]
#[schema(as = ReconciliationCounts)]
pub struct CountsJson {
    pub matched: i64,
    pub partially_matched: i64,
    pub unmatched: i64,
}

/// An imported bank statement.
#[derive(Serialize, ToSchema)]
#[schema(as = BankStatement)]
pub struct StatementJson {
    #[schema(value_type = String, example = "bank_statement")]
    pub object: &'static str,
    #[schema(example = "bst_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    pub format: String,
    pub ledger_account_id: String,
    /// The bank's own statement id, when the file gives one.
    pub bank_statement_id: Option<String>,
    /// The bank account as the file names it (IBAN or account number).
    pub account: String,
    pub currency: String,
    /// Minor units, signed (positive: in credit).
    pub opening_balance: Option<i64>,
    pub closing_balance: Option<i64>,
    #[schema(format = Date)]
    pub period_start: Option<String>,
    #[schema(format = Date)]
    pub period_end: Option<String>,
    pub line_count: i64,
    pub total_credits: i64,
    pub total_debits: i64,
    pub lines: CountsJson,
    /// SHA-256 of the statement's content: the same statement imported again is this one.
    pub fingerprint: String,
    /// The API key id that imported it, or `cli`.
    pub imported_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A link between a statement line and a ledger transaction.
#[derive(Serialize, ToSchema)]
#[schema(as = BankMatch)]
pub struct MatchJson {
    pub transaction_id: String,
    /// 0–100: 100 for a reference and amount match or a person's decision.
    pub confidence: i64,
    /// `auto` or `manual`.
    pub method: String,
    /// `reference`, `split_reference`, `amount_date_counterparty`, `amount_date` or `manual`.
    pub rule: String,
    pub reason: Option<String>,
    /// The API key id (or `cli`, or `matcher` for automatic matches) that made it.
    pub actor: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// One movement on a bank statement and how it is reconciled.
#[derive(Serialize, ToSchema)]
#[schema(as = BankStatementLine)]
pub struct LineJson {
    #[schema(value_type = String, example = "bank_statement_line")]
    pub object: &'static str,
    #[schema(example = "bsl_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    pub statement_id: String,
    /// Where the line is in the bank's file (`line 12`, or an element path).
    pub position: String,
    #[schema(format = Date)]
    pub booking_date: String,
    #[schema(format = Date)]
    pub value_date: Option<String>,
    /// Minor units, signed: positive is money into the bank account.
    pub amount: i64,
    pub currency: String,
    /// `credit` (money in) or `debit` (money out), as the bank reports it.
    pub direction: String,
    pub end_to_end_id: Option<String>,
    pub bank_reference: Option<String>,
    pub customer_reference: Option<String>,
    pub counterparty_name: Option<String>,
    pub counterparty_account: Option<String>,
    pub description: Option<String>,
    /// `matched`, `partially_matched` or `unmatched`.
    pub status: String,
    pub matches: Vec<MatchJson>,
}

/// Amounts per status, in minor units.
#[derive(Serialize, ToSchema, Default)]
#[schema(as = ReconciliationBucket)]
pub struct BucketJson {
    pub count: i64,
    pub amount: i64,
}

/// One ledger account's position in a report.
#[derive(Serialize, ToSchema)]
#[schema(as = ReconciliationAccountSummary)]
pub struct SummaryJson {
    pub ledger_account_id: String,
    pub currency: String,
    pub statement_ids: Vec<String>,
    pub bank_credits: i64,
    pub bank_debits: i64,
    pub matched: BucketJson,
    pub partially_matched: BucketJson,
    pub unmatched: BucketJson,
    /// Posted ledger transactions on the account in the report's dates that no line explains.
    pub unmatched_ledger: BucketJson,
}

/// A ledger transaction no statement line explains.
#[derive(Serialize, ToSchema)]
#[schema(as = UnmatchedLedgerTransaction)]
pub struct UnmatchedTransactionJson {
    pub transaction_id: String,
    pub ledger_account_id: String,
    #[schema(format = Date)]
    pub effective_date: String,
    /// Minor units, signed from the bank account's side: positive is money in.
    pub amount: i64,
    pub currency: String,
    pub external_id: Option<String>,
    pub description: Option<String>,
}

/// What is reconciled and what is not, for a day or a statement.
#[derive(Serialize, ToSchema)]
#[schema(as = ReconciliationReport)]
pub struct ReportJson {
    #[schema(value_type = String, example = "reconciliation_report")]
    pub object: &'static str,
    #[schema(format = Date)]
    pub date: Option<String>,
    pub statement_id: Option<String>,
    pub summary: Vec<SummaryJson>,
    pub lines: Vec<LineJson>,
    pub unmatched_transactions: Vec<UnmatchedTransactionJson>,
    /// True when the day has more lines than a report holds (50,000).
    pub truncated: bool,
    #[schema(format = DateTime)]
    pub generated_at: String,
}

// ---- errors ---------------------------------------------------------------

pub fn statement_invalid(e: &ParseError) -> ApiError {
    let param = e.position().map_or_else(|| String::from("content"), ToString::to_string);
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, "statement_invalid", format!("the statement cannot be imported: {e}"))
        .with_param(param)
}

fn account_not_found() -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::LedgerError, "account_not_found", "ledger_account_id names no account")
        .with_param("ledger_account_id")
}

fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorType::ConflictError, code, message)
}

// ---- rendering ------------------------------------------------------------

fn date_text(d: Date) -> String {
    d.to_string()
}

pub fn statement_json(s: &StatementRecord) -> StatementJson {
    StatementJson {
        object: "bank_statement",
        id: s.id.clone(),
        format: s.format.clone(),
        ledger_account_id: s.ledger_account_id.clone(),
        bank_statement_id: s.bank_statement_id.clone(),
        account: s.account_number.clone(),
        currency: s.currency.clone(),
        opening_balance: s.opening_balance,
        closing_balance: s.closing_balance,
        period_start: s.period_start.clone(),
        period_end: s.period_end.clone(),
        line_count: s.line_count,
        total_credits: s.total_credits,
        total_debits: s.total_debits,
        lines: CountsJson { matched: s.status_counts.0, partially_matched: s.status_counts.1, unmatched: s.status_counts.2 },
        fingerprint: s.fingerprint.clone(),
        imported_by: s.imported_by.clone(),
        created_at: Timestamp::from_micros(s.created_at).to_rfc3339(),
    }
}

pub fn line_json(l: &LineRecord) -> LineJson {
    LineJson {
        object: "bank_statement_line",
        id: l.id.clone(),
        statement_id: l.statement_id.clone(),
        position: l.source_position.clone(),
        booking_date: l.booking_date.clone(),
        value_date: l.value_date.clone(),
        amount: l.amount,
        currency: l.currency.clone(),
        direction: l.direction.clone(),
        end_to_end_id: l.end_to_end_id.clone(),
        bank_reference: l.bank_reference.clone(),
        customer_reference: l.customer_reference.clone(),
        counterparty_name: l.counterparty_name.clone(),
        counterparty_account: l.counterparty_account.clone(),
        description: l.description.clone(),
        status: l.status.clone(),
        matches: l
            .matches
            .iter()
            .map(|m| MatchJson {
                transaction_id: m.transaction_id.clone(),
                confidence: m.confidence,
                method: m.method.clone(),
                rule: m.rule.clone(),
                reason: m.reason.clone(),
                actor: m.actor.clone(),
                created_at: Timestamp::from_micros(m.created_at).to_rfc3339(),
            })
            .collect(),
    }
}

// ---- candidates -----------------------------------------------------------

fn date_of(t: Timestamp) -> Option<Date> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.micros()) * 1000).ok().map(|d| d.date())
}

/// Metadata keys whose values count as references.
fn is_reference_key(key: &str) -> bool {
    matches!(key, "reference" | "end_to_end_id" | "bank_reference") || key.ends_with("_reference")
}

/// A transaction as the matcher sees it: its net effect on `account`,
/// positive when it puts money into the bank account (an entry on the
/// account's normal side), or `None` when it does not touch the account.
pub fn candidate(t: &Transaction, account: &AccountId, normal: settle_core::ledger::NormalBalance) -> Option<Candidate> {
    let mut amount: i64 = 0;
    let mut currency = None;
    for e in t.current_entries().filter(|e| &e.account_id == account) {
        let signed = if e.direction == normal { e.amount } else { e.amount.checked_neg()? };
        amount = amount.checked_add(signed)?;
        currency = Some(e.currency);
    }
    let currency = currency?;
    let mut references: Vec<String> = t.external_id.iter().cloned().collect();
    references.extend(t.metadata.iter().filter(|(k, _)| is_reference_key(k)).map(|(_, v)| v.clone()));
    let mut text = t.description.clone().unwrap_or_default();
    for v in t.metadata.values() {
        text.push(' ');
        text.push_str(v);
    }
    Some(Candidate { amount_minor: amount, currency, date: date_of(t.effective_at)?, references, text })
}

/// Posted transactions on `account` that may explain lines dated from
/// `first` on, newest first, with their candidates.
async fn candidates(
    store: &Store,
    tenant: TenantId,
    account: &AccountId,
    normal: settle_core::ledger::NormalBalance,
    first: Date,
    window: i64,
    now: Timestamp,
) -> Result<Vec<(Transaction, Candidate)>, ApiError> {
    let horizon = first - time::Duration::days(window + CANDIDATE_HORIZON_DAYS);
    let mut out = Vec::new();
    let mut cursor = Cursor::Start;
    let mut scanned = 0usize;
    loop {
        let page = store
            .list_transactions(tenant, Some(account.clone()), Some(TransactionStatus::Posted), PageRequest { limit: 500, cursor: cursor.clone() }, now)
            .await?;
        let mut reached_horizon = false;
        for t in &page.items {
            scanned += 1;
            if date_of(t.created_at).is_some_and(|d| d < horizon) {
                reached_horizon = true;
            }
            if let Some(c) = candidate(t, account, normal) {
                out.push((t.clone(), c));
            }
        }
        match page.items.last() {
            Some(last) if page.has_more && !reached_horizon && scanned < MAX_CANDIDATES => cursor = Cursor::After(last.id.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

// ---- import ---------------------------------------------------------------

/// Builds the idempotency record of an import from the response it makes.
pub type IdempotencyBuilder<'a> = dyn Fn(&StatementJson) -> Result<IdempotencyRecord, ApiError> + Sync + 'a;

/// What an import needs, parsed at the boundary (HTTP body or CLI flags).
pub struct ImportInput {
    pub tenant: TenantId,
    pub format: Format,
    pub content: String,
    pub ledger_account_id: String,
    pub csv_profile: Option<settle_recon::csv::CsvProfile>,
    pub date_window_days: i64,
    /// The API key id, or `cli`.
    pub actor: String,
}

/// Parses, matches and stores a statement. `Ok((true, _))` when it was new,
/// `Ok((false, existing))` when the tenant had imported the same content
/// (nothing is written then). `keyed` stores the request's idempotency
/// record with the statement, built from the response the import makes.
pub async fn import(
    store: &Store,
    ids: &IdGenerator,
    now: Timestamp,
    input: ImportInput,
    keyed: Option<&IdempotencyBuilder<'_>>,
) -> Result<(bool, StatementRecord), ApiError> {
    let account_id = AccountId::parse(&input.ledger_account_id).ok_or_else(account_not_found)?;
    let account = store.get_account(input.tenant, account_id.clone(), now).await?.ok_or_else(account_not_found)?;
    if !(0..=MAX_DATE_WINDOW_DAYS).contains(&input.date_window_days) {
        return Err(ApiError::invalid("date_window_days", format!("date_window_days must be from 0 to {MAX_DATE_WINDOW_DAYS}")));
    }
    let statement: Statement = settle_recon::parse(input.format, &input.content, input.csv_profile.as_ref()).map_err(|e| statement_invalid(&e))?;
    if statement.currency != account.state.currency {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::LedgerError,
            "currency_mismatch",
            format!("the statement is in {}, the ledger account in {}", statement.currency, account.state.currency),
        )
        .with_param("ledger_account_id"));
    }
    let fingerprint = statement.fingerprint();
    if let Some(existing) = store.find_bank_statement_by_fingerprint(input.tenant, fingerprint.clone()).await? {
        return Ok((false, existing));
    }
    let (total_credits, total_debits) = statement
        .totals()
        .ok_or_else(|| statement_invalid(&ParseError::Invalid { at: settle_recon::Position::Line(0), message: String::from("the lines' totals overflow") }))?;
    // Candidates, less the transactions earlier statements already explain.
    let first = statement.lines.iter().map(|l| l.booking_date).min();
    let mut found = match first {
        Some(first) => candidates(store, input.tenant, &account_id, account.state.normal_balance, first, input.date_window_days, now).await?,
        None => Vec::new(),
    };
    let taken: HashSet<String> =
        store.matched_transaction_ids(input.tenant, found.iter().map(|(t, _)| t.id.to_string()).collect()).await?.into_iter().collect();
    found.retain(|(t, _)| !taken.contains(t.id.as_str()));
    // Oldest first, so ties resolve the same way on every run.
    found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let inputs: Vec<LineInput> = statement
        .lines
        .iter()
        .map(|l| LineInput {
            amount_minor: l.amount_minor,
            currency: l.currency,
            booking_date: l.booking_date,
            value_date: l.value_date,
            references: l.references.all().map(str::to_owned).collect(),
            counterparty: l.counterparty_name.clone(),
        })
        .collect();
    let cands: Vec<Candidate> = found.iter().map(|(_, c)| c.clone()).collect();
    let proposals = matcher::match_lines(&inputs, &cands, input.date_window_days);

    let statement_id = ids.bank_statement().to_string();
    let micros = now.micros();
    let mut lines: Vec<LineRecord> = statement
        .lines
        .iter()
        .map(|l| LineRecord {
            id: ids.bank_statement_line().to_string(),
            statement_id: statement_id.clone(),
            source_position: l.position.to_string(),
            booking_date: date_text(l.booking_date),
            value_date: l.value_date.map(date_text),
            amount: l.amount_minor,
            currency: l.currency.code().to_owned(),
            direction: l.direction.as_str().to_owned(),
            end_to_end_id: l.references.end_to_end_id.clone(),
            bank_reference: l.references.bank_reference.clone(),
            customer_reference: l.references.customer_reference.clone(),
            counterparty_name: l.counterparty_name.clone(),
            counterparty_account: l.counterparty_account.clone(),
            description: l.description.clone(),
            status: String::from("unmatched"),
            created_at: micros,
            matches: Vec::new(),
        })
        .collect();
    let mut matches = Vec::new();
    for p in &proposals {
        let status = if p.is_partial() { "partially_matched" } else { "matched" };
        for &li in &p.lines {
            lines[li].status = status.to_owned();
            for &ci in &p.candidates {
                let m = MatchRecord {
                    id: ids.bank_match().to_string(),
                    line_id: lines[li].id.clone(),
                    transaction_id: found[ci].0.id.to_string(),
                    confidence: i64::from(p.rule.confidence()),
                    method: String::from("auto"),
                    rule: p.rule.as_str().to_owned(),
                    reason: None,
                    actor: String::from("matcher"),
                    created_at: micros,
                };
                lines[li].matches.push(m.clone());
                matches.push(m);
            }
        }
    }
    let count = |s: &str| lines.iter().filter(|l| l.status == s).count() as i64;
    let record = StatementRecord {
        id: statement_id,
        tenant: input.tenant,
        fingerprint,
        format: input.format.as_str().to_owned(),
        ledger_account_id: account_id.to_string(),
        bank_statement_id: statement.statement_id.clone(),
        account_number: statement.account.clone(),
        currency: statement.currency.code().to_owned(),
        opening_balance: statement.opening_balance_minor,
        closing_balance: statement.closing_balance_minor,
        period_start: statement.period_start.map(date_text),
        period_end: statement.period_end.map(date_text),
        line_count: lines.len() as i64,
        total_credits,
        total_debits,
        imported_by: input.actor,
        created_at: micros,
        status_counts: (count("matched"), count("partially_matched"), count("unmatched")),
    };
    let idempotency = keyed.map(|k| k(&statement_json(&record))).transpose()?;
    tracing::info!(statement = %record.id, lines = record.line_count, matched = record.status_counts.0, partially_matched = record.status_counts.1, "bank statement imported");
    match store.insert_bank_statement(record.clone(), lines, matches, idempotency).await? {
        InsertStatement::Created => Ok((true, record)),
        InsertStatement::Duplicate(existing) => Ok((false, *existing)),
    }
}

// ---- reports --------------------------------------------------------------

/// What a report covers.
pub enum ReportScope {
    Date(Date),
    Statement(String),
}

pub async fn report(store: &Store, tenant: TenantId, scope: ReportScope, now: Timestamp) -> Result<Option<ReportJson>, ApiError> {
    let (lines, dates, statement_id, date) = match &scope {
        ReportScope::Date(d) => (store.bank_statement_lines_on(tenant, date_text(*d)).await?, (*d, *d), None, Some(date_text(*d))),
        ReportScope::Statement(id) => {
            let Some(s) = store.get_bank_statement(tenant, id.clone()).await? else { return Ok(None) };
            let lines = store.bank_statement_lines_all(tenant, id.clone()).await?;
            let parse = |t: &Option<String>| t.as_deref().and_then(|t| settle_recon::amount::parse_iso_date(t).ok());
            let dates = match (parse(&s.period_start), parse(&s.period_end)) {
                (Some(a), Some(b)) => (a, b),
                _ => (date_of(now).unwrap_or(Date::MIN), date_of(now).unwrap_or(Date::MIN)),
            };
            (lines, dates, Some(id.clone()), None)
        }
    };
    let truncated = lines.len() as i64 >= settle_store::bank_recon::MAX_REPORT_LINES;
    // Statements and their ledger accounts.
    let mut statement_accounts: BTreeMap<String, (String, String)> = BTreeMap::new();
    for l in &lines {
        if !statement_accounts.contains_key(&l.statement_id)
            && let Some(s) = store.get_bank_statement(tenant, l.statement_id.clone()).await?
        {
            statement_accounts.insert(s.id.clone(), (s.ledger_account_id, s.currency));
        }
    }
    if let (Some(id), true) = (&statement_id, statement_accounts.is_empty())
        && let Some(s) = store.get_bank_statement(tenant, id.clone()).await?
    {
        statement_accounts.insert(s.id.clone(), (s.ledger_account_id, s.currency));
    }
    let mut summaries: BTreeMap<(String, String), SummaryJson> = BTreeMap::new();
    for (sid, (account, currency)) in &statement_accounts {
        let entry = summaries.entry((account.clone(), currency.clone())).or_insert_with(|| SummaryJson {
            ledger_account_id: account.clone(),
            currency: currency.clone(),
            statement_ids: Vec::new(),
            bank_credits: 0,
            bank_debits: 0,
            matched: BucketJson::default(),
            partially_matched: BucketJson::default(),
            unmatched: BucketJson::default(),
            unmatched_ledger: BucketJson::default(),
        });
        entry.statement_ids.push(sid.clone());
    }
    for l in &lines {
        let Some((account, currency)) = statement_accounts.get(&l.statement_id) else { continue };
        let Some(s) = summaries.get_mut(&(account.clone(), currency.clone())) else { continue };
        if l.amount >= 0 {
            s.bank_credits = s.bank_credits.saturating_add(l.amount);
        } else {
            s.bank_debits = s.bank_debits.saturating_add(l.amount.saturating_neg());
        }
        let bucket = match l.status.as_str() {
            "matched" => &mut s.matched,
            "partially_matched" => &mut s.partially_matched,
            _ => &mut s.unmatched,
        };
        bucket.count += 1;
        bucket.amount = bucket.amount.saturating_add(l.amount);
    }
    // The ledger side: posted transactions in the dates, on those accounts, that no line explains.
    let mut unmatched_transactions = Vec::new();
    for ((account, _), summary) in summaries.iter_mut() {
        let Some(account_id) = AccountId::parse(account) else { continue };
        let Some(record) = store.get_account(tenant, account_id.clone(), now).await? else { continue };
        let found = candidates(store, tenant, &account_id, record.state.normal_balance, dates.0, 0, now).await?;
        let in_range: Vec<&(Transaction, Candidate)> = found.iter().filter(|(_, c)| c.date >= dates.0 && c.date <= dates.1).collect();
        let taken: HashSet<String> =
            store.matched_transaction_ids(tenant, in_range.iter().map(|(t, _)| t.id.to_string()).collect()).await?.into_iter().collect();
        let mut rows: Vec<&&(Transaction, Candidate)> = in_range.iter().filter(|(t, _)| !taken.contains(t.id.as_str())).collect();
        rows.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        for (t, c) in rows {
            summary.unmatched_ledger.count += 1;
            summary.unmatched_ledger.amount = summary.unmatched_ledger.amount.saturating_add(c.amount_minor);
            unmatched_transactions.push(UnmatchedTransactionJson {
                transaction_id: t.id.to_string(),
                ledger_account_id: account.clone(),
                effective_date: date_text(c.date),
                amount: c.amount_minor,
                currency: c.currency.code().to_owned(),
                external_id: t.external_id.clone(),
                description: t.description.clone(),
            });
        }
    }
    Ok(Some(ReportJson {
        object: "reconciliation_report",
        date,
        statement_id,
        summary: summaries.into_values().collect(),
        lines: lines.iter().map(line_json).collect(),
        unmatched_transactions,
        truncated,
        generated_at: now.to_rfc3339(),
    }))
}

/// A cell for a spreadsheet: quoted when needed, and a leading `=`, `+`,
/// `-` or `@` in text defused with `'` so a bank's free text cannot run as a
/// formula in the accountant's spreadsheet.
fn cell(text: &str, is_text: bool) -> String {
    let mut t = text.to_owned();
    if is_text && t.starts_with(['=', '+', '-', '@']) {
        t.insert(0, '\'');
    }
    if t.contains([',', '"', '\n', '\r']) { format!("\"{}\"", t.replace('"', "\"\"")) } else { t }
}

fn money(minor: i64, currency: &str) -> String {
    Currency::parse(currency).map_or_else(|| minor.to_string(), |c| settle_recon::amount::format_minor(minor, c))
}

/// The report as CSV: one row per statement line, then one per unmatched
/// ledger transaction. Amounts in major units (`1234.56`) for people.
pub fn report_csv(r: &ReportJson) -> String {
    let mut out = String::from(
        "side,statement_id,line_id,booking_date,value_date,amount,currency,direction,status,transaction_ids,confidence,method,reference,counterparty,description\n",
    );
    for l in &r.lines {
        let reference = l.end_to_end_id.as_deref().or(l.customer_reference.as_deref()).or(l.bank_reference.as_deref()).unwrap_or("");
        let row = [
            String::from("bank"),
            l.statement_id.clone(),
            l.id.clone(),
            l.booking_date.clone(),
            l.value_date.clone().unwrap_or_default(),
            money(l.amount, &l.currency),
            l.currency.clone(),
            l.direction.clone(),
            l.status.clone(),
            l.matches.iter().map(|m| m.transaction_id.as_str()).collect::<Vec<_>>().join(" "),
            l.matches.iter().map(|m| m.confidence).min().map(|c| c.to_string()).unwrap_or_default(),
            l.matches.first().map(|m| m.method.clone()).unwrap_or_default(),
            cell(reference, true),
            cell(l.counterparty_name.as_deref().unwrap_or(""), true),
            cell(l.description.as_deref().unwrap_or(""), true),
        ];
        out.push_str(&row.iter().map(|c| if c.starts_with('\'') || c.starts_with('"') { c.clone() } else { cell(c, false) }).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    for t in &r.unmatched_transactions {
        let row = [
            String::from("ledger"),
            String::new(),
            String::new(),
            t.effective_date.clone(),
            String::new(),
            money(t.amount, &t.currency),
            t.currency.clone(),
            String::from(if t.amount >= 0 { "credit" } else { "debit" }),
            String::from("unmatched"),
            t.transaction_id.clone(),
            String::new(),
            String::new(),
            cell(t.external_id.as_deref().unwrap_or(""), true),
            String::new(),
            cell(t.description.as_deref().unwrap_or(""), true),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

// ---- handlers -------------------------------------------------------------

/// Replays a stored outcome for `key`, or refuses a reused key.
async fn replay(state: &AppState, principal: &Principal, key: &str, fingerprint: &str) -> Result<Option<Response>, ApiError> {
    match state.store.find_idempotency(principal.tenant, key.to_owned()).await? {
        Some(record) if record.fingerprint == fingerprint => {
            let status = StatusCode::from_u16(record.response.status).unwrap_or(StatusCode::OK);
            let mut response = (status, record.response.body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(Some(response))
        }
        Some(_) => Err(idempotency::reused()),
        None => Ok(None),
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))?;
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn keyed_record(principal: &Principal, key: Option<(String, String)>, status: StatusCode, body: Vec<u8>, now: Timestamp) -> Option<IdempotencyRecord> {
    key.map(|(key, fingerprint)| IdempotencyRecord {
        tenant: principal.tenant,
        key,
        fingerprint,
        response: StoredResponse { status: status.as_u16(), body },
        created_at: now,
    })
}

/// Imports a bank statement and matches its lines against the ledger. The
/// same statement imported again answers `200` with the first import and changes nothing.
#[utoipa::path(post, path = "/v1/reconciliation/statements", tag = "Reconciliation", operation_id = "import_bank_statement",
    params(crate::openapi::IdempotencyKey),
    request_body = ImportStatementRequest,
    responses(
        (status = 201, description = "The new statement, with how many lines matched.", body = StatementJson),
        (status = 200, description = "The same statement was imported before: that import, unchanged.", body = StatementJson)))]
pub async fn import_statement(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::ReconciliationWrite>,
    Extension(_request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: JsonBody<ImportStatementRequest, MAX_STATEMENT_BODY_BYTES>,
) -> Result<Response, ApiError> {
    let path = "/v1/reconciliation/statements";
    let key = idempotency::key_from(&headers)?;
    let keyed = key.map(|k| (k, idempotency::fingerprint(&principal, "POST", path, &body.canonical)));
    if let Some((k, f)) = &keyed
        && let Some(response) = replay(&state, &principal, k, f).await?
    {
        return Ok(response);
    }
    let _guard = match &keyed {
        Some((k, _)) => Some(state.in_flight.claim(principal.tenant, k).ok_or_else(idempotency::in_use)?),
        None => None,
    };
    let req = body.value;
    let format = Format::parse(&req.format).ok_or_else(|| ApiError::invalid("format", "format must be camt.053, camt.054, mt940, bai2 or csv"))?;
    let csv_profile = match req.csv_profile {
        Some(v) => Some(serde_json::from_value::<settle_recon::csv::CsvProfile>(v).map_err(|e| ApiError::invalid("csv_profile", e.to_string()))?),
        None => None,
    };
    let now = state.clock.now();
    let input = ImportInput {
        tenant: principal.tenant,
        format,
        content: req.content,
        ledger_account_id: req.ledger_account_id,
        csv_profile,
        date_window_days: req.date_window_days.unwrap_or(matcher::DEFAULT_DATE_WINDOW_DAYS),
        actor: principal.key_id.to_string(),
    };
    let build = |json: &StatementJson| -> Result<IdempotencyRecord, ApiError> {
        let body = serde_json::to_vec(json).map_err(|e| ApiError::internal(&e))?;
        keyed_record(&principal, keyed.clone(), StatusCode::CREATED, body, now).ok_or_else(|| ApiError::internal(&"no idempotency key"))
    };
    let keyed_fn: Option<&IdempotencyBuilder<'_>> = if keyed.is_some() { Some(&build) } else { None };
    let (created, record) = import(&state.store, &state.reconciliation_ids, now, input, keyed_fn).await?;
    json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &statement_json(&record))
}

fn statement_id(text: &str) -> Result<String, ApiError> {
    BankStatementId::parse(text).map(|i| i.to_string()).ok_or_else(|| ApiError::not_found("bank statement"))
}

fn line_id(text: &str) -> Result<String, ApiError> {
    BankStatementLineId::parse(text).map(|i| i.to_string()).ok_or_else(|| ApiError::not_found("bank statement line"))
}

/// One imported statement.
#[utoipa::path(get, path = "/v1/reconciliation/statements/{id}", tag = "Reconciliation", operation_id = "get_bank_statement",
    params(("id" = String, Path, description = "A statement id (`bst_…`).")),
    responses((status = 200, description = "The statement.", body = StatementJson)))]
pub async fn get_statement(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::ReconciliationRead)?;
    let id = statement_id(&id)?;
    let s = state.store.get_bank_statement(principal.tenant, id).await?.ok_or_else(|| ApiError::not_found("bank statement"))?;
    Ok(Json(statement_json(&s)).into_response())
}

/// Imported statements, newest first.
#[utoipa::path(get, path = "/v1/reconciliation/statements", tag = "Reconciliation", operation_id = "list_bank_statements",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "A page of statements.", body = crate::render::ListJson<StatementJson>)))]
pub async fn list_statements(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::ReconciliationRead)?;
    let params: crate::pagination::PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| BankStatementId::parse(id).is_some())?;
    let result = state.store.list_bank_statements(principal.tenant, page).await?;
    Ok(Json(crate::render::list(result.items.iter().map(statement_json).collect(), result.has_more)).into_response())
}

/// A statement's lines in file order, each with its match status and matches.
#[utoipa::path(get, path = "/v1/reconciliation/statements/{id}/lines", tag = "Reconciliation", operation_id = "list_bank_statement_lines",
    params(("id" = String, Path, description = "A statement id (`bst_…`)."), crate::pagination::PageParams),
    responses((status = 200, description = "A page of lines.", body = crate::render::ListJson<LineJson>)))]
pub async fn list_lines(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::ReconciliationRead)?;
    let id = statement_id(&id)?;
    let params: crate::pagination::PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| BankStatementLineId::parse(id).is_some())?;
    if state.store.get_bank_statement(principal.tenant, id.clone()).await?.is_none() {
        return Err(ApiError::not_found("bank statement"));
    }
    let result = state.store.list_bank_statement_lines(principal.tenant, id, page).await?;
    Ok(Json(crate::render::list(result.items.iter().map(line_json).collect(), result.has_more)).into_response())
}

fn reason_of(text: &str) -> Result<String, ApiError> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid("reason", format!("reason must be 1 to {MAX_REASON_CHARS} characters: the audit records why")));
    }
    Ok(t.to_owned())
}

/// The status a line has with `links` (its transactions, each with the
/// lines it is linked to) given each transaction's amount on the account.
fn status_for(line: &LineRecord, links: &BTreeMap<String, Vec<String>>, amounts: &HashMap<String, i64>) -> String {
    let mine: Vec<&String> = links.iter().filter(|(_, lines)| lines.contains(&line.id)).map(|(t, _)| t).collect();
    match mine.as_slice() {
        [] => String::from("unmatched"),
        [t] if links.get(*t).map(Vec::len) == Some(1) && amounts.get(*t) == Some(&line.amount) => String::from("matched"),
        _ => String::from("partially_matched"),
    }
}

/// The transaction's net amount on the account, from the bank account's side.
async fn amount_on(state: &AppState, tenant: TenantId, transaction: &str, account: &str, now: Timestamp) -> Result<Option<i64>, ApiError> {
    let (Some(tid), Some(aid)) = (TransactionId::parse(transaction), AccountId::parse(account)) else { return Ok(None) };
    let Some(t) = state.store.get_transaction(tenant, tid, now).await? else { return Ok(None) };
    let Some(a) = state.store.get_account(tenant, aid.clone(), now).await? else { return Ok(None) };
    Ok(candidate(&t, &aid, a.state.normal_balance).map(|c| c.amount_minor))
}

struct Manual<'a> {
    state: &'a AppState,
    principal: &'a Principal,
    headers: &'a HeaderMap,
    path: String,
    canonical: &'a [u8],
}

impl Manual<'_> {
    /// Applies `change` (its statuses and audit filled in) and answers with the line as it is after.
    async fn apply(&self, change: ManualChange, line_after: LineRecord, keyed: Option<(String, String)>) -> Result<Response, ApiError> {
        let now = self.state.clock.now();
        let body = serde_json::to_vec(&line_json(&line_after)).map_err(|e| ApiError::internal(&e))?;
        let record = keyed_record(self.principal, keyed, StatusCode::OK, body.clone(), now);
        if !self.state.store.apply_bank_manual_change(change, record).await? {
            return Err(conflict("reconciliation_conflict", "the line's matches changed while this request was being decided; read it again and retry"));
        }
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }

    async fn keyed(&self) -> Result<(Option<(String, String)>, Option<Response>, Option<crate::idempotency::InFlightGuard>), ApiError> {
        let key = idempotency::key_from(self.headers)?;
        let keyed = key.map(|k| (k, idempotency::fingerprint(self.principal, "POST", &self.path, self.canonical)));
        if let Some((k, f)) = &keyed {
            if let Some(response) = replay(self.state, self.principal, k, f).await? {
                return Ok((None, Some(response), None));
            }
            let guard = self.state.in_flight.claim(self.principal.tenant, k).ok_or_else(idempotency::in_use)?;
            return Ok((keyed, None, Some(guard)));
        }
        Ok((None, None, None))
    }
}

/// Matches a line to a ledger transaction by hand. The reason and the API key are audited.
#[utoipa::path(post, path = "/v1/reconciliation/lines/{id}/match", tag = "Reconciliation", operation_id = "match_bank_statement_line",
    params(("id" = String, Path, description = "A statement line id (`bsl_…`)."), crate::openapi::IdempotencyKey),
    request_body = ManualMatchRequest,
    responses((status = 200, description = "The line with its matches.", body = LineJson)))]
pub async fn match_line(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::ReconciliationWrite>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<ManualMatchRequest>,
) -> Result<Response, ApiError> {
    let manual =
        Manual { state: &state, principal: &principal, headers: &headers, path: format!("/v1/reconciliation/lines/{id}/match"), canonical: &body.canonical };
    let (keyed, replayed, _guard) = manual.keyed().await?;
    if let Some(response) = replayed {
        return Ok(response);
    }
    let lid = line_id(&id)?;
    let reason = reason_of(&body.value.reason)?;
    let now = state.clock.now();
    let tenant = principal.tenant;
    let (line, account) = state.store.get_bank_statement_line(tenant, lid.clone()).await?.ok_or_else(|| ApiError::not_found("bank statement line"))?;
    let tid = TransactionId::parse(&body.value.transaction_id).ok_or_else(|| ApiError::not_found("transaction").with_param("transaction_id"))?;
    let t = state.store.get_transaction(tenant, tid.clone(), now).await?.ok_or_else(|| ApiError::not_found("transaction").with_param("transaction_id"))?;
    if t.status != TransactionStatus::Posted {
        return Err(conflict("transaction_not_posted", "only a posted transaction can explain a bank movement").with_param("transaction_id"));
    }
    let Some(amount) = amount_on(&state, tenant, tid.as_str(), &account, now).await? else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::InvalidRequestError,
            "reconciliation_account_mismatch",
            format!("the transaction has no entry on the statement's ledger account {account}"),
        )
        .with_param("transaction_id"));
    };
    let links = state.store.bank_links(tenant, lid.clone(), vec![tid.to_string()]).await?;
    if let Some((other, _)) = links.iter().find(|(_, t)| t == tid.as_str()) {
        return Err(conflict("transaction_already_matched", format!("the transaction is already matched to line {other}; unmatch it there first"))
            .with_param("transaction_id"));
    }
    let m = MatchRecord {
        id: state.reconciliation_ids.bank_match().to_string(),
        line_id: lid.clone(),
        transaction_id: tid.to_string(),
        confidence: 100,
        method: String::from("manual"),
        rule: String::from("manual"),
        reason: Some(reason.clone()),
        actor: principal.key_id.to_string(),
        created_at: now.micros(),
    };
    let mut after = line.clone();
    after.matches.push(m.clone());
    let mut amounts: HashMap<String, i64> = HashMap::from([(tid.to_string(), amount)]);
    for existing in &line.matches {
        if let Some(a) = amount_on(&state, tenant, &existing.transaction_id, &account, now).await? {
            amounts.insert(existing.transaction_id.clone(), a);
        }
    }
    let mut by_txn: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (l, t) in &links {
        by_txn.entry(t.clone()).or_default().push(l.clone());
    }
    by_txn.entry(tid.to_string()).or_default().push(lid.clone());
    after.status = status_for(&after, &by_txn, &amounts);
    let change = ManualChange {
        tenant,
        line_id: lid.clone(),
        transaction_ids: vec![tid.to_string()],
        expected_links: links,
        insert: vec![m],
        delete: Vec::new(),
        statuses: vec![(lid.clone(), after.status.clone())],
        audit: AuditRecord {
            id: state.reconciliation_ids.bank_reconciliation_action().to_string(),
            line_id: lid,
            action: String::from("match"),
            transaction_ids: vec![tid.to_string()],
            reason,
            actor: principal.key_id.to_string(),
            request_id: Some(request_id.0.clone()),
            created_at: now.micros(),
        },
    };
    manual.apply(change, after, keyed).await
}

/// Removes a line's matches (automatic or manual). The reason and the API key are audited.
#[utoipa::path(post, path = "/v1/reconciliation/lines/{id}/unmatch", tag = "Reconciliation", operation_id = "unmatch_bank_statement_line",
    params(("id" = String, Path, description = "A statement line id (`bsl_…`)."), crate::openapi::IdempotencyKey),
    request_body = UnmatchRequest,
    responses((status = 200, description = "The line, now unmatched.", body = LineJson)))]
pub async fn unmatch_line(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::ReconciliationWrite>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<UnmatchRequest>,
) -> Result<Response, ApiError> {
    let manual =
        Manual { state: &state, principal: &principal, headers: &headers, path: format!("/v1/reconciliation/lines/{id}/unmatch"), canonical: &body.canonical };
    let (keyed, replayed, _guard) = manual.keyed().await?;
    if let Some(response) = replayed {
        return Ok(response);
    }
    let lid = line_id(&id)?;
    let reason = reason_of(&body.value.reason)?;
    let now = state.clock.now();
    let tenant = principal.tenant;
    let (line, account) = state.store.get_bank_statement_line(tenant, lid.clone()).await?.ok_or_else(|| ApiError::not_found("bank statement line"))?;
    if line.matches.is_empty() {
        return Err(conflict("line_not_matched", "the line has no matches to remove"));
    }
    let txns: Vec<String> = line.matches.iter().map(|m| m.transaction_id.clone()).collect();
    let links = state.store.bank_links(tenant, lid.clone(), txns.clone()).await?;
    let delete: Vec<(String, String)> = links.iter().filter(|(l, _)| *l == lid).cloned().collect();
    // Other lines sharing those transactions may change status.
    let mut by_txn: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (l, t) in links.iter().filter(|(l, _)| *l != lid) {
        by_txn.entry(t.clone()).or_default().push(l.clone());
    }
    let mut amounts = HashMap::new();
    for t in &txns {
        if let Some(a) = amount_on(&state, tenant, t, &account, now).await? {
            amounts.insert(t.clone(), a);
        }
    }
    let mut statuses = vec![(lid.clone(), String::from("unmatched"))];
    for other in state.store.bank_lines_linked_to(tenant, txns.clone()).await? {
        if other.id != lid {
            // Its other links (to transactions not involved here) keep it at least partially matched.
            let mut links_of_other = by_txn.clone();
            for m in other.matches.iter().filter(|m| !txns.contains(&m.transaction_id)) {
                links_of_other.entry(m.transaction_id.clone()).or_default().push(other.id.clone());
            }
            statuses.push((other.id.clone(), status_for(&other, &links_of_other, &amounts)));
        }
    }
    let mut after = line.clone();
    after.matches.clear();
    after.status = String::from("unmatched");
    let change = ManualChange {
        tenant,
        line_id: lid.clone(),
        transaction_ids: txns.clone(),
        expected_links: links,
        insert: Vec::new(),
        delete,
        statuses,
        audit: AuditRecord {
            id: state.reconciliation_ids.bank_reconciliation_action().to_string(),
            line_id: lid,
            action: String::from("unmatch"),
            transaction_ids: txns,
            reason,
            actor: principal.key_id.to_string(),
            request_id: Some(request_id.0.clone()),
            created_at: now.micros(),
        },
    };
    manual.apply(change, after, keyed).await
}

/// `format=csv` asks for CSV (as does `Accept: text/csv`).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn wants_csv(headers: &HeaderMap, params: &ReportParams) -> Result<bool, ApiError> {
    match params.format.as_deref() {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(_) => Err(ApiError::invalid("format", "format must be json or csv")),
        None => Ok(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"))),
    }
}

fn report_response(report: &ReportJson, csv: bool, name: &str) -> Result<Response, ApiError> {
    if !csv {
        return json_response(StatusCode::OK, report);
    }
    let mut response = (StatusCode::OK, report_csv(report)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"reconciliation-{name}.csv\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The day's reconciliation: every statement line booked that day, by ledger
/// account, and the posted ledger transactions of that day no line explains.
#[utoipa::path(get, path = "/v1/reconciliation/reports/{date}", tag = "Reconciliation", operation_id = "get_reconciliation_report",
    params(("date" = String, Path, description = "A day, `YYYY-MM-DD`."), ReportParams),
    responses((status = 200, description = "The report (JSON, or CSV with `format=csv` or `Accept: text/csv`).", 
        content((ReportJson = "application/json"), (String = "text/csv")))))]
pub async fn day_report(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    IdPath(date): IdPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(&principal, Scope::ReconciliationRead)?;
    let params: ReportParams = parse_query(query.as_deref())?;
    let csv = wants_csv(&headers, &params)?;
    let day =
        settle_recon::amount::parse_iso_date(&date).ok().filter(|_| date.len() == 10).ok_or_else(|| ApiError::invalid("date", "date must be YYYY-MM-DD"))?;
    let report = report(&state.store, principal.tenant, ReportScope::Date(day), state.clock.now()).await?.ok_or_else(|| ApiError::not_found("report"))?;
    report_response(&report, csv, &date)
}

/// One statement's reconciliation: its lines and, over its period, the posted ledger transactions no line explains.
#[utoipa::path(get, path = "/v1/reconciliation/statements/{id}/report", tag = "Reconciliation", operation_id = "get_bank_statement_report",
    params(("id" = String, Path, description = "A statement id (`bst_…`)."), ReportParams),
    responses((status = 200, description = "The report (JSON, or CSV with `format=csv` or `Accept: text/csv`).", 
        content((ReportJson = "application/json"), (String = "text/csv")))))]
pub async fn statement_report(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    IdPath(id): IdPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(&principal, Scope::ReconciliationRead)?;
    let params: ReportParams = parse_query(query.as_deref())?;
    let csv = wants_csv(&headers, &params)?;
    let sid = statement_id(&id)?;
    let report = report(&state.store, principal.tenant, ReportScope::Statement(sid.clone()), state.clock.now())
        .await?
        .ok_or_else(|| ApiError::not_found("bank statement"))?;
    report_response(&report, csv, &sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(error: &ApiError) -> bool {
        crate::error::ERROR_CODES.iter().any(|c| c.code == error.code && c.status == error.status.as_u16() && c.kind == error.kind)
    }

    #[test]
    fn every_reconciliation_error_is_a_listed_code() {
        let parse = ParseError::Invalid { at: settle_recon::Position::Line(3), message: String::from("x") };
        let errors = [
            statement_invalid(&parse),
            statement_invalid(&ParseError::Empty),
            account_not_found(),
            conflict("transaction_already_matched", "x"),
            conflict("line_not_matched", "x"),
            conflict("reconciliation_conflict", "x"),
            conflict("transaction_not_posted", "x"),
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, "reconciliation_account_mismatch", "x"),
        ];
        for e in &errors {
            assert!(listed(e), "{} ({}) is not in ERROR_CODES", e.code, e.status);
        }
        assert_eq!(statement_invalid(&parse).param.as_deref(), Some("line 3"));
        assert_eq!(statement_invalid(&ParseError::Empty).param.as_deref(), Some("content"));
    }

    #[test]
    fn spreadsheet_cells_are_quoted_and_defused() {
        assert_eq!(cell("=HYPERLINK(\"x\")", true), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("a,b", true), "\"a,b\"");
        assert_eq!(cell("-12.00", false), "-12.00");
        assert_eq!(money(-32_144, "EUR"), "-321.44");
    }
}
