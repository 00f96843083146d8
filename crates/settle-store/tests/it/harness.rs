//! A store with its engine on a fresh database, a manual clock, one tenant,
//! and short ways to say what the scenarios do.

use settle_core::clock::{Clock, ManualClock, Timestamp};
use settle_core::ids::{AccountId, IdGenerator, TransactionId};
use settle_core::ledger::{Balances, Direction, EntryDraft, Transaction, TransactionDraft, TransactionStatus};
use settle_core::money::{Amount, Currency};
use settle_core::tenancy::{Environment, Scope, TenantId};
use settle_store::Store;
use settle_store::engine::{Command, CommandError, EngineConfig, EngineHandle, IdempotencyClaim, Outcome, Reply};
use settle_store::records::{AccountRecord, NewAccount, PageRequest, StoredResponse};
use settle_store::store::EngineTask;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Generates one test per backend for each scenario `async fn name(l: TestLedger)`
/// of the calling module: `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::TestLedger::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(ledger) = crate::harness::TestLedger::postgres().await else {
                        eprintln!("skipped: SETTLE_TEST_POSTGRES_URL is not set");
                        return;
                    };
                    super::$name(ledger).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// When the scenarios' clock starts: 2026-01-01T00:00:00Z.
pub const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

pub fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

/// Where a test's database lives; dropping it removes the database.
pub enum Database {
    Sqlite { url: String, _dir: tempfile::TempDir },
    Postgres(PgDatabase),
}

impl Database {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Database {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("settle.sqlite3").display());
        Database::Sqlite { url, _dir: dir }
    }

    /// A fresh PostgreSQL database, or `None` when `SETTLE_TEST_POSTGRES_URL` is not set.
    pub async fn postgres() -> Option<Database> {
        PgDatabase::create().await.map(Database::Postgres)
    }

    pub fn url(&self) -> &str {
        match self {
            Database::Sqlite { url, .. } => url,
            Database::Postgres(pg) => &pg.url,
        }
    }
}

/// A fresh PostgreSQL database `settle_t_<random>`, created through the
/// server's `postgres` database and dropped `WITH (FORCE)` when this is dropped.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

async fn admin_connect(admin_url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

impl PgDatabase {
    /// `None` when `SETTLE_TEST_POSTGRES_URL` is not set.
    pub async fn create() -> Option<PgDatabase> {
        let base = std::env::var("SETTLE_TEST_POSTGRES_URL").ok()?;
        let admin_url = with_database(&base, "postgres");
        // An org id is 26 random-enough lower-case base32 characters after its prefix.
        let suffix = IdGenerator::default().org().as_str()["org_".len()..].to_owned();
        let name = format!("settle_t_{suffix}");
        let admin = admin_connect(&admin_url).await.expect("SETTLE_TEST_POSTGRES_URL is set but PostgreSQL is unreachable");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        Some(PgDatabase { url: with_database(&base, &name), admin_url, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // From a thread with a runtime of its own: Drop may run inside one, or while panicking.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let admin = admin_connect(&admin_url).await.ok()?;
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Engine settings for scenarios: the idle sweep never runs by itself, so
/// a scenario decides when expired holds are swept (by sending a command).
pub fn engine_config() -> EngineConfig {
    EngineConfig { sweep_interval: Duration::from_secs(3600), ..EngineConfig::default() }
}

/// A migrated store, its running engine, and a tenant to work as.
pub struct TestLedger {
    pub store: Store,
    pub engine: EngineHandle,
    pub clock: ManualClock,
    pub tenant: TenantId,
    engine_task: EngineTask,
    // Last, so the database outlives everything that uses it.
    pub database: Database,
}

impl TestLedger {
    pub async fn sqlite() -> TestLedger {
        TestLedger::start(Database::sqlite()).await
    }

    pub async fn postgres() -> Option<TestLedger> {
        Some(TestLedger::start(Database::postgres().await?).await)
    }

    async fn start(database: Database) -> TestLedger {
        let store = Store::open(Some(database.url()), std::path::Path::new("unused")).await.unwrap();
        store.migrate().await.unwrap();
        store.ready().await.unwrap();
        let clock = ManualClock::new(START);
        let tenant = new_tenant(&store, "acme").await;
        let (engine, engine_task) = store.start_engine(Arc::new(clock.clone()), Arc::new(IdGenerator::default()), engine_config()).await.unwrap();
        TestLedger { store, engine, clock, tenant, engine_task, database }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Another organization's tenant on the same database.
    pub async fn other_tenant(&self, org: &str) -> TenantId {
        new_tenant(&self.store, org).await
    }

    /// Stops the engine once it has drained, then checks with
    /// `settle audit verify` that the log chains and every stored balance
    /// equals the fold of its entries.
    pub async fn finish(self) {
        let (store, database) = self.stop().await;
        let audit = settle_store::audit::verify(&store).await.unwrap();
        assert!(audit.is_ok(), "audit found {audit:?}");
        drop(store);
        drop(database);
    }

    /// Stops the engine once it has drained; the store stays open.
    pub async fn stop(self) -> (Store, Database) {
        let TestLedger { store, engine, engine_task, database, .. } = self;
        drop(engine);
        engine_task.finished().await;
        (store, database)
    }

    pub async fn submit_as(&self, tenant: TenantId, command: Command) -> Result<Outcome, CommandError> {
        match self.engine.submit(tenant, command, None).await.unwrap() {
            Reply::Done { result, .. } => result,
            other => panic!("a command without an idempotency key got {other:?}"),
        }
    }

    pub async fn submit(&self, command: Command) -> Result<Outcome, CommandError> {
        self.submit_as(self.tenant, command).await
    }

    pub async fn submit_with_key(&self, command: Command, key: &str, fingerprint: &str) -> Reply {
        let claim = IdempotencyClaim { key: key.to_owned(), fingerprint: fingerprint.to_owned(), request_id: String::from("req_test"), render };
        self.engine.submit(self.tenant, command, Some(claim)).await.unwrap()
    }

    pub async fn open_account(&self, name: &str, normal: Direction, min_available_balance: Option<i64>) -> AccountId {
        match self.submit(Command::CreateAccount(new_account(name, normal, min_available_balance))).await {
            Ok(Outcome::Account(record)) => record.state.id,
            other => panic!("account not created: {other:?}"),
        }
    }

    /// Creates a transaction (posted or pending).
    pub async fn create(&self, draft: TransactionDraft) -> Result<Transaction, CommandError> {
        self.create_as(self.tenant, draft).await
    }

    pub async fn create_as(&self, tenant: TenantId, draft: TransactionDraft) -> Result<Transaction, CommandError> {
        self.submit_as(tenant, Command::CreateTransaction(Box::new(draft))).await.map(|outcome| match outcome {
            Outcome::Transaction(t) => *t,
            other => panic!("expected a transaction, got {other:?}"),
        })
    }

    /// Moves `amount` from `from` (debited) to `to` (credited), posted.
    pub async fn transfer(&self, from: &AccountId, to: &AccountId, amount: i64) -> Result<Transaction, CommandError> {
        self.create(draft(vec![leg(from, Direction::Debit, amount), leg(to, Direction::Credit, amount)], TransactionStatus::Posted)).await
    }

    pub async fn change(&self, command: Command) -> Result<Transaction, CommandError> {
        self.submit(command).await.map(|outcome| match outcome {
            Outcome::Transaction(t) | Outcome::Reversal(t) => *t,
            other => panic!("expected a transaction, got {other:?}"),
        })
    }

    pub async fn account(&self, id: &AccountId) -> AccountRecord {
        self.store.get_account(self.tenant, id.clone(), self.now()).await.unwrap().unwrap_or_else(|| panic!("account {id} not found"))
    }

    pub async fn balances(&self, id: &AccountId) -> Balances {
        let record = self.account(id).await;
        record.state.counters.balances(record.state.normal_balance).unwrap()
    }

    pub async fn transaction(&self, id: &TransactionId) -> Transaction {
        self.store.get_transaction(self.tenant, id.clone(), self.now()).await.unwrap().unwrap_or_else(|| panic!("transaction {id} not found"))
    }

    /// Opens a debit-normal funding account and a credit-normal wallet
    /// (no overdraft) holding `amount`.
    pub async fn funded_wallet(&self, amount: i64) -> (AccountId, AccountId) {
        let funding = self.open_account("funding", Direction::Debit, None).await;
        let wallet = self.open_account("wallet", Direction::Credit, Some(0)).await;
        self.transfer(&funding, &wallet, amount).await.unwrap();
        (funding, wallet)
    }
}

pub async fn new_tenant(store: &Store, org: &str) -> TenantId {
    let ids = IdGenerator::default();
    let key = ids.api_key();
    let record = store.create_api_key(org, Environment::Sandbox, &key, &ids.org(), key.as_str(), &Scope::ALL, START).await.unwrap();
    record.tenant
}

pub fn new_account(name: &str, normal: Direction, min_available_balance: Option<i64>) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        currency: usd(),
        normal_balance: normal,
        min_available_balance,
        external_id: None,
        metadata: BTreeMap::new(),
        customer: None,
    }
}

pub fn leg(account: &AccountId, direction: Direction, amount: i64) -> EntryDraft {
    EntryDraft { account_id: account.clone(), direction, amount: Amount::new(amount).unwrap(), currency: None }
}

pub fn draft(entries: Vec<EntryDraft>, status: TransactionStatus) -> TransactionDraft {
    TransactionDraft {
        entries,
        status,
        description: None,
        external_id: None,
        effective_at: None,
        expires_at: None,
        expected_versions: BTreeMap::new(),
        metadata: BTreeMap::new(),
    }
}

/// A hold of `amount` from `from` to `to`.
pub fn hold(from: &AccountId, to: &AccountId, amount: i64) -> TransactionDraft {
    draft(vec![leg(from, Direction::Debit, amount), leg(to, Direction::Credit, amount)], TransactionStatus::Pending)
}

pub fn first_page(limit: u32) -> PageRequest {
    PageRequest { limit, cursor: settle_store::records::Cursor::Start }
}

/// The trivial renderer the engine stores for idempotency keys: the status
/// and the id or error, so a replay can be compared byte for byte.
pub fn render(result: &Result<Outcome, CommandError>, request_id: &str) -> StoredResponse {
    match result {
        Ok(Outcome::Transaction(t)) | Ok(Outcome::Reversal(t)) => StoredResponse { status: 201, body: format!("{request_id} {}", t.id).into_bytes() },
        Ok(Outcome::Account(a)) => StoredResponse { status: 201, body: format!("{request_id} {}", a.state.id).into_bytes() },
        Ok(Outcome::Batch(items)) => StoredResponse { status: 200, body: format!("{request_id} {} items", items.len()).into_bytes() },
        Ok(Outcome::CountersRepaired { account, .. }) => StoredResponse { status: 200, body: format!("{request_id} {account}").into_bytes() },
        Err(e) => StoredResponse { status: 422, body: format!("{request_id} {e}").into_bytes() },
    }
}

/// Balances as the scenarios spell them: (posted, pending, available).
pub fn bal(posted: i64, pending: i64, available: i64) -> Balances {
    Balances { posted, pending, available }
}
