//! `GET /metrics`: Prometheus text with what the server did, in bounded labels.

use crate::app::{Backend, TestApp, transfer_body};
use reqwest::Method;

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_errors_replays_and_engine_batches() {
    let app = TestApp::start(Backend::Sqlite).await;
    let a = app.account("debit", None).await;
    let b = app.account("credit", Some(0)).await;
    app.transfer_ok(&a, &b, 100).await;
    app.transfer(&b, &a, 1_000).await.expect_error(422, "insufficient_funds");
    for _ in 0..2 {
        app.post_idempotent("/v1/transactions", "metrics-key", &transfer_body(&a, &b, 5)).await;
    }
    app.get(&format!("/v1/accounts/{a}")).await.expect_status(200);
    app.with_key(None).get("/v1/nowhere").await;
    let odd = reqwest::Method::from_bytes(b"BREW").unwrap();
    app.send(app.request(odd, "/v1/accounts")).await.expect_status(405);

    let reply = app.with_key(None).get("/metrics").await;
    reply.expect_status(200);
    assert!(reply.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")));
    let text = String::from_utf8(reply.bytes.clone()).unwrap();
    let created = sample(&text, r#"settle_http_requests_total{method="POST",route="/v1/transactions",status="201"}"#).unwrap_or(0.0);
    assert!(created >= 2.0, "{text}");
    assert_eq!(sample(&text, r#"settle_http_requests_total{method="GET",route="/v1/accounts/{id}",status="200"}"#), Some(1.0), "routes are templates, not ids");
    assert_eq!(sample(&text, r#"settle_http_requests_total{method="GET",route="unmatched",status="404"}"#), Some(1.0), "{text}");
    assert!(!text.contains(&a), "no id ever becomes a label");
    assert_eq!(sample(&text, r#"settle_http_requests_total{method="other",route="/v1/accounts",status="405"}"#), Some(1.0), "{text}");
    assert!(!text.contains("BREW"), "no client-chosen method becomes a label");
    assert_eq!(sample(&text, r#"settle_http_errors_total{code="insufficient_funds"}"#), Some(1.0));
    assert_eq!(sample(&text, "settle_idempotent_replays_total"), Some(1.0));
    assert!(sample(&text, "settle_engine_batch_duration_seconds_count").is_some_and(|n| n >= 4.0), "{text}");
    assert!(sample(&text, "settle_engine_batch_items_sum").is_some_and(|n| n >= 4.0));
    assert_eq!(sample(&text, "settle_engine_queue_depth"), Some(0.0));
    assert!(text.contains("settle_http_request_duration_seconds_bucket"));
    assert!(text.trim_end().ends_with("# EOF"));
    // Only GET.
    app.send(app.request(Method::POST, "/metrics")).await.expect_status(405);
}
