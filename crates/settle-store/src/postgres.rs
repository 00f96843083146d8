//! PostgreSQL backend: a pool of connections for reads and operator
//! commands, and one connection the engine owns for its write batches.
//!
//! Several servers may share one database. The engine's write path locks
//! what it loads (`FOR UPDATE`): transactions, then accounts, each in id
//! order, then the one-row `ledger_head`, so two engines serialize on the
//! rows they share, never deadlock on lock order, and append to one hash
//! chain. A unique key inserted concurrently by another server surfaces as
//! [`StoreError::Conflict`], and the engine retries the batch.
//!
//! Reads mirror `sqlite.rs` operation by operation. A read that needs more
//! than one statement runs in a read-only `REPEATABLE READ` transaction, so
//! it sees one snapshot (a hold is never half swept).

use crate::engine::{BatchEffects, TransactionUpdate, WriteBackend};
use crate::error::StoreError;
use crate::records::{AccountRecord, ApiKeyRecord, Cursor, EntryRow, IdempotencyRecord, LogRecord, Page, PageRequest, StoredResponse};
use crate::rows::{self, AccountRow, AsOfRow, EntryRowData, KeyFilter, KeyRow, TransactionRow, scopes_text};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use settle_core::chain::Hash;
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, ApiKeyId, EntryId, OrgId, TransactionId};
use settle_core::ledger::{AccountState, Counters, Entry, Transaction, TransactionStatus};
use settle_core::tenancy::RateLimit;
use settle_core::tenancy::{Environment, Scope, TenantId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{IsolationLevel, NoTls, Row};

mod versioning;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_ledger.sql")),
    (2, include_str!("../migrations/postgres/0002_versioning.sql")),
    (3, include_str!("../migrations/postgres/0003_rate_limits.sql")),
    (4, include_str!("../migrations/postgres/0004_signatures.sql")),
    (5, include_str!("../migrations/postgres/0005_operations.sql")),
    (6, include_str!("../migrations/postgres/0006_events.sql")),
    (7, include_str!("../migrations/postgres/0007_bank_reconciliation.sql")),
    (8, include_str!("../migrations/postgres/0008_account_changes.sql")),
    (9, include_str!("../migrations/postgres/0009_customers.sql")),
    (10, include_str!("../migrations/postgres/0010_feature_flags.sql")),
    (11, include_str!("../migrations/postgres/0011_reconciliation_scopes.sql")),
    (12, include_str!("../migrations/postgres/0012_customers_scopes.sql")),
    (13, include_str!("../migrations/postgres/0013_ach.sql")),
    (14, include_str!("../migrations/postgres/0014_faults.sql")),
    (15, include_str!("../migrations/postgres/0015_audit_client_ip.sql")),
    (16, include_str!("../migrations/postgres/0016_test_clocks_and_rate_alerts.sql")),
    (17, include_str!("../migrations/postgres/0017_blocked_generation.sql")),
    (18, include_str!("../migrations/postgres/0018_compliance_reviews.sql")),
    (19, include_str!("../migrations/postgres/0019_ach_prenotes.sql")),
    (20, include_str!("../migrations/postgres/0020_ach_retries.sql")),
    (22, include_str!("../migrations/postgres/0022_ach_ledger_repairs.sql")),
    (23, include_str!("../migrations/postgres/0023_events_without_rowid.sql")),
    (24, include_str!("../migrations/postgres/0024_events_keyed_by_tenant.sql")),
];
/// Connections per server, the engine's included. PostgreSQL's default
/// `max_connections` (100) leaves room for several servers.
const POOL_SIZE: usize = 16;
/// How long opening a connection may take before the database counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Key of the advisory lock migrations hold (ASCII "settle" + 1), so
/// servers started together migrate one after the other.
const MIGRATION_LOCK_KEY: i64 = 0x7365_7474_6c65_0001;
/// Rows fetched per step of a keyset walk.
const SCAN_CHUNK: i64 = 256;

macro_rules! account_columns {
    () => {
        "id, tenant_id, name, currency, normal_balance, min_available_balance, external_id, metadata, created_at, \
         posted_debits, posted_credits, pending_debits, pending_credits, version, correlation_id"
    };
}
macro_rules! transaction_columns {
    () => {
        "id, tenant_id, status, description, external_id, effective_at, expires_at, created_at, posted_at, voided_at, \
         void_reason, reverses, reversed_by, metadata, correlation_id"
    };
}
macro_rules! entry_columns {
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "transaction_id, ",
            $p,
            "account_id, ",
            $p,
            "direction, ",
            $p,
            "amount, ",
            $p,
            "currency, ",
            $p,
            "leg, ",
            $p,
            "effective_at, ",
            $p,
            "created_at"
        )
    };
}

/// Reads and operator writes on a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// How to connect outside the pool: a `LISTEN` needs a connection of its own.
    config: std::sync::Arc<tokio_postgres::Config>,
}

/// The engine's connection: taken from the pool once and kept. If the
/// connection dies (a database restart), the next batch takes a fresh one.
pub struct PgWriter {
    pool: Pool,
    client: Option<Object>,
    in_transaction: bool,
}

impl PgStore {
    /// Builds the pool and checks that one connection opens, so a wrong URL
    /// fails at startup rather than on the first request.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Other(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("settle");
        }
        let manager = Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Other(format!("building the PostgreSQL pool: {e}")))?;
        drop(pool.get().await?);
        Ok(PgStore { pool, config: std::sync::Arc::new(config) })
    }

    /// Applies pending migrations in one transaction that holds an advisory
    /// lock, so processes starting at once take turns and each migration runs once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)").await?;
        for (version, sql) in MIGRATIONS {
            let done = tx.query_opt("SELECT version FROM schema_migrations WHERE version = $1", &[version]).await?;
            if done.is_none() {
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, extract(epoch FROM now())::bigint)", &[version]).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The engine's write side, on a connection of its own.
    pub async fn writer(&self) -> Result<PgWriter, StoreError> {
        let client = self.pool.get().await?;
        Ok(PgWriter { pool: self.pool.clone(), client: Some(client), in_transaction: false })
    }

    pub async fn ready(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        // Numbers may have gaps (each backend keeps the other's numbers): count what is applied.
        let known: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let row = client.query_one("SELECT COUNT(*) FROM schema_migrations WHERE version = ANY($1)", &[&known]).await?;
        let applied: i64 = get(&row, 0)?;
        if applied < MIGRATIONS.len() as i64 { Err(StoreError::Unavailable(String::from("migrations not applied"))) } else { Ok(()) }
    }

    /// A pooled connection inside a read-only snapshot. Dropping the
    /// transaction without committing rolls it back.
    async fn snapshot(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
        Ok(client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?)
    }

    pub async fn get_account(&self, tenant: TenantId, id: AccountId, now: Timestamp) -> Result<Option<AccountRecord>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = Self::snapshot(&mut client).await?;
        let stmt = tx.prepare_cached(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1 AND tenant_id = $2")).await?;
        let Some(row) = tx.query_opt(&stmt, &[&id.as_str(), &tenant.0]).await? else {
            return Ok(None);
        };
        let record = account_row(&row)?.into_record()?;
        let expired = expired_hold_entries(&tx, now, &[id.as_str()]).await?;
        tx.commit().await?;
        Ok(Some(rows::without_expired_holds(record, &expired)))
    }

    /// Accounts by id as stored, in one statement (no hold expiry applied):
    /// what the event projector needs of the accounts a round opened.
    pub(crate) async fn accounts_by_ids(&self, ids: &[&str]) -> Result<Vec<AccountRecord>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = ANY($1)")).await?;
        client.query(&stmt, &[&ids]).await?.iter().map(|r| account_row(r)?.into_record()).collect()
    }

    pub async fn list_accounts(&self, tenant: TenantId, page: PageRequest, now: Timestamp) -> Result<Page<AccountRecord>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = Self::snapshot(&mut client).await?;
        let (descending, bound) = page.cursor.keyset_start(false);
        let sql = if descending {
            concat!("SELECT ", account_columns!(), " FROM accounts WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
        } else {
            concat!("SELECT ", account_columns!(), " FROM accounts WHERE tenant_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3")
        };
        let stmt = tx.prepare_cached(sql).await?;
        let found = tx.query(&stmt, &[&tenant.0, &bound, &(i64::from(page.limit) + 1)]).await?;
        let records = found.iter().map(|r| account_row(r)?.into_record()).collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<&str> = records.iter().map(|r| r.state.id.as_str()).collect();
        let expired = expired_hold_entries(&tx, now, &ids).await?;
        tx.commit().await?;
        let records = records.into_iter().map(|r| rows::without_expired_holds(r, &expired)).collect();
        Ok(Page::from_rows(records, &page))
    }

    pub async fn get_transaction(&self, tenant: TenantId, id: TransactionId, now: Timestamp) -> Result<Option<Transaction>, StoreError> {
        let client = self.pool.get().await?;
        let found = read_transactions(&client, &[id.as_str()]).await?;
        Ok(found.into_iter().next().filter(|t| t.tenant == tenant).map(|t| t.as_seen_at(now)))
    }

    /// Newest first. By account, walks the account's entries (adjacent
    /// entries of one transaction count once); otherwise the tenant's
    /// transactions. A status filter applies to the status as seen at `now`.
    pub async fn list_transactions(
        &self,
        tenant: TenantId,
        account: Option<AccountId>,
        status: Option<TransactionStatus>,
        page: PageRequest,
        now: Timestamp,
    ) -> Result<Page<Transaction>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = Self::snapshot(&mut client).await?;
        let want = page.limit as usize + 1;
        let (descending, mut bound) = page.cursor.keyset_start(account.is_some());
        let account_id = account.as_ref().map(AccountId::as_str);
        let pending = status == Some(TransactionStatus::Pending);
        let walk_sql = match (account_id.is_some(), descending) {
            // Open holds have an index of their own (`transactions_pending`).
            (false, true) if pending => "SELECT id, id FROM transactions WHERE tenant_id = $1 AND status = 'pending' AND id < $2 ORDER BY id DESC LIMIT $3",
            (false, false) if pending => "SELECT id, id FROM transactions WHERE tenant_id = $1 AND status = 'pending' AND id > $2 ORDER BY id ASC LIMIT $3",
            (false, true) => "SELECT id, id FROM transactions WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            (false, false) => "SELECT id, id FROM transactions WHERE tenant_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3",
            (true, true) => "SELECT id, transaction_id FROM entries WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            (true, false) => "SELECT id, transaction_id FROM entries WHERE account_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3",
        };
        if let Some(account_id) = account_id
            && account_owner(&tx, account_id).await? != Some(tenant)
        {
            return Ok(Page { items: Vec::new(), has_more: false });
        }
        let owner: &(dyn ToSql + Sync) = match &account_id {
            Some(a) => a,
            None => &tenant.0,
        };
        let walk = tx.prepare_cached(walk_sql).await?;
        let mut found: Vec<Transaction> = Vec::new();
        let mut last_tx: Option<String> = None;
        loop {
            let steps = tx.query(&walk, &[owner, &bound, &SCAN_CHUNK]).await?;
            let mut candidates: Vec<String> = Vec::new();
            for step in &steps {
                let tx_id: String = get(step, 1)?;
                // Entries of one transaction are adjacent in an account's index.
                if last_tx.as_deref() != Some(tx_id.as_str()) {
                    last_tx = Some(tx_id.clone());
                    candidates.push(tx_id);
                }
            }
            // Load no more transactions at a time than the page still needs.
            let mut rest = candidates.as_slice();
            while !rest.is_empty() && found.len() < want {
                let (next, later) = rest.split_at((want - found.len()).min(rest.len()));
                rest = later;
                let ids: Vec<&str> = next.iter().map(String::as_str).collect();
                let mut loaded: HashMap<String, Transaction> = read_transactions(&tx, &ids).await?.into_iter().map(|t| (t.id.to_string(), t)).collect();
                for id in next {
                    if let Some(t) = loaded.remove(id) {
                        let t = t.as_seen_at(now);
                        if status.is_none_or(|s| t.status == s) {
                            found.push(t);
                        }
                    }
                }
            }
            if found.len() >= want {
                break;
            }
            match steps.last() {
                Some(last) if steps.len() as i64 == SCAN_CHUNK => bound = get(last, 0)?,
                _ => break,
            }
        }
        tx.commit().await?;
        Ok(Page::from_rows(found, &page))
    }

    pub async fn list_entries(&self, tenant: TenantId, account: AccountId, page: PageRequest, now: Timestamp) -> Result<Option<Page<EntryRow>>, StoreError> {
        let client = self.pool.get().await?;
        if account_owner(&client, account.as_str()).await? != Some(tenant) {
            return Ok(None);
        }
        let (sql, bound) = match &page.cursor {
            Cursor::Start => (ENTRIES_OLDER, "~"),
            Cursor::After(id) => (ENTRIES_OLDER, id.as_str()),
            Cursor::Before(id) => (ENTRIES_NEWER, id.as_str()),
        };
        let stmt = client.prepare_cached(sql).await?;
        let found = client.query(&stmt, &[&account.as_str(), &bound, &(i64::from(page.limit) + 1)]).await?;
        let mut items = Vec::with_capacity(found.len());
        for r in &found {
            let status: String = get(r, 9)?;
            let expires_at: Option<i64> = get(r, 10)?;
            let mut status = TransactionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?;
            if status == TransactionStatus::Pending && expires_at.is_some_and(|at| at <= now.micros()) {
                status = TransactionStatus::Voided;
            }
            items.push(EntryRow { entry: entry_row(r, 0)?.into_entry()?, transaction_status: status });
        }
        Ok(Some(Page::from_rows(items, &page)))
    }

    /// Balances at an instant of effective time, folded from entries.
    pub async fn balances_as_of(&self, tenant: TenantId, account: AccountId, at: Timestamp) -> Result<Option<(AccountRecord, Counters)>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = Self::snapshot(&mut client).await?;
        let stmt = tx.prepare_cached(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1 AND tenant_id = $2")).await?;
        let Some(row) = tx.query_opt(&stmt, &[&account.as_str(), &tenant.0]).await? else {
            return Ok(None);
        };
        let record = account_row(&row)?.into_record()?;
        let stmt = tx
            .prepare_cached(
                "SELECT e.leg, e.direction, e.amount, t.posted_at, t.voided_at, t.expires_at
                 FROM entries e JOIN transactions t ON t.id = e.transaction_id WHERE e.account_id = $1 AND e.effective_at <= $2",
            )
            .await?;
        let found = tx.query(&stmt, &[&account.as_str(), &at.micros()]).await?;
        tx.commit().await?;
        let mut counters = Counters::default();
        for r in &found {
            AsOfRow { leg: get(r, 0)?, direction: get(r, 1)?, amount: get(r, 2)?, posted_at: get(r, 3)?, voided_at: get(r, 4)?, expires_at: get(r, 5)? }
                .fold_into(&mut counters, at)?;
        }
        Ok(Some((record, counters)))
    }

    pub async fn find_idempotency(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached("SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE tenant_id = $1 AND key = $2").await?;
        let Some(r) = client.query_opt(&stmt, &[&tenant.0, &key]).await? else {
            return Ok(None);
        };
        Ok(Some(IdempotencyRecord {
            tenant,
            key: key.to_owned(),
            fingerprint: get(&r, 0)?,
            response: stored_response(get(&r, 1)?, get(&r, 2)?)?,
            created_at: Timestamp::from_micros(get(&r, 3)?),
        }))
    }

    pub async fn api_keys(&self, filter: KeyFilter<'_>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let client = self.pool.get().await?;
        let (sql, value) = match filter {
            KeyFilter::All => (KEYS_ALL, None),
            KeyFilter::SecretHash(h) => (KEYS_BY_SECRET_HASH, Some(h)),
            KeyFilter::Id(id) => (KEYS_BY_ID, Some(id)),
        };
        let stmt = client.prepare_cached(sql).await?;
        let found = client.query(&stmt, &[&value]).await?;
        found
            .iter()
            .map(|r| {
                KeyRow {
                    id: get(r, 0)?,
                    org_id: get(r, 1)?,
                    org_name: get(r, 2)?,
                    environment: get(r, 3)?,
                    tenant: get(r, 4)?,
                    scopes: get(r, 5)?,
                    created_at: get(r, 6)?,
                    revoked_at: get(r, 7)?,
                    api_version: get(r, 8)?,
                    rate_limit_per_second: get(r, 9)?,
                    rate_limit_burst: get(r, 10)?,
                }
                .into_record()
            })
            .collect()
    }

    /// Creates (or finds) the organization and its tenant, then a key for it,
    /// with its encrypted signing secret when it must sign its requests: all
    /// in one transaction, so a key never exists without its requirement.
    #[expect(clippy::too_many_arguments, reason = "mirrors the SQLite store")]
    pub async fn create_api_key(
        &self,
        org_name: &str,
        environment: Environment,
        key_id: &ApiKeyId,
        org_id_if_new: &OrgId,
        secret_hash: &str,
        scopes: &[Scope],
        signing_ciphertext: Option<&[u8]>,
        now: Timestamp,
    ) -> Result<ApiKeyRecord, StoreError> {
        {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            // Under READ COMMITTED each statement sees rows a concurrent
            // caller committed meanwhile, so the SELECTs find the winner's row.
            tx.execute(
                "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&org_id_if_new.as_str(), &org_name, &now.micros()],
            )
            .await?;
            let org: String = get(&tx.query_one("SELECT id FROM organizations WHERE name = $1", &[&org_name]).await?, 0)?;
            tx.execute(
                "INSERT INTO tenants (org_id, environment) VALUES ($1, $2) ON CONFLICT (org_id, environment) DO NOTHING",
                &[&org, &environment.as_str()],
            )
            .await?;
            let tenant: i64 = get(&tx.query_one("SELECT id FROM tenants WHERE org_id = $1 AND environment = $2", &[&org, &environment.as_str()]).await?, 0)?;
            tx.execute(
                "INSERT INTO api_keys (id, tenant_id, secret_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&key_id.as_str(), &tenant, &secret_hash, &scopes_text(scopes), &now.micros()],
            )
            .await?;
            if let Some(ciphertext) = signing_ciphertext {
                tx.execute(
                    "INSERT INTO api_key_signing_secrets (api_key_id, ciphertext, created_at) VALUES ($1, $2, $3)",
                    &[&key_id.as_str(), &ciphertext, &now.micros()],
                )
                .await?;
            }
            tx.commit().await?;
        }
        self.api_keys(KeyFilter::Id(key_id.as_str())).await?.into_iter().next().ok_or_else(|| StoreError::Other(String::from("created key not found")))
    }

    /// Sets (or, with `None`, clears) a key's own rate limit; false when no such key.
    pub async fn set_api_key_rate_limit(&self, id: &ApiKeyId, limit: Option<RateLimit>) -> Result<bool, StoreError> {
        let (rate, burst) = (limit.map(|l| i64::from(l.per_second())), limit.map(|l| i64::from(l.burst())));
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached("UPDATE api_keys SET rate_limit_per_second = $2, rate_limit_burst = $3 WHERE id = $1").await?;
        Ok(client.execute(&stmt, &[&id.as_str(), &rate, &burst]).await? > 0)
    }

    pub async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL").await?;
        Ok(client.execute(&stmt, &[&id.as_str(), &now.micros()]).await? > 0)
    }

    pub async fn count_organizations(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        get(&client.query_one("SELECT COUNT(*) FROM organizations", &[]).await?, 0)
    }

    /// Log records with `seq > after`, at most `limit`, in order.
    pub async fn log_records(&self, after: i64, limit: i64) -> Result<Vec<LogRecord>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached("SELECT seq, content, prev_hash, hash FROM ledger_log WHERE seq > $1 ORDER BY seq LIMIT $2").await?;
        let found = client.query(&stmt, &[&after, &limit]).await?;
        found.iter().map(|r| Ok(LogRecord { seq: get(r, 0)?, content: get(r, 1)?, prev_hash: get(r, 2)?, hash: get(r, 3)? }.unpacked())).collect()
    }

    /// Up to `limit` entry rows with ids above `after`, in id order, each with
    /// its transaction's stored status (audits walk the whole table this way).
    pub async fn entries_chunk(&self, after: &str, limit: i64) -> Result<Vec<(Entry, TransactionStatus)>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                entry_columns!("e."),
                ", t.status FROM entries e JOIN transactions t ON t.id = e.transaction_id WHERE e.id > $1 ORDER BY e.id LIMIT $2"
            ))
            .await?;
        let found = client.query(&stmt, &[&after, &limit]).await?;
        found
            .iter()
            .map(|r| {
                let status: String = get(r, 9)?;
                let status = TransactionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?;
                Ok((entry_row(r, 0)?.into_entry()?, status))
            })
            .collect()
    }

    /// Every account's stored state, for audits.
    /// An account's stored counters and what its entries sum to, from one snapshot.
    pub async fn recount(&self, id: &AccountId) -> Result<Option<(Counters, Counters)>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = Self::snapshot(&mut client).await?;
        let Some(row) = tx.query_opt(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1"), &[&id.as_str()]).await? else {
            return Ok(None);
        };
        let stored = account_row(&row)?.into_record()?.state.counters;
        let sum = sum_entries(&tx, std::slice::from_ref(id)).await?.remove(id).unwrap_or_default();
        tx.commit().await?;
        Ok(Some((stored, sum)))
    }

    pub async fn all_account_states(&self) -> Result<Vec<AccountState>, StoreError> {
        let client = self.pool.get().await?;
        let found = client.query(concat!("SELECT ", account_columns!(), " FROM accounts ORDER BY id"), &[]).await?;
        found.iter().map(|r| account_row(r)?.into_record().map(|rec| rec.state)).collect()
    }
}

const ENTRIES_OLDER: &str = concat!(
    "SELECT ",
    entry_columns!("e."),
    ", t.status, t.expires_at FROM entries e JOIN transactions t ON t.id = e.transaction_id
     WHERE e.account_id = $1 AND e.id < $2 ORDER BY e.id DESC LIMIT $3"
);
const ENTRIES_NEWER: &str = concat!(
    "SELECT ",
    entry_columns!("e."),
    ", t.status, t.expires_at FROM entries e JOIN transactions t ON t.id = e.transaction_id
     WHERE e.account_id = $1 AND e.id > $2 ORDER BY e.id ASC LIMIT $3"
);

macro_rules! keys_query {
    ($clause:literal) => {
        concat!(
            "SELECT k.id, o.id, o.name, t.environment, t.id, k.scopes, k.created_at, k.revoked_at,
             o.api_version, k.rate_limit_per_second, k.rate_limit_burst
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id JOIN organizations o ON o.id = t.org_id
             WHERE ",
            $clause,
            " ORDER BY k.id"
        )
    };
}
const KEYS_ALL: &str = keys_query!("$1::text IS NULL");
const KEYS_BY_SECRET_HASH: &str = keys_query!("k.secret_hash = $1");
const KEYS_BY_ID: &str = keys_query!("k.id = $1");

// ---- row readers -------------------------------------------------------

/// A column, or `Corrupt` when the stored value does not have the expected type.
fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

fn account_row(r: &Row) -> Result<AccountRow, StoreError> {
    Ok(AccountRow {
        id: get(r, 0)?,
        tenant_id: get(r, 1)?,
        name: get(r, 2)?,
        currency: get(r, 3)?,
        normal_balance: get(r, 4)?,
        min_available_balance: get(r, 5)?,
        external_id: get(r, 6)?,
        metadata: get(r, 7)?,
        created_at: get(r, 8)?,
        posted_debits: get(r, 9)?,
        posted_credits: get(r, 10)?,
        pending_debits: get(r, 11)?,
        pending_credits: get(r, 12)?,
        version: get(r, 13)?,
        correlation_id: get(r, 14)?,
    })
}

fn transaction_row(r: &Row) -> Result<TransactionRow, StoreError> {
    Ok(TransactionRow {
        id: get(r, 0)?,
        tenant_id: get(r, 1)?,
        status: get(r, 2)?,
        description: get(r, 3)?,
        external_id: get(r, 4)?,
        effective_at: get(r, 5)?,
        expires_at: get(r, 6)?,
        created_at: get(r, 7)?,
        posted_at: get(r, 8)?,
        voided_at: get(r, 9)?,
        void_reason: get(r, 10)?,
        reverses: get(r, 11)?,
        reversed_by: get(r, 12)?,
        metadata: get(r, 13)?,
        correlation_id: get(r, 14)?,
    })
}

/// The nine entry columns starting at `at`.
fn entry_row(r: &Row, at: usize) -> Result<EntryRowData, StoreError> {
    Ok(EntryRowData {
        id: get(r, at)?,
        transaction_id: get(r, at + 1)?,
        account_id: get(r, at + 2)?,
        direction: get(r, at + 3)?,
        amount: get(r, at + 4)?,
        currency: get(r, at + 5)?,
        leg: get(r, at + 6)?,
        effective_at: get(r, at + 7)?,
        created_at: get(r, at + 8)?,
    })
}

fn stored_response(status: i64, body: Vec<u8>) -> Result<StoredResponse, StoreError> {
    let status = u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("idempotency status {status}")))?;
    Ok(StoredResponse { status, body })
}

/// The entry-id key ranges of these transactions, as two parallel arrays.
fn entry_ranges<'a>(ids: impl Iterator<Item = &'a str>) -> (Vec<String>, Vec<String>) {
    ids.map(|id| EntryId::range_of(&TransactionId::from_trusted(id.to_owned()))).unzip()
}

/// What the stored entries of each account sum to.
async fn sum_entries(c: &impl GenericClient, ids: &[AccountId]) -> Result<HashMap<AccountId, Counters>, StoreError> {
    let names: Vec<&str> = ids.iter().map(AccountId::as_str).collect();
    let stmt = c
        .prepare_cached(
            "SELECT e.account_id, e.leg, e.direction, e.amount, t.status FROM entries e JOIN transactions t ON t.id = e.transaction_id
             WHERE e.account_id = ANY($1)",
        )
        .await?;
    let mut sums: HashMap<AccountId, Counters> = ids.iter().map(|id| (id.clone(), Counters::default())).collect();
    for row in c.query(&stmt, &[&names]).await? {
        let account = AccountId::from_trusted(row.try_get(0)?);
        let (leg, direction, amount, status): (String, String, i64, String) = (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
        rows::fold_entry(sums.entry(account).or_default(), &leg, &direction, amount, &status)?;
    }
    Ok(sums)
}

async fn account_owner(c: &impl GenericClient, account: &str) -> Result<Option<TenantId>, StoreError> {
    let stmt = c.prepare_cached("SELECT tenant_id FROM accounts WHERE id = $1").await?;
    match c.query_opt(&stmt, &[&account]).await? {
        Some(r) => Ok(Some(TenantId(get(&r, 0)?))),
        None => Ok(None),
    }
}

/// Transactions with their entries, in id order, in one statement (so one
/// snapshot): each transaction row joined with its entry-id range.
pub(crate) async fn read_transactions(c: &impl GenericClient, ids: &[&str]) -> Result<Vec<Transaction>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (lo, hi) = entry_ranges(ids.iter().copied());
    let stmt = c
        .prepare_cached(concat!(
            "SELECT t.id, t.tenant_id, t.status, t.description, t.external_id, t.effective_at, t.expires_at, t.created_at, t.posted_at,
                    t.voided_at, t.void_reason, t.reverses, t.reversed_by, t.metadata, t.correlation_id, ",
            entry_columns!("e."),
            " FROM UNNEST($1::text[], $2::text[], $3::text[]) AS r (id, lo, hi)
              JOIN transactions t ON t.id = r.id
              LEFT JOIN entries e ON e.id > r.lo AND e.id < r.hi
              ORDER BY t.id, e.id"
        ))
        .await?;
    let found = c.query(&stmt, &[&ids, &lo, &hi]).await?;
    let mut transactions: Vec<TransactionRow> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    for r in &found {
        let id: String = get(r, 0)?;
        if transactions.last().is_none_or(|t| t.id != id) {
            transactions.push(transaction_row(r)?);
        }
        // A transaction without entries (never written) still has its row.
        if get::<Option<String>>(r, 15)?.is_some() {
            entries.push(entry_row(r, 15)?.into_entry()?);
        }
    }
    rows::attach_entries(transactions, entries)
}

/// Entries in the given transactions' id ranges, optionally only pending
/// legs on some accounts.
async fn entries_in_ranges(c: &impl GenericClient, ids: &[&str], pending_legs_of: Option<&[&str]>) -> Result<Vec<Entry>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (lo, hi) = entry_ranges(ids.iter().copied());
    let found = match pending_legs_of {
        None => {
            let stmt = c
                .prepare_cached(concat!(
                    "SELECT ",
                    entry_columns!("e."),
                    " FROM UNNEST($1::text[], $2::text[]) AS r (lo, hi) JOIN entries e ON e.id > r.lo AND e.id < r.hi"
                ))
                .await?;
            c.query(&stmt, &[&lo, &hi]).await?
        }
        Some(accounts) => {
            let stmt = c
                .prepare_cached(concat!(
                    "SELECT ",
                    entry_columns!("e."),
                    " FROM UNNEST($1::text[], $2::text[]) AS r (lo, hi) JOIN entries e ON e.id > r.lo AND e.id < r.hi
                      WHERE e.account_id = ANY($3) AND e.leg = 'pending'"
                ))
                .await?;
            c.query(&stmt, &[&lo, &hi, &accounts]).await?
        }
    };
    found.iter().map(|r| entry_row(r, 0)?.into_entry()).collect()
}

/// The pending legs, on `accounts`, of holds that have expired but that the
/// engine has not voided yet: what readers must not count.
async fn expired_hold_entries(c: &impl GenericClient, now: Timestamp, accounts: &[&str]) -> Result<Vec<Entry>, StoreError> {
    if accounts.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = c.prepare_cached("SELECT id FROM transactions WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1").await?;
    let found = c.query(&stmt, &[&now.micros()]).await?;
    let expired: Vec<String> = found.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
    let expired: Vec<&str> = expired.iter().map(String::as_str).collect();
    entries_in_ranges(c, &expired, Some(accounts)).await
}

// ---- write side: the engine's connection --------------------------------

impl PgWriter {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client.as_ref().ok_or_else(|| StoreError::Unavailable(String::from("the engine has no database connection")))
    }
}

/// Fails the batch unless a bulk UPDATE touched exactly the rows it meant to:
/// the engine holds locks on all of them, so anything else is a bug.
fn expect_rows(what: &str, updated: u64, expected: usize) -> Result<(), StoreError> {
    if updated == expected as u64 { Ok(()) } else { Err(StoreError::Other(format!("{what}: updated {updated} rows, expected {expected}"))) }
}

impl WriteBackend for PgWriter {
    fn system(&self) -> &'static str {
        "postgresql"
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.client = Some(self.pool.get().await?);
        }
        self.client()?.batch_execute("BEGIN").await?;
        self.in_transaction = true;
        Ok(())
    }

    async fn due_expiries(&mut self, now: Timestamp, limit: usize) -> Result<Vec<TransactionId>, StoreError> {
        let c = self.client()?;
        // SKIP LOCKED: a hold another server is already voiding (or posting) is its business.
        let stmt = c
            .prepare_cached(
                "SELECT id FROM transactions WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found = c.query(&stmt, &[&now.micros(), &limit]).await?;
        found.iter().map(|r| get(r, 0).map(TransactionId::from_trusted)).collect()
    }

    async fn load_transactions(&mut self, ids: &[TransactionId]) -> Result<Vec<Transaction>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client()?;
        let ids: Vec<&str> = ids.iter().map(TransactionId::as_str).collect();
        // Lock first; the entries are read by a second statement, which under
        // READ COMMITTED sees every leg committed before the lock was granted.
        let stmt = c.prepare_cached(concat!("SELECT ", transaction_columns!(), " FROM transactions WHERE id = ANY($1) ORDER BY id FOR UPDATE")).await?;
        let locked = c.query(&stmt, &[&ids]).await?;
        let locked: Vec<TransactionRow> = locked.iter().map(transaction_row).collect::<Result<_, _>>()?;
        let locked_ids: Vec<&str> = locked.iter().map(|t| t.id.as_str()).collect();
        let entries = entries_in_ranges(c, &locked_ids, None).await?;
        rows::attach_entries(locked, entries)
    }

    async fn load_accounts(&mut self, ids: &[AccountId]) -> Result<Vec<AccountState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client()?;
        let ids: Vec<&str> = ids.iter().map(AccountId::as_str).collect();
        let stmt = c.prepare_cached(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE")).await?;
        let found = c.query(&stmt, &[&ids]).await?;
        found.iter().map(|r| account_row(r)?.into_record().map(|rec| rec.state)).collect()
    }

    async fn blocked_accounts(&mut self, accounts: &[AccountState]) -> Result<HashSet<AccountId>, StoreError> {
        if accounts.is_empty() {
            return Ok(HashSet::new());
        }
        let c = self.client()?;
        // A statement after the lock: under READ COMMITTED it sees every
        // block committed before the lock was granted. A writer that blocks
        // a customer locks the customer's account rows first (see
        // `customers::blocking_change`), so it either waited for this batch
        // or this batch waited for it and now sees its block.
        let stmt = c
            .prepare_cached(
                "SELECT a.account_id FROM UNNEST($1::bigint[], $2::text[]) AS k (tenant_id, account_id)
                 JOIN customer_accounts a ON a.tenant_id = k.tenant_id AND a.account_id = k.account_id
                 JOIN customers c ON c.tenant_id = a.tenant_id AND c.id = a.customer_id
                 WHERE c.screening_status IN ('potential_match', 'confirmed_match')",
            )
            .await?;
        let tenants: Vec<i64> = accounts.iter().map(|a| a.tenant.0).collect();
        let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
        let found = c.query(&stmt, &[&tenants, &ids]).await?;
        found.iter().map(|r| get(r, 0).map(AccountId::from_trusted)).collect()
    }

    async fn find_transaction_external_ids(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
        find_external_ids(
            self.client()?,
            "SELECT t.tenant_id, t.external_id, t.id FROM UNNEST($1::bigint[], $2::text[]) AS k (tenant_id, external_id)
             JOIN transactions t ON t.tenant_id = k.tenant_id AND t.external_id = k.external_id AND t.external_id IS NOT NULL",
            keys,
        )
        .await
    }

    async fn find_account_external_ids(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
        find_external_ids(
            self.client()?,
            "SELECT a.tenant_id, a.external_id, a.id FROM UNNEST($1::bigint[], $2::text[]) AS k (tenant_id, external_id)
             JOIN accounts a ON a.tenant_id = k.tenant_id AND a.external_id = k.external_id AND a.external_id IS NOT NULL",
            keys,
        )
        .await
    }

    async fn find_idempotency(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), IdempotencyRecord>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let c = self.client()?;
        let (tenants, names): (Vec<i64>, Vec<&str>) = keys.iter().map(|(t, k)| (t.0, k.as_str())).unzip();
        let stmt = c
            .prepare_cached(
                "SELECT i.tenant_id, i.key, i.fingerprint, i.status, i.body, i.created_at
                 FROM UNNEST($1::bigint[], $2::text[]) AS k (tenant_id, key)
                 JOIN idempotency_keys i ON i.tenant_id = k.tenant_id AND i.key = k.key",
            )
            .await?;
        let found = c.query(&stmt, &[&tenants, &names]).await?;
        let mut out = HashMap::with_capacity(found.len());
        for r in &found {
            let record = IdempotencyRecord {
                tenant: TenantId(get(r, 0)?),
                key: get(r, 1)?,
                fingerprint: get(r, 2)?,
                response: stored_response(get(r, 3)?, get(r, 4)?)?,
                created_at: Timestamp::from_micros(get(r, 5)?),
            };
            out.insert((record.tenant, record.key.clone()), record);
        }
        Ok(out)
    }

    async fn log_head(&mut self) -> Result<(i64, Hash), StoreError> {
        let c = self.client()?;
        // Held until commit: every server appends after this one's records.
        let stmt = c.prepare_cached("SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE").await?;
        let row = c.query_opt(&stmt, &[]).await?.ok_or_else(|| StoreError::Corrupt(String::from("ledger_head has no row")))?;
        let hash: Vec<u8> = get(&row, 1)?;
        let hash: Hash = hash.try_into().map_err(|_| StoreError::Corrupt(String::from("ledger_head hash length")))?;
        Ok((get(&row, 0)?, hash))
    }

    async fn write(&mut self, effects: &BatchEffects, log: &[(i64, Hash, Hash)], now: Timestamp) -> Result<(), StoreError> {
        let c = self.client()?;
        insert_accounts(c, effects).await?;
        update_accounts(c, &effects.account_updates).await?;
        insert_transactions(c, &effects.new_transactions).await?;
        update_transactions(c, &effects.transaction_updates).await?;
        let new_entries: Vec<&Entry> = effects
            .new_transactions
            .iter()
            .flat_map(|t| t.entries.iter())
            .chain(effects.transaction_updates.iter().flat_map(|u| u.transaction.entries.get(u.stored_entries..).unwrap_or(&[])))
            .collect();
        insert_entries(c, &new_entries).await?;
        insert_idempotency(c, &effects.idempotency).await?;
        append_log(c, &effects.log, log, now).await?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        self.client()?.batch_execute("COMMIT").await?;
        self.in_transaction = false;
        Ok(())
    }

    async fn rollback(&mut self) {
        if !self.in_transaction {
            return;
        }
        self.in_transaction = false;
        let Some(client) = self.client.take() else {
            return;
        };
        match client.batch_execute("ROLLBACK").await {
            Ok(()) => self.client = Some(client),
            Err(e) => {
                // The connection's state is unknown: close it rather than
                // return it to the pool; the next batch takes a fresh one.
                tracing::error!(error = %e, "rollback failed; dropping the engine's connection");
                drop(Object::take(client));
            }
        }
    }

    async fn fold_accounts(&mut self, ids: &[AccountId]) -> Result<HashMap<AccountId, Counters>, StoreError> {
        sum_entries(self.client()?, ids).await
    }

    async fn purge_idempotency(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.pool.get().await?);
        }
        let c = self.client()?;
        let stmt = c.prepare_cached(PURGE_IDEMPOTENCY).await?;
        Ok(c.execute(&stmt, &[&before.micros()]).await?)
    }
}

async fn find_external_ids(c: &Object, sql: &str, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (tenants, external_ids): (Vec<i64>, Vec<&str>) = keys.iter().map(|(t, x)| (t.0, x.as_str())).unzip();
    let stmt = c.prepare_cached(sql).await?;
    let found = c.query(&stmt, &[&tenants, &external_ids]).await?;
    let mut out = HashMap::with_capacity(found.len());
    for r in &found {
        out.insert((TenantId(get(r, 0)?), get(r, 1)?), get(r, 2)?);
    }
    Ok(out)
}

async fn insert_accounts(c: &Object, effects: &BatchEffects) -> Result<(), StoreError> {
    let accounts = &effects.new_accounts;
    if accounts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = accounts.iter().map(|a| a.state.id.as_str()).collect();
    let tenants: Vec<i64> = accounts.iter().map(|a| a.state.tenant.0).collect();
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    let currencies: Vec<&str> = accounts.iter().map(|a| a.state.currency.code()).collect();
    let normals: Vec<&str> = accounts.iter().map(|a| a.state.normal_balance.as_str()).collect();
    let minimums: Vec<Option<i64>> = accounts.iter().map(|a| a.state.min_available_balance).collect();
    let external_ids: Vec<Option<&str>> = accounts.iter().map(|a| a.external_id.as_deref()).collect();
    let metadata: Vec<String> = accounts.iter().map(|a| rows::metadata_json(&a.metadata)).collect();
    let created: Vec<i64> = accounts.iter().map(|a| a.created_at.micros()).collect();
    let [posted_debits, posted_credits, pending_debits, pending_credits] = counter_columns(accounts.iter().map(|a| &a.state));
    let versions: Vec<i64> = accounts.iter().map(|a| a.state.version).collect();
    let correlation_ids: Vec<Option<&str>> = accounts.iter().map(|a| a.correlation_id.as_ref().map(|c| c.as_str())).collect();
    let stmt = c
        .prepare_cached(concat!(
            "INSERT INTO accounts (",
            account_columns!(),
            ") SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
                                   $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::text[])"
        ))
        .await?;
    c.execute(
        &stmt,
        &[
            &ids,
            &tenants,
            &names,
            &currencies,
            &normals,
            &minimums,
            &external_ids,
            &metadata,
            &created,
            &posted_debits,
            &posted_credits,
            &pending_debits,
            &pending_credits,
            &versions,
            &correlation_ids,
        ],
    )
    .await?;
    let owned: Vec<&AccountRecord> = accounts.iter().filter(|a| a.customer.is_some()).collect();
    if !owned.is_empty() {
        let stmt = c
            .prepare_cached(
                "INSERT INTO customer_accounts (tenant_id, account_id, customer_id, actor, created_at)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
            )
            .await?;
        let tenants: Vec<i64> = owned.iter().map(|a| a.state.tenant.0).collect();
        let ids: Vec<&str> = owned.iter().map(|a| a.state.id.as_str()).collect();
        let customers: Vec<&str> = owned.iter().filter_map(|a| a.customer.as_ref()).map(|o| o.customer_id.as_str()).collect();
        let actors: Vec<&str> = owned.iter().filter_map(|a| a.customer.as_ref()).map(|o| o.actor.as_str()).collect();
        let created: Vec<i64> = owned.iter().map(|a| a.created_at.micros()).collect();
        c.execute(&stmt, &[&tenants, &ids, &customers, &actors, &created]).await?;
    }
    Ok(())
}

fn counter_columns<'a>(states: impl Iterator<Item = &'a AccountState>) -> [Vec<i64>; 4] {
    let mut columns: [Vec<i64>; 4] = Default::default();
    for s in states {
        let k = &s.counters;
        for (column, value) in columns.iter_mut().zip([k.posted_debits, k.posted_credits, k.pending_debits, k.pending_credits]) {
            column.push(value);
        }
    }
    columns
}

async fn update_accounts(c: &Object, updates: &[AccountState]) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = updates.iter().map(|s| s.id.as_str()).collect();
    let [posted_debits, posted_credits, pending_debits, pending_credits] = counter_columns(updates.iter());
    let versions: Vec<i64> = updates.iter().map(|s| s.version).collect();
    let stmt = c
        .prepare_cached(
            "UPDATE accounts a SET posted_debits = u.posted_debits, posted_credits = u.posted_credits,
                 pending_debits = u.pending_debits, pending_credits = u.pending_credits, version = u.version
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                 AS u (id, posted_debits, posted_credits, pending_debits, pending_credits, version)
             WHERE a.id = u.id",
        )
        .await?;
    let updated = c.execute(&stmt, &[&ids, &posted_debits, &posted_credits, &pending_debits, &pending_credits, &versions]).await?;
    expect_rows("account counters", updated, updates.len())
}

async fn insert_transactions(c: &Object, transactions: &[Transaction]) -> Result<(), StoreError> {
    if transactions.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = transactions.iter().map(|t| t.id.as_str()).collect();
    let tenants: Vec<i64> = transactions.iter().map(|t| t.tenant.0).collect();
    let statuses: Vec<&str> = transactions.iter().map(|t| t.status.as_str()).collect();
    let descriptions: Vec<Option<&str>> = transactions.iter().map(|t| t.description.as_deref()).collect();
    let external_ids: Vec<Option<&str>> = transactions.iter().map(|t| t.external_id.as_deref()).collect();
    let effective: Vec<i64> = transactions.iter().map(|t| t.effective_at.micros()).collect();
    let expires: Vec<Option<i64>> = transactions.iter().map(|t| t.expires_at.map(Timestamp::micros)).collect();
    let created: Vec<i64> = transactions.iter().map(|t| t.created_at.micros()).collect();
    let posted: Vec<Option<i64>> = transactions.iter().map(|t| t.posted_at.map(Timestamp::micros)).collect();
    let voided: Vec<Option<i64>> = transactions.iter().map(|t| t.voided_at.map(Timestamp::micros)).collect();
    let reasons: Vec<Option<&str>> = transactions.iter().map(|t| t.void_reason.map(|r| r.as_str())).collect();
    let reverses: Vec<Option<&str>> = transactions.iter().map(|t| t.reverses.as_ref().map(TransactionId::as_str)).collect();
    let reversed_by: Vec<Option<&str>> = transactions.iter().map(|t| t.reversed_by.as_ref().map(TransactionId::as_str)).collect();
    let metadata: Vec<String> = transactions.iter().map(|t| rows::metadata_json(&t.metadata)).collect();
    let correlation_ids: Vec<Option<&str>> = transactions.iter().map(|t| t.correlation_id.as_ref().map(|c| c.as_str())).collect();
    let stmt = c
        .prepare_cached(concat!(
            "INSERT INTO transactions (",
            transaction_columns!(),
            ") SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
                                   $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])"
        ))
        .await?;
    c.execute(
        &stmt,
        &[
            &ids,
            &tenants,
            &statuses,
            &descriptions,
            &external_ids,
            &effective,
            &expires,
            &created,
            &posted,
            &voided,
            &reasons,
            &reverses,
            &reversed_by,
            &metadata,
            &correlation_ids,
        ],
    )
    .await?;
    Ok(())
}

async fn update_transactions(c: &Object, updates: &[TransactionUpdate]) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = updates.iter().map(|u| u.transaction.id.as_str()).collect();
    let statuses: Vec<&str> = updates.iter().map(|u| u.transaction.status.as_str()).collect();
    let posted: Vec<Option<i64>> = updates.iter().map(|u| u.transaction.posted_at.map(Timestamp::micros)).collect();
    let voided: Vec<Option<i64>> = updates.iter().map(|u| u.transaction.voided_at.map(Timestamp::micros)).collect();
    let reasons: Vec<Option<&str>> = updates.iter().map(|u| u.transaction.void_reason.map(|r| r.as_str())).collect();
    let reversed_by: Vec<Option<&str>> = updates.iter().map(|u| u.transaction.reversed_by.as_ref().map(TransactionId::as_str)).collect();
    let stmt = c
        .prepare_cached(
            "UPDATE transactions t SET status = u.status, posted_at = u.posted_at, voided_at = u.voided_at,
                 void_reason = u.void_reason, reversed_by = u.reversed_by
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[])
                 AS u (id, status, posted_at, voided_at, void_reason, reversed_by)
             WHERE t.id = u.id",
        )
        .await?;
    let updated = c.execute(&stmt, &[&ids, &statuses, &posted, &voided, &reasons, &reversed_by]).await?;
    expect_rows("transactions", updated, updates.len())
}

async fn insert_entries(c: &Object, entries: &[&Entry]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let transactions: Vec<&str> = entries.iter().map(|e| e.transaction_id.as_str()).collect();
    let accounts: Vec<&str> = entries.iter().map(|e| e.account_id.as_str()).collect();
    let directions: Vec<&str> = entries.iter().map(|e| e.direction.as_str()).collect();
    let amounts: Vec<i64> = entries.iter().map(|e| e.amount).collect();
    let currencies: Vec<&str> = entries.iter().map(|e| e.currency.code()).collect();
    let legs: Vec<&str> = entries.iter().map(|e| e.leg.as_str()).collect();
    let effective: Vec<i64> = entries.iter().map(|e| e.effective_at.micros()).collect();
    let created: Vec<i64> = entries.iter().map(|e| e.created_at.micros()).collect();
    let stmt = c
        .prepare_cached(concat!(
            "INSERT INTO entries (",
            entry_columns!(""),
            ") SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[])"
        ))
        .await?;
    c.execute(&stmt, &[&ids, &transactions, &accounts, &directions, &amounts, &currencies, &legs, &effective, &created]).await?;
    Ok(())
}

async fn insert_idempotency(c: &Object, records: &[IdempotencyRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let tenants: Vec<i64> = records.iter().map(|r| r.tenant.0).collect();
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let fingerprints: Vec<&str> = records.iter().map(|r| r.fingerprint.as_str()).collect();
    let statuses: Vec<i64> = records.iter().map(|r| i64::from(r.response.status)).collect();
    let bodies: Vec<&[u8]> = records.iter().map(|r| r.response.body.as_slice()).collect();
    let created: Vec<i64> = records.iter().map(|r| r.created_at.micros()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[])",
        )
        .await?;
    c.execute(&stmt, &[&tenants, &keys, &fingerprints, &statuses, &bodies, &created]).await?;
    Ok(())
}

/// Appends the chained records and moves `ledger_head` to the last one.
async fn append_log(c: &Object, contents: &[Vec<u8>], chained: &[(i64, Hash, Hash)], now: Timestamp) -> Result<(), StoreError> {
    if contents.len() != chained.len() {
        return Err(StoreError::Other(format!("{} log records but {} links", contents.len(), chained.len())));
    }
    let Some((last_seq, _, last_hash)) = chained.last() else {
        return Ok(());
    };
    let seqs: Vec<i64> = chained.iter().map(|(seq, _, _)| *seq).collect();
    let bodies: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    let prevs: Vec<&[u8]> = chained.iter().map(|(_, prev, _)| prev.as_slice()).collect();
    let hashes: Vec<&[u8]> = chained.iter().map(|(_, _, hash)| hash.as_slice()).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO ledger_log (seq, content, prev_hash, hash, created_at)
             SELECT u.seq, u.content, u.prev_hash, u.hash, $5 FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[]) AS u (seq, content, prev_hash, hash)",
        )
        .await?;
    c.execute(&stmt, &[&seqs, &bodies, &prevs, &hashes, &now.micros()]).await?;
    let stmt = c.prepare_cached("UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1").await?;
    let updated = c.execute(&stmt, &[last_seq, &last_hash.as_slice()]).await?;
    expect_rows("ledger_head", updated, 1)
}

// ---- signed requests: signing secrets and nonces --------------------------

impl PgStore {
    /// The encrypted signing secret of a key, if it requires signatures.
    pub async fn signing_secret(&self, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached("SELECT ciphertext FROM api_key_signing_secrets WHERE api_key_id = $1").await?;
        match client.query_opt(&stmt, &[&key_id]).await? {
            Some(r) => Ok(Some(get(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// Every key that requires signatures, with its encrypted secret.
    pub async fn signing_secrets(&self) -> Result<Vec<(ApiKeyId, Vec<u8>)>, StoreError> {
        let client = self.pool.get().await?;
        let found = client.query("SELECT api_key_id, ciphertext FROM api_key_signing_secrets ORDER BY api_key_id", &[]).await?;
        found.iter().map(|r| Ok((ApiKeyId::from_trusted(get(r, 0)?), get(r, 1)?))).collect()
    }

    /// Records a nonce; `false` when the key already used it (a replay),
    /// also when another server recorded it first.
    pub async fn record_nonce(&self, key_id: &str, nonce: &str, expires_at: Timestamp) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("INSERT INTO request_nonces (api_key_id, nonce, expires_at) VALUES ($1, $2, $3) ON CONFLICT (api_key_id, nonce) DO NOTHING")
            .await?;
        Ok(client.execute(&stmt, &[&key_id, &nonce, &expires_at.micros()]).await? == 1)
    }

    /// Deletes nonces whose signatures can no longer be accepted anyway.
    pub async fn purge_nonces(&self, before: Timestamp) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.execute("DELETE FROM request_nonces WHERE expires_at < $1", &[&before.micros()]).await?)
    }
}

impl PgStore {
    /// The connection pool, for the store's modules that keep their SQL apart (`operations`).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How to open a connection outside the pool (see `events::Store::listen_events_stored`).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// Idempotency records past retention, except the chunk keys of operations
/// still open: a resumed operation replays its committed chunks by those keys,
/// however long it waited, and must never apply one twice.
const PURGE_IDEMPOTENCY: &str = "DELETE FROM idempotency_keys WHERE created_at < $1 AND NOT EXISTS (
    SELECT 1 FROM operations o WHERE o.status IN ('pending', 'running') AND o.tenant_id = idempotency_keys.tenant_id
    AND substr(idempotency_keys.key, 1, length(o.id) + 7) = o.id || '/chunk/')";
