//! A COMMIT whose answer is lost (the connection drops after the database
//! committed) must not be retried: the engine reports the outcome as unknown,
//! the write is there exactly once, and a retry with the same idempotency key
//! answers what was actually done.

use crate::harness::{TestLedger, hold};
use settle_core::chain::Hash;
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, IdGenerator, TransactionId};
use settle_core::ledger::{AccountState, Counters, Transaction};
use settle_core::tenancy::TenantId;
use settle_store::Store;
use settle_store::StoreError;
use settle_store::engine::{self, BatchEffects, Command, CommandError, EngineConfig, Reply, WriteBackend};
use settle_store::records::IdempotencyRecord;
use std::collections::HashMap;
use std::sync::Arc;

/// Delegates to a real backend, but reports the first COMMIT as lost after it succeeded.
struct LostAck<B> {
    inner: B,
    lose_next_commit: bool,
}

impl<B: WriteBackend> WriteBackend for LostAck<B> {
    async fn begin(&mut self) -> Result<(), StoreError> {
        self.inner.begin().await
    }
    async fn due_expiries(&mut self, now: Timestamp, limit: usize) -> Result<Vec<TransactionId>, StoreError> {
        self.inner.due_expiries(now, limit).await
    }
    async fn load_transactions(&mut self, ids: &[TransactionId]) -> Result<Vec<Transaction>, StoreError> {
        self.inner.load_transactions(ids).await
    }
    async fn load_accounts(&mut self, ids: &[AccountId]) -> Result<Vec<AccountState>, StoreError> {
        self.inner.load_accounts(ids).await
    }
    async fn blocked_accounts(&mut self, accounts: &[AccountState]) -> Result<std::collections::HashSet<AccountId>, StoreError> {
        self.inner.blocked_accounts(accounts).await
    }
    async fn find_transaction_external_ids(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
        self.inner.find_transaction_external_ids(keys).await
    }
    async fn find_account_external_ids(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), String>, StoreError> {
        self.inner.find_account_external_ids(keys).await
    }
    async fn find_idempotency(&mut self, keys: &[(TenantId, String)]) -> Result<HashMap<(TenantId, String), IdempotencyRecord>, StoreError> {
        self.inner.find_idempotency(keys).await
    }
    async fn log_head(&mut self) -> Result<(i64, Hash), StoreError> {
        self.inner.log_head().await
    }
    async fn write(&mut self, effects: &BatchEffects, log: &[(i64, Hash, Hash)], now: Timestamp) -> Result<(), StoreError> {
        self.inner.write(effects, log, now).await
    }
    async fn commit(&mut self) -> Result<(), StoreError> {
        self.inner.commit().await?;
        if std::mem::take(&mut self.lose_next_commit) {
            return Err(StoreError::Unavailable(String::from("connection closed while committing")));
        }
        Ok(())
    }
    async fn rollback(&mut self) {
        self.inner.rollback().await;
    }
    async fn fold_accounts(&mut self, ids: &[AccountId]) -> Result<HashMap<AccountId, Counters>, StoreError> {
        self.inner.fold_accounts(ids).await
    }
    async fn purge_idempotency(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge_idempotency(before).await
    }
}

async fn lost_ack_is_reported_unknown_and_never_applied_twice(l: TestLedger) {
    let (_funding, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", settle_core::ledger::Direction::Credit, None).await;
    let (handle, receiver) = engine::channel();
    let clock: Arc<dyn settle_core::clock::Clock> = Arc::new(l.clock.clone());
    let ids = Arc::new(IdGenerator::default());
    let task = match &l.store {
        Store::Sqlite(s) => {
            let backend = LostAck { inner: s.writer().unwrap(), lose_next_commit: true };
            tokio::spawn(engine::run(backend, receiver, clock, ids, EngineConfig::default()))
        }
        Store::Postgres(p) => {
            let backend = LostAck { inner: p.writer().await.unwrap(), lose_next_commit: true };
            tokio::spawn(engine::run(backend, receiver, clock, ids, EngineConfig::default()))
        }
    };
    let claim = |key: &str| settle_store::engine::IdempotencyClaim {
        key: key.to_owned(),
        fingerprint: String::from("fp"),
        request_id: String::from("req_test"),
        render: crate::harness::render,
    };
    // Two commands in one batch would have been split and re-run before.
    let first = handle.submit(l.tenant, Command::CreateTransaction(Box::new(hold(&wallet, &merchant, 30))), Some(claim("a")));
    let second = handle.submit(l.tenant, Command::CreateTransaction(Box::new(hold(&wallet, &merchant, 20))), Some(claim("b")));
    let (first, second) = tokio::join!(first, second);
    let mut unknown = 0;
    for reply in [first.unwrap(), second.unwrap()] {
        match reply {
            Reply::Done { result: Err(CommandError::OutcomeUnknown), .. } => unknown += 1,
            Reply::Done { result: Ok(_), .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(unknown >= 1, "the lost commit is reported as unknown");
    drop(handle);
    task.await.unwrap();

    // Both holds are there exactly once: nothing was re-run.
    assert_eq!(l.balances(&wallet).await.available, 50);
    let pending = l
        .store
        .list_transactions(l.tenant, Some(wallet.clone()), Some(settle_core::ledger::TransactionStatus::Pending), crate::harness::first_page(10), l.now())
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 2);
    // A retry with the same key learns what was done.
    match l.submit_with_key(Command::CreateTransaction(Box::new(hold(&wallet, &merchant, 30))), "a", "fp").await {
        Reply::Replay(stored) => assert_eq!(stored.status, 201),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(l.balances(&wallet).await.available, 50);
    l.finish().await;
}

crate::harness::on_both_backends!(lost_ack_is_reported_unknown_and_never_applied_twice);
