//! Sandbox fault injection (`/v1/test_helpers/faults`, docs/sandbox.md):
//! deliveries that time out, fail, arrive twice or out of order, and the
//! proof that nothing is lost or doubled beyond what receivers dedupe.

use crate::app::{TestOptions, eventually, ledger_test};
use crate::events::events_at_least;
use crate::webhooks::{Receiver, endpoint, recorded};
use reqwest::Method;
use serde_json::{Value, json};
use settle_core::tenancy::{Environment, Scope};
use std::collections::{BTreeMap, BTreeSet};

const FAULTS: &str = "/v1/test_helpers/faults";

pub(crate) async fn set_fault(api: &crate::app::Api, body: Value) -> Value {
    let reply = api.send(api.request(Method::PUT, FAULTS).json(&body)).await;
    reply.expect_status(200);
    reply.body
}

pub(crate) async fn clear_faults(api: &crate::app::Api) {
    let reply = api.send(api.request(Method::DELETE, FAULTS)).await;
    reply.expect_status(200);
    assert_eq!(reply.body["data"], json!([]));
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

ledger_test! {
    async fn faults_exist_for_sandbox_keys_only_and_bad_input_changes_nothing(app) {
        // Live keys, and callers without a key, learn nothing: 404 whatever the method.
        let live = app.api.with_key(Some(&app.key("acme", Environment::Live, &Scope::ALL).await));
        for caller in [live.clone(), app.with_key(None)] {
            for method in [Method::GET, Method::PUT, Method::DELETE, Method::POST] {
                caller.send(caller.request(method, FAULTS).json(&json!({"target": "webhooks", "mode": "fail"}))).await.expect_error(404, "not_found");
            }
        }
        // A sandbox key: the method, then the scope.
        app.post(FAULTS, &json!({})).await.expect_error(405, "method_not_allowed");
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::WebhooksRead]).await));
        reader.get(FAULTS).await.expect_status(200);
        reader.send(reader.request(Method::PUT, FAULTS).json(&json!({"target": "webhooks", "mode": "fail"}))).await.expect_error(403, "insufficient_scope");
        reader.send(reader.request(Method::DELETE, FAULTS)).await.expect_error(403, "insufficient_scope");

        let in_the_past = app.now().plus_secs(-1).to_rfc3339();
        let bad = [
            (json!({"target": "webhooks", "mode": "explode"}), "mode"),
            (json!({"target": "webhooks"}), "body"),
            (json!({"target": "email", "mode": "fail"}), "target"),
            (json!({"target": "webhooks", "mode": "fail", "probability": 101}), "probability"),
            (json!({"target": "webhooks", "mode": "fail", "probability": -1}), "probability"),
            (json!({"target": "webhooks", "mode": "fail", "probability": 50.5}), "probability"),
            (json!({"target": "webhooks", "mode": "fail", "until": in_the_past}), "until"),
            (json!({"target": "webhooks", "mode": "fail", "until": "tomorrow"}), "until"),
            (json!({"target": "webhooks", "mode": "fail", "duration_secs": 0}), "duration_secs"),
            (json!({"target": "webhooks", "mode": "fail", "duration_secs": 99_999_999}), "duration_secs"),
            (json!({"target": "webhooks", "mode": "fail", "duration_secs": 60, "until": app.now().plus_secs(60).to_rfc3339()}), "duration_secs"),
            (json!({"target": "webhooks", "mode": "fail", "extra": true}), "extra"),
        ];
        for (body, param) in bad {
            let reply = app.send(app.request(Method::PUT, FAULTS).json(&body)).await;
            reply.expect_error(400, "invalid_request");
            assert!(reply.param().is_some_and(|p| p.contains(param)), "param {:?} for {body}: {}", reply.param(), reply.body);
        }
        let none = app.get(FAULTS).await;
        assert_eq!(none.body, json!({"object": "list", "data": [], "has_more": false}), "refused requests set nothing");

        // Set, replace, read; another organization sees none of it.
        let set = set_fault(&app, json!({"target": "webhooks", "mode": "fail", "duration_secs": 60})).await;
        assert_eq!(set["object"], "fault");
        assert_eq!((set["target"].clone(), set["mode"].clone(), set["probability"].clone()), (json!("webhooks"), json!("fail"), json!(100)));
        assert_eq!(set["until"], app.now().plus_secs(60).to_rfc3339());
        let replaced = set_fault(&app, json!({"target": "webhooks", "mode": "fail", "probability": 30})).await;
        assert_eq!((replaced["probability"].clone(), replaced["until"].clone()), (json!(30), Value::Null));
        let until = app.now().plus_secs(120).to_rfc3339();
        set_fault(&app, json!({"target": "webhooks", "mode": "duplicate", "until": until})).await;
        let listed = app.get(FAULTS).await.body;
        let modes: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|f| f["mode"].as_str().unwrap()).collect();
        assert_eq!(modes, ["duplicate", "fail"]);
        let other = app.client_for("globex").await;
        assert_eq!(other.get(FAULTS).await.body["data"], json!([]));
        // A fault ends at its `until`, by the server's clock.
        app.clock.advance_secs(121);
        let left = app.get(FAULTS).await.body;
        assert_eq!(left["data"].as_array().unwrap().len(), 1, "{left}");
        assert_eq!(left["data"][0]["mode"], "fail");
        clear_faults(&app).await;
        assert_eq!(app.get(FAULTS).await.body["data"], json!([]));
    }
}

/// Sets `mode` for 60 s, creates three events while it is in force, and
/// shows that each is retried on the schedule and arrives once it ends.
async fn ride_through(app: &crate::app::TestApp, fault: Value, check_failed: fn(&Value) -> bool) {
    let receiver = Receiver::start(200).await;
    let (endpoint_id, _) = endpoint(app, &receiver.url, json!(["ledger.account.created"])).await;
    set_fault(app, fault).await;
    for _ in 0..3 {
        app.account("credit", None).await;
    }
    let events = ids(&events_at_least(app, "?type=ledger.account.created", 3).await);
    // The first attempts (at once) and the retries 5 s later all fail, and nothing is sent.
    let first = recorded(app, &endpoint_id, 3).await;
    assert!(first.iter().all(check_failed), "{first:?}");
    app.clock.advance_secs(6);
    let second = recorded(app, &endpoint_id, 6).await;
    assert!(second.iter().all(check_failed), "{second:?}");
    assert!(receiver.all().is_empty(), "nothing was sent while the fault lasted");
    // The third attempt (5 min later, up to 10% jitter) comes after the fault's end.
    app.clock.advance_secs(5 * 60 * 11 / 10 + 1);
    let got = receiver.until("every event after the fault", |r| r.iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>().len() >= 3).await;
    let delivered: BTreeSet<String> = got.iter().map(|d| d.id.clone()).collect();
    assert_eq!(delivered, events, "every event arrives, none lost");
    let attempts = recorded(app, &endpoint_id, 9).await;
    let succeeded: BTreeSet<&str> = attempts.iter().filter(|a| a["status"] == "succeeded").map(|a| a["event_id"].as_str().unwrap()).collect();
    assert_eq!(succeeded.len(), 3, "{attempts:?}");
    assert!(attempts.iter().filter(|a| a["status"] == "failed").all(check_failed));
    let (pending, done, dead) = app.store.delivery_counts(settle_core::tenancy::TenantId(1)).await.unwrap();
    assert_eq!((pending, done, dead), (0, 3, 0));
}

ledger_test! {
    async fn with_fail_in_force_deliveries_are_retried_and_all_arrive_once_it_ends(app) {
        ride_through(&app, json!({"target": "webhooks", "mode": "fail", "duration_secs": 60}), |a| {
            a["status"] == "failed" && a["response_status"] == 503 && a["response_body"].as_str().is_some_and(|b| b.contains("sandbox fault"))
        })
        .await;
    }
}

ledger_test! {
    async fn with_timeout_in_force_attempts_are_recorded_as_timeouts_and_all_arrive_once_it_ends(app) {
        let until = app.now().plus_secs(60).to_rfc3339();
        ride_through(&app, json!({"target": "webhooks", "mode": "timeout", "until": until}), |a| {
            a["status"] == "failed" && a["response_status"].is_null() && a["error"].as_str().is_some_and(|e| e.starts_with("timed out"))
        })
        .await;
    }
}

ledger_test! {
    async fn with_duplicate_in_force_each_event_arrives_twice_with_one_webhook_id(app) {
        let receiver = Receiver::start(200).await;
        let (endpoint_id, secret) = endpoint(&app, &receiver.url, json!(["ledger.account.created"])).await;
        set_fault(&app, json!({"target": "webhooks", "mode": "duplicate"})).await;
        for _ in 0..3 {
            app.account("credit", None).await;
        }
        let events = ids(&events_at_least(&app, "?type=ledger.account.created", 3).await);
        let got = receiver
            .until("each event twice", |r| {
                let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
                r.iter().for_each(|d| *per_id.entry(d.id.as_str()).or_default() += 1);
                per_id.len() >= 3 && per_id.values().all(|n| *n >= 2)
            })
            .await;
        let distinct: BTreeSet<String> = got.iter().map(|d| d.id.clone()).collect();
        assert_eq!(distinct, events, "the distinct webhook-ids are exactly the events");
        for d in &got {
            assert!(settle_api::webhooks::signature::verify(&secret, &d.id, d.timestamp, &d.body, &d.signature, d.timestamp).is_ok());
        }
        recorded(&app, &endpoint_id, 3).await;

        // Once cleared, one delivery per event again.
        clear_faults(&app).await;
        app.account("credit", None).await;
        let events = ids(&events_at_least(&app, "?type=ledger.account.created", 4).await);
        recorded(&app, &endpoint_id, 4).await;
        let got = receiver.all();
        let newest = events.iter().find(|id| !distinct.contains(*id)).unwrap();
        assert_eq!(got.iter().filter(|d| &d.id == newest).count(), 1);
    }
}

ledger_test! {
    async fn with_reorder_in_force_a_batch_arrives_reversed_and_sequence_restores_the_order(app) {
        let mut app = app;
        // No jitter, so that the retries below come due at one instant and are claimed as one batch.
        let mut options = TestOptions::default();
        options.webhooks.jitter = 0.0;
        app.restart(options).await;
        // The first server's projector lease lapses (it was aborted, as a crash would).
        app.clock.advance_secs(settle_api::events::projector::LEASE_SECS + 1);
        let receiver = Receiver::start(200).await;
        let (endpoint_id, _) = endpoint(&app, &receiver.url, json!(["*"])).await;
        // Every first attempt fails, so that every delivery is due again at the same instant.
        set_fault(&app, json!({"target": "webhooks", "mode": "fail"})).await;
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let posted = app.hold_ok(&funding, &wallet, 10).await;
        app.post(&format!("/v1/transactions/{posted}/post"), &json!({})).await.expect_status(200);
        let voided = app.hold_ok(&funding, &wallet, 20).await;
        app.post(&format!("/v1/transactions/{voided}/void"), &json!({})).await.expect_status(200);
        let events = events_at_least(&app, "", 6).await;
        recorded(&app, &endpoint_id, events.len()).await;
        assert!(receiver.all().is_empty());

        clear_faults(&app).await;
        set_fault(&app, json!({"target": "webhooks", "mode": "reorder"})).await;
        app.clock.advance_secs(5);
        let got = receiver.until("every event", |r| r.len() >= events.len()).await;
        let arrived: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
        let mut newest_first: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        newest_first.reverse();
        assert_eq!(arrived, newest_first, "the batch arrives in reverse order");

        // A receiver restores each object's order from `sequence`.
        let mut by_object: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for d in &got {
            let event = d.json();
            by_object.entry(event["data"]["object"]["id"].as_str().unwrap().to_owned()).or_default().push((event["sequence"].as_i64().unwrap(), event["type"].as_str().unwrap().to_owned()));
        }
        for changes in by_object.values_mut() {
            changes.sort();
        }
        let types = |id: &str| by_object[id].iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>();
        assert_eq!(types(&posted), ["ledger.transaction.created", "ledger.transaction.posted"]);
        assert_eq!(types(&voided), ["ledger.transaction.created", "ledger.transaction.voided"]);
        for changes in by_object.values() {
            let sequences: Vec<i64> = changes.iter().map(|(s, _)| *s).collect();
            assert_eq!(sequences, (1..=sequences.len() as i64).collect::<Vec<_>>(), "{by_object:?}");
        }
    }
}

/// The value of the sample line that starts with `prefix` (name and labels).
pub(crate) fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

pub(crate) async fn scrape(api: &crate::app::Api) -> String {
    let reply = api.with_key(None).get("/metrics").await;
    reply.expect_status(200);
    String::from_utf8(reply.bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_metrics_show_attempts_latency_lag_backlog_dead_letters_disabled_endpoints_and_faults() {
    let app = crate::app::TestApp::start(crate::app::Backend::Sqlite).await;
    let ok = Receiver::start(200).await;
    let (ok_id, _) = endpoint(&app, &ok.url, json!(["ledger.account.created"])).await;
    app.account("credit", None).await;
    recorded(&app, &ok_id, 1).await;
    // A failure injected by a fault.
    set_fault(&app, json!({"target": "webhooks", "mode": "fail"})).await;
    app.account("credit", None).await;
    recorded(&app, &ok_id, 2).await;
    clear_faults(&app).await;
    // An endpoint that is gone: dead letter, endpoint disabled.
    let gone = Receiver::start(410).await;
    let (gone_id, _) = endpoint(&app, &gone.url, json!(["ledger.account.created"])).await;
    app.account("credit", None).await;
    recorded(&app, &gone_id, 1).await;

    let text = eventually("the dead letter and the disabled endpoint in /metrics", || {
        let api = app.api.clone();
        async move {
            let text = scrape(&api).await;
            (sample(&text, "settle_webhook_dead_lettered_total").is_some_and(|n| n >= 1.0)
                && sample(&text, r#"settle_webhook_endpoints_disabled_total{reason="gone"}"#) == Some(1.0))
            .then_some(text)
        }
    })
    .await;
    assert!(sample(&text, r#"settle_webhook_attempts_total{outcome="succeeded"}"#).is_some_and(|n| n >= 2.0), "{text}");
    assert!(sample(&text, r#"settle_webhook_attempts_total{outcome="failed"}"#).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, r#"settle_webhook_attempts_total{outcome="gone"}"#), Some(1.0), "{text}");
    assert!(sample(&text, r#"settle_faults_injected_total{target="webhooks",mode="fail"}"#).is_some_and(|n| n >= 1.0), "{text}");
    // Latency is observed for real attempts only (3: two successes and the 410).
    let attempts = sample(&text, "settle_webhook_attempt_duration_seconds_count").unwrap();
    assert!(attempts >= 3.0, "{text}");
    assert!(sample(&text, "settle_webhook_attempt_duration_seconds_sum").is_some_and(|s| s > 0.0 && s < attempts * 5.0), "{text}");
    // Lag: event created to delivered, on the server's clock (which did not move).
    assert!(sample(&text, "settle_webhook_delivery_lag_seconds_count").is_some_and(|n| n >= 2.0), "{text}");
    assert!(sample(&text, "settle_webhook_delivery_lag_seconds_sum").is_some_and(|s| s < 1.0), "{text}");
    // The backlog: nothing is due but the failed delivery's retry, 5 s away.
    assert!(sample(&text, "settle_webhook_backlog").is_some_and(|n| (0.0..=1.0).contains(&n)), "{text}");
    assert!(text.contains("# TYPE settle_webhook_delivery_lag_seconds histogram"));
}

ledger_test! {
    async fn a_fault_set_through_another_server_reaches_this_servers_worker_within_about_a_second(app) {
        use settle_core::faults::FaultTarget;
        use settle_core::tenancy::TenantId;
        let fired = |app: &crate::app::TestApp| {
            let (state, store, now) = (app.state.clone(), app.store.clone(), app.now());
            async move { state.faults.fire(&store, TenantId(1), Environment::Sandbox, FaultTarget::Webhooks, now).await }
        };
        // This server has read the (empty) faults and caches them.
        assert!(!fired(&app).await.fail);
        let (other, _server) = app.another_server().await;
        set_fault(&other, json!({"target": "webhooks", "mode": "fail"})).await;
        let started = std::time::Instant::now();
        eventually("the fault seen by this server", || {
            let check = fired(&app);
            async move { check.await.fail.then_some(()) }
        })
        .await;
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "seen after {:?}", started.elapsed());
        // Never for live deliveries, whatever is stored.
        assert!(!app.state.faults.fire(&app.store, TenantId(1), Environment::Live, FaultTarget::Webhooks, app.now()).await.fail);
        clear_faults(&other).await;
        eventually("the fault's end seen by this server", || {
            let check = fired(&app);
            async move { (!check.await.fail).then_some(()) }
        })
        .await;
    }
}
