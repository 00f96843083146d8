//! Customers and compliance records (issue 6): customers (their personal
//! fields sealed, see `settle-api`'s `customers::keyring`), wrapped data
//! keys, KYC history, consents and their revocations, sanctions list
//! snapshots, screenings, and the hash-chained compliance audit trail.
//!
//! These rows are not ledger state: they are written here directly (like
//! `bank_recon`), never through the engine. Every write is one database
//! transaction that also appends its audit records (each hash-chained to
//! the tenant's previous one) and the request's idempotency record. On
//! PostgreSQL a transaction-scoped advisory lock per tenant serializes the
//! chain's appends across servers; SQLite's write lock does the same.
//!
//! SQL is written once with `$n` parameters and run on either backend by
//! a small executor ([`Val`], [`Row`], [`Stmt`]).

use crate::error::StoreError;
use crate::records::{Cursor, CustomerLink, IdempotencyRecord, Page, PageRequest};
use crate::store::Store;
use settle_core::tenancy::TenantId;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Key space of the advisory lock serializing a tenant's compliance writes
/// on PostgreSQL ("cust" in the high bytes, the tenant in the low ones).
const PG_LOCK_BASE: i64 = 0x6375_7374_0000_0000;
/// Marks a write whose precondition failed (rolled back, reported as `Ok(false)`).
const PRECONDITION_FAILED: &str = "compliance write precondition failed";
/// Hash of the (absent) record before a tenant's first audit record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A bound value or a read column, typed so PostgreSQL knows NULL's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Val {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        match self {
            Val::Int(v) => v,
            Val::Text(v) => v,
            Val::Bytes(v) => v,
        }
    }

    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Val::Int(v) => v,
            Val::Text(v) => v,
            Val::Bytes(v) => v,
        }
    }
}

fn int(v: i64) -> Val {
    Val::Int(Some(v))
}
fn text(v: impl Into<String>) -> Val {
    Val::Text(Some(v.into()))
}
fn opt_text(v: Option<String>) -> Val {
    Val::Text(v)
}
fn opt_int(v: Option<i64>) -> Val {
    Val::Int(v)
}

/// A row read by the executor.
#[derive(Clone)]
pub struct Row(Vec<Val>);

impl Row {
    fn corrupt(i: usize) -> StoreError {
        StoreError::Corrupt(format!("compliance column {i} has an unexpected type"))
    }

    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| Row::corrupt(i))
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.0.get(i) {
            Some(Val::Text(v)) => Ok(v.clone()),
            Some(Val::Int(None) | Val::Bytes(None)) => Ok(None),
            _ => Err(Row::corrupt(i)),
        }
    }

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| Row::corrupt(i))
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.0.get(i) {
            Some(Val::Int(v)) => Ok(*v),
            Some(Val::Text(None) | Val::Bytes(None)) => Ok(None),
            _ => Err(Row::corrupt(i)),
        }
    }

    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.0.get(i) {
            Some(Val::Bytes(v)) => Ok(v.clone()),
            Some(Val::Int(None) | Val::Text(None)) => Ok(None),
            _ => Err(Row::corrupt(i)),
        }
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let n = r.as_ref().column_count();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Val::Int(None),
            ValueRef::Integer(v) => Val::Int(Some(v)),
            ValueRef::Real(v) => Val::Int(Some(v as i64)),
            ValueRef::Text(t) => Val::Text(Some(String::from_utf8_lossy(t).into_owned())),
            ValueRef::Blob(b) => Val::Bytes(Some(b.to_vec())),
        });
    }
    Ok(Row(out))
}

fn pg_row(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    use tokio_postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| StoreError::Corrupt(format!("compliance column {i}: {e}"));
        out.push(match *c.type_() {
            Type::INT8 => Val::Int(r.try_get::<_, Option<i64>>(i).map_err(bad)?),
            Type::INT4 => Val::Int(r.try_get::<_, Option<i32>>(i).map_err(bad)?.map(i64::from)),
            Type::BYTEA => Val::Bytes(r.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?),
            _ => Val::Text(r.try_get::<_, Option<String>>(i).map_err(bad)?),
        });
    }
    Ok(Row(out))
}

/// `$first, $first+1, …` for an `IN (…)` list of `n` parameters.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn sq(sql: &str) -> String {
    sql.replace('$', "?")
}

/// One statement of a write; `expect_rows` makes it a precondition.
pub struct Stmt {
    sql: String,
    params: Vec<Val>,
    expect_rows: Option<u64>,
    /// The backend it runs on (`None`: both).
    only: Option<Dialect>,
}

/// A backend, for the statements only one of them needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

fn stmt(sql: &str, params: Vec<Val>) -> Stmt {
    Stmt { sql: sql.to_owned(), params, expect_rows: None, only: None }
}

fn guarded(sql: &str, params: Vec<Val>, rows: u64) -> Stmt {
    Stmt { sql: sql.to_owned(), params, expect_rows: Some(rows), only: None }
}

/// What a write that may change which accounts are blocked (`customer_blocked`)
/// runs first, so that the engine's check at write time cannot miss it.
/// PostgreSQL: lock `accounts` rows, in id order like the engine, so the write
/// and any batch touching them run one after the other and the batch reads
/// the block after its lock (see `PgWriter::blocked_accounts`). SQLite (one
/// writer at a time): bump the generation the engine compares every batch.
fn blocking_change(lock_accounts: &str, params: Vec<Val>) -> Vec<Stmt> {
    vec![
        Stmt { sql: lock_accounts.to_owned(), params, expect_rows: None, only: Some(Dialect::Postgres) },
        Stmt { sql: crate::sqlite::BLOCKED_BUMP.to_owned(), params: Vec::new(), expect_rows: None, only: Some(Dialect::Sqlite) },
    ]
}

/// [`blocking_change`] for a change of a customer's screening status: locks every account of the customer.
fn customer_blocking_change(tenant: TenantId, customer_id: &str) -> Vec<Stmt> {
    blocking_change(
        "SELECT id FROM accounts WHERE id IN (SELECT account_id FROM customer_accounts WHERE tenant_id = $1 AND customer_id = $2) ORDER BY id FOR UPDATE",
        vec![int(tenant.0), text(customer_id)],
    )
}

/// An audit record as the caller makes it; the store adds its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: String,
    pub tenant: TenantId,
    /// The API key id, `cli`, `system` or `sandbox`.
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// Names of the fields that changed, never their values.
    pub changed_fields: Vec<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The address of the API client that made the request, when there was one.
    pub client_ip: Option<String>,
    pub created_at: i64,
}

/// An audit record as stored, with its place in the tenant's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAudit {
    pub record: AuditRecord,
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an audit record: SHA-256 over the previous hash and each
/// field, length-prefixed (so no two records serialize alike).
pub fn audit_hash(prev_hash: &str, seq: i64, a: &AuditRecord) -> String {
    let mut h = Sha256::new();
    let fields = [
        prev_hash.to_owned(),
        seq.to_string(),
        a.id.clone(),
        a.tenant.0.to_string(),
        a.actor.clone(),
        a.action.clone(),
        a.resource_type.clone(),
        a.resource_id.clone(),
        a.changed_fields.join(","),
        a.reason.clone().unwrap_or_default(),
        a.request_id.clone().unwrap_or_default(),
        a.correlation_id.clone().unwrap_or_default(),
        a.created_at.to_string(),
    ];
    // Records from before client IPs were kept hash as they always did.
    for f in fields.iter().chain(a.client_ip.as_ref()) {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

const LAST_AUDIT: &str = "SELECT seq, hash FROM compliance_audit_events WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1";
const INSERT_AUDIT: &str = "INSERT INTO compliance_audit_events (id, tenant_id, seq, actor, action, resource_type, resource_id, changed_fields, reason, \
    request_id, correlation_id, created_at, prev_hash, hash, client_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

fn audit_params(a: &AuditRecord, seq: i64, prev: &str, hash: &str) -> Vec<Val> {
    vec![
        text(&a.id),
        int(a.tenant.0),
        int(seq),
        text(&a.actor),
        text(&a.action),
        text(&a.resource_type),
        text(&a.resource_id),
        text(a.changed_fields.join(",")),
        opt_text(a.reason.clone()),
        opt_text(a.request_id.clone()),
        opt_text(a.correlation_id.clone()),
        int(a.created_at),
        text(prev),
        text(hash),
        opt_text(a.client_ip.clone()),
    ]
}

fn idempotency_stmt(r: &IdempotencyRecord) -> Stmt {
    stmt(
        INSERT_IDEMPOTENCY,
        vec![
            int(r.tenant.0),
            text(&r.key),
            text(&r.fingerprint),
            int(i64::from(r.response.status)),
            Val::Bytes(Some(r.response.body.clone())),
            int(r.created_at.micros()),
        ],
    )
}

/// A write: statements, then audit records, then the idempotency record, in one transaction.
pub struct Write {
    pub tenant: Option<TenantId>,
    pub stmts: Vec<Stmt>,
    pub audit: Vec<AuditRecord>,
    pub idempotency: Option<IdempotencyRecord>,
}

/// Appends `audit` to their tenants' compliance chains inside `tx` (SQLite
/// has one writer, so reading the chain's head and appending cannot race).
pub(crate) fn sqlite_append_audit(tx: &rusqlite::Transaction<'_>, audit: &[AuditRecord]) -> Result<(), StoreError> {
    for a in audit {
        let last = tx.query_row(&sq(LAST_AUDIT), [a.tenant.0], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)));
        let (seq, prev) = match last {
            Ok((seq, hash)) => (seq + 1, hash),
            Err(rusqlite::Error::QueryReturnedNoRows) => (1, GENESIS_HASH.to_owned()),
            Err(e) => return Err(e.into()),
        };
        let hash = audit_hash(&prev, seq, a);
        let params = audit_params(a, seq, &prev, &hash);
        let values: Vec<&dyn rusqlite::ToSql> = params.iter().map(Val::sqlite).collect();
        tx.execute(&sq(INSERT_AUDIT), values.as_slice())?;
    }
    Ok(())
}

/// Takes the transaction-scoped locks of the tenants' compliance chains, in
/// tenant order (so two writers cannot deadlock), before their heads are read.
pub(crate) async fn pg_lock_audit_chains(tx: &tokio_postgres::Transaction<'_>, mut tenants: Vec<i64>) -> Result<(), StoreError> {
    tenants.sort_unstable();
    tenants.dedup();
    for t in tenants {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(PG_LOCK_BASE | (t & 0xffff_ffff))]).await?;
    }
    Ok(())
}

/// Appends `audit` to their tenants' compliance chains inside `tx`; the
/// caller holds the chains' locks ([`pg_lock_audit_chains`]).
pub(crate) async fn pg_append_audit(tx: &tokio_postgres::Transaction<'_>, audit: &[AuditRecord]) -> Result<(), StoreError> {
    for a in audit {
        let last = tx.query_opt(LAST_AUDIT, &[&a.tenant.0]).await?;
        let (seq, prev) = match last {
            Some(r) => (
                r.try_get::<_, i64>(0).map_err(|e| StoreError::Corrupt(e.to_string()))? + 1,
                r.try_get::<_, String>(1).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = audit_hash(&prev, seq, a);
        let params = audit_params(a, seq, &prev, &hash);
        let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(Val::pg).collect();
        tx.execute(INSERT_AUDIT, &values).await?;
    }
    Ok(())
}

impl Store {
    /// Runs `write` in one transaction: `Ok(false)` (nothing written) when a
    /// precondition statement did not touch the rows it expected.
    async fn compliance_write(&self, write: Write) -> Result<bool, StoreError> {
        let Write { tenant, mut stmts, audit, idempotency } = write;
        if let Some(r) = &idempotency {
            stmts.push(idempotency_stmt(r));
        }
        let result = match self {
            Store::Sqlite(s) => {
                s.write(move |tx| {
                    for st in stmts.iter().filter(|st| st.only != Some(Dialect::Postgres)) {
                        let values: Vec<&dyn rusqlite::ToSql> = st.params.iter().map(Val::sqlite).collect();
                        let n = tx.execute(&sq(&st.sql), values.as_slice())?;
                        if st.expect_rows.is_some_and(|want| want != n as u64) {
                            return Err(StoreError::Other(PRECONDITION_FAILED.into()));
                        }
                    }
                    sqlite_append_audit(tx, &audit)?;
                    Ok(())
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                let tenants: Vec<i64> = audit.iter().map(|a| a.tenant.0).chain(tenant.map(|t| t.0)).collect();
                pg_lock_audit_chains(&tx, tenants).await?;
                for st in stmts.iter().filter(|st| st.only != Some(Dialect::Sqlite)) {
                    let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = st.params.iter().map(Val::pg).collect();
                    let n = tx.execute(st.sql.as_str(), &values).await?;
                    if st.expect_rows.is_some_and(|want| want != n) {
                        return Ok(false);
                    }
                }
                pg_append_audit(&tx, &audit).await?;
                tx.commit().await.map_err(StoreError::from)
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::Other(m)) if m == PRECONDITION_FAILED => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn compliance_query(&self, sql: String, params: Vec<Val>) -> Result<Vec<Row>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let values: Vec<&dyn rusqlite::ToSql> = params.iter().map(Val::sqlite).collect();
                    let mut st = c.prepare_cached(&sq(&sql))?;
                    let rows = st.query_map(values.as_slice(), sqlite_row)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(Val::pg).collect();
                client.query(sql.as_str(), &values).await?.iter().map(pg_row).collect()
            }
        }
    }
}

/// The keyset part of a list query: `(condition on id, order)` and the bound.
fn keyset(page: &PageRequest) -> (&'static str, &'static str, String) {
    let (descending, bound) = page.cursor.keyset_start(false);
    if descending { ("<", "DESC", bound) } else { (">", "ASC", bound) }
}

// ---- customers ------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerRecord {
    pub id: String,
    pub tenant: TenantId,
    /// `individual` or `business`.
    pub kind: String,
    pub kyc_status: String,
    /// JSON array of requirement errors (field names and codes only).
    pub kyc_errors: String,
    pub screening_status: String,
    pub external_id: Option<String>,
    /// JSON object of string values.
    pub metadata: String,
    /// The personal fields, sealed under the customer's data key; `None` once erased.
    pub personal: Option<Vec<u8>>,
    pub email_index: Option<String>,
    pub tax_id_index: Option<String>,
    pub version: i64,
    pub erased_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const CUSTOMER_COLUMNS: &str = "id, tenant_id, kind, kyc_status, kyc_errors, screening_status, external_id, metadata, personal, email_index, tax_id_index, version, erased_at, created_at, updated_at";

fn customer_of(r: &Row) -> Result<CustomerRecord, StoreError> {
    Ok(CustomerRecord {
        id: r.text(0)?,
        tenant: TenantId(r.int(1)?),
        kind: r.text(2)?,
        kyc_status: r.text(3)?,
        kyc_errors: r.text(4)?,
        screening_status: r.text(5)?,
        external_id: r.opt_text(6)?,
        metadata: r.text(7)?,
        personal: r.opt_bytes(8)?,
        email_index: r.opt_text(9)?,
        tax_id_index: r.opt_text(10)?,
        version: r.int(11)?,
        erased_at: r.opt_int(12)?,
        created_at: r.int(13)?,
        updated_at: r.int(14)?,
    })
}

/// A customer's data key, wrapped by the key-encryption key of `kek_version`.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub customer_id: String,
    pub tenant: TenantId,
    pub kek_version: i64,
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKeyRecord({}, kek v{}, <wrapped>)", self.customer_id, self.kek_version)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KycEventRecord {
    pub id: String,
    pub customer_id: String,
    pub from_status: String,
    pub to_status: String,
    pub decided_by: String,
    pub actor: String,
    pub reason: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScreeningRecord {
    pub id: String,
    pub tenant: TenantId,
    pub customer_id: String,
    /// Comma-separated ids of the list snapshots screened against.
    pub list_ids: String,
    /// `create`, `update`, `list_update`.
    pub trigger: String,
    pub status: String,
    /// JSON array of matched entries and scores (public list data only).
    pub matches: String,
    pub resolution_reason: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub created_at: i64,
}

const SCREENING_COLUMNS: &str = "id, tenant_id, customer_id, list_ids, trigger, status, matches, resolution_reason, resolved_by, resolved_at, created_at";

fn screening_of(r: &Row) -> Result<ScreeningRecord, StoreError> {
    Ok(ScreeningRecord {
        id: r.text(0)?,
        tenant: TenantId(r.int(1)?),
        customer_id: r.text(2)?,
        list_ids: r.text(3)?,
        trigger: r.text(4)?,
        status: r.text(5)?,
        matches: r.text(6)?,
        resolution_reason: r.opt_text(7)?,
        resolved_by: r.opt_text(8)?,
        resolved_at: r.opt_int(9)?,
        created_at: r.int(10)?,
    })
}

fn screening_stmt(s: &ScreeningRecord) -> Stmt {
    stmt(
        &format!("INSERT INTO screenings ({SCREENING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
        vec![
            text(&s.id),
            int(s.tenant.0),
            text(&s.customer_id),
            text(&s.list_ids),
            text(&s.trigger),
            text(&s.status),
            text(&s.matches),
            opt_text(s.resolution_reason.clone()),
            opt_text(s.resolved_by.clone()),
            opt_int(s.resolved_at),
            int(s.created_at),
        ],
    )
}

fn kyc_event_stmt(tenant: TenantId, e: &KycEventRecord) -> Stmt {
    stmt(
        "INSERT INTO customer_kyc_events (id, tenant_id, customer_id, from_status, to_status, decided_by, actor, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            text(&e.id),
            int(tenant.0),
            text(&e.customer_id),
            text(&e.from_status),
            text(&e.to_status),
            text(&e.decided_by),
            text(&e.actor),
            text(&e.reason),
            int(e.created_at),
        ],
    )
}

/// The outcome of creating a customer.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertCustomer {
    Created,
    /// The `external_id` belongs to this customer already.
    DuplicateExternalId(String),
}

/// What changes with a customer, besides its row.
#[derive(Default)]
pub struct CustomerEffects {
    pub kyc_events: Vec<KycEventRecord>,
    pub screening: Option<ScreeningRecord>,
    pub audit: Vec<AuditRecord>,
    pub idempotency: Option<IdempotencyRecord>,
}

impl CustomerEffects {
    fn stmts(&self, tenant: TenantId) -> Vec<Stmt> {
        let mut out: Vec<Stmt> = self.kyc_events.iter().map(|e| kyc_event_stmt(tenant, e)).collect();
        out.extend(self.screening.iter().map(screening_stmt));
        out
    }
}

impl Store {
    /// Creates a customer with its wrapped data key and effects, in one transaction.
    pub async fn insert_customer(&self, c: CustomerRecord, key: DataKeyRecord, effects: CustomerEffects) -> Result<InsertCustomer, StoreError> {
        let mut stmts = vec![
            stmt(
                &format!("INSERT INTO customers ({CUSTOMER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"),
                vec![
                    text(&c.id),
                    int(c.tenant.0),
                    text(&c.kind),
                    text(&c.kyc_status),
                    text(&c.kyc_errors),
                    text(&c.screening_status),
                    opt_text(c.external_id.clone()),
                    text(&c.metadata),
                    Val::Bytes(c.personal.clone()),
                    opt_text(c.email_index.clone()),
                    opt_text(c.tax_id_index.clone()),
                    int(c.version),
                    opt_int(c.erased_at),
                    int(c.created_at),
                    int(c.updated_at),
                ],
            ),
            stmt(
                "INSERT INTO customer_data_keys (customer_id, tenant_id, kek_version, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)",
                vec![text(&key.customer_id), int(key.tenant.0), int(key.kek_version), Val::Bytes(Some(key.wrapped.clone())), int(c.created_at)],
            ),
        ];
        stmts.extend(effects.stmts(c.tenant));
        let write = Write { tenant: Some(c.tenant), stmts, audit: effects.audit, idempotency: effects.idempotency };
        match self.compliance_write(write).await {
            Ok(_) => Ok(InsertCustomer::Created),
            Err(StoreError::Conflict(cause)) => match &c.external_id {
                Some(external) => match self.customer_by_external_id(c.tenant, external.clone()).await? {
                    Some(existing) => Ok(InsertCustomer::DuplicateExternalId(existing.id)),
                    None => Err(StoreError::Conflict(cause)),
                },
                None => Err(StoreError::Conflict(cause)),
            },
            Err(e) => Err(e),
        }
    }

    /// Replaces a customer's row if it is still at `expected_version`
    /// (`Ok(false)` otherwise: someone changed it meanwhile), with its effects.
    pub async fn update_customer(&self, c: CustomerRecord, expected_version: i64, effects: CustomerEffects) -> Result<bool, StoreError> {
        let mut stmts = customer_blocking_change(c.tenant, &c.id);
        stmts.push(guarded(
            "UPDATE customers SET kyc_status = $3, kyc_errors = $4, screening_status = $5, external_id = $6, metadata = $7, personal = $8, \
             email_index = $9, tax_id_index = $10, version = $11, erased_at = $12, updated_at = $13 WHERE tenant_id = $1 AND id = $2 AND version = $14",
            vec![
                int(c.tenant.0),
                text(&c.id),
                text(&c.kyc_status),
                text(&c.kyc_errors),
                text(&c.screening_status),
                opt_text(c.external_id.clone()),
                text(&c.metadata),
                Val::Bytes(c.personal.clone()),
                opt_text(c.email_index.clone()),
                opt_text(c.tax_id_index.clone()),
                int(c.version),
                opt_int(c.erased_at),
                int(c.updated_at),
                int(expected_version),
            ],
            1,
        ));
        stmts.extend(effects.stmts(c.tenant));
        let write = Write { tenant: Some(c.tenant), stmts, audit: effects.audit, idempotency: effects.idempotency };
        match self.compliance_write(write).await {
            Err(StoreError::Conflict(_)) if c.external_id.is_some() => Ok(false),
            other => other,
        }
    }

    /// Crypto-shredding: deletes the customer's data key and clears the
    /// sealed fields and blind indexes, if the customer is at `expected_version`.
    pub async fn erase_customer(&self, c: CustomerRecord, expected_version: i64, effects: CustomerEffects) -> Result<bool, StoreError> {
        let tenant = c.tenant;
        let mut write_effects = effects;
        let audit = std::mem::take(&mut write_effects.audit);
        let idempotency = write_effects.idempotency.take();
        let mut stmts = vec![
            guarded(
                "UPDATE customers SET personal = NULL, email_index = NULL, tax_id_index = NULL, erased_at = $3, version = $4, updated_at = $3 \
                 WHERE tenant_id = $1 AND id = $2 AND version = $5",
                vec![int(tenant.0), text(&c.id), opt_int(c.erased_at), int(c.version), int(expected_version)],
                1,
            ),
            stmt("DELETE FROM customer_data_keys WHERE tenant_id = $1 AND customer_id = $2", vec![int(tenant.0), text(&c.id)]),
        ];
        stmts.extend(write_effects.stmts(tenant));
        self.compliance_write(Write { tenant: Some(tenant), stmts, audit, idempotency }).await
    }

    pub async fn get_customer(&self, tenant: TenantId, id: String) -> Result<Option<CustomerRecord>, StoreError> {
        let rows =
            self.compliance_query(format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 AND id = $2"), vec![int(tenant.0), text(id)]).await?;
        rows.first().map(customer_of).transpose()
    }

    pub async fn customer_by_external_id(&self, tenant: TenantId, external_id: String) -> Result<Option<CustomerRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 AND external_id = $2"),
                vec![int(tenant.0), text(external_id)],
            )
            .await?;
        rows.first().map(customer_of).transpose()
    }

    /// The tenant's customers, newest first, optionally only those whose
    /// email or tax id has the given blind index.
    pub async fn list_customers(
        &self,
        tenant: TenantId,
        email_index: Option<String>,
        tax_id_index: Option<String>,
        page: PageRequest,
    ) -> Result<Page<CustomerRecord>, StoreError> {
        let (cmp, order, bound) = keyset(&page);
        let mut sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 AND id {cmp} $2");
        let mut params = vec![int(tenant.0), text(bound)];
        for (column, value) in [("email_index", email_index), ("tax_id_index", tax_id_index)] {
            if let Some(v) = value {
                params.push(text(v));
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        }
        params.push(int(i64::from(page.limit) + 1));
        sql.push_str(&format!(" ORDER BY id {order} LIMIT ${}", params.len()));
        let rows = self.compliance_query(sql, params).await?;
        let items = rows.iter().map(customer_of).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, &page))
    }

    /// Customers of every tenant after `after` (by id), for re-screening.
    pub async fn customers_after(&self, after: String, limit: i64) -> Result<Vec<CustomerRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id > $1 AND erased_at IS NULL ORDER BY id LIMIT $2"),
                vec![text(after), int(limit)],
            )
            .await?;
        rows.iter().map(customer_of).collect()
    }

    pub async fn customer_data_key(&self, tenant: TenantId, customer_id: String) -> Result<Option<DataKeyRecord>, StoreError> {
        let rows = self
            .compliance_query(
                String::from("SELECT customer_id, tenant_id, kek_version, wrapped FROM customer_data_keys WHERE tenant_id = $1 AND customer_id = $2"),
                vec![int(tenant.0), text(customer_id)],
            )
            .await?;
        rows.first().map(data_key_of).transpose()
    }

    /// Data keys wrapped by a key-encryption key older than `version`, after `after`.
    pub async fn data_keys_wrapped_before(&self, version: i64, after: String, limit: i64) -> Result<Vec<DataKeyRecord>, StoreError> {
        let rows = self
            .compliance_query(
                String::from(
                    "SELECT customer_id, tenant_id, kek_version, wrapped FROM customer_data_keys WHERE kek_version < $1 AND customer_id > $2 ORDER BY customer_id LIMIT $3",
                ),
                vec![int(version), text(after), int(limit)],
            )
            .await?;
        rows.iter().map(data_key_of).collect()
    }

    /// Replaces a wrapped data key if it is still wrapped by `old_version`
    /// (an erased customer's key, deleted meanwhile, stays deleted).
    pub async fn rewrap_data_key(&self, key: DataKeyRecord, old_version: i64) -> Result<bool, StoreError> {
        let stmts = vec![guarded(
            "UPDATE customer_data_keys SET kek_version = $1, wrapped = $2 WHERE customer_id = $3 AND kek_version = $4",
            vec![int(key.kek_version), Val::Bytes(Some(key.wrapped)), text(key.customer_id), int(old_version)],
            1,
        )];
        self.compliance_write(Write { tenant: None, stmts, audit: Vec::new(), idempotency: None }).await
    }

    /// One stored data key per KEK version (to check, at start, that this
    /// server's keyring is the one that wrapped them).
    pub async fn sample_data_keys(&self) -> Result<Vec<DataKeyRecord>, StoreError> {
        let rows = self
            .compliance_query(
                String::from(
                    "SELECT customer_id, tenant_id, kek_version, wrapped FROM customer_data_keys \
                     WHERE customer_id IN (SELECT MIN(customer_id) FROM customer_data_keys GROUP BY kek_version) ORDER BY kek_version",
                ),
                Vec::new(),
            )
            .await?;
        rows.iter().map(data_key_of).collect()
    }

    /// How many data keys each key-encryption key version wraps.
    pub async fn data_key_versions(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = self
            .compliance_query(String::from("SELECT kek_version, COUNT(*) FROM customer_data_keys GROUP BY kek_version ORDER BY kek_version"), Vec::new())
            .await?;
        rows.iter().map(|r| Ok((r.int(0)?, r.int(1)?))).collect()
    }

    pub async fn kyc_events(&self, tenant: TenantId, customer_id: String) -> Result<Vec<KycEventRecord>, StoreError> {
        let rows = self
            .compliance_query(
                String::from(
                    "SELECT id, customer_id, from_status, to_status, decided_by, actor, reason, created_at FROM customer_kyc_events \
                     WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id LIMIT 1000",
                ),
                vec![int(tenant.0), text(customer_id)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KycEventRecord {
                    id: r.text(0)?,
                    customer_id: r.text(1)?,
                    from_status: r.text(2)?,
                    to_status: r.text(3)?,
                    decided_by: r.text(4)?,
                    actor: r.text(5)?,
                    reason: r.text(6)?,
                    created_at: r.int(7)?,
                })
            })
            .collect()
    }
}

fn data_key_of(r: &Row) -> Result<DataKeyRecord, StoreError> {
    Ok(DataKeyRecord { customer_id: r.text(0)?, tenant: TenantId(r.int(1)?), kek_version: r.int(2)?, wrapped: r.opt_bytes(3)?.unwrap_or_default() })
}

// ---- consents -------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRecord {
    pub id: String,
    pub consent_id: String,
    pub reason: String,
    pub revoked_at: i64,
    pub actor: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRecord {
    pub id: String,
    pub tenant: TenantId,
    pub customer_id: String,
    pub consent_type: String,
    pub text_version: String,
    pub channel: String,
    /// IP address and user agent, sealed under the customer's data key.
    pub sealed: Option<Vec<u8>>,
    pub granted_at: i64,
    pub actor: String,
    pub created_at: i64,
    /// Filled on read.
    pub revocation: Option<RevocationRecord>,
}

const CONSENT_SELECT: &str = "SELECT c.id, c.tenant_id, c.customer_id, c.consent_type, c.text_version, c.channel, c.sealed, c.granted_at, c.actor, c.created_at, \
    r.id, r.reason, r.revoked_at, r.actor, r.created_at FROM customer_consents c LEFT JOIN customer_consent_revocations r ON r.consent_id = c.id";

fn consent_of(r: &Row) -> Result<ConsentRecord, StoreError> {
    let id = r.text(0)?;
    let revocation = match r.opt_text(10)? {
        Some(rid) => {
            Some(RevocationRecord { id: rid, consent_id: id.clone(), reason: r.text(11)?, revoked_at: r.int(12)?, actor: r.text(13)?, created_at: r.int(14)? })
        }
        None => None,
    };
    Ok(ConsentRecord {
        id,
        tenant: TenantId(r.int(1)?),
        customer_id: r.text(2)?,
        consent_type: r.text(3)?,
        text_version: r.text(4)?,
        channel: r.text(5)?,
        sealed: r.opt_bytes(6)?,
        granted_at: r.int(7)?,
        actor: r.text(8)?,
        created_at: r.int(9)?,
        revocation,
    })
}

impl Store {
    pub async fn insert_consent(&self, c: ConsentRecord, audit: Vec<AuditRecord>, idempotency: Option<IdempotencyRecord>) -> Result<(), StoreError> {
        let stmts = vec![stmt(
            "INSERT INTO customer_consents (id, tenant_id, customer_id, consent_type, text_version, channel, sealed, granted_at, actor, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            vec![
                text(&c.id),
                int(c.tenant.0),
                text(&c.customer_id),
                text(&c.consent_type),
                text(&c.text_version),
                text(&c.channel),
                Val::Bytes(c.sealed.clone()),
                int(c.granted_at),
                text(&c.actor),
                int(c.created_at),
            ],
        )];
        self.compliance_write(Write { tenant: Some(c.tenant), stmts, audit, idempotency }).await.map(|_| ())
    }

    /// Records a revocation; `Ok(false)` when the consent was revoked already.
    pub async fn revoke_consent(
        &self,
        tenant: TenantId,
        r: RevocationRecord,
        audit: Vec<AuditRecord>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<bool, StoreError> {
        let stmts = vec![guarded(
            "INSERT INTO customer_consent_revocations (id, tenant_id, consent_id, reason, revoked_at, actor, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM customer_consent_revocations WHERE consent_id = $3)",
            vec![text(&r.id), int(tenant.0), text(&r.consent_id), text(&r.reason), int(r.revoked_at), text(&r.actor), int(r.created_at)],
            1,
        )];
        match self.compliance_write(Write { tenant: Some(tenant), stmts, audit, idempotency }).await {
            Err(StoreError::Conflict(_)) => Ok(false),
            other => other,
        }
    }

    pub async fn get_consent(&self, tenant: TenantId, id: String) -> Result<Option<ConsentRecord>, StoreError> {
        let rows = self.compliance_query(format!("{CONSENT_SELECT} WHERE c.tenant_id = $1 AND c.id = $2"), vec![int(tenant.0), text(id)]).await?;
        rows.first().map(consent_of).transpose()
    }

    /// A customer's consents, oldest first (at most 1,000).
    pub async fn list_consents(&self, tenant: TenantId, customer_id: String) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!("{CONSENT_SELECT} WHERE c.tenant_id = $1 AND c.customer_id = $2 ORDER BY c.id LIMIT 1000"),
                vec![int(tenant.0), text(customer_id)],
            )
            .await?;
        rows.iter().map(consent_of).collect()
    }

    /// The newest unrevoked consent of `consent_type` the customer granted at
    /// or before `at`: what a rail checks before it debits (e.g. an ACH debit
    /// authorization).
    pub async fn active_consent(&self, tenant: TenantId, customer_id: String, consent_type: String, at: i64) -> Result<Option<ConsentRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!(
                    "{CONSENT_SELECT} WHERE c.tenant_id = $1 AND c.customer_id = $2 AND c.consent_type = $3 AND c.granted_at <= $4 \
                     AND (r.id IS NULL OR r.revoked_at > $4) ORDER BY c.id DESC LIMIT 1"
                ),
                vec![int(tenant.0), text(customer_id), text(consent_type), int(at)],
            )
            .await?;
        rows.first().map(consent_of).transpose()
    }
}

// ---- sanctions lists and screenings ---------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanctionsListRecord {
    pub id: String,
    /// `ofac_sdn` or `internal`.
    pub source: String,
    pub format: String,
    pub entry_count: i64,
    pub fingerprint: String,
    pub loaded_by: String,
    pub loaded_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanctionsEntryRecord {
    pub position: i64,
    pub reference: String,
    /// The primary name first, then the aliases.
    pub names: Vec<String>,
    pub birth_year: Option<i64>,
    pub countries: Vec<String>,
    pub programs: String,
}

const LIST_COLUMNS: &str = "id, source, format, entry_count, fingerprint, loaded_by, loaded_at";

fn list_of(r: &Row) -> Result<SanctionsListRecord, StoreError> {
    Ok(SanctionsListRecord {
        id: r.text(0)?,
        source: r.text(1)?,
        format: r.text(2)?,
        entry_count: r.int(3)?,
        fingerprint: r.text(4)?,
        loaded_by: r.text(5)?,
        loaded_at: r.int(6)?,
    })
}

fn json_list(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("sanctions entry list: {e}")))
}

impl Store {
    /// Stores a list snapshot and its entries (in chunks, one transaction).
    pub async fn insert_sanctions_list(&self, list: SanctionsListRecord, entries: Vec<SanctionsEntryRecord>) -> Result<(), StoreError> {
        let mut stmts = vec![stmt(
            &format!("INSERT INTO sanctions_lists ({LIST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            vec![
                text(&list.id),
                text(&list.source),
                text(&list.format),
                int(list.entry_count),
                text(&list.fingerprint),
                text(&list.loaded_by),
                int(list.loaded_at),
            ],
        )];
        for e in &entries {
            let names = serde_json::to_string(&e.names).map_err(|x| StoreError::Other(x.to_string()))?;
            let countries = serde_json::to_string(&e.countries).map_err(|x| StoreError::Other(x.to_string()))?;
            stmts.push(stmt(
                "INSERT INTO sanctions_entries (list_id, position, reference, names, birth_year, countries, programs) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                vec![text(&list.id), int(e.position), text(&e.reference), text(names), opt_int(e.birth_year), text(countries), text(&e.programs)],
            ));
        }
        self.compliance_write(Write { tenant: None, stmts, audit: Vec::new(), idempotency: None }).await.map(|_| ())
    }

    /// The newest snapshot of each source.
    pub async fn latest_sanctions_lists(&self) -> Result<Vec<SanctionsListRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!(
                    "SELECT {LIST_COLUMNS} FROM sanctions_lists l WHERE id = (SELECT MAX(id) FROM sanctions_lists m WHERE m.source = l.source) ORDER BY source"
                ),
                Vec::new(),
            )
            .await?;
        rows.iter().map(list_of).collect()
    }

    pub async fn sanctions_entries(&self, list_id: String) -> Result<Vec<SanctionsEntryRecord>, StoreError> {
        let rows = self
            .compliance_query(
                String::from("SELECT position, reference, names, birth_year, countries, programs FROM sanctions_entries WHERE list_id = $1 ORDER BY position"),
                vec![text(list_id)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SanctionsEntryRecord {
                    position: r.int(0)?,
                    reference: r.text(1)?,
                    names: json_list(&r.text(2)?)?,
                    birth_year: r.opt_int(3)?,
                    countries: json_list(&r.text(4)?)?,
                    programs: r.text(5)?,
                })
            })
            .collect()
    }

    /// Claims the re-screening of every customer against snapshot `list_id`:
    /// `true` for exactly one caller across all servers.
    pub async fn claim_rescreen(&self, list_id: String, now: i64) -> Result<bool, StoreError> {
        let stmts = vec![guarded(
            "UPDATE sanctions_lists SET rescreen_claimed_at = $2 WHERE id = $1 AND rescreen_claimed_at IS NULL",
            vec![text(list_id), int(now)],
            1,
        )];
        self.compliance_write(Write { tenant: None, stmts, audit: Vec::new(), idempotency: None }).await
    }

    /// Records a screening and sets the customer's screening status to its outcome.
    pub async fn record_screening(&self, s: ScreeningRecord, audit: Vec<AuditRecord>) -> Result<(), StoreError> {
        let mut stmts = customer_blocking_change(s.tenant, &s.customer_id);
        stmts.extend([
            screening_stmt(&s),
            stmt("UPDATE customers SET screening_status = $3 WHERE tenant_id = $1 AND id = $2", vec![int(s.tenant.0), text(&s.customer_id), text(&s.status)]),
        ]);
        self.compliance_write(Write { tenant: Some(s.tenant), stmts, audit, idempotency: None }).await.map(|_| ())
    }

    pub async fn get_screening(&self, tenant: TenantId, id: String) -> Result<Option<ScreeningRecord>, StoreError> {
        let rows = self
            .compliance_query(format!("SELECT {SCREENING_COLUMNS} FROM screenings WHERE tenant_id = $1 AND id = $2"), vec![int(tenant.0), text(id)])
            .await?;
        rows.first().map(screening_of).transpose()
    }

    /// Screenings, newest first; of one customer when `customer_id` is given.
    pub async fn list_screenings(&self, tenant: TenantId, customer_id: Option<String>, page: PageRequest) -> Result<Page<ScreeningRecord>, StoreError> {
        let (cmp, order, bound) = keyset(&page);
        let mut params = vec![int(tenant.0), text(bound)];
        let mut sql = format!("SELECT {SCREENING_COLUMNS} FROM screenings WHERE tenant_id = $1 AND id {cmp} $2");
        if let Some(c) = customer_id {
            params.push(text(c));
            sql.push_str(" AND customer_id = $3");
        }
        params.push(int(i64::from(page.limit) + 1));
        sql.push_str(&format!(" ORDER BY id {order} LIMIT ${}", params.len()));
        let rows = self.compliance_query(sql, params).await?;
        Ok(Page::from_rows(rows.iter().map(screening_of).collect::<Result<Vec<_>, _>>()?, &page))
    }

    /// Resolves an unresolved screening, and sets the customer's screening
    /// status when this is the customer's latest screening. `Ok(false)` when
    /// it was resolved meanwhile.
    pub async fn resolve_screening(&self, s: ScreeningRecord, audit: Vec<AuditRecord>, idempotency: Option<IdempotencyRecord>) -> Result<bool, StoreError> {
        let mut stmts = customer_blocking_change(s.tenant, &s.customer_id);
        stmts.extend([
            guarded(
                "UPDATE screenings SET status = $3, resolution_reason = $4, resolved_by = $5, resolved_at = $6 WHERE tenant_id = $1 AND id = $2 AND resolved_at IS NULL",
                vec![
                    int(s.tenant.0),
                    text(&s.id),
                    text(&s.status),
                    opt_text(s.resolution_reason.clone()),
                    opt_text(s.resolved_by.clone()),
                    opt_int(s.resolved_at),
                ],
                1,
            ),
            stmt(
                "UPDATE customers SET screening_status = $3 WHERE tenant_id = $1 AND id = $2 \
                 AND $4 = (SELECT MAX(id) FROM screenings WHERE tenant_id = $1 AND customer_id = $2)",
                vec![int(s.tenant.0), text(&s.customer_id), text(&s.status), text(&s.id)],
            ),
        ]);
        self.compliance_write(Write { tenant: Some(s.tenant), stmts, audit, idempotency }).await
    }

    /// Matched list references a customer's screenings resolved as false positives.
    pub async fn false_positive_matches(&self, tenant: TenantId, customer_id: String) -> Result<Vec<String>, StoreError> {
        let rows = self
            .compliance_query(
                String::from("SELECT matches FROM screenings WHERE tenant_id = $1 AND customer_id = $2 AND status = 'false_positive' ORDER BY id LIMIT 100"),
                vec![int(tenant.0), text(customer_id)],
            )
            .await?;
        rows.iter().map(|r| r.text(0)).collect()
    }
}

// ---- audit ----------------------------------------------------------------

const AUDIT_COLUMNS: &str =
    "id, tenant_id, actor, action, resource_type, resource_id, changed_fields, reason, request_id, correlation_id, created_at, seq, prev_hash, hash, client_ip";

fn audit_of(r: &Row) -> Result<StoredAudit, StoreError> {
    let fields = r.text(6)?;
    Ok(StoredAudit {
        record: AuditRecord {
            id: r.text(0)?,
            tenant: TenantId(r.int(1)?),
            actor: r.text(2)?,
            action: r.text(3)?,
            resource_type: r.text(4)?,
            resource_id: r.text(5)?,
            changed_fields: fields.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
            reason: r.opt_text(7)?,
            request_id: r.opt_text(8)?,
            correlation_id: r.opt_text(9)?,
            client_ip: r.opt_text(14)?,
            created_at: r.int(10)?,
        },
        seq: r.int(11)?,
        prev_hash: r.text(12)?,
        hash: r.text(13)?,
    })
}

/// Filters of the audit list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub resource_id: Option<String>,
    pub resource_type: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    /// Created at or after (micros).
    pub created_gte: Option<i64>,
    /// Created before (micros).
    pub created_lt: Option<i64>,
}

/// Where an audit record comes from: the compliance audit chain (customers,
/// consents, screenings, documents; chained per environment) or the ledger
/// log (accounts and transactions; one chain for the database).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuditTrail {
    Compliance,
    Ledger,
}

impl AuditTrail {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditTrail::Compliance => "compliance",
            AuditTrail::Ledger => "ledger",
        }
    }
}

/// The ledger's changes that the audit list shows, by event type, with the
/// fields each changes: one event per ledger change, so one audit record each.
const LEDGER_AUDIT_ACTIONS: [(&str, &[&str]); 5] = [
    ("account.created", &[]),
    ("transaction.created", &[]),
    ("transaction.posted", &["status"]),
    ("transaction.voided", &["status"]),
    ("transaction.reversed", &["status", "reversed_by"]),
];

/// Who asked for a logged ledger change: the `context` fragment that opens
/// a command's log record (see `engine::LogFragment::Context`).
#[derive(serde::Deserialize, Default)]
struct LoggedContext {
    #[serde(default)]
    op: String,
    request_id: Option<String>,
    correlation_id: Option<String>,
    actor: Option<String>,
    client_ip: Option<String>,
}

impl Store {
    /// The tenant's compliance audit records, newest first.
    pub async fn list_compliance_audit(&self, tenant: TenantId, filter: AuditFilter, page: PageRequest) -> Result<Page<StoredAudit>, StoreError> {
        let (cmp, order, bound) = keyset(&page);
        let mut params = vec![int(tenant.0), text(bound)];
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM compliance_audit_events WHERE tenant_id = $1 AND id {cmp} $2");
        for (column, value) in
            [("resource_id", filter.resource_id), ("resource_type", filter.resource_type), ("action", filter.action), ("actor", filter.actor)]
        {
            if let Some(v) = value {
                params.push(text(v));
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        }
        for (clause, value) in [("created_at >=", filter.created_gte), ("created_at <", filter.created_lt)] {
            if let Some(v) = value {
                params.push(int(v));
                sql.push_str(&format!(" AND {clause} ${}", params.len()));
            }
        }
        params.push(int(i64::from(page.limit) + 1));
        sql.push_str(&format!(" ORDER BY id {order} LIMIT ${}", params.len()));
        let rows = self.compliance_query(sql, params).await?;
        Ok(Page::from_rows(rows.iter().map(audit_of).collect::<Result<Vec<_>, _>>()?, &page))
    }

    /// The tenant's ledger changes as audit records, newest first: one per
    /// ledger event (`ledger.account.created`, `ledger.transaction.*`),
    /// with who asked, from where and in which request as the ledger log
    /// recorded it, and the log record's place and hashes in its chain.
    /// Ids are the events' (`evt_…`); `seq` is the ledger log sequence.
    /// Changes the engine made on its own (expiries) and those asked from
    /// the CLI name the actor `system`.
    pub async fn list_ledger_audit(&self, tenant: TenantId, filter: AuditFilter, page: PageRequest) -> Result<Page<StoredAudit>, StoreError> {
        let (cmp, order, bound) = keyset(&page);
        let postgres = matches!(self, Store::Postgres(_));
        // `where_object`: the resource filter, or (a run's row) its id.
        let build = |cmp: &str, order: &str, bound: &str, limit: i64, where_object: Option<(&str, &str)>| {
            let mut params = vec![int(tenant.0), text(bound)];
            // Column 8: a run's body, to expand (SQLite's runs of events, event_runs.rs); NULL otherwise.
            let mut sql = format!(
                "SELECT e.id, e.type, e.object_id, e.created_at, l.seq, l.content, l.prev_hash, l.hash, \
                 CASE WHEN e.object_id = '' THEN e.body END FROM events e JOIN ledger_log l ON l.seq = e.log_seq \
                 WHERE e.tenant_id = $1 AND e.id {cmp} $2 AND e.log_seq IS NOT NULL AND e.type LIKE 'ledger.%'"
            );
            fn push(clause: &str, value: Val, params: &mut Vec<Val>, sql: &mut String) {
                params.push(value);
                sql.push_str(&clause.replace('#', &format!("${}", params.len())));
            }
            if let Some(action) = &filter.action {
                push(" AND e.type = #", text(format!("ledger.{action}")), &mut params, &mut sql);
            }
            if let Some(kind) = &filter.resource_type {
                push(" AND e.type LIKE #", text(format!("ledger.{kind}.%")), &mut params, &mut sql);
            }
            if let Some((column, value)) = where_object {
                push(&format!(" AND e.{column} = #"), text(value), &mut params, &mut sql);
            }
            if let Some(at) = filter.created_gte {
                push(" AND e.created_at >= #", int(at), &mut params, &mut sql);
            }
            if let Some(at) = filter.created_lt {
                push(" AND e.created_at < #", int(at), &mut params, &mut sql);
            }
            if let Some(actor) = &filter.actor {
                // The context fragment, when there is one, opens the record. (The
                // SQLite path is a parameter: `$` in SQL text becomes a placeholder.)
                let logged = if postgres {
                    String::from("(convert_from(l.content, 'UTF8')::jsonb -> 0 ->> 'actor')")
                } else {
                    params.push(text("$[0].actor"));
                    format!("json_extract(settle_log_json(l.content), ${})", params.len())
                };
                if actor == "system" {
                    sql.push_str(&format!(" AND {logged} IS NULL"));
                } else {
                    push(&format!(" AND {logged} = #"), text(actor.clone()), &mut params, &mut sql);
                }
            }
            params.push(int(limit));
            sql.push_str(&format!(" ORDER BY e.id {order} LIMIT ${}", params.len()));
            (sql, params)
        };
        let limit = i64::from(page.limit) + 1;
        let object = filter.resource_id.as_deref().map(|o| ("object_id", o));
        let (sql, params) = build(cmp, order, &bound, limit, object);
        let mut rows = self.compliance_query(sql, params).await?;
        if let Store::Sqlite(s) = self {
            let runs_match =
                filter.action.as_deref().is_none_or(|a| a == "transaction.created") && filter.resource_type.as_deref().is_none_or(|k| k == "transaction");
            let descending = cmp == "<";
            if runs_match && !descending && filter.resource_id.is_none() {
                // A run whose row is at or before the bound may hold events after it.
                let (sql, params) = build("<=", "DESC", &bound, 1, None);
                rows.extend(self.compliance_query(sql, params).await?);
            }
            if runs_match && let Some(object) = filter.resource_id.clone() {
                let found = s.read(move |c| Ok(crate::events::sqlite_created_in_run(c, tenant, &object)?.map(|(run, _)| run))).await?;
                if let Some(run) = found {
                    let (sql, params) = build("<=", "ASC", "~", 1, Some(("id", &run)));
                    rows.extend(self.compliance_query(sql, params).await?);
                }
            }
            let key = |r: &Row| r.text(0).unwrap_or_default();
            let past = |id: &str| if descending { id < bound.as_str() } else { id > bound.as_str() };
            let wanted = |object: &str| filter.resource_id.as_deref().is_none_or(|o| o == object);
            // Rows are disjoint id ranges: in page order, a run's members are
            // built only as far as the page reaches (crate::events::page_of).
            rows.sort_by_cached_key(key);
            if descending {
                rows.reverse();
            }
            rows.dedup_by(|a, b| key(a) == key(b));
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let mut page = Vec::with_capacity(limit.min(rows.len()));
            for mut row in rows {
                if page.len() >= limit {
                    break;
                }
                // The run's body leaves the row, so its members do not copy it.
                let body = match row.0.get_mut(8) {
                    Some(Val::Bytes(body)) if body.as_deref().is_some_and(crate::event_runs::is_run) => body.take(),
                    _ => None,
                };
                let Some(body) = body else {
                    if past(&key(&row)) && row.text(2).is_ok_and(|object| wanted(&object)) {
                        page.push(row);
                    }
                    continue;
                };
                let run = crate::event_runs::Run::read(&row.text(0)?, &body)?;
                for n in run.in_order(descending) {
                    if page.len() >= limit {
                        break;
                    }
                    let id = run.id(n);
                    if past(id.as_str()) && wanted(run.object_id(n)) {
                        let mut member = row.clone();
                        member.0[0] = Val::Text(Some(id.as_str().to_owned()));
                        member.0[2] = Val::Text(Some(run.object_id(n).to_owned()));
                        page.push(member);
                    }
                }
            }
            rows = page;
        }
        let records = rows.iter().map(|r| ledger_audit_of(tenant, r)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(records, &page))
    }

    /// Both audit trails of the tenant under one cursor, newest first:
    /// compliance records (`aev_…`) and ledger changes (`evt_…`). Both ids
    /// are ULIDs, so their bodies order one list; a cursor of either kind
    /// bounds both sources, each source gives its first `limit + 1` past the
    /// bound, and the merge keeps the first `limit + 1` of the union: exactly
    /// the page a single table would give.
    pub async fn list_audit(
        &self,
        tenant: TenantId,
        filter: AuditFilter,
        trails: &[AuditTrail],
        page: PageRequest,
    ) -> Result<Page<(AuditTrail, StoredAudit)>, StoreError> {
        let bounded = |prefix: &str| {
            let rebase = |id: &str| format!("{prefix}{}", id.split_once('_').map_or(id, |(_, body)| body));
            let cursor = match &page.cursor {
                Cursor::Start => Cursor::Start,
                Cursor::After(id) => Cursor::After(rebase(id)),
                Cursor::Before(id) => Cursor::Before(rebase(id)),
            };
            PageRequest { limit: page.limit, cursor }
        };
        let mut rows: Vec<(String, AuditTrail, StoredAudit)> = Vec::new();
        let mut has_more = false;
        for trail in trails {
            let found = match trail {
                AuditTrail::Compliance => self.list_compliance_audit(tenant, filter.clone(), bounded("aev_")).await?,
                AuditTrail::Ledger => self.list_ledger_audit(tenant, filter.clone(), bounded("evt_")).await?,
            };
            has_more |= found.has_more;
            rows.extend(found.items.into_iter().map(|a| (a.record.id.split_once('_').map_or(a.record.id.as_str(), |(_, b)| b).to_owned(), *trail, a)));
        }
        // Each source gave its `limit` nearest the cursor, newest first; so
        // do the merged: the newest `limit` (the oldest for a `Before` page).
        rows.sort_by(|a, b| (&b.0, b.1).cmp(&(&a.0, a.1)));
        let limit = page.limit as usize;
        has_more |= rows.len() > limit;
        if rows.len() > limit {
            if matches!(page.cursor, Cursor::Before(_)) {
                rows.drain(..rows.len() - limit);
            } else {
                rows.truncate(limit);
            }
        }
        Ok(Page { items: rows.into_iter().map(|(_, trail, a)| (trail, a)).collect(), has_more })
    }

    /// Walks a tenant's chain in order: the seq of the first record whose
    /// link or hash is wrong, or `None` when the chain holds.
    pub async fn verify_compliance_audit(&self, tenant: TenantId) -> Result<Option<i64>, StoreError> {
        let mut prev = GENESIS_HASH.to_owned();
        let mut after = 0i64;
        loop {
            let rows = self
                .compliance_query(
                    format!("SELECT {AUDIT_COLUMNS} FROM compliance_audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000"),
                    vec![int(tenant.0), int(after)],
                )
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            for r in &rows {
                let a = audit_of(r)?;
                if a.seq != after + 1 || a.prev_hash != prev || audit_hash(&prev, a.seq, &a.record) != a.hash {
                    return Ok(Some(a.seq));
                }
                prev = a.hash;
                after = a.seq;
            }
        }
    }
}

fn ledger_audit_of(tenant: TenantId, r: &Row) -> Result<StoredAudit, StoreError> {
    let kind = r.text(1)?;
    let action = kind.strip_prefix("ledger.").unwrap_or(&kind).to_owned();
    let changed: &[&str] = LEDGER_AUDIT_ACTIONS.iter().find(|(a, _)| *a == action).map_or(&[], |(_, fields)| fields);
    let bytes = |i: usize| r.opt_bytes(i)?.ok_or_else(|| Row::corrupt(i));
    let content = crate::log_content::readable(r.int(4)?, bytes(5)?);
    // A record that does not open with a context was written by the engine on its own.
    let context = serde_json::from_slice::<Vec<serde_json::Value>>(&content)
        .ok()
        .and_then(|fragments| fragments.into_iter().next())
        .and_then(|first| serde_json::from_value::<LoggedContext>(first).ok())
        .filter(|c| c.op == "context")
        .unwrap_or_default();
    Ok(StoredAudit {
        record: AuditRecord {
            id: r.text(0)?,
            tenant,
            actor: context.actor.unwrap_or_else(|| String::from("system")),
            resource_type: action.split('.').next().unwrap_or_default().to_owned(),
            action,
            resource_id: r.text(2)?,
            changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
            reason: None,
            request_id: context.request_id,
            correlation_id: context.correlation_id,
            client_ip: context.client_ip,
            created_at: r.int(3)?,
        },
        seq: r.int(4)?,
        prev_hash: hex::encode(bytes(6)?),
        hash: hex::encode(bytes(7)?),
    })
}

/// A tenant that has compliance audit records, named for an auditor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditedTenant {
    pub tenant: TenantId,
    pub org_name: String,
    pub environment: String,
}

/// One ledger log record as exported: its place in the chain and its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedLogRecord {
    pub seq: i64,
    pub created_at: i64,
    pub content: Vec<u8>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl Store {
    /// Every tenant with a compliance audit chain, in id order.
    pub async fn compliance_audit_tenants(&self) -> Result<Vec<AuditedTenant>, StoreError> {
        let rows = self
            .compliance_query(
                String::from(
                    "SELECT t.id, o.name, t.environment FROM tenants t JOIN organizations o ON o.id = t.org_id \
                     WHERE EXISTS (SELECT 1 FROM compliance_audit_events a WHERE a.tenant_id = t.id) ORDER BY t.id",
                ),
                Vec::new(),
            )
            .await?;
        rows.iter().map(|r| Ok(AuditedTenant { tenant: TenantId(r.int(0)?), org_name: r.text(1)?, environment: r.text(2)? })).collect()
    }

    /// A tenant's audit records created in `[from, to)` (micros), after
    /// chain position `after`, in chain order.
    pub async fn compliance_audit_between(&self, tenant: TenantId, from: i64, to: i64, after: i64, limit: i64) -> Result<Vec<StoredAudit>, StoreError> {
        let rows = self
            .compliance_query(
                format!(
                    "SELECT {AUDIT_COLUMNS} FROM compliance_audit_events WHERE tenant_id = $1 AND seq > $2 AND created_at >= $3 AND created_at < $4 \
                     ORDER BY seq LIMIT $5"
                ),
                vec![int(tenant.0), int(after), int(from), int(to), int(limit)],
            )
            .await?;
        rows.iter().map(audit_of).collect()
    }

    /// Ledger log records written in `[from, to)` (micros), after `after`, in log order.
    pub async fn ledger_log_between(&self, from: i64, to: i64, after: i64, limit: i64) -> Result<Vec<ExportedLogRecord>, StoreError> {
        let rows = self
            .compliance_query(
                String::from(
                    "SELECT seq, created_at, content, prev_hash, hash FROM ledger_log WHERE seq > $1 AND created_at >= $2 AND created_at < $3 ORDER BY seq LIMIT $4",
                ),
                vec![int(after), int(from), int(to), int(limit)],
            )
            .await?;
        let bytes = |r: &Row, i: usize| r.opt_bytes(i)?.ok_or_else(|| Row::corrupt(i));
        rows.iter()
            .map(|r| {
                let content = crate::log_content::readable(r.int(0)?, bytes(r, 2)?);
                Ok(ExportedLogRecord { seq: r.int(0)?, created_at: r.int(1)?, content, prev_hash: bytes(r, 3)?, hash: bytes(r, 4)? })
            })
            .collect()
    }
}

// ---- documents ------------------------------------------------------------

/// A customer's document; `sealed` is filled only by [`Store::customer_document_content`].
#[derive(Clone, PartialEq, Eq)]
pub struct DocumentRecord {
    pub id: String,
    pub tenant: TenantId,
    pub customer_id: String,
    pub document_type: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sealed: Option<Vec<u8>>,
    pub actor: String,
    pub created_at: i64,
}

impl std::fmt::Debug for DocumentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DocumentRecord({}, {}, {} bytes, <sealed>)", self.id, self.content_type, self.size_bytes)
    }
}

const DOCUMENT_COLUMNS: &str = "id, tenant_id, customer_id, document_type, content_type, size_bytes, actor, created_at";

fn document_of(r: &Row) -> Result<DocumentRecord, StoreError> {
    Ok(DocumentRecord {
        id: r.text(0)?,
        tenant: TenantId(r.int(1)?),
        customer_id: r.text(2)?,
        document_type: r.text(3)?,
        content_type: r.text(4)?,
        size_bytes: r.int(5)?,
        sealed: None,
        actor: r.text(6)?,
        created_at: r.int(7)?,
    })
}

impl Store {
    pub async fn insert_customer_document(&self, d: DocumentRecord, audit: Vec<AuditRecord>, idempotency: Option<IdempotencyRecord>) -> Result<(), StoreError> {
        let stmts = vec![stmt(
            "INSERT INTO customer_documents (id, tenant_id, customer_id, document_type, content_type, size_bytes, sealed, actor, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                text(&d.id),
                int(d.tenant.0),
                text(&d.customer_id),
                text(&d.document_type),
                text(&d.content_type),
                int(d.size_bytes),
                Val::Bytes(Some(d.sealed.clone().unwrap_or_default())),
                text(&d.actor),
                int(d.created_at),
            ],
        )];
        self.compliance_write(Write { tenant: Some(d.tenant), stmts, audit, idempotency }).await.map(|_| ())
    }

    /// A customer's documents (metadata only), oldest first, at most 100.
    pub async fn list_customer_documents(&self, tenant: TenantId, customer_id: String) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!("SELECT {DOCUMENT_COLUMNS} FROM customer_documents WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id LIMIT 100"),
                vec![int(tenant.0), text(customer_id)],
            )
            .await?;
        rows.iter().map(document_of).collect()
    }

    /// One document with its sealed content.
    pub async fn customer_document_content(&self, tenant: TenantId, customer_id: String, id: String) -> Result<Option<DocumentRecord>, StoreError> {
        let rows = self
            .compliance_query(
                format!("SELECT {DOCUMENT_COLUMNS}, sealed FROM customer_documents WHERE tenant_id = $1 AND customer_id = $2 AND id = $3"),
                vec![int(tenant.0), text(customer_id), text(id)],
            )
            .await?;
        let Some(r) = rows.first() else { return Ok(None) };
        let mut d = document_of(r)?;
        d.sealed = r.opt_bytes(8)?;
        Ok(Some(d))
    }
}

// ---- customers' ledger accounts -------------------------------------------

impl Store {
    /// Links a ledger account to a customer; `Ok(false)` when the account is linked already.
    #[expect(clippy::too_many_arguments, reason = "one link's fields and its write's records")]
    pub async fn link_customer_account(
        &self,
        tenant: TenantId,
        customer_id: String,
        account_id: String,
        actor: String,
        now: i64,
        audit: Vec<AuditRecord>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<bool, StoreError> {
        // The account may join a blocked customer: it is locked (or the generation bumped) first.
        let mut stmts = blocking_change("SELECT id FROM accounts WHERE tenant_id = $1 AND id = $2 FOR UPDATE", vec![int(tenant.0), text(&account_id)]);
        stmts.push(guarded(
            "INSERT INTO customer_accounts (tenant_id, account_id, customer_id, actor, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM customer_accounts WHERE tenant_id = $1 AND account_id = $2)",
            vec![int(tenant.0), text(account_id), text(customer_id), text(actor), int(now)],
            1,
        ));
        match self.compliance_write(Write { tenant: Some(tenant), stmts, audit, idempotency }).await {
            Err(StoreError::Conflict(_)) => Ok(false),
            other => other,
        }
    }

    /// The customer a ledger account belongs to, if any.
    pub async fn account_customer(&self, tenant: TenantId, account_id: String) -> Result<Option<String>, StoreError> {
        let rows = self
            .compliance_query(
                String::from("SELECT customer_id FROM customer_accounts WHERE tenant_id = $1 AND account_id = $2"),
                vec![int(tenant.0), text(account_id)],
            )
            .await?;
        rows.first().map(|r| r.text(0)).transpose()
    }

    /// The owners of those of `account_ids` that belong to a customer.
    pub async fn account_customers(&self, tenant: TenantId, account_ids: Vec<String>) -> Result<HashMap<String, CustomerLink>, StoreError> {
        let mut found = HashMap::new();
        for chunk in account_ids.chunks(500) {
            let list = crate::customers::placeholders(2, chunk.len());
            let sql = format!("SELECT account_id, customer_id, actor FROM customer_accounts WHERE tenant_id = $1 AND account_id IN ({list})");
            let mut params = vec![int(tenant.0)];
            params.extend(chunk.iter().map(text));
            for r in &self.compliance_query(sql, params).await? {
                found.insert(r.text(0)?, CustomerLink { customer_id: r.text(1)?, actor: r.text(2)? });
            }
        }
        Ok(found)
    }

    /// A customer's ledger accounts (at most 1,000).
    pub async fn customer_accounts(&self, tenant: TenantId, customer_id: String) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .compliance_query(
                String::from("SELECT account_id, created_at FROM customer_accounts WHERE tenant_id = $1 AND customer_id = $2 ORDER BY account_id LIMIT 1000"),
                vec![int(tenant.0), text(customer_id)],
            )
            .await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.int(1)?))).collect()
    }

    /// Every account of the tenant that belongs to a customer whose latest
    /// screening is a potential (unresolved) or confirmed sanctions match (at most 100,000).
    pub async fn blocked_accounts_of_tenant(&self, tenant: TenantId) -> Result<Vec<String>, StoreError> {
        let rows = self
            .compliance_query(
                String::from(
                    "SELECT a.account_id FROM customer_accounts a JOIN customers c ON c.tenant_id = a.tenant_id AND c.id = a.customer_id \
                     WHERE a.tenant_id = $1 AND c.screening_status IN ('potential_match', 'confirmed_match') LIMIT 100000",
                ),
                vec![int(tenant.0)],
            )
            .await?;
        rows.iter().map(|r| r.text(0)).collect()
    }

    /// Of `account_ids`, those that belong to a customer whose latest
    /// screening is a potential (unresolved) or confirmed sanctions match: `(account, customer)`.
    pub async fn blocked_accounts(&self, tenant: TenantId, account_ids: Vec<String>) -> Result<Vec<(String, String)>, StoreError> {
        let mut found = Vec::new();
        for chunk in account_ids.chunks(500) {
            let list = crate::customers::placeholders(2, chunk.len());
            let sql = format!(
                "SELECT a.account_id, a.customer_id FROM customer_accounts a JOIN customers c ON c.tenant_id = a.tenant_id AND c.id = a.customer_id \
                 WHERE a.tenant_id = $1 AND c.screening_status IN ('potential_match', 'confirmed_match') AND a.account_id IN ({list}) ORDER BY a.account_id"
            );
            let mut params = vec![int(tenant.0)];
            params.extend(chunk.iter().map(text));
            let rows = self.compliance_query(sql, params).await?;
            for r in &rows {
                found.push((r.text(0)?, r.text(1)?));
            }
        }
        Ok(found)
    }
}
