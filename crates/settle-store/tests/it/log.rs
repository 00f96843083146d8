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
    let statements = ["UPDATE ledger_log SET created_at = 0", "DELETE FROM ledger_log"];
    match &l.database {
        Database::Sqlite { url, .. } => {
            // Entries are legs inside their transaction's row: they may be
            // appended to (a hold's posting) but never changed or removed.
            let conn = rusqlite::Connection::open(url.trim_start_matches("sqlite://")).unwrap();
            let sqlite_entries = [
                "UPDATE transactions SET legs = json_set(legs, '$[0][3]', 11)",
                "UPDATE transactions SET legs = '[]'",
                "UPDATE transactions SET legs = substr(legs, 1, length(legs) - 1)",
                "DELETE FROM transactions",
            ];
            for sql in statements.into_iter().chain(sqlite_entries) {
                assert!(conn.execute(sql, []).is_err(), "{sql} must be refused");
            }
        }
        Database::Postgres(pg) => {
            let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            for sql in
                statements.into_iter().chain(["UPDATE entries SET amount = amount + 1", "DELETE FROM entries", "TRUNCATE ledger_log", "TRUNCATE entries"])
            {
                assert!(client.batch_execute(sql).await.is_err(), "{sql} must be refused");
            }
        }
    }
    assert_eq!(l.store.log_records(0, 100).await.unwrap().len(), 5);
    l.finish().await;
}

/// On SQLite a batch's record is stored packed (`log_content.rs`). Damage to
/// the packed bytes is a broken chain named by its sequence, and the records
/// after it are still read (the projector and audits go on past it).
#[tokio::test]
async fn a_packed_record_that_cannot_be_unpacked_is_a_broken_chain_and_the_rest_still_reads() {
    let l = TestLedger::sqlite().await;
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let pay = |amount| draft(vec![leg(&wallet, Direction::Debit, amount), leg(&merchant, Direction::Credit, amount)], TransactionStatus::Posted);
    l.submit(Command::CreateBatch { atomic: true, items: (0..40).map(|_| pay(1)).collect() }).await.unwrap();
    l.transfer(&wallet, &merchant, 1).await.unwrap();
    let (store, database) = l.stop().await;
    let records = store.log_records(0, 100).await.unwrap();
    let batch = records.iter().find(|r| r.content.len() >= settle_store::log_content::PACK_FROM).expect("the batch's record").seq;
    assert!(settle_store::audit::verify(&store).await.unwrap().is_ok(), "intact, it verifies");

    let settle_store::Store::Sqlite(sqlite) = &store else { panic!("SQLite only") };
    let db = rusqlite::Connection::open(sqlite.path()).unwrap();
    let mut stored: Vec<u8> = db.query_row("SELECT content FROM ledger_log WHERE seq = ?1", [batch], |r| r.get(0)).unwrap();
    assert!(settle_store::log_content::is_packed(&stored));
    // The length field claims ten bytes: the block does not decode to them.
    stored[4..8].copy_from_slice(&10u32.to_le_bytes());
    db.execute_batch("DROP TRIGGER ledger_log_no_update").unwrap();
    db.execute("UPDATE ledger_log SET content = ?2 WHERE seq = ?1", rusqlite::params![batch, stored]).unwrap();

    match settle_store::audit::verify(&store).await.unwrap() {
        Err(settle_store::audit::AuditFailure::BrokenChain { seq, reason }) => {
            assert_eq!(seq, batch);
            assert!(reason.contains("unpacked"), "{reason}");
        }
        other => panic!("expected a broken chain at {batch}, got {other:?}"),
    }
    let read = store.logged_changes(0, 100).await.unwrap();
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), records.iter().map(|r| r.seq).collect::<Vec<_>>(), "every record still reads");
    assert!(serde_json::from_slice::<serde_json::Value>(&read.last().unwrap().content).is_ok(), "the record after it is JSON");
    drop(store);
    drop(database);
}
