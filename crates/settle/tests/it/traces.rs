//! OpenTelemetry traces from a real `settle serve`: with `--otlp-endpoint`
//! the request, engine batch, database transaction and webhook attempt
//! spans reach an OTLP/HTTP collector (a small axum route here), linked by
//! the caller's `traceparent`; without it nothing is sent.

use crate::harness::{Api, Server};
use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Exports = Arc<Mutex<Vec<Value>>>;

/// A collector on 127.0.0.1:0 recording every `POST /v1/traces` body (OTLP JSON).
async fn collector() -> (String, Exports) {
    let exports: Exports = Arc::default();
    let store = Arc::clone(&exports);
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let store = Arc::clone(&store);
            async move {
                store.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (url, exports)
}

/// A webhook receiver recording the `traceparent` of each delivery.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = Arc::clone(&seen);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let store = Arc::clone(&store);
            async move {
                store.lock().unwrap().push(headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned());
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

/// Every span of every export, with its resource's `service.name`.
fn spans(exports: &Exports) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for export in exports.lock().unwrap().iter() {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = attribute(&resource["resource"], "service.name").unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

/// An attribute's value as text (strings as they are, numbers printed).
fn attribute(holder: &Value, key: &str) -> Option<String> {
    let found = holder["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    let value = &found["value"];
    value["stringValue"]
        .as_str()
        .map(str::to_owned)
        // OTLP JSON writes 64-bit integers as strings.
        .or_else(|| value["intValue"].as_str().map(str::to_owned))
        .or_else(|| value["intValue"].as_i64().map(|n| n.to_string()))
}

fn named<'a>(spans: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|(_, s)| s["name"] == name).map(|(_, s)| s).collect()
}

/// Stops the server (SIGTERM: the exporter flushes) off the runtime, so the
/// collector keeps answering meanwhile.
async fn terminate(mut server: Server) -> Server {
    tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        assert!(status.success(), "serve exited with {status}");
        server
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_request_its_commit_and_a_webhook_attempt_are_exported_in_the_callers_trace() {
    let (collector_url, exports) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_args(dir.path(), None, &["--otlp-endpoint", &collector_url, "--otlp-service-name", "settle-under-test"]).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (hook_url, deliveries) = receiver().await;
    let (status, endpoint) = api.post("/v1/webhook_endpoints", json!({"url": hook_url, "enabled_events": ["*"]})).await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = crate::tls_client()
        .post(format!("{}/v1/accounts", server.url))
        .bearer_auth(&secret)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"name": "t", "currency": "USD", "normal_balance": "debit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answered = response.headers()["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts[1], caller_trace, "the answer continues the caller's trace: {answered}");
    let request_span = parts[2].to_owned();
    assert_ne!(request_span, caller_span);

    // The account's event is delivered; wait for the attempt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook delivery within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivery_traceparent = deliveries.lock().unwrap()[0].clone();
    let server = terminate(server).await;
    assert!(server.log_text().contains("exporting traces over OTLP/HTTP"), "{}", server.log_text());

    let spans = spans(&exports);
    assert!(!spans.is_empty(), "the collector received no span; log: {}", server.log_text());
    assert!(spans.iter().all(|(service, _)| service == "settle-under-test"));
    let request = named(&spans, "POST /v1/accounts");
    let request = request.iter().find(|s| s["spanId"] == request_span.as_str()).unwrap_or_else(|| panic!("no exported span {request_span}: {spans:?}"));
    assert_eq!(request["traceId"], caller_trace);
    assert_eq!(request["parentSpanId"], caller_span);
    assert_eq!(attribute(request, "http.route").as_deref(), Some("/v1/accounts"));
    assert_eq!(attribute(request, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(attribute(request, "http.response.status_code").as_deref(), Some("201"));
    // The OTLP JSON mapping: enums as integers (SPAN_KIND_SERVER = 2),
    // fixed64 times as decimal strings, span flags saying the parent is remote.
    assert_eq!(request["kind"], 2, "{request}");
    let nanos =
        |field: &str| request[field].as_str().and_then(|t| t.parse::<u64>().ok()).unwrap_or_else(|| panic!("{field} is not a decimal string: {request}"));
    assert!(nanos("startTimeUnixNano") <= nanos("endTimeUnixNano"));
    assert!(nanos("startTimeUnixNano") > 1_700_000_000_000_000_000, "{request}");
    assert_eq!(request["flags"].as_u64().map(|f| f & 0x301), Some(0x301), "sampled, parent known to be remote: {request}");

    // The request's command was committed in a batch of its own: its span
    // is the request's child, and the database transaction the batch's.
    let batch = named(&spans, "engine.batch");
    let batch = batch.iter().find(|s| s["parentSpanId"] == request_span.as_str()).unwrap_or_else(|| panic!("no engine batch under the request: {spans:?}"));
    assert_eq!(batch["traceId"], caller_trace);
    assert_eq!(attribute(batch, "outcome").as_deref(), Some("committed"));
    assert_eq!(attribute(batch, "commands").as_deref(), Some("1"));
    let transaction = named(&spans, "db.transaction");
    let transaction = transaction.iter().find(|s| s["parentSpanId"] == batch["spanId"]).unwrap_or_else(|| panic!("no database transaction under the batch"));
    assert_eq!(attribute(transaction, "db.system.name").as_deref(), Some("sqlite"));
    assert_eq!(transaction["traceId"], caller_trace);

    // The delivery carried the exported attempt span's ids.
    let attempts = named(&spans, "webhook.attempt");
    let attempt = attempts
        .iter()
        .find(|s| format!("00-{}-{}-01", s["traceId"].as_str().unwrap_or(""), s["spanId"].as_str().unwrap_or("")) == delivery_traceparent)
        .unwrap_or_else(|| panic!("no webhook.attempt span named by the delivery's traceparent {delivery_traceparent:?}: {attempts:?}"));
    assert_eq!(attribute(attempt, "webhook.endpoint_id").as_deref(), Some(endpoint_id.as_str()));
    assert_eq!(attribute(attempt, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(attempt, "webhook.next").as_deref(), Some("succeeded"));
    assert_eq!(attempt["kind"], 3, "SPAN_KIND_CLIENT: {attempt}");

    // Nothing secret or personal: no bearer key, no body field, no URL.
    let everything = exports.lock().unwrap().iter().map(Value::to_string).collect::<String>();
    assert!(!everything.contains(&secret), "the API key was exported");
    assert!(!everything.contains("127.0.0.1"), "an address or URL was exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_nothing_is_exported() {
    let (collector_url, exports) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    // Even the SDK's standard variable does not turn exporting on.
    let server = Server::start_with_env(dir.path(), None, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url)]).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    api.account("debit", None).await;
    let response = crate::tls_client().get(format!("{}/readyz", server.url)).send().await.unwrap();
    assert!(response.headers().contains_key("traceparent"), "responses still carry traceparent");
    let server = terminate(server).await;
    assert!(!server.log_text().contains("exporting traces"));
    assert!(exports.lock().unwrap().is_empty(), "something was exported without --otlp-endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request_is_logged_and_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("http://127.0.0.1:{}", crate::harness::free_port());
    // Export every 100 ms instead of every 5 s, so the failure shows at once.
    let server = Server::start_with_env(dir.path(), None, &["--otlp-endpoint", &nobody], &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    api.account("debit", None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log_text().contains("OTLP trace export failed") {
        assert!(Instant::now() < deadline, "no export failure logged: {}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.account("credit", None).await;
    let started = Instant::now();
    let server = terminate(server).await;
    assert!(started.elapsed() < Duration::from_secs(15), "shutdown took {:?}", started.elapsed());
    assert_eq!(server.log_text().matches("OTLP trace export failed").count(), 1, "failures are logged at most once a minute");
}
