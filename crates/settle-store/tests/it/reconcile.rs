//! Counter repairs through the engine: measured under the account's lock and
//! applied as a shift, so writes in the same batch are never lost.

use crate::harness::{TestLedger, on_both_backends};
use settle_core::ids::AccountId;
use settle_core::ledger::Direction;
use settle_store::engine::{Command, CommandError, Outcome};
use settle_store::reconcile;
use settle_store::sqlite::account_changes;

on_both_backends!(
    repair_of_a_healthy_account_beside_concurrent_writes_changes_nothing,
    repair_of_a_drifted_account_beside_concurrent_writes_keeps_every_write,
    repair_of_an_unknown_or_foreign_account_is_refused
);

async fn repair_of_a_healthy_account_beside_concurrent_writes_changes_nothing(l: TestLedger) {
    let funding = l.open_account("funding", Direction::Debit, None).await;
    let wallet = l.open_account("wallet", Direction::Credit, None).await;
    let l = std::sync::Arc::new(l);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (l, funding, wallet) = (std::sync::Arc::clone(&l), funding.clone(), wallet.clone());
        tasks.push(tokio::spawn(async move {
            if i % 6 == 0 {
                match l.submit(Command::RepairCounters { account: wallet }).await.unwrap() {
                    Outcome::CountersRepaired { before, after, .. } => assert_eq!(before, after, "a healthy account has nothing to repair"),
                    other => panic!("unexpected {other:?}"),
                }
                0
            } else {
                l.transfer(&funding, &wallet, 10).await.unwrap();
                10
            }
        }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await.unwrap();
    }
    let (stored, sum) = l.store.recount(&wallet).await.unwrap().unwrap();
    assert_eq!(stored, sum);
    assert_eq!(l.balances(&wallet).await.posted, moved);
    let scan = reconcile::scan(&l.store).await.unwrap().unwrap();
    assert!(scan.drifts.is_empty(), "{:?}", scan.drifts);
    let Ok(l) = std::sync::Arc::try_unwrap(l) else { panic!("every task is done") };
    l.finish().await;
}

async fn repair_of_an_unknown_or_foreign_account_is_refused(l: TestLedger) {
    let wallet = l.open_account("wallet", Direction::Credit, None).await;
    let other = l.other_tenant("globex").await;
    let foreign = l.submit_as(other, Command::RepairCounters { account: wallet.clone() }).await;
    assert!(matches!(foreign, Err(CommandError::Ledger(settle_core::ledger::LedgerError::AccountNotFound(_)))), "{foreign:?}");
    let Some(missing) = AccountId::parse("acct_01jdx3q5g3n3n5v8y2w4h6k9m1") else { panic!("a valid id") };
    let unknown = l.submit(Command::RepairCounters { account: missing }).await;
    assert!(matches!(unknown, Err(CommandError::Ledger(settle_core::ledger::LedgerError::AccountNotFound(_)))), "{unknown:?}");
    l.finish().await;
}

/// Adds 7 to an account's stored `posted_credits` behind the engine's back.
async fn corrupt(l: &TestLedger, account: &AccountId) {
    const SQL: &str = "UPDATE accounts SET posted_credits = posted_credits + 7 WHERE id = ";
    match &l.store {
        settle_store::Store::Sqlite(_) => {
            let path = l.database.url().trim_start_matches("sqlite://").to_owned();
            let db = rusqlite::Connection::open(path).unwrap();
            db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            // The current counters are the row's overlaid with the account
            // stream: drift is a stream record (or a row) that lies.
            let mut state = account_changes::current(&db, account.as_str()).unwrap().unwrap();
            state.counters.posted_credits += 7;
            account_changes::append(&db, &[(account.as_str(), &state)]).unwrap();
        }
        settle_store::Store::Postgres(_) => {
            let (client, connection) = tokio_postgres::connect(l.database.url(), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            assert_eq!(client.execute(&format!("{SQL}$1"), &[&account.as_str()]).await.unwrap(), 1);
        }
    }
}

async fn repair_of_a_drifted_account_beside_concurrent_writes_keeps_every_write(l: TestLedger) {
    let funding = l.open_account("funding", Direction::Debit, None).await;
    let wallet = l.open_account("wallet", Direction::Credit, None).await;
    l.transfer(&funding, &wallet, 100).await.unwrap();
    corrupt(&l, &wallet).await;
    let scan = reconcile::scan(&l.store).await.unwrap().unwrap();
    assert_eq!(scan.drifts.len(), 1);
    assert_eq!((scan.drifts[0].stored.posted_credits, scan.drifts[0].expected.posted_credits), (107, 100));
    // The drift lies in the stored stream only, behind the engine's back: the
    // engine's own next write of the account overwrites it. So the first
    // repair goes before any transfer (it found nothing when a racing
    // transfer got there first); later ones race transfers into the same
    // engine batches and must find nothing left to correct.
    let first = match l.submit(Command::RepairCounters { account: wallet.clone() }).await.unwrap() {
        Outcome::CountersRepaired { before, after, .. } => before.posted_credits - after.posted_credits,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(first, 7, "the repair corrects exactly the drift");
    let l = std::sync::Arc::new(l);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (l, funding, wallet) = (std::sync::Arc::clone(&l), funding.clone(), wallet.clone());
        tasks.push(tokio::spawn(async move {
            if i % 8 == 0 {
                match l.submit(Command::RepairCounters { account: wallet }).await.unwrap() {
                    Outcome::CountersRepaired { before, after, .. } => before.posted_credits - after.posted_credits,
                    other => panic!("unexpected {other:?}"),
                }
            } else {
                l.transfer(&funding, &wallet, 10).await.unwrap();
                0
            }
        }));
    }
    let mut corrected = first;
    for t in tasks {
        corrected += t.await.unwrap();
    }
    assert_eq!(corrected, 7, "exactly the drift is corrected, once");
    let (stored, sum) = l.store.recount(&wallet).await.unwrap().unwrap();
    assert_eq!(stored, sum, "no transfer of the same batches was lost or doubled");
    assert_eq!(l.balances(&wallet).await.posted, 100 + 35 * 10);
    let Ok(l) = std::sync::Arc::try_unwrap(l) else { panic!("every task is done") };
    l.finish().await;
}
