//! The compliance rules the engine and the reviewers enforce: a blocked
//! customer's money stops at write time on every server (the engine checks,
//! not a cache in front of it); reviewers decide KYC in live and sandbox;
//! `GET /v1/audit_events` lists the compliance and the ledger trails under
//! one cursor.

use crate::app::{TestApp, eventually, ledger_test, transfer_body};
use crate::customers::load_watchlist;
use serde_json::{Value, json};
use settle_core::tenancy::{Environment, Scope};

fn codes(body: &Value) -> Vec<(u64, String)> {
    body["results"].as_array().unwrap().iter().map(|r| (r["status"].as_u64().unwrap(), r["error"]["code"].as_str().unwrap_or("").to_owned())).collect()
}

async fn screening_of(app: &TestApp, customer: &str) -> String {
    app.get(&format!("/v1/screenings?customer_id={customer}")).await.body["data"][0]["id"].as_str().unwrap().to_owned()
}

ledger_test! {
    async fn a_block_decided_on_one_server_stops_money_on_another_at_once_and_clearing_it_lets_money_move(app) {
        let wallet = app.account("credit", None).await;
        let other = app.account("credit", None).await;
        let funding = app.account("debit", None).await;
        app.transfer_ok(&funding, &wallet, 5000).await;
        let capture = app.hold_ok(&wallet, &other, 1000).await;
        let release = app.hold_ok(&wallet, &other, 500).await;
        let received = app.transfer_ok(&funding, &wallet, 300).await;
        let id = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await.id();
        app.post(&format!("/v1/customers/{id}/accounts"), &json!({"account_id": wallet})).await.expect_status(201);

        // Server B has moved this wallet's money already (its engine has the
        // accounts in memory); the block is then decided on server A only.
        let (b, _server) = app.another_server().await;
        b.transfer(&funding, &wallet, 10).await.expect_status(201);
        load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961))]).await;
        settle_api::customers::screening::refresh(&app.state).await.unwrap();

        let before = b.balances(&wallet).await;
        let refused = b.transfer(&funding, &wallet, 100).await;
        refused.expect_error(422, "customer_blocked");
        assert_eq!(refused.param(), Some("entries"));
        b.transfer(&wallet, &other, 100).await.expect_error(422, "customer_blocked");
        b.post(&format!("/v1/transactions/{capture}/post"), &json!({})).await.expect_error(422, "customer_blocked");
        b.post(&format!("/v1/transactions/{received}/reverse"), &json!({})).await.expect_error(422, "customer_blocked");
        // An atomic batch with one blocked item applies nothing; a plain one applies the rest.
        let items = json!([transfer_body(&funding, &other, 1), transfer_body(&wallet, &other, 1)]);
        let atomic = b.post("/v1/transactions/batch", &json!({"atomic": true, "transactions": items})).await;
        assert_eq!(codes(&atomic.body), vec![(409, "batch_aborted".to_owned()), (422, "customer_blocked".to_owned())]);
        let plain = b.post("/v1/transactions/batch", &json!({"atomic": false, "transactions": items})).await;
        assert_eq!(codes(&plain.body), vec![(201, String::new()), (422, "customer_blocked".to_owned())]);
        assert_eq!(b.balances(&wallet).await, before, "refusals change nothing");
        // Voiding a hold moves nothing: the amount stays in the frozen wallet.
        b.post(&format!("/v1/transactions/{release}/void"), &json!({})).await.expect_status(200);
        let after_void = b.balances(&wallet).await;
        assert_eq!((after_void.posted, after_void.available), (before.posted, before.available + 500));
        b.transfer(&wallet, &other, 1).await.expect_error(422, "customer_blocked");

        // Cleared as a false positive on A: B moves the money at once.
        let screening = screening_of(&app, &id).await;
        app.post(&format!("/v1/screenings/{screening}/resolve"), &json!({"resolution": "false_positive", "reason": "different date of birth on the passport"}))
            .await
            .expect_status(200);
        b.transfer(&funding, &wallet, 100).await.expect_status(201);
        b.post(&format!("/v1/transactions/{capture}/post"), &json!({})).await.expect_status(200);
    }
}

ledger_test! {
    async fn an_account_linked_to_an_already_blocked_customer_is_blocked_from_its_first_transaction(app) {
        let funding = app.account("debit", None).await;
        let id = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await.id();
        load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961))]).await;
        settle_api::customers::screening::refresh(&app.state).await.unwrap();
        // Opened for the blocked customer by the engine itself, and linked afterwards.
        let opened = app.account_with(json!({"name": "Ivan wallet", "currency": "USD", "normal_balance": "credit", "customer_id": id})).await;
        app.transfer(&funding, &opened, 100).await.expect_error(422, "customer_blocked");
        let linked = app.account("credit", None).await;
        app.transfer_ok(&funding, &linked, 100).await;
        app.post(&format!("/v1/customers/{id}/accounts"), &json!({"account_id": linked})).await.expect_status(201);
        app.transfer(&funding, &linked, 100).await.expect_error(422, "customer_blocked");
        assert_eq!(app.balances(&opened).await.posted, 0);
        assert_eq!(app.balances(&linked).await.posted, 100);
    }
}

ledger_test! {
    async fn a_reviewer_decides_a_live_verification_with_the_review_scope_and_every_decision_is_recorded(app) {
        let writer = app.api.with_key(Some(&app.key("acme", Environment::Live, &[Scope::CustomersRead, Scope::CustomersWrite, Scope::CustomersPiiRead]).await));
        let reviewer_key = app.key("acme", Environment::Live, &[Scope::CustomersRead, Scope::CustomersReview]).await;
        let reviewer = app.api.with_key(Some(&reviewer_key));
        let auditor = app.api.with_key(Some(&app.key("acme", Environment::Live, &[Scope::AuditRead]).await));
        let body = json!({"type": "individual", "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10",
            "address": {"line1": "1 Main St", "city": "Springfield", "region": "IL", "postal_code": "62701", "country": "US"},
            "tax_id": {"type": "us_ssn", "value": "219-54-8832"}});
        let id = writer.post("/v1/customers", &body).await.id();
        let path = format!("/v1/customers/{id}/kyc_decisions");
        // Nothing is pending yet: no decision can be taken.
        reviewer.post(&path, &json!({"outcome": "verified", "reason": "documents checked"})).await.expect_error(409, "invalid_kyc_transition");
        let submitted = writer.post(&format!("/v1/customers/{id}/verify"), &json!({})).await;
        assert_eq!(submitted.body["kyc"]["status"], "pending", "live has no magic values: it waits for a reviewer");

        // The key that wrote the customer cannot approve it; bad decisions change nothing.
        writer.post(&path, &json!({"outcome": "verified", "reason": "self-approval"})).await.expect_error(403, "insufficient_scope");
        reviewer.post(&path, &json!({"outcome": "approved", "reason": "x"})).await.expect_error(400, "invalid_request");
        reviewer.post(&path, &json!({"outcome": "verified", "reason": " "})).await.expect_error(400, "invalid_request");
        let wrong = reviewer.post(&path, &json!({"outcome": "verified", "reason": "ok", "requirements": ["tax_id"]})).await;
        assert_eq!((wrong.status, wrong.param()), (400, Some("requirements")));
        let unknown = reviewer.post(&path, &json!({"outcome": "needs_more_info", "reason": "ok", "requirements": ["favourite_colour"]})).await;
        assert_eq!((unknown.status, unknown.param()), (400, Some("requirements")));
        assert_eq!(reviewer.get(&format!("/v1/customers/{id}")).await.body["kyc"]["status"], "pending");

        // More information, then verified after a resubmission.
        let asked = reviewer.post(&path, &json!({"outcome": "needs_more_info", "reason": "the SSN does not match the name", "requirements": ["tax_id"]})).await;
        asked.expect_status(200);
        assert_eq!(asked.body["kyc"]["status"], "needs_more_info");
        assert_eq!(asked.body["kyc"]["requirements"]["errors"][0]["field"], "tax_id");
        assert!(asked.body["kyc"]["requirements"]["currently_due"].as_array().unwrap().contains(&json!("tax_id")));
        reviewer.post(&path, &json!({"outcome": "verified", "reason": "again"})).await.expect_error(409, "invalid_kyc_transition");
        // The field asked for is due until the customer changes it; then it can be resubmitted.
        writer.post(&format!("/v1/customers/{id}/verify"), &json!({})).await.expect_error(422, "verification_requirements_due");
        crate::customers::patch(&writer, &format!("/v1/customers/{id}"), &json!({"tax_id": {"type": "us_ssn", "value": "219-54-8833"}})).await.expect_status(200);
        writer.post(&format!("/v1/customers/{id}/verify"), &json!({})).await.expect_status(200);
        let replayed = reviewer.post_idempotent(&path, "decision-1", &json!({"outcome": "verified", "reason": "SSN verified with the issuer"})).await;
        replayed.expect_status(200);
        assert_eq!(replayed.body["kyc"]["status"], "verified");
        let again = reviewer.post_idempotent(&path, "decision-1", &json!({"outcome": "verified", "reason": "SSN verified with the issuer"})).await;
        assert_eq!((again.status, again.header("idempotent-replayed")), (200, Some("true")));

        // The history and the audit name the reviewer's key and the reason.
        let history = reviewer.get(&format!("/v1/customers/{id}/kyc_events")).await.body["data"].as_array().unwrap().clone();
        let decisions: Vec<(&str, &str, &str)> = history
            .iter()
            .filter(|e| e["decided_by"] == "operator")
            .map(|e| (e["to_status"].as_str().unwrap(), e["reason"].as_str().unwrap(), e["actor"].as_str().unwrap()))
            .collect();
        let reviewer_id = app.store.find_api_key(settle_api::auth::hash_secret(&reviewer_key)).await.unwrap().unwrap().id.to_string();
        assert_eq!(
            decisions,
            vec![("needs_more_info", "the SSN does not match the name", reviewer_id.as_str()), ("verified", "SSN verified with the issuer", reviewer_id.as_str())]
        );
        let audit = auditor.get(&format!("/v1/audit_events?resource_id={id}&action=customer.kyc_decided")).await;
        let reasons: Vec<(&str, &str)> = audit.body["data"].as_array().unwrap().iter().map(|a| (a["reason"].as_str().unwrap(), a["actor"].as_str().unwrap())).collect();
        assert_eq!(reasons, vec![("SSN verified with the issuer", reviewer_id.as_str()), ("the SSN does not match the name", reviewer_id.as_str())]);
        // Another environment's customer is not found.
        app.post(&path, &json!({"outcome": "verified", "reason": "x"})).await.expect_error(404, "not_found");
    }
}

ledger_test! {
    async fn a_batch_whose_log_record_is_stored_packed_reads_as_json_to_the_audit_trail_the_events_and_verify(app) {
        let key_id = app.store.find_api_key(settle_api::auth::hash_secret(app.api.key.as_deref().unwrap())).await.unwrap().unwrap().id.to_string();
        let wallet = app.account("credit", None).await;
        let funding = app.account("debit", None).await;
        let items: Vec<Value> = (0..40).map(|i| transfer_body(&funding, &wallet, 100 + i)).collect();
        let reply = app.post("/v1/transactions/batch", &json!({"atomic": true, "transactions": items})).await;
        reply.expect_status(200);
        let created: std::collections::BTreeSet<String> =
            reply.body["results"].as_array().unwrap().iter().map(|r| r["transaction"]["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(created.len(), 40);

        // The batch's record is past the packing threshold and reads as its JSON.
        let records = app.store.log_records(0, 100).await.unwrap();
        let batch = records.iter().find(|r| r.content.len() >= settle_store::log_content::PACK_FROM).expect("the batch's record");
        let fragments: Vec<Value> = serde_json::from_slice(&batch.content).unwrap();
        assert_eq!(fragments.iter().filter(|f| f["op"] == "transaction_created").count(), 40);
        if let settle_store::Store::Sqlite(store) = &app.store {
            let stored: Vec<u8> =
                store.read_blocking(|c| Ok(c.query_row("SELECT content FROM ledger_log WHERE seq = ?1", [batch.seq], |r| r.get(0))?)).unwrap();
            assert!(settle_store::log_content::is_packed(&stored), "SQLite stores it packed");
            assert!(stored.len() * 3 < batch.content.len(), "{} bytes stored for {}", stored.len(), batch.content.len());
        }

        // The audit trail, filtered by actor in SQL that looks inside the record.
        let audited = eventually("the batch's audit records", || {
            let api = app.api.clone();
            let path = format!("/v1/audit_events?trail=ledger&resource_type=transaction&actor={key_id}");
            async move {
                let listed = api.list_all(&path).await;
                (listed.len() == 40).then_some(listed)
            }
        })
        .await;
        let audited: std::collections::BTreeSet<String> = audited.iter().map(|a| a["resource_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(audited, created);
        assert_eq!(app.list_all("/v1/audit_events?trail=ledger&resource_type=transaction&actor=system").await.len(), 0);
        // The events, projected from the record.
        let events = app.list_all("/v1/events?type=ledger.transaction.created").await;
        let evented: std::collections::BTreeSet<String> = events.iter().map(|e| e["data"]["object"]["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(evented, created);
        // The chain verifies: it hashes the JSON, not the stored form.
        let report = settle_store::audit::verify(&app.store).await.unwrap().expect("the log verifies");
        assert_eq!(report.log_records, i64::try_from(records.len()).unwrap());
    }
}

ledger_test! {
    async fn audit_events_list_ledger_changes_with_their_actor_and_request_beside_compliance_records_under_one_cursor(app) {
        let key_id = app.store.find_api_key(settle_api::auth::hash_secret(app.api.key.as_deref().unwrap())).await.unwrap().unwrap().id.to_string();
        let start = app.now();
        let wallet = app.account("credit", None).await;
        let funding = app.account("debit", None).await;
        let moved = app.transfer(&funding, &wallet, 500).await;
        let transfer = moved.id();
        let request_id = moved.header("request-id").unwrap().to_owned();
        let hold = app.hold_ok(&wallet, &funding, 100).await;
        app.post(&format!("/v1/transactions/{hold}/post"), &json!({})).await.expect_status(200);
        let voided = app.hold_ok(&wallet, &funding, 50).await;
        app.post(&format!("/v1/transactions/{voided}/void"), &json!({})).await.expect_status(200);
        let customer = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Grace", "family_name": "Hopper"})).await.id();

        // Ledger events are projected after the commit: wait until all 7 changes are listed.
        let ledger = eventually("the ledger audit records", || {
            let api = app.api.clone();
            async move {
                let page = api.get("/v1/audit_events?trail=ledger&limit=100").await;
                (page.body["data"].as_array().map_or(0, Vec::len) == 7).then_some(page.body["data"].as_array().unwrap().clone())
            }
        })
        .await;
        let actions: Vec<&str> = ledger.iter().map(|a| a["action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            vec!["transaction.voided", "transaction.created", "transaction.posted", "transaction.created", "transaction.created", "account.created", "account.created"]
        );
        let created = ledger.iter().find(|a| a["resource_id"] == transfer.as_str()).unwrap();
        assert_eq!(
            (created["trail"].as_str(), created["actor"].as_str(), created["resource_type"].as_str(), created["request_id"].as_str()),
            (Some("ledger"), Some(key_id.as_str()), Some("transaction"), Some(request_id.as_str()))
        );
        assert!(created["client_ip"].as_str().is_some_and(|ip| !ip.is_empty()) && created["sequence"].as_i64().unwrap() > 0, "{created}");
        assert_eq!(created["hash"].as_str().map(str::len), Some(64));

        // Filters: resource, action, actor, time; both trails merge newest first.
        let of_hold = app.get(&format!("/v1/audit_events?resource_id={hold}")).await;
        let hold_actions: Vec<&str> = of_hold.body["data"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
        assert_eq!(hold_actions, vec!["transaction.posted", "transaction.created"]);
        assert_eq!(app.get("/v1/audit_events?action=account.created").await.body["data"].as_array().unwrap().len(), 2);
        assert_eq!(app.get("/v1/audit_events?resource_type=transaction&trail=ledger").await.body["data"].as_array().unwrap().len(), 5);
        assert_eq!(app.get("/v1/audit_events?actor=key_01jdx3q5g3n3n5v8y2w4h6k9m1").await.body["data"], json!([]));
        let by_key = app.list_all(&format!("/v1/audit_events?actor={key_id}")).await;
        assert_eq!(by_key.len(), 8, "seven ledger changes and the customer's creation");
        assert_eq!((by_key[0]["trail"].as_str(), by_key[0]["action"].as_str()), (Some("compliance"), Some("customer.created")));
        assert_eq!(by_key[0]["resource_id"], customer.as_str());
        let future = settle_core::clock::Timestamp::from_micros(app.now().micros() + 3_600_000_000).to_rfc3339();
        assert_eq!(app.get(&format!("/v1/audit_events?created[gte]={future}")).await.body["data"], json!([]));
        assert_eq!(app.list_all(&format!("/v1/audit_events?created[gte]={}", start.to_rfc3339())).await.len(), 8);
        app.get("/v1/audit_events?trail=everything").await.expect_error(400, "invalid_request");
        app.get("/v1/audit_events?created[lt]=yesterday").await.expect_error(400, "invalid_request");

        // One page at a time, forwards then backwards, across both trails.
        let all = app.get("/v1/audit_events?limit=100").await.body["data"].as_array().unwrap().clone();
        assert_eq!(all.len(), 8);
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/audit_events?limit=3&starting_after={c}"),
                None => String::from("/v1/audit_events?limit=3"),
            };
            let page = app.get(&path).await;
            let items = page.body["data"].as_array().unwrap().clone();
            cursor = items.last().map(|i| i["id"].as_str().unwrap().to_owned());
            walked.extend(items);
            if page.body["has_more"] != true {
                break;
            }
        }
        assert_eq!(walked, all);
        let back = app.get(&format!("/v1/audit_events?limit=3&ending_before={}", all[4]["id"].as_str().unwrap())).await;
        assert_eq!(back.body["data"].as_array().unwrap().as_slice(), &all[1..4]);
        assert_eq!(back.body["has_more"], true);
        // Only with the audit scope.
        let ledger_only = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead, Scope::LedgerWrite]).await));
        ledger_only.get("/v1/audit_events").await.expect_error(403, "insufficient_scope");
    }
}
