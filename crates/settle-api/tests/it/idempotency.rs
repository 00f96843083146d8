//! `Idempotency-Key`: a retry gets the first outcome back byte for byte and
//! changes nothing; a key reused for another request is refused; concurrent
//! retries have exactly one effect.

use crate::app::{Balances, ledger_test, transfer_body};
use reqwest::Method;
use serde_json::json;

ledger_test! {
    async fn replayed_key_returns_the_same_status_and_body_and_moves_no_money(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let body = transfer_body(&source, &wallet, 7);
        let first = app.post_idempotent("/v1/transactions", "order-7-attempt", &body).await;
        first.expect_status(201);
        assert_eq!(first.header("idempotent-replayed"), None, "a first answer is not a replay");
        app.clock.advance_secs(30);
        let second = app.post_idempotent("/v1/transactions", "order-7-attempt", &body).await;
        assert_eq!(second.status, 201);
        assert_eq!(second.bytes, first.bytes, "the very same body");
        assert_eq!(second.header("idempotent-replayed"), Some("true"));
        assert_ne!(second.header("request-id"), first.header("request-id"), "each response still has its own Request-Id");
        assert_eq!(app.balances(&wallet).await, Balances { posted: 7, pending: 7, available: 7 });
        assert_eq!(app.list_all("/v1/transactions").await.len(), 1);
        let mut reordered = serde_json::Map::new();
        reordered.insert("entries".to_owned(), json!([
            {"amount": 7, "direction": "debit", "account_id": source},
            {"amount": 7, "direction": "credit", "account_id": wallet},
        ]));
        let third = app.post_idempotent("/v1/transactions", "order-7-attempt", &serde_json::Value::Object(reordered)).await;
        assert_eq!((third.status, third.header("idempotent-replayed")), (201, Some("true")), "key order does not change the request");
        assert_eq!(third.bytes, first.bytes);
    }
}

ledger_test! {
    async fn a_refused_request_is_replayed_as_refused_even_after_funds_arrive(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        let spend = transfer_body(&wallet, &merchant, 50);
        let first = app.post_idempotent("/v1/transactions", "spend-1", &spend).await;
        first.expect_error(422, "insufficient_funds");
        app.transfer_ok(&source, &wallet, 100).await;
        let retry = app.post_idempotent("/v1/transactions", "spend-1", &spend).await;
        assert_eq!((retry.status, retry.header("idempotent-replayed")), (422, Some("true")));
        assert_eq!(retry.bytes, first.bytes, "the stored outcome, request_id included");
        assert_eq!(app.balances(&merchant).await.posted, 0);
        app.post_idempotent("/v1/transactions", "spend-2", &spend).await.expect_status(201);
    }
}

ledger_test! {
    async fn same_key_with_another_request_is_idempotency_key_reused(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        app.post_idempotent("/v1/transactions", "k-1", &transfer_body(&source, &wallet, 7)).await.expect_status(201);
        let other_amount = app.post_idempotent("/v1/transactions", "k-1", &transfer_body(&source, &wallet, 8)).await;
        other_amount.expect_error(422, "idempotency_key_reused");
        assert_eq!(other_amount.param(), Some("Idempotency-Key"));
        assert_eq!(other_amount.body["error"]["type"], "idempotency_error");
        let other_path = app.post_idempotent("/v1/accounts", "k-1", &json!({"name": "x", "currency": "USD", "normal_balance": "credit"})).await;
        other_path.expect_error(422, "idempotency_key_reused");
        let read_only = app.key("acme", settle_core::tenancy::Environment::Sandbox, &settle_core::tenancy::Scope::ALL).await;
        let other_key = app.api.with_key(Some(&read_only));
        other_key.post_idempotent("/v1/transactions", "k-1", &transfer_body(&source, &wallet, 7)).await.expect_error(422, "idempotency_key_reused");
        assert_eq!(app.balances(&wallet).await.posted, 7);
        assert_eq!(app.list_all("/v1/accounts").await.len(), 2);
    }
}

ledger_test! {
    async fn every_post_endpoint_replays_its_first_outcome(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let account_body = json!({"name": "idem", "currency": "USD", "normal_balance": "credit"});
        let a1 = app.post_idempotent("/v1/accounts", "acct-key", &account_body).await;
        let a2 = app.post_idempotent("/v1/accounts", "acct-key", &account_body).await;
        assert_eq!((a1.status, a2.status, a2.header("idempotent-replayed")), (201, 201, Some("true")));
        assert_eq!(a1.bytes, a2.bytes);
        assert_eq!(app.list_all("/v1/accounts").await.len(), 3, "one account opened, not two");

        app.transfer_ok(&source, &wallet, 100).await;
        let hold = app.hold_ok(&wallet, &source, 60).await;
        let post_path = format!("/v1/transactions/{hold}/post");
        let post_body = json!({"entries": transfer_body(&wallet, &source, 10)["entries"]});
        let p1 = app.post_idempotent(&post_path, "post-key", &post_body).await;
        let p2 = app.post_idempotent(&post_path, "post-key", &post_body).await;
        assert_eq!((p1.status, p2.status, p2.header("idempotent-replayed")), (200, 200, Some("true")));
        assert_eq!(p1.bytes, p2.bytes);
        let original = app.transfer_ok(&wallet, &source, 1).await;
        let reverse_path = format!("/v1/transactions/{original}/reverse");
        let r1 = app.post_idempotent(&reverse_path, "reverse-key", &json!({})).await;
        let r2 = app.post_idempotent(&reverse_path, "reverse-key", &json!({})).await;
        assert_eq!((r1.status, r2.status), (201, 201), "a replayed reversal is not 'reversed twice'");
        assert_eq!(r1.bytes, r2.bytes);
        let batch = json!({"atomic": true, "transactions": [transfer_body(&source, &wallet, 5)]});
        let b1 = app.post_idempotent("/v1/transactions/batch", "batch-key", &batch).await;
        let b2 = app.post_idempotent("/v1/transactions/batch", "batch-key", &batch).await;
        assert_eq!((b1.status, b2.status, b2.header("idempotent-replayed")), (200, 200, Some("true")));
        assert_eq!(b1.bytes, b2.bytes);
        assert_eq!(app.balances(&wallet).await, Balances { posted: 100 - 10 - 1 + 1 + 5, pending: 95, available: 95 });
    }
}

ledger_test! {
    async fn invalid_idempotency_keys_are_refused_before_anything_happens(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let body = transfer_body(&source, &wallet, 1);
        let too_long = "k".repeat(256);
        let bad_keys: [&[u8]; 5] = [b"", too_long.as_bytes(), b"tab\there", "na\u{ef}ve".as_bytes(), b"\x80\x81"];
        for key in bad_keys {
            let request = app.request(Method::POST, "/v1/transactions").header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes(key).unwrap()).json(&body);
            let reply = app.send(request).await;
            reply.expect_error(400, "invalid_request");
            assert_eq!(reply.param(), Some("Idempotency-Key"), "key {:?}", String::from_utf8_lossy(key));
        }
        // Sent twice, even the same key twice: which one guards the request is not the client's to guess.
        for second in ["b", "a"] {
            let request = app.request(Method::POST, "/v1/transactions").header("Idempotency-Key", "a").header("Idempotency-Key", second).json(&body);
            let reply = app.send(request).await;
            reply.expect_error(400, "invalid_request");
            assert_eq!(reply.param(), Some("Idempotency-Key"));
        }
        assert_eq!(app.balances(&wallet).await.posted, 0);
        let longest = "k".repeat(255);
        app.post_idempotent("/v1/transactions", &longest, &body).await.expect_status(201);
        app.post_idempotent("/v1/transactions", " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", &body).await.expect_status(201);
        assert_eq!(app.balances(&wallet).await.posted, 2);
    }
}

ledger_test! {
    async fn a_request_refused_by_validation_does_not_use_up_its_key(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        app.post_idempotent("/v1/transactions", "fixed-later", &transfer_body(&source, &wallet, 0)).await.expect_error(400, "invalid_request");
        let fixed = app.post_idempotent("/v1/transactions", "fixed-later", &transfer_body(&source, &wallet, 3)).await;
        fixed.expect_status(201);
        assert_eq!(fixed.header("idempotent-replayed"), None);
        assert_eq!(app.balances(&wallet).await.posted, 3);
    }
}

ledger_test! {
    async fn idempotency_keys_belong_to_one_tenant(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        app.post_idempotent("/v1/transactions", "shared-key", &transfer_body(&source, &wallet, 4)).await.expect_status(201);
        let globex = app.client_for("globex").await;
        let g_source = globex.account("debit", None).await;
        let g_wallet = globex.account("credit", None).await;
        let reply = globex.post_idempotent("/v1/transactions", "shared-key", &transfer_body(&g_source, &g_wallet, 4)).await;
        reply.expect_status(201);
        assert_eq!(reply.header("idempotent-replayed"), None, "another organization's key is its own");
        assert_eq!(globex.balances(&g_wallet).await.posted, 4);
    }
}

ledger_test! {
    async fn concurrent_retries_with_one_key_have_exactly_one_effect(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let body = transfer_body(&source, &wallet, 25);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let api = app.api.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move { api.post_idempotent("/v1/transactions", "one-payment", &body).await }));
        }
        let mut created_bodies = Vec::new();
        let mut in_use = 0;
        for task in tasks {
            let reply = task.await.unwrap();
            match reply.status {
                201 => created_bodies.push(reply.bytes),
                409 => {
                    reply.expect_error(409, "idempotency_key_in_use");
                    in_use += 1;
                }
                other => panic!("only 201 or 409 may answer a concurrent retry, got {other}: {}", reply.body),
            }
        }
        assert!(!created_bodies.is_empty(), "at least one retry gets the result ({in_use} were in use)");
        assert!(created_bodies.windows(2).all(|w| w[0] == w[1]), "every 201 carries the same transaction");
        assert_eq!(app.balances(&wallet).await, Balances { posted: 25, pending: 25, available: 25 });
        assert_eq!(app.list_all("/v1/transactions").await.len(), 1);
        let last = app.post_idempotent("/v1/transactions", "one-payment", &body).await;
        assert_eq!((last.status, last.header("idempotent-replayed")), (201, Some("true")));
        assert_eq!(last.bytes, created_bodies[0]);
    }
}

ledger_test! {
    async fn a_duplicate_field_is_refused_with_or_without_an_idempotency_key(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let entries = transfer_body(&source, &wallet, 5)["entries"].to_string();
        let raw = format!(r#"{{"entries":{entries},"description":"a","description":"b"}}"#).into_bytes();
        let without_key = app.post_raw("/v1/transactions", raw.clone()).await;
        without_key.expect_error(400, "invalid_request");
        let with_key = app.send(app.request(Method::POST, "/v1/transactions").header("Idempotency-Key", "dup-field").header("content-type", "application/json").body(raw)).await;
        with_key.expect_error(400, "invalid_request");
        assert_eq!(app.balances(&wallet).await.posted, 0);
    }
}
