//! The operator side of rate limits and HTTP flags: `settle keys create
//! --rate-limit-*` stores a key's own limit, `keys list` shows it, the
//! server enforces it, and bad flags are refused with a message.

use crate::harness::{Server, cli, db_args};
use serde_json::Value;
use std::time::{Duration, Instant};

fn args(words: &[&str], rest: Vec<String>) -> Vec<String> {
    [words.iter().map(|w| (*w).to_owned()).collect(), rest].concat()
}

#[tokio::test]
async fn a_key_created_with_its_own_rate_limit_is_listed_and_held_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).await;
    let base = db_args(dir.path(), None);
    let out = cli(&args(
        &["keys", "create", "--org", "acme", "--environment", "sandbox", "--rate-limit-per-second", "1", "--rate-limit-burst", "2", "--json"],
        base.clone(),
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(key["rate_limit"], serde_json::json!({"per_second": 1, "burst": 2}));
    let listed = cli(&args(&["keys", "list"], base));
    let text = String::from_utf8_lossy(&listed.stdout);
    let id = key["id"].as_str().unwrap();
    assert!(text.lines().any(|l| l.starts_with(id) && l.ends_with("\t1/s burst 2")), "{text}");
    assert!(text.lines().any(|l| !l.starts_with(id) && l.ends_with("\tdefault")), "{text}");

    let client = crate::tls_client();
    let secret = key["secret"].as_str().unwrap();
    let started = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = client.get(format!("{}/v1/accounts", server.url)).bearer_auth(secret).send().await.unwrap();
        let headers = response.headers().clone();
        answers.push((response.status().as_u16(), headers));
    }
    assert_eq!(answers[0].0, 200);
    assert_eq!(answers[0].1.get("ratelimit-policy").unwrap(), "\"api_key\";q=2;w=2");
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(answers[2].0, 429, "the third request within a second is over the key's own burst");
        assert_eq!(answers[2].1.get("retry-after").unwrap(), "1");
    }
}

#[test]
fn bad_rate_limit_and_http_flags_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let base = db_args(dir.path(), None);
    let zero =
        cli(&args(&["keys", "create", "--org", "x", "--environment", "sandbox", "--rate-limit-per-second", "0", "--rate-limit-burst", "5"], base.clone()));
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--rate-limit-per-second"));
    let alone = cli(&args(&["keys", "create", "--org", "x", "--environment", "sandbox", "--rate-limit-per-second", "5"], base.clone()));
    assert!(!alone.status.success(), "a rate without a burst is refused");
    let wildcard = cli(&args(&["serve", "--listen", "127.0.0.1:0", "--cors-allow-origin", "*"], base.clone()));
    assert!(!wildcard.status.success());
    assert!(String::from_utf8_lossy(&wildcard.stderr).contains("--cors-allow-origin"));
    let redis = cli(&args(&["serve", "--listen", "127.0.0.1:0", "--redis-url", "http://user:hunter2@example.com"], base));
    assert!(!redis.status.success());
    let stderr = String::from_utf8_lossy(&redis.stderr);
    assert!(stderr.contains("--redis-url") && !stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_signed_key_can_have_its_own_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let base = db_args(dir.path(), None);
    let out = cli(&args(
        &[
            "keys",
            "create",
            "--org",
            "acme",
            "--environment",
            "live",
            "--require-signature",
            "--rate-limit-per-second",
            "5",
            "--rate-limit-burst",
            "10",
            "--json",
        ],
        base.clone(),
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(key["require_signature"], true);
    assert!(key["signing_secret"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(key["rate_limit"], serde_json::json!({"per_second": 5, "burst": 10}));
    let listed = cli(&args(&["keys", "list"], base));
    let id = key["id"].as_str().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).lines().any(|l| l.starts_with(id) && l.ends_with("\t5/s burst 10")));
}
