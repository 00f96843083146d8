//! SQLite backend: one write connection owned by the engine (on its own
//! thread), a small pool of read connections. WAL with `synchronous=FULL`,
//! so an acknowledged write survives a power cut.

use crate::engine::{BatchEffects, WriteBackend};
use crate::error::StoreError;
use crate::history::{self, Head, History};
use crate::records::{AccountRecord, ApiKeyRecord, Cursor, EntryRow, IdempotencyRecord, LogRecord, Page, PageRequest, StoredResponse};
use crate::rows::{self, AccountRow, KeyFilter, KeyRow, TransactionRow, scopes_text};
use rusqlite::{Connection, OptionalExtension, Row, params};
use settle_core::chain::{GENESIS, Hash};
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, ApiKeyId, EntryId, OrgId, TransactionId};
use settle_core::ledger::{AccountState, Counters, Entry, Transaction, TransactionStatus};
use settle_core::tenancy::RateLimit;
use settle_core::tenancy::{Environment, Scope, TenantId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

pub mod account_changes;
mod blocked;
pub(crate) use blocked::BUMP as BLOCKED_BUMP;
pub(crate) mod bulk;
use bulk::BulkInsert;
pub mod gate;
mod legs;
mod versioning;
mod wal;
pub use wal::Checkpointer;

use account_changes::{AccountChange, Overlay};
pub use account_changes::{NoView, View};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_ledger.sql")),
    (2, include_str!("../migrations/sqlite/0002_versioning.sql")),
    (3, include_str!("../migrations/sqlite/0003_rate_limits.sql")),
    (4, include_str!("../migrations/sqlite/0004_signatures.sql")),
    (5, include_str!("../migrations/sqlite/0005_operations.sql")),
    (6, include_str!("../migrations/sqlite/0006_events.sql")),
    (7, include_str!("../migrations/sqlite/0007_bank_reconciliation.sql")),
    (8, include_str!("../migrations/sqlite/0008_account_changes.sql")),
    (9, include_str!("../migrations/sqlite/0009_customers.sql")),
    (10, include_str!("../migrations/sqlite/0010_feature_flags.sql")),
    (11, include_str!("../migrations/sqlite/0011_reconciliation_scopes.sql")),
    (12, include_str!("../migrations/sqlite/0012_customers_scopes.sql")),
    (13, include_str!("../migrations/sqlite/0013_ach.sql")),
    (14, include_str!("../migrations/sqlite/0014_faults.sql")),
    (15, include_str!("../migrations/sqlite/0015_audit_client_ip.sql")),
    (16, include_str!("../migrations/sqlite/0016_test_clocks_and_rate_alerts.sql")),
    (17, include_str!("../migrations/sqlite/0017_blocked_generation.sql")),
    (18, include_str!("../migrations/sqlite/0018_compliance_reviews.sql")),
    (19, include_str!("../migrations/sqlite/0019_ach_prenotes.sql")),
    (20, include_str!("../migrations/sqlite/0020_ach_retries.sql")),
    (22, include_str!("../migrations/sqlite/0022_ach_ledger_repairs.sql")),
    (23, include_str!("../migrations/sqlite/0023_events_without_rowid.sql")),
    (24, include_str!("../migrations/sqlite/0024_events_keyed_by_tenant.sql")),
    (25, include_str!("../migrations/sqlite/0025_entries_in_transactions.sql")),
];
/// Read connections kept open; more are opened on demand and dropped after.
const READ_POOL_SIZE: usize = 8;
/// SQLite's own default, in pages.
const DEFAULT_WAL_AUTOCHECKPOINT: i64 = 1000;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The engine alone runs more than rusqlite's default 16 statements.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    register_functions(&conn)?;
    // Two connections turning a new file to WAL at once can deadlock on the
    // lock upgrade; SQLite then answers BUSY at once instead of waiting, so wait here.
    let started = std::time::Instant::now();
    loop {
        match conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;",
        ) {
            Ok(()) => return Ok(conn),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `settle_log_json(content)`: a ledger log record's JSON as text, for SQL
/// that looks inside it (`json_extract`) whichever form it is stored in
/// (`log_content.rs`).
fn register_functions(conn: &Connection) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| rusqlite::Error::UserFunctionError(e);
    conn.create_scalar_function("settle_log_json", 1, FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC, move |ctx| {
        let stored = match ctx.get_raw(0) {
            ValueRef::Blob(b) | ValueRef::Text(b) => b,
            ValueRef::Null => return Ok(None),
            other => return Err(rusqlite::Error::InvalidFunctionParameterType(0, other.data_type())),
        };
        let json = crate::log_content::unpack(stored).map_err(|e| failed(Box::new(e)))?;
        String::from_utf8(json.into_owned()).map(Some).map_err(|e| failed(Box::new(e)))
    })?;
    Ok(())
}

/// Applies pending migrations; safe to run from several processes at once.
pub fn migrate(path: &Path) -> Result<(), StoreError> {
    let mut conn = open(path)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = tx.query_row("SELECT version FROM schema_migrations WHERE version = ?1", [version], |r| r.get(0)).optional()?;
        if done.is_none() {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))", [version])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Reads and operator writes on a SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Account changes since the last checkpoint, kept by this process's
    /// engine (the first writer opened here) for this process's readers.
    overlay: Arc<Overlay>,
    overlay_taken: Arc<std::sync::atomic::AtomicBool>,
    /// Reads that replayed the account stream instead of using the overlay.
    replayed_reads: Arc<std::sync::atomic::AtomicU64>,
    /// This process's writers take turns here before SQLite's write lock.
    gate: Arc<gate::WriteGate>,
    /// The `settle-checkpoint` thread runs: commits need not copy the WAL.
    checkpointing: Arc<std::sync::atomic::AtomicBool>,
}

impl SqliteStore {
    pub fn new(path: PathBuf) -> SqliteStore {
        SqliteStore {
            path,
            readers: Arc::new(Mutex::new(Vec::new())),
            overlay: Arc::new(Overlay::default()),
            overlay_taken: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            replayed_reads: Arc::default(),
            gate: Arc::default(),
            checkpointing: Arc::default(),
        }
    }

    /// Writers of this process waiting for, or holding, their turn to write.
    pub fn writers_queued(&self) -> u64 {
        self.gate.queued()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's write side, on its own connection. It never checkpoints
    /// (see [`SqliteStore::start_checkpointer`]), so commits stay short.
    pub fn writer(&self) -> Result<SqliteWriter, StoreError> {
        let conn = open(&self.path)?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        // Readers of this process follow the first writer's overlay; a second
        // writer here (tests run two engines on one file) keeps its own.
        let shared = !self.overlay_taken.swap(true, std::sync::atomic::Ordering::SeqCst);
        let overlay = if shared { Arc::clone(&self.overlay) } else { Arc::new(Overlay::default()) };
        Ok(SqliteWriter {
            conn,
            gate: Arc::clone(&self.gate),
            turn: None,
            in_transaction: false,
            heads: foldhash::HashMap::default(),
            cache: foldhash::HashMap::default(),
            written: Vec::new(),
            known: None,
            reread: std::collections::HashSet::new(),
            overlay,
            changes: Vec::new(),
            batch_log_seq: None,
            reload: true,
            stream_records: 0,
            last_checkpoint: std::time::Instant::now(),
            policy: CHECKPOINT_POLICY,
            folding: None,
            blocked: blocked::BlockedAccounts::default(),
            optimistic: false,
            pessimistic_next: false,
            entered_optimistically: false,
        })
    }

    /// Starts the WAL checkpointer (`wal.rs`), so the engine's commits never
    /// pay for it, on a thread at `nice` (`priority.rs`).
    pub fn start_checkpointer(&self, nice: i32) -> Result<Checkpointer, StoreError> {
        Checkpointer::start(open(&self.path)?, Arc::clone(&self.gate), Arc::clone(&self.checkpointing), wal::POLICY, nice)
    }

    /// Runs `f` on a pooled read connection, off the async runtime.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let this = self.clone();
        crate::blocking::run(move || this.read_blocking(f)).await
    }

    /// Runs `f` on a connection of the pool (opening one when none is idle)
    /// and gives it back afterwards, up to [`READ_POOL_SIZE`] kept.
    fn with_pooled<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map(|mut pool| pool.pop()).unwrap_or(None);
        let mut conn = match pooled {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let result = f(&mut conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READ_POOL_SIZE
        {
            pool.push(conn);
        }
        result
    }

    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // One read transaction: every statement of `f` sees the same snapshot,
        // so a commit landing mid-read can never show half of a change.
        self.with_pooled(|conn| {
            let tx = conn.unchecked_transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    /// Runs `f` in one read transaction with a [`View`] of accounts' current
    /// state (their rows overlaid with the changes since the last checkpoint).
    /// The view comes from this process's engine when it matches the
    /// snapshot. A reader whose snapshot sees a commit the engine has not
    /// published yet waits for it (a moment: it publishes right after
    /// COMMIT); one that read a change newer than its snapshot starts again.
    /// One that keeps losing, or runs where no engine is, replays the stream
    /// in its snapshot — with a million accounts changed, a second of work.
    fn read_accounts_blocking<T>(&self, f: impl Fn(&Connection, &View<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        const FAST_ATTEMPTS: usize = 3;
        // Longer than a publish takes (a few milliseconds with a million
        // accounts in the overlay); reached only when another process wrote.
        const PUBLISH_WAIT: Duration = Duration::from_millis(20);
        for _ in 0..FAST_ATTEMPTS {
            let attempt = self.read_blocking(|c| match View::open(c, &self.overlay)? {
                Ok(view) => {
                    let value = f(c, &view)?;
                    Ok(if view.is_stale() { Err(NoView::Retry) } else { Ok(value) })
                }
                Err(why) => Ok(Err(why)),
            })?;
            match attempt {
                Ok(value) => return Ok(value),
                Err(NoView::NotLive) => break,
                Err(NoView::Retry) => {}
                Err(NoView::Behind(log_seq)) => {
                    if !self.overlay.wait_published(log_seq, PUBLISH_WAIT) {
                        break;
                    }
                }
            }
        }
        self.replayed_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.read_blocking(|c| f(c, &View::folded(c)?))
    }

    /// How many reads replayed the account stream (no engine in this
    /// process, another process wrote, or a read lost its race three times).
    pub fn replayed_reads(&self) -> u64 {
        self.replayed_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`SqliteStore::read_accounts_blocking`], off the async runtime.
    async fn read_accounts<T: Send + 'static>(&self, f: impl Fn(&Connection, &View<'_>) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let this = self.clone();
        crate::blocking::run(move || this.read_accounts_blocking(f)).await
    }

    /// [`SqliteStore::write_blocking`], off the async runtime.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        crate::blocking::run(move || this.write_blocking(f)).await
    }

    /// Runs `f` in an immediate write transaction (operator commands: keys, orgs).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = open(&self.path)?;
        let _turn = self.gate.enter();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

// ---- row readers -------------------------------------------------------

const ACCOUNT_COLUMNS: &str = "id, tenant_id, name, currency, normal_balance, min_available_balance, external_id, metadata, created_at, posted_debits, posted_credits, pending_debits, pending_credits, version, correlation_id";
const TRANSACTION_COLUMNS: &str = "id, tenant_id, status, description, external_id, effective_at, expires_at, created_at, posted_at, voided_at, void_reason, reverses, reversed_by, metadata, correlation_id";

fn account_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        name: r.get(2)?,
        currency: r.get(3)?,
        normal_balance: r.get(4)?,
        min_available_balance: r.get(5)?,
        external_id: r.get(6)?,
        metadata: r.get(7)?,
        created_at: r.get(8)?,
        posted_debits: r.get(9)?,
        posted_credits: r.get(10)?,
        pending_debits: r.get(11)?,
        pending_credits: r.get(12)?,
        version: r.get(13)?,
        correlation_id: r.get(14)?,
    })
}

fn transaction_row(r: &Row<'_>) -> rusqlite::Result<TransactionRow> {
    Ok(TransactionRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        status: r.get(2)?,
        description: r.get(3)?,
        external_id: r.get(4)?,
        effective_at: r.get(5)?,
        expires_at: r.get(6)?,
        created_at: r.get(7)?,
        posted_at: r.get(8)?,
        voided_at: r.get(9)?,
        void_reason: r.get(10)?,
        reverses: r.get(11)?,
        reversed_by: r.get(12)?,
        metadata: r.get(13)?,
        correlation_id: r.get(14)?,
    })
}

/// A transaction's entries, from its stored legs (see `legs.rs`).
fn entries_of(conn: &Connection, id: &TransactionId) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT effective_at, created_at, legs FROM transactions WHERE id = ?1")?;
    let Some((effective_at, created_at, stored)) =
        stmt.query_row([id.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))).optional()?
    else {
        return Ok(Vec::new());
    };
    legs::decode(id, effective_at, created_at, &stored)
}

pub(crate) fn transaction_by_id(conn: &Connection, id: &str) -> Result<Option<Transaction>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {TRANSACTION_COLUMNS}, legs FROM transactions WHERE id = ?1"))?;
    let Some((row, stored)) = stmt.query_row([id], |r| Ok((transaction_row(r)?, r.get::<_, String>(15)?))).optional()? else {
        return Ok(None);
    };
    let entries = legs::decode(&TransactionId::from_trusted(row.id.clone()), row.effective_at, row.created_at, &stored)?;
    Ok(Some(row.into_transaction(entries)?))
}

/// Ids of holds that have expired but not yet been voided by the engine.
fn expired_unswept(conn: &Connection, now: Timestamp) -> Result<Vec<TransactionId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM transactions WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1")?;
    let rows = stmt.query_map([now.micros()], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.map(TransactionId::from_trusted).map_err(StoreError::from)).collect()
}

/// Removes expired holds from an account's pending counters, as readers must see it.
fn without_expired_holds(conn: &Connection, mut record: AccountRecord, expired: &[TransactionId]) -> Result<AccountRecord, StoreError> {
    for id in expired {
        for e in entries_of(conn, id)? {
            if e.account_id == record.state.id && e.leg == settle_core::ledger::Leg::Pending {
                let c = &mut record.state.counters;
                match e.direction {
                    settle_core::ledger::Direction::Debit => c.pending_debits = c.pending_debits.saturating_sub(e.amount),
                    settle_core::ledger::Direction::Credit => c.pending_credits = c.pending_credits.saturating_sub(e.amount),
                }
            }
        }
    }
    Ok(record)
}

impl SqliteStore {
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.read(|c| {
            // Numbers may have gaps (each backend keeps the other's numbers): count what is applied.
            let mut applied = 0;
            for (version, _) in MIGRATIONS {
                applied += c.query_row("SELECT COUNT(*) FROM schema_migrations WHERE version = ?1", [version], |r| r.get::<_, i64>(0))?;
            }
            if applied < MIGRATIONS.len() as i64 { Err(StoreError::Unavailable(String::from("migrations not applied"))) } else { Ok(()) }
        })
        .await
    }

    pub async fn get_account(&self, tenant: TenantId, id: AccountId, now: Timestamp) -> Result<Option<AccountRecord>, StoreError> {
        self.read_accounts(move |c, view| {
            let mut stmt = c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1 AND tenant_id = ?2"))?;
            let Some(row) = stmt.query_row(params![id.as_str(), tenant.0], account_row).optional()? else {
                return Ok(None);
            };
            let expired = expired_unswept(c, now)?;
            Ok(Some(without_expired_holds(c, view.account(row).into_record()?, &expired)?))
        })
        .await
    }

    /// Accounts by id as their rows hold them, in one read: counters as of
    /// the last checkpoint, no hold expiry applied. What the event projector
    /// needs of the accounts a round opened (it zeroes the counters); without
    /// the overlay, a burst of openings never replays the account stream.
    pub(crate) async fn accounts_by_ids(&self, ids: Vec<String>) -> Result<Vec<AccountRecord>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(row) = stmt.query_row([id], account_row).optional()? {
                    out.push(row.into_record()?);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn list_accounts(&self, tenant: TenantId, page: PageRequest, now: Timestamp) -> Result<Page<AccountRecord>, StoreError> {
        self.read_accounts(move |c, view| {
            let (descending, bound) = scan_start(&page.cursor);
            let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
            let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE tenant_id = ?1 AND id {cmp} ?2 ORDER BY id {order} LIMIT ?3");
            let mut stmt = c.prepare_cached(&sql)?;
            let rows: Vec<AccountRow> = stmt.query_map(params![tenant.0, bound, page.limit + 1], account_row)?.collect::<Result<_, _>>()?;
            let expired = expired_unswept(c, now)?;
            let records = rows
                .into_iter()
                .map(|r| view.account(r).into_record().and_then(|rec| without_expired_holds(c, rec, &expired)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(records, &page))
        })
        .await
    }

    pub async fn get_transaction(&self, tenant: TenantId, id: TransactionId, now: Timestamp) -> Result<Option<Transaction>, StoreError> {
        self.read(move |c| Ok(transaction_by_id(c, id.as_str())?.filter(|t| t.tenant == tenant).map(|t| t.as_seen_at(now)))).await
    }

    pub async fn list_transactions(
        &self,
        tenant: TenantId,
        account: Option<AccountId>,
        status: Option<TransactionStatus>,
        page: PageRequest,
        now: Timestamp,
    ) -> Result<Page<Transaction>, StoreError> {
        self.read_accounts(move |c, view| {
            let want = page.limit as usize + 1;
            let mut found: Vec<Transaction> = Vec::new();
            let mut visit = |tx_id: &str| -> Result<bool, StoreError> {
                if let Some(t) = transaction_by_id(c, tx_id)? {
                    let t = t.as_seen_at(now);
                    if t.tenant == tenant && status.is_none_or(|s| t.status == s) {
                        found.push(t);
                    }
                }
                Ok(found.len() < want)
            };
            match &account {
                None => {
                    let (descending, bound) = scan_start(&page.cursor);
                    // Open holds have an index of their own (`transactions_pending`).
                    let table = if status == Some(TransactionStatus::Pending) { PENDING_TRANSACTIONS } else { "transactions" };
                    scan(c, table, "id", "tenant_id", &tenant.0, descending, bound, &mut visit)?
                }
                Some(account) => {
                    let Some(history) = History::of(c, account.as_str(), tenant.0, view)? else {
                        return Ok(Page { items: Vec::new(), has_more: false });
                    };
                    match &page.cursor {
                        Cursor::Start => history.walk_back(&mut visit)?,
                        Cursor::After(id) => history.older_than(id, &mut visit)?,
                        Cursor::Before(id) => history.newer_than(id, &mut visit)?,
                    }
                }
            }
            Ok(Page::from_rows(found, &page))
        })
        .await
    }

    pub async fn list_entries(&self, tenant: TenantId, account: AccountId, page: PageRequest, now: Timestamp) -> Result<Option<Page<EntryRow>>, StoreError> {
        self.read_accounts(move |c, view| {
            let Some(history) = History::of(c, account.as_str(), tenant.0, view)? else {
                return Ok(None);
            };
            let want = page.limit as usize + 1;
            let mut items: Vec<EntryRow> = Vec::new();
            // Entries of one transaction on this account, in list order, that pass `keep`.
            let mut take = |tx_id: &str, keep: &dyn Fn(&str) -> bool, newest_first: bool| -> Result<bool, StoreError> {
                if let Some(t) = transaction_by_id(c, tx_id)? {
                    let t = t.as_seen_at(now);
                    let mut legs: Vec<&Entry> = t.entries.iter().filter(|e| e.account_id == account && keep(e.id.as_str())).collect();
                    legs.sort_by(|a, b| if newest_first { b.id.as_str().cmp(a.id.as_str()) } else { a.id.as_str().cmp(b.id.as_str()) });
                    for e in legs {
                        if items.len() < want {
                            items.push(EntryRow { entry: e.clone(), transaction_status: t.status });
                        }
                    }
                }
                Ok(items.len() < want)
            };
            match &page.cursor {
                Cursor::Start => history.walk_back(&mut |id| take(id, &|_| true, true))?,
                Cursor::After(entry) => {
                    let tx = entry_transaction(entry);
                    // The rest of the cursor's own transaction first, then older ones.
                    if take(&tx, &|id| id < entry.as_str(), true)? {
                        history.older_than(&tx, &mut |id| take(id, &|_| true, true))?;
                    }
                }
                Cursor::Before(entry) => {
                    let tx = entry_transaction(entry);
                    if take(&tx, &|id| id > entry.as_str(), false)? {
                        history.newer_than(&tx, &mut |id| take(id, &|_| true, false))?;
                    }
                }
            }
            Ok(Some(Page::from_rows(items, &page)))
        })
        .await
    }

    /// Balances at an instant of effective time, folded from entries.
    pub async fn balances_as_of(&self, tenant: TenantId, account: AccountId, at: Timestamp) -> Result<Option<(AccountRecord, Counters)>, StoreError> {
        self.read_accounts(move |c, view| {
            let mut stmt = c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1 AND tenant_id = ?2"))?;
            let Some(row) = stmt.query_row(params![account.as_str(), tenant.0], account_row).optional()? else { return Ok(None) };
            let record = view.account(row).into_record()?;
            let Some(history) = History::of(c, account.as_str(), tenant.0, view)? else { return Ok(None) };
            let mut counters = Counters::default();
            history.walk_back(&mut |tx_id| {
                if let Some(t) = transaction_by_id(c, tx_id)? {
                    for e in t.entries.iter().filter(|e| e.account_id == account && e.effective_at <= at) {
                        rows::fold_as_of(&t, e, &mut counters, at)?;
                    }
                }
                Ok(true)
            })?;
            Ok(Some((record, counters)))
        })
        .await
    }
}

/// The pending transactions, as a table expression that `transactions_pending` serves.
const PENDING_TRANSACTIONS: &str = "(SELECT id, tenant_id FROM transactions WHERE status = 'pending')";

/// Where a keyset walk starts: newest first from the top or below a cursor,
/// oldest first above a cursor.
fn scan_start(cursor: &Cursor) -> (bool, String) {
    match cursor {
        // Every id starts with a lower-case letter, so all sort below "~".
        Cursor::Start => (true, String::from("~")),
        Cursor::After(id) => (true, id.clone()),
        Cursor::Before(id) => (false, id.clone()),
    }
}

/// The transaction an entry id belongs to (`ent_<ulid>…` → `ltx_<ulid>`).
fn entry_transaction(entry: &str) -> String {
    let body = entry.strip_prefix(EntryId::PREFIX).unwrap_or(entry);
    format!("{}{}", TransactionId::PREFIX, body.get(..26).unwrap_or(body))
}

/// Walks `table` by `id` within `owner_column = owner` in chunks, calling
/// `visit` with each row's `value_column` until it returns false.
#[expect(clippy::too_many_arguments, reason = "one private walker shared by two list queries")]
fn scan(
    c: &Connection,
    table: &str,
    value_column: &str,
    owner_column: &str,
    owner: &dyn rusqlite::ToSql,
    descending: bool,
    mut bound: String,
    visit: &mut dyn FnMut(&str) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    const CHUNK: usize = 256;
    let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
    let sql = format!("SELECT id, {value_column} FROM {table} WHERE {owner_column} = ?1 AND id {cmp} ?2 ORDER BY id {order} LIMIT {CHUNK}");
    let mut stmt = c.prepare_cached(&sql)?;
    loop {
        let rows: Vec<(String, String)> = stmt.query_map(params![owner, bound], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (_, value) in &rows {
            if !visit(value)? {
                return Ok(());
            }
        }
        match rows.last() {
            Some((id, _)) if rows.len() == CHUNK => bound = id.clone(),
            _ => return Ok(()),
        }
    }
}

// ---- operator side: organizations, keys, audit reads --------------------

impl SqliteStore {
    /// Finds or creates the organization `name` and its tenant for `environment`.
    pub fn ensure_tenant(
        tx: &rusqlite::Transaction<'_>,
        org_id_if_new: &OrgId,
        name: &str,
        environment: Environment,
        now: Timestamp,
    ) -> Result<(OrgId, TenantId), StoreError> {
        tx.execute(
            "INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![org_id_if_new.as_str(), name, now.micros()],
        )?;
        let org: String = tx.query_row("SELECT id FROM organizations WHERE name = ?1", [name], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO tenants (org_id, environment) VALUES (?1, ?2) ON CONFLICT (org_id, environment) DO NOTHING",
            params![org, environment.as_str()],
        )?;
        let tenant: i64 = tx.query_row("SELECT id FROM tenants WHERE org_id = ?1 AND environment = ?2", params![org, environment.as_str()], |r| r.get(0))?;
        Ok((OrgId::from_trusted(org), TenantId(tenant)))
    }

    pub fn insert_api_key(
        tx: &rusqlite::Transaction<'_>,
        id: &ApiKeyId,
        tenant: TenantId,
        secret_hash: &str,
        scopes: &[Scope],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO api_keys (id, tenant_id, secret_hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.as_str(), tenant.0, secret_hash, scopes_text(scopes), now.micros()],
        )?;
        Ok(())
    }

    pub fn count_organizations(&self) -> Result<i64, StoreError> {
        self.read_blocking(|c| Ok(c.query_row("SELECT COUNT(*) FROM organizations", [], |r| r.get(0))?))
    }

    pub fn api_keys(&self, filter: KeyFilter<'_>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read_blocking(|c| {
            let (clause, value) = match filter {
                KeyFilter::All => ("1 = 1 OR ?1 IS NULL", None),
                KeyFilter::SecretHash(h) => ("k.secret_hash = ?1", Some(h)),
                KeyFilter::Id(id) => ("k.id = ?1", Some(id)),
            };
            let sql = format!(
                "SELECT k.id, o.id, o.name, t.environment, t.id, k.scopes, k.created_at, k.revoked_at,
                 o.api_version, k.rate_limit_per_second, k.rate_limit_burst
                 FROM api_keys k JOIN tenants t ON t.id = k.tenant_id JOIN organizations o ON o.id = t.org_id
                 WHERE {clause} ORDER BY k.id"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([value], |r| {
                Ok(KeyRow {
                    id: r.get(0)?,
                    org_id: r.get(1)?,
                    org_name: r.get(2)?,
                    environment: r.get(3)?,
                    tenant: r.get(4)?,
                    scopes: r.get(5)?,
                    created_at: r.get(6)?,
                    revoked_at: r.get(7)?,
                    api_version: r.get(8)?,
                    rate_limit_per_second: r.get(9)?,
                    rate_limit_burst: r.get(10)?,
                })
            })?;
            rows.map(|r| r.map_err(StoreError::from).and_then(KeyRow::into_record)).collect()
        })
    }

    pub fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
        self.write_blocking(|tx| {
            Ok(tx.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id.as_str(), now.micros()])? > 0)
        })
    }

    /// Sets (or, with `None`, clears) a key's own rate limit; false when no such key.
    pub fn set_api_key_rate_limit(&self, id: &ApiKeyId, limit: Option<RateLimit>) -> Result<bool, StoreError> {
        let (rate, burst) = (limit.map(|l| i64::from(l.per_second())), limit.map(|l| i64::from(l.burst())));
        self.write_blocking(|tx| {
            Ok(tx.execute("UPDATE api_keys SET rate_limit_per_second = ?2, rate_limit_burst = ?3 WHERE id = ?1", params![id.as_str(), rate, burst])? > 0)
        })
    }

    pub fn find_idempotency_blocking(&self, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.read_blocking(|c| find_idempotency(c, tenant, key))
    }

    /// Log records with `seq > after`, at most `limit`, in order.
    pub fn log_records(&self, after: i64, limit: i64) -> Result<Vec<LogRecord>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached("SELECT seq, content, prev_hash, hash FROM ledger_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows =
                stmt.query_map(params![after, limit], |r| Ok(LogRecord { seq: r.get(0)?, content: r.get(1)?, prev_hash: r.get(2)?, hash: r.get(3)? }))?;
            Ok(rows.map(|row| row.map(LogRecord::unpacked)).collect::<Result<_, _>>()?)
        })
    }

    /// Up to `limit` entries with ids above `after`, in id order, each with
    /// its transaction's stored status (audits walk every entry this way).
    /// Entries live in their transaction's row and sort with it, so the walk
    /// goes through the transactions from the one `after` belongs to.
    pub fn entries_chunk(&self, after: &str, limit: i64) -> Result<Vec<(Entry, TransactionStatus)>, StoreError> {
        const CHUNK: usize = 256;
        let limit = usize::try_from(limit).unwrap_or(0);
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {LEGS_COLUMNS} FROM transactions WHERE id >= ?1 ORDER BY id LIMIT {CHUNK}"))?;
            let mut out = Vec::new();
            let mut bound = entry_transaction(after);
            // After the first chunk, `bound` is the last transaction walked: skip it.
            let mut walked = false;
            while out.len() < limit {
                let rows: Vec<LegsRow> = stmt.query_map([&bound], legs_row)?.collect::<Result<_, _>>()?;
                let full = rows.len() == CHUNK;
                for row in rows {
                    if walked && row.0 == bound {
                        continue;
                    }
                    bound.clone_from(&row.0);
                    walked = true;
                    let (status, mut entries) = decode_legs_row(row)?;
                    // Stored in the order they were written, which is id order for
                    // every position the engine gives (under 100); sorted to be sure.
                    entries.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                    out.extend(entries.into_iter().filter(|e| e.id.as_str() > after).take(limit - out.len()).map(|e| (e, status)));
                    if out.len() >= limit {
                        break;
                    }
                }
                if !full {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Creates (or finds) the organization and its tenant, then a key for it,
    /// with its encrypted signing secret when it must sign its requests: all
    /// in one transaction, so a key never exists without its requirement.
    #[expect(clippy::too_many_arguments, reason = "mirrors the PostgreSQL store's operator call")]
    pub fn create_api_key(
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
        self.write_blocking(|tx| {
            let (_, tenant) = Self::ensure_tenant(tx, org_id_if_new, org_name, environment, now)?;
            Self::insert_api_key(tx, key_id, tenant, secret_hash, scopes, now)?;
            if let Some(ciphertext) = signing_ciphertext {
                tx.execute(
                    "INSERT INTO api_key_signing_secrets (api_key_id, ciphertext, created_at) VALUES (?1, ?2, ?3)",
                    params![key_id.as_str(), ciphertext, now.micros()],
                )?;
            }
            Ok(())
        })?;
        self.api_keys(KeyFilter::Id(key_id.as_str()))?.into_iter().next().ok_or_else(|| StoreError::Other(String::from("created key not found")))
    }

    /// Every account's stored state, for audits.
    pub fn account_histories(&self) -> Result<Vec<history::Walked>, StoreError> {
        self.read_blocking(|c| history::walk_all(c, &View::folded(c)?))
    }

    /// An account's stored counters and what its entries sum to, from one snapshot.
    pub fn recount(&self, id: &AccountId) -> Result<Option<(Counters, Counters)>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"))?;
            let Some(row) = stmt.query_row([id.as_str()], account_row).optional()? else {
                return Ok(None);
            };
            let row = View::folded(c)?.account(row);
            Ok(Some((row.into_record()?.state.counters, sum_entries(c, id)?)))
        })
    }

    pub fn all_account_states(&self) -> Result<Vec<AccountState>, StoreError> {
        self.read_blocking(|c| {
            let view = View::folded(c)?;
            let mut stmt = c.prepare(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"))?;
            let rows = stmt.query_map([], account_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(|row| view.account(row).into_record().map(|rec| rec.state))).collect()
        })
    }
}

/// What the scans of every entry read of a transaction: its id, status,
/// times and stored legs (see `legs.rs`).
const LEGS_COLUMNS: &str = "id, status, effective_at, created_at, legs";
type LegsRow = (String, String, i64, i64, String);

fn legs_row(r: &Row<'_>) -> rusqlite::Result<LegsRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// A transaction's stored status and its entries.
fn decode_legs_row((id, status, effective_at, created_at, stored): LegsRow) -> Result<(TransactionStatus, Vec<Entry>), StoreError> {
    let status = TransactionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?;
    Ok((status, legs::decode(&TransactionId::from_trusted(id), effective_at, created_at, &stored)?))
}

/// What the stored entries of an account sum to. No index leads from an
/// account to its entries here (its history is a chain), so this scans the
/// transactions: fine for the rare account a reconciliation finds drifted.
fn sum_entries(c: &Connection, id: &AccountId) -> Result<Counters, StoreError> {
    // `instr` only narrows the scan; the decoded legs decide.
    let mut stmt = c.prepare_cached(&format!("SELECT {LEGS_COLUMNS} FROM transactions WHERE instr(legs, ?1) > 0"))?;
    let mut sum = Counters::default();
    let mut found = stmt.query([format!("\"{}\"", id.as_str())])?;
    while let Some(r) = found.next()? {
        let (status, entries) = decode_legs_row(legs_row(r)?)?;
        for e in entries.iter().filter(|e| e.account_id == *id) {
            sum.add_entry(e.leg, e.direction, e.amount, status)
                .ok_or_else(|| StoreError::Corrupt(String::from("an account's entries overflow its counters")))?;
        }
    }
    Ok(sum)
}

fn find_idempotency(c: &Connection, tenant: TenantId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE tenant_id = ?1 AND key = ?2")?;
    let row = stmt
        .query_row(params![tenant.0, key], |r| {
            Ok(IdempotencyRecord {
                tenant,
                key: key.to_owned(),
                fingerprint: r.get(0)?,
                response: StoredResponse { status: r.get(1)?, body: r.get(2)? },
                created_at: Timestamp::from_micros(r.get(3)?),
            })
        })
        .optional()?;
    Ok(row)
}

// ---- write side: the engine's connection --------------------------------

/// The engine's connection. Lives on the engine's own thread.
pub struct SqliteWriter {
    conn: Connection,
    gate: Arc<gate::WriteGate>,
    /// Held from BEGIN until COMMIT or ROLLBACK.
    turn: Option<gate::Turn>,
    in_transaction: bool,
    /// History heads of the accounts this batch loaded or created.
    heads: foldhash::HashMap<AccountId, Head>,
    /// Accounts as last committed, so a batch need not read them again. Valid
    /// while no other writer has changed the ledger: another engine (a second
    /// process, `settle reconcile --repair`) always appends to the ledger log
    /// or checkpoints, so both are compared at every BEGIN, and the cache and
    /// the overlay are loaded again when they moved. Writes to other tables
    /// (events, webhooks, customers…) leave them valid.
    cache: foldhash::HashMap<AccountId, (AccountState, Head)>,
    /// What this batch wrote, for the cache once COMMIT succeeds.
    written: Vec<(AccountState, Head)>,
    /// (ledger-log head, checkpoint) as this writer last left them.
    known: Option<(i64, i64)>,
    /// Accounts this batch reads as stored (repairs), not from memory.
    reread: std::collections::HashSet<String>,
    /// Changes since the last checkpoint (shared with this process's readers
    /// when this is its first writer).
    overlay: Arc<Overlay>,
    /// This batch's account changes, published to the overlay once COMMIT succeeds.
    changes: Vec<(AccountId, AccountChange)>,
    /// The log sequence of this batch's newest record.
    batch_log_seq: Option<i64>,
    /// The overlay must be loaded again from the stream (at the start, or
    /// when a COMMIT failed and what it did is not known).
    reload: bool,
    /// Account records appended to the stream since the last checkpoint.
    stream_records: usize,
    last_checkpoint: std::time::Instant,
    /// When the stream is folded into the rows, and how much at a time.
    policy: CheckpointPolicy,
    /// The checkpoint under way, if one is.
    folding: Option<Folding>,
    /// Accounts of blocked customers (`customer_blocked`), see `blocked.rs`.
    blocked: blocked::BlockedAccounts,
    /// This batch reads and applies its rules before taking the write turn
    /// (see [`SqliteWriter::begin_optimistic`]); `write` takes it.
    optimistic: bool,
    /// The last optimistic batch failed (the ledger moved, or a write
    /// conflicted): the next runs under the lock, so a retry cannot lose again.
    pessimistic_next: bool,
    /// This batch was applied before the lock and now holds it.
    entered_optimistically: bool,
}

/// Past this many cached accounts the cache starts over (about 250 MB).
const ACCOUNT_CACHE_LIMIT: usize = 1 << 20;

/// When the engine folds the account stream into `accounts` rows, and in
/// slices of how many accounts.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Once the stream holds this many account records (each about 100
    /// bytes, replayed after a crash: 2.9 s for 4,000,000 measured)…
    pub records: usize,
    /// …or this many different accounts (each held in memory until then,
    /// about 200 bytes). A checkpoint costs about one page write per
    /// accounts page it touches, so the more accounts it carries the less
    /// each one costs…
    pub accounts: usize,
    /// …or when the oldest change is this old.
    pub age: Duration,
    /// Accounts written per slice: each slice is a write transaction of its
    /// own between two batches, so a checkpoint of a million accounts (865,000
    /// took 2.4 – 3.9 s to write) never holds the engine for more than one slice.
    pub slice: usize,
}

/// The engine's policy. A slice takes 45 – 75 ms, about as long as a batch
/// (865,000 accounts were written in 2.4 – 3.9 s in one transaction). With a
/// million accounts a checkpoint writes most of them however many records it
/// folds, so the more records between two the less each transfer pays: at
/// 2,000,000 records a checkpoint wrote 865,000 accounts per 1,000,000
/// transfers; at 4,000,000 about 980,000 per 2,000,000.
pub const CHECKPOINT_POLICY: CheckpointPolicy = CheckpointPolicy { records: 4_000_000, accounts: 1_000_000, age: Duration::from_secs(60), slice: 16_384 };

/// Runs a statement without parameters (`BEGIN IMMEDIATE`, `COMMIT`,
/// `ROLLBACK`) from the connection's statement cache: `execute_batch` parses
/// its SQL on every call, and the engine begins and commits once per batch,
/// which showed in profiles with one transfer per request. (Never for a
/// `PRAGMA` that sets something: SQLite applies those when it parses them.)
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A checkpoint under way. Its slices write the accounts' current state into
/// their rows while the stream keeps every change (readers prefer the
/// stream, so a row written early is never read stale); the last one drops
/// the stream rows it folded and moves `account_checkpoint`.
#[derive(Debug)]
struct Folding {
    /// Every account the folded stream rows hold, in id order, and how many
    /// are written.
    ids: Vec<AccountId>,
    written: usize,
    /// The stream rows it folds: those from `first_row` to `last_row`. If the
    /// first is gone, another process checkpointed meanwhile.
    first_row: i64,
    last_row: i64,
    /// The ledger-log head and checkpoint when it began: the rows are current
    /// as of `through` once every slice is written.
    through: i64,
    base: i64,
    /// Account records in the stream when it began.
    records: usize,
    started: std::time::Instant,
    slices: usize,
}

impl SqliteWriter {
    /// The engine with another checkpoint policy (tests use tiny slices).
    pub fn with_checkpoint_policy(mut self, policy: CheckpointPolicy) -> SqliteWriter {
        self.policy = policy;
        self
    }

    /// Folds the stream into `accounts` rows when it has grown enough (or
    /// always, with `force`): one slice per call, each in a transaction of
    /// its own between batches; with `force` (shutdown) every slice.
    fn checkpoint(&mut self, force: bool) -> Result<(), StoreError> {
        if self.folding.is_none() {
            let p = &self.policy;
            let due =
                self.stream_records >= p.records || self.overlay.len() >= p.accounts || (self.last_checkpoint.elapsed() >= p.age && self.stream_records > 0);
            if !(due || (force && (self.stream_records > 0 || !self.overlay.is_empty()))) {
                return Ok(());
            }
        }
        loop {
            if let Err(e) = self.begin_transaction() {
                self.rollback_transaction();
                return Err(e);
            }
            let finished = match self.checkpoint_slice() {
                Ok(finished) => finished,
                Err(e) => {
                    // A failed COMMIT may have happened or not: load again.
                    self.rollback_transaction();
                    self.folding = None;
                    self.reload = true;
                    return Err(e);
                }
            };
            if finished || !force {
                return Ok(());
            }
        }
    }

    /// Writes the next slice of the checkpoint under way (starting one if
    /// none is, or if another process checkpointed meanwhile) and commits;
    /// true when that was the last.
    fn checkpoint_slice(&mut self) -> Result<bool, StoreError> {
        let conn = &self.conn;
        // `begin_transaction` has just compared it with the database.
        let (log_head, base) = self.known.ok_or_else(|| StoreError::Other(String::from("the writer does not know the log head")))?;
        let (first_row, last_row) = account_changes::stream_bounds(conn)?;
        let mut folding = match self.folding.take() {
            Some(f) if f.first_row == first_row && f.base == base => f,
            _ => {
                let planned = std::time::Instant::now();
                let ids = self.overlay.ids()?;
                tracing::debug!(accounts = ids.len(), elapsed_ms = planned.elapsed().as_millis() as u64, "account checkpoint planned");
                Folding {
                    ids,
                    written: 0,
                    first_row,
                    last_row,
                    through: log_head,
                    base,
                    records: self.stream_records,
                    started: std::time::Instant::now(),
                    slices: 0,
                }
            }
        };
        let end = folding.written.saturating_add(self.policy.slice.max(1)).min(folding.ids.len());
        let held = self.overlay.with_changes(&folding.ids[folding.written..end], |changes| account_changes::write_rows(conn, changes))?;
        if held != end - folding.written {
            // Its stream rows would be dropped with no row written.
            return Err(StoreError::Other(String::from("an account of the checkpoint left the overlay; the checkpoint starts over")));
        }
        folding.written = end;
        folding.slices += 1;
        let finished = end == folding.ids.len();
        if finished {
            account_changes::finish_checkpoint(conn, folding.last_row, folding.through)?;
        }
        run_cached(conn, "COMMIT")?;
        self.in_transaction = false;
        self.turn = None;
        if !finished {
            self.folding = Some(folding);
            return Ok(false);
        }
        self.known = Some((log_head, folding.through));
        self.overlay.pruned(folding.through);
        self.stream_records = self.stream_records.saturating_sub(folding.records);
        self.last_checkpoint = std::time::Instant::now();
        tracing::debug!(
            accounts = folding.ids.len(),
            slices = folding.slices,
            elapsed_ms = folding.started.elapsed().as_millis() as u64,
            "account changes checkpointed"
        );
        Ok(true)
    }

    /// Opens the write transaction, first loading the stream again when
    /// another connection has written since (or this one lost track).
    fn begin_transaction(&mut self) -> Result<(), StoreError> {
        if self.turn.is_none() {
            self.turn = Some(self.gate.enter_engine());
        }
        run_cached(&self.conn, "BEGIN IMMEDIATE")?;
        self.in_transaction = true;
        let now = (account_changes::log_head(&self.conn)?, account_changes::checkpointed_through(&self.conn)?);
        if self.known != Some(now) || self.reload {
            self.cache.clear();
            let folded = account_changes::fold(&self.conn)?;
            self.stream_records = folded.len();
            self.overlay.reset(&folded, now.0, now.1);
            self.known = Some(now);
            self.reload = false;
        }
        Ok(())
    }

    /// Starts a batch without the write turn when what this writer knows
    /// (its cached accounts and the overlay, as of ledger-log head and
    /// checkpoint `known`) is what the database holds. The batch then reads
    /// and applies its rules while the other writers of the process (the
    /// projector, the delivery worker) hold the turn, instead of waiting for
    /// them first; [`SqliteWriter::enter_optimistic`] takes the turn for its
    /// writes and checks that nothing the batch read has moved meanwhile.
    /// `false` when the batch must run under the lock from its start.
    fn begin_optimistic(&mut self) -> Result<bool, StoreError> {
        if std::mem::take(&mut self.pessimistic_next) || self.reload || self.known.is_none() {
            return Ok(false);
        }
        let now = (account_changes::log_head(&self.conn)?, account_changes::checkpointed_through(&self.conn)?);
        Ok(self.known == Some(now))
    }

    /// Takes the turn and opens the write transaction of an optimistic batch.
    /// Every ledger write appends to the ledger log or checkpoints, and every
    /// change to who is blocked bumps `blocked_generation`: if none of them
    /// moved since the batch began, what it read still holds, and it writes
    /// under the lock as if it had read there. Otherwise it fails with a
    /// conflict, which the engine retries — under the lock from the start.
    fn enter_optimistic(&mut self) -> Result<(), StoreError> {
        self.optimistic = false;
        self.entered_optimistically = true;
        self.turn = Some(self.gate.enter_engine());
        run_cached(&self.conn, "BEGIN IMMEDIATE")?;
        self.in_transaction = true;
        let now = (account_changes::log_head(&self.conn)?, account_changes::checkpointed_through(&self.conn)?);
        if self.known != Some(now) || !self.blocked.read_at(blocked::generation(&self.conn)?) {
            self.pessimistic_next = true;
            return Err(StoreError::Conflict(String::from("the ledger moved while the batch was applied outside the lock")));
        }
        Ok(())
    }

    fn rollback_transaction(&mut self) {
        if self.in_transaction {
            if let Err(e) = run_cached(&self.conn, "ROLLBACK") {
                tracing::error!(error = %e, "rollback failed");
            }
            self.in_transaction = false;
        }
        self.turn = None;
    }
}

impl WriteBackend for SqliteWriter {
    fn system(&self) -> &'static str {
        "sqlite"
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        self.heads.clear();
        self.written.clear();
        self.changes.clear();
        self.batch_log_seq = None;
        self.reread.clear();
        self.optimistic = self.begin_optimistic()?;
        if self.optimistic {
            return Ok(());
        }
        self.begin_transaction()
    }

    async fn due_expiries(&mut self, now: Timestamp, limit: usize) -> Result<Vec<TransactionId>, StoreError> {
        // The limit is written into the SQL, not bound: SQLite plans with a
        // bound LIMIT's value, so binding it marks the statement to be
        // prepared again on every run (once per batch; it showed in profiles
        // with one transfer per request). The engine passes one constant, so
        // the cache keeps one statement.
        let sql = format!("SELECT id FROM transactions WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY id LIMIT {limit}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now.micros()], |r| r.get::<_, String>(0))?;
        rows.map(|r| r.map(TransactionId::from_trusted).map_err(StoreError::from)).collect()
    }

    async fn load_transactions(&mut self, ids: &[TransactionId]) -> Result<Vec<Transaction>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = transaction_by_id(&self.conn, id.as_str())? {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn load_accounts(&mut self, ids: &[AccountId]) -> Result<Vec<AccountState>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {ACCOUNT_COLUMNS}, head_transaction_id, history_length FROM accounts WHERE id = ?1"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let stored_only = self.reread.contains(id.as_str());
            if !stored_only && let Some((state, head)) = self.cache.get(id.as_str()) {
                self.heads.insert(id.clone(), head.clone());
                out.push(state.clone());
                continue;
            }
            let row = stmt.query_row([id.as_str()], |r| Ok((account_row(r)?, Head::from_row(r.get(15)?, r.get(16)?)))).optional()?;
            if let Some((mut row, mut head)) = row {
                let change = if stored_only { account_changes::current(&self.conn, id.as_str())? } else { self.overlay.current(id.as_str()) };
                if let Some(change) = change {
                    change.apply_to(&mut row);
                    head = change.head;
                }
                let state = row.into_record()?.state;
                self.heads.insert(id.clone(), head.clone());
                self.cache.insert(id.clone(), (state.clone(), head));
                out.push(state);
            }
        }
        Ok(out)
    }

    async fn blocked_accounts(&mut self, accounts: &[AccountState]) -> Result<std::collections::HashSet<AccountId>, StoreError> {
        self.blocked.of(&self.conn, accounts)
    }

    async fn find_transaction_external_ids(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
        find_external_ids(&self.conn, "transactions", keys)
    }

    async fn find_account_external_ids(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
        find_external_ids(&self.conn, "accounts", keys)
    }

    async fn find_idempotency(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), IdempotencyRecord>, StoreError> {
        let mut out = HashMap::new();
        for (tenant, key) in keys {
            if let Some(record) = find_idempotency(&self.conn, *tenant, key)? {
                out.insert((*tenant, key.clone()), record);
            }
        }
        Ok(out)
    }

    async fn log_head(&mut self) -> Result<(i64, Hash), StoreError> {
        let head: Option<(i64, Vec<u8>)> =
            self.conn.prepare_cached("SELECT seq, hash FROM ledger_log ORDER BY seq DESC LIMIT 1")?.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        match head {
            None => Ok((0, GENESIS)),
            Some((seq, hash)) => Ok((seq, hash.try_into().map_err(|_| StoreError::Corrupt(String::from("log hash length")))?)),
        }
    }

    async fn write(&mut self, effects: &BatchEffects, log: &[(i64, Hash, Hash)], now: Timestamp) -> Result<(), StoreError> {
        if self.optimistic {
            self.enter_optimistic()?;
        }
        for a in &effects.new_accounts {
            self.heads.insert(a.state.id.clone(), Head::default());
        }
        // Chain each new transaction into the history of every account it touches.
        let mut checkpoints = Vec::new();
        let mut chains = Vec::with_capacity(effects.new_transactions.len());
        for t in &effects.new_transactions {
            chains.push(history::append(&mut self.heads, &t.id, t.entries.iter().map(|e| &e.account_id), &mut checkpoints)?);
        }
        let mut heads_written = foldhash::HashSet::default();
        let c = &self.conn;
        let heads = &self.heads;
        let head_of = |id: &str| heads.get(id).cloned().unwrap_or_default();
        {
            let mut stmt = c.prepare_cached(&format!(
                "INSERT INTO accounts ({ACCOUNT_COLUMNS}, head_transaction_id, history_length) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))?;
            for a in &effects.new_accounts {
                let s = &a.state;
                let head = head_of(s.id.as_str());
                heads_written.insert(s.id.as_str());
                self.written.push((s.clone(), head.clone()));
                stmt.execute(params![
                    s.id.as_str(),
                    s.tenant.0,
                    a.name,
                    s.currency.code(),
                    s.normal_balance.as_str(),
                    s.min_available_balance,
                    a.external_id,
                    rows::metadata_json(&a.metadata),
                    a.created_at.micros(),
                    s.counters.posted_debits,
                    s.counters.posted_credits,
                    s.counters.pending_debits,
                    s.counters.pending_credits,
                    s.version,
                    a.correlation_id.as_ref().map(|c| c.as_str()),
                    head.transaction.as_ref().map(TransactionId::as_str),
                    head.length
                ])?;
            }
            let mut link =
                c.prepare_cached("INSERT INTO customer_accounts (tenant_id, account_id, customer_id, actor, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for a in &effects.new_accounts {
                if let Some(owner) = &a.customer {
                    link.execute(params![a.state.tenant.0, a.state.id.as_str(), owner.customer_id, owner.actor, a.created_at.micros()])?;
                    // The owner may be blocked already: the next batch reloads the set.
                    c.prepare_cached(blocked::BUMP)?.execute([])?;
                }
            }
        }
        {
            // Changed accounts go to the stream, not to their rows (see account_changes.rs).
            for s in &effects.account_updates {
                let head = head_of(s.id.as_str());
                heads_written.insert(s.id.as_str());
                self.written.push((s.clone(), head.clone()));
                self.changes.push((s.id.clone(), AccountChange { counters: s.counters, version: s.version, head }));
            }
            // A head can only move with its account's counters, but never leave one behind.
            for t in &effects.new_transactions {
                for e in &t.entries {
                    if heads_written.insert(e.account_id.as_str()) {
                        let (state, _) =
                            self.cache.get(e.account_id.as_str()).ok_or_else(|| StoreError::Other(format!("account {} was not loaded", e.account_id)))?;
                        let head = head_of(e.account_id.as_str());
                        self.written.push((state.clone(), head.clone()));
                        self.changes.push((e.account_id.clone(), AccountChange { counters: state.counters, version: state.version, head }));
                    }
                }
            }
            if !self.changes.is_empty() {
                let refs: Vec<(&str, &AccountChange)> = self.changes.iter().map(|(id, c)| (id.as_str(), c)).collect();
                account_changes::append(c, &refs)?;
            }
            let mut stmt = c.prepare_cached("INSERT INTO account_checkpoints (account_id, seq, transaction_id) VALUES (?1, ?2, ?3)")?;
            for (account, seq, transaction) in &checkpoints {
                stmt.execute(params![account.as_str(), seq, transaction.as_str()])?;
            }
        }
        {
            let encoded: Vec<String> =
                effects.new_transactions.iter().map(|t| legs::encode(&t.id, t.effective_at, t.created_at, &t.entries)).collect::<Result<_, _>>()?;
            let rows: Vec<((&Transaction, &String), &String)> = effects.new_transactions.iter().zip(&chains).zip(&encoded).collect();
            TRANSACTION_INSERT.run(c, &rows, |s, at, ((t, chain), stored_legs)| {
                s.raw_bind_parameter(at, t.id.as_str())?;
                s.raw_bind_parameter(at + 1, t.tenant.0)?;
                s.raw_bind_parameter(at + 2, t.status.as_str())?;
                s.raw_bind_parameter(at + 3, &t.description)?;
                s.raw_bind_parameter(at + 4, &t.external_id)?;
                s.raw_bind_parameter(at + 5, t.effective_at.micros())?;
                s.raw_bind_parameter(at + 6, t.expires_at.map(Timestamp::micros))?;
                s.raw_bind_parameter(at + 7, t.created_at.micros())?;
                s.raw_bind_parameter(at + 8, t.posted_at.map(Timestamp::micros))?;
                s.raw_bind_parameter(at + 9, t.voided_at.map(Timestamp::micros))?;
                s.raw_bind_parameter(at + 10, t.void_reason.map(|r| r.as_str()))?;
                s.raw_bind_parameter(at + 11, t.reverses.as_ref().map(TransactionId::as_str))?;
                s.raw_bind_parameter(at + 12, t.reversed_by.as_ref().map(TransactionId::as_str))?;
                s.raw_bind_parameter(at + 13, rows::metadata_json(&t.metadata))?;
                s.raw_bind_parameter(at + 14, t.correlation_id.as_ref().map(|c| c.as_str()))?;
                s.raw_bind_parameter(at + 15, chain.as_str())?;
                s.raw_bind_parameter(at + 16, stored_legs.as_str())
            })?;
            // A posting's new legs are spliced in before the stored array's
            // closing bracket: what is stored is only ever appended to.
            let mut update = c.prepare_cached(
                "UPDATE transactions SET status = ?2, posted_at = ?3, voided_at = ?4, void_reason = ?5, reversed_by = ?6,
                 legs = CASE WHEN ?7 = '' THEN legs WHEN legs = '[]' THEN '[' || substr(?7, 2) || ']' ELSE substr(legs, 1, length(legs) - 1) || ?7 || ']' END
                 WHERE id = ?1",
            )?;
            for u in &effects.transaction_updates {
                let t = &u.transaction;
                let added = legs::encode_tail(&t.id, t.effective_at, t.created_at, t.entries.get(u.stored_entries..).unwrap_or(&[]))?;
                update.execute(params![
                    t.id.as_str(),
                    t.status.as_str(),
                    t.posted_at.map(Timestamp::micros),
                    t.voided_at.map(Timestamp::micros),
                    t.void_reason.map(|r| r.as_str()),
                    t.reversed_by.as_ref().map(TransactionId::as_str),
                    added
                ])?;
            }
        }
        {
            let mut stmt =
                c.prepare_cached("INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for r in &effects.idempotency {
                stmt.execute(params![r.tenant.0, r.key, r.fingerprint, r.response.status, r.response.body, r.created_at.micros()])?;
            }
        }
        {
            let mut stmt = c.prepare_cached("INSERT INTO ledger_log (seq, content, prev_hash, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for (content, (seq, prev, hash)) in effects.log.iter().zip(log) {
                stmt.execute(params![seq, crate::log_content::pack(content).as_ref(), &prev[..], &hash[..], now.micros()])?;
            }
            self.batch_log_seq = log.last().map(|(seq, _, _)| *seq);
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        if let Err(e) = run_cached(&self.conn, "COMMIT") {
            // Whether it took effect is unknown: start again from the database.
            self.cache.clear();
            self.overlay.invalidate();
            self.reload = true;
            // The turn is kept: the engine rolls back, which ends it.
            return Err(e.into());
        }
        self.in_transaction = false;
        self.turn = None;
        self.entered_optimistically = false;
        // Published even without account changes (a batch that only opens
        // accounts): readers compare the overlay with the log head they see.
        let changes = std::mem::take(&mut self.changes);
        self.stream_records += changes.len();
        if let (Some(seq), Some((_, checkpoint))) = (self.batch_log_seq, self.known) {
            self.known = Some((seq, checkpoint));
        }
        match self.batch_log_seq {
            Some(seq) => self.overlay.publish(seq, changes),
            None if !changes.is_empty() => {
                // Tagged as of the newest batch published, which a checkpoint
                // under way may already cover: it would prune these changes
                // with the ones it folded. It starts over instead.
                self.folding = None;
                self.overlay.publish(self.overlay.published(), changes)
            }
            None => {}
        }
        if self.cache.len() + self.written.len() > ACCOUNT_CACHE_LIMIT {
            self.cache.clear();
        }
        for (state, head) in self.written.drain(..) {
            self.cache.insert(state.id.clone(), (state, head));
        }
        Ok(())
    }

    async fn rollback(&mut self) {
        // Whatever failed it (a moved ledger, an idempotency key another
        // writer stored meanwhile), the retry runs under the lock.
        self.pessimistic_next |= std::mem::take(&mut self.entered_optimistically);
        self.optimistic = false;
        self.written.clear();
        self.changes.clear();
        self.rollback_transaction();
    }

    async fn reread(&mut self, ids: &[AccountId]) {
        self.reread.extend(ids.iter().map(|id| id.as_str().to_owned()));
    }

    async fn maintain(&mut self, force: bool) {
        if let Err(e) = self.checkpoint(force) {
            tracing::warn!(error = %e, "account checkpoint failed; the stream keeps every change and it is tried again");
        }
    }

    async fn fold_accounts(&mut self, ids: &[AccountId]) -> Result<HashMap<AccountId, Counters>, StoreError> {
        ids.iter().map(|id| Ok((id.clone(), sum_entries(&self.conn, id)?))).collect()
    }

    async fn purge_idempotency(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(self.conn.execute(PURGE_IDEMPOTENCY, [before.micros()])? as u64)
    }
}

/// The engine's rows, many per statement (see `bulk.rs`).
static TRANSACTION_INSERT: LazyLock<BulkInsert> = LazyLock::new(|| BulkInsert::new("transactions", &format!("{TRANSACTION_COLUMNS}, chain, legs"), ""));

fn find_external_ids(c: &Connection, table: &str, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT id FROM {table} WHERE tenant_id = ?1 AND external_id = ?2"))?;
    let mut out = HashMap::new();
    for (tenant, ext) in keys {
        if let Some(id) = stmt.query_row(params![tenant.0, ext], |r| r.get::<_, String>(0)).optional()? {
            out.insert((*tenant, ext.clone()), id);
        }
    }
    Ok(out)
}

// ---- signed requests: signing secrets and nonces --------------------------

/// When a pooled write's commit reaches the disk.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CommitSync {
    /// Before `COMMIT` returns (`synchronous=FULL`), like every ledger write.
    Full,
    /// With the next synced commit of any writer, or the next checkpoint
    /// (`synchronous=NORMAL`: the WAL is one file, synced whole, so a synced
    /// commit carries every frame written before it). For what can be
    /// rebuilt after a power cut: the event projector's rounds, which store
    /// their cursor with their events, so a lost round is projected again.
    /// Its commit then holds the write turn — which the engine waits for —
    /// without a sync of its own.
    Deferred,
}

impl CommitSync {
    fn pragma(self) -> &'static str {
        match self {
            CommitSync::Full => "FULL",
            CommitSync::Deferred => "NORMAL",
        }
    }
}

impl SqliteStore {
    /// Runs `f` in an immediate write transaction on a pooled connection:
    /// for small writes on the request path (nonces), which would pay for
    /// opening a connection each time with [`SqliteStore::write_blocking`].
    pub(crate) fn write_pooled_blocking<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.write_pooled_with(CommitSync::Full, f)
    }

    /// A pooled write whose commit reaches the disk as `sync` says.
    pub(crate) fn write_pooled_with<T>(&self, sync: CommitSync, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.with_pooled(|conn| {
            // SQLite's automatic checkpoint runs inside COMMIT, so it would copy
            // the WAL into the database while this writer holds the turn, and
            // the engine waited for it (6 % of the server's CPU in a batched run).
            // The `settle-checkpoint` thread does it outside any turn when it runs.
            let running = self.checkpointing.load(std::sync::atomic::Ordering::SeqCst);
            conn.pragma_update(None, "wal_autocheckpoint", if running { 0 } else { DEFAULT_WAL_AUTOCHECKPOINT })?;
            // Set on every use: pooled connections serve both kinds of write.
            conn.pragma_update(None, "synchronous", sync.pragma())?;
            let _turn = self.gate.enter();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }

    /// The encrypted signing secret of a key, if it requires signatures.
    pub fn signing_secret_blocking(&self, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached("SELECT ciphertext FROM api_key_signing_secrets WHERE api_key_id = ?1")?;
            Ok(stmt.query_row([key_id], |r| r.get(0)).optional()?)
        })
    }

    /// Every key that requires signatures, with its encrypted secret.
    pub fn signing_secrets_blocking(&self) -> Result<Vec<(ApiKeyId, Vec<u8>)>, StoreError> {
        self.read_blocking(|c| {
            let mut stmt = c.prepare_cached("SELECT api_key_id, ciphertext FROM api_key_signing_secrets ORDER BY api_key_id")?;
            let rows = stmt.query_map([], |r| Ok((ApiKeyId::from_trusted(r.get(0)?), r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Records a nonce; `false` when the key already used it (a replay).
    pub fn record_nonce_blocking(&self, key_id: &str, nonce: &str, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.write_pooled_blocking(|tx| {
            let inserted = tx.execute(
                "INSERT INTO request_nonces (api_key_id, nonce, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (api_key_id, nonce) DO NOTHING",
                params![key_id, nonce, expires_at.micros()],
            )?;
            Ok(inserted == 1)
        })
    }

    /// Deletes nonces whose signatures can no longer be accepted anyway.
    pub fn purge_nonces_blocking(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.write_pooled_blocking(|tx| Ok(tx.execute("DELETE FROM request_nonces WHERE expires_at < ?1", [before.micros()])? as u64))
    }
}

/// Idempotency records past retention, except the chunk keys of operations
/// still open: a resumed operation replays its committed chunks by those keys,
/// however long it waited, and must never apply one twice.
const PURGE_IDEMPOTENCY: &str = "DELETE FROM idempotency_keys WHERE created_at < ?1 AND NOT EXISTS (
    SELECT 1 FROM operations o WHERE o.status IN ('pending', 'running') AND o.tenant_id = idempotency_keys.tenant_id
    AND substr(idempotency_keys.key, 1, length(o.id) + 7) = o.id || '/chunk/')";

#[cfg(test)]
mod migration_tests {
    use super::*;

    /// 0023 rebuilds `events` without a rowid, 0024 keys it by (tenant_id,
    /// id): the events already stored survive both.
    #[test]
    fn events_survive_being_rekeyed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("m.db");
        let conn = open(&path).expect("open");
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < 23) {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("migration {version}: {e}"));
        }
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)").expect("table");
        for (version, _) in MIGRATIONS.iter().filter(|(v, _)| *v < 23) {
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)", [version]).expect("record");
        }
        conn.execute(
            "INSERT INTO events (id, tenant_id, type, object_id, sequence, log_seq, created_at, body) VALUES ('evt_1', 1, 'ledger.account.created', 'acct_1', 1, 7, 5, x'7b7d')",
            [],
        )
        .expect("an event");
        drop(conn);
        migrate(&path).expect("0023 and 0024");
        let conn = open(&path).expect("open");
        let kept: (String, i64, Vec<u8>) = conn
            .query_row("SELECT object_id, log_seq, body FROM events WHERE tenant_id = 1 AND id = 'evt_1'", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("kept");
        assert_eq!(kept, (String::from("acct_1"), 7, b"{}".to_vec()));
        assert!(conn.query_row("SELECT rowid FROM events", [], |r| r.get::<_, i64>(0)).is_err(), "events still has a rowid");
        let names = |sql: &str| -> Vec<String> { conn.prepare(sql).expect(sql).query_map([], |r| r.get(0)).expect(sql).collect::<Result<_, _>>().expect(sql) };
        let primary_key = names("SELECT name FROM pragma_table_info('events') WHERE pk > 0 ORDER BY pk");
        assert_eq!(primary_key, ["tenant_id", "id"]);
        let indexes = names("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events' AND name LIKE 'events_by_%' ORDER BY name");
        assert_eq!(indexes, ["events_by_object", "events_by_type"]);
    }

    /// A database with every migration before `version` applied.
    fn migrated_before(path: &Path, version: i64) -> Connection {
        let conn = open(path).expect("open");
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)").expect("table");
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < version) {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("migration {v}: {e}"));
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)", [v]).expect("record");
        }
        conn
    }

    const HOLD: &str = "ltx_01m8vehdq0qsfd8r6ank3abcde";
    const TRANSFER: &str = "ltx_01m8vehdq0qsfd8r6ank3fghjk";

    /// Two transactions of the old shape: a transfer, and a hold posted in
    /// part later (its posted legs have their own times).
    fn old_rows(conn: &Connection) {
        conn.execute_batch(&format!(
            "INSERT INTO transactions (id, tenant_id, status, effective_at, created_at, posted_at, metadata, chain) VALUES
                ('{HOLD}', 1, 'posted', 100, 100, 500, '{{}}', '{{}}'), ('{TRANSFER}', 1, 'posted', 200, 200, 200, '{{}}', '{{}}');
             INSERT INTO entries (id, transaction_id, account_id, direction, amount, currency, leg, effective_at, created_at) VALUES
                ('ent_01m8vehdq0qsfd8r6ank3abcdeh00', '{HOLD}', 'acct_a', 'debit', 70, 'EUR', 'pending', 100, 100),
                ('ent_01m8vehdq0qsfd8r6ank3abcdeh01', '{HOLD}', 'acct_b', 'credit', 70, 'EUR', 'pending', 100, 100),
                ('ent_01m8vehdq0qsfd8r6ank3abcdep00', '{HOLD}', 'acct_a', 'debit', 50, 'EUR', 'posted', 500, 500),
                ('ent_01m8vehdq0qsfd8r6ank3abcdep01', '{HOLD}', 'acct_b', 'credit', 50, 'EUR', 'posted', 500, 500),
                ('ent_01m8vehdq0qsfd8r6ank3fghjkp00', '{TRANSFER}', 'acct_b', 'debit', 9, 'EUR', 'posted', 200, 200),
                ('ent_01m8vehdq0qsfd8r6ank3fghjkp01', '{TRANSFER}', 'acct_a', 'credit', 9, 'EUR', 'posted', 200, 200);"
        ))
        .expect("old rows");
    }

    /// A database at migration 24 (`m.db` in the returned directory) holding [`old_rows`].
    fn old_database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = migrated_before(&dir.path().join("m.db"), 25);
        old_rows(&conn);
        (dir, conn)
    }

    /// 0025 moves every entry into its transaction's row: each reads back
    /// as it was, the table is gone, and the stored legs only grow.
    #[test]
    fn entries_move_into_their_transactions_unchanged() {
        let (dir, conn) = old_database();
        let path = dir.path().join("m.db");
        let before: Vec<(String, String, String, i64, String, i64, i64)> = conn
            .prepare("SELECT id, account_id, direction, amount, leg, effective_at, created_at FROM entries ORDER BY id")
            .expect("entries")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
            .expect("entries")
            .collect::<Result<_, _>>()
            .expect("entries");
        drop(conn);
        migrate(&path).expect("0025");
        let conn = open(&path).expect("open");
        let mut after = Vec::new();
        for id in [HOLD, TRANSFER] {
            let t = transaction_by_id(&conn, id).expect("read").expect("kept");
            after.extend(t.entries.iter().map(|e| {
                (
                    e.id.as_str().to_owned(),
                    e.account_id.as_str().to_owned(),
                    e.direction.as_str().to_owned(),
                    e.amount,
                    e.leg.as_str().to_owned(),
                    e.effective_at.micros(),
                    e.created_at.micros(),
                )
            }));
        }
        assert_eq!(after, before);
        let stored: String = conn.query_row("SELECT legs FROM transactions WHERE id = ?1", [TRANSFER], |r| r.get(0)).expect("legs");
        assert_eq!(stored, r#"[["p00","acct_b","debit",9,"EUR"],["p01","acct_a","credit",9,"EUR"]]"#, "times equal to the transaction's are not repeated");
        assert!(conn.query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0)).is_err(), "the entries table is gone");
        assert!(conn.execute("UPDATE transactions SET legs = json_set(legs, '$[0][3]', 10) WHERE id = ?1", [TRANSFER]).is_err());
        for column in ["id = id || 'x'", "tenant_id = 2", "effective_at = 0", "created_at = 0"] {
            assert!(
                conn.execute(&format!("UPDATE transactions SET {column} WHERE id = ?1"), [TRANSFER]).is_err(),
                "{column}: what entries derive from is fixed"
            );
        }
        assert_eq!(
            conn.execute("UPDATE transactions SET status = 'posted', created_at = created_at WHERE id = ?1", [TRANSFER]).expect("unchanged values pass"),
            1
        );
        let appended = format!("{},[\"p02\",\"acct_c\",\"debit\",1,\"EUR\"]]", &stored[..stored.len() - 1]);
        assert_eq!(conn.execute("UPDATE transactions SET legs = ?2 WHERE id = ?1", [TRANSFER, appended.as_str()]).expect("an append is allowed"), 1);
    }

    /// An entry whose transaction is missing would be lost with the table:
    /// the migration stops and changes nothing.
    #[test]
    fn an_entry_without_its_transaction_stops_the_move() {
        let (dir, conn) = old_database();
        let path = dir.path().join("m.db");
        conn.execute_batch(
            "INSERT INTO entries (id, transaction_id, account_id, direction, amount, currency, leg, effective_at, created_at) VALUES
                ('ent_01m8vehdq0qsfd8r6ank3zzzzzp00', 'ltx_01m8vehdq0qsfd8r6ank3zzzzz', 'acct_a', 'debit', 1, 'EUR', 'posted', 1, 1)",
        )
        .expect("orphan");
        drop(conn);
        assert!(migrate(&path).is_err());
        let conn = open(&path).expect("open");
        assert_eq!(conn.query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0)).expect("still there"), 7);
        assert!(conn.query_row("SELECT legs FROM transactions", [], |r| r.get::<_, String>(0)).is_err(), "the transactions were left as they were");
    }
}

#[cfg(test)]
mod commit_sync_tests {
    use super::*;

    fn synchronous(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
        Ok(tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    /// Pooled connections serve both kinds of write: a deferred write must
    /// not leave the next ledger-grade write on the same connection unsynced.
    #[test]
    fn a_full_write_after_a_deferred_one_on_the_same_connection_syncs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.db");
        migrate(&path).expect("migrate");
        let store = SqliteStore::new(path);
        // SQLite's values: 1 is NORMAL, 2 is FULL.
        assert_eq!(store.write_pooled_with(CommitSync::Deferred, synchronous).expect("deferred"), 1);
        assert_eq!(store.readers.lock().map(|p| p.len()).unwrap_or(0), 1, "the connection went back to the pool");
        assert_eq!(store.write_pooled_blocking(synchronous).expect("full"), 2);
        assert_eq!(store.write_pooled_with(CommitSync::Deferred, synchronous).expect("deferred again"), 1);
    }
}
