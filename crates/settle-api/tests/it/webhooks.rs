//! Webhooks (docs/webhooks.md): endpoints, Standard Webhooks signatures,
//! retries driven by the test clock, dead letters, `410 Gone`, rotation,
//! redelivery and recovery, and a receiver that is down for a while.

use crate::app::{Api, TestOptions, eventually, ledger_test, transfer_body};
use crate::events::events_at_least;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use settle_api::webhooks::signature::{WebhookSecret, verify};
use settle_core::tenancy::{Environment, Scope};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every request and
/// answers the status it is told to.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<AtomicU16>,
    _server: Arc<ServerTask>,
}

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Shared = (Arc<Mutex<Vec<Received>>>, Arc<AtomicU16>);

async fn receive(State((received, answer)): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let status = answer.load(Ordering::SeqCst);
    received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        status,
    });
    (StatusCode::from_u16(status).unwrap(), "a receiver's answer, which Settle keeps the first KiB of")
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        let shared: Shared = (Arc::default(), Arc::new(AtomicU16::new(status)));
        let router = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver { url, received: shared.0, answer: shared.1, _server: Arc::new(ServerTask(task)) }
    }

    pub fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `check` holds for what was received.
    pub async fn until(&self, what: &str, check: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        eventually(what, || {
            let all = self.all();
            let done = check(&all);
            async move { done.then_some(all) }
        })
        .await
    }
}

/// Creates an endpoint for `url`; returns (id, secret).
pub async fn endpoint(api: &Api, url: &str, events: Value) -> (String, WebhookSecret) {
    let reply = api.post("/v1/webhook_endpoints", &json!({"url": url, "enabled_events": events})).await;
    reply.expect_status(201);
    let secret = reply.body["secret"].as_str().unwrap_or_else(|| panic!("no secret in {}", reply.body));
    (reply.id(), WebhookSecret::parse(secret).unwrap())
}

/// Waits until `n` attempts to `endpoint` are recorded (an attempt is
/// recorded after the receiver answered: moving the clock before that would
/// schedule its retry from the moved clock).
pub async fn recorded(api: &Api, endpoint: &str, n: usize) -> Vec<Value> {
    let path = format!("/v1/webhook_endpoints/{endpoint}/attempts");
    eventually(&format!("{n} recorded attempts"), || {
        let (api, path) = (api.clone(), path.clone());
        async move {
            let all = api.list_all(&path).await;
            (all.len() >= n).then_some(all)
        }
    })
    .await
}

fn verifies(r: &Received, secret: &WebhookSecret) -> bool {
    verify(secret, &r.id, r.timestamp, &r.body, &r.signature, r.timestamp).is_ok()
}

ledger_test! {
    async fn deliveries_are_signed_standard_webhooks_with_the_secret_shown_once(app) {
        let receiver = Receiver::start(200).await;
        let reply = app.send(app.request(Method::POST, "/v1/webhook_endpoints").header("Idempotency-Key", "we-1").json(&json!({
            "url": receiver.url, "enabled_events": ["*"], "description": "orders", "metadata": {"team": "payments"}
        }))).await;
        reply.expect_status(201);
        let (id, secret_text) = (reply.id(), reply.body["secret"].as_str().unwrap().to_owned());
        assert!(secret_text.starts_with("whsec_"));
        let secret = WebhookSecret::parse(&secret_text).unwrap();
        assert_eq!(secret.bytes().len(), 32);
        assert_eq!(reply.body["status"], "enabled");
        assert_eq!(reply.body["api_version"], "2026-11-25", "the organization's pinned version");
        // Never again in a read...
        let read = app.get(&format!("/v1/webhook_endpoints/{id}")).await;
        assert!(read.body.get("secret").is_none(), "{}", read.body);
        assert!(app.list_all("/v1/webhook_endpoints").await.iter().all(|e| e.get("secret").is_none()));
        // ...but an idempotent retry of the create shows it, and creates nothing.
        let again = app.send(app.request(Method::POST, "/v1/webhook_endpoints").header("Idempotency-Key", "we-1").json(&json!({
            "url": receiver.url, "enabled_events": ["*"], "description": "orders", "metadata": {"team": "payments"}
        }))).await;
        again.expect_status(201);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, reply.body);
        assert_eq!(app.list_all("/v1/webhook_endpoints").await.len(), 1);
        // The secret is stored sealed, not in clear.
        assert!(!format!("{:?}", app.store.get_webhook_endpoint(settle_core::tenancy::TenantId(1), settle_core::ids::WebhookEndpointId::from_trusted(id.clone())).await).contains(&secret_text));

        let account = app.account("credit", None).await;
        let got = receiver.until("the account's event", |r| !r.is_empty()).await;
        let event = events_at_least(&app, &format!("?object_id={account}"), 1).await.remove(0);
        let d = &got[0];
        assert_eq!(d.id, event["id"].as_str().unwrap(), "webhook-id is the event id");
        assert_eq!(d.content_type, "application/json");
        assert_eq!(d.json(), event, "the body is the event");
        assert_eq!(d.timestamp, app.now().micros() / 1_000_000, "webhook-timestamp is the attempt's time");
        assert!(verifies(d, &secret), "the signature verifies with the secret: {}", d.signature);
        assert!(!verifies(d, &WebhookSecret::generate()));
        let mut tampered = d.clone();
        tampered.body.push(b' ');
        assert!(!verifies(&tampered, &secret));

        // The attempt is listed.
        let attempts = recorded(&app, &id, 1).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["status"], "succeeded");
        assert_eq!(attempts[0]["response_status"], 200);
        assert_eq!(attempts[0]["event_id"], event["id"]);
        assert_eq!(attempts[0]["attempt"], 1);
    }
}

ledger_test! {
    async fn a_receiver_that_is_down_for_a_while_gets_every_event_later_none_lost(app) {
        let receiver = Receiver::start(503).await;
        let (endpoint_id, secret) = endpoint(&app, &receiver.url, json!(["ledger.transaction.created"])).await;
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        for amount in 1..=5 {
            app.transfer_ok(&funding, &wallet, amount).await;
        }
        // First attempts (at once) all fail.
        recorded(&app, &endpoint_id, 5).await;
        let events: BTreeSet<String> =
            events_at_least(&app, "?type=ledger.transaction.created", 5).await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        // Still down at the second attempt (5 s later, with up to 10% jitter)...
        app.clock.advance_secs(6);
        recorded(&app, &endpoint_id, 10).await;
        // ...up before the third (5 min later).
        receiver.answer(200);
        app.clock.advance_secs(6);
        assert_eq!(receiver.all().len(), 10, "nothing is due before its time");
        app.clock.advance_secs(5 * 60 * 11 / 10);
        let got = receiver.until("every event delivered", |r| r.iter().filter(|d| d.status == 200).count() >= 5).await;
        let delivered: BTreeSet<String> = got.iter().filter(|d| d.status == 200).map(|d| d.id.clone()).collect();
        assert_eq!(delivered, events, "every event, none lost");
        // Duplicates are only retries of the same webhook-id, each signed afresh.
        let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
        for d in &got {
            assert!(events.contains(&d.id), "an unknown webhook-id {}", d.id);
            assert!(verifies(d, &secret));
            *per_id.entry(d.id.clone()).or_default() += 1;
        }
        assert!(per_id.values().all(|n| *n == 3), "each event: two failures and one success: {per_id:?}");
        let attempts = recorded(&app, &endpoint_id, 15).await;
        assert_eq!(attempts.len(), 15);
        assert_eq!(attempts.iter().filter(|a| a["status"] == "failed" && a["response_status"] == 503).count(), 10);
        assert!(attempts.iter().all(|a| a["response_body"].as_str().is_some_and(|b| b.starts_with("a receiver's answer"))));
        let (_, succeeded, failed) = app.store.delivery_counts(settle_core::tenancy::TenantId(1)).await.unwrap();
        assert_eq!((succeeded, failed), (5, 0));
    }
}

ledger_test! {
    async fn a_delivery_is_dead_lettered_when_the_schedule_ends_and_recover_replays_it(app) {
        let receiver = Receiver::start(500).await;
        let (endpoint_id, _) = endpoint(&app, &receiver.url, json!(["ledger.account.created"])).await;
        let since = app.now();
        app.account("credit", None).await;
        recorded(&app, &endpoint_id, 1).await;
        // The default schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts.
        for (n, delay) in [5i64, 300, 1800, 7200, 18000, 36000, 36000].iter().enumerate() {
            app.clock.advance_secs(delay * 11 / 10 + 1);
            recorded(&app, &endpoint_id, n + 2).await;
        }
        app.clock.advance_secs(48 * 3600);
        eventually("the dead letter", || {
            let store = app.store.clone();
            async move { (store.delivery_counts(settle_core::tenancy::TenantId(1)).await.unwrap() == (0, 0, 1)).then_some(()) }
        })
        .await;
        assert_eq!(receiver.all().len(), 8, "no attempt after the schedule");
        // Still enabled: 2 days of failures are not 5.
        assert_eq!(app.get(&format!("/v1/webhook_endpoints/{endpoint_id}")).await.body["status"], "enabled");

        receiver.answer(200);
        let at = since.to_rfc3339();
        let recovered = app.post_idempotent(&format!("/v1/webhook_endpoints/{endpoint_id}/recover"), "rec-1", &json!({"since": at})).await;
        recovered.expect_status(200);
        assert_eq!(recovered.body["queued"], 1);
        let replay = app.post_idempotent(&format!("/v1/webhook_endpoints/{endpoint_id}/recover"), "rec-1", &json!({"since": at})).await;
        assert_eq!((replay.body.clone(), replay.header("idempotent-replayed")), (recovered.body.clone(), Some("true")));
        let got = receiver.until("the recovered delivery", |r| r.iter().any(|d| d.status == 200)).await;
        assert_eq!(got.len(), 9);
        assert_eq!(got[8].id, got[0].id, "the same webhook-id");

        // Redelivery sends a delivered event again, on request.
        let event = got[0].id.clone();
        let redelivered = app.post(&format!("/v1/events/{event}/redeliver"), &json!({"endpoint_id": endpoint_id})).await;
        redelivered.expect_status(200);
        assert_eq!(redelivered.body, json!({"object": "event_redelivery", "event_id": event, "queued": 1}));
        receiver.until("the redelivery", |r| r.len() == 10).await;
        app.post(&format!("/v1/events/{event}/redeliver"), &json!({"endpoint_id": "we_01jdx3q5g3n3n5v8y2w4h6k9m1"})).await.expect_error(404, "not_found");
    }
}

ledger_test! {
    async fn gone_disables_the_endpoint_at_once_and_failing_for_five_days_does_too(app) {
        let watcher = Receiver::start(200).await;
        endpoint(&app, &watcher.url, json!(["webhook_endpoint.disabled"])).await;
        let gone = Receiver::start(410).await;
        let (gone_id, _) = endpoint(&app, &gone.url, json!(["*"])).await;
        app.account("credit", None).await;
        let announced = watcher.until("the disabled event", |r| !r.is_empty()).await;
        let event = announced[0].json();
        assert_eq!(event["type"], "webhook_endpoint.disabled");
        assert_eq!(event["data"]["object"]["id"], gone_id);
        assert_eq!(event["data"]["object"]["disabled_reason"], "gone");
        assert_eq!(event["data"]["previous_attributes"]["status"], "enabled");
        let read = app.get(&format!("/v1/webhook_endpoints/{gone_id}")).await;
        assert_eq!((read.body["status"].clone(), read.body["disabled_reason"].clone()), (json!("disabled"), json!("gone")));
        app.account("credit", None).await;
        events_at_least(&app, "?type=ledger.account.created", 2).await;
        assert_eq!(gone.all().len(), 1, "a disabled endpoint gets nothing more");

        // Failing for 5 days straight (a receiver that always answers 500).
        let failing = Receiver::start(500).await;
        let (failing_id, _) = endpoint(&app, &failing.url, json!(["ledger.account.created"])).await;
        for _ in 0..3 {
            app.account("credit", None).await;
        }
        recorded(&app, &failing_id, 3).await;
        for _day in 1..=6 {
            let before = recorded(&app, &failing_id, 0).await.len();
            app.clock.advance_secs(24 * 3600);
            // Keep events coming, as a live ledger would.
            app.account("credit", None).await;
            if app.get(&format!("/v1/webhook_endpoints/{failing_id}")).await.body["status"] == "disabled" {
                break;
            }
            recorded(&app, &failing_id, before + 1).await;
        }
        let read = eventually("the failing endpoint disabled", || {
            let api = app.api.clone();
            let path = format!("/v1/webhook_endpoints/{failing_id}");
            async move {
                let r = api.get(&path).await;
                (r.body["status"] == "disabled").then_some(r.body)
            }
        })
        .await;
        assert_eq!(read["disabled_reason"], "failing");
        // Delivery is at least once: a clock moved while the announcement was
        // in flight lapses its lease and sends it again, with the same id.
        let announced = watcher.until("its announcement", |r| r.iter().any(|x| x.json()["data"]["object"]["id"] == failing_id.as_str())).await;
        let ids: std::collections::BTreeSet<_> = announced.iter().map(|x| x.id.clone()).collect();
        assert_eq!(ids.len(), 2, "one announcement per disabled endpoint");
        // Enabling it again is a PATCH.
        let enabled = app.send(app.request(Method::PATCH, &format!("/v1/webhook_endpoints/{failing_id}")).json(&json!({"disabled": false}))).await;
        enabled.expect_status(200);
        assert_eq!(enabled.body["status"], "enabled");
    }
}

ledger_test! {
    async fn a_rotation_overlap_is_seamless(app) {
        let receiver = Receiver::start(200).await;
        let (id, old) = endpoint(&app, &receiver.url, json!(["ledger.account.created"])).await;
        app.account("credit", None).await;
        receiver.until("a delivery", |r| r.len() == 1).await;
        let rotated = app.post(&format!("/v1/webhook_endpoints/{id}/rotate_secret"), &json!({"expires_in_secs": 3600})).await;
        rotated.expect_status(200);
        let new = WebhookSecret::parse(rotated.body["secret"].as_str().unwrap()).unwrap();
        assert_ne!(new, old);
        // During the overlap every delivery carries both signatures: a
        // receiver still on the old secret and one already on the new both verify.
        app.account("credit", None).await;
        let got = receiver.until("a delivery during the overlap", |r| r.len() == 2).await;
        assert_eq!(got[1].signature.split(' ').count(), 2, "{}", got[1].signature);
        assert!(verifies(&got[1], &old) && verifies(&got[1], &new));
        // After it, only the new one.
        app.clock.advance_secs(3601);
        app.account("credit", None).await;
        let got = receiver.until("a delivery after the overlap", |r| r.len() == 3).await;
        assert_eq!(got[2].signature.split(' ').count(), 1);
        assert!(verifies(&got[2], &new) && !verifies(&got[2], &old));
        app.post(&format!("/v1/webhook_endpoints/{id}/rotate_secret"), &json!({"expires_in_secs": 99999999})).await.expect_error(400, "invalid_request");
    }
}

ledger_test! {
    async fn a_crash_between_commit_and_delivery_loses_nothing(app) {
        let mut app = app;
        let receiver = Receiver::start(200).await;
        let (_, secret) = endpoint(&app, &receiver.url, json!(["*"])).await;
        // A server whose projector and worker never ran (as if killed right
        // after each commit), then a crash, then a normal start.
        app.restart(TestOptions { events: false, ..TestOptions::default() }).await;
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let tx = app.transfer_ok(&funding, &wallet, 42).await;
        assert!(receiver.all().is_empty());
        app.restart(TestOptions::default()).await;
        // The first server's projector lease lapses; the new server projects from the log.
        app.clock.advance_secs(settle_api::events::projector::LEASE_SECS + 1);
        let got = receiver.until("all three events", |r| r.len() >= 3).await;
        let objects: BTreeSet<String> = got.iter().map(|d| d.json()["data"]["object"]["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(objects, BTreeSet::from([funding, wallet, tx]));
        assert!(got.iter().all(|d| verifies(d, &secret)));

        // Now a crash with deliveries claimed and not yet recorded: the
        // receiver hangs on to the requests while the server dies.
        receiver.answer(503);
        app.account("credit", None).await;
        receiver.until("the fourth event's first attempt", |r| r.len() >= 4).await;
        // (Its attempt may or may not be recorded when the server dies: either way it is retried.)
        app.restart(TestOptions::default()).await;
        receiver.answer(200);
        // The retry (5 s) and, had the lease been held, its lapse (60 s).
        app.clock.advance_secs(61);
        let got = receiver.until("the fourth event delivered", |r| r.iter().filter(|d| d.status == 200).count() >= 4).await;
        let ids: BTreeSet<&str> = got.iter().filter(|d| d.status == 200).map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 4);
    }
}

ledger_test! {
    async fn endpoint_urls_are_checked_against_ssrf_and_bad_input_changes_nothing(app) {
        let live = app.api.with_key(Some(&app.key("acme", Environment::Live, &Scope::ALL).await));
        for url in ["http://hooks.example.com/x", "https://127.0.0.1/x", "https://10.0.0.1/x", "https://169.254.169.254/latest", "https://localhost/x", "https://[::1]/x"] {
            let reply = live.post("/v1/webhook_endpoints", &json!({"url": url, "enabled_events": ["*"]})).await;
            reply.expect_error(400, "invalid_webhook_url");
            assert_eq!(reply.param(), Some("url"));
        }
        // The sandbox allows http://localhost for development.
        app.post("/v1/webhook_endpoints", &json!({"url": "http://localhost:3000/webhooks", "enabled_events": ["*"]})).await.expect_status(201);
        app.post("/v1/webhook_endpoints", &json!({"url": "ftp://x/", "enabled_events": ["*"]})).await.expect_error(400, "invalid_webhook_url");
        let bad_type = app.post("/v1/webhook_endpoints", &json!({"url": "http://localhost/", "enabled_events": ["ledger.nope"]})).await;
        bad_type.expect_error(400, "invalid_request");
        assert_eq!(bad_type.param(), Some("enabled_events[0]"));
        app.post("/v1/webhook_endpoints", &json!({"url": "http://localhost/", "enabled_events": []})).await.expect_error(400, "invalid_request");
        app.post("/v1/webhook_endpoints", &json!({"url": "http://localhost/", "enabled_events": ["*"], "api_version": "1999-01-01"})).await.expect_error(400, "invalid_request");
        app.post("/v1/webhook_endpoints", &json!({"url": "http://localhost/", "enabled_events": ["*"], "extra": 1})).await.expect_error(400, "invalid_request");
        assert_eq!(app.list_all("/v1/webhook_endpoints").await.len(), 1, "refused requests created nothing");
        assert!(live.list_all("/v1/webhook_endpoints").await.is_empty());

        // Scopes.
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::WebhooksRead]).await));
        reader.get("/v1/webhook_endpoints").await.expect_status(200);
        reader.post("/v1/webhook_endpoints", &json!({"url": "http://localhost/", "enabled_events": ["*"]})).await.expect_error(403, "insufficient_scope");
        let ledger_only = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead, Scope::LedgerWrite]).await));
        // Scopes are exactly those a key was created with (keys older than
        // events gained them by migration 0006, never at run time).
        ledger_only.get("/v1/webhook_endpoints").await.expect_error(403, "insufficient_scope");

        // Update and delete.
        let (id, _) = endpoint(&app, "http://localhost:9/", json!(["*"])).await;
        let patched = app.send(app.request(Method::PATCH, &format!("/v1/webhook_endpoints/{id}")).json(&json!({"enabled_events": ["ledger.account.created"], "url": "http://127.0.0.1:9/h"}))).await;
        patched.expect_status(200);
        assert_eq!(patched.body["enabled_events"], json!(["ledger.account.created"]));
        assert_eq!(patched.body["url"], "http://127.0.0.1:9/h");
        let deleted = app.send(app.request(Method::DELETE, &format!("/v1/webhook_endpoints/{id}"))).await;
        assert_eq!(deleted.body, json!({"object": "webhook_endpoint", "id": id, "deleted": true}));
        app.get(&format!("/v1/webhook_endpoints/{id}")).await.expect_error(404, "not_found");
        let other = app.client_for("globex").await;
        let (mine, _) = endpoint(&app, "http://localhost:9/", json!(["*"])).await;
        other.get(&format!("/v1/webhook_endpoints/{mine}")).await.expect_error(404, "not_found");
        let _ = transfer_body;
    }
}

/// A delivery worker on `app`'s database as another server's would be: its
/// own wake-ups (the projector of `app` cannot wake it in process), polling
/// every `poll` and listening for PostgreSQL notifications when `listens`.
fn worker_of_another_server(app: &crate::app::TestApp, poll: std::time::Duration, listens: bool) -> settle_api::webhooks::worker::DeliveryHandle {
    use settle_api::webhooks::worker::WebhookConfig;
    let config = WebhookConfig { poll_interval: poll, wakes_on_notify: listens, ..TestOptions::default().webhooks };
    let state =
        app.state.clone().with_events(Arc::new(settle_api::events::EventsHub::default())).with_webhooks(settle_api::webhooks::Webhooks::new(config).unwrap());
    settle_api::webhooks::worker::spawn(state)
}

/// `app` restarted without its projector and delivery worker, the old
/// projector's lease lapsed, so that a test starts its own.
async fn without_background(mut app: crate::app::TestApp) -> crate::app::TestApp {
    app.restart(TestOptions { events: false, ..TestOptions::default() }).await;
    // The first server's projector lease lapses (it was stopped as by a crash).
    app.clock.advance_secs(settle_api::events::projector::LEASE_SECS + 1);
    app
}

/// The projector of `app`, polling often (the tests here start servers without one).
fn projector_of(app: &crate::app::TestApp) -> settle_api::events::projector::ProjectorHandle {
    let config = settle_api::events::projector::ProjectorConfig { poll_interval: std::time::Duration::from_millis(20), ..Default::default() };
    settle_api::events::projector::spawn(app.state.clone(), config)
}

ledger_test! {
    async fn after_a_round_that_caught_up_the_projector_lets_records_gather_before_the_next(app) {
        let app = without_background(app).await;
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let gather = std::time::Duration::from_secs(2);
        let config = settle_api::events::projector::ProjectorConfig { poll_interval: std::time::Duration::from_millis(20), gather };
        let projector = settle_api::events::projector::spawn(app.state.clone(), config);
        // Its first round takes both accounts' events and so caught up: it pauses.
        events_at_least(&app.api, "", 2).await;
        let paused = std::time::Instant::now();
        let tx = app.transfer_ok(&funding, &wallet, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // (A machine so slow that the pause may be over proves nothing here.)
        if paused.elapsed() < gather / 2 {
            let listed = app.api.list_all(&format!("/v1/events?object_id={tx}")).await;
            assert!(listed.is_empty(), "a commit during the pause waits for the next round, but {} event(s) are listed", listed.len());
        }
        // The round after the pause takes it.
        events_at_least(&app.api, &format!("?object_id={tx}"), 1).await;
        projector.stop().await;
    }
}

ledger_test! {
    async fn deliveries_need_no_wake_up_a_worker_that_only_polls_delivers_everything(app) {
        let app = without_background(app).await;
        let receiver = Receiver::start(200).await;
        let (endpoint_id, secret) = endpoint(&app, &receiver.url, json!(["*"])).await;
        let projector = projector_of(&app);
        // Never woken: no notification, and a hub nobody signals.
        let worker = worker_of_another_server(&app, std::time::Duration::from_millis(50), false);
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        for amount in 1..=5 {
            app.transfer_ok(&funding, &wallet, amount).await;
        }
        let got = receiver.until("all seven events", |r| r.len() >= 7).await;
        assert!(got.iter().all(|d| verifies(d, &secret)));
        let ids: BTreeSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 7, "each event once");
        recorded(&app, &endpoint_id, 7).await;
        worker.stop().await;
        projector.stop().await;
    }
}

ledger_test! {
    async fn on_postgresql_events_stored_by_another_server_wake_a_worker_at_once(app) {
        let app = without_background(app).await;
        if !app.store.announces_stored_events() {
            // SQLite: one server per file, nothing to listen for; listening returns at once.
            app.store.listen_events_stored(|| panic!("no notification on SQLite")).await.unwrap();
            return;
        }
        let receiver = Receiver::start(200).await;
        let (endpoint_id, _) = endpoint(&app, &receiver.url, json!(["ledger.transaction.created"])).await;
        let projector = projector_of(&app);
        // It polls once an hour: only a notification can make it deliver within the test's deadline.
        let worker = worker_of_another_server(&app, std::time::Duration::from_secs(3600), true);
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        app.transfer_ok(&funding, &wallet, 1).await;
        receiver.until("the first transfer's event", |r| !r.is_empty()).await;
        recorded(&app, &endpoint_id, 1).await;
        // By now the worker has claimed, sent and recorded: it is waiting.
        for amount in 2..=4 {
            let tx = app.transfer_ok(&funding, &wallet, amount).await;
            let got = receiver.until("the next transfer's event, woken by a notification", |r| r.iter().any(|d| d.json()["data"]["object"]["id"] == tx)).await;
            assert_eq!(got.len(), usize::try_from(amount).unwrap(), "each event once");
        }
        worker.stop().await;
        projector.stop().await;
    }
}

ledger_test! {
    async fn two_servers_share_the_deliveries_and_send_each_once(app) {
        let app = without_background(app).await;
        let receiver = Receiver::start(200).await;
        let (endpoint_id, _) = endpoint(&app, &receiver.url, json!(["ledger.transaction.created"])).await;
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        for amount in 1..=40 {
            app.transfer_ok(&funding, &wallet, amount).await;
        }
        // Both workers start while the 40 deliveries are being stored, and race for them.
        let workers = [
            worker_of_another_server(&app, std::time::Duration::from_millis(5), true),
            worker_of_another_server(&app, std::time::Duration::from_millis(5), true),
        ];
        let projector = projector_of(&app);
        recorded(&app, &endpoint_id, 40).await;
        for worker in workers {
            worker.stop().await;
        }
        projector.stop().await;
        let got = receiver.all();
        let ids: BTreeSet<&str> = got.iter().map(|d| d.id.as_str()).collect();
        assert_eq!((got.len(), ids.len()), (40, 40), "every delivery sent exactly once");
        assert_eq!(app.list_all(&format!("/v1/webhook_endpoints/{endpoint_id}/attempts")).await.len(), 40, "and recorded once");
    }
}

ledger_test! {
    async fn an_event_from_before_any_endpoint_is_delivered_with_its_object(app) {
        // No endpoint yet: the transfer's event is stored with its object left to the reader.
        let (from, to) = (app.account("debit", None).await, app.account("credit", None).await);
        let transfer = app.transfer_ok(&from, &to, 1_234).await;
        let listed = eventually("the transfer's event", || {
            let api = app.api.clone();
            let path = format!("/v1/events?object_id={transfer}");
            async move { api.get(&path).await.body["data"].as_array().and_then(|d| d.first().cloned()) }
        })
        .await;
        assert_eq!((listed["type"].as_str(), listed["data"]["object"]["id"].as_str()), (Some("ledger.transaction.created"), Some(transfer.as_str())));
        assert_eq!(listed["data"]["object"]["entries"][0]["amount"], 1_234);
        let event = listed["id"].as_str().unwrap().to_owned();
        assert_eq!(app.get(&format!("/v1/events/{event}")).await.body, listed, "one event reads the same alone and in a list");

        let receiver = Receiver::start(200).await;
        let (endpoint_id, _) = endpoint(&app, &receiver.url, json!(["*"])).await;
        app.post(&format!("/v1/events/{event}/redeliver"), &json!({"endpoint_id": endpoint_id})).await.expect_status(200);
        let got = receiver.until("the redelivery", |r| !r.is_empty()).await;
        assert_eq!(got[0].json(), listed, "the delivery carries the object, rendered as GET /v1/events shows it");
    }
}
