//! Bank reconciliation records: imported statements, their lines, the links
//! between lines and ledger transactions, and the audit of manual actions.
//!
//! These rows are bookkeeping about the ledger, not ledger state, so they are
//! written here directly (like `operations`), never through the engine, and
//! nothing here writes to a ledger table. Each write is one database
//! transaction that also stores the request's idempotency record, if any.
//!
//! Manual actions are decided by the caller from what it read, then applied
//! here with the links the caller saw as a precondition: inside the write
//! transaction (SQLite: the write lock; PostgreSQL: an advisory lock per
//! tenant) the links are read again, and a difference refuses the action as
//! stale instead of applying a decision made on old data.
//!
//! SQL is written once with `$n` parameters; SQLite reads `?n` (see [`sq`]).

use crate::error::StoreError;
use crate::records::{Cursor, IdempotencyRecord, Page, PageRequest};
use crate::store::Store;
use rusqlite::OptionalExtension;
use settle_core::tenancy::TenantId;
use std::collections::HashMap;

/// Lines a day's report reads at most; a day with more is reported as truncated.
pub const MAX_REPORT_LINES: i64 = 50_000;
/// Key space of the advisory lock that serializes a tenant's manual actions
/// on PostgreSQL (ASCII "recon" in the high bytes, the tenant in the low ones).
const PG_LOCK_BASE: i64 = 0x7265_636f_6e00_0000;

fn sq(sql: &str) -> String {
    sql.replace('$', "?")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementRecord {
    pub id: String,
    pub tenant: TenantId,
    pub fingerprint: String,
    pub format: String,
    pub ledger_account_id: String,
    pub bank_statement_id: Option<String>,
    pub account_number: String,
    pub currency: String,
    pub opening_balance: Option<i64>,
    pub closing_balance: Option<i64>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub line_count: i64,
    pub total_credits: i64,
    pub total_debits: i64,
    pub imported_by: String,
    pub created_at: i64,
    /// Lines per status (matched, partially matched, unmatched), counted on read.
    pub status_counts: (i64, i64, i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRecord {
    pub id: String,
    pub statement_id: String,
    pub source_position: String,
    pub booking_date: String,
    pub value_date: Option<String>,
    /// Signed minor units: positive is money into the bank account.
    pub amount: i64,
    pub currency: String,
    pub direction: String,
    pub end_to_end_id: Option<String>,
    pub bank_reference: Option<String>,
    pub customer_reference: Option<String>,
    pub counterparty_name: Option<String>,
    pub counterparty_account: Option<String>,
    pub description: Option<String>,
    pub status: String,
    pub created_at: i64,
    /// Filled by reads that say so; empty on insert.
    pub matches: Vec<MatchRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchRecord {
    pub id: String,
    pub line_id: String,
    pub transaction_id: String,
    pub confidence: i64,
    pub method: String,
    pub rule: String,
    pub reason: Option<String>,
    pub actor: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: String,
    pub line_id: String,
    pub action: String,
    pub transaction_ids: Vec<String>,
    pub reason: String,
    pub actor: String,
    pub request_id: Option<String>,
    pub created_at: i64,
}

/// The outcome of an import.
#[derive(Debug)]
pub enum InsertStatement {
    Created,
    /// A statement with the same fingerprint exists (imported before, or
    /// concurrently): nothing was written.
    Duplicate(Box<StatementRecord>),
}

/// A manual action, decided by the caller.
#[derive(Clone, Debug)]
pub struct ManualChange {
    pub tenant: TenantId,
    pub line_id: String,
    /// The transactions the action is about (their links are the precondition too).
    pub transaction_ids: Vec<String>,
    /// Every `(line_id, transaction_id)` link touching the line or those
    /// transactions, as the caller read them.
    pub expected_links: Vec<(String, String)>,
    pub insert: Vec<MatchRecord>,
    pub delete: Vec<(String, String)>,
    pub statuses: Vec<(String, String)>,
    pub audit: AuditRecord,
}

const STATEMENT_COLUMNS: &str = "s.id, s.tenant_id, s.fingerprint, s.format, s.ledger_account_id, s.bank_statement_id, s.account_number, s.currency, \
    s.opening_balance, s.closing_balance, s.period_start, s.period_end, s.line_count, s.total_credits, s.total_debits, s.imported_by, s.created_at, \
    (SELECT COUNT(*) FROM bank_statement_lines l WHERE l.statement_id = s.id AND l.status = 'matched'), \
    (SELECT COUNT(*) FROM bank_statement_lines l WHERE l.statement_id = s.id AND l.status = 'partially_matched'), \
    (SELECT COUNT(*) FROM bank_statement_lines l WHERE l.statement_id = s.id AND l.status = 'unmatched')";
const LINE_COLUMNS: &str = "id, statement_id, source_position, booking_date, value_date, amount, currency, direction, end_to_end_id, bank_reference, \
    customer_reference, counterparty_name, counterparty_account, description, status, created_at";
const MATCH_COLUMNS: &str = "id, line_id, transaction_id, confidence, method, rule, reason, actor, created_at";

macro_rules! statement_from {
    ($r:expr, $get:ident) => {
        StatementRecord {
            id: $get($r, 0)?,
            tenant: TenantId($get($r, 1)?),
            fingerprint: $get($r, 2)?,
            format: $get($r, 3)?,
            ledger_account_id: $get($r, 4)?,
            bank_statement_id: $get($r, 5)?,
            account_number: $get($r, 6)?,
            currency: $get($r, 7)?,
            opening_balance: $get($r, 8)?,
            closing_balance: $get($r, 9)?,
            period_start: $get($r, 10)?,
            period_end: $get($r, 11)?,
            line_count: $get($r, 12)?,
            total_credits: $get($r, 13)?,
            total_debits: $get($r, 14)?,
            imported_by: $get($r, 15)?,
            created_at: $get($r, 16)?,
            status_counts: ($get($r, 17)?, $get($r, 18)?, $get($r, 19)?),
        }
    };
}

macro_rules! line_from {
    ($r:expr, $get:ident) => {
        LineRecord {
            id: $get($r, 0)?,
            statement_id: $get($r, 1)?,
            source_position: $get($r, 2)?,
            booking_date: $get($r, 3)?,
            value_date: $get($r, 4)?,
            amount: $get($r, 5)?,
            currency: $get($r, 6)?,
            direction: $get($r, 7)?,
            end_to_end_id: $get($r, 8)?,
            bank_reference: $get($r, 9)?,
            customer_reference: $get($r, 10)?,
            counterparty_name: $get($r, 11)?,
            counterparty_account: $get($r, 12)?,
            description: $get($r, 13)?,
            status: $get($r, 14)?,
            created_at: $get($r, 15)?,
            matches: Vec::new(),
        }
    };
}

macro_rules! match_from {
    ($r:expr, $get:ident) => {
        MatchRecord {
            id: $get($r, 0)?,
            line_id: $get($r, 1)?,
            transaction_id: $get($r, 2)?,
            confidence: $get($r, 3)?,
            method: $get($r, 4)?,
            rule: $get($r, 5)?,
            reason: $get($r, 6)?,
            actor: $get($r, 7)?,
            created_at: $get($r, 8)?,
        }
    };
}

fn sg<T: rusqlite::types::FromSql>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<T> {
    r.get(i)
}

fn pg<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a tokio_postgres::Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(|e| StoreError::Corrupt(format!("bank reconciliation column {i}: {e}")))
}

fn sqlite_statement(r: &rusqlite::Row<'_>) -> rusqlite::Result<StatementRecord> {
    Ok(statement_from!(r, sg))
}
fn sqlite_line(r: &rusqlite::Row<'_>) -> rusqlite::Result<LineRecord> {
    Ok(line_from!(r, sg))
}
fn sqlite_match(r: &rusqlite::Row<'_>) -> rusqlite::Result<MatchRecord> {
    Ok(match_from!(r, sg))
}
fn pg_statement(r: &tokio_postgres::Row) -> Result<StatementRecord, StoreError> {
    Ok(statement_from!(r, pg))
}
fn pg_line(r: &tokio_postgres::Row) -> Result<LineRecord, StoreError> {
    Ok(line_from!(r, pg))
}
fn pg_match(r: &tokio_postgres::Row) -> Result<MatchRecord, StoreError> {
    Ok(match_from!(r, pg))
}

const INSERT_STATEMENT: &str = "INSERT INTO bank_statements (id, tenant_id, fingerprint, format, ledger_account_id, bank_statement_id, account_number, currency, \
    opening_balance, closing_balance, period_start, period_end, line_count, total_credits, total_debits, imported_by, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
const INSERT_LINE: &str = "INSERT INTO bank_statement_lines (id, tenant_id, statement_id, source_position, booking_date, value_date, amount, currency, direction, \
    end_to_end_id, bank_reference, customer_reference, counterparty_name, counterparty_account, description, status, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
const INSERT_MATCH: &str = "INSERT INTO bank_matches (id, tenant_id, line_id, transaction_id, confidence, method, rule, reason, actor, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const INSERT_AUDIT: &str = "INSERT INTO bank_reconciliation_audit (id, tenant_id, line_id, action, transaction_ids, reason, actor, request_id, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// The links touching a line or some transactions, sorted, for the precondition.
fn links_sql(count: usize) -> String {
    let list = (0..count).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
    let clause = if count == 0 { String::new() } else { format!(" OR transaction_id IN ({list})") };
    format!("SELECT line_id, transaction_id FROM bank_matches WHERE tenant_id = $1 AND (line_id = $2{clause}) ORDER BY line_id, transaction_id")
}

fn sorted(mut links: Vec<(String, String)>) -> Vec<(String, String)> {
    links.sort();
    links.dedup();
    links
}

impl Store {
    /// Stores a parsed statement with its lines, automatic matches and the
    /// request's idempotency record, in one transaction. A statement whose
    /// fingerprint the tenant already has is not stored again.
    pub async fn insert_bank_statement(
        &self,
        statement: StatementRecord,
        lines: Vec<LineRecord>,
        matches: Vec<MatchRecord>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<InsertStatement, StoreError> {
        let (tenant, fingerprint) = (statement.tenant, statement.fingerprint.clone());
        let result = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    let st = &statement;
                    tx.execute(
                        &sq(INSERT_STATEMENT),
                        rusqlite::params![
                            st.id,
                            st.tenant.0,
                            st.fingerprint,
                            st.format,
                            st.ledger_account_id,
                            st.bank_statement_id,
                            st.account_number,
                            st.currency,
                            st.opening_balance,
                            st.closing_balance,
                            st.period_start,
                            st.period_end,
                            st.line_count,
                            st.total_credits,
                            st.total_debits,
                            st.imported_by,
                            st.created_at
                        ],
                    )?;
                    let mut insert_line = tx.prepare(&sq(INSERT_LINE))?;
                    for l in &lines {
                        insert_line.execute(rusqlite::params![
                            l.id,
                            st.tenant.0,
                            l.statement_id,
                            l.source_position,
                            l.booking_date,
                            l.value_date,
                            l.amount,
                            l.currency,
                            l.direction,
                            l.end_to_end_id,
                            l.bank_reference,
                            l.customer_reference,
                            l.counterparty_name,
                            l.counterparty_account,
                            l.description,
                            l.status,
                            l.created_at
                        ])?;
                    }
                    let mut insert_match = tx.prepare(&sq(INSERT_MATCH))?;
                    for m in &matches {
                        insert_match.execute(rusqlite::params![
                            m.id,
                            st.tenant.0,
                            m.line_id,
                            m.transaction_id,
                            m.confidence,
                            m.method,
                            m.rule,
                            m.reason,
                            m.actor,
                            m.created_at
                        ])?;
                    }
                    if let Some(r) = &idempotency {
                        tx.execute(
                            &sq(INSERT_IDEMPOTENCY),
                            rusqlite::params![r.tenant.0, r.key, r.fingerprint, r.response.status, r.response.body, r.created_at.micros()],
                        )?;
                    }
                    Ok(())
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                let st = &statement;
                tx.execute(
                    INSERT_STATEMENT,
                    &[
                        &st.id,
                        &st.tenant.0,
                        &st.fingerprint,
                        &st.format,
                        &st.ledger_account_id,
                        &st.bank_statement_id,
                        &st.account_number,
                        &st.currency,
                        &st.opening_balance,
                        &st.closing_balance,
                        &st.period_start,
                        &st.period_end,
                        &st.line_count,
                        &st.total_credits,
                        &st.total_debits,
                        &st.imported_by,
                        &st.created_at,
                    ],
                )
                .await?;
                let insert_line = tx.prepare(INSERT_LINE).await?;
                for l in &lines {
                    tx.execute(
                        &insert_line,
                        &[
                            &l.id,
                            &st.tenant.0,
                            &l.statement_id,
                            &l.source_position,
                            &l.booking_date,
                            &l.value_date,
                            &l.amount,
                            &l.currency,
                            &l.direction,
                            &l.end_to_end_id,
                            &l.bank_reference,
                            &l.customer_reference,
                            &l.counterparty_name,
                            &l.counterparty_account,
                            &l.description,
                            &l.status,
                            &l.created_at,
                        ],
                    )
                    .await?;
                }
                let insert_match = tx.prepare(INSERT_MATCH).await?;
                for m in &matches {
                    tx.execute(
                        &insert_match,
                        &[&m.id, &st.tenant.0, &m.line_id, &m.transaction_id, &m.confidence, &m.method, &m.rule, &m.reason, &m.actor, &m.created_at],
                    )
                    .await?;
                }
                if let Some(r) = &idempotency {
                    tx.execute(
                        INSERT_IDEMPOTENCY,
                        &[&r.tenant.0, &r.key, &r.fingerprint, &i64::from(r.response.status), &r.response.body, &r.created_at.micros()],
                    )
                    .await?;
                }
                tx.commit().await.map_err(StoreError::from)
            }
        };
        match result {
            Ok(()) => Ok(InsertStatement::Created),
            // Another import of the same content won the unique key.
            Err(StoreError::Conflict(cause)) => match self.find_bank_statement_by_fingerprint(tenant, fingerprint).await? {
                Some(existing) => Ok(InsertStatement::Duplicate(Box::new(existing))),
                None => Err(StoreError::Conflict(cause)),
            },
            Err(e) => Err(e),
        }
    }

    pub async fn find_bank_statement_by_fingerprint(&self, tenant: TenantId, fingerprint: String) -> Result<Option<StatementRecord>, StoreError> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements s WHERE s.tenant_id = $1 AND s.fingerprint = $2");
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| Ok(c.prepare_cached(&sq(&sql))?.query_row(rusqlite::params![tenant.0, fingerprint], sqlite_statement).optional()?)).await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                client.query_opt(&sql, &[&tenant.0, &fingerprint]).await?.as_ref().map(pg_statement).transpose()
            }
        }
    }

    /// The tenant's statement `id`; another tenant's is `None`.
    pub async fn get_bank_statement(&self, tenant: TenantId, id: String) -> Result<Option<StatementRecord>, StoreError> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements s WHERE s.tenant_id = $1 AND s.id = $2");
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| Ok(c.prepare_cached(&sq(&sql))?.query_row(rusqlite::params![tenant.0, id], sqlite_statement).optional()?)).await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                client.query_opt(&sql, &[&tenant.0, &id]).await?.as_ref().map(pg_statement).transpose()
            }
        }
    }

    /// The tenant's statements, newest first.
    pub async fn list_bank_statements(&self, tenant: TenantId, page: PageRequest) -> Result<Page<StatementRecord>, StoreError> {
        let (descending, bound) = page.cursor.keyset_start(false);
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let limit = i64::from(page.limit) + 1;
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements s WHERE s.tenant_id = $1 AND s.id {cmp} $2 ORDER BY s.id {order} LIMIT $3");
        let rows = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&sq(&sql))?;
                    let rows = stmt.query_map(rusqlite::params![tenant.0, bound, limit], sqlite_statement)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                client.query(&sql, &[&tenant.0, &bound, &limit]).await?.iter().map(pg_statement).collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(Page::from_rows(rows, &page))
    }

    /// A page of a statement's lines in file order, each with its matches.
    pub async fn list_bank_statement_lines(&self, tenant: TenantId, statement_id: String, page: PageRequest) -> Result<Page<LineRecord>, StoreError> {
        // File order (ascending ids) from the top; `ending_before` walks back.
        let (descending, bound) = match &page.cursor {
            Cursor::Start => (false, String::new()),
            Cursor::After(id) => (false, id.clone()),
            Cursor::Before(id) => (true, id.clone()),
        };
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let limit = i64::from(page.limit) + 1;
        let sql =
            format!("SELECT {LINE_COLUMNS} FROM bank_statement_lines WHERE tenant_id = $1 AND statement_id = $2 AND id {cmp} $3 ORDER BY id {order} LIMIT $4");
        let rows = self.read_lines(sql, vec![Param::Int(tenant.0), Param::Text(statement_id), Param::Text(bound), Param::Int(limit)]).await?;
        let rows = self.with_matches(tenant, rows).await?;
        Ok(Page::from_rows(rows, &page))
    }

    /// The tenant's line `id` with its matches and its statement's ledger account.
    pub async fn get_bank_statement_line(&self, tenant: TenantId, id: String) -> Result<Option<(LineRecord, String)>, StoreError> {
        let sql = format!("SELECT {LINE_COLUMNS} FROM bank_statement_lines WHERE tenant_id = $1 AND id = $2");
        let rows = self.read_lines(sql, vec![Param::Int(tenant.0), Param::Text(id)]).await?;
        let Some(line) = self.with_matches(tenant, rows).await?.into_iter().next() else { return Ok(None) };
        let statement = self.get_bank_statement(tenant, line.statement_id.clone()).await?;
        Ok(statement.map(|s| (line, s.ledger_account_id)))
    }

    /// Every line of a statement, in file order, with matches (at most [`MAX_REPORT_LINES`]).
    pub async fn bank_statement_lines_all(&self, tenant: TenantId, statement_id: String) -> Result<Vec<LineRecord>, StoreError> {
        let sql = format!("SELECT {LINE_COLUMNS} FROM bank_statement_lines WHERE tenant_id = $1 AND statement_id = $2 ORDER BY id LIMIT $3");
        let rows = self.read_lines(sql, vec![Param::Int(tenant.0), Param::Text(statement_id), Param::Int(MAX_REPORT_LINES)]).await?;
        self.with_matches(tenant, rows).await
    }

    /// The tenant's lines booked on `date` (`YYYY-MM-DD`), with matches (at most [`MAX_REPORT_LINES`]).
    pub async fn bank_statement_lines_on(&self, tenant: TenantId, date: String) -> Result<Vec<LineRecord>, StoreError> {
        let sql = format!("SELECT {LINE_COLUMNS} FROM bank_statement_lines WHERE tenant_id = $1 AND booking_date = $2 ORDER BY id LIMIT $3");
        let rows = self.read_lines(sql, vec![Param::Int(tenant.0), Param::Text(date), Param::Int(MAX_REPORT_LINES)]).await?;
        self.with_matches(tenant, rows).await
    }

    /// Of `ids`, the transactions already linked to some line.
    pub async fn matched_transaction_ids(&self, tenant: TenantId, ids: Vec<String>) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(500) {
            let list = crate::customers::placeholders(2, chunk.len());
            let sql = format!("SELECT DISTINCT transaction_id FROM bank_matches WHERE tenant_id = $1 AND transaction_id IN ({list})");
            let chunk = chunk.to_vec();
            let rows: Vec<String> = match self {
                Store::Sqlite(s) => {
                    s.read(move |c| {
                        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&tenant.0];
                        params.extend(chunk.iter().map(|t| t as &dyn rusqlite::ToSql));
                        let mut stmt = c.prepare(&sq(&sql))?;
                        let rows = stmt.query_map(params.as_slice(), |r| r.get::<_, String>(0))?;
                        Ok(rows.collect::<Result<Vec<_>, _>>()?)
                    })
                    .await?
                }
                Store::Postgres(p) => {
                    let client = p.pool().get().await?;
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant.0];
                    params.extend(chunk.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
                    client.query(&sql, &params).await?.iter().map(|r| pg(r, 0)).collect::<Result<Vec<String>, _>>()?
                }
            };
            found.extend(rows);
        }
        Ok(found)
    }

    /// The links touching `line_id` or any of `transaction_ids`, sorted.
    pub async fn bank_links(&self, tenant: TenantId, line_id: String, transaction_ids: Vec<String>) -> Result<Vec<(String, String)>, StoreError> {
        let sql = links_sql(transaction_ids.len());
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&tenant.0, &line_id];
                    params.extend(transaction_ids.iter().map(|t| t as &dyn rusqlite::ToSql));
                    let mut stmt = c.prepare(&sq(&sql))?;
                    let rows = stmt.query_map(params.as_slice(), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                    Ok(sorted(rows.collect::<Result<Vec<_>, _>>()?))
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant.0, &line_id];
                params.extend(transaction_ids.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
                let rows = client.query(&sql, &params).await?;
                Ok(sorted(rows.iter().map(|r| Ok((pg(r, 0)?, pg(r, 1)?))).collect::<Result<Vec<_>, StoreError>>()?))
            }
        }
    }

    /// The lines linked to any of `transaction_ids` (for recomputing statuses).
    pub async fn bank_lines_linked_to(&self, tenant: TenantId, transaction_ids: Vec<String>) -> Result<Vec<LineRecord>, StoreError> {
        if transaction_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = (0..transaction_ids.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {LINE_COLUMNS} FROM bank_statement_lines WHERE tenant_id = $1 AND id IN (SELECT line_id FROM bank_matches WHERE transaction_id IN ({list})) ORDER BY id"
        );
        let mut params = vec![Param::Int(tenant.0)];
        params.extend(transaction_ids.into_iter().map(Param::Text));
        let rows = self.read_lines(sql, params).await?;
        self.with_matches(tenant, rows).await
    }

    /// Applies a manual action if the links are still what the caller read:
    /// `Ok(false)` (nothing written) when they changed meanwhile.
    pub async fn apply_bank_manual_change(&self, change: ManualChange, idempotency: Option<IdempotencyRecord>) -> Result<bool, StoreError> {
        let tenant = change.tenant;
        let sql = links_sql(change.transaction_ids.len());
        let expected = sorted(change.expected_links.clone());
        let audit_transactions = change.audit.transaction_ids.join(",");
        match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    let found = {
                        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&tenant.0, &change.line_id];
                        params.extend(change.transaction_ids.iter().map(|t| t as &dyn rusqlite::ToSql));
                        let mut stmt = tx.prepare(&sq(&sql))?;
                        let rows = stmt.query_map(params.as_slice(), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                        sorted(rows.collect::<Result<Vec<_>, _>>()?)
                    };
                    if found != expected {
                        return Ok(false);
                    }
                    for (line, txn) in &change.delete {
                        tx.execute(
                            "DELETE FROM bank_matches WHERE tenant_id = ?1 AND line_id = ?2 AND transaction_id = ?3",
                            rusqlite::params![tenant.0, line, txn],
                        )?;
                    }
                    for m in &change.insert {
                        tx.execute(
                            &sq(INSERT_MATCH),
                            rusqlite::params![m.id, tenant.0, m.line_id, m.transaction_id, m.confidence, m.method, m.rule, m.reason, m.actor, m.created_at],
                        )?;
                    }
                    for (line, status) in &change.statuses {
                        tx.execute("UPDATE bank_statement_lines SET status = ?3 WHERE tenant_id = ?1 AND id = ?2", rusqlite::params![tenant.0, line, status])?;
                    }
                    let a = &change.audit;
                    tx.execute(
                        &sq(INSERT_AUDIT),
                        rusqlite::params![a.id, tenant.0, a.line_id, a.action, audit_transactions, a.reason, a.actor, a.request_id, a.created_at],
                    )?;
                    if let Some(r) = &idempotency {
                        tx.execute(
                            &sq(INSERT_IDEMPOTENCY),
                            rusqlite::params![r.tenant.0, r.key, r.fingerprint, r.response.status, r.response.body, r.created_at.micros()],
                        )?;
                    }
                    Ok(true)
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(PG_LOCK_BASE | (tenant.0 & 0xff_ffff))]).await?;
                let found = {
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant.0, &change.line_id];
                    params.extend(change.transaction_ids.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
                    let rows = tx.query(&sql, &params).await?;
                    sorted(rows.iter().map(|r| Ok((pg(r, 0)?, pg(r, 1)?))).collect::<Result<Vec<_>, StoreError>>()?)
                };
                if found != expected {
                    return Ok(false);
                }
                for (line, txn) in &change.delete {
                    tx.execute("DELETE FROM bank_matches WHERE tenant_id = $1 AND line_id = $2 AND transaction_id = $3", &[&tenant.0, line, txn]).await?;
                }
                for m in &change.insert {
                    tx.execute(
                        INSERT_MATCH,
                        &[&m.id, &tenant.0, &m.line_id, &m.transaction_id, &m.confidence, &m.method, &m.rule, &m.reason, &m.actor, &m.created_at],
                    )
                    .await?;
                }
                for (line, status) in &change.statuses {
                    tx.execute("UPDATE bank_statement_lines SET status = $3 WHERE tenant_id = $1 AND id = $2", &[&tenant.0, line, status]).await?;
                }
                let a = &change.audit;
                tx.execute(INSERT_AUDIT, &[&a.id, &tenant.0, &a.line_id, &a.action, &audit_transactions, &a.reason, &a.actor, &a.request_id, &a.created_at])
                    .await?;
                if let Some(r) = &idempotency {
                    tx.execute(
                        INSERT_IDEMPOTENCY,
                        &[&r.tenant.0, &r.key, &r.fingerprint, &i64::from(r.response.status), &r.response.body, &r.created_at.micros()],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }
        }
    }

    /// The manual actions on a line, oldest first.
    pub async fn bank_line_audit(&self, tenant: TenantId, line_id: String) -> Result<Vec<AuditRecord>, StoreError> {
        const SQL: &str = "SELECT id, line_id, action, transaction_ids, reason, actor, request_id, created_at FROM bank_reconciliation_audit \
            WHERE tenant_id = $1 AND line_id = $2 ORDER BY id";
        type Raw = (String, String, String, String, String, String, Option<String>, i64);
        let rows: Vec<Raw> = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&sq(SQL))?;
                    let rows = stmt.query_map(rusqlite::params![tenant.0, line_id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
                    })?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let rows = client.query(SQL, &[&tenant.0, &line_id]).await?;
                rows.iter()
                    .map(|r| Ok((pg(r, 0)?, pg(r, 1)?, pg(r, 2)?, pg(r, 3)?, pg(r, 4)?, pg(r, 5)?, pg(r, 6)?, pg(r, 7)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(id, line_id, action, txns, reason, actor, request_id, created_at)| AuditRecord {
                id,
                line_id,
                action,
                transaction_ids: txns.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
                reason,
                actor,
                request_id,
                created_at,
            })
            .collect())
    }

    async fn read_lines(&self, sql: String, params: Vec<Param>) -> Result<Vec<LineRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let values: Vec<&dyn rusqlite::ToSql> = params.iter().map(Param::sqlite).collect();
                    let mut stmt = c.prepare_cached(&sq(&sql))?;
                    let rows = stmt.query_map(values.as_slice(), sqlite_line)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(Param::pg).collect();
                client.query(&sql, &values).await?.iter().map(pg_line).collect()
            }
        }
    }

    async fn with_matches(&self, tenant: TenantId, mut lines: Vec<LineRecord>) -> Result<Vec<LineRecord>, StoreError> {
        if lines.is_empty() {
            return Ok(lines);
        }
        let ids: Vec<String> = lines.iter().map(|l| l.id.clone()).collect();
        let mut by_line: HashMap<String, Vec<MatchRecord>> = HashMap::new();
        for chunk in ids.chunks(500) {
            let list = crate::customers::placeholders(2, chunk.len());
            let sql = format!("SELECT {MATCH_COLUMNS} FROM bank_matches WHERE tenant_id = $1 AND line_id IN ({list}) ORDER BY id");
            let chunk = chunk.to_vec();
            let found: Vec<MatchRecord> = match self {
                Store::Sqlite(s) => {
                    s.read(move |c| {
                        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&tenant.0];
                        params.extend(chunk.iter().map(|t| t as &dyn rusqlite::ToSql));
                        let mut stmt = c.prepare(&sq(&sql))?;
                        let rows = stmt.query_map(params.as_slice(), sqlite_match)?;
                        Ok(rows.collect::<Result<Vec<_>, _>>()?)
                    })
                    .await?
                }
                Store::Postgres(p) => {
                    let client = p.pool().get().await?;
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant.0];
                    params.extend(chunk.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)));
                    client.query(&sql, &params).await?.iter().map(pg_match).collect::<Result<Vec<_>, _>>()?
                }
            };
            for m in found {
                by_line.entry(m.line_id.clone()).or_default().push(m);
            }
        }
        for l in &mut lines {
            l.matches = by_line.remove(&l.id).unwrap_or_default();
        }
        Ok(lines)
    }
}

/// A query parameter either backend can bind.
enum Param {
    Int(i64),
    Text(String),
}

impl Param {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        match self {
            Param::Int(v) => v,
            Param::Text(v) => v,
        }
    }

    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Int(v) => v,
            Param::Text(v) => v,
        }
    }
}
