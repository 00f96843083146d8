//! Sandbox helpers under `/v1/test_helpers/…`: they work for sandbox keys,
//! move money with ordinary double-entry transactions, and do not exist for
//! anyone else.

use crate::app::{Api, ledger_test};
use reqwest::Method;
use serde_json::{Value, json};
use settle_core::tenancy::{Environment, Scope};

fn fund_path(account: &str) -> String {
    format!("/v1/test_helpers/accounts/{account}/fund")
}

/// The tenant's sandbox funding accounts, by currency.
async fn funding_accounts(api: &Api) -> Vec<Value> {
    api.list_all("/v1/accounts").await.into_iter().filter(|a| a["metadata"]["settle_sandbox"] == "funding").collect()
}

ledger_test! {
    async fn fund_raises_a_sandbox_account_from_the_tenants_funding_account(app) {
        let wallet = app.account("credit", Some(0)).await;
        let reply = app.post(&fund_path(&wallet), &json!({"amount": 5000})).await;
        reply.expect_status(201);
        assert_eq!(reply.body["object"], "transaction");
        assert_eq!(reply.body["status"], "posted");
        assert_eq!(reply.body["description"], "Sandbox funding");
        assert_eq!(app.balances(&wallet).await.posted, 5000);

        let funding = funding_accounts(&app).await;
        assert_eq!(funding.len(), 1, "{funding:?}");
        let source = &funding[0];
        assert_eq!(source["name"], "Sandbox funding (USD)");
        assert_eq!(source["external_id"], "settle_sandbox_funding_USD");
        assert_eq!(source["normal_balance"], "debit");
        assert_eq!(source["balances"]["posted"], 5000, "the ledger stays double-entry");
        let legs: Vec<(&str, &str)> = reply.body["entries"].as_array().unwrap().iter().map(|e| (e["account_id"].as_str().unwrap(), e["direction"].as_str().unwrap())).collect();
        assert_eq!(legs, vec![(source["id"].as_str().unwrap(), "debit"), (wallet.as_str(), "credit")]);

        // The same funding account serves later calls; a debit-normal account
        // is funded by a debit, so its balance rises too; another currency gets its own.
        let asset = app.account("debit", None).await;
        app.post(&fund_path(&asset), &json!({"amount": 70, "description": "Opening balance"})).await.expect_status(201);
        assert_eq!(app.balances(&asset).await.posted, 70);
        let euros = app.account_with(json!({"name": "EUR wallet", "currency": "EUR", "normal_balance": "credit"})).await;
        app.post(&fund_path(&euros), &json!({"amount": 9})).await.expect_status(201);
        assert_eq!(app.balances(&euros).await.posted, 9);
        let names: Vec<String> = funding_accounts(&app).await.iter().map(|a| a["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, vec!["Sandbox funding (EUR)".to_owned(), "Sandbox funding (USD)".to_owned()]);
        // Each tenant has its own funding accounts.
        let other = app.client_for("globex").await;
        let theirs = other.account("credit", None).await;
        other.post(&fund_path(&theirs), &json!({"amount": 1})).await.expect_status(201);
        assert_eq!(funding_accounts(&other).await.len(), 1);
        assert_eq!(funding_accounts(&app).await[1]["balances"]["posted"], 5000 - 70);
    }
}

ledger_test! {
    async fn fund_honours_idempotency_keys(app) {
        let wallet = app.account("credit", None).await;
        let first = app.post_idempotent(&fund_path(&wallet), "fund-1", &json!({"amount": 300})).await;
        first.expect_status(201);
        let again = app.post_idempotent(&fund_path(&wallet), "fund-1", &json!({"amount": 300})).await;
        again.expect_status(201);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.bytes, first.bytes);
        app.post_idempotent(&fund_path(&wallet), "fund-1", &json!({"amount": 301})).await.expect_error(422, "idempotency_key_reused");
        assert_eq!(app.balances(&wallet).await.posted, 300, "funded once");
    }
}

ledger_test! {
    async fn fund_refuses_bad_input_and_unknown_accounts(app) {
        let wallet = app.account("credit", None).await;
        for (body, param) in [(json!({"amount": 0}), "amount"), (json!({"amount": 1.5}), "amount"), (json!({"amount": 1, "extra": true}), "body"), (json!({"amount": 1, "description": ""}), "description")] {
            let reply = app.post(&fund_path(&wallet), &body).await;
            reply.expect_error(400, "invalid_request");
            if param != "body" {
                assert_eq!(reply.param(), Some(param), "{body}");
            }
        }
        app.post(&fund_path("acct_01arz3ndektsv4rrffq69g5fav"), &json!({"amount": 1})).await.expect_error(404, "not_found");
        app.post(&fund_path("nope"), &json!({"amount": 1})).await.expect_error(404, "not_found");
        let theirs = app.client_for("globex").await.account("credit", None).await;
        app.post(&fund_path(&theirs), &json!({"amount": 1})).await.expect_error(404, "not_found");
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead]).await));
        reader.post(&fund_path(&wallet), &json!({"amount": 1})).await.expect_error(403, "insufficient_scope");
        app.get(&fund_path(&wallet)).await.expect_error(405, "method_not_allowed");
        assert_eq!(app.balances(&wallet).await.posted, 0);
        assert!(funding_accounts(&app).await.is_empty(), "refusals open nothing");
    }
}

ledger_test! {
    async fn test_helpers_do_not_exist_for_live_keys(app) {
        let live = app.api.with_key(Some(&app.key("acme", Environment::Live, &Scope::ALL).await));
        let live_account = live.account("credit", None).await;
        let unknown = live.post("/v1/no_such_thing", &json!({"amount": 1})).await;
        unknown.expect_error(404, "not_found");
        for api in [live.clone(), app.api.with_key(None), app.api.with_key(Some("sk_sandbox_notakey"))] {
            for method in [Method::POST, Method::GET, Method::DELETE] {
                let reply = api.send(api.request(method.clone(), &fund_path(&live_account)).json(&json!({"amount": 1}))).await;
                reply.expect_error(404, "not_found");
                assert_eq!(reply.error_without_request_id(), unknown.error_without_request_id(), "{method} answers like an unknown path");
            }
        }
        assert_eq!(live.balances(&live_account).await.posted, 0);
        assert!(funding_accounts(&live).await.is_empty());
    }
}

ledger_test! {
    async fn fund_can_run_as_an_operation(app) {
        let wallet = app.account("credit", None).await;
        let reply = app.send(app.request(Method::POST, &fund_path(&wallet)).header("Prefer", "respond-async").json(&json!({"amount": 42}))).await;
        reply.expect_status(202);
        assert_eq!(reply.body["kind"], "test_helpers.accounts.fund");
        let id = reply.id();
        let op = crate::operations::finished(&app, &id).await;
        assert_eq!((op["status"].as_str(), op["result"]["status"].as_u64()), (Some("succeeded"), Some(201)), "{op}");
        assert_eq!(app.balances(&wallet).await.posted, 42);
    }
}
