//! The ACH rail's rows: counterparties, bank accounts, payments and NACHA
//! files (migration 0013), the sandbox's test clocks, the return-rate
//! monitor's memory and dishonored returns (0016), the compliance reviews
//! a return opens (0018), the prenotes whose verification is pending (0019),
//! the automatic retries that are due (0020), and the payments whose ledger
//! effect waits for the repair sweep (0022).
//!
//! Each row holds its object whole as JSON (`data`; the API crate owns the
//! shape) beside the columns that lookups and state changes need: `status`,
//! `lookup` (a bank account's counterparty, a payment's trace number, a
//! file's window), `external_id` (unique per tenant) and `version`. Why JSON:
//! these objects are read and written whole, never aggregated in SQL, and a
//! rail's object grows fields often; one shape for four tables keeps the two
//! backends' code to one set of statements.
//!
//! Like `bank_recon` and `customers`, these rows are bookkeeping about money
//! in flight, not ledger state: the ledger effect of a payment is an ordinary
//! ledger transaction that the caller submits to the engine. Writes are
//! [`AchWrite`]s applied in one database transaction: an update applies only
//! to the version its caller read, so two servers changing one payment cannot
//! both win; a lost race is [`ApplyError::Stale`], and nothing of the
//! transaction is kept.

use crate::customers::AuditRecord;
use crate::error::StoreError;
use crate::events::NewEvent;
use crate::records::{IdempotencyRecord, Page, PageRequest};
use crate::store::Store;
use settle_core::clock::Timestamp;
use settle_core::tenancy::TenantId;

/// The tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AchTable {
    Counterparties,
    BankAccounts,
    Payments,
    Files,
    /// Sandbox test clocks: the time that the payments created with one follow.
    TestClocks,
    /// The return-rate monitor's memory: one row per tenant.
    ReturnRateAlerts,
    /// Dishonored returns waiting for (or sent in) a file: one per payment.
    DishonoredReturns,
    /// Compliance reviews the rail opens on a return (R16, unauthorized
    /// debits); `lookup` is the customer, when there is one (0018).
    ComplianceReviews,
    /// Prenotes (bank account verifications): one per prenote payment,
    /// `pending` until its verification is decided; `lookup` is the bank account (0019).
    Prenotes,
    /// Automatic retries that are due or will be: one per returned payment
    /// with `retry_due_at`, `due` until retried or refused (0020).
    Retries,
    /// Ledger effects refused after a payment's move: one per payment with
    /// a `ledger_issue`, `open` until the repair sweep applied it (`repaired`) (0022).
    LedgerRepairs,
}

impl AchTable {
    fn name(self) -> &'static str {
        match self {
            AchTable::Counterparties => "ach_counterparties",
            AchTable::BankAccounts => "ach_bank_accounts",
            AchTable::Payments => "ach_payments",
            AchTable::Files => "ach_files",
            AchTable::TestClocks => "test_clocks",
            AchTable::ReturnRateAlerts => "ach_return_rate_alerts",
            AchTable::DishonoredReturns => "ach_dishonored_returns",
            AchTable::ComplianceReviews => "compliance_reviews",
            AchTable::Prenotes => "ach_prenotes",
            AchTable::Retries => "ach_retries",
            AchTable::LedgerRepairs => "ach_ledger_repairs",
        }
    }
}

/// One row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AchRow {
    pub id: String,
    pub tenant: TenantId,
    pub status: String,
    pub lookup: Option<String>,
    pub external_id: Option<String>,
    pub version: i64,
    pub data: String,
    pub created_at: i64,
}

/// One write of an [`Store::ach_apply`] transaction.
#[derive(Clone, Debug)]
pub enum AchWrite {
    Insert(AchTable, AchRow),
    /// Replaces the row whose version is `row.version - 1`.
    Update(AchTable, AchRow),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A row changed since it was read, or a unique key (external id, a
    /// file's window) is taken: nothing was written.
    #[error("the row changed since it was read, or its unique key is taken")]
    Stale,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const COLUMNS: &str = "id, tenant_id, status, lookup, external_id, version, data, created_at";
const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

fn sq(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AchRow> {
    Ok(AchRow {
        id: r.get(0)?,
        tenant: TenantId(r.get(1)?),
        status: r.get(2)?,
        lookup: r.get(3)?,
        external_id: r.get(4)?,
        version: r.get(5)?,
        data: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn pg_row(r: &tokio_postgres::Row) -> Result<AchRow, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(format!("ach row: {e}"));
    Ok(AchRow {
        id: r.try_get(0).map_err(get)?,
        tenant: TenantId(r.try_get(1).map_err(get)?),
        status: r.try_get(2).map_err(get)?,
        lookup: r.try_get(3).map_err(get)?,
        external_id: r.try_get(4).map_err(get)?,
        version: r.try_get(5).map_err(get)?,
        data: r.try_get(6).map_err(get)?,
        created_at: r.try_get(7).map_err(get)?,
    })
}

fn insert_sql(table: AchTable) -> String {
    format!("INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", table.name())
}

fn update_sql(table: AchTable) -> String {
    format!("UPDATE {} SET status = $3, lookup = $4, external_id = $5, version = $6, data = $7 WHERE tenant_id = $2 AND id = $1 AND version = $8", table.name())
}

impl Store {
    /// Applies `writes`, stores `events` (with their webhook deliveries, as
    /// the projector does) and `idempotency`, in one transaction, or nothing:
    /// no payment move without its event, no event without its move.
    pub async fn ach_apply(
        &self,
        writes: Vec<AchWrite>,
        events: Vec<NewEvent>,
        idempotency: Option<IdempotencyRecord>,
        now: Timestamp,
    ) -> Result<(), ApplyError> {
        self.ach_apply_audited(writes, events, Vec::new(), idempotency, now).await
    }

    /// [`Store::ach_apply`] that also appends `audit` to the compliance audit
    /// chain in the same transaction: the rail's automatic compliance actions
    /// (a frozen bank account, an opened review) are never recorded without
    /// their audit record, nor audited without having happened.
    pub async fn ach_apply_audited(
        &self,
        writes: Vec<AchWrite>,
        events: Vec<NewEvent>,
        audit: Vec<AuditRecord>,
        idempotency: Option<IdempotencyRecord>,
        now: Timestamp,
    ) -> Result<(), ApplyError> {
        let result = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    for write in &writes {
                        let (table, row, is_insert) = match write {
                            AchWrite::Insert(t, r) => (*t, r, true),
                            AchWrite::Update(t, r) => (*t, r, false),
                        };
                        let changed = if is_insert {
                            tx.execute(
                                &sq(&insert_sql(table)),
                                rusqlite::params![row.id, row.tenant.0, row.status, row.lookup, row.external_id, row.version, row.data, row.created_at],
                            )?
                        } else {
                            tx.execute(
                                &sq(&update_sql(table)),
                                rusqlite::params![row.id, row.tenant.0, row.status, row.lookup, row.external_id, row.version, row.data, row.version - 1],
                            )?
                        };
                        if changed != 1 {
                            return Err(StoreError::Conflict(String::from("stale ach row")));
                        }
                    }
                    crate::events::sqlite_write_events(tx, &events, now)?;
                    crate::customers::sqlite_append_audit(tx, &audit)?;
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
                async {
                    let mut client = p.pool().get().await?;
                    let tx = client.transaction().await?;
                    if !audit.is_empty() {
                        crate::customers::pg_lock_audit_chains(&tx, audit.iter().map(|a| a.tenant.0).collect()).await?;
                    }
                    for write in &writes {
                        let (table, row, is_insert) = match write {
                            AchWrite::Insert(t, r) => (*t, r, true),
                            AchWrite::Update(t, r) => (*t, r, false),
                        };
                        let changed = if is_insert {
                            tx.execute(
                                &insert_sql(table),
                                &[&row.id, &row.tenant.0, &row.status, &row.lookup, &row.external_id, &row.version, &row.data, &row.created_at],
                            )
                            .await?
                        } else {
                            let previous = row.version - 1;
                            tx.execute(
                                &update_sql(table),
                                &[&row.id, &row.tenant.0, &row.status, &row.lookup, &row.external_id, &row.version, &row.data, &previous],
                            )
                            .await?
                        };
                        if changed != 1 {
                            return Err(StoreError::Conflict(String::from("stale ach row")));
                        }
                    }
                    crate::events::pg_write_events(&tx, &events, now).await?;
                    crate::customers::pg_append_audit(&tx, &audit).await?;
                    if let Some(r) = &idempotency {
                        tx.execute(
                            INSERT_IDEMPOTENCY,
                            &[&r.tenant.0, &r.key, &r.fingerprint, &i64::from(r.response.status), &r.response.body, &r.created_at.micros()],
                        )
                        .await?;
                    }
                    tx.commit().await.map_err(StoreError::from)
                }
                .await
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(ApplyError::Stale),
            Err(e) => Err(ApplyError::Store(e)),
        }
    }

    async fn ach_query(&self, sql: String, tenant: Option<i64>, text: Vec<String>, limit: i64) -> Result<Vec<AchRow>, StoreError> {
        // Parameters: $1 tenant (when given), then `text`, then the limit.
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
                    if let Some(t) = tenant {
                        params.push(Box::new(t));
                    }
                    for t in text {
                        params.push(Box::new(t));
                    }
                    params.push(Box::new(limit));
                    let mut stmt = c.prepare_cached(&sq(&sql))?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter().map(|p| p.as_ref())), sqlite_row)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
                if let Some(t) = &tenant {
                    params.push(t);
                }
                for t in &text {
                    params.push(t);
                }
                params.push(&limit);
                client.query(&sql, &params).await?.iter().map(pg_row).collect()
            }
        }
    }

    /// The tenant's row `id`; another tenant's is `None`.
    pub async fn ach_get(&self, table: AchTable, tenant: TenantId, id: String) -> Result<Option<AchRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 AND id = $2 LIMIT $3", table.name());
        Ok(self.ach_query(sql, Some(tenant.0), vec![id], 1).await?.into_iter().next())
    }

    /// The tenant's row with this external id.
    pub async fn ach_get_by_external_id(&self, table: AchTable, tenant: TenantId, external_id: String) -> Result<Option<AchRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 AND external_id = $2 LIMIT $3", table.name());
        Ok(self.ach_query(sql, Some(tenant.0), vec![external_id], 1).await?.into_iter().next())
    }

    /// The tenant's rows with this lookup value, newest first, up to `limit`.
    pub async fn ach_find(&self, table: AchTable, tenant: TenantId, lookup: String, limit: i64) -> Result<Vec<AchRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 AND lookup = $2 ORDER BY id DESC LIMIT $3", table.name());
        self.ach_query(sql, Some(tenant.0), vec![lookup], limit).await
    }

    /// The tenant's rows in `status`, oldest first, up to `limit`.
    pub async fn ach_in_status(&self, table: AchTable, tenant: TenantId, status: &str, limit: i64) -> Result<Vec<AchRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE status = $2 AND tenant_id = $1 ORDER BY id ASC LIMIT $3", table.name());
        self.ach_query(sql, Some(tenant.0), vec![status.to_string()], limit).await
    }

    /// The tenant's rows in `status` whose `lookup` (an RFC 3339 time in one
    /// fixed format, so text order is time order) is none or at most `due`,
    /// oldest first, up to `limit`: a work list's due rows, so rows waiting
    /// out a backoff never crowd the due ones out of a bounded read.
    pub async fn ach_due(&self, table: AchTable, tenant: TenantId, status: &str, due: String, limit: i64) -> Result<Vec<AchRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE status = $2 AND tenant_id = $1 AND (lookup IS NULL OR lookup <= $3) ORDER BY id ASC LIMIT $4",
            table.name()
        );
        self.ach_query(sql, Some(tenant.0), vec![status.to_string(), due], limit).await
    }

    /// The tenant's rows in `status`, newest first, up to `limit`.
    pub async fn ach_in_status_newest(&self, table: AchTable, tenant: TenantId, status: &str, limit: i64) -> Result<Vec<AchRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE status = $2 AND tenant_id = $1 ORDER BY id DESC LIMIT $3", table.name());
        self.ach_query(sql, Some(tenant.0), vec![status.to_string()], limit).await
    }

    /// Tenants with at least one row in `status` (for the scheduler), up to `limit`.
    pub async fn ach_tenants_in_status(&self, table: AchTable, status: &str, limit: i64) -> Result<Vec<TenantId>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM {} WHERE id IN (SELECT MIN(id) FROM {} WHERE status = $1 GROUP BY tenant_id) LIMIT $2", table.name(), table.name());
        let rows = self.ach_query(sql, None, vec![status.to_string()], limit).await?;
        Ok(rows.into_iter().map(|r| r.tenant).collect())
    }

    /// A page of the tenant's rows, newest first, optionally in one status.
    pub async fn ach_list(&self, table: AchTable, tenant: TenantId, status: Option<String>, page: PageRequest) -> Result<Page<AchRow>, StoreError> {
        let (descending, bound) = page.cursor.keyset_start(false);
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let limit = i64::from(page.limit) + 1;
        let (filter, text) = match status {
            Some(s) => ("AND status = $3", vec![bound, s]),
            None => ("", vec![bound]),
        };
        let limit_param = if text.len() == 2 { "$4" } else { "$3" };
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 AND id {cmp} $2 {filter} ORDER BY id {order} LIMIT {limit_param}", table.name());
        let rows = self.ach_query(sql, Some(tenant.0), text, limit).await?;
        Ok(Page::from_rows(rows, &page))
    }
}
