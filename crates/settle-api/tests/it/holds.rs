//! Holds: pending transactions reserve money, then are posted (in full or in
//! part), voided, or expire on their own when the clock passes `expires_at`.

use crate::app::{Balances, eventually, ledger_test, transfer_body};
use serde_json::{Value, json};

/// A funded wallet (min 0) holding 1000, and a merchant (min 0).
async fn wallet_and_merchant(app: &crate::app::TestApp) -> (String, String) {
    let source = app.account("debit", None).await;
    let wallet = app.account("credit", Some(0)).await;
    let merchant = app.account("credit", Some(0)).await;
    app.transfer_ok(&source, &wallet, 1000).await;
    (wallet, merchant)
}

ledger_test! {
    async fn pending_hold_counts_against_available_but_not_posted(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let reply = app.post("/v1/transactions", &json!({
            "entries": transfer_body(&wallet, &merchant, 600)["entries"], "status": "pending",
        })).await;
        reply.expect_status(201);
        assert_eq!(reply.body["status"], "pending");
        assert_eq!(reply.body["posted_at"], Value::Null);
        let statuses: Vec<&str> = reply.body["entries"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["pending", "pending"]);
        let w = app.account_json(&wallet).await;
        assert_eq!(Balances::of(&w), Balances { posted: 1000, pending: 400, available: 400 });
        assert_eq!(w["totals"], json!({"posted_debits": 0, "posted_credits": 1000, "pending_debits": 600, "pending_credits": 0}));
        assert_eq!(app.balances(&merchant).await, Balances { posted: 0, pending: 600, available: 0 }, "incoming holds are not spendable");

        app.transfer(&wallet, &merchant, 401).await.expect_error(422, "insufficient_funds");
        let second_hold = app.post("/v1/transactions", &json!({"entries": transfer_body(&wallet, &merchant, 401)["entries"], "status": "pending"})).await;
        second_hold.expect_error(422, "insufficient_funds");
        app.transfer_ok(&wallet, &merchant, 400).await;
        assert_eq!(app.balances(&wallet).await, Balances { posted: 600, pending: 0, available: 0 });
    }
}

ledger_test! {
    async fn partial_post_posts_what_is_named_and_releases_the_rest(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let hold = app.hold_ok(&wallet, &merchant, 600).await;
        app.clock.advance_secs(5);
        let reply = app.post(&format!("/v1/transactions/{hold}/post"), &json!({"entries": transfer_body(&wallet, &merchant, 250)["entries"]})).await;
        reply.expect_status(200);
        assert_eq!(reply.body["status"], "posted");
        assert_eq!(reply.body["id"], hold.as_str());
        assert_eq!(reply.body["posted_at"], app.now().to_rfc3339().as_str());
        let legs: Vec<(&str, i64, &str)> = reply.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["direction"].as_str().unwrap(), e["amount"].as_i64().unwrap(), e["status"].as_str().unwrap()))
            .collect();
        assert_eq!(legs, vec![("debit", 250, "posted"), ("credit", 250, "posted")], "a posted transaction shows its posted legs");
        let w = app.account_json(&wallet).await;
        assert_eq!(Balances::of(&w), Balances { posted: 750, pending: 750, available: 750 });
        assert_eq!(w["totals"], json!({"posted_debits": 250, "posted_credits": 1000, "pending_debits": 0, "pending_credits": 0}));
        assert_eq!(app.balances(&merchant).await, Balances { posted: 250, pending: 250, available: 250 });
    }
}

ledger_test! {
    async fn post_without_entries_posts_everything_held(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let hold = app.hold_ok(&wallet, &merchant, 600).await;
        let reply = app.post(&format!("/v1/transactions/{hold}/post"), &json!({})).await;
        reply.expect_status(200);
        assert_eq!(reply.body["status"], "posted");
        assert_eq!(app.balances(&wallet).await, Balances { posted: 400, pending: 400, available: 400 });
        assert_eq!(app.balances(&merchant).await, Balances { posted: 600, pending: 600, available: 600 });
        let empty_body = app.send(app.request(reqwest::Method::POST, &format!("/v1/transactions/{}/post", app.hold_ok(&wallet, &merchant, 100).await))).await;
        empty_body.expect_status(200);
        assert_eq!(app.balances(&wallet).await.posted, 300, "a POST with no body posts in full too");
    }
}

ledger_test! {
    async fn posting_more_than_was_held_is_refused_and_the_hold_stays(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let hold = app.hold_ok(&wallet, &merchant, 600).await;
        let path = format!("/v1/transactions/{hold}/post");
        let more = app.post(&path, &json!({"entries": transfer_body(&wallet, &merchant, 601)["entries"]})).await;
        more.expect_error(422, "amount_exceeds_hold");
        assert_eq!(more.param(), Some("entries"));
        let other_account = app.account("credit", None).await;
        let elsewhere = app.post(&path, &json!({"entries": transfer_body(&wallet, &other_account, 100)["entries"]})).await;
        elsewhere.expect_error(422, "amount_exceeds_hold");
        let swapped = app.post(&path, &json!({"entries": transfer_body(&merchant, &wallet, 100)["entries"]})).await;
        swapped.expect_error(422, "amount_exceeds_hold");
        let unbalanced = app.post(&path, &json!({"entries": [
            {"account_id": wallet, "direction": "debit", "amount": 300},
            {"account_id": merchant, "direction": "credit", "amount": 200},
        ]})).await;
        unbalanced.expect_error(422, "unbalanced_transaction");
        let one_entry = app.post(&path, &json!({"entries": [{"account_id": wallet, "direction": "debit", "amount": 300}]})).await;
        one_entry.expect_error(400, "invalid_request");
        let t = app.get(&format!("/v1/transactions/{hold}")).await;
        assert_eq!(t.body["status"], "pending");
        assert_eq!(app.balances(&wallet).await, Balances { posted: 1000, pending: 400, available: 400 });
        app.post(&path, &json!({"entries": transfer_body(&wallet, &merchant, 600)["entries"]})).await.expect_status(200);
    }
}

ledger_test! {
    async fn void_releases_the_whole_hold(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let hold = app.hold_ok(&wallet, &merchant, 600).await;
        app.clock.advance_secs(3);
        let reply = app.post(&format!("/v1/transactions/{hold}/void"), &json!({})).await;
        reply.expect_status(200);
        assert_eq!(reply.body["status"], "voided");
        assert_eq!(reply.body["void_reason"], "requested");
        assert_eq!(reply.body["voided_at"], app.now().to_rfc3339().as_str());
        let statuses: Vec<&str> = reply.body["entries"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["voided", "voided"]);
        let w = app.account_json(&wallet).await;
        assert_eq!(Balances::of(&w), Balances { posted: 1000, pending: 1000, available: 1000 });
        assert_eq!(w["totals"]["pending_debits"], 0);
        assert_eq!(app.balances(&merchant).await, Balances { posted: 0, pending: 0, available: 0 });
    }
}

ledger_test! {
    async fn a_hold_settles_once_void_after_post_and_post_after_void_are_not_pending(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let posted = app.hold_ok(&wallet, &merchant, 100).await;
        app.post(&format!("/v1/transactions/{posted}/post"), &json!({})).await.expect_status(200);
        let void_after_post = app.post(&format!("/v1/transactions/{posted}/void"), &json!({})).await;
        void_after_post.expect_error(409, "transaction_not_pending");
        assert_eq!(void_after_post.body["error"]["type"], "conflict_error");
        app.post(&format!("/v1/transactions/{posted}/post"), &json!({})).await.expect_error(409, "transaction_not_pending");

        let voided = app.hold_ok(&wallet, &merchant, 100).await;
        app.post(&format!("/v1/transactions/{voided}/void"), &json!({})).await.expect_status(200);
        app.post(&format!("/v1/transactions/{voided}/post"), &json!({})).await.expect_error(409, "transaction_not_pending");
        app.post(&format!("/v1/transactions/{voided}/void"), &json!({})).await.expect_error(409, "transaction_not_pending");

        let plain = app.transfer_ok(&wallet, &merchant, 1).await;
        app.post(&format!("/v1/transactions/{plain}/void"), &json!({})).await.expect_error(409, "transaction_not_pending");
        app.post(&format!("/v1/transactions/{plain}/post"), &json!({})).await.expect_error(409, "transaction_not_pending");
        assert_eq!(app.balances(&wallet).await, Balances { posted: 899, pending: 899, available: 899 });
    }
}

ledger_test! {
    async fn expired_hold_stops_counting_once_the_clock_passes_expires_at(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let expires_at = app.now().plus_secs(60);
        let mut body = transfer_body(&wallet, &merchant, 700);
        body["status"] = json!("pending");
        body["expires_at"] = json!(expires_at.to_rfc3339());
        let created = app.post("/v1/transactions", &body).await;
        created.expect_status(201);
        assert_eq!(created.body["expires_at"], expires_at.to_rfc3339().as_str());
        let hold = created.id();
        assert_eq!(app.balances(&wallet).await, Balances { posted: 1000, pending: 300, available: 300 });

        app.clock.advance_secs(59);
        assert_eq!(app.balances(&wallet).await.available, 300, "a second before expiry the hold still counts");
        app.transfer(&wallet, &merchant, 301).await.expect_error(422, "insufficient_funds");
        let version_before = app.version(&wallet).await;

        app.clock.advance_secs(1);
        // Reads never count an expired hold, whether or not the sweep has run.
        let w = app.account_json(&wallet).await;
        assert_eq!(Balances::of(&w), Balances { posted: 1000, pending: 1000, available: 1000 });
        assert_eq!(w["totals"]["pending_debits"], 0);
        assert_eq!(app.balances(&merchant).await, Balances { posted: 0, pending: 0, available: 0 });

        let path = format!("/v1/transactions/{hold}");
        let t = eventually("the hold to read voided", || {
            let api = app.api.clone();
            let path = path.clone();
            async move {
                let t = api.get(&path).await;
                (t.body["status"] == "voided").then_some(t.body)
            }
        })
        .await;
        assert_eq!(t["void_reason"], "expired");
        assert_eq!(t["voided_at"], expires_at.to_rfc3339().as_str(), "it stopped counting at its expiry");
        // The engine's sweep writes the void: the wallet's version moves once.
        eventually("the sweep to void the hold", || {
            let api = app.api.clone();
            let wallet = wallet.clone();
            async move { (api.version(&wallet).await > version_before).then_some(()) }
        })
        .await;
        assert_eq!(app.version(&wallet).await, version_before + 1);
        assert_eq!(app.balances(&wallet).await, Balances { posted: 1000, pending: 1000, available: 1000 });
        let listed = app.get(&format!("/v1/transactions?status=voided&account_id={wallet}")).await;
        assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));

        app.post(&format!("{path}/post"), &json!({})).await.expect_error(409, "transaction_not_pending");
        app.post(&format!("{path}/void"), &json!({})).await.expect_error(409, "transaction_not_pending");
        app.transfer_ok(&wallet, &merchant, 1000).await;
    }
}

ledger_test! {
    async fn an_expired_hold_cannot_be_posted_even_before_the_sweep_runs(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let mut body = transfer_body(&wallet, &merchant, 700);
        body["status"] = json!("pending");
        body["expires_at"] = json!(app.now().plus_secs(10).to_rfc3339());
        let hold = app.post("/v1/transactions", &body).await.id();
        app.clock.advance_secs(10);
        app.post(&format!("/v1/transactions/{hold}/post"), &json!({})).await.expect_error(409, "transaction_not_pending");
        assert_eq!(app.balances(&merchant).await.posted, 0);
    }
}

ledger_test! {
    async fn expires_at_must_be_in_the_future_and_only_on_holds(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let mut body = transfer_body(&wallet, &merchant, 10);
        body["status"] = json!("pending");
        body["expires_at"] = json!(app.now().to_rfc3339());
        let past = app.post("/v1/transactions", &body).await;
        past.expect_error(400, "invalid_request");
        assert_eq!(past.param(), Some("expires_at"));
        body["status"] = json!("posted");
        body["expires_at"] = json!(app.now().plus_secs(60).to_rfc3339());
        let on_posted = app.post("/v1/transactions", &body).await;
        on_posted.expect_error(400, "invalid_request");
        assert_eq!(on_posted.param(), Some("expires_at"));
        body["status"] = json!("voided");
        body.as_object_mut().unwrap().remove("expires_at");
        let voided = app.post("/v1/transactions", &body).await;
        voided.expect_error(400, "invalid_request");
        assert_eq!(voided.param(), Some("status"));
        assert_eq!(app.balances(&wallet).await, Balances { posted: 1000, pending: 1000, available: 1000 });
    }
}

ledger_test! {
    async fn a_keyed_hold_retried_after_it_expired_replays_its_first_answer(app) {
        let (wallet, merchant) = wallet_and_merchant(&app).await;
        let mut body = transfer_body(&wallet, &merchant, 10);
        body["status"] = json!("pending");
        body["expires_at"] = json!(app.now().plus_secs(60).to_rfc3339());
        let first = app.post_idempotent("/v1/transactions", "hold-1", &body).await;
        first.expect_status(201);
        app.clock.advance_secs(120);
        let retry = app.post_idempotent("/v1/transactions", "hold-1", &body).await;
        assert_eq!((retry.status, retry.header("idempotent-replayed")), (201, Some("true")), "{}", retry.body);
        assert_eq!(retry.bytes, first.bytes);
        assert_eq!(app.list_all("/v1/transactions").await.len(), 2, "the funding transfer and the one hold");
    }
}
