//! Counter repairs through the engine: measured under the account's lock and
//! applied as a shift, so writes in the same batch are never lost.

use crate::harness::{TestLedger, on_both_backends};
use settle_core::ids::AccountId;
use settle_core::ledger::Direction;
use settle_store::engine::{Command, CommandError, Outcome};
use settle_store::reconcile;

on_both_backends!(repair_of_a_healthy_account_beside_concurrent_writes_changes_nothing, repair_of_an_unknown_or_foreign_account_is_refused);

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
