//! Keyset pagination, newest first: 23 items are pages of 10, 10 and 3 with
//! no repeats, and `ending_before` the first item of a page gives back the
//! page before it.

use crate::harness::{TestLedger, hold, new_account, on_both_backends};
use settle_core::ledger::Direction;
use settle_store::engine::{Command, Outcome};
use settle_store::records::{Cursor, Page, PageRequest};
use std::future::Future;

on_both_backends!(
    accounts_come_newest_first_in_pages_without_repeats,
    tenant_transactions_come_newest_first_in_pages_without_repeats,
    account_transactions_come_newest_first_in_pages_each_once,
    account_entries_come_newest_first_in_pages_without_repeats,
    long_histories_page_both_ways_and_accept_a_cursor_from_elsewhere,
);

const ITEMS: usize = 23;

/// Walks forward page by page (each cursor the last id seen), then back
/// from the last page, and checks both against `newest_first`.
async fn check_pages<F, Fut>(mut fetch: F, newest_first: &[String])
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Page<String>>,
{
    assert_eq!(newest_first.len(), ITEMS);
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor = Cursor::Start;
    loop {
        let page = fetch(PageRequest { limit: 10, cursor: cursor.clone() }).await;
        let last = page.items.last().cloned();
        pages.push(page.items);
        match last {
            Some(last) if page.has_more => cursor = Cursor::After(last),
            _ => break,
        }
        assert!(pages.len() < 5, "pagination does not end");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
    assert_eq!(pages.concat(), newest_first, "every item once, newest first");

    let back = fetch(PageRequest { limit: 10, cursor: Cursor::Before(pages[2][0].clone()) }).await;
    assert_eq!((&back.items, back.has_more), (&pages[1], true), "ending_before the third page gives the second");
    let back = fetch(PageRequest { limit: 10, cursor: Cursor::Before(pages[1][0].clone()) }).await;
    assert_eq!((&back.items, back.has_more), (&pages[0], false), "and then the first, with nothing newer");
    let none = fetch(PageRequest { limit: 10, cursor: Cursor::Before(pages[0][0].clone()) }).await;
    assert_eq!((none.items.len(), none.has_more), (0, false));
}

fn ids<T>(page: Page<T>, id: impl Fn(&T) -> String) -> Page<String> {
    Page { items: page.items.iter().map(id).collect(), has_more: page.has_more }
}

async fn accounts_come_newest_first_in_pages_without_repeats(l: TestLedger) {
    let mut created = Vec::new();
    for i in 0..ITEMS {
        created.push(l.open_account(&format!("account {i}"), Direction::Credit, None).await.to_string());
    }
    created.reverse();
    let (store, tenant, now) = (l.store.clone(), l.tenant, l.now());
    check_pages(
        |page| {
            let store = store.clone();
            async move { ids(store.list_accounts(tenant, page, now).await.unwrap(), |a| a.state.id.to_string()) }
        },
        &created,
    )
    .await;
    l.finish().await;
}

async fn tenant_transactions_come_newest_first_in_pages_without_repeats(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(1000).await;
    let mut created = vec![l.store.list_transactions(l.tenant, None, None, crate::harness::first_page(1), l.now()).await.unwrap().items[0].id.to_string()];
    for i in 1..ITEMS as i64 {
        created.push(l.transfer(&funding, &wallet, i).await.unwrap().id.to_string());
    }
    created.reverse();
    let (store, tenant, now) = (l.store.clone(), l.tenant, l.now());
    check_pages(
        |page| {
            let store = store.clone();
            async move { ids(store.list_transactions(tenant, None, None, page, now).await.unwrap(), |t| t.id.to_string()) }
        },
        &created,
    )
    .await;
    l.finish().await;
}

/// Some of the wallet's transactions are posted holds (two entries each on
/// the wallet), and others touch only other accounts: listing by account
/// shows each of the wallet's transactions exactly once.
async fn account_transactions_come_newest_first_in_pages_each_once(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(1000).await;
    let merchant = l.open_account("merchant", Direction::Credit, None).await;
    let elsewhere = l.open_account("elsewhere", Direction::Credit, None).await;
    let mut created = vec![l.store.list_transactions(l.tenant, None, None, crate::harness::first_page(1), l.now()).await.unwrap().items[0].id.to_string()];
    for i in 1..ITEMS as i64 {
        let t = if i % 4 == 0 {
            let h = l.create(hold(&wallet, &merchant, i)).await.unwrap();
            l.change(Command::PostTransaction { id: h.id.clone(), entries: None }).await.unwrap();
            h
        } else {
            l.transfer(&wallet, &merchant, i).await.unwrap()
        };
        created.push(t.id.to_string());
        l.transfer(&funding, &elsewhere, i).await.unwrap();
    }
    created.reverse();
    let (store, tenant, now) = (l.store.clone(), l.tenant, l.now());
    check_pages(
        |page| {
            let (store, wallet) = (store.clone(), wallet.clone());
            async move { ids(store.list_transactions(tenant, Some(wallet), None, page, now).await.unwrap(), |t| t.id.to_string()) }
        },
        &created,
    )
    .await;
    l.finish().await;
}

async fn account_entries_come_newest_first_in_pages_without_repeats(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(1000).await;
    let Ok(Outcome::Account(other)) = l.submit(Command::CreateAccount(new_account("other", Direction::Credit, None))).await else { panic!() };
    for i in 1..ITEMS as i64 {
        l.transfer(&funding, &wallet, i).await.unwrap();
        l.transfer(&funding, &other.state.id, i).await.unwrap();
    }
    let all = l.store.entries_chunk("", 1000).await.unwrap();
    let mut created: Vec<String> = all.iter().filter(|(e, _)| e.account_id == wallet).map(|(e, _)| e.id.to_string()).collect();
    created.reverse();
    let (store, tenant, now) = (l.store.clone(), l.tenant, l.now());
    check_pages(
        |page| {
            let (store, wallet) = (store.clone(), wallet.clone());
            async move { ids(store.list_entries(tenant, wallet, page, now).await.unwrap().unwrap(), |e| e.entry.id.to_string()) }
        },
        &created,
    )
    .await;
    l.finish().await;
}

/// 300 transactions on one account (past several history checkpoints): small
/// pages forward and backward list every one exactly once, and a cursor
/// naming another account's transaction positions by id.
async fn long_histories_page_both_ways_and_accept_a_cursor_from_elsewhere(l: TestLedger) {
    let (funding, wallet) = l.funded_wallet(1_000_000).await;
    let other = l.open_account("other", Direction::Credit, None).await;
    let mut mine: Vec<String> =
        vec![l.store.list_transactions(l.tenant, Some(wallet.clone()), None, crate::harness::first_page(1), l.now()).await.unwrap().items[0].id.to_string()];
    let mut foreign = Vec::new();
    for round in 0..3 {
        let mut items = Vec::new();
        for i in 0..100 {
            let to = if i % 10 == 9 { &other } else { &wallet };
            items.push(crate::harness::draft(
                vec![crate::harness::leg(&funding, Direction::Debit, round * 100 + i + 1), crate::harness::leg(to, Direction::Credit, round * 100 + i + 1)],
                settle_core::ledger::TransactionStatus::Posted,
            ));
        }
        let Ok(Outcome::Batch(results)) = l.submit(Command::CreateBatch { atomic: true, items }).await else { panic!("batch failed") };
        for (i, r) in results.into_iter().enumerate() {
            let id = r.unwrap().id.to_string();
            if i % 10 == 9 { foreign.push(id) } else { mine.push(id) }
        }
    }
    mine.reverse();
    let list = |cursor: Cursor| {
        let (store, wallet, tenant, now) = (l.store.clone(), wallet.clone(), l.tenant, l.now());
        async move { store.list_transactions(tenant, Some(wallet), None, PageRequest { limit: 7, cursor }, now).await.unwrap() }
    };
    let mut forward = Vec::new();
    let mut cursor = Cursor::Start;
    loop {
        let page = list(cursor).await;
        forward.extend(page.items.iter().map(|t| t.id.to_string()));
        match page.items.last() {
            Some(last) if page.has_more => cursor = Cursor::After(last.id.to_string()),
            _ => break,
        }
    }
    assert_eq!(forward, mine, "forward: every transaction once, newest first");
    let mut backward: Vec<String> = Vec::new();
    let mut cursor = Cursor::Before(mine[mine.len() - 1].clone());
    loop {
        let page = list(cursor).await;
        let mut ids: Vec<String> = page.items.iter().map(|t| t.id.to_string()).collect();
        ids.extend(backward);
        backward = ids;
        match page.items.first() {
            Some(first) if page.has_more => cursor = Cursor::Before(first.id.to_string()),
            _ => break,
        }
    }
    backward.push(mine[mine.len() - 1].clone());
    assert_eq!(backward, mine, "backward: every transaction once, newest first");

    // A cursor from another account's list: the page starts next to it by id.
    let pivot = &foreign[15];
    let older: Vec<String> = list(Cursor::After(pivot.clone())).await.items.iter().map(|t| t.id.to_string()).collect();
    let expected_older: Vec<String> = mine.iter().filter(|id| id.as_str() < pivot.as_str()).take(7).cloned().collect();
    assert_eq!(older, expected_older);
    let newer: Vec<String> = list(Cursor::Before(pivot.clone())).await.items.iter().map(|t| t.id.to_string()).collect();
    let mut expected_newer: Vec<String> = mine.iter().filter(|id| id.as_str() > pivot.as_str()).rev().take(7).cloned().collect();
    expected_newer.reverse();
    assert_eq!(newer, expected_newer);

    // Entries page backward across checkpoints too.
    let entries = |cursor: Cursor| {
        let (store, wallet, tenant, now) = (l.store.clone(), wallet.clone(), l.tenant, l.now());
        async move { store.list_entries(tenant, wallet, PageRequest { limit: 9, cursor }, now).await.unwrap().unwrap() }
    };
    let all = l.store.entries_chunk("", 10_000).await.unwrap();
    let mut expected: Vec<String> = all.iter().filter(|(e, _)| e.account_id == wallet).map(|(e, _)| e.id.to_string()).collect();
    expected.reverse();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = Cursor::Before(expected[expected.len() - 1].clone());
    loop {
        let page = entries(cursor).await;
        let mut ids: Vec<String> = page.items.iter().map(|e| e.entry.id.to_string()).collect();
        ids.extend(seen);
        seen = ids;
        match page.items.first() {
            Some(first) if page.has_more => cursor = Cursor::Before(first.entry.id.to_string()),
            _ => break,
        }
    }
    seen.push(expected[expected.len() - 1].clone());
    assert_eq!(seen, expected);
    l.finish().await;
}
