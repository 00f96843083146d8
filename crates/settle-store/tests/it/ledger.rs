//! Accounts, transfers, holds, reversals, batches, balances in time and
//! tenancy: the ledger rules as the store keeps them.

use crate::harness::{TestLedger, bal, draft, first_page, hold, leg, new_account, on_both_backends};
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, TransactionId};
use settle_core::ledger::{Counters, Direction, LedgerError, TransactionStatus, VoidReason};
use settle_store::engine::{Command, CommandError, Outcome};

on_both_backends!(
    posted_transfer_moves_balances_and_bumps_versions,
    unbalanced_transaction_is_refused_and_changes_nothing,
    transfer_is_refused_when_available_balance_is_too_low,
    partial_post_of_a_hold_releases_the_rest,
    void_releases_a_hold_and_cannot_be_repeated,
    expired_hold_stops_counting_before_and_after_the_sweep,
    reversal_swaps_the_legs_and_a_second_reversal_is_refused,
    duplicate_external_id_is_reported_with_the_existing_id,
    atomic_batch_applies_all_items_or_none,
    non_atomic_batch_applies_each_item_on_its_own,
    balances_as_of_fold_entries_by_effective_time,
    another_tenants_account_and_transaction_are_not_found,
);

async fn posted_transfer_moves_balances_and_bumps_versions(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(500).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let t = l.transfer(&wallet, &merchant, 200).await.unwrap();

    assert_eq!(l.balances(&funding).await, bal(500, 500, 500));
    assert_eq!(l.balances(&wallet).await, bal(300, 300, 300));
    assert_eq!(l.balances(&merchant).await, bal(200, 200, 200));
    assert_eq!(l.account(&funding).await.state.version, 1);
    assert_eq!(l.account(&wallet).await.state.version, 2);

    let stored = l.transaction(&t.id).await;
    assert_eq!(stored, t, "the stored transaction reads back exactly as the engine made it");
    assert_eq!(stored.status, TransactionStatus::Posted);
    assert_eq!(stored.posted_at, Some(l.now()));
    assert_eq!(stored.entries.len(), 2);

    let entries = l.store.list_entries(l.tenant, wallet.clone(), first_page(10), l.now()).await.unwrap().unwrap();
    let amounts: Vec<(Direction, i64)> = entries.items.iter().map(|e| (e.entry.direction, e.entry.amount)).collect();
    assert_eq!(amounts, [(Direction::Debit, 200), (Direction::Credit, 500)], "newest first");
    assert!(!entries.has_more);
    l.finish().await;
}

async fn unbalanced_transaction_is_refused_and_changes_nothing(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(100).await;
    let log_before = l.store.log_records(0, 1000).await.unwrap().len();

    let refused = l.create(draft(vec![leg(&funding, Direction::Debit, 500), leg(&wallet, Direction::Credit, 400)], TransactionStatus::Posted)).await;
    assert!(matches!(refused, Err(CommandError::Ledger(LedgerError::Unbalanced { debits: 500, credits: 400, .. }))), "{refused:?}");

    assert_eq!(l.balances(&funding).await, bal(100, 100, 100));
    assert_eq!(l.balances(&wallet).await, bal(100, 100, 100));
    assert_eq!(l.account(&wallet).await.state.version, 1);
    let all = l.store.list_transactions(l.tenant, None, None, first_page(10), l.now()).await.unwrap();
    assert_eq!(all.items.len(), 1, "only the funding transfer exists");
    assert_eq!(l.store.log_records(0, 1000).await.unwrap().len(), log_before, "a refused command writes no log record");
    l.finish().await;
}

async fn transfer_is_refused_when_available_balance_is_too_low(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;

    let refused = l.transfer(&wallet, &merchant, 150).await;
    assert!(matches!(&refused, Err(CommandError::Ledger(LedgerError::InsufficientFunds(a))) if *a == wallet), "{refused:?}");
    assert_eq!(l.balances(&wallet).await, bal(100, 100, 100));
    assert_eq!(l.balances(&merchant).await, bal(0, 0, 0));
    assert_eq!(l.account(&merchant).await.state.version, 0);

    l.transfer(&wallet, &merchant, 100).await.unwrap();
    assert_eq!(l.balances(&wallet).await, bal(0, 0, 0));
    let refused = l.transfer(&wallet, &merchant, 1).await;
    assert!(matches!(refused, Err(CommandError::Ledger(LedgerError::InsufficientFunds(_)))), "{refused:?}");
    l.finish().await;
}

async fn partial_post_of_a_hold_releases_the_rest(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;

    let h = l.create(hold(&wallet, &merchant, 60)).await.unwrap();
    assert_eq!(h.status, TransactionStatus::Pending);
    assert_eq!(l.balances(&wallet).await, bal(100, 40, 40), "the hold reserves 60");
    assert_eq!(l.balances(&merchant).await, bal(0, 60, 0));
    let refused = l.create(hold(&wallet, &merchant, 50)).await;
    assert!(matches!(refused, Err(CommandError::Ledger(LedgerError::InsufficientFunds(_)))), "held money is not available: {refused:?}");

    let posted = l
        .change(Command::PostTransaction { id: h.id.clone(), entries: Some(vec![leg(&wallet, Direction::Debit, 25), leg(&merchant, Direction::Credit, 25)]) })
        .await
        .unwrap();
    assert_eq!(posted.status, TransactionStatus::Posted);
    assert_eq!(l.balances(&wallet).await, bal(75, 75, 75), "the 35 not posted is available again");
    assert_eq!(l.balances(&merchant).await, bal(25, 25, 25));

    let stored = l.transaction(&h.id).await;
    assert_eq!(stored, posted);
    assert_eq!(stored.entries.len(), 4, "the hold keeps its pending legs and gains posted ones");
    assert_eq!(stored.current_entries().map(|e| e.amount).collect::<Vec<_>>(), [25, 25]);

    let again = l.change(Command::PostTransaction { id: h.id.clone(), entries: None }).await;
    assert!(matches!(again, Err(CommandError::Ledger(LedgerError::TransactionNotPending(_)))), "{again:?}");
    l.finish().await;
}

async fn void_releases_a_hold_and_cannot_be_repeated(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let h = l.create(hold(&wallet, &merchant, 60)).await.unwrap();

    let voided = l.change(Command::VoidTransaction { id: h.id.clone() }).await.unwrap();
    assert_eq!(voided.status, TransactionStatus::Voided);
    assert_eq!(voided.void_reason, Some(VoidReason::Requested));
    assert_eq!(voided.voided_at, Some(l.now()));
    assert_eq!(l.transaction(&h.id).await, voided);
    assert_eq!(l.balances(&wallet).await, bal(100, 100, 100));
    assert_eq!(l.balances(&merchant).await, bal(0, 0, 0));

    for command in [Command::VoidTransaction { id: h.id.clone() }, Command::PostTransaction { id: h.id.clone(), entries: None }] {
        let refused = l.change(command).await;
        assert!(matches!(refused, Err(CommandError::Ledger(LedgerError::TransactionNotPending(_)))), "{refused:?}");
    }
    l.finish().await;
}

async fn expired_hold_stops_counting_before_and_after_the_sweep(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let mut expiring = hold(&wallet, &merchant, 60);
    let expires_at = l.now().plus_secs(60);
    expiring.expires_at = Some(expires_at);
    let h = l.create(expiring).await.unwrap();
    assert_eq!(l.balances(&wallet).await, bal(100, 40, 40));

    l.clock.advance_secs(61);
    // Nothing has been sent to the engine since, so the hold is still stored as pending.
    assert_eq!(stored_status(&l, &h.id).await, TransactionStatus::Pending, "not swept yet");
    reads_ignore_expired_hold(&l, &wallet, &merchant, &h.id, expires_at).await;

    // Every batch sweeps first, so the hold can no longer be posted.
    let refused = l.change(Command::PostTransaction { id: h.id.clone(), entries: None }).await;
    assert!(matches!(refused, Err(CommandError::Ledger(LedgerError::TransactionNotPending(_)))), "{refused:?}");
    assert_eq!(stored_status(&l, &h.id).await, TransactionStatus::Voided, "swept");
    assert_eq!(l.account(&wallet).await.state.counters.pending_debits, 0, "the sweep released the stored reservation");
    reads_ignore_expired_hold(&l, &wallet, &merchant, &h.id, expires_at).await;
    l.finish().await;
}

/// The status stored with the transaction's entries (not as seen at `now`).
async fn stored_status(l: &TestLedger, id: &TransactionId) -> TransactionStatus {
    let entries = l.store.entries_chunk("", 1000).await.unwrap();
    let statuses: Vec<TransactionStatus> = entries.into_iter().filter(|(e, _)| e.transaction_id == *id).map(|(_, s)| s).collect();
    assert_eq!(statuses.len(), 2);
    statuses[0]
}

async fn reads_ignore_expired_hold(l: &TestLedger, wallet: &AccountId, merchant: &AccountId, id: &TransactionId, expires_at: Timestamp) {
    assert_eq!(l.balances(wallet).await, bal(100, 100, 100), "an expired hold does not count");
    assert_eq!(l.balances(merchant).await, bal(0, 0, 0));
    let accounts = l.store.list_accounts(l.tenant, first_page(10), l.now()).await.unwrap();
    let listed = accounts.items.iter().find(|a| a.state.id == *wallet).unwrap();
    assert_eq!(listed.state.counters.pending_debits, 0, "nor in account lists");
    let seen = l.transaction(id).await;
    assert_eq!((seen.status, seen.void_reason, seen.voided_at), (TransactionStatus::Voided, Some(VoidReason::Expired), Some(expires_at)));
    let entries = l.store.list_entries(l.tenant, wallet.clone(), first_page(10), l.now()).await.unwrap().unwrap();
    assert_eq!(entries.items[0].entry.transaction_id, *id);
    assert_eq!(entries.items[0].transaction_status, TransactionStatus::Voided);
    let pending = l.store.list_transactions(l.tenant, None, Some(TransactionStatus::Pending), first_page(10), l.now()).await.unwrap();
    assert!(pending.items.is_empty(), "an expired hold is not listed as pending");
    let voided = l.store.list_transactions(l.tenant, Some(wallet.clone()), Some(TransactionStatus::Voided), first_page(10), l.now()).await.unwrap();
    assert_eq!(voided.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(id));
    let (_, as_of) = l.store.balances_as_of(l.tenant, wallet.clone(), l.now()).await.unwrap().unwrap();
    assert_eq!(as_of.pending_debits, 0);
}

async fn reversal_swaps_the_legs_and_a_second_reversal_is_refused(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let t = l.transfer(&wallet, &merchant, 30).await.unwrap();

    let reversal = l.change(Command::ReverseTransaction { id: t.id.clone() }).await.unwrap();
    assert_eq!(reversal.reverses, Some(t.id.clone()));
    assert_eq!(reversal.status, TransactionStatus::Posted);
    let legs: Vec<_> = reversal.entries.iter().map(|e| (e.account_id.clone(), e.direction, e.amount)).collect();
    assert_eq!(legs, [(wallet.clone(), Direction::Credit, 30), (merchant.clone(), Direction::Debit, 30)]);
    assert_eq!(l.transaction(&reversal.id).await, reversal);
    assert_eq!(l.transaction(&t.id).await.reversed_by, Some(reversal.id.clone()));
    assert_eq!(l.balances(&wallet).await, bal(100, 100, 100));
    assert_eq!(l.balances(&merchant).await, bal(0, 0, 0));

    let again = l.change(Command::ReverseTransaction { id: t.id.clone() }).await;
    assert!(matches!(&again, Err(CommandError::Ledger(LedgerError::AlreadyReversed { reversal: r, .. })) if *r == reversal.id), "{again:?}");
    let h = l.create(hold(&wallet, &merchant, 5)).await.unwrap();
    let pending = l.change(Command::ReverseTransaction { id: h.id.clone() }).await;
    assert!(matches!(pending, Err(CommandError::Ledger(LedgerError::TransactionNotPosted(_)))), "{pending:?}");
    l.finish().await;
}

async fn duplicate_external_id_is_reported_with_the_existing_id(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let with_external_id = |external_id: &str| {
        let mut d = draft(vec![leg(&wallet, Direction::Debit, 1), leg(&merchant, Direction::Credit, 1)], TransactionStatus::Posted);
        d.external_id = Some(external_id.to_owned());
        d
    };
    let first = l.create(with_external_id("order-1")).await.unwrap();
    let duplicate = l.create(with_external_id("order-1")).await;
    assert!(matches!(&duplicate, Err(CommandError::DuplicateExternalId { existing }) if *existing == first.id.to_string()), "{duplicate:?}");

    // Within one batch, the second use finds the first.
    let items = vec![with_external_id("order-2"), with_external_id("order-2")];
    let Ok(Outcome::Batch(results)) = l.submit(Command::CreateBatch { atomic: false, items }).await else { panic!("batch refused") };
    let created = results[0].as_ref().unwrap();
    assert!(matches!(&results[1], Err(CommandError::DuplicateExternalId { existing }) if *existing == created.id.to_string()), "{results:?}");
    assert_eq!(l.balances(&merchant).await, bal(2, 2, 2));

    let mut account = new_account("customer", Direction::Credit, None);
    account.external_id = Some(String::from("cust-1"));
    let Ok(Outcome::Account(created)) = l.submit(Command::CreateAccount(account.clone())).await else { panic!("account refused") };
    let duplicate = l.submit(Command::CreateAccount(account.clone())).await;
    assert!(matches!(&duplicate, Err(CommandError::DuplicateExternalId { existing }) if *existing == created.state.id.to_string()), "{duplicate:?}");

    // External ids are per tenant.
    let other = l.other_tenant("globex").await;
    assert!(matches!(l.submit_as(other, Command::CreateAccount(account)).await, Ok(Outcome::Account(_))));
    l.finish().await;
}

async fn atomic_batch_applies_all_items_or_none(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let pay = |amount| draft(vec![leg(&wallet, Direction::Debit, amount), leg(&merchant, Direction::Credit, amount)], TransactionStatus::Posted);

    let Ok(Outcome::Batch(results)) = l.submit(Command::CreateBatch { atomic: true, items: vec![pay(10), pay(20), pay(1000)] }).await else {
        panic!("batch refused")
    };
    assert!(matches!(results[0], Err(CommandError::BatchAborted)), "{results:?}");
    assert!(matches!(results[1], Err(CommandError::BatchAborted)), "{results:?}");
    assert!(matches!(results[2], Err(CommandError::Ledger(LedgerError::InsufficientFunds(_)))), "{results:?}");
    assert_eq!(l.balances(&wallet).await, bal(100, 100, 100));
    assert_eq!(l.store.list_transactions(l.tenant, Some(merchant.clone()), None, first_page(10), l.now()).await.unwrap().items.len(), 0);

    let Ok(Outcome::Batch(results)) = l.submit(Command::CreateBatch { atomic: true, items: vec![pay(10), pay(20)] }).await else { panic!("batch refused") };
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(l.balances(&wallet).await, bal(70, 70, 70));
    assert_eq!(l.balances(&merchant).await, bal(30, 30, 30));
    l.finish().await;
}

async fn non_atomic_batch_applies_each_item_on_its_own(l: TestLedger) {
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let pay = |amount| draft(vec![leg(&wallet, Direction::Debit, amount), leg(&merchant, Direction::Credit, amount)], TransactionStatus::Posted);

    let Ok(Outcome::Batch(results)) = l.submit(Command::CreateBatch { atomic: false, items: vec![pay(10), pay(1000), pay(20)] }).await else {
        panic!("batch refused")
    };
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(CommandError::Ledger(LedgerError::InsufficientFunds(_)))), "{results:?}");
    assert_eq!(l.balances(&wallet).await, bal(70, 70, 70));
    for t in results.iter().flatten() {
        assert_eq!(&l.transaction(&t.id).await, t);
    }
    l.finish().await;
}

async fn balances_as_of_fold_entries_by_effective_time(l: TestLedger) {
    let start = l.now();
    let (_, wallet) = l.funded_wallet(100).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let before = l.store.balances_as_of(l.tenant, wallet.clone(), start.plus_secs(-1)).await.unwrap().unwrap();
    assert_eq!(before.1, Counters::default(), "nothing counts before the first entry");
    assert_eq!(before.0.state.id, wallet);

    l.clock.advance_secs(100);
    let voided = l.create(hold(&wallet, &merchant, 40)).await.unwrap();
    l.clock.advance_secs(100);
    l.change(Command::VoidTransaction { id: voided.id.clone() }).await.unwrap();
    let posted = l.create(hold(&wallet, &merchant, 30)).await.unwrap();
    l.clock.advance_secs(100);
    l.change(Command::PostTransaction { id: posted.id.clone(), entries: None }).await.unwrap();

    let funded = Counters { posted_credits: 100, ..Counters::default() };
    assert_eq!(as_of(&l, &wallet, start).await, funded);
    assert_eq!(as_of(&l, &wallet, start.plus_secs(99)).await, funded);
    assert_eq!(as_of(&l, &wallet, start.plus_secs(150)).await, Counters { pending_debits: 40, ..funded }, "the hold counted until voided");
    assert_eq!(as_of(&l, &wallet, start.plus_secs(300)).await, Counters { posted_debits: 30, ..funded }, "posted, and no hold left");
    assert_eq!(as_of(&l, &wallet, l.now()).await, l.account(&wallet).await.state.counters, "as of now is the stored balance");
    l.finish().await;
}

async fn as_of(l: &TestLedger, account: &AccountId, at: Timestamp) -> Counters {
    l.store.balances_as_of(l.tenant, account.clone(), at).await.unwrap().unwrap().1
}

async fn another_tenants_account_and_transaction_are_not_found(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(100).await;
    let h = l.create(hold(&wallet, &funding, 10)).await.unwrap();
    let other = l.other_tenant("globex").await;
    let now = l.now();

    assert_eq!(l.store.get_account(other, wallet.clone(), now).await.unwrap(), None);
    assert_eq!(l.store.balances_as_of(other, wallet.clone(), now).await.unwrap(), None);
    assert_eq!(l.store.list_entries(other, wallet.clone(), first_page(10), now).await.unwrap(), None);
    assert_eq!(l.store.get_transaction(other, h.id.clone(), now).await.unwrap(), None);
    assert!(l.store.list_transactions(other, Some(wallet.clone()), None, first_page(10), now).await.unwrap().items.is_empty());
    assert!(l.store.list_transactions(other, None, None, first_page(10), now).await.unwrap().items.is_empty());
    assert!(l.store.list_accounts(other, first_page(10), now).await.unwrap().items.is_empty());

    let theirs = l.submit_as(other, Command::CreateAccount(new_account("theirs", Direction::Credit, None))).await;
    let Ok(Outcome::Account(theirs)) = theirs else { panic!("{theirs:?}") };
    let d = draft(vec![leg(&wallet, Direction::Debit, 1), leg(&theirs.state.id, Direction::Credit, 1)], TransactionStatus::Posted);
    let refused = l.create_as(other, d).await;
    assert!(matches!(&refused, Err(CommandError::Ledger(LedgerError::AccountNotFound(a))) if *a == wallet), "{refused:?}");
    let refused = l.submit_as(other, Command::PostTransaction { id: h.id.clone(), entries: None }).await;
    assert!(matches!(refused, Err(CommandError::TransactionNotFound(_))), "{refused:?}");
    let refused = l.submit_as(other, Command::VoidTransaction { id: h.id.clone() }).await;
    assert!(matches!(refused, Err(CommandError::TransactionNotFound(_))), "{refused:?}");
    assert_eq!(l.balances(&wallet).await, bal(100, 90, 90), "nothing the other tenant did touched the wallet");
    l.finish().await;
}
