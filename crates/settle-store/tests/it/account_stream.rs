//! SQLite keeps account counters and history heads in an append-only stream
//! (`account_changes`) that checkpoints fold into the account rows. These
//! scenarios pin down what that must never cost: a read, a restart after a
//! crash, or another process's view of the ledger.

use crate::harness::{Database, TestLedger, draft, engine_config, first_page, leg, new_account, new_tenant};
use settle_core::clock::SystemClock;
use settle_core::ids::IdGenerator;
use settle_core::ledger::{Direction, TransactionStatus};
use settle_store::Store;
use settle_store::engine::{Command, Outcome, Reply};
use settle_store::sqlite::{CHECKPOINT_POLICY, CheckpointPolicy, account_changes};
use std::collections::HashMap;
use std::sync::Arc;

fn raw(l: &TestLedger) -> rusqlite::Connection {
    let path = l.database.url().trim_start_matches("sqlite://").to_owned();
    rusqlite::Connection::open(path).unwrap()
}

fn stored_posted_credits(db: &rusqlite::Connection, account: &str) -> i64 {
    db.query_row("SELECT posted_credits FROM accounts WHERE id = ?1", [account], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_live_in_the_stream_until_a_checkpoint_folds_them_into_the_rows() {
    let l = TestLedger::sqlite().await;
    let funding = l.open_account("funding", Direction::Debit, None).await;
    let wallet = l.open_account("wallet", Direction::Credit, None).await;
    for amount in [100, 200, 300] {
        l.transfer(&funding, &wallet, amount).await.unwrap();
    }
    let db = raw(&l);
    // The row was not rewritten per batch: the stream holds the change…
    assert_eq!(stored_posted_credits(&db, wallet.as_str()), 0);
    let streamed: i64 = db.query_row("SELECT COUNT(*) FROM account_changes", [], |r| r.get(0)).unwrap();
    assert!(streamed >= 1, "the batches appended to the stream");
    // …and readers see the current state all the same, with its history,
    // from the engine's overlay (no read had to replay the stream).
    assert_eq!(l.balances(&wallet).await.posted, 600);
    assert_eq!(l.account(&wallet).await.state.version, 3);
    let entries = l.store.list_entries(l.tenant, wallet.clone(), crate::harness::first_page(10), l.now()).await.unwrap().unwrap();
    assert_eq!(entries.items.len(), 3);
    assert_eq!(account_changes::current(&db, wallet.as_str()).unwrap().unwrap().counters.posted_credits, 600);
    // A batch that only opens an account moves the log head without changing
    // any account: readers must still find the overlay current.
    let newer = l.open_account("newer", Direction::Credit, None).await;
    assert_eq!(l.balances(&newer).await.posted, 0);
    assert_eq!(l.balances(&wallet).await.posted, 600);
    let Store::Sqlite(sqlite) = &l.store else { panic!("a SQLite scenario") };
    assert_eq!(sqlite.replayed_reads(), 0, "reads in the engine's process use its overlay");
    l.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_the_rows_current_and_the_stream_empty() {
    let l = TestLedger::sqlite().await;
    let (funding, wallet) = (l.open_account("funding", Direction::Debit, None).await, l.open_account("wallet", Direction::Credit, None).await);
    l.transfer(&funding, &wallet, 250).await.unwrap();
    let db = raw(&l);
    let (store, database) = l.stop().await;
    assert_eq!(stored_posted_credits(&db, wallet.as_str()), 250);
    let left: i64 = db.query_row("SELECT COUNT(*) FROM account_changes", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0);
    let through: i64 = db.query_row("SELECT log_seq FROM account_checkpoint", [], |r| r.get(0)).unwrap();
    let head: i64 = db.query_row("SELECT MAX(seq) FROM ledger_log", [], |r| r.get(0)).unwrap();
    assert_eq!(through, head, "the rows are current as of the newest log record");
    assert!(settle_store::audit::verify(&store).await.unwrap().is_ok());
    drop(store);
    drop(database);
}

/// An engine on its own thread that can be killed: its future is dropped
/// mid-wait, so it never runs its shutdown checkpoint, as a killed process.
fn killable_engine(
    store: &Store,
    policy: CheckpointPolicy,
) -> (settle_store::engine::EngineHandle, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let Store::Sqlite(sqlite) = store else { panic!("a SQLite scenario") };
    let writer = sqlite.writer().unwrap().with_checkpoint_policy(policy);
    let (handle, receiver) = settle_store::engine::channel();
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async move {
            tokio::select! {
                () = settle_store::engine::run(writer, receiver, Arc::new(SystemClock), Arc::new(IdGenerator::default()), engine_config()) => {}
                _ = killed => {}
            }
        });
    });
    (handle, kill, thread)
}

/// A migrated SQLite store with no engine yet (the scenario starts its own), and a tenant.
async fn migrated_sqlite() -> (Database, Store, settle_core::tenancy::TenantId) {
    let database = Database::sqlite();
    let store = Store::open(Some(database.url()), std::path::Path::new("unused")).await.unwrap();
    store.migrate().await.unwrap();
    let tenant = new_tenant(&store, "acme").await;
    (database, store, tenant)
}

async fn submit(engine: &settle_store::engine::EngineHandle, tenant: settle_core::tenancy::TenantId, command: Command) -> Outcome {
    match engine.submit(tenant, command, None).await.unwrap() {
        Reply::Done { result: Ok(outcome), .. } => outcome,
        other => panic!("{other:?}"),
    }
}

fn transfer(from: &settle_core::ids::AccountId, to: &settle_core::ids::AccountId, amount: i64) -> Command {
    Command::CreateTransaction(Box::new(draft(vec![leg(from, Direction::Debit, amount), leg(to, Direction::Credit, amount)], TransactionStatus::Posted)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_any_checkpoint_loses_nothing() {
    let (database, store, tenant) = migrated_sqlite().await;
    let (engine, kill, thread) = killable_engine(&store, CHECKPOINT_POLICY);
    let open = |name: &str, normal| Command::CreateAccount(new_account(name, normal, None));
    let Outcome::Account(funding) = submit(&engine, tenant, open("funding", Direction::Debit)).await else { panic!("an account") };
    let Outcome::Account(wallet) = submit(&engine, tenant, open("wallet", Direction::Credit)).await else { panic!("an account") };
    let (funding, wallet) = (funding.state.id, wallet.state.id);
    for _ in 0..20 {
        submit(&engine, tenant, transfer(&funding, &wallet, 5)).await;
    }
    kill.send(()).unwrap();
    thread.join().unwrap();
    drop(engine);
    drop(store);
    let streamed: i64 = rusqlite::Connection::open(database.url().trim_start_matches("sqlite://"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM account_changes", [], |r| r.get(0))
        .unwrap();
    assert!(streamed > 0, "the engine died before any checkpoint");

    // Another process opens the file: its readers replay the stream.
    let reopened = Store::open(Some(database.url()), std::path::Path::new("unused")).await.unwrap();
    let now = settle_core::clock::Clock::now(&SystemClock);
    let record = reopened.get_account(tenant, wallet.clone(), now).await.unwrap().unwrap();
    assert_eq!((record.state.counters.posted_credits, record.state.version), (100, 20));
    assert!(settle_store::audit::verify(&reopened).await.unwrap().is_ok(), "counters and heads as replayed match the entries");

    // Its engine carries on from the replayed state.
    let (engine, task) = reopened.start_engine(Arc::new(SystemClock), Arc::new(IdGenerator::default()), engine_config()).await.unwrap();
    submit(&engine, tenant, transfer(&funding, &wallet, 7)).await;
    let record = reopened.get_account(tenant, wallet.clone(), now).await.unwrap().unwrap();
    assert_eq!((record.state.counters.posted_credits, record.state.version), (107, 21));
    let entries = reopened.list_entries(tenant, wallet.clone(), first_page(100), now).await.unwrap().unwrap();
    assert_eq!(entries.items.len(), 21, "the history chain continues from the replayed head");
    drop(engine);
    task.finished().await;
    assert!(settle_store::audit::verify(&reopened).await.unwrap().is_ok());
}

/// Due once eight accounts changed, then written two accounts per batch.
const TINY_SLICES: CheckpointPolicy = CheckpointPolicy { records: usize::MAX, accounts: 8, age: std::time::Duration::from_secs(3600), slice: 2 };

fn checkpointed_through(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT COALESCE(MAX(log_seq), 0) FROM account_checkpoint", [], |r| r.get(0)).unwrap()
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn pay(
    engine: &settle_store::engine::EngineHandle,
    tenant: settle_core::tenancy::TenantId,
    funding: &settle_core::ids::AccountId,
    expected: &mut HashMap<settle_core::ids::AccountId, i64>,
    wallet: &settle_core::ids::AccountId,
    amount: i64,
) {
    submit(engine, tenant, transfer(funding, wallet, amount)).await;
    *expected.get_mut(wallet).expect("a wallet") += amount;
}

/// Every account reads as `expected` (posted credits; the funding account's
/// posted debits) through `store`, however its row and the stream share it.
async fn assert_balances(
    store: &Store,
    tenant: settle_core::tenancy::TenantId,
    funding: &settle_core::ids::AccountId,
    expected: &HashMap<settle_core::ids::AccountId, i64>,
) {
    let now = settle_core::clock::Clock::now(&SystemClock);
    let mut paid = 0;
    for (wallet, credits) in expected {
        let record = store.get_account(tenant, wallet.clone(), now).await.unwrap().unwrap();
        assert_eq!(record.state.counters.posted_credits, *credits, "{wallet}");
        paid += credits;
    }
    assert_eq!(store.get_account(tenant, funding.clone(), now).await.unwrap().unwrap().state.counters.posted_debits, paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_written_a_slice_per_batch_never_shows_a_stale_balance_even_across_a_crash() {
    let (database, store, tenant) = migrated_sqlite().await;
    let db = rusqlite::Connection::open(database.url().trim_start_matches("sqlite://")).unwrap();
    let (engine, kill, thread) = killable_engine(&store, TINY_SLICES);
    let open = |name: String, normal| Command::CreateAccount(new_account(&name, normal, None));
    let Outcome::Account(funding) = submit(&engine, tenant, open(String::from("funding"), Direction::Debit)).await else { panic!("an account") };
    let funding = funding.state.id;
    let mut wallets = Vec::new();
    for n in 0..12 {
        let Outcome::Account(wallet) = submit(&engine, tenant, open(format!("wallet {n}"), Direction::Credit)).await else { panic!("an account") };
        wallets.push(wallet.state.id);
    }
    let mut expected: HashMap<_, i64> = wallets.iter().map(|w| (w.clone(), 0)).collect();
    // Funding and seven wallets changed: the checkpoint is due after that
    // batch, and its first slice is written before the next batch runs.
    for (n, wallet) in wallets.iter().take(7).enumerate() {
        pay(&engine, tenant, &funding, &mut expected, wallet, 10 + n as i64).await;
    }
    pay(&engine, tenant, &funding, &mut expected, &wallets[7], 1).await;
    // Funding and wallet 0 (the lowest ids) changed again, after their rows
    // were written: the stream still holds the newer state.
    pay(&engine, tenant, &funding, &mut expected, &wallets[0], 100).await;
    assert_eq!(checkpointed_through(&db), 0, "four slices are needed, at most three are written");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM account_changes"), 9, "no stream row is dropped before the last slice");
    let written = count(&db, "SELECT COUNT(*) FROM accounts WHERE version > 0");
    assert!((4..=6).contains(&written), "two accounts per slice, one slice per batch: {written}");
    assert_balances(&store, tenant, &funding, &expected).await;

    // The process dies mid-checkpoint. Another one reads the rows and the
    // stream as they are, and its engine starts the checkpoint over.
    kill.send(()).unwrap();
    thread.join().unwrap();
    drop(engine);
    drop(store);
    let reopened = Store::open(Some(database.url()), std::path::Path::new("unused")).await.unwrap();
    assert_balances(&reopened, tenant, &funding, &expected).await;
    assert!(settle_store::audit::verify(&reopened).await.unwrap().is_ok());
    let (engine, kill, thread) = killable_engine(&reopened, TINY_SLICES);
    let mut batches = 0;
    while checkpointed_through(&db) == 0 {
        batches += 1;
        assert!(batches <= 20, "the checkpoint never finished");
        pay(&engine, tenant, &funding, &mut expected, &wallets[8 + batches % 4], 3).await;
        assert_balances(&reopened, tenant, &funding, &expected).await;
    }
    // It began after the first of these batches and dropped the rows it
    // folded; the rows of the batches after it stay (their accounts changed
    // after it began).
    assert_eq!(count(&db, "SELECT COUNT(*) FROM account_changes"), batches as i64 - 1);
    assert_eq!(count(&db, "SELECT MIN(seq) FROM account_changes"), 11);
    for (wallet, credits) in &expected {
        assert_eq!(account_changes::current(&db, wallet.as_str()).unwrap().unwrap().counters.posted_credits, *credits);
    }
    assert_balances(&reopened, tenant, &funding, &expected).await;
    assert!(settle_store::audit::verify(&reopened).await.unwrap().is_ok());

    // A clean stop writes every slice at once.
    drop(engine);
    thread.join().unwrap();
    drop(kill);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM account_changes"), 0);
    assert_eq!(checkpointed_through(&db), count(&db, "SELECT MAX(seq) FROM ledger_log"));
    for (wallet, credits) in &expected {
        let stored: i64 = db.query_row("SELECT posted_credits FROM accounts WHERE id = ?1", [wallet.as_str()], |r| r.get(0)).unwrap();
        assert_eq!(stored, *credits);
    }
    assert_balances(&reopened, tenant, &funding, &expected).await;
}
