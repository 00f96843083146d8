//! One store, two backends. Callers hold a [`Store`] and never know which
//! database is underneath; every operation exists on both.

use crate::engine::{self, EngineConfig, EngineHandle};
use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::records::{AccountRecord, ApiKeyRecord, EntryRow, IdempotencyRecord, LogRecord, Page, PageRequest};
use crate::rows::KeyFilter;
use crate::sqlite::{self, SqliteStore};
use settle_core::clock::{Clock, Timestamp};
use settle_core::ids::{AccountId, ApiKeyId, IdGenerator, OrgId, TransactionId};
use settle_core::ledger::{AccountState, Counters, Entry, Transaction, TransactionStatus};
use settle_core::tenancy::{Environment, Scope, TenantId};
use std::path::Path;
use std::sync::Arc;

/// The SQLite file used when no database URL is given.
pub const SQLITE_FILE: &str = "settle.sqlite3";

#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Resolves when the engine has drained its queue and stopped.
pub struct EngineTask(tokio::sync::oneshot::Receiver<()>);

impl EngineTask {
    pub async fn finished(self) {
        let _ = self.0.await;
    }
}

impl Store {
    /// Opens the database named by `database_url` (`postgres://…`,
    /// `sqlite://PATH`), or the SQLite file in `data_dir` when there is none.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(Store::Postgres(PgStore::connect(url).await?)),
            Some(url) => {
                let path = url.strip_prefix("sqlite://").ok_or_else(|| {
                    StoreError::Other(format!("unsupported database URL scheme (want postgres:// or sqlite://): {}", url.split(':').next().unwrap_or("")))
                })?;
                Ok(Store::Sqlite(SqliteStore::new(path.into())))
            }
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Unavailable(format!("cannot create data dir: {e}")))?;
                Ok(Store::Sqlite(SqliteStore::new(data_dir.join(SQLITE_FILE))))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                let path = s.path().to_owned();
                crate::blocking::run(move || sqlite::migrate(&path)).await
            }
            Store::Postgres(p) => p.migrate().await,
        }
    }

    /// Starts the engine: on SQLite on its own thread (its connection blocks),
    /// on PostgreSQL as a task.
    pub async fn start_engine(&self, clock: Arc<dyn Clock>, ids: Arc<IdGenerator>, config: EngineConfig) -> Result<(EngineHandle, EngineTask), StoreError> {
        let (handle, receiver) = engine::channel_with_capacity(config.queue_capacity);
        let (done, finished) = tokio::sync::oneshot::channel();
        match self {
            Store::Sqlite(s) => {
                let writer = s.writer()?;
                let checkpointer = s.start_checkpointer(config.checkpointer_nice)?;
                let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|e| StoreError::Other(e.to_string()))?;
                std::thread::Builder::new()
                    .name(String::from("settle-engine"))
                    .spawn(move || {
                        let nice = crate::priority::current_thread_nice();
                        if nice > 0 {
                            tracing::warn!(nice, "the ledger engine was started from a lowered thread and runs at its priority (see priority.rs)");
                        }
                        runtime.block_on(engine::run(writer, receiver, clock, ids, config));
                        checkpointer.stop();
                        let _ = done.send(());
                    })
                    .map_err(|e| StoreError::Other(e.to_string()))?;
            }
            Store::Postgres(p) => {
                let writer = p.writer().await?;
                tokio::spawn(async move {
                    engine::run(writer, receiver, clock, ids, config).await;
                    let _ = done.send(());
                });
            }
        }
        Ok((handle, EngineTask(finished)))
    }

    pub async fn ready(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ready().await,
            Store::Postgres(p) => p.ready().await,
        }
    }

    pub async fn get_account(&self, tenant: TenantId, id: AccountId, now: Timestamp) -> Result<Option<AccountRecord>, StoreError> {
        let mut found = match self {
            Store::Sqlite(s) => s.get_account(tenant, id, now).await,
            Store::Postgres(p) => p.get_account(tenant, id, now).await,
        }?;
        if let Some(account) = found.as_mut() {
            self.with_customers(tenant, std::slice::from_mut(account)).await?;
        }
        Ok(found)
    }

    pub async fn list_accounts(&self, tenant: TenantId, page: PageRequest, now: Timestamp) -> Result<Page<AccountRecord>, StoreError> {
        let mut page = match self {
            Store::Sqlite(s) => s.list_accounts(tenant, page, now).await,
            Store::Postgres(p) => p.list_accounts(tenant, page, now).await,
        }?;
        self.with_customers(tenant, &mut page.items).await?;
        Ok(page)
    }

    /// Fills in the owning customer of each account (the link lives in
    /// `customer_accounts`, written with the account or linked later).
    pub(crate) async fn with_customers(&self, tenant: TenantId, accounts: &mut [AccountRecord]) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let mut owners = self.account_customers(tenant, accounts.iter().map(|a| a.state.id.as_str().to_owned()).collect()).await?;
        for account in accounts {
            account.customer = owners.remove(account.state.id.as_str());
        }
        Ok(())
    }

    pub async fn get_transaction(&self, tenant: TenantId, id: TransactionId, now: Timestamp) -> Result<Option<Transaction>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get_transaction(tenant, id, now).await,
            Store::Postgres(p) => p.get_transaction(tenant, id, now).await,
        }
    }

    pub async fn list_transactions(
        &self,
        tenant: TenantId,
        account: Option<AccountId>,
        status: Option<TransactionStatus>,
        page: PageRequest,
        now: Timestamp,
    ) -> Result<Page<Transaction>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_transactions(tenant, account, status, page, now).await,
            Store::Postgres(p) => p.list_transactions(tenant, account, status, page, now).await,
        }
    }

    /// `None` when the account is not the tenant's.
    pub async fn list_entries(&self, tenant: TenantId, account: AccountId, page: PageRequest, now: Timestamp) -> Result<Option<Page<EntryRow>>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list_entries(tenant, account, page, now).await,
            Store::Postgres(p) => p.list_entries(tenant, account, page, now).await,
        }
    }

    pub async fn balances_as_of(&self, tenant: TenantId, account: AccountId, at: Timestamp) -> Result<Option<(AccountRecord, Counters)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.balances_as_of(tenant, account, at).await,
            Store::Postgres(p) => p.balances_as_of(tenant, account, at).await,
        }
    }

    pub async fn find_idempotency(&self, tenant: TenantId, key: String) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                crate::blocking::run(move || s.find_idempotency_blocking(tenant, &key)).await
            }
            Store::Postgres(p) => p.find_idempotency(tenant, &key).await,
        }
    }

    /// The key whose secret hashes to `secret_hash`, revoked or not.
    pub async fn find_api_key(&self, secret_hash: String) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                crate::blocking::run(move || s.api_keys(KeyFilter::SecretHash(&secret_hash))).await.map(|v| v.into_iter().next())
            }
            Store::Postgres(p) => Ok(p.api_keys(KeyFilter::SecretHash(&secret_hash)).await?.into_iter().next()),
        }
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.api_keys(KeyFilter::All),
            Store::Postgres(p) => p.api_keys(KeyFilter::All).await,
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one operator call with every field of a new key")]
    pub async fn create_api_key(
        &self,
        org_name: &str,
        environment: Environment,
        key_id: &ApiKeyId,
        org_id_if_new: &OrgId,
        secret_hash: &str,
        scopes: &[Scope],
        now: Timestamp,
    ) -> Result<ApiKeyRecord, StoreError> {
        match self {
            Store::Sqlite(s) => s.create_api_key(org_name, environment, key_id, org_id_if_new, secret_hash, scopes, None, now),
            Store::Postgres(p) => p.create_api_key(org_name, environment, key_id, org_id_if_new, secret_hash, scopes, None, now).await,
        }
    }

    /// Sets (or, with `None`, clears) a key's own rate limit; false when no such key.
    pub async fn set_api_key_rate_limit(&self, id: &ApiKeyId, limit: Option<settle_core::tenancy::RateLimit>) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.set_api_key_rate_limit(id, limit),
            Store::Postgres(p) => p.set_api_key_rate_limit(id, limit).await,
        }
    }

    pub async fn revoke_api_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.revoke_api_key(id, now),
            Store::Postgres(p) => p.revoke_api_key(id, now).await,
        }
    }

    pub async fn count_organizations(&self) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.count_organizations(),
            Store::Postgres(p) => p.count_organizations().await,
        }
    }

    pub async fn log_records(&self, after: i64, limit: i64) -> Result<Vec<LogRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.log_records(after, limit),
            Store::Postgres(p) => p.log_records(after, limit).await,
        }
    }

    pub async fn entries_chunk(&self, after: &str, limit: i64) -> Result<Vec<(Entry, TransactionStatus)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.entries_chunk(after, limit),
            Store::Postgres(p) => p.entries_chunk(after, limit).await,
        }
    }

    /// An account's stored counters and what its stored entries sum to, read
    /// from one snapshot (so a concurrent write cannot fake a drift).
    pub async fn recount(&self, id: &AccountId) -> Result<Option<(Counters, Counters)>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (s, id) = (s.clone(), id.clone());
                crate::blocking::run(move || s.recount(&id)).await
            }
            Store::Postgres(p) => p.recount(id).await,
        }
    }

    pub async fn all_account_states(&self) -> Result<Vec<AccountState>, StoreError> {
        match self {
            Store::Sqlite(s) => s.all_account_states(),
            Store::Postgres(p) => p.all_account_states().await,
        }
    }

    /// Each account's history as its chain gives it (SQLite), newest first,
    /// for the audit to compare with the entries; `None` where histories are
    /// an index (PostgreSQL), which cannot drift from the rows it indexes.
    pub async fn account_histories(&self) -> Result<Option<Vec<crate::history::Walked>>, StoreError> {
        match self {
            Store::Sqlite(s) => s.account_histories().map(Some),
            Store::Postgres(_) => Ok(None),
        }
    }
}

/// Signed requests: keys that require them, their encrypted signing secrets, and nonces.
impl Store {
    /// Creates a key that must sign its requests, with its encrypted signing secret, atomically.
    #[expect(clippy::too_many_arguments, reason = "one operator call with every field of a new key")]
    pub async fn create_signed_api_key(
        &self,
        org_name: &str,
        environment: Environment,
        key_id: &ApiKeyId,
        org_id_if_new: &OrgId,
        secret_hash: &str,
        scopes: &[Scope],
        signing_ciphertext: &[u8],
        now: Timestamp,
    ) -> Result<ApiKeyRecord, StoreError> {
        match self {
            Store::Sqlite(s) => s.create_api_key(org_name, environment, key_id, org_id_if_new, secret_hash, scopes, Some(signing_ciphertext), now),
            Store::Postgres(p) => p.create_api_key(org_name, environment, key_id, org_id_if_new, secret_hash, scopes, Some(signing_ciphertext), now).await,
        }
    }

    /// The encrypted signing secret of a key; `None` when the key does not require signatures.
    pub async fn signing_secret(&self, key_id: &ApiKeyId) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (s, id) = (s.clone(), key_id.as_str().to_owned());
                crate::blocking::run(move || s.signing_secret_blocking(&id)).await
            }
            Store::Postgres(p) => p.signing_secret(key_id.as_str()).await,
        }
    }

    /// Every key that requires signatures, with its encrypted secret.
    pub async fn signing_secrets(&self) -> Result<Vec<(ApiKeyId, Vec<u8>)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.signing_secrets_blocking(),
            Store::Postgres(p) => p.signing_secrets().await,
        }
    }

    /// Records that `key_id` used `nonce`, remembered until `expires_at`.
    /// `false` when it was already used: the request is a replay.
    pub async fn record_nonce(&self, key_id: &ApiKeyId, nonce: &str, expires_at: Timestamp) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let (s, id, nonce) = (s.clone(), key_id.as_str().to_owned(), nonce.to_owned());
                crate::blocking::run(move || s.record_nonce_blocking(&id, &nonce, expires_at)).await
            }
            Store::Postgres(p) => p.record_nonce(key_id.as_str(), nonce, expires_at).await,
        }
    }

    /// Deletes nonces remembered until before `before`.
    pub async fn purge_nonces(&self, before: Timestamp) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let s = s.clone();
                crate::blocking::run(move || s.purge_nonces_blocking(before)).await
            }
            Store::Postgres(p) => p.purge_nonces(before).await,
        }
    }
}
