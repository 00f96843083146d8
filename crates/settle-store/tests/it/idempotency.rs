//! Idempotency keys: the first outcome is stored with its effect and
//! replayed byte for byte; a key reused for another request is refused.

use crate::harness::{TestLedger, bal, draft, first_page, leg, on_both_backends, render};
use settle_core::ids::AccountId;
use settle_core::ledger::{Direction, TransactionStatus};
use settle_store::engine::{Command, Outcome, Reply};

on_both_backends!(
    same_key_and_fingerprint_replays_the_identical_stored_response,
    same_key_with_another_fingerprint_is_refused_as_reused,
    refused_command_is_stored_and_replayed_as_refused,
);

fn pay(from: &AccountId, to: &AccountId, amount: i64) -> Command {
    Command::CreateTransaction(Box::new(draft(vec![leg(from, Direction::Debit, amount), leg(to, Direction::Credit, amount)], TransactionStatus::Posted)))
}

async fn same_key_and_fingerprint_replays_the_identical_stored_response(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;

    let Reply::Done { result, stored: Some(first) } = l.submit_with_key(pay(&wallet, &merchant, 10), "key-1", "fp-1").await else {
        panic!("the first use of a key runs the command and stores its response")
    };
    let Ok(Outcome::Transaction(created)) = &result else { panic!("{result:?}") };
    assert_eq!(first, render(&result, "req_test"));

    let replay = l.submit_with_key(pay(&wallet, &merchant, 10), "key-1", "fp-1").await;
    let Reply::Replay(replayed) = replay else { panic!("expected a replay, got {replay:?}") };
    assert_eq!(replayed, first, "identical bytes");
    assert_eq!(l.balances(&wallet).await, bal(90, 90, 90), "the replay moved nothing");
    let listed = l.store.list_transactions(l.tenant, Some(merchant.clone()), None, first_page(10), l.now()).await.unwrap();
    assert_eq!(listed.items.iter().map(|t| &t.id).collect::<Vec<_>>(), [&created.id]);

    let record = l.store.find_idempotency(l.tenant, String::from("key-1")).await.unwrap().unwrap();
    assert_eq!((record.fingerprint.as_str(), &record.response, record.created_at), ("fp-1", &first, l.now()));
    assert_eq!(l.store.find_idempotency(l.tenant, String::from("key-2")).await.unwrap(), None);

    // Keys are per tenant: another tenant's "key-1" is a new request.
    let other = l.other_tenant("globex").await;
    assert_eq!(l.store.find_idempotency(other, String::from("key-1")).await.unwrap(), None);
    l.finish().await;
}

async fn same_key_with_another_fingerprint_is_refused_as_reused(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let Reply::Done { stored: Some(first), .. } = l.submit_with_key(pay(&wallet, &merchant, 10), "key-1", "fp-1").await else { panic!("not stored") };

    let reused = l.submit_with_key(pay(&wallet, &merchant, 20), "key-1", "fp-2").await;
    assert!(matches!(reused, Reply::KeyReused), "{reused:?}");
    assert_eq!(l.balances(&wallet).await, bal(90, 90, 90), "the second request did not run");
    let record = l.store.find_idempotency(l.tenant, String::from("key-1")).await.unwrap().unwrap();
    assert_eq!((record.fingerprint.as_str(), record.response), ("fp-1", first), "the first request's record stays");
    l.finish().await;
}

async fn refused_command_is_stored_and_replayed_as_refused(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(10).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let Reply::Done { result, stored: Some(first) } = l.submit_with_key(pay(&wallet, &merchant, 50), "key-1", "fp-1").await else { panic!("not stored") };
    assert!(result.is_err());
    assert_eq!(first.status, 422);

    // Even once the wallet could pay, the key answers what it answered first.
    l.transfer(&funding, &wallet, 100).await.unwrap();
    let replay = l.submit_with_key(pay(&wallet, &merchant, 50), "key-1", "fp-1").await;
    assert!(matches!(&replay, Reply::Replay(r) if *r == first), "{replay:?}");
    assert_eq!(l.balances(&merchant).await, bal(0, 0, 0));
    l.finish().await;
}
