//! Several processes on one database: migrations started together, and
//! two engines racing for the same account.

use crate::harness::{Database, TestLedger, bal, draft, engine_config, leg};
use settle_core::ids::IdGenerator;
use settle_core::ledger::{Direction, LedgerError, TransactionStatus};
use settle_store::Store;
use settle_store::engine::{Command, CommandError, Outcome, Reply};
use std::path::Path;
use std::sync::Arc;

/// Four processes migrating a new database at once all succeed, and the
/// database ends up migrated once.
async fn migrations_started_together_all_succeed(database: Database) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Store::open(Some(database.url()), Path::new("unused")).await.unwrap());
    }
    let mut running = tokio::task::JoinSet::new();
    for store in stores.clone() {
        running.spawn(async move { store.migrate().await });
    }
    while let Some(result) = running.join_next().await {
        result.unwrap().unwrap();
    }
    for store in &stores {
        store.ready().await.unwrap();
    }
    stores[0].migrate().await.unwrap();
    assert_eq!(stores[0].count_organizations().await.unwrap(), 0);
}

/// Two engines (two servers on PostgreSQL; two processes on one SQLite file)
/// race 400 one-unit payments out of a wallet holding 100 that may not
/// overdraw: exactly 100 succeed, the rest are refused for funds, none fails
/// for the database. On SQLite each engine applies a batch before taking the
/// write lock, from accounts it remembers: the other engine's commits must
/// send it back to apply the batch again under the lock.
async fn two_engines_racing_for_one_account_never_overdraw_it(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let sink = l.open_account("sink", Direction::Credit, None).await;
    let second = Store::open(Some(l.database.url()), Path::new("unused")).await.unwrap();
    let (second_engine, second_task) = second.start_engine(Arc::new(l.clock.clone()), Arc::new(IdGenerator::default()), engine_config()).await.unwrap();

    let mut racing = tokio::task::JoinSet::new();
    for i in 0..400 {
        let engine = if i % 2 == 0 { l.engine.clone() } else { second_engine.clone() };
        let payment = draft(vec![leg(&wallet, Direction::Debit, 1), leg(&sink, Direction::Credit, 1)], TransactionStatus::Posted);
        let tenant = l.tenant;
        racing.spawn(async move { engine.submit(tenant, Command::CreateTransaction(Box::new(payment)), None).await });
    }
    let (mut paid, mut refused) = (0, 0);
    while let Some(reply) = racing.join_next().await {
        match reply.unwrap().unwrap() {
            Reply::Done { result: Ok(Outcome::Transaction(_)), .. } => paid += 1,
            Reply::Done { result: Err(CommandError::Ledger(LedgerError::InsufficientFunds(_))), .. } => refused += 1,
            other => panic!("neither paid nor refused for funds: {other:?}"),
        }
    }
    assert_eq!((paid, refused), (100, 300));
    assert_eq!(l.balances(&wallet).await, bal(0, 0, 0));
    assert_eq!(l.balances(&sink).await, bal(100, 100, 100));
    assert_eq!(l.account(&wallet).await.state.version, 101, "one version per payment and one for the funding");

    drop(second_engine);
    second_task.finished().await;
    // The audit checks that both engines appended to one unbroken chain.
    l.finish().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_started_together_all_succeed() {
        super::migrations_started_together_all_succeed(crate::harness::Database::sqlite()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_engines_on_one_database_see_each_others_writes() {
        super::two_engines_on_one_database_see_each_others_writes(crate::harness::TestLedger::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_engines_racing_for_one_account_never_overdraw_it() {
        super::two_engines_racing_for_one_account_never_overdraw_it(crate::harness::TestLedger::sqlite().await).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_started_together_all_succeed() {
        let Some(database) = crate::harness::Database::postgres().await else {
            eprintln!("skipped: SETTLE_TEST_POSTGRES_URL is not set");
            return;
        };
        super::migrations_started_together_all_succeed(database).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_engines_racing_for_one_account_never_overdraw_it() {
        let Some(ledger) = crate::harness::TestLedger::postgres().await else {
            eprintln!("skipped: SETTLE_TEST_POSTGRES_URL is not set");
            return;
        };
        super::two_engines_racing_for_one_account_never_overdraw_it(ledger).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_engines_on_one_database_see_each_others_writes() {
        let Some(ledger) = crate::harness::TestLedger::postgres().await else {
            eprintln!("skipped: SETTLE_TEST_POSTGRES_URL is not set");
            return;
        };
        super::two_engines_on_one_database_see_each_others_writes(ledger).await;
    }
}

/// Two engines on one database (two servers, or a second process opened on
/// the same SQLite file): each sees what the other committed, so neither can
/// spend money the other already spent.
async fn two_engines_on_one_database_see_each_others_writes(l: TestLedger) {
    let (_funding, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    // The first engine has now read (and may remember) the wallet.
    l.transfer(&wallet, &merchant, 10).await.unwrap();
    let (second, receiver) = settle_store::engine::channel();
    let clock: std::sync::Arc<dyn settle_core::clock::Clock> = std::sync::Arc::new(l.clock.clone());
    let ids = std::sync::Arc::new(settle_core::ids::IdGenerator::default());
    let task = match &l.store {
        settle_store::Store::Sqlite(s) => {
            tokio::spawn(settle_store::engine::run(s.writer().unwrap(), receiver, clock, ids, settle_store::engine::EngineConfig::default()))
        }
        settle_store::Store::Postgres(p) => {
            tokio::spawn(settle_store::engine::run(p.writer().await.unwrap(), receiver, clock, ids, settle_store::engine::EngineConfig::default()))
        }
    };
    let spend = |amount| draft(vec![leg(&wallet, Direction::Debit, amount), leg(&merchant, Direction::Credit, amount)], TransactionStatus::Posted);
    let reply = second.submit(l.tenant, Command::CreateTransaction(Box::new(spend(80))), None).await.unwrap();
    assert!(matches!(reply, settle_store::engine::Reply::Done { result: Ok(_), .. }), "{reply:?}");
    drop(second);
    task.await.unwrap();
    let refused = l.transfer(&wallet, &merchant, 50).await;
    assert!(matches!(refused, Err(CommandError::Ledger(LedgerError::InsufficientFunds(_)))), "the first engine saw the second's spend: {refused:?}");
    l.transfer(&wallet, &merchant, 10).await.unwrap();
    assert_eq!(l.balances(&wallet).await.available, 0);
    l.finish().await;
}
