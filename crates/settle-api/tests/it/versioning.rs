//! API versions and deprecation over HTTP: `Settle-Version` negotiation, the
//! 2026-11-30 change (`version` → `lock_version`, `expected_versions` →
//! `expected_lock_versions`) seen by old and new clients on objects, list
//! items, batch results, errors and idempotent replays; `GET /v1/versions`;
//! the deprecation headers; and the per-key deprecation counts.
//!
//! Organizations created by the harness (through the store, as before
//! versioning) are pinned to 2026-11-25, so a request without a header is an
//! old-version request here, and every other test file runs through the
//! version layer's downgrades.

use crate::app::{Api, Backend, Reply, TestApp, TestOptions, eventually, ledger_test, transfer_body};
use reqwest::Method;
use serde_json::{Value, json};
use settle_api::deprecation::EndpointDeprecation;
use settle_api::versions;
use settle_core::api_version::ApiVersion;
use settle_core::tenancy::Environment;
use std::time::{Duration, Instant};

const OLD: &str = "2026-11-25";
const NEW: &str = "2026-11-30";
/// 2026-11-30T00:00:00Z, when 2026-11-25 was deprecated.
const OLD_DEPRECATED_AT: &str = "@1795996800";
const OLD_SUNSET: &str = "Tue, 01 Jun 2027 00:00:00 GMT";

fn versioned(api: &Api, method: Method, path: &str, version: Option<&str>) -> reqwest::RequestBuilder {
    let builder = api.request(method, path);
    match version {
        Some(v) => builder.header("Settle-Version", v),
        None => builder,
    }
}

async fn get_in(api: &Api, path: &str, version: Option<&str>) -> Reply {
    api.send(versioned(api, Method::GET, path, version)).await
}

async fn post_in(api: &Api, path: &str, version: Option<&str>, body: &Value) -> Reply {
    api.send(versioned(api, Method::POST, path, version).json(body)).await
}

async fn post_keyed_in(api: &Api, path: &str, version: Option<&str>, key: &str, body: &Value) -> Reply {
    api.send(versioned(api, Method::POST, path, version).header("Idempotency-Key", key).json(body)).await
}

#[track_caller]
fn assert_served_in(reply: &Reply, version: &str) {
    assert_eq!(reply.header("settle-version"), Some(version), "Settle-Version of a {} answer: {}", reply.status, reply.body);
}

/// What an old client must see: the new body with the account field renamed, byte for byte otherwise.
fn as_old_bytes(new: &Reply) -> String {
    String::from_utf8(new.bytes.clone()).unwrap().replace("\"lock_version\":", "\"version\":")
}

ledger_test! {
    async fn an_unknown_or_malformed_version_is_refused_before_anything_runs(app) {
        for bad in ["2026-11-26", "2026-13-01", "latest", "2026-11-25x", "25-11-2026", ""] {
            let reply = post_in(&app, "/v1/accounts", Some(bad), &json!({"name": "x", "currency": "USD", "normal_balance": "debit"})).await;
            reply.expect_error(400, "invalid_api_version");
            assert_eq!(reply.param(), Some("Settle-Version"));
            assert_eq!(reply.body["error"]["type"], "invalid_request_error");
            assert_served_in(&reply, NEW);
        }
        assert_eq!(app.list_all("/v1/accounts").await.len(), 0, "no refused request opened an account");
        // Without a key too: the version is checked first.
        let anonymous = app.with_key(None);
        let reply = get_in(&anonymous, "/v1/accounts", Some("1999-01-01")).await;
        reply.expect_error(400, "invalid_api_version");
        // A valid version on an unauthenticated request is the one the 401 is rendered in.
        let reply = get_in(&anonymous, "/v1/accounts", Some(OLD)).await;
        reply.expect_error(401, "invalid_api_key");
        assert_served_in(&reply, OLD);
        let reply = get_in(&anonymous, "/v1/accounts", None).await;
        reply.expect_error(401, "invalid_api_key");
        assert_served_in(&reply, NEW);
    }
}

ledger_test! {
    async fn every_response_names_the_version_it_was_rendered_in(app) {
        // The harness's organization is pinned to the initial version.
        assert_served_in(app.get("/v1/accounts").await.expect_status(200), OLD);
        assert_served_in(get_in(&app, "/v1/accounts", Some(NEW)).await.expect_status(200), NEW);
        assert_served_in(get_in(&app, "/v1/accounts", Some(OLD)).await.expect_status(200), OLD);
        assert_served_in(app.get("/v1/accounts/acct_01jgz8k4x2m7q9r3t5v6w8y0za").await.expect_error(404, "not_found"), OLD);
        assert_served_in(app.get("/v1/nowhere").await.expect_error(404, "not_found"), OLD);
        assert_served_in(app.with_key(None).get("/healthz").await.expect_status(200), NEW);
        // Another organization pinned to the newest version.
        let newer = app.client_for("newer").await;
        assert!(app.store.set_organization_api_version("newer", versions::NEWEST).await.unwrap());
        let reply = eventually("the new pin to apply", || {
            let newer = newer.clone();
            async move { Some(newer.get("/v1/accounts").await).filter(|r| r.header("settle-version") == Some(NEW)) }
        })
        .await;
        reply.expect_status(200);
        assert_served_in(&get_in(&newer, "/v1/accounts", Some(OLD)).await, OLD);
    }
}

ledger_test! {
    async fn a_moved_pin_takes_effect_within_a_second(app) {
        let id = app.account("debit", None).await;
        assert!(app.account_json(&id).await.get("version").is_some());
        let moved = Instant::now();
        assert!(app.store.set_organization_api_version("acme", versions::NEWEST).await.unwrap());
        let body = eventually("the moved pin to apply", || {
            let app = app.api.clone();
            let id = id.clone();
            async move { Some(app.account_json(&id).await).filter(|b| b.get("lock_version").is_some()) }
        })
        .await;
        assert!(moved.elapsed() < Duration::from_secs(1), "took {:?}", moved.elapsed());
        assert!(body.get("version").is_none(), "{body}");
        assert!(!app.store.set_organization_api_version("no-such-org", versions::NEWEST).await.unwrap());
    }
}

ledger_test! {
    async fn an_old_client_sees_version_on_accounts_alone_and_in_lists(app) {
        let created_new = post_in(&app, "/v1/accounts", Some(NEW), &json!({"name": "n", "currency": "USD", "normal_balance": "credit"})).await;
        created_new.expect_status(201);
        assert_eq!(created_new.body["lock_version"], 0);
        assert!(created_new.body.get("version").is_none(), "{}", created_new.body);
        let created_old = post_in(&app, "/v1/accounts", Some(OLD), &json!({"name": "o", "currency": "USD", "normal_balance": "debit"})).await;
        created_old.expect_status(201);
        assert_eq!(created_old.body["version"], 0);
        assert!(created_old.body.get("lock_version").is_none(), "{}", created_old.body);
        let (a, b) = (created_new.id(), created_old.id());
        app.transfer_ok(&b, &a, 250).await;

        for id in [&a, &b] {
            let new = get_in(&app, &format!("/v1/accounts/{id}"), Some(NEW)).await;
            let old = get_in(&app, &format!("/v1/accounts/{id}"), Some(OLD)).await;
            new.expect_status(200);
            old.expect_status(200);
            assert_eq!(new.body["lock_version"], 1);
            assert_eq!(String::from_utf8(old.bytes.clone()).unwrap(), as_old_bytes(&new), "only the field name differs, and keys keep their order");
        }

        let new = get_in(&app, "/v1/accounts", Some(NEW)).await;
        let old = get_in(&app, "/v1/accounts", Some(OLD)).await;
        assert_eq!(new.body["data"].as_array().unwrap().len(), 2);
        for item in new.body["data"].as_array().unwrap() {
            assert!(item.get("lock_version").is_some() && item.get("version").is_none(), "{item}");
        }
        for item in old.body["data"].as_array().unwrap() {
            assert!(item.get("version").is_some() && item.get("lock_version").is_none(), "{item}");
        }
        assert_eq!(String::from_utf8(old.bytes.clone()).unwrap(), as_old_bytes(&new));
        // Objects without the field are left as they are in both versions.
        let tx = get_in(&app, &format!("/v1/transactions?account_id={a}"), Some(OLD)).await;
        assert_eq!(tx.bytes, get_in(&app, &format!("/v1/transactions?account_id={a}"), Some(NEW)).await.bytes);
    }
}

ledger_test! {
    async fn each_version_takes_its_own_name_for_expected_versions_and_errors_use_it(app) {
        let from = app.account("debit", None).await;
        let to = app.account("credit", None).await;
        let with = |field: &str, version: i64| {
            let mut body = transfer_body(&from, &to, 100);
            body[field] = json!({ to.clone(): version });
            body
        };
        // The right names, the right lock version: applied.
        post_in(&app, "/v1/transactions", Some(OLD), &with("expected_versions", 0)).await.expect_status(201);
        post_in(&app, "/v1/transactions", Some(NEW), &with("expected_lock_versions", 1)).await.expect_status(201);
        // A stale lock version: the conflict names the field as each client knows it.
        let old = post_in(&app, "/v1/transactions", Some(OLD), &with("expected_versions", 0)).await;
        old.expect_error(409, "version_conflict");
        assert_eq!(old.param(), Some("expected_versions"));
        let new = post_in(&app, "/v1/transactions", Some(NEW), &with("expected_lock_versions", 0)).await;
        new.expect_error(409, "version_conflict");
        assert_eq!(new.param(), Some("expected_lock_versions"));
        // A malformed account id under the field (refused by the handler, before the engine).
        let old = post_in(&app, "/v1/transactions", Some(OLD), &json!({"entries": transfer_body(&from, &to, 1)["entries"], "expected_versions": {"nope": 1}})).await;
        old.expect_error(422, "account_not_found");
        assert_eq!(old.param(), Some("expected_versions"));
        let new = post_in(&app, "/v1/transactions", Some(NEW), &json!({"entries": transfer_body(&from, &to, 1)["entries"], "expected_lock_versions": {"nope": 1}})).await;
        new.expect_error(422, "account_not_found");
        assert_eq!(new.param(), Some("expected_lock_versions"));
        // An old client cannot use the new name.
        let old = post_in(&app, "/v1/transactions", Some(OLD), &with("expected_lock_versions", 2)).await;
        old.expect_error(400, "invalid_request");
        assert_eq!(old.param(), Some("expected_lock_versions"));
        // A new client's `expected_versions` is a deprecated alias: it still locks.
        let new = post_in(&app, "/v1/transactions", Some(NEW), &with("expected_versions", 0)).await;
        new.expect_error(409, "version_conflict");
        assert_eq!(new.param(), Some("expected_lock_versions"));
        let both = post_in(&app, "/v1/transactions", Some(NEW), &json!({"entries": transfer_body(&from, &to, 1)["entries"], "expected_versions": {}, "expected_lock_versions": {}})).await;
        both.expect_error(400, "invalid_request");
        // Refusals changed nothing: two transfers of 100 happened.
        let account = get_in(&app, &format!("/v1/accounts/{to}"), Some(NEW)).await;
        assert_eq!((account.body["lock_version"].as_i64(), account.body["balances"]["posted"].as_i64()), (Some(2), Some(200)));
        // A body that is not JSON is refused exactly as in any version.
        let raw = app.send(versioned(&app, Method::POST, "/v1/transactions", Some(OLD)).header("content-type", "application/json").body("{\"entries\": [")).await;
        raw.expect_error(400, "invalid_request");
        assert_eq!(raw.param(), Some("body"));
        let duplicate = app
            .send(versioned(&app, Method::POST, "/v1/transactions", Some(OLD)).header("content-type", "application/json").body(format!(
                "{{\"entries\": [], \"expected_versions\": {{\"{to}\": 2}}, \"entries\": []}}"
            )))
            .await;
        duplicate.expect_error(400, "invalid_request");
    }
}

ledger_test! {
    async fn batch_items_take_and_report_the_field_in_the_clients_version(app) {
        let from = app.account("debit", None).await;
        let to = app.account("credit", None).await;
        let batch = |field: &str| {
            let mut stale = transfer_body(&from, &to, 5);
            stale[field] = json!({ to.clone(): 99 });
            json!({"atomic": false, "transactions": [transfer_body(&from, &to, 5), stale]})
        };
        let old = post_in(&app, "/v1/transactions/batch", Some(OLD), &batch("expected_versions")).await;
        old.expect_status(200);
        assert_eq!(old.body["results"][0]["status"], 201);
        assert_eq!(old.body["results"][1]["error"]["code"], "version_conflict");
        assert_eq!(old.body["results"][1]["error"]["param"], "expected_versions");
        let new = post_in(&app, "/v1/transactions/batch", Some(NEW), &batch("expected_lock_versions")).await;
        new.expect_status(200);
        assert_eq!(new.body["results"][1]["error"]["code"], "version_conflict");
        assert_eq!(new.body["results"][1]["error"]["param"], "expected_lock_versions");
        // Request-level errors name the item's field as the client knows it.
        let malformed = |field: &str| {
            let mut item = transfer_body(&from, &to, 5);
            item[field] = json!({"bad-id": 1});
            json!({"atomic": true, "transactions": [transfer_body(&from, &to, 5), item]})
        };
        let old = post_in(&app, "/v1/transactions/batch", Some(OLD), &malformed("expected_versions")).await;
        old.expect_error(422, "account_not_found");
        assert_eq!(old.param(), Some("transactions[1].expected_versions"));
        let new = post_in(&app, "/v1/transactions/batch", Some(NEW), &malformed("expected_lock_versions")).await;
        new.expect_error(422, "account_not_found");
        assert_eq!(new.param(), Some("transactions[1].expected_lock_versions"));
        let old = post_in(&app, "/v1/transactions/batch", Some(OLD), &malformed("expected_lock_versions")).await;
        old.expect_error(400, "invalid_request");
        assert_eq!(old.param(), Some("transactions[1].expected_lock_versions"));
        assert_eq!(Some(10), get_in(&app, &format!("/v1/accounts/{to}"), Some(NEW)).await.body["balances"]["posted"].as_i64(), "two batches applied one item of 5 each");
    }
}

ledger_test! {
    async fn idempotent_replays_are_rendered_in_the_requesters_version(app) {
        let body = json!({"name": "replayed", "currency": "USD", "normal_balance": "credit"});
        let first = post_keyed_in(&app, "/v1/accounts", Some(NEW), "acct-1", &body).await;
        first.expect_status(201);
        assert!(first.body.get("lock_version").is_some());
        let replay_old = post_keyed_in(&app, "/v1/accounts", Some(OLD), "acct-1", &body).await;
        replay_old.expect_status(201);
        assert_eq!(replay_old.header("idempotent-replayed"), Some("true"));
        assert_served_in(&replay_old, OLD);
        assert_eq!(String::from_utf8(replay_old.bytes.clone()).unwrap(), as_old_bytes(&first));
        let replay_new = post_keyed_in(&app, "/v1/accounts", Some(NEW), "acct-1", &body).await;
        assert_eq!(replay_new.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay_new.bytes, first.bytes);

        // A stored error: sent by an old client, replayed to a new one (same request after upgrade).
        let from = app.account("debit", None).await;
        let to = first.id();
        let mut old_body = transfer_body(&from, &to, 7);
        old_body["expected_versions"] = json!({ to.clone(): 5 });
        let mut new_body = transfer_body(&from, &to, 7);
        new_body["expected_lock_versions"] = json!({ to.clone(): 5 });
        let stored = post_keyed_in(&app, "/v1/transactions", Some(OLD), "tx-1", &old_body).await;
        stored.expect_error(409, "version_conflict");
        assert_eq!(stored.param(), Some("expected_versions"));
        let replay = post_keyed_in(&app, "/v1/transactions", Some(NEW), "tx-1", &new_body).await;
        replay.expect_error(409, "version_conflict");
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.param(), Some("expected_lock_versions"));
        assert_eq!(replay.body["error"]["request_id"], stored.body["error"]["request_id"]);
        let replay = post_keyed_in(&app, "/v1/transactions", Some(OLD), "tx-1", &old_body).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.bytes, stored.bytes);
    }
}

ledger_test! {
    async fn versions_are_listed_newest_first_with_changes_dates_and_the_callers_pin(app) {
        let public = get_in(&app.with_key(None), "/v1/versions", None).await;
        public.expect_status(200);
        let ids: Vec<&str> = public.body["data"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [NEW, OLD]);
        assert_eq!(public.body["newest_version"], NEW);
        assert_eq!(public.body["pinned_version"], Value::Null);
        assert_eq!(public.body["has_more"], false);
        let newest = &public.body["data"][0];
        assert_eq!((newest["is_newest"].as_bool(), newest["is_pinned"].as_bool()), (Some(true), Some(false)));
        assert_eq!(newest["deprecated_at"], Value::Null);
        assert_eq!(newest["changes"][0]["id"], "account_lock_version");
        assert!(newest["changes"][0]["description"].as_str().unwrap().contains("expected_lock_versions"));
        let initial = &public.body["data"][1];
        assert_eq!(initial["deprecated_at"], "2026-11-30T00:00:00.000000Z");
        assert_eq!(initial["sunset_at"], "2027-06-01T00:00:00.000000Z");
        assert_eq!(initial["changes"], json!([]));

        let mine = app.get("/v1/versions").await;
        mine.expect_status(200);
        assert_eq!(mine.body["pinned_version"], OLD);
        assert_eq!(mine.body["data"][1]["is_pinned"], true);
        assert_eq!(mine.body["data"][0]["is_pinned"], false);
        app.with_key(Some("sk_sandbox_nope")).get("/v1/versions").await.expect_error(401, "invalid_api_key");
    }
}

ledger_test! {
    async fn a_deprecated_version_answers_normally_with_deprecation_sunset_and_link(app) {
        let id = app.account("credit", None).await;
        for reply in [
            get_in(&app, &format!("/v1/accounts/{id}"), Some(OLD)).await,
            app.get(&format!("/v1/accounts/{id}")).await,
            app.get("/v1/accounts/acct_01jgz8k4x2m7q9r3t5v6w8y0za").await,
        ] {
            assert!(reply.status == 200 || reply.status == 404, "{}", reply.body);
            assert_eq!(reply.header("deprecation"), Some(OLD_DEPRECATED_AT));
            assert_eq!(reply.header("sunset"), Some(OLD_SUNSET));
            assert_eq!(reply.header("link"), Some("</v1/versions>; rel=\"deprecation\""));
        }
        let current = get_in(&app, &format!("/v1/accounts/{id}"), Some(NEW)).await;
        current.expect_status(200);
        for header in ["deprecation", "sunset", "link"] {
            assert_eq!(current.header(header), None, "{header} on the newest version");
        }
    }
}

/// A test-only deprecated endpoint: no endpoint of this release is deprecated.
fn balances_deprecated(state: settle_api::AppState) -> settle_api::AppState {
    state.with_deprecated_endpoint(EndpointDeprecation {
        method: Method::GET,
        route: String::from("/v1/accounts/{id}/balances"),
        deprecated_at: time::macros::date!(2026 - 12 - 15),
        sunset_at: None,
        link: String::from("https://docs.example/balances-deprecation"),
    })
}

fn key_id_of(keys: &[settle_store::records::ApiKeyRecord], org: &str) -> String {
    keys.iter().find(|k| k.org_name == org).map(|k| k.id.to_string()).unwrap()
}

async fn deprecated_uses_are_counted_per_key_and_reported_after_a_flush(backend: Backend) {
    let app = match backend {
        Backend::Sqlite => TestApp::start_with(Backend::Sqlite, TestOptions { configure: balances_deprecated, ..TestOptions::default() }).await,
        Backend::Postgres if std::env::var(crate::app::POSTGRES_URL_VAR).is_ok() => {
            TestApp::start_with(Backend::Postgres, TestOptions { configure: balances_deprecated, ..TestOptions::default() }).await
        }
        Backend::Postgres => return,
    };
    let id = app.account("credit", None).await;
    let start = app.now();
    // The deprecated endpoint on the newest version: one notice, no Sunset.
    let reply = get_in(&app, &format!("/v1/accounts/{id}/balances"), Some(NEW)).await;
    reply.expect_status(200);
    assert_eq!(reply.header("deprecation"), Some("@1797292800"), "2026-12-15T00:00:00Z");
    assert_eq!(reply.header("sunset"), None);
    assert_eq!(reply.header("link"), Some("<https://docs.example/balances-deprecation>; rel=\"deprecation\""));
    // Both deprecated: the earlier date, the version's sunset, one link each.
    let reply = get_in(&app, &format!("/v1/accounts/{id}/balances"), Some(OLD)).await;
    assert_eq!(reply.header("deprecation"), Some(OLD_DEPRECATED_AT));
    assert_eq!(reply.header("sunset"), Some(OLD_SUNSET));
    assert_eq!(reply.headers.get_all("link").iter().count(), 2);
    // Other endpoints are not deprecated.
    assert_eq!(get_in(&app, &format!("/v1/accounts/{id}"), Some(NEW)).await.header("deprecation"), None);

    // Until here "acme" used: version 2026-11-25 twice (account creation, the OLD balances call), the endpoint twice.
    app.clock.advance_secs(60);
    get_in(&app, "/v1/accounts", Some(OLD)).await.expect_status(200);
    let other = app.client_for("other").await;
    get_in(&other, "/v1/accounts", Some(OLD)).await.expect_status(200);
    get_in(&other, "/v1/accounts", Some(NEW)).await.expect_status(200);
    // Unauthenticated requests are not attributed to anyone.
    get_in(&app.with_key(None), "/v1/accounts", Some(OLD)).await.expect_error(401, "invalid_api_key");

    assert!(app.store.deprecation_usage().await.unwrap().is_empty(), "nothing is written on the request path");
    app.deprecation_usage.flush(&app.store).await.unwrap();
    // A second flush adds to the stored totals.
    get_in(&app, "/v1/accounts", Some(OLD)).await.expect_status(200);
    app.deprecation_usage.flush(&app.store).await.unwrap();

    let keys = app.store.list_api_keys().await.unwrap();
    let (acme, other_key) = (key_id_of(&keys, "acme"), key_id_of(&keys, "other"));
    let mut report: Vec<(String, String, String, i64)> =
        app.store.deprecation_usage().await.unwrap().into_iter().map(|r| (r.org_name, r.key_id.to_string(), r.deprecated, r.count)).collect();
    report.sort();
    assert_eq!(
        report,
        [
            (String::from("acme"), acme.clone(), String::from("endpoint GET /v1/accounts/{id}/balances"), 2),
            (String::from("acme"), acme.clone(), String::from("version 2026-11-25"), 4),
            (String::from("other"), other_key, String::from("version 2026-11-25"), 1),
        ]
    );
    let acme_version =
        app.store.deprecation_usage().await.unwrap().into_iter().find(|r| r.key_id.as_str() == acme && r.deprecated.starts_with("version")).unwrap();
    assert_eq!(acme_version.first_seen_at, start);
    assert_eq!(acme_version.last_seen_at.micros(), start.micros() + 60_000_000);
    assert_eq!(acme_version.environment, Environment::Sandbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_uses_are_counted_per_key_and_reported_after_a_flush_sqlite() {
    deprecated_uses_are_counted_per_key_and_reported_after_a_flush(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_uses_are_counted_per_key_and_reported_after_a_flush_postgres() {
    deprecated_uses_are_counted_per_key_and_reported_after_a_flush(Backend::Postgres).await;
}

#[test]
fn the_committed_changelog_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api-changelog.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == versions::changelog_markdown(),
        "docs/api-changelog.md differs from the version registry; regenerate it with `cargo run -p settle -- versions changelog > docs/api-changelog.md`"
    );
}

#[test]
fn registry_names_the_initial_version_deprecated_with_a_sunset() {
    let initial = versions::find(ApiVersion::parse(OLD).unwrap()).unwrap();
    assert!(initial.deprecated_at.is_some() && initial.sunset_at.is_some());
    assert_eq!(versions::NEWEST.to_string(), NEW);
}
