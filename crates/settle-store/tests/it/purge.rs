//! Idempotency records age out, except the chunk keys of an operation that
//! is still open: its worker may resume after any pause and must replay them.

use crate::harness::{TestLedger, new_account, on_both_backends};
use settle_core::ids::{ApiKeyId, IdGenerator};
use settle_core::ledger::Direction;
use settle_store::Store;
use settle_store::engine::{Command, WriteBackend};
use settle_store::operations::NewOperation;
use settle_store::records::StoredResponse;

on_both_backends!(purge_keeps_the_chunk_keys_of_open_operations);

async fn purge(store: &Store, before: settle_core::clock::Timestamp) -> u64 {
    match store {
        Store::Sqlite(s) => s.writer().unwrap().purge_idempotency(before).await.unwrap(),
        Store::Postgres(p) => p.writer().await.unwrap().purge_idempotency(before).await.unwrap(),
    }
}

async fn purge_keeps_the_chunk_keys_of_open_operations(l: TestLedger) {
    let ids = IdGenerator::default();
    let op = ids.operation();
    let new = NewOperation {
        id: op.clone(),
        tenant: l.tenant,
        api_key_id: ApiKeyId::from_trusted(String::from("key_test")),
        kind: String::from("transactions.batch"),
        request_path: String::from("/v1/transactions/batch"),
        request_body: b"{}".to_vec(),
        request_id: String::from("req_test"),
        total: 1,
        chunk_items: 100,
        correlation_id: None,
        created_at: l.now(),
    };
    l.store.create_operation(new, None).await.unwrap();
    let chunk = format!("{op}/chunk/0");
    l.submit_with_key(Command::CreateAccount(new_account("a", Direction::Debit, None)), &chunk, "f1").await;
    l.submit_with_key(Command::CreateAccount(new_account("b", Direction::Debit, None)), "plain", "f2").await;
    let later = l.now().plus_secs(365 * 24 * 3600);

    assert_eq!(purge(&l.store, later).await, 1, "only the ordinary key ages out");
    assert!(l.store.find_idempotency(l.tenant, chunk.clone()).await.unwrap().is_some(), "the open operation's chunk key stays");
    assert!(l.store.find_idempotency(l.tenant, String::from("plain")).await.unwrap().is_none());

    let claimed = l.store.claim_operation("worker", l.now(), l.now().plus_secs(30)).await.unwrap().unwrap();
    assert_eq!(claimed.record.id, op);
    let done = StoredResponse { status: 200, body: b"{}".to_vec() };
    assert!(l.store.finish_operation(&op, "worker", 1, done, l.now()).await.unwrap());
    assert_eq!(purge(&l.store, later).await, 1, "once the operation is finished, its chunk keys age out too");
    assert!(l.store.find_idempotency(l.tenant, chunk).await.unwrap().is_none());
    l.finish().await;
}
