//! Tenancy and keys: every resource belongs to one organization and one
//! environment, and another tenant's id answers exactly as a missing one.

use crate::app::{ledger_test, transfer_body};
use serde_json::json;
use settle_core::tenancy::{Environment, Scope};

ledger_test! {
    async fn another_organizations_ids_answer_like_missing_ones(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let tx = app.transfer_ok(&source, &wallet, 500).await;
        let other = app.client_for("globex").await;
        let missing_account = "acct_01kaaaaaaaaaaaaaaaaaaaaaaa";
        let missing_tx = "ltx_01kaaaaaaaaaaaaaaaaaaaaaaa";

        for (theirs, missing) in [
            (format!("/v1/accounts/{wallet}"), format!("/v1/accounts/{missing_account}")),
            (format!("/v1/accounts/{wallet}/entries"), format!("/v1/accounts/{missing_account}/entries")),
            (format!("/v1/accounts/{wallet}/balances"), format!("/v1/accounts/{missing_account}/balances")),
            (format!("/v1/transactions/{tx}"), format!("/v1/transactions/{missing_tx}")),
        ] {
            let seen = other.get(&theirs).await;
            seen.expect_error(404, "not_found");
            let absent = other.get(&missing).await;
            absent.expect_error(404, "not_found");
            assert_eq!(seen.error_without_request_id(), absent.error_without_request_id(), "{theirs} must look missing");
        }
        other.post(&format!("/v1/transactions/{tx}/void"), &json!({})).await.expect_error(404, "not_found");
        other.post(&format!("/v1/transactions/{tx}/reverse"), &json!({})).await.expect_error(404, "not_found");

        // Moving money out of another tenant's account names it as missing and changes nothing.
        let mine = other.account("credit", None).await;
        let reply = other.post("/v1/transactions", &transfer_body(&wallet, &mine, 100)).await;
        reply.expect_error(422, "account_not_found");
        assert_eq!(app.balances(&wallet).await.posted, 500);
        assert!(other.list_all("/v1/accounts").await.iter().all(|a| a["id"] == mine.as_str()), "lists show only the caller's accounts");
        assert!(other.list_all("/v1/transactions").await.is_empty());
    }
}

ledger_test! {
    async fn sandbox_and_live_of_one_organization_are_separate(app) {
        let wallet = app.account("credit", None).await;
        let live_key = app.key("acme", Environment::Live, &Scope::ALL).await;
        let live = app.api.with_key(Some(&live_key));
        live.get(&format!("/v1/accounts/{wallet}")).await.expect_error(404, "not_found");
        assert!(live.list_all("/v1/accounts").await.is_empty());
    }
}

ledger_test! {
    async fn missing_unknown_and_malformed_keys_are_refused(app) {
        app.api.with_key(None).get("/v1/accounts").await.expect_error(401, "invalid_api_key");
        app.api.with_key(Some("sk_sandbox_nope")).get("/v1/accounts").await.expect_error(401, "invalid_api_key");
        let anonymous = app.api.with_key(None);
        let reply = anonymous.send(anonymous.request(reqwest::Method::GET, "/v1/accounts").header("Authorization", "Basic Zm9vOmJhcg==")).await;
        reply.expect_error(401, "invalid_api_key");
    }
}

ledger_test! {
    async fn a_key_without_the_scope_is_forbidden_and_changes_nothing(app) {
        let read_key = app.key("acme", Environment::Sandbox, &[Scope::LedgerRead]).await;
        let reader = app.api.with_key(Some(&read_key));
        reader.post("/v1/accounts", &json!({"name": "x", "currency": "USD", "normal_balance": "debit"})).await.expect_error(403, "insufficient_scope");
        assert!(app.list_all("/v1/accounts").await.is_empty());
        reader.get("/v1/accounts").await.expect_status(200);
        // The scope is checked before the body: a bad body changes nothing about the answer.
        reader.post_raw("/v1/transactions", b"{not json".to_vec()).await.expect_error(403, "insufficient_scope");
        reader.post("/v1/transactions/ltx_01kaaaaaaaaaaaaaaaaaaaaaaa/void", &json!({"unknown": 1})).await.expect_error(403, "insufficient_scope");

        let write_key = app.key("acme", Environment::Sandbox, &[Scope::LedgerWrite]).await;
        let writer = app.api.with_key(Some(&write_key));
        writer.get("/v1/accounts").await.expect_error(403, "insufficient_scope");

        // Outside the ledger too: the body of a key without the scope is never read.
        for path in [
            "/v1/customers",
            "/v1/customers/cus_01kaaaaaaaaaaaaaaaaaaaaaaa/kyc_decisions",
            "/v1/webhook_endpoints",
            "/v1/events/evt_01kaaaaaaaaaaaaaaaaaaaaaaa/redeliver",
            "/v1/reconciliation/statements",
            "/v1/counterparties",
            "/v1/payments",
            "/v1/screenings/scr_01kaaaaaaaaaaaaaaaaaaaaaaa/resolve",
        ] {
            let reply = reader.post_raw(path, b"{not json".to_vec()).await;
            reply.expect_error(403, "insufficient_scope");
        }
    }
}
