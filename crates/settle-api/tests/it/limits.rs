//! Rate limits (in memory and in Redis) and HTTP hygiene: header limits,
//! body limits, the request timeout, engine overload, CORS and security
//! headers, each proved over HTTP against the real router.
//!
//! Redis tests run when `SETTLE_TEST_REDIS_URL` is set (skipped with a note
//! otherwise); each uses a key prefix of its own, so parallel runs never
//! share a bucket.

use crate::app::{Backend, ExtraServer, Reply, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use settle_api::auth::hash_secret;
use settle_api::hygiene::HttpPolicy;
use settle_api::rate_limit::{RateLimits, RedisFailure};
use settle_core::ids::IdGenerator;
use settle_core::tenancy::{Environment, RateLimit, Scope};
use std::time::{Duration, Instant};

/// The variable that names the Redis server for the Redis tests.
const REDIS_URL_VAR: &str = "SETTLE_TEST_REDIS_URL";
/// A port nothing listens on: connecting is refused at once.
const DEAD_REDIS_URL: &str = "redis://127.0.0.1:1";

fn limit(per_second: u32, burst: u32) -> RateLimit {
    RateLimit::new(per_second, burst).unwrap()
}

fn policy(rate_limits: RateLimits) -> HttpPolicy {
    HttpPolicy { rate_limits, ..HttpPolicy::default() }
}

/// Sends and returns the reply without the harness's "never a 5xx" rule, for
/// the 503s this file provokes on purpose; the error envelope is still checked.
async fn send_raw(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap().to_vec();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let reply = Reply { status, headers, body, bytes };
    if reply.status >= 400 {
        let request_id = reply.header("request-id").expect("a Request-Id on every answer");
        assert_eq!(reply.body["error"]["request_id"].as_str(), Some(request_id), "the envelope names the request: {}", reply.body);
        for field in ["type", "code", "message"] {
            assert!(reply.body["error"][field].as_str().is_some_and(|s| !s.is_empty()), "error.{field}: {}", reply.body);
        }
    }
    reply
}

fn account_body() -> Value {
    json!({"name": "limited", "currency": "USD", "normal_balance": "credit"})
}

/// Accounts visible to `app`'s key, read through the store (no HTTP, so no tokens spent).
async fn account_count(app: &TestApp) -> usize {
    let server = app.second_server(policy(RateLimits::in_memory(limit(RateLimit::MAX, RateLimit::MAX), None))).await;
    server.api.list_all("/v1/accounts").await.len()
}

// ---- in-memory rate limits ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_burst_gets_429_with_headers_and_its_request_executes_nothing() {
    let (app, server) = TestApp::start_with_http(Backend::Sqlite, policy(RateLimits::in_memory(limit(1, 3), None)), 1024).await;
    let api = &server.api;
    for remaining in [2, 1, 0] {
        let reply = api.get("/v1/accounts").await;
        reply.expect_status(200);
        assert_eq!(reply.header("ratelimit-policy"), Some("\"api_key\";q=3;w=3"));
        let expected = format!("\"api_key\";r={remaining};t={}", 3 - remaining);
        assert_eq!(reply.header("ratelimit"), Some(expected.as_str()));
    }
    let refused = api.post("/v1/accounts", &account_body()).await;
    refused.expect_error(429, "rate_limited");
    assert_eq!(refused.body["error"]["type"], "invalid_request_error");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit"), Some("\"api_key\";r=0;t=1"));
    assert_eq!(refused.header("ratelimit-policy"), Some("\"api_key\";q=3;w=3"));
    assert_eq!(account_count(&app).await, 0, "a refused POST creates nothing");

    // A second later one token has flowed in: one request, then 429 again.
    app.clock.advance_secs(1);
    api.post("/v1/accounts", &account_body()).await.expect_status(201);
    api.get("/v1/accounts").await.expect_error(429, "rate_limited");
    assert_eq!(account_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_do_not_spend_tokens_and_other_keys_have_their_own_bucket() {
    let (app, server) = TestApp::start_with_http(Backend::Sqlite, policy(RateLimits::in_memory(limit(1, 1), None)), 1024).await;
    let first = &server.api;
    let other = first.with_key(Some(&app.key("acme", Environment::Sandbox, &Scope::ALL).await));
    first.get("/v1/accounts").await.expect_status(200);
    for _ in 0..5 {
        first.get("/v1/accounts").await.expect_error(429, "rate_limited");
    }
    other.get("/v1/accounts").await.expect_status(200);
    app.clock.advance_secs(1);
    first.get("/v1/accounts").await.expect_status(200);
}

async fn a_key_with_its_own_limit_is_held_to_it(backend: Backend) {
    let (app, server) = TestApp::start_with_http(backend, policy(RateLimits::in_memory(limit(100, 100), None)), 1024).await;
    let secret = app.key("acme", Environment::Sandbox, &Scope::ALL).await;
    let id = app.store.find_api_key(hash_secret(&secret)).await.unwrap().unwrap().id;
    assert!(app.store.set_api_key_rate_limit(&id, Some(limit(1, 2))).await.unwrap());
    let stored = app.store.find_api_key(hash_secret(&secret)).await.unwrap().unwrap();
    assert_eq!(stored.rate_limit, Some(limit(1, 2)), "the override is stored (migration 0003)");

    let limited = server.api.with_key(Some(&secret));
    // The key cache may hold the key from before its override for up to half a second.
    crate::app::eventually("the override to apply", || {
        let limited = limited.clone();
        async move { (limited.get("/v1/accounts").await.header("ratelimit-policy") == Some("\"api_key\";q=2;w=2")).then_some(()) }
    })
    .await;
    app.clock.advance_secs(10);
    limited.get("/v1/accounts").await.expect_status(200);
    limited.get("/v1/accounts").await.expect_status(200);
    limited.get("/v1/accounts").await.expect_error(429, "rate_limited");
    // The server's default still applies to the other key.
    let reply = server.api.get("/v1/accounts").await;
    reply.expect_status(200);
    assert_eq!(reply.header("ratelimit-policy"), Some("\"api_key\";q=100;w=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_its_own_limit_is_held_to_it_sqlite() {
    a_key_with_its_own_limit_is_held_to_it(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_its_own_limit_is_held_to_it_postgres() {
    if std::env::var(crate::app::POSTGRES_URL_VAR).is_err() {
        eprintln!("skipped: {} is not set", crate::app::POSTGRES_URL_VAR);
        return;
    }
    a_key_with_its_own_limit_is_held_to_it(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_are_limited_per_client_ip_and_health_checks_never() {
    let (_app, server) = TestApp::start_with_http(Backend::Sqlite, policy(RateLimits::in_memory(limit(100, 100), Some(limit(1, 2)))), 1024).await;
    let guesser = server.api.with_key(Some("sk_sandbox_guessing"));
    for _ in 0..2 {
        let reply = guesser.get("/v1/accounts").await;
        reply.expect_error(401, "invalid_api_key");
        assert!(reply.header("ratelimit").is_some_and(|v| v.starts_with("\"client_ip\";")), "{:?}", reply.headers);
    }
    guesser.get("/v1/accounts").await.expect_error(429, "rate_limited");
    server.api.with_key(None).get("/v1/accounts").await.expect_error(429, "rate_limited");
    // A valid key has a bucket of its own.
    server.api.get("/v1/accounts").await.expect_status(200);
    for _ in 0..10 {
        let health = server.api.with_key(None).get("/healthz").await;
        health.expect_status(200);
        assert_eq!(health.header("ratelimit"), None);
    }
}

// ---- Redis -------------------------------------------------------------

fn redis_url() -> Option<String> {
    let url = std::env::var(REDIS_URL_VAR).ok();
    if url.is_none() {
        eprintln!("skipped: {REDIS_URL_VAR} is not set");
    }
    url
}

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("settle-test:{}:", IdGenerator::default().transaction().as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_together_never_admit_more_than_the_limit() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix();
    let (per_second, burst) = (1, 5);
    let shared = || policy(RateLimits::redis(limit(per_second, burst), None, &url, &prefix, RedisFailure::Closed).unwrap());
    let (app, first) = TestApp::start_with_http(Backend::Sqlite, shared(), 1024).await;
    let second = app.second_server(shared()).await;
    let servers: [&ExtraServer; 2] = [&first, &second];
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..40 {
        let api = servers[i % 2].api.clone();
        calls.push(tokio::spawn(async move { send_raw(api.request(Method::GET, "/v1/accounts")).await }));
    }
    let (mut admitted, mut refused) = (0u64, 0u64);
    for call in calls {
        let reply = call.await.unwrap();
        match reply.status {
            200 => admitted += 1,
            429 => {
                assert_eq!(reply.code(), "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    // Tokens that flowed in while the test ran may add to the burst, never more.
    let ceiling = u64::from(burst) + started.elapsed().as_secs().saturating_add(1) * u64::from(per_second);
    assert!(admitted >= u64::from(burst), "the burst is admitted: {admitted}");
    assert!(admitted <= ceiling, "two servers admitted {admitted} > {ceiling}: they do not share the bucket");
    assert_eq!(admitted + refused, 40);
    // Both servers answer from the same bucket: it is empty for each of them.
    for server in servers {
        let reply = send_raw(server.api.request(Method::GET, "/v1/accounts")).await;
        assert!(reply.status == 429 || started.elapsed() > Duration::from_secs(1), "{}", reply.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_fail_open_admits_within_this_servers_own_limit() {
    let prefix = unique_prefix();
    let limits = RateLimits::redis(limit(1, 2), None, DEAD_REDIS_URL, &prefix, RedisFailure::Open).unwrap();
    let (app, server) = TestApp::start_with_http(Backend::Sqlite, policy(limits), 1024).await;
    let started = Instant::now();
    let created = server.api.post("/v1/accounts", &account_body()).await;
    created.expect_status(201);
    assert_eq!(created.header("ratelimit"), Some("\"api_key\";r=1;t=1"), "the local bucket answers");
    server.api.get("/v1/accounts").await.expect_status(200);
    server.api.get("/v1/accounts").await.expect_error(429, "rate_limited");
    assert!(started.elapsed() < Duration::from_secs(2), "a dead Redis must not stall requests: {:?}", started.elapsed());
    assert_eq!(account_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_fail_closed_refuses_with_503_and_executes_nothing() {
    let prefix = unique_prefix();
    let limits = RateLimits::redis(limit(100, 100), None, DEAD_REDIS_URL, &prefix, RedisFailure::Closed).unwrap();
    let (app, server) = TestApp::start_with_http(Backend::Sqlite, policy(limits), 1024).await;
    let started = Instant::now();
    for _ in 0..3 {
        let reply = send_raw(server.api.request(Method::POST, "/v1/accounts").json(&account_body())).await;
        assert_eq!((reply.status, reply.code()), (503, "rate_limiter_unavailable"), "{}", reply.body);
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "a dead Redis must not stall requests: {:?}", started.elapsed());
    assert_eq!(account_count(&app).await, 0);
}

// ---- header and body limits ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_answer_431() {
    let app = TestApp::start(Backend::Sqlite).await;
    let mut request = app.request(Method::GET, "/v1/accounts");
    for i in 0..70 {
        request = request.header(format!("x-extra-{i}"), "1");
    }
    app.send(request).await.expect_error(431, "request_headers_too_large");
    let big = "a".repeat(40 * 1024);
    app.send(app.request(Method::GET, "/v1/accounts").header("x-big", big)).await.expect_error(431, "request_headers_too_large");
    // Past hyper's own limit (100 headers) hyper answers before the router: still 431.
    let mut request = app.request(Method::GET, "/v1/accounts");
    for i in 0..150 {
        request = request.header(format!("x-extra-{i}"), "1");
    }
    let status = request.send().await.map(|r| r.status().as_u16());
    assert!(matches!(status, Ok(431)), "{status:?}");
    app.get("/v1/accounts").await.expect_status(200);
    // Exactly the limit passes: the server's own headers (a correlation id it
    // generates) do not count against the client's.
    let exactly = |headers: usize| {
        let address = app.url.trim_start_matches("http://").to_owned();
        let mut head = format!("GET /v1/accounts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n", app.key.as_deref().unwrap());
        for i in 2..headers {
            head.push_str(&format!("x-extra-{i}: 1\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    };
    assert_eq!(raw_status(&app, exactly(64), false).await, 200, "64 headers");
    assert_eq!(raw_status(&app, exactly(65), false).await, 431, "65 headers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_one_mib_answer_413_with_or_without_a_length_and_create_nothing() {
    let app = TestApp::start(Backend::Sqlite).await;
    let mut big = account_body();
    big["metadata"] = json!({"pad": "x".repeat(1024 * 1024 + 10)});
    let bytes = serde_json::to_vec(&big).unwrap();
    app.post_raw("/v1/accounts", bytes.clone()).await.expect_error(413, "request_too_large");
    assert_eq!(chunked_post_status(&app, "/v1/accounts", &bytes).await, 413, "without Content-Length (chunked) too");
    // A body broken on the way is no size at all: the client's fault, a 400.
    assert_eq!(raw_chunked_post_status(&app, "/v1/accounts", b"2\r\n{}".to_vec()).await, 400, "chunks that end without their last");
    assert!(app.list_all("/v1/accounts").await.is_empty());
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no length) over a raw
/// connection and returns the status of the answer.
async fn chunked_post_status(app: &TestApp, path: &str, body: &[u8]) -> u16 {
    let mut chunks = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        chunks.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunks.extend_from_slice(chunk);
        chunks.extend_from_slice(b"\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    raw_chunked_post_status(app, path, chunks).await
}

/// POSTs `chunks`, already in chunked encoding (or not quite), over a raw
/// connection and returns the status of the answer.
async fn raw_chunked_post_status(app: &TestApp, path: &str, chunks: Vec<u8>) -> u16 {
    let address = app.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.key.as_deref().unwrap()
    );
    let mut wire = head.into_bytes();
    wire.extend_from_slice(&chunks);
    // Then the client stops sending (and keeps reading): a body cut short
    // ends there. (The server drops a connection closed this way before
    // answering a request it had in full: this is for refusals only.)
    raw_status(app, wire, true).await
}

/// Sends `wire` as it is over a new connection (then, with `close`, stops
/// sending) and returns the status of the answer.
async fn raw_status(app: &TestApp, wire: Vec<u8>, close: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The server may answer (and stop reading) before the request is sent.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&wire).await;
        if close {
            let _ = writer.shutdown().await;
        }
        writer
    });
    let mut answer = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = reader.read(&mut answer[read..]).await.unwrap();
        assert!(n > 0, "connection closed before a status line");
        read += n;
    }
    writing.abort();
    let line = String::from_utf8_lossy(&answer[..read]).into_owned();
    line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {line:?}"))
}

// ---- timeout and overload ------------------------------------------------

/// Holds SQLite's write lock, so the engine cannot start a batch until dropped.
fn stall_engine(app: &TestApp) -> rusqlite::Connection {
    let settle_store::Store::Sqlite(store) = &app.store else { panic!("SQLite only") };
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_answers_503_and_a_retry_with_its_key_learns_the_outcome() {
    let http = HttpPolicy { request_timeout: Duration::from_millis(300), ..HttpPolicy::default() };
    let (app, server) = TestApp::start_with_http(Backend::Sqlite, http, 1024).await;
    let lock = stall_engine(&app);
    let started = Instant::now();
    let request = server.api.request(Method::POST, "/v1/accounts").header("Idempotency-Key", "slow-1").json(&account_body());
    let reply = send_raw(request).await;
    assert_eq!((reply.status, reply.code()), (503, "request_timeout"), "{}", reply.body);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("Idempotency-Key"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(lock);
    // The write was already with the engine: it commits, and the retry says so.
    let retry = crate::app::eventually("the retry to succeed", || {
        let api = server.api.clone();
        async move {
            let reply = send_raw(api.request(Method::POST, "/v1/accounts").header("Idempotency-Key", "slow-1").json(&account_body())).await;
            (reply.status == 201).then_some(reply)
        }
    })
    .await;
    assert_eq!(retry.body["name"], "limited");
    assert_eq!(account_count(&app).await, 1, "one account, however many retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_queue_answers_503_overloaded_at_once_and_executes_nothing() {
    let (app, server) = TestApp::start_with_http(Backend::Sqlite, HttpPolicy::default(), 1).await;
    let lock = stall_engine(&app);
    let (sender, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let (api, sender) = (server.api.clone(), sender.clone());
        tokio::spawn(async move {
            let _ = sender.send(send_raw(api.request(Method::POST, "/v1/accounts").json(&account_body())).await);
        });
    }
    drop(sender);
    // The stalled engine holds at most two commands and its queue one more:
    // at least seven answers come back while it is stalled, all refusals.
    let mut overloaded = 0;
    for _ in 0..7 {
        let reply = answers.recv().await.unwrap();
        assert_eq!((reply.status, reply.code()), (503, "overloaded"), "{}", reply.body);
        assert_eq!(reply.header("retry-after"), Some("1"));
        overloaded += 1;
    }
    drop(lock);
    let mut created = 0;
    while let Some(reply) = answers.recv().await {
        match (reply.status, reply.code()) {
            (201, _) => created += 1,
            (503, "overloaded") => overloaded += 1,
            other => panic!("unexpected {other:?}: {}", reply.body),
        }
    }
    assert_eq!(created + overloaded, 10);
    assert!(created >= 1, "what was queued runs once the engine is free");
    assert_eq!(account_count(&app).await, created, "an overloaded request creates nothing");
}

// ---- CORS and security headers -------------------------------------------

fn preflight(api: &crate::app::Api, origin: &str) -> reqwest::RequestBuilder {
    api.with_key(None)
        .request(Method::OPTIONS, "/v1/accounts")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,idempotency-key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default() {
    let app = TestApp::start(Backend::Sqlite).await;
    let reply = send_raw(preflight(&app.api, "https://app.example.com")).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    let get = app.send(app.request(Method::GET, "/v1/accounts").header("origin", "https://app.example.com")).await;
    get.expect_status(200);
    assert_eq!(get.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_for_configured_origins_only() {
    let http = HttpPolicy { cors_allow_origins: vec![reqwest::header::HeaderValue::from_static("https://app.example.com")], ..HttpPolicy::default() };
    let (_app, server) = TestApp::start_with_http(Backend::Sqlite, http, 1024).await;
    let allowed = send_raw(preflight(&server.api, "https://app.example.com")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://app.example.com"));
    let methods = allowed.header("access-control-allow-methods").unwrap().to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let headers = allowed.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
    assert!(headers.contains("authorization") && headers.contains("idempotency-key"), "{headers}");
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));

    let other = send_raw(preflight(&server.api, "https://evil.example.com")).await;
    assert_eq!(other.header("access-control-allow-origin"), None, "an unlisted origin gets no grant");

    let get = server.api.send(server.api.request(Method::GET, "/v1/accounts").header("origin", "https://app.example.com")).await;
    get.expect_status(200);
    assert_eq!(get.header("access-control-allow-origin"), Some("https://app.example.com"));
    let exposed = get.header("access-control-expose-headers").unwrap().to_ascii_lowercase();
    assert!(exposed.contains("request-id") && exposed.contains("ratelimit") && exposed.contains("retry-after"), "{exposed}");
}

fn assert_security_headers(reply: &Reply) {
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "on a {}", reply.status);
    assert_eq!(reply.header("x-frame-options"), Some("DENY"), "on a {}", reply.status);
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"), "on a {}", reply.status);
    assert_eq!(reply.header("cache-control"), Some("no-store"), "on a {}", reply.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers_and_hsts_only_when_configured() {
    let app = TestApp::start(Backend::Sqlite).await;
    let ok = app.get("/v1/accounts").await;
    let created = app.post("/v1/accounts", &account_body()).await;
    let missing = app.get("/v1/nothing-here").await;
    let unauthenticated = app.with_key(None).get("/v1/accounts").await;
    let health = app.get("/healthz").await;
    for reply in [&ok, &created, &missing, &unauthenticated, &health] {
        assert_security_headers(reply);
        assert_eq!(reply.header("strict-transport-security"), None);
    }
    assert_eq!((created.status, missing.status, unauthenticated.status), (201, 404, 401));

    let http = HttpPolicy { hsts_max_age_secs: Some(31_536_000), ..HttpPolicy::default() };
    let server = app.second_server(http).await;
    let reply = server.api.get("/v1/accounts").await;
    assert_security_headers(&reply);
    assert_eq!(reply.header("strict-transport-security"), Some("max-age=31536000"));
}
