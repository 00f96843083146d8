//! `POST /v1/transactions/batch`: atomic batches apply all or none;
//! non-atomic ones answer per item, in request order.

use crate::app::{Balances, ledger_test, transfer_body};
use serde_json::{Value, json};

fn statuses(body: &Value) -> Vec<(u64, u64, String)> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["status"].as_u64().unwrap(), r["error"]["code"].as_str().unwrap_or("").to_owned()))
        .collect()
}

ledger_test! {
    async fn atomic_batch_applies_every_item_in_order(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        // The second item spends what the first one brings in.
        let reply = app
            .post("/v1/transactions/batch", &json!({"atomic": true, "transactions": [
                transfer_body(&source, &wallet, 100),
                transfer_body(&wallet, &merchant, 100),
            ]}))
            .await;
        reply.expect_status(200);
        assert_eq!(reply.body["object"], "batch_result");
        assert_eq!((reply.body["succeeded"].as_u64(), reply.body["failed"].as_u64()), (Some(2), Some(0)));
        assert_eq!(statuses(&reply.body), vec![(0, 201, String::new()), (1, 201, String::new())]);
        for r in reply.body["results"].as_array().unwrap() {
            assert_eq!(r["transaction"]["object"], "transaction");
            assert_eq!(r["transaction"]["status"], "posted");
            let id = r["transaction"]["id"].as_str().unwrap();
            app.get(&format!("/v1/transactions/{id}")).await.expect_status(200);
        }
        assert_eq!(app.balances(&wallet).await.posted, 0);
        assert_eq!(app.balances(&merchant).await.posted, 100);
    }
}

ledger_test! {
    async fn atomic_batch_with_one_failing_item_applies_none(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 100).await;
        let mut with_external_id = transfer_body(&source, &merchant, 5);
        with_external_id["external_id"] = json!("batch-ext-1");
        let reply = app
            .post("/v1/transactions/batch", &json!({"atomic": true, "transactions": [
                transfer_body(&source, &wallet, 50),
                with_external_id.clone(),
                transfer_body(&wallet, &merchant, 1000),
                transfer_body(&source, &merchant, 1),
            ]}))
            .await;
        reply.expect_status(200);
        assert_eq!((reply.body["succeeded"].as_u64(), reply.body["failed"].as_u64()), (Some(0), Some(4)));
        assert_eq!(
            statuses(&reply.body),
            vec![
                (0, 409, "batch_aborted".to_owned()),
                (1, 409, "batch_aborted".to_owned()),
                (2, 422, "insufficient_funds".to_owned()),
                (3, 409, "batch_aborted".to_owned()),
            ]
        );
        assert!(reply.body["results"].as_array().unwrap().iter().all(|r| r.get("transaction").is_none()));
        assert_eq!(app.balances(&wallet).await, Balances { posted: 100, pending: 100, available: 100 });
        assert_eq!(app.balances(&merchant).await.posted, 0);
        assert_eq!(app.list_all("/v1/transactions").await.len(), 1, "only the funding transfer exists");
        // The aborted item's external_id was not taken.
        app.post("/v1/transactions", &with_external_id).await.expect_status(201);
    }
}

ledger_test! {
    async fn non_atomic_batch_answers_each_item_in_request_order(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        let eur = app.account_with(json!({"name": "eur", "currency": "EUR", "normal_balance": "credit"})).await;
        let reply = app
            .post("/v1/transactions/batch", &json!({"atomic": false, "transactions": [
                transfer_body(&source, &wallet, 100),
                transfer_body(&wallet, &merchant, 1000),
                transfer_body(&wallet, &merchant, 30),
                transfer_body(&source, &eur, 5),
                transfer_body(&source, "acct_01arz3ndektsv4rrffq69g5fav", 5),
                transfer_body(&wallet, &merchant, 70),
            ]}))
            .await;
        reply.expect_status(200);
        assert_eq!((reply.body["succeeded"].as_u64(), reply.body["failed"].as_u64()), (Some(3), Some(3)));
        assert_eq!(
            statuses(&reply.body),
            vec![
                (0, 201, String::new()),
                (1, 422, "insufficient_funds".to_owned()),
                (2, 201, String::new()),
                (3, 422, "unbalanced_transaction".to_owned()),
                (4, 422, "account_not_found".to_owned()),
                (5, 201, String::new()),
            ]
        );
        let results = reply.body["results"].as_array().unwrap();
        let amount = |i: usize| results[i]["transaction"]["entries"][0]["amount"].as_i64();
        assert_eq!((amount(0), amount(2), amount(5)), (Some(100), Some(30), Some(70)), "each result belongs to its item");
        for failed in [1, 3, 4] {
            let error = &results[failed]["error"];
            assert!(error["type"].is_string() && error["message"].is_string(), "item error shape: {error}");
        }
        assert_eq!(app.balances(&wallet).await.posted, 0);
        assert_eq!(app.balances(&merchant).await.posted, 100);
        assert_eq!(app.list_all("/v1/transactions").await.len(), 3);
    }
}

ledger_test! {
    async fn batch_holds_one_to_ten_thousand_transactions(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        // Over 1000 a batch runs as an operation (202; see operations.rs), up to 10,000.
        let items: Vec<Value> = (0..10_001).map(|_| transfer_body(&source, &wallet, 1)).collect();
        let over = app.post("/v1/transactions/batch", &json!({"atomic": false, "transactions": items})).await;
        over.expect_error(400, "invalid_request");
        assert_eq!(over.param(), Some("transactions"));
        let empty = app.post("/v1/transactions/batch", &json!({"atomic": false, "transactions": []})).await;
        empty.expect_error(400, "invalid_request");
        assert_eq!(app.balances(&wallet).await.posted, 0, "a refused batch moves nothing");
        let items: Vec<Value> = (0..1000).map(|_| transfer_body(&source, &wallet, 1)).collect();
        let full = app.post("/v1/transactions/batch", &json!({"atomic": true, "transactions": items})).await;
        full.expect_status(200);
        assert_eq!(full.body["succeeded"], 1000);
        assert_eq!(app.balances(&wallet).await.posted, 1000);
    }
}

ledger_test! {
    async fn batch_with_a_malformed_item_is_refused_whole_naming_the_item(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let reply = app
            .post("/v1/transactions/batch", &json!({"atomic": false, "transactions": [
                transfer_body(&source, &wallet, 1),
                transfer_body(&source, &wallet, 0),
            ]}))
            .await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("transactions[1].entries[0].amount"));
        app.post("/v1/transactions/batch", &json!({"transactions": []})).await.expect_error(400, "invalid_request");
        assert_eq!(app.balances(&wallet).await.posted, 0);
    }
}

ledger_test! {
    async fn an_atomic_batch_repeating_an_external_id_is_refused_whole_and_a_plain_one_names_the_real_first(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let item = |ext: &str| {
            let mut t = transfer_body(&source, &wallet, 1);
            t["external_id"] = json!(ext);
            t
        };
        // All or none: the second would always meet the first, which the rollback removes.
        let reply = app.post("/v1/transactions/batch", &json!({"atomic": true, "transactions": [item("a"), item("dup"), item("dup")]})).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("transactions[2].external_id"), "{}", reply.body);
        assert_eq!(app.balances(&wallet).await.posted, 0);
        // Not atomic: the first is created and the second is refused naming it.
        let reply = app.post("/v1/transactions/batch", &json!({"atomic": false, "transactions": [item("dup"), item("dup")]})).await;
        reply.expect_status(200);
        let first = reply.body["results"][0]["transaction"]["id"].as_str().unwrap().to_owned();
        assert_eq!(reply.body["results"][1]["error"]["code"], "duplicate_external_id");
        assert!(reply.body["results"][1]["error"]["message"].as_str().unwrap().contains(&first), "{}", reply.body);
        app.get(&format!("/v1/transactions/{first}")).await.expect_status(200);
        assert_eq!(app.balances(&wallet).await.posted, 1);
    }
}
