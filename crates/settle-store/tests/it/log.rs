//! The tamper-evident ledger log and the append-only tables.

use crate::harness::{Database, TestLedger, draft, hold, leg, on_both_backends};
use settle_core::chain::{self, GENESIS, Hash};
use settle_core::ledger::{Direction, TransactionStatus};
use settle_store::engine::Command;

on_both_backends!(each_ledger_change_is_one_log_record_linked_to_the_previous_hash, ledger_log_and_entries_refuse_updates_and_deletes);

async fn each_ledger_change_is_one_log_record_linked_to_the_previous_hash(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await; // 3 records: two accounts, one transfer
    let merchant = l.open_account("merchant", Direction::Credit, None).await; // 4
    assert!(l.transfer(&wallet, &merchant, 500).await.is_err()); // refused: none
    let h = l.create(hold(&wallet, &merchant, 10)).await.unwrap(); // 5
    l.change(Command::VoidTransaction { id: h.id }).await.unwrap(); // 6
    let pay = |amount| draft(vec![leg(&wallet, Direction::Debit, amount), leg(&merchant, Direction::Credit, amount)], TransactionStatus::Posted);
    l.submit(Command::CreateBatch { atomic: true, items: vec![pay(1), pay(2)] }).await.unwrap(); // 7: one per command
    l.submit(Command::CreateBatch { atomic: true, items: vec![pay(1), pay(500)] }).await.unwrap(); // aborted: none
    l.submit(Command::CreateBatch { atomic: false, items: vec![pay(1), pay(500)] }).await.unwrap(); // 8

    let records = l.store.log_records(0, 1000).await.unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    let mut prev: Hash = GENESIS;
    for r in &records {
        assert_eq!(r.prev_hash, prev, "record {} links to the previous record's hash", r.seq);
        let hash = chain::link(&prev, r.seq, &r.content);
        assert_eq!(r.hash, hash, "record {} hash covers its predecessor, sequence and content", r.seq);
        let fragments: serde_json::Value = serde_json::from_slice(&r.content).unwrap();
        assert!(fragments.as_array().is_some_and(|a| !a.is_empty()), "record {} is a non-empty array of changes", r.seq);
        prev = hash;
    }
    let page = l.store.log_records(2, 3).await.unwrap();
    assert_eq!(page, records[2..5]);
    l.finish().await;
}

async fn ledger_log_and_entries_refuse_updates_and_deletes(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    l.transfer(&wallet, &merchant, 10).await.unwrap();
    let statements = ["UPDATE ledger_log SET created_at = 0", "DELETE FROM ledger_log", "UPDATE entries SET amount = amount + 1", "DELETE FROM entries"];
    match &l.database {
        Database::Sqlite { url, .. } => {
            let conn = rusqlite::Connection::open(url.trim_start_matches("sqlite://")).unwrap();
            for sql in statements {
                assert!(conn.execute(sql, []).is_err(), "{sql} must be refused");
            }
        }
        Database::Postgres(pg) => {
            let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            for sql in statements.into_iter().chain(["TRUNCATE ledger_log", "TRUNCATE entries"]) {
                assert!(client.batch_execute(sql).await.is_err(), "{sql} must be refused");
            }
        }
    }
    assert_eq!(l.store.log_records(0, 100).await.unwrap().len(), 5);
    l.finish().await;
}
