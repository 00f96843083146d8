//! SQLite keeps each account's history as a chain with checkpoints; the audit
//! checks every link's position and every checkpoint against the entries.

use crate::harness::{Database, TestLedger, draft, leg};
use settle_core::ledger::{Direction, TransactionStatus};
use settle_store::audit::{AuditFailure, verify};
use settle_store::engine::{Command, Outcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_a_wrong_position_or_checkpoint_in_a_history() {
    let l = TestLedger::sqlite().await;
    let (funding, wallet) = l.funded_wallet(1_000_000).await;
    let items = (1..=140).map(|i| draft(vec![leg(&funding, Direction::Debit, i), leg(&wallet, Direction::Credit, i)], TransactionStatus::Posted)).collect();
    let Ok(Outcome::Batch(results)) = l.submit(Command::CreateBatch { atomic: true, items }).await else { panic!("batch failed") };
    assert_eq!(results.len(), 140);
    assert!(verify(&l.store).await.unwrap().is_ok(), "clean");

    let Database::Sqlite { url, .. } = &l.database else { unreachable!("a SQLite ledger") };
    let db = rusqlite::Connection::open(url.trim_start_matches("sqlite://")).unwrap();
    let expect_drift = |what: &str, result: Result<settle_store::audit::AuditReport, AuditFailure>| match result {
        Err(AuditFailure::HistoryDrift { account, .. }) => assert!(account == wallet.as_str() || account == funding.as_str(), "{what}: {account}"),
        other => panic!("{what}: expected a history drift, got {other:?}"),
    };

    // A checkpoint that names the wrong transaction would make previous pages skip.
    let (seq, right): (i64, String) = db
        .query_row("SELECT seq, transaction_id FROM account_checkpoints WHERE account_id = ?1 ORDER BY seq LIMIT 1", [wallet.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(seq, 64);
    let wrong: String =
        db.query_row("SELECT transaction_id FROM account_checkpoints WHERE account_id = ?1 AND seq = 128", [wallet.as_str()], |r| r.get(0)).unwrap();
    db.execute("UPDATE account_checkpoints SET transaction_id = ?2 WHERE account_id = ?1 AND seq = 64", [wallet.as_str(), wrong.as_str()]).unwrap();
    expect_drift("checkpoint", verify(&l.store).await.unwrap());
    db.execute("UPDATE account_checkpoints SET transaction_id = ?2 WHERE account_id = ?1 AND seq = 64", [wallet.as_str(), right.as_str()]).unwrap();
    assert!(verify(&l.store).await.unwrap().is_ok(), "clean again");

    // A link whose position is off.
    let chain: String = db.query_row("SELECT chain FROM transactions WHERE id = ?1", [&right], |r| r.get(0)).unwrap();
    let tampered = chain.replace("\"seq\":64", "\"seq\":65");
    assert_ne!(tampered, chain);
    db.execute("UPDATE transactions SET chain = ?2 WHERE id = ?1", [&right, &tampered]).unwrap();
    expect_drift("position", verify(&l.store).await.unwrap());
    db.execute("UPDATE transactions SET chain = ?2 WHERE id = ?1", [&right, &chain]).unwrap();
    l.finish().await;
}

/// Listing a tenant's open holds reads the `transactions_pending` index, not
/// every transaction: the plan says so, and the list is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_holds_are_listed_from_their_own_index() {
    let l = TestLedger::sqlite().await;
    let (funding, wallet) = l.funded_wallet(1_000_000).await;
    let items = (1..=50).map(|i| draft(vec![leg(&funding, Direction::Debit, i), leg(&wallet, Direction::Credit, i)], TransactionStatus::Posted)).collect();
    let Ok(Outcome::Batch(_)) = l.submit(Command::CreateBatch { atomic: true, items }).await else { panic!("batch failed") };
    let hold = l.create(crate::harness::hold(&wallet, &funding, 5)).await.unwrap();
    let page = l.store.list_transactions(l.tenant, None, Some(TransactionStatus::Pending), crate::harness::first_page(10), l.now()).await.unwrap();
    assert_eq!(page.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&hold.id));
    assert!(!page.has_more);

    let Database::Sqlite { url, .. } = &l.database else { unreachable!("a SQLite ledger") };
    let db = rusqlite::Connection::open(url.trim_start_matches("sqlite://")).unwrap();
    let plan: Vec<String> = db
        .prepare("EXPLAIN QUERY PLAN SELECT id, id FROM (SELECT id, tenant_id FROM transactions WHERE status = 'pending') WHERE tenant_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT 256")
        .unwrap()
        .query_map(rusqlite::params![l.tenant.0, "~"], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(plan.iter().any(|step| step.contains("transactions_pending")), "{plan:?}");
    l.finish().await;
}
