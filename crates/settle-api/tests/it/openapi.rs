//! The API document: served, committed, and describing routes that exist.

use crate::app::{Backend, TestApp};
use serde_json::Value;

fn committed() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn served_document_is_the_committed_one() {
    let app = TestApp::start(Backend::Sqlite).await;
    let reply = app.with_key(None).get("/v1/openapi.json").await;
    reply.expect_status(200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let served = String::from_utf8(reply.bytes.clone()).unwrap();
    assert!(served == committed(), "docs/openapi.json is stale: regenerate it with `cargo run -p settle -- openapi > docs/openapi.json`");
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

/// Every documented operation reaches a handler: an unknown route would
/// answer the fallback's "no such endpoint", a wrong method 405.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::start(Backend::Sqlite).await;
    let doc: Value = serde_json::from_str(&committed()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "the ledger endpoints are documented");
    for (path, item) in paths {
        let concrete = path.replace("{id}", "acct_01jdx3q5g3n3n5v8y2w4h6k9m1");
        for method in ["get", "post"] {
            if item.get(method).is_none() {
                continue;
            }
            let reply = match method {
                "get" => app.get(&concrete).await,
                _ => app.post(&concrete, &serde_json::json!({})).await,
            };
            assert_ne!(reply.status, 405, "{method} {path} is documented but not routed");
            assert!(!(reply.status == 404 && reply.body["error"]["message"] == "no such endpoint"), "{method} {path} is documented but not routed");
            let documented = item[method]["responses"].as_object().unwrap();
            assert!(documented.contains_key(&reply.status.to_string()), "{method} {path} answered {} which is not documented", reply.status);
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_error_codes() {
    let doc: Value = serde_json::from_str(&committed()).unwrap();
    let create = &doc["paths"]["/v1/transactions"]["post"]["responses"];
    for (status, code) in [("422", "insufficient_funds"), ("422", "unbalanced_transaction"), ("409", "idempotency_key_in_use"), ("401", "invalid_api_key")] {
        assert!(create[status]["content"]["application/json"]["examples"][code].is_object(), "POST /v1/transactions lacks {code}");
    }
    let get = &doc["paths"]["/v1/accounts/{id}"]["get"]["responses"];
    assert!(get["404"]["content"]["application/json"]["examples"]["not_found"].is_object());
    assert!(get["409"].is_null(), "a read answers no idempotency conflicts");
}

#[tokio::test]
async fn reference_page_is_self_contained() {
    let app = TestApp::start(Backend::Sqlite).await;
    let reply = app.with_key(None).get("/docs").await;
    reply.expect_status(200);
    assert_eq!(reply.header("content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(reply.bytes.clone()).unwrap();
    assert!(html.contains("/v1/openapi.json"), "the page renders the served document");
    for external in ["src=\"http", "href=\"http", "@import", "cdn"] {
        assert!(!html.contains(external), "the page loads nothing from elsewhere ({external})");
    }
}
