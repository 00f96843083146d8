//! Transactions: the double-entry rules, limits on amounts, overdraft limits,
//! reversals, optimistic versions and external ids.

use crate::app::{Api, Balances, ledger_test, transfer_body};
use serde_json::{Value, json};

/// Every account's balances and version, to prove a refusal changed nothing.
async fn snapshot(api: &Api, accounts: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for a in accounts {
        let body = api.account_json(a).await;
        out.push(json!([body["balances"], body["totals"], body["version"]]));
    }
    out
}

async fn transaction_count(api: &Api) -> usize {
    api.list_all("/v1/transactions").await.len()
}

ledger_test! {
    async fn posted_transfer_moves_both_balances_and_returns_its_entries(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 1000).await;
        let reply = app
            .post("/v1/transactions", &json!({
                "entries": [
                    {"account_id": wallet, "direction": "debit", "amount": 250},
                    {"account_id": merchant, "direction": "credit", "amount": 250},
                ],
                "description": "order 17", "external_id": "order-17", "metadata": {"order": "17"},
            }))
            .await;
        reply.expect_status(201);
        let t = &reply.body;
        let id = reply.id();
        assert!(id.starts_with("ltx_") && id.len() == 30, "{id}");
        assert_eq!(t["object"], "transaction");
        assert_eq!(t["status"], "posted");
        assert_eq!(t["description"], "order 17");
        assert_eq!(t["external_id"], "order-17");
        assert_eq!(t["metadata"], json!({"order": "17"}));
        assert_eq!(t["created_at"], app.now().to_rfc3339().as_str());
        assert_eq!(t["effective_at"], app.now().to_rfc3339().as_str(), "effective now unless told otherwise");
        assert_eq!(t["posted_at"], app.now().to_rfc3339().as_str());
        assert_eq!(t["expires_at"], Value::Null);
        assert_eq!(t["voided_at"], Value::Null);
        assert_eq!(t["reverses"], Value::Null);
        assert_eq!(t["reversed_by"], Value::Null);
        let entries = t["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let legs: Vec<(&str, &str, i64, &str, &str)> = entries
            .iter()
            .map(|e| (e["account_id"].as_str().unwrap(), e["direction"].as_str().unwrap(), e["amount"].as_i64().unwrap(), e["currency"].as_str().unwrap(), e["status"].as_str().unwrap()))
            .collect();
        assert_eq!(legs, vec![(wallet.as_str(), "debit", 250, "USD", "posted"), (merchant.as_str(), "credit", 250, "USD", "posted")]);
        for e in entries {
            assert_eq!(e["object"], "entry");
            assert_eq!(e["transaction_id"], id.as_str());
        }
        assert_eq!(app.balances(&wallet).await, Balances { posted: 750, pending: 750, available: 750 });
        assert_eq!(app.balances(&merchant).await, Balances { posted: 250, pending: 250, available: 250 });
        assert_eq!(app.balances(&source).await, Balances { posted: 1000, pending: 1000, available: 1000 });
        let read = app.get(&format!("/v1/transactions/{id}")).await;
        read.expect_status(200);
        assert_eq!(read.body, reply.body, "GET shows what POST returned");
    }
}

ledger_test! {
    async fn transaction_with_several_legs_balances_per_currency_sum(app) {
        let source = app.account("debit", None).await;
        let a = app.account("credit", None).await;
        let b = app.account("credit", None).await;
        let reply = app
            .post("/v1/transactions", &json!({"entries": [
                {"account_id": source, "direction": "debit", "amount": 100},
                {"account_id": a, "direction": "credit", "amount": 70},
                {"account_id": b, "direction": "credit", "amount": 30},
            ]}))
            .await;
        reply.expect_status(201);
        assert_eq!(app.balances(&a).await.posted, 70);
        assert_eq!(app.balances(&b).await.posted, 30);
        assert_eq!(app.balances(&source).await.posted, 100);
    }
}

ledger_test! {
    async fn unbalanced_transaction_is_refused_and_changes_nothing(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 500).await;
        let before = snapshot(&app, &[&source, &wallet]).await;
        let reply = app
            .post("/v1/transactions", &json!({"entries": [
                {"account_id": source, "direction": "debit", "amount": 100},
                {"account_id": wallet, "direction": "credit", "amount": 99},
            ]}))
            .await;
        reply.expect_error(422, "unbalanced_transaction");
        assert_eq!(reply.body["error"]["type"], "ledger_error");
        assert_eq!(reply.param(), Some("entries"));
        let same_side = app
            .post("/v1/transactions", &json!({"entries": [
                {"account_id": source, "direction": "credit", "amount": 100},
                {"account_id": wallet, "direction": "credit", "amount": 100},
            ]}))
            .await;
        same_side.expect_error(422, "unbalanced_transaction");
        assert_eq!(snapshot(&app, &[&source, &wallet]).await, before);
        assert_eq!(transaction_count(&app).await, 1, "only the funding transfer exists");
    }
}

ledger_test! {
    async fn legs_in_two_currencies_must_balance_in_each_currency(app) {
        let usd = app.account("debit", None).await;
        let eur = app.account_with(json!({"name": "eur", "currency": "EUR", "normal_balance": "credit"})).await;
        let before = snapshot(&app, &[&usd, &eur]).await;
        let reply = app.post("/v1/transactions", &transfer_body(&usd, &eur, 100)).await;
        reply.expect_error(422, "unbalanced_transaction");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("USD") || message.contains("EUR"), "names the currency: {}", reply.body);
        assert_eq!(snapshot(&app, &[&usd, &eur]).await, before);
        assert_eq!(transaction_count(&app).await, 0);
    }
}

ledger_test! {
    async fn entry_currency_other_than_its_accounts_is_a_currency_mismatch(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let before = snapshot(&app, &[&source, &wallet]).await;
        let reply = app
            .post("/v1/transactions", &json!({"entries": [
                {"account_id": source, "direction": "debit", "amount": 100, "currency": "EUR"},
                {"account_id": wallet, "direction": "credit", "amount": 100, "currency": "EUR"},
            ]}))
            .await;
        reply.expect_error(422, "currency_mismatch");
        assert_eq!(reply.param(), Some("entries"));
        assert_eq!(snapshot(&app, &[&source, &wallet]).await, before);
        let matching = app
            .post("/v1/transactions", &json!({"entries": [
                {"account_id": source, "direction": "debit", "amount": 100, "currency": "USD"},
                {"account_id": wallet, "direction": "credit", "amount": 100, "currency": "USD"},
            ]}))
            .await;
        matching.expect_status(201);
    }
}

ledger_test! {
    async fn transaction_needs_two_to_a_hundred_entries(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let one = app.post("/v1/transactions", &json!({"entries": [{"account_id": source, "direction": "debit", "amount": 100}]})).await;
        one.expect_error(400, "invalid_request");
        assert_eq!(one.param(), Some("entries"));
        app.post("/v1/transactions", &json!({"entries": []})).await.expect_error(400, "invalid_request");
        let mut many: Vec<Value> = (0..50).map(|_| json!({"account_id": source, "direction": "debit", "amount": 1})).collect();
        many.extend((0..50).map(|_| json!({"account_id": wallet, "direction": "credit", "amount": 1})));
        app.post("/v1/transactions", &json!({"entries": many})).await.expect_status(201);
        many.push(json!({"account_id": wallet, "direction": "credit", "amount": 1}));
        many.push(json!({"account_id": source, "direction": "debit", "amount": 1}));
        let too_many = app.post("/v1/transactions", &json!({"entries": many})).await;
        too_many.expect_error(400, "invalid_request");
        assert_eq!(too_many.param(), Some("entries"));
        assert_eq!(app.balances(&wallet).await.posted, 50);
    }
}

ledger_test! {
    async fn non_positive_fractional_and_out_of_range_amounts_are_refused(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let before = snapshot(&app, &[&source, &wallet]).await;
        let amounts = [json!(0), json!(-5), json!(1.5), json!(100.0), json!(1e3), json!(9_223_372_036_854_775_808u64), json!(-9_223_372_036_854_775_808i64), json!("100"), json!(null)];
        for amount in amounts {
            let body = json!({"entries": [
                {"account_id": source, "direction": "debit", "amount": amount},
                {"account_id": wallet, "direction": "credit", "amount": amount},
            ]});
            let reply = app.post("/v1/transactions", &body).await;
            reply.expect_error(400, "invalid_request");
            assert_eq!(reply.param(), Some("entries[0].amount"), "amount {amount}: {}", reply.body);
        }
        let huge = br#"{"entries":[{"account_id":"A","direction":"debit","amount":100000000000000000000000000000},{"account_id":"B","direction":"credit","amount":1}]}"#;
        let huge = String::from_utf8_lossy(huge).replace('A', &source).replace('B', &wallet);
        app.post_raw("/v1/transactions", huge.into_bytes()).await.expect_error(400, "invalid_request");
        assert_eq!(snapshot(&app, &[&source, &wallet]).await, before);
        assert_eq!(transaction_count(&app).await, 0);
    }
}

ledger_test! {
    async fn largest_amount_is_accepted_and_a_balance_never_wraps_past_it(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        app.transfer_ok(&source, &wallet, i64::MAX).await;
        assert_eq!(app.balances(&wallet).await, Balances { posted: i64::MAX, pending: i64::MAX, available: i64::MAX });
        let before = snapshot(&app, &[&source, &wallet]).await;
        let reply = app.transfer(&source, &wallet, 1).await;
        reply.expect_error(422, "balance_overflow");
        assert_eq!(snapshot(&app, &[&source, &wallet]).await, before);
        app.transfer_ok(&wallet, &source, i64::MAX).await;
        assert_eq!(app.balances(&wallet).await.posted, 0);
    }
}

ledger_test! {
    async fn unknown_account_in_body_is_account_not_found(app) {
        let source = app.account("debit", None).await;
        let before = snapshot(&app, &[&source]).await;
        let missing = "acct_01arz3ndektsv4rrffq69g5fav";
        for unknown in [missing, "acct_doesnotexist", "", "ltx_01arz3ndektsv4rrffq69g5fav"] {
            let reply = app.transfer(&source, unknown, 100).await;
            reply.expect_error(422, "account_not_found");
            let param = reply.param().unwrap_or("");
            assert!(param.starts_with("entries"), "param {param}");
        }
        assert_eq!(snapshot(&app, &[&source]).await, before);
        assert_eq!(transaction_count(&app).await, 0);
    }
}

ledger_test! {
    async fn overdraft_is_refused_when_min_available_balance_is_zero(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 1000).await;
        let before = snapshot(&app, &[&wallet, &merchant]).await;
        let reply = app.transfer(&wallet, &merchant, 1001).await;
        reply.expect_error(422, "insufficient_funds");
        assert!(reply.body["error"]["message"].as_str().unwrap().contains(&wallet), "names the account: {}", reply.body);
        assert_eq!(snapshot(&app, &[&wallet, &merchant]).await, before, "a refused transfer changes nothing");
        app.transfer_ok(&wallet, &merchant, 1000).await;
        assert_eq!(app.balances(&wallet).await, Balances { posted: 0, pending: 0, available: 0 });
        app.transfer(&wallet, &merchant, 1).await.expect_error(422, "insufficient_funds");
    }
}

ledger_test! {
    async fn negative_min_available_balance_allows_exactly_that_much_overdraft(app) {
        let credit_line = app.account("credit", Some(-500)).await;
        let merchant = app.account("credit", None).await;
        app.transfer(&credit_line, &merchant, 501).await.expect_error(422, "insufficient_funds");
        app.transfer_ok(&credit_line, &merchant, 500).await;
        assert_eq!(app.balances(&credit_line).await, Balances { posted: -500, pending: -500, available: -500 });
        app.transfer(&credit_line, &merchant, 1).await.expect_error(422, "insufficient_funds");
        app.transfer_ok(&merchant, &credit_line, 200).await;
        app.transfer(&credit_line, &merchant, 201).await.expect_error(422, "insufficient_funds");
        app.transfer_ok(&credit_line, &merchant, 200).await;
        assert_eq!(app.balances(&credit_line).await.posted, -500);
    }
}

ledger_test! {
    async fn money_arriving_into_an_account_below_its_limit_is_accepted(app) {
        let treasury = app.account("debit", None).await;
        let wallet = app.account("credit", Some(-100)).await;
        let merchant = app.account("credit", None).await;
        app.transfer_ok(&wallet, &merchant, 100).await;
        app.transfer_ok(&treasury, &wallet, 1).await;
        assert_eq!(app.balances(&wallet).await.posted, -99);
    }
}

ledger_test! {
    async fn account_without_limit_can_go_as_negative_as_needed(app) {
        let unlimited = app.account("credit", None).await;
        let merchant = app.account("credit", None).await;
        app.transfer_ok(&unlimited, &merchant, 1_000_000_000_000).await;
        assert_eq!(app.balances(&unlimited).await.posted, -1_000_000_000_000);
    }
}

ledger_test! {
    async fn reverse_creates_a_posted_transaction_with_swapped_legs_linked_both_ways(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 1000).await;
        let original = app.transfer_ok(&wallet, &merchant, 400).await;
        let reply = app.post(&format!("/v1/transactions/{original}/reverse"), &json!({})).await;
        reply.expect_status(201);
        let reversal = reply.id();
        assert_ne!(reversal, original);
        assert_eq!(reply.body["status"], "posted");
        assert_eq!(reply.body["reverses"], original.as_str());
        let legs: Vec<(&str, &str, i64)> = reply.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["account_id"].as_str().unwrap(), e["direction"].as_str().unwrap(), e["amount"].as_i64().unwrap()))
            .collect();
        assert_eq!(legs, vec![(wallet.as_str(), "credit", 400), (merchant.as_str(), "debit", 400)]);
        let original_now = app.get(&format!("/v1/transactions/{original}")).await;
        assert_eq!(original_now.body["reversed_by"], reversal.as_str());
        assert_eq!(original_now.body["status"], "posted", "the original stays posted: posted entries never change");
        assert_eq!(app.balances(&wallet).await.posted, 1000);
        assert_eq!(app.balances(&merchant).await.posted, 0);

        let twice = app.post(&format!("/v1/transactions/{original}/reverse"), &json!({})).await;
        twice.expect_error(409, "transaction_already_reversed");
        assert!(twice.body["error"]["message"].as_str().unwrap().contains(&reversal), "names the reversal: {}", twice.body);
        assert_eq!(app.balances(&wallet).await.posted, 1000, "a refused reversal moves nothing");
    }
}

ledger_test! {
    async fn reversing_a_pending_or_voided_transaction_is_refused(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let hold = app.hold_ok(&source, &wallet, 10).await;
        app.post(&format!("/v1/transactions/{hold}/reverse"), &json!({})).await.expect_error(409, "transaction_not_posted");
        app.post(&format!("/v1/transactions/{hold}/void"), &json!({})).await.expect_status(200);
        app.post(&format!("/v1/transactions/{hold}/reverse"), &json!({})).await.expect_error(409, "transaction_not_posted");
        app.post("/v1/transactions/ltx_01arz3ndektsv4rrffq69g5fav/reverse", &json!({})).await.expect_error(404, "not_found");
    }
}

ledger_test! {
    async fn reversal_that_would_overdraw_the_receiver_is_refused(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 100).await;
        let payment = app.transfer_ok(&wallet, &merchant, 100).await;
        app.transfer_ok(&merchant, &source, 100).await;
        app.post(&format!("/v1/transactions/{payment}/reverse"), &json!({})).await.expect_error(422, "insufficient_funds");
        let original = app.get(&format!("/v1/transactions/{payment}")).await;
        assert_eq!(original.body["reversed_by"], Value::Null, "a refused reversal leaves no link");
    }
}

ledger_test! {
    async fn stale_expected_versions_are_a_version_conflict_and_change_nothing(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 10).await;
        let version = app.version(&wallet).await;
        assert_eq!(version, 1);
        let mut body = transfer_body(&source, &wallet, 5);
        body["expected_versions"] = json!({ wallet.clone(): version });
        app.post("/v1/transactions", &body).await.expect_status(201);
        assert_eq!(app.version(&wallet).await, 2);
        let before = snapshot(&app, &[&source, &wallet]).await;
        let stale = app.post("/v1/transactions", &body).await;
        stale.expect_error(409, "version_conflict");
        assert_eq!(stale.param(), Some("expected_versions"));
        assert_eq!(stale.body["error"]["type"], "conflict_error");
        assert_eq!(snapshot(&app, &[&source, &wallet]).await, before);
        body["expected_versions"] = json!({ wallet.clone(): 2, source.clone(): 2 });
        app.post("/v1/transactions", &body).await.expect_status(201);
    }
}

ledger_test! {
    async fn expected_version_for_an_account_the_transaction_does_not_touch_is_refused(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let other = app.account("credit", None).await;
        let mut body = transfer_body(&source, &wallet, 5);
        body["expected_versions"] = json!({ other.clone(): 0 });
        let reply = app.post("/v1/transactions", &body).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("expected_versions"));
        body["expected_versions"] = json!({ "acct_nope": 0 });
        app.post("/v1/transactions", &body).await.expect_error(422, "account_not_found");
        assert_eq!(app.balances(&wallet).await.posted, 0);
    }
}

ledger_test! {
    async fn duplicate_external_id_is_refused_naming_the_existing_transaction(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let mut body = transfer_body(&source, &wallet, 7);
        body["external_id"] = json!("order-42");
        let first = app.post("/v1/transactions", &body).await;
        first.expect_status(201);
        let first_id = first.id();
        body["entries"][0]["amount"] = json!(8);
        body["entries"][1]["amount"] = json!(8);
        let again = app.post("/v1/transactions", &body).await;
        again.expect_error(409, "duplicate_external_id");
        assert_eq!(again.param(), Some("external_id"));
        let message = again.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&first_id), "the message names {first_id}: {message}");
        assert_eq!(app.balances(&wallet).await.posted, 7);
        body["external_id"] = json!("order-43");
        app.post("/v1/transactions", &body).await.expect_status(201);
    }
}

ledger_test! {
    async fn effective_at_is_kept_and_is_what_balances_as_of_read(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let mut body = transfer_body(&source, &wallet, 5);
        let earlier = app.now().plus_secs(-3600);
        body["effective_at"] = json!(earlier.to_rfc3339());
        let reply = app.post("/v1/transactions", &body).await;
        reply.expect_status(201);
        assert_eq!(reply.body["effective_at"], earlier.to_rfc3339().as_str());
        assert_eq!(reply.body["created_at"], app.now().to_rfc3339().as_str());
        let as_of = app.get(&format!("/v1/accounts/{wallet}/balances?as_of={}", earlier.plus_secs(1).to_rfc3339())).await;
        assert_eq!(Balances::of(&as_of.body).posted, 5);
        body["effective_at"] = json!("not a time");
        let bad = app.post("/v1/transactions", &body).await;
        bad.expect_error(400, "invalid_request");
        assert_eq!(bad.param(), Some("effective_at"));
    }
}

ledger_test! {
    async fn unknown_transaction_answers_not_found(app) {
        for id in ["ltx_01arz3ndektsv4rrffq69g5fav", "ltx_nope", "acct_01arz3ndektsv4rrffq69g5fav"] {
            let reply = app.get(&format!("/v1/transactions/{id}")).await;
            reply.expect_error(404, "not_found");
            assert_eq!(reply.body["error"]["message"], "no such transaction");
            for action in ["post", "void", "reverse"] {
                app.post(&format!("/v1/transactions/{id}/{action}"), &json!({})).await.expect_error(404, "not_found");
            }
        }
    }
}

ledger_test! {
    async fn a_nul_character_anywhere_is_refused_naming_its_field_on_every_backend(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let before = snapshot(&app, &[&source, &wallet]).await;
        let accounts = app.list_all("/v1/accounts").await.len();
        // PostgreSQL's text cannot hold a NUL: refused before any backend sees it.
        let reply = app.post("/v1/accounts", &json!({"name": "a\u{0}b", "currency": "USD", "normal_balance": "debit"})).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("name"), "{}", reply.body);
        let mut transfer = transfer_body(&source, &wallet, 5);
        transfer["description"] = json!("rent\u{0}");
        let reply = app.post("/v1/transactions", &transfer).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("description"));
        let good = transfer_body(&source, &wallet, 5);
        let mut bad = transfer_body(&source, &wallet, 5);
        bad["metadata"] = json!({"order": "o\u{0}"});
        let reply = app.post("/v1/transactions/batch", &json!({"atomic": false, "transactions": [good, bad]})).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("transactions[1].metadata.order"));
        // A backslash followed by the text u0000 is no NUL.
        let reply = app.post("/v1/accounts", &json!({"name": "C:\\u0000", "currency": "USD", "normal_balance": "debit"})).await;
        reply.expect_status(201);
        assert_eq!(reply.body["name"], "C:\\u0000");
        app.get("/v1/transactions?account_id=%00").await.expect_error(400, "invalid_request");
        app.get("/v1/events?object_id=x%00").await.expect_error(400, "invalid_request");
        app.get("/v1/transactions/ltx_%00").await.expect_error(404, "not_found");
        assert_eq!(snapshot(&app, &[&source, &wallet]).await, before);
        assert_eq!(transaction_count(&app).await, 0);
        assert_eq!(app.list_all("/v1/accounts").await.len(), accounts + 1);
    }
}
