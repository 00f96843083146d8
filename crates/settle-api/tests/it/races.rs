//! Races over HTTP: many clients at once against the same accounts and keys.

use crate::app::{Balances, ledger_test, transfer_body};
use serde_json::json;

ledger_test! {
    async fn concurrent_transfers_never_take_a_min_zero_account_below_zero(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", None).await;
        app.transfer_ok(&source, &wallet, 1000).await;
        // 200 attempts of 7 each (and holds of 7) against 1000: at most 142 can fit.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let api = app.api.clone();
            let (wallet, merchant) = (wallet.clone(), merchant.clone());
            tasks.push(tokio::spawn(async move {
                let mut body = transfer_body(&wallet, &merchant, 7);
                if i % 4 == 0 {
                    body["status"] = json!("pending");
                }
                let reply = api.post("/v1/transactions", &body).await;
                match reply.status {
                    201 => true,
                    422 => {
                        assert_eq!(reply.code(), "insufficient_funds");
                        false
                    }
                    other => panic!("unexpected {other}: {}", reply.body),
                }
            }));
        }
        let mut succeeded = 0i64;
        for task in tasks {
            if task.await.unwrap() {
                succeeded += 1;
            }
        }
        assert_eq!(succeeded, 1000 / 7, "exactly as many as fit succeed");
        let w = app.balances(&wallet).await;
        assert!(w.available >= 0, "{w:?}");
        assert_eq!(w.available, 1000 - 7 * succeeded);
        let merchant_total = app.balances(&merchant).await;
        assert_eq!(merchant_total.pending, 7 * succeeded, "everything the wallet gave arrived (posted or held)");
        assert_eq!(Balances { posted: w.posted, pending: w.available, available: w.available }, w, "no hold is left uncounted");
    }
}

ledger_test! {
    async fn concurrent_retries_of_one_key_apply_once(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let body = transfer_body(&source, &wallet, 25);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let api = app.api.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move { api.post_idempotent("/v1/transactions", "same-key", &body).await }));
        }
        let mut created = Vec::new();
        for task in tasks {
            let reply = task.await.unwrap();
            match reply.status {
                201 => created.push(reply.bytes),
                409 => assert_eq!(reply.code(), "idempotency_key_in_use"),
                other => panic!("unexpected {other}: {}", reply.body),
            }
        }
        assert!(!created.is_empty());
        assert!(created.windows(2).all(|w| w[0] == w[1]), "every 201 is the same answer");
        assert_eq!(app.balances(&wallet).await.posted, 25, "applied exactly once");
        assert_eq!(app.list_all("/v1/transactions").await.len(), 1);
    }
}
