//! Webhooks from a real `settle serve`: `kill -9` between commit and
//! delivery loses no event, and `settle trigger` / `settle listen` work
//! against a running server.

use crate::harness::{Api, BIN, Server};
use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use settle_api::webhooks::signature::{WebhookSecret, verify};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Seen = Arc<Mutex<Vec<(String, Vec<u8>, String, i64)>>>;

/// A receiver on 127.0.0.1:0 recording (webhook-id, body, signature, timestamp); answers 200.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let store = Arc::clone(&seen);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = Arc::clone(&store);
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                store.lock().unwrap().push((h("webhook-id"), body.to_vec(), h("webhook-signature"), h("webhook-timestamp").parse().unwrap_or(0)));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (url, seen)
}

/// Every event id the API lists.
async fn all_event_ids(api: &Api) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => String::from("/v1/events?limit=100"),
            Some(id) => format!("/v1/events?limit=100&starting_after={id}"),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        for e in data {
            ids.insert(e["id"].as_str().unwrap().to_owned());
        }
        after = data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
        if page["has_more"] != json!(true) {
            return ids;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_between_commit_and_delivery_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (url, seen) = receiver().await;
    let (status, endpoint) = api.post("/v1/webhook_endpoints", json!({"url": url, "enabled_events": ["*"]})).await;
    assert_eq!(status, 201, "{endpoint}");
    let whsec = WebhookSecret::parse(endpoint["secret"].as_str().unwrap()).unwrap();
    let source = api.account("debit", None).await;
    let sink = api.account("credit", None).await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (api, source, sink, acked, stop) = (api.clone(), source.clone(), sink.clone(), Arc::clone(&acked), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((201, t)) = api.call(reqwest::Method::POST, "/v1/transactions", Some(Api::transfer_body(&source, &sink, 1))).await {
                    acked.lock().unwrap().push(t["id"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 150 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Mid-stream: commits whose events are not projected yet, and events
    // whose deliveries are claimed but not yet recorded.
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    server.restart().await;
    let api = Api::new(&server.url, &secret);
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = all_event_ids(&api).await;
        let delivered: BTreeSet<String> = seen.lock().unwrap().iter().map(|d| d.0.clone()).collect();
        if events.len() >= acked.len() + 2 && events.is_subset(&delivered) {
            assert!(delivered.is_subset(&events), "a delivery with an id that is no event");
            break;
        }
        assert!(Instant::now() < deadline, "after kill -9: {} events, {} delivered, {} acknowledged transfers", events.len(), delivered.len(), acked.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every acknowledged transfer has its event; every delivery verifies;
    // duplicates are only repeats of one webhook-id (retries after the crash).
    let mut created = BTreeSet::new();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for (id, body, signature, timestamp) in seen.lock().unwrap().iter() {
        assert!(verify(&whsec, id, *timestamp, body, signature, *timestamp).is_ok(), "delivery {id} does not verify");
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["id"].as_str(), Some(id.as_str()));
        if event["type"] == "ledger.transaction.created" {
            created.insert(event["data"]["object"]["id"].as_str().unwrap().to_owned());
        }
        *per_id.entry(id.clone()).or_default() += 1;
    }
    assert!(acked.is_subset(&created), "{} acknowledged transfers have no delivered event", acked.difference(&created).count());
    let repeated = per_id.values().filter(|n| **n > 1).count();
    eprintln!("{} events delivered; {repeated} delivered more than once (same webhook-id)", per_id.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_fires_an_event_that_listen_forwards_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).await;
    let (url, seen) = receiver().await;
    let mut listen = tokio::process::Command::new(BIN)
        .args(["listen", "--api-url", &server.url, "--data-dir", dir.path().to_str().unwrap(), "--forward-to", &url, "--events", "ledger.transaction.posted"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = listen.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    let secret = first.split_whitespace().find(|w| w.starts_with("whsec_")).unwrap_or_else(|| panic!("no secret printed: {first}")).to_owned();
    let whsec = WebhookSecret::parse(&secret).unwrap();
    let trigger = tokio::process::Command::new(BIN)
        .args(["trigger", "ledger.transaction.posted", "--api-url", &server.url, "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(trigger.status.success(), "{}", String::from_utf8_lossy(&trigger.stderr));
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.contains("ledger.transaction.posted") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    assert!(line.contains("[200]"), "{line}");
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the subscribed type is forwarded");
    let (id, body, signature, timestamp) = &got[0];
    assert!(verify(&whsec, id, *timestamp, body, signature, *timestamp).is_ok());
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "ledger.transaction.posted");
    assert_eq!(event["data"]["previous_attributes"]["status"], "pending");
}
