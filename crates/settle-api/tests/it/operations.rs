//! Long-running work: `202 Accepted`, `/v1/operations`, the worker, and
//! operations that survive a restart or a crash without applying anything twice.

use crate::app::{Api, Reply, TestOptions, eventually, ledger_test, transfer_body};
use reqwest::Method;
use serde_json::{Value, json};
use settle_api::AppState;
use settle_api::operations::OperationsConfig;
use settle_api::operations::worker::{apply_chunk, plan, spawn};
use settle_core::clock::Clock;
use settle_core::ids::IdGenerator;
use settle_core::tenancy::{Environment, Scope};
use settle_store::engine::EngineConfig;
use std::sync::Arc;

/// Small numbers, so a test batch spans several chunks.
fn small(worker: bool) -> TestOptions {
    let defaults = TestOptions::default();
    TestOptions { worker, operations: OperationsConfig { async_batch_threshold: 3, chunk_items: 2, ..defaults.operations }, ..defaults }
}

fn batch(atomic: bool, items: Vec<Value>) -> Value {
    json!({"atomic": atomic, "transactions": items})
}

/// POST with `Prefer: respond-async`.
fn post_async(api: &Api, path: &str, body: &Value) -> impl Future<Output = Reply> + Send + 'static {
    api.send(api.request(Method::POST, path).header("Prefer", "respond-async").json(body))
}

/// Checks a `202`: its `Location` names the operation in its body; returns the operation id.
#[track_caller]
fn accepted(reply: &Reply) -> String {
    reply.expect_status(202);
    assert_eq!(reply.body["object"], "operation", "{}", reply.body);
    let id = reply.id();
    assert!(id.starts_with("op_"), "{id}");
    assert_eq!(reply.header("location"), Some(format!("/v1/operations/{id}").as_str()));
    id
}

/// Polls the operation until it has finished, and returns it.
pub async fn finished(api: &Api, id: &str) -> Value {
    let path = format!("/v1/operations/{id}");
    eventually(&format!("operation {id} to finish"), || {
        let reply = api.get(&path);
        async move {
            let reply = reply.await;
            reply.expect_status(200);
            matches!(reply.body["status"].as_str(), Some("succeeded" | "failed")).then_some(reply.body)
        }
    })
    .await
}

fn result_items(op: &Value) -> Vec<(u64, u64, String)> {
    op["result"]["body"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {op}"))
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["status"].as_u64().unwrap(), r["error"]["code"].as_str().unwrap_or("").to_owned()))
        .collect()
}

ledger_test! {
    async fn batch_over_the_threshold_answers_202_and_polls_to_the_batch_result(app) {
        let mut app = app;
        app.restart(small(true)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", None).await;
        let reply = app
            .post("/v1/transactions/batch", &batch(false, vec![
                transfer_body(&source, &wallet, 100),
                transfer_body(&source, &wallet, 100),
                transfer_body(&wallet, &merchant, 500),
                transfer_body(&wallet, &merchant, 150),
                transfer_body(&source, &merchant, 1),
            ]))
            .await;
        let id = accepted(&reply);
        assert_eq!(reply.header("preference-applied"), None, "nothing was preferred");
        assert_eq!(reply.body["status"], "pending");
        assert_eq!(reply.body["kind"], "transactions.batch");
        assert_eq!(reply.body["progress"], json!({"completed": 0, "total": 5}));
        assert_eq!(reply.body["request"], json!({"method": "POST", "path": "/v1/transactions/batch"}));
        assert!(reply.body["result"].is_null() && reply.body["error"].is_null());

        let op = finished(&app, &id).await;
        assert_eq!(op["status"], "succeeded", "{op}");
        assert_eq!(op["progress"], json!({"completed": 5, "total": 5}));
        assert!(op["error"].is_null() && op["finished_at"].is_string());
        assert_eq!(op["result"]["status"], 200);
        let body = &op["result"]["body"];
        assert_eq!((body["object"].as_str(), body["succeeded"].as_u64(), body["failed"].as_u64()), (Some("batch_result"), Some(4), Some(1)));
        // Three chunks (2 + 2 + 1), one result per item, indexes across chunks, in request order.
        assert_eq!(
            result_items(&op),
            vec![(0, 201, String::new()), (1, 201, String::new()), (2, 422, "insufficient_funds".to_owned()), (3, 201, String::new()), (4, 201, String::new())]
        );
        for r in body["results"].as_array().unwrap().iter().filter(|r| r["status"] == 201) {
            app.get(&format!("/v1/transactions/{}", r["transaction"]["id"].as_str().unwrap())).await.expect_status(200);
        }
        // Every item applied exactly once.
        assert_eq!(app.balances(&wallet).await.posted, 50);
        assert_eq!(app.balances(&merchant).await.posted, 151);
        assert_eq!(app.list_all("/v1/transactions").await.len(), 4);
    }
}

ledger_test! {
    async fn the_default_threshold_keeps_batches_of_1000_synchronous(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let items = |n: usize| (0..n).map(|_| transfer_body(&source, &wallet, 1)).collect::<Vec<_>>();
        // settle bench sends batches of up to 1000 and needs 200s.
        let reply = app.post("/v1/transactions/batch", &batch(false, items(1000))).await;
        reply.expect_status(200);
        assert_eq!(reply.body["succeeded"], 1000);
        let reply = app.post("/v1/transactions/batch", &batch(false, items(1001))).await;
        let id = accepted(&reply);
        assert_eq!(reply.body["progress"]["total"], 1001);
        let op = finished(&app, &id).await;
        assert_eq!((op["status"].as_str(), op["result"]["body"]["succeeded"].as_u64()), (Some("succeeded"), Some(1001)), "{}", op["status"]);
        assert_eq!(result_items(&op).last().map(|r| r.0), Some(1000));
        assert_eq!(app.balances(&wallet).await.posted, 2001);
        // Even as an operation a batch is bounded.
        let reply = app.post("/v1/transactions/batch", &batch(false, items(10_001))).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("transactions"));
        assert_eq!(app.list_all("/v1/operations").await.len(), 1);
    }
}

ledger_test! {
    async fn prefer_respond_async_turns_any_post_into_an_operation(app) {
        let reply = post_async(&app, "/v1/accounts", &json!({"name": "Funding", "currency": "USD", "normal_balance": "debit"})).await;
        let id = accepted(&reply);
        assert_eq!(reply.header("preference-applied"), Some("respond-async"));
        assert_eq!(reply.body["kind"], "accounts.create");
        let op = finished(&app, &id).await;
        assert_eq!((op["status"].as_str(), op["result"]["status"].as_u64()), (Some("succeeded"), Some(201)), "{op}");
        assert_eq!(op["result"]["body"]["object"], "account");
        let source = op["result"]["body"]["id"].as_str().unwrap().to_owned();
        app.get(&format!("/v1/accounts/{source}")).await.expect_status(200);

        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", None).await;
        let op = finished(&app, &accepted(&post_async(&app, "/v1/transactions", &transfer_body(&source, &wallet, 700)).await)).await;
        assert_eq!((op["kind"].as_str(), op["result"]["status"].as_u64()), (Some("transactions.create"), Some(201)), "{op}");
        assert_eq!(app.balances(&wallet).await.posted, 700);

        // A hold, then its capture and the reversal of the capture, each as an operation.
        let hold = app.hold_ok(&wallet, &merchant, 300).await;
        let op = finished(&app, &accepted(&post_async(&app, &format!("/v1/transactions/{hold}/post"), &json!({})).await)).await;
        assert_eq!((op["kind"].as_str(), op["result"]["status"].as_u64()), (Some("transactions.post"), Some(200)), "{op}");
        assert_eq!(op["result"]["body"]["status"], "posted");
        let op = finished(&app, &accepted(&post_async(&app, &format!("/v1/transactions/{hold}/reverse"), &json!({})).await)).await;
        assert_eq!((op["kind"].as_str(), op["result"]["status"].as_u64()), (Some("transactions.reverse"), Some(201)), "{op}");
        let other = app.hold_ok(&wallet, &merchant, 10).await;
        let op = finished(&app, &accepted(&post_async(&app, &format!("/v1/transactions/{other}/void"), &json!({})).await)).await;
        assert_eq!(op["result"]["body"]["status"], "voided", "{op}");
        assert_eq!(app.balances(&wallet).await.posted, 700);
        assert_eq!(app.balances(&merchant).await.posted, 0);
        // A small batch too, with Prefer, under the threshold.
        let reply = app.send(app.request(Method::POST, "/v1/transactions/batch").header("Prefer", "wait=5, respond-async").json(&batch(true, vec![transfer_body(&source, &wallet, 1)]))).await;
        assert_eq!(finished(&app, &accepted(&reply)).await["result"]["body"]["succeeded"], 1);
        // GET ignores the preference.
        app.send(app.request(Method::GET, "/v1/accounts").header("Prefer", "respond-async")).await.expect_status(200);
    }
}

ledger_test! {
    async fn an_operation_fails_with_the_error_the_request_would_have_answered(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 100).await;
        let reply = post_async(&app, "/v1/transactions", &transfer_body(&wallet, &source, 101)).await;
        let first_request = reply.header("request-id").unwrap().to_owned();
        let op = finished(&app, &accepted(&reply)).await;
        assert_eq!(op["status"], "failed", "{op}");
        assert!(op["result"].is_null());
        assert_eq!(op["error"]["code"], "insufficient_funds");
        assert_eq!(op["error"]["type"], "ledger_error");
        assert_eq!(op["error"]["request_id"], first_request.as_str(), "the error names the request that created the operation");
        assert_eq!(app.balances(&wallet).await.posted, 100);
    }
}

ledger_test! {
    async fn an_atomic_batch_operation_applies_all_or_none(app) {
        let mut app = app;
        app.restart(small(true)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let failing = batch(true, vec![
            transfer_body(&source, &wallet, 10),
            transfer_body(&source, &wallet, 10),
            transfer_body(&wallet, &source, 1000),
            transfer_body(&source, &wallet, 10),
        ]);
        let op = finished(&app, &accepted(&app.post("/v1/transactions/batch", &failing).await)).await;
        assert_eq!((op["status"].as_str(), op["result"]["status"].as_u64()), (Some("succeeded"), Some(200)), "same answer as a synchronous batch: {op}");
        assert_eq!(op["result"]["body"]["succeeded"], 0);
        assert_eq!(
            result_items(&op),
            vec![
                (0, 409, "batch_aborted".to_owned()),
                (1, 409, "batch_aborted".to_owned()),
                (2, 422, "insufficient_funds".to_owned()),
                (3, 409, "batch_aborted".to_owned())
            ]
        );
        assert_eq!(app.balances(&wallet).await.posted, 0);
        let passing = batch(true, (0..4).map(|_| transfer_body(&source, &wallet, 10)).collect());
        let op = finished(&app, &accepted(&app.post("/v1/transactions/batch", &passing).await)).await;
        assert_eq!(op["result"]["body"]["succeeded"], 4, "{op}");
        assert_eq!(app.balances(&wallet).await.posted, 40);
    }
}

ledger_test! {
    async fn requests_refused_up_front_answer_at_once_and_create_no_operation(app) {
        let mut app = app;
        app.restart(small(true)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let send = |body: Vec<u8>| app.send(app.request(Method::POST, "/v1/transactions").header("Prefer", "respond-async").header("content-type", "application/json").body(body));
        send(b"{\"entries\": [".to_vec()).await.expect_error(400, "invalid_request");
        send(b"{\"entries\": [], \"surprise\": 1}".to_vec()).await.expect_error(400, "invalid_request");
        let mut bad_items: Vec<Value> = (0..5).map(|_| transfer_body(&source, &wallet, 1)).collect();
        bad_items[3]["entries"][0]["amount"] = json!(0);
        let reply = app.post("/v1/transactions/batch", &batch(false, bad_items)).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("transactions[3].entries[0].amount"));
        let reader = app.key("acme", Environment::Sandbox, &[Scope::LedgerRead]).await;
        let reply = post_async(&app.with_key(Some(&reader)), "/v1/transactions", &transfer_body(&source, &wallet, 1)).await;
        reply.expect_error(403, "insufficient_scope");
        post_async(&app.with_key(None), "/v1/transactions", &transfer_body(&source, &wallet, 1)).await.expect_error(401, "invalid_api_key");
        let reply = app.send(app.request(Method::POST, "/v1/transactions").header("Prefer", "respond-async").header("Idempotency-Key", "x").body("{")).await;
        reply.expect_error(400, "invalid_request");
        assert!(app.list_all("/v1/operations").await.is_empty());
        assert!(app.list_all("/v1/transactions").await.is_empty());
    }
}

ledger_test! {
    async fn a_retried_accepted_request_gets_the_same_operation(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let send = |key: &str, body: &Value| app.send(app.request(Method::POST, "/v1/transactions").header("Prefer", "respond-async").header("Idempotency-Key", key).json(body));
        let first = send("pay-1", &transfer_body(&source, &wallet, 25)).await;
        let id = accepted(&first);
        assert_eq!(first.header("idempotent-replayed"), None);
        finished(&app, &id).await;
        let again = send("pay-1", &transfer_body(&source, &wallet, 25)).await;
        assert_eq!(accepted(&again), id);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("preference-applied"), Some("respond-async"));
        assert_eq!(again.bytes, first.bytes, "the stored 202, byte for byte");
        // Without the preference the retry is still the same request: the stored 202, with its Location.
        let sync_retry = app.post_idempotent("/v1/transactions", "pay-1", &transfer_body(&source, &wallet, 25)).await;
        assert_eq!(accepted(&sync_retry), id);
        send("pay-1", &transfer_body(&source, &wallet, 26)).await.expect_error(422, "idempotency_key_reused");
        assert_eq!(app.balances(&wallet).await.posted, 25, "applied once");
        assert_eq!(app.list_all("/v1/operations").await.len(), 1);
        // The keys operations use for their chunks cannot be taken by clients.
        let reply = app.post_idempotent("/v1/transactions", &format!("{id}/chunk/0"), &transfer_body(&source, &wallet, 1)).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("Idempotency-Key"));
    }
}

ledger_test! {
    async fn operations_are_seen_only_by_their_tenant_and_listed_newest_first(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let mut ids = Vec::new();
        for amount in 1..=3 {
            ids.push(accepted(&post_async(&app, "/v1/transactions", &transfer_body(&source, &wallet, amount)).await));
        }
        let page = app.get("/v1/operations?limit=2").await;
        page.expect_status(200);
        let listed: Vec<&str> = page.body["data"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
        assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()]);
        assert_eq!(page.body["has_more"], true);
        let next = app.get(&format!("/v1/operations?limit=2&starting_after={}", ids[1])).await;
        assert_eq!(next.body["data"][0]["id"], ids[0].as_str());
        assert_eq!(next.body["has_more"], false);
        app.get("/v1/operations?starting_after=ltx_01arz3ndektsv4rrffq69g5fav").await.expect_error(400, "invalid_request");

        let other = app.client_for("globex").await;
        let reply = other.get(&format!("/v1/operations/{}", ids[0])).await;
        reply.expect_error(404, "not_found");
        let missing = other.get("/v1/operations/op_01arz3ndektsv4rrffq69g5fav").await;
        assert_eq!(reply.error_without_request_id(), missing.error_without_request_id(), "another tenant's operation looks missing");
        assert!(other.list_all("/v1/operations").await.is_empty());
        let live = app.api.with_key(Some(&app.key("acme", Environment::Live, &Scope::ALL).await));
        live.get(&format!("/v1/operations/{}", ids[0])).await.expect_error(404, "not_found");
        app.get("/v1/operations/nope").await.expect_error(404, "not_found");
    }
}

ledger_test! {
    async fn a_pending_operation_survives_a_restart(app) {
        let mut app = app;
        app.restart(small(false)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let items = (1..=5).map(|amount| transfer_body(&source, &wallet, amount)).collect();
        let id = accepted(&app.post("/v1/transactions/batch", &batch(false, items)).await);
        let pending = app.get(&format!("/v1/operations/{id}")).await;
        assert_eq!(pending.body["status"], "pending", "no worker runs: {}", pending.body);
        assert_eq!(app.balances(&wallet).await.posted, 0);

        app.restart(small(true)).await;
        let op = finished(&app, &id).await;
        assert_eq!((op["status"].as_str(), op["result"]["body"]["succeeded"].as_u64()), (Some("succeeded"), Some(5)), "{op}");
        assert_eq!(app.balances(&wallet).await.posted, 15);
    }
}

ledger_test! {
    async fn resuming_after_a_crash_mid_run_applies_nothing_twice(app) {
        let mut app = app;
        app.restart(small(false)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let items = (1..=6).map(|amount| transfer_body(&source, &wallet, amount)).collect();
        let id = accepted(&app.post("/v1/transactions/batch", &batch(false, items)).await);

        // A worker claims the operation, commits its first two chunks (four
        // transfers) and dies before the operation row records any progress.
        let now = app.clock.now();
        let claimed = app.store.claim_operation("wkr_crashed", now, now.plus_secs(30)).await.unwrap().expect("the operation is claimable");
        assert_eq!(claimed.record.id.as_str(), id);
        let work = plan(&app.state, &claimed.record, &claimed.request_body).await.unwrap();
        assert_eq!(work.chunks.len(), 3);
        let mut before_crash = Vec::new();
        for (index, (command, _)) in work.chunks.into_iter().take(2).enumerate() {
            let response = apply_chunk(&app.state, &claimed.record, index, command, work.render).await.unwrap();
            let body: Value = serde_json::from_slice(&response.body).unwrap();
            before_crash.extend(body["results"].as_array().unwrap().iter().map(|r| r["transaction"]["id"].clone()));
        }
        assert_eq!(app.balances(&wallet).await.posted, 1 + 2 + 3 + 4);
        let running = app.get(&format!("/v1/operations/{id}")).await;
        assert_eq!((running.body["status"].as_str(), running.body["progress"]["completed"].as_u64()), (Some("running"), Some(0)), "{}", running.body);

        // A new server: the dead worker's lease still holds, so nobody takes over yet...
        app.restart(small(true)).await;
        let still = app.get(&format!("/v1/operations/{id}")).await;
        assert_eq!(still.body["status"], "running");
        // ...until it expires. The new worker starts from chunk 0 again and the
        // committed chunks replay: the same transactions, none applied twice.
        app.clock.advance_secs(31);
        let op = finished(&app, &id).await;
        assert_eq!((op["status"].as_str(), op["result"]["body"]["succeeded"].as_u64()), (Some("succeeded"), Some(6)), "{op}");
        let ids: Vec<Value> = op["result"]["body"]["results"].as_array().unwrap().iter().map(|r| r["transaction"]["id"].clone()).collect();
        assert_eq!(ids[..4], before_crash[..], "the chunks committed before the crash are replayed, not re-applied");
        assert_eq!(app.balances(&wallet).await.posted, 21);
        assert_eq!(app.list_all("/v1/transactions").await.len(), 6);
    }
}

ledger_test! {
    async fn servers_sharing_a_database_share_the_operations_and_apply_each_once(app) {
        let mut app = app;
        app.restart(small(false)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let mut ids = Vec::new();
        for _ in 0..6 {
            let items = (0..5).map(|_| transfer_body(&source, &wallet, 1)).collect();
            ids.push(accepted(&app.post("/v1/transactions/batch", &batch(false, items)).await));
        }
        // Two more servers over the same database, each with its engine and worker.
        let mut workers = Vec::new();
        for _ in 0..2 {
            let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
            let (engine, _task) = app.store.start_engine(Arc::clone(&clock), Arc::new(IdGenerator::default()), EngineConfig::default()).await.unwrap();
            workers.push(spawn(AppState::new(app.store.clone(), engine, clock).with_operations(small(true).operations)));
        }
        for id in &ids {
            let op = finished(&app, id).await;
            assert_eq!((op["status"].as_str(), op["result"]["body"]["succeeded"].as_u64()), (Some("succeeded"), Some(5)), "{op}");
        }
        assert_eq!(app.balances(&wallet).await.posted, 30);
        assert_eq!(app.list_all("/v1/transactions").await.len(), 30);
        for worker in workers {
            worker.stop().await;
        }
    }
}

ledger_test! {
    async fn objects_an_operation_creates_carry_the_accepting_requests_correlation_id(app) {
        let reply = app
            .send(app.request(Method::POST, "/v1/accounts").header("Prefer", "respond-async").header("X-Correlation-Id", "order-4711").json(&json!({"name": "Funding", "currency": "USD", "normal_balance": "debit"})))
            .await;
        let op = finished(&app, &accepted(&reply)).await;
        let account = op["result"]["body"]["id"].as_str().unwrap().to_owned();
        assert_eq!(op["result"]["body"]["correlation_id"], "order-4711", "{op}");
        assert_eq!(app.get(&format!("/v1/accounts/{account}")).await.body["correlation_id"], "order-4711");
        let wallet = app.account("credit", None).await;
        let items = (0..5).map(|_| transfer_body(&account, &wallet, 1)).collect();
        let reply = app
            .send(app.request(Method::POST, "/v1/transactions/batch").header("Prefer", "respond-async").header("X-Correlation-Id", "payout-run-9").json(&batch(false, items)))
            .await;
        let op = finished(&app, &accepted(&reply)).await;
        let results = op["result"]["body"]["results"].as_array().unwrap();
        assert_eq!(results.len(), 5);
        for item in results {
            let id = item["transaction"]["id"].as_str().unwrap();
            assert_eq!(app.get(&format!("/v1/transactions/{id}")).await.body["correlation_id"], "payout-run-9");
        }
    }
}

ledger_test! {
    async fn a_tenant_cannot_queue_more_than_its_open_operations_cap(app) {
        let mut app = app;
        let mut options = small(false);
        options.operations.max_open_per_tenant = 2;
        app.restart(options).await;
        let body = json!({"name": "Funding", "currency": "USD", "normal_balance": "debit"});
        accepted(&post_async(&app, "/v1/accounts", &body).await);
        accepted(&post_async(&app, "/v1/accounts", &body).await);
        let refused = post_async(&app, "/v1/accounts", &body).await;
        refused.expect_error(429, "too_many_operations");
        assert_eq!(refused.header("retry-after"), Some("5"));
        assert_eq!(app.list_all("/v1/operations").await.len(), 2, "the refused request created no operation");
        // Another environment of the same organization has a cap of its own.
        let other = app.client_for("globex").await;
        accepted(&post_async(&other, "/v1/accounts", &body).await);
    }
}

ledger_test! {
    async fn a_rolled_back_flag_turns_large_batches_back_into_synchronous_ones_within_a_second(app) {
        let mut app = app;
        app.restart(small(true)).await;
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let five = || batch(false, (0..5).map(|_| transfer_body(&source, &wallet, 1)).collect());
        accepted(&app.post("/v1/transactions/batch", &five()).await);

        // Rolled back for everyone but another organization: acme's batches run at once again.
        let orgs = app.store.organizations().await.unwrap();
        let acme = orgs.iter().find(|o| o.name == "acme").unwrap().id.as_str().to_owned();
        let now = app.now();
        let only_others = settle_core::flags::Rollout { percent: 0, orgs: vec![format!("org_{}", "0".repeat(26))] };
        app.store.set_feature_flag(settle_core::flags::ASYNC_LARGE_BATCHES.name, &only_others, now).await.unwrap();
        let body = five();
        let synchronous = eventually("the rollback to reach the server", || {
            let reply = app.post("/v1/transactions/batch", &body);
            async move {
                let reply = reply.await;
                (reply.status == 200).then_some(reply)
            }
        })
        .await;
        assert_eq!(synchronous.body["results"].as_array().map(Vec::len), Some(5), "{}", synchronous.body);

        // Listed again: back to 202.
        let acme_only = settle_core::flags::Rollout { percent: 0, orgs: vec![acme] };
        app.store.set_feature_flag(settle_core::flags::ASYNC_LARGE_BATCHES.name, &acme_only, now).await.unwrap();
        let op = eventually("the rollout to reach the server", || {
            let reply = app.post("/v1/transactions/batch", &body);
            async move {
                let reply = reply.await;
                (reply.status == 202).then_some(reply)
            }
        })
        .await;
        let id = accepted(&op);
        assert_eq!(finished(&app, &id).await["status"], "succeeded");
    }
}
