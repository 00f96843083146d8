//! `X-Correlation-Id` and W3C `traceparent` (docs/correlation.md): ids are
//! validated or generated, echoed on every response, stored on the objects
//! a request creates, and written into every log line of the request.

use crate::app::{TestApp, ledger_test, transfer_body};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

fn account_body() -> Value {
    json!({"name": "correlated", "currency": "USD", "normal_balance": "credit"})
}

fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

#[track_caller]
fn assert_valid_traceparent(value: &str) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    assert!(parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && parts[1] != "0".repeat(32), "{value}");
    assert!(parts[2].len() == 16 && parts[2].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && parts[2] != "0".repeat(16), "{value}");
    assert_eq!(parts[3].len(), 2, "{value}");
}

ledger_test! {
    async fn a_correlation_id_is_echoed_and_stored_on_every_object_the_request_creates(app) {
        let send = |path: &str, body: Value, id: &str| app.send(app.request(Method::POST, path).header("X-Correlation-Id", id).json(&body));
        let reply = send("/v1/accounts", account_body(), "order-1042").await;
        reply.expect_status(201);
        assert_eq!(reply.header("x-correlation-id"), Some("order-1042"));
        assert_eq!(reply.body["correlation_id"], "order-1042");
        let alice = reply.id();
        assert_eq!(app.account_json(&alice).await["correlation_id"], "order-1042");
        let funding = app.account("debit", None).await;

        let reply = send("/v1/transactions", transfer_body(&funding, &alice, 500), "payout:2026-01.run_7").await;
        reply.expect_status(201);
        let transfer = reply.id();
        assert_eq!(reply.body["correlation_id"], "payout:2026-01.run_7");
        let read = app.get(&format!("/v1/transactions/{transfer}")).await;
        assert_eq!(read.body["correlation_id"], "payout:2026-01.run_7");

        // A reversal is a new object: it carries the reversing request's id,
        // and the original keeps its own.
        let reply = send(&format!("/v1/transactions/{transfer}/reverse"), json!({}), "refund-77").await;
        reply.expect_status(201);
        assert_eq!(reply.body["correlation_id"], "refund-77");
        assert_eq!(app.get(&format!("/v1/transactions/{transfer}")).await.body["correlation_id"], "payout:2026-01.run_7");

        // Every item of a batch carries the batch request's id.
        let batch = json!({"atomic": false, "transactions": [transfer_body(&funding, &alice, 1), transfer_body(&funding, &alice, 2)]});
        let reply = send("/v1/transactions/batch", batch, "batch-9").await;
        reply.expect_status(200);
        for result in reply.body["results"].as_array().unwrap() {
            let id = result["transaction"]["id"].as_str().unwrap();
            assert_eq!(app.get(&format!("/v1/transactions/{id}")).await.body["correlation_id"], "batch-9");
        }
        let listed = app.list_all(&format!("/v1/transactions?account_id={alice}")).await;
        assert!(listed.iter().all(|t| t["correlation_id"].is_string()), "lists show it too");

        // Posting a hold changes it but creates nothing: it keeps the hold's id.
        let mut hold = transfer_body(&alice, &funding, 10);
        hold["status"] = json!("pending");
        let hold = send("/v1/transactions", hold, "hold-1").await.id();
        let posted = send(&format!("/v1/transactions/{hold}/post"), json!({}), "capture-1").await;
        posted.expect_status(200);
        assert_eq!(posted.header("x-correlation-id"), Some("capture-1"));
        assert_eq!(posted.body["correlation_id"], "hold-1");
    }
}

ledger_test! {
    async fn without_a_correlation_id_one_is_generated_echoed_and_stored(app) {
        let reply = app.post("/v1/accounts", &account_body()).await;
        reply.expect_status(201);
        let generated = reply.header("x-correlation-id").unwrap().to_owned();
        assert!(generated.starts_with("corr_") && generated.len() > 5, "{generated}");
        assert_eq!(reply.body["correlation_id"], generated.as_str());
        let again = app.post("/v1/accounts", &account_body()).await;
        assert_ne!(again.header("x-correlation-id"), Some(generated.as_str()), "one per request");
        // Every response carries one, errors and reads included.
        for reply in [app.get("/v1/accounts").await, app.get("/v1/nowhere").await, app.api.with_key(None).get("/v1/accounts").await, app.get("/healthz").await] {
            assert!(reply.header("x-correlation-id").is_some_and(|c| c.starts_with("corr_")), "{:?}", reply.headers);
        }
    }
}

ledger_test! {
    async fn an_invalid_correlation_id_is_refused_with_400_and_changes_nothing(app) {
        let long = "x".repeat(129);
        for bad in ["has space", "slash/inside", "", long.as_str(), "quote\"d"] {
            let reply = app.send(app.request(Method::POST, "/v1/accounts").header("X-Correlation-Id", bad).json(&account_body())).await;
            reply.expect_error(400, "invalid_request");
            assert_eq!(reply.param(), Some("X-Correlation-Id"), "{}", reply.body);
            assert!(reply.header("x-correlation-id").is_some_and(|c| c.starts_with("corr_")), "answered under a generated id");
            assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "a refusal carries the security headers too");
            assert!(reply.header("request-id").is_some() && reply.header("settle-version").is_some());
        }
        let twice = app.request(Method::POST, "/v1/accounts").header("X-Correlation-Id", "a").header("X-Correlation-Id", "b").json(&account_body());
        app.send(twice).await.expect_error(400, "invalid_request");
        let max = "y".repeat(128);
        let reply = app.send(app.request(Method::GET, "/v1/accounts").header("X-Correlation-Id", max.as_str())).await;
        reply.expect_status(200);
        assert_eq!(reply.header("x-correlation-id"), Some(max.as_str()));
        assert_eq!(reply.body["data"], json!([]), "no refused request created an account");
    }
}

#[tokio::test]
async fn a_valid_traceparent_is_honoured_and_propagated_with_its_tracestate() {
    let app = TestApp::start(crate::app::Backend::Sqlite).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = app.request(Method::GET, "/v1/accounts").header("traceparent", incoming).header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    let reply = app.send(request).await;
    reply.expect_status(200);
    let outgoing = reply.header("traceparent").unwrap();
    assert_valid_traceparent(outgoing);
    assert_eq!(trace_id_of(outgoing), "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(outgoing.split('-').nth(2), Some("00f067aa0ba902b7"), "our own span id");
    assert!(outgoing.ends_with("-01"), "the caller's sampled flag is kept");
    assert_eq!(reply.header("tracestate"), Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
    // An unsampled caller stays unsampled.
    let reply = app.send(app.request(Method::GET, "/v1/accounts").header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).await;
    assert!(reply.header("traceparent").unwrap().ends_with("-00"));
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_fresh_trace_and_is_not_an_error() {
    let app = TestApp::start(crate::app::Backend::Sqlite).await;
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "garbage",
    ] {
        let request = app.request(Method::POST, "/v1/accounts").header("traceparent", bad).header("tracestate", "congo=t61rcWkgMzE").json(&account_body());
        let reply = app.send(request).await;
        reply.expect_status(201);
        let outgoing = reply.header("traceparent").unwrap();
        assert_valid_traceparent(outgoing);
        assert_ne!(trace_id_of(outgoing), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(reply.header("tracestate"), None, "tracestate is dropped with an invalid traceparent");
    }
    // Without one, every request starts its own trace.
    let (a, b) = (app.get("/v1/accounts").await, app.get("/v1/accounts").await);
    let (a, b) = (a.header("traceparent").unwrap().to_owned(), b.header("traceparent").unwrap().to_owned());
    assert_valid_traceparent(&a);
    assert_ne!(trace_id_of(&a), trace_id_of(&b));
}

/// Log lines written by this test binary, captured once for all tests in
/// the production format (JSON, one line per event, span fields listed).
pub(crate) fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
    .clone()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_log_line_of_a_request_names_its_request_correlation_and_trace_ids() {
    let logs = captured_logs();
    let app = TestApp::start(crate::app::Backend::Sqlite).await;
    // A request whose handling logs more than the access line: a signed key
    // refused for its missing signature logs the refusal, then the access line.
    let key_id = settle_core::ids::IdGenerator::default().api_key();
    let secret = format!("sk_sandbox_{}", key_id.as_str().trim_start_matches("key_"));
    let sealed = app.master_key.encrypt(&key_id, &settle_api::signing::vault::SigningSecret::generate()).unwrap();
    app.store
        .create_signed_api_key(
            "logs",
            settle_core::tenancy::Environment::Sandbox,
            &key_id,
            &settle_core::ids::IdGenerator::default().org(),
            &settle_api::auth::hash_secret(&secret),
            &settle_core::tenancy::Scope::ALL,
            &sealed,
            app.now(),
        )
        .await
        .unwrap();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let request =
        app.api.with_key(Some(&secret)).request(Method::GET, "/v1/accounts").header("X-Correlation-Id", "logs-check-1").header("traceparent", traceparent);
    let reply = app.send(request).await;
    reply.expect_error(401, "invalid_signature");
    let request_id = reply.header("request-id").unwrap().to_owned();

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|l: &Value| l.to_string().contains(&request_id)).collect();
    assert!(lines.len() >= 2, "the refusal and the access line, at least: {lines:?}");
    assert!(lines.iter().any(|l| l["message"] == "request signature refused"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l["message"] == "request" && l["correlation_id"] == "logs-check-1" && l["trace_id"] == "0af7651916cd43dd8448eb211c80319c"),
        "{lines:?}"
    );
    for line in &lines {
        let span = line["spans"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "request")).unwrap_or_else(|| panic!("no request span in {line}"));
        assert_eq!(span["request_id"], request_id.as_str(), "{line}");
        assert_eq!(span["correlation_id"], "logs-check-1", "{line}");
        assert_eq!(span["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{line}");
    }
    assert!(!text.contains(&secret), "secrets never reach the logs");
}
