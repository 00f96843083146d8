//! Signed requests (docs/signing.md): keys created with
//! `--require-signature` must send RFC 9421 signatures with RFC 9530
//! `Content-Digest`; anything missing, wrong, stale or replayed answers
//! `401 invalid_signature` and executes nothing.
//!
//! The client side here is written from the RFCs and the doc, not from the
//! server's code, so a server that drifted from either fails these tests.

use crate::app::{Api, Reply, TestApp, ledger_test};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use settle_api::signing::vault::SigningSecret;
use settle_core::clock::Clock;
use settle_core::ids::{ApiKeyId, IdGenerator};
use settle_core::tenancy::{Environment, Scope};
use sha2::{Digest, Sha256};

/// The worked example of docs/signing.md, value for value.
mod worked_example {
    pub const KEY_ID: &str = "key_01jh2s4cb6tw7n6k2q9f8e3d1a";
    pub const SIGNING_SECRET: &str = "ssk_docsExampleSigningSecret0123456789abcdef";
    pub const BODY: &str = r#"{"name":"Alice wallet","currency":"USD","normal_balance":"credit"}"#;
    pub const CREATED: i64 = 1_767_225_600;
    pub const NONCE: &str = "k7Yp2vQx9Lm3Rt8w";
    pub const CONTENT_DIGEST: &str = "sha-256=:L/wr2TssnqT+q89wFLO+4hFQox2e9FODT0NP30Kb8yM=:";
    pub const SIGNATURE_INPUT: &str =
        r#"sig1=("@method" "@path" "content-digest");created=1767225600;nonce="k7Yp2vQx9Lm3Rt8w";keyid="key_01jh2s4cb6tw7n6k2q9f8e3d1a";alg="hmac-sha256""#;
    pub const SIGNATURE_BASE: &str = concat!(
        "\"@method\": POST\n",
        "\"@path\": /v1/accounts\n",
        "\"content-digest\": sha-256=:L/wr2TssnqT+q89wFLO+4hFQox2e9FODT0NP30Kb8yM=:\n",
        "\"@signature-params\": (\"@method\" \"@path\" \"content-digest\");created=1767225600;nonce=\"k7Yp2vQx9Lm3Rt8w\";keyid=\"key_01jh2s4cb6tw7n6k2q9f8e3d1a\";alg=\"hmac-sha256\"",
    );
    pub const SIGNATURE: &str = "sig1=:paqx6zMptgpXnk2kTc1cWIyYL7/g6ClDjTUgG931q54=:";
}

/// A client key that must sign, with what it signs with.
struct Signer {
    api: Api,
    key_id: String,
    secret: String,
}

/// How a test wants a request signed (each field can be broken on purpose).
struct Signed<'a> {
    method: &'a str,
    path: &'a str,
    body: &'a [u8],
    created: i64,
    nonce: String,
    components: &'a [&'a str],
    /// The Content-Digest sent; `None`: the digest of `body`.
    digest: Option<String>,
    secret: Option<&'a str>,
    keyid: Option<&'a str>,
}

fn digest_of(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

fn nonce() -> String {
    IdGenerator::default().transaction().as_str().trim_start_matches("ltx_").to_owned()
}

/// The signature base for `@method`, `@path` and `content-digest`, built as RFC 9421 §2.5 says.
fn base_of(method: &str, path: &str, digest: &str, components: &[&str], params: &str) -> String {
    let mut base = String::new();
    for c in components {
        let value = match *c {
            "@method" => method.to_owned(),
            "@path" => path.to_owned(),
            "content-digest" => digest.to_owned(),
            other => panic!("test signer does not derive {other}"),
        };
        base.push_str(&format!("\"{c}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {params}"));
    base
}

fn hmac_b64(secret: &str, base: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(base.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

impl Signer {
    async fn new(app: &TestApp, org: &str) -> Signer {
        let ids = IdGenerator::default();
        let key_id = ids.api_key();
        let (api, secret) = signed_key(app, org, &key_id, &SigningSecret::generate()).await;
        Signer { api, key_id: key_id.to_string(), secret }
    }

    fn defaults<'a>(&self, app: &TestApp, method: &'a str, path: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            method,
            path,
            body,
            created: app.now().micros() / 1_000_000,
            nonce: nonce(),
            components: &["@method", "@path", "content-digest"],
            digest: None,
            secret: None,
            keyid: None,
        }
    }

    fn request(&self, s: &Signed<'_>) -> reqwest::RequestBuilder {
        let digest = s.digest.clone().unwrap_or_else(|| digest_of(s.body));
        let list: Vec<String> = s.components.iter().map(|c| format!("\"{c}\"")).collect();
        let params =
            format!("({});created={};nonce=\"{}\";keyid=\"{}\";alg=\"hmac-sha256\"", list.join(" "), s.created, s.nonce, s.keyid.unwrap_or(&self.key_id));
        // @path is the path alone: a query is not part of it.
        let path = s.path.split('?').next().unwrap_or(s.path);
        let base = base_of(s.method, path, &digest, s.components, &params);
        let signature = hmac_b64(s.secret.unwrap_or(&self.secret), &base);
        let method = Method::from_bytes(s.method.as_bytes()).unwrap();
        self.api
            .request(method, s.path)
            .header("content-type", "application/json")
            .header("content-digest", digest)
            .header("signature-input", format!("sig1={params}"))
            .header("signature", format!("sig1=:{signature}:"))
            .body(s.body.to_vec())
    }

    async fn send(&self, s: &Signed<'_>) -> Reply {
        self.api.send(self.request(s)).await
    }

    async fn post(&self, app: &TestApp, path: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(&self.defaults(app, "POST", path, &bytes)).await
    }

    async fn get(&self, app: &TestApp, path: &str) -> Reply {
        self.send(&self.defaults(app, "GET", path, b"")).await
    }

    /// The tenant's accounts, read with a signed GET.
    async fn account_count(&self, app: &TestApp) -> usize {
        let reply = self.get(app, "/v1/accounts?limit=100").await;
        reply.expect_status(200);
        reply.body["data"].as_array().map_or(0, Vec::len)
    }
}

/// Creates a key of `org` that must sign, with a known id and signing secret.
async fn signed_key(app: &TestApp, org: &str, key_id: &ApiKeyId, signing_secret: &SigningSecret) -> (Api, String) {
    let ids = IdGenerator::default();
    let secret = format!("sk_sandbox_{}", nonce());
    let sealed = app.master_key.encrypt(key_id, signing_secret).unwrap();
    app.store
        .create_signed_api_key(org, Environment::Sandbox, key_id, &ids.org(), &settle_api::auth::hash_secret(&secret), &Scope::ALL, &sealed, app.clock.now())
        .await
        .unwrap();
    (app.api.with_key(Some(&secret)), signing_secret.expose().to_owned())
}

fn account_body() -> Value {
    json!({"name": "signed", "currency": "USD", "normal_balance": "credit"})
}

#[track_caller]
fn expect_invalid_signature(reply: &Reply, param: &str, message_part: &str) {
    reply.expect_error(401, "invalid_signature");
    assert_eq!(reply.body["error"]["type"], "authentication_error");
    assert_eq!(reply.param(), Some(param), "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(message_part), "message {message:?} should say {message_part:?}");
}

#[test]
fn the_worked_example_values_follow_from_its_inputs() {
    use worked_example::*;
    assert_eq!(digest_of(BODY.as_bytes()), CONTENT_DIGEST);
    let params = SIGNATURE_INPUT.strip_prefix("sig1=").unwrap();
    let base = base_of("POST", "/v1/accounts", CONTENT_DIGEST, &["@method", "@path", "content-digest"], params);
    assert_eq!(base, SIGNATURE_BASE);
    assert_eq!(format!("sig1=:{}:", hmac_b64(SIGNING_SECRET, &base)), SIGNATURE);
    // The doc's text carries the same values, so it cannot drift either.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/signing.md")).unwrap();
    for value in [KEY_ID, SIGNING_SECRET, BODY, NONCE, CONTENT_DIGEST, SIGNATURE_INPUT, SIGNATURE] {
        assert!(doc.contains(value), "docs/signing.md must show {value}");
    }
    for line in SIGNATURE_BASE.lines() {
        assert!(doc.contains(line), "docs/signing.md must show the signature base line {line}");
    }
}

ledger_test! {
    async fn the_worked_example_is_accepted_exactly_as_documented(app) {
        use worked_example::*;
        let key_id = ApiKeyId::parse(KEY_ID).unwrap();
        let (api, _) = signed_key(&app, "docs-example", &key_id, &SigningSecret::from_text(SIGNING_SECRET)).await;
        app.clock.advance_secs(CREATED - app.now().micros() / 1_000_000);
        let request = api
            .request(Method::POST, "/v1/accounts")
            .header("content-type", "application/json")
            .header("content-digest", CONTENT_DIGEST)
            .header("signature-input", SIGNATURE_INPUT)
            .header("signature", SIGNATURE)
            .body(BODY);
        let reply = api.send(request).await;
        reply.expect_status(201);
        assert_eq!(reply.body["name"], "Alice wallet");
    }
}

ledger_test! {
    async fn a_correctly_signed_request_executes(app) {
        let signer = Signer::new(&app, "acme").await;
        let created = signer.post(&app, "/v1/accounts", &account_body()).await;
        created.expect_status(201);
        // A GET signs the digest of the empty body.
        let read = signer.get(&app, &format!("/v1/accounts/{}", created.id())).await;
        read.expect_status(200);
        assert_eq!(signer.account_count(&app).await, 1);
    }
}

ledger_test! {
    async fn an_unsigned_request_of_a_signing_key_is_refused_and_changes_nothing(app) {
        let signer = Signer::new(&app, "acme").await;
        let reply = signer.api.post("/v1/accounts", &account_body()).await;
        expect_invalid_signature(&reply, "Signature-Input", "must sign");
        // Refused before the body is parsed or the scope is checked.
        let reply = signer.api.post_raw("/v1/accounts", b"not json".to_vec()).await;
        expect_invalid_signature(&reply, "Signature-Input", "must sign");
        let reply = signer.api.get("/v1/accounts").await;
        expect_invalid_signature(&reply, "Signature-Input", "must sign");
        // A Signature-Input without Signature, or the reverse.
        let body = serde_json::to_vec(&account_body()).unwrap();
        let full = signer.request(&signer.defaults(&app, "POST", "/v1/accounts", &body)).build().unwrap();
        for drop in ["signature", "signature-input", "content-digest"] {
            let mut request = full.try_clone().unwrap();
            request.headers_mut().remove(drop);
            let reply = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), request)).await;
            reply.expect_error(401, "invalid_signature");
        }
        assert_eq!(signer.account_count(&app).await, 0);
    }
}

ledger_test! {
    async fn a_body_that_does_not_match_its_digest_or_signature_is_refused(app) {
        let signer = Signer::new(&app, "acme").await;
        let body = serde_json::to_vec(&account_body()).unwrap();
        let other = serde_json::to_vec(&json!({"name": "evil", "currency": "USD", "normal_balance": "credit"})).unwrap();
        // The digest names another body.
        let mut s = signer.defaults(&app, "POST", "/v1/accounts", &other);
        s.digest = Some(digest_of(&body));
        expect_invalid_signature(&signer.send(&s).await, "Content-Digest", "does not match the request body");
        // Body and digest swapped together after signing: the signature no longer matches.
        let signed = signer.request(&signer.defaults(&app, "POST", "/v1/accounts", &body)).build().unwrap();
        let mut tampered = signed.try_clone().unwrap();
        *tampered.body_mut() = Some(other.clone().into());
        tampered.headers_mut().insert("content-digest", digest_of(&other).parse().unwrap());
        let reply = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), tampered)).await;
        expect_invalid_signature(&reply, "Signature", "does not match the request");
        // Signed for another path or method.
        let mut moved = signed.try_clone().unwrap();
        *moved.url_mut() = format!("{}/v1/transactions", signer.api.url).parse().unwrap();
        let reply = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), moved)).await;
        expect_invalid_signature(&reply, "Signature", "does not match");
        // A digest without sha-256, or not a dictionary.
        for digest in ["sha-512=:AAAA:", "sha-256=abc"] {
            let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
            s.digest = Some(digest.to_owned());
            expect_invalid_signature(&signer.send(&s).await, "Content-Digest", "Content-Digest");
        }
        assert_eq!(signer.account_count(&app).await, 0);
    }
}

ledger_test! {
    async fn a_wrong_secret_key_id_or_component_list_is_refused(app) {
        let signer = Signer::new(&app, "acme").await;
        let body = serde_json::to_vec(&account_body()).unwrap();
        let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
        s.secret = Some("ssk_not_the_secret");
        expect_invalid_signature(&signer.send(&s).await, "Signature", "does not match");
        let other = Signer::new(&app, "acme").await;
        let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
        s.keyid = Some(&other.key_id);
        expect_invalid_signature(&signer.send(&s).await, "Signature-Input", "keyid");
        let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
        s.components = &["@method", "@path"];
        expect_invalid_signature(&signer.send(&s).await, "Signature-Input", "content-digest");
        // Another key's signature, with that key's secret, does not pass for this key either.
        let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
        s.keyid = Some(&other.key_id);
        s.secret = Some(&other.secret);
        expect_invalid_signature(&signer.send(&s).await, "Signature-Input", "keyid");
        let garbage = signer
            .api
            .request(Method::POST, "/v1/accounts")
            .header("content-digest", digest_of(&body))
            .header("signature-input", "sig1=\"@method\"")
            .header("signature", "sig1=:AAAA:")
            .body(body.clone());
        expect_invalid_signature(&signer.api.send(garbage).await, "Signature-Input", "inner list");
        assert_eq!(signer.account_count(&app).await, 0);
    }
}

ledger_test! {
    async fn a_signature_created_more_than_five_minutes_from_the_server_clock_is_stale(app) {
        let signer = Signer::new(&app, "acme").await;
        let body = serde_json::to_vec(&account_body()).unwrap();
        let now = app.now().micros() / 1_000_000;
        for created in [now - 301, now + 301] {
            let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
            s.created = created;
            expect_invalid_signature(&signer.send(&s).await, "Signature-Input", "stale");
        }
        // A signed request that waited too long becomes stale as the clock moves.
        let waiting = signer.request(&signer.defaults(&app, "POST", "/v1/accounts", &body)).build().unwrap();
        app.clock.advance_secs(301);
        let reply = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), waiting)).await;
        expect_invalid_signature(&reply, "Signature-Input", "stale");
        assert_eq!(signer.account_count(&app).await, 0);
        // At the edges of the window it is accepted.
        let now = app.now().micros() / 1_000_000;
        for created in [now - 300, now + 300] {
            let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
            s.created = created;
            signer.send(&s).await.expect_status(201);
        }
    }
}

ledger_test! {
    async fn a_replayed_request_is_refused_and_executes_once(app) {
        let signer = Signer::new(&app, "acme").await;
        let body = serde_json::to_vec(&account_body()).unwrap();
        let mut s = signer.defaults(&app, "POST", "/v1/accounts", &body);
        s.nonce = String::from("shared-nonce");
        let request = signer.request(&s).build().unwrap();
        let first = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), request.try_clone().unwrap())).await;
        first.expect_status(201);
        let replay = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), request)).await;
        expect_invalid_signature(&replay, "Signature-Input", "already used");
        // A fresh signature with the same nonce is a replay too.
        let mut again = signer.defaults(&app, "POST", "/v1/accounts", &body);
        again.nonce = String::from("shared-nonce");
        expect_invalid_signature(&signer.send(&again).await, "Signature-Input", "already used");
        assert_eq!(signer.account_count(&app).await, 1);
        // Nonces are per key: another key may use the same one.
        let other = Signer::new(&app, "acme").await;
        let mut s = other.defaults(&app, "POST", "/v1/accounts", &body);
        s.nonce = String::from("shared-nonce");
        other.send(&s).await.expect_status(201);
    }
}

ledger_test! {
    async fn a_replay_sent_to_another_server_on_the_same_database_is_refused(app) {
        let signer = Signer::new(&app, "acme").await;
        let (second, _server) = app.another_server().await;
        let body = serde_json::to_vec(&account_body()).unwrap();
        let request = signer.request(&signer.defaults(&app, "POST", "/v1/accounts", &body)).build().unwrap();
        let first = signer.api.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), request.try_clone().unwrap())).await;
        first.expect_status(201);
        let mut replayed = request;
        *replayed.url_mut() = format!("{}/v1/accounts", second.url).parse().unwrap();
        let reply = second.send(reqwest::RequestBuilder::from_parts(crate::tls_client(), replayed)).await;
        expect_invalid_signature(&reply, "Signature-Input", "already used");
        assert_eq!(signer.account_count(&app).await, 1);
    }
}

ledger_test! {
    async fn keys_without_the_requirement_work_as_before_and_ignore_signatures(app) {
        let plain = app.client_for("acme").await;
        plain.post("/v1/accounts", &account_body()).await.expect_status(201);
        let request = plain
            .request(Method::POST, "/v1/accounts")
            .header("signature-input", "sig1=(\"@method\");created=1;keyid=\"nobody\"")
            .header("signature", "sig1=:AAAA:")
            .header("content-digest", "sha-256=:AAAA:")
            .json(&account_body());
        plain.send(request).await.expect_status(201);
    }
}

ledger_test! {
    async fn an_unknown_api_key_is_still_invalid_api_key_not_invalid_signature(app) {
        let unknown = app.api.with_key(Some("sk_sandbox_unknownunknownunknownunknown"));
        unknown.post("/v1/accounts", &account_body()).await.expect_error(401, "invalid_api_key");
        let nothing = app.api.with_key(None);
        nothing.get("/v1/accounts").await.expect_error(401, "invalid_api_key");
    }
}
