//! Property tests over HTTP: random sequences of transfers, holds, captures,
//! voids, reversals and keyed retries, against a real server. Whatever the
//! sequence, every transaction balances, every account's totals equal the
//! fold of its listed entries, no account with `min_available_balance: 0`
//! goes below zero, and a replayed key answers the same bytes and changes
//! nothing.

use crate::app::{Api, Backend, TestApp};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const ACCOUNTS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: i64,
    },
    Hold {
        from: usize,
        to: usize,
        amount: i64,
    },
    /// Posts the n-th hold made so far (modulo), in full or for `part` of each leg.
    Capture {
        hold: usize,
        part: Option<i64>,
    },
    Void {
        hold: usize,
    },
    Reverse {
        transfer: usize,
    },
    /// Sends the n-th keyed request again.
    Replay {
        request: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let account = 0..ACCOUNTS;
    let amount = 1i64..400;
    prop_oneof![
        4 => (account.clone(), account.clone(), amount.clone()).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        2 => (account.clone(), account, amount).prop_map(|(from, to, amount)| Op::Hold { from, to, amount }),
        2 => (0usize..8, proptest::option::of(1i64..400)).prop_map(|(hold, part)| Op::Capture { hold, part }),
        1 => (0usize..8).prop_map(|hold| Op::Void { hold }),
        1 => (0usize..8).prop_map(|transfer| Op::Reverse { transfer }),
        2 => (0usize..16).prop_map(|request| Op::Replay { request }),
    ]
}

struct Sent {
    key: String,
    path: String,
    body: Value,
    status: u16,
    bytes: Vec<u8>,
}

/// Sends a keyed POST and remembers it for a later replay.
async fn keyed(api: &Api, sent: &mut Vec<Sent>, path: String, body: Value) -> crate::app::Reply {
    let key = format!("k{}", sent.len());
    let reply = api.post_idempotent(&path, &key, &body).await;
    assert!(matches!(reply.status, 200 | 201 | 409 | 422), "{path}: {} {}", reply.status, reply.body);
    sent.push(Sent { key, path, body, status: reply.status, bytes: reply.bytes.clone() });
    reply
}

async fn snapshot(api: &Api, accounts: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for a in accounts {
        let mut body = api.account_json(a).await;
        // Reading an account is not a change; its version is.
        body.as_object_mut().map(|o| o.remove("updated_at"));
        out.push(body);
    }
    out
}

async fn run(backend: Backend, ops: Vec<Op>) {
    let app = match backend {
        Backend::Sqlite => TestApp::start(backend).await,
        Backend::Postgres => match TestApp::start_postgres_if_configured().await {
            Some(app) => app,
            None => return,
        },
    };
    let mut accounts = vec![app.account("debit", None).await];
    for _ in 1..ACCOUNTS {
        accounts.push(app.account("credit", Some(0)).await);
    }
    // Money enters through account 0, which may go as negative as it likes.
    for a in &accounts[1..] {
        app.transfer_ok(&accounts[0], a, 500).await;
    }
    let mut sent: Vec<Sent> = Vec::new();
    let mut holds: Vec<String> = Vec::new();
    let mut transfers: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Transfer { from, to, amount } => {
                let reply = keyed(&app, &mut sent, String::from("/v1/transactions"), crate::app::transfer_body(&accounts[from], &accounts[to], amount)).await;
                if reply.status == 201 {
                    transfers.push(reply.id());
                }
            }
            Op::Hold { from, to, amount } => {
                let mut body = crate::app::transfer_body(&accounts[from], &accounts[to], amount);
                body["status"] = json!("pending");
                let reply = keyed(&app, &mut sent, String::from("/v1/transactions"), body).await;
                if reply.status == 201 {
                    holds.push(reply.id());
                }
            }
            Op::Capture { hold, part } => {
                let Some(id) = holds.get(hold % holds.len().max(1)).cloned() else { continue };
                let body = match part {
                    None => json!({}),
                    Some(part) => {
                        let held = app.get(&format!("/v1/transactions/{id}")).await.body;
                        let entries: Vec<Value> = held["entries"]
                            .as_array()
                            .map(|legs| {
                                legs.iter()
                                    .map(|e| json!({"account_id": e["account_id"], "direction": e["direction"], "amount": part.min(e["amount"].as_i64().unwrap_or(1))}))
                                    .collect()
                            })
                            .unwrap_or_default();
                        json!({"entries": entries})
                    }
                };
                keyed(&app, &mut sent, format!("/v1/transactions/{id}/post"), body).await;
            }
            Op::Void { hold } => {
                let Some(id) = holds.get(hold % holds.len().max(1)).cloned() else { continue };
                keyed(&app, &mut sent, format!("/v1/transactions/{id}/void"), json!({})).await;
            }
            Op::Reverse { transfer } => {
                let Some(id) = transfers.get(transfer % transfers.len().max(1)).cloned() else { continue };
                keyed(&app, &mut sent, format!("/v1/transactions/{id}/reverse"), json!({})).await;
            }
            Op::Replay { request } => {
                if sent.is_empty() {
                    continue;
                }
                let before = snapshot(&app, &accounts).await;
                let first = &sent[request % sent.len()];
                let again = app.post_idempotent(&first.path, &first.key, &first.body).await;
                assert_eq!(again.status, first.status, "a replay answers the first status");
                assert_eq!(again.bytes, first.bytes, "a replay answers the first body");
                assert_eq!(again.header("idempotent-replayed"), Some("true"));
                assert_eq!(snapshot(&app, &accounts).await, before, "a replay changes nothing");
            }
        }
    }
    check_invariants(&app, &accounts).await;
}

async fn check_invariants(app: &TestApp, accounts: &[String]) {
    for tx in app.list_all("/v1/transactions").await {
        let mut net: BTreeMap<&str, i64> = BTreeMap::new();
        for e in tx["entries"].as_array().unwrap() {
            let amount = e["amount"].as_i64().unwrap();
            *net.entry(e["direction"].as_str().unwrap()).or_default() += amount;
        }
        assert_eq!(net.get("debit"), net.get("credit"), "transaction {} balances", tx["id"]);
    }
    let mut total_posted = 0i128;
    for (i, a) in accounts.iter().enumerate() {
        let account = app.account_json(a).await;
        let mut fold: BTreeMap<(String, String), i64> = BTreeMap::new();
        for e in app.list_all(&format!("/v1/accounts/{a}/entries")).await {
            let status = e["status"].as_str().unwrap().to_owned();
            *fold.entry((status, e["direction"].as_str().unwrap().to_owned())).or_default() += e["amount"].as_i64().unwrap();
        }
        let sum = |status: &str, direction: &str| fold.get(&(status.to_owned(), direction.to_owned())).copied().unwrap_or(0);
        let totals = json!({
            "posted_debits": sum("posted", "debit"),
            "posted_credits": sum("posted", "credit"),
            "pending_debits": sum("pending", "debit"),
            "pending_credits": sum("pending", "credit"),
        });
        assert_eq!(account["totals"], totals, "account {a}'s totals equal the fold of its entries");
        let balances = crate::app::Balances::of(&account);
        let posted_debit_side = sum("posted", "debit") - sum("posted", "credit");
        let normal_posted = if i == 0 { posted_debit_side } else { -posted_debit_side };
        assert_eq!(balances.posted, normal_posted);
        total_posted += i128::from(posted_debit_side);
        if i > 0 {
            assert!(balances.available >= 0, "account {a} with min 0 went below zero: {account}");
        }
    }
    assert_eq!(total_posted, 0, "the ledger as a whole balances");
}

fn cases() -> u32 {
    std::env::var("SETTLE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

fn check(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(), ..ProptestConfig::default() });
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        runtime.block_on(run(backend, ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_operations_keep_every_invariant_on_sqlite() {
    check(Backend::Sqlite);
}

#[test]
fn random_operations_keep_every_invariant_on_postgres() {
    check(Backend::Postgres);
}
