//! Events (docs/events.md): projected from the ledger log, each showing its
//! object as it was at the change, naming its request, ordered per object,
//! listable with filters and cursors, and matching the catalog's schemas.

use crate::app::{Api, TestApp, eventually, ledger_test, transfer_body};
use reqwest::Method;
use serde_json::{Value, json};
use settle_core::tenancy::{Environment, Scope};

/// Every event of the caller's environment, oldest first, once at least `count` exist.
pub async fn events_at_least(api: &Api, query: &str, count: usize) -> Vec<Value> {
    let api = api.clone();
    let query = query.to_owned();
    let mut events = eventually(&format!("{count} events for {query:?}"), || {
        let (api, query) = (api.clone(), query.clone());
        async move {
            let all = api.list_all(&format!("/v1/events{query}")).await;
            (all.len() >= count).then_some(all)
        }
    })
    .await;
    events.reverse();
    events
}

/// A minimal JSON Schema validator for what the catalog uses: `type` (one or
/// several), `const`, `enum`, `required`, `properties`,
/// `additionalProperties: false`, `items`, `oneOf`/`anyOf`/`allOf`, and
/// `pattern` as a prefix check of its literal start.
pub fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { return };
    if let Some(types) = s.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => true,
        };
        if !names.iter().any(|t| fits(t)) {
            errors.push(format!("{path}: {value} is not of type {types}"));
            return;
        }
    }
    if let Some(c) = s.get("const")
        && c != value
    {
        errors.push(format!("{path}: {value} is not {c}"));
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {options:?}"));
    }
    for (key, all) in [("oneOf", false), ("anyOf", false), ("allOf", true)] {
        if let Some(Value::Array(options)) = s.get(key) {
            let passing = options
                .iter()
                .filter(|o| {
                    let mut e = Vec::new();
                    validate(o, value, path, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = if all {
                passing == options.len()
            } else if key == "oneOf" {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                errors.push(format!("{path}: {value} does not satisfy {key}"));
            }
        }
    }
    if let (Some(Value::String(pattern)), Some(text)) = (s.get("pattern"), value.as_str()) {
        let prefix: String = pattern.trim_start_matches('^').chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !text.starts_with(&prefix) {
            errors.push(format!("{path}: {text:?} does not start with {prefix:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = r.as_str()
                && !object.contains_key(name)
            {
                errors.push(format!("{path}: missing required {name}"));
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (k, v) in object {
            match properties.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, v, &format!("{path}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => errors.push(format!("{path}: unexpected field {k}")),
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (s.get("items"), value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            validate(items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

/// Creates one of every ledger event: account created, transaction created
/// (posted and pending), posted, voided, reversed. Returns the event count.
async fn one_of_each(app: &TestApp) -> usize {
    let funding = app.account("debit", None).await;
    let wallet = app.account("credit", None).await;
    let paid = app.transfer_ok(&funding, &wallet, 500).await;
    let held = app.hold_ok(&wallet, &funding, 100).await;
    app.post(&format!("/v1/transactions/{held}/post"), &json!({})).await.expect_status(200);
    let voided = app.hold_ok(&wallet, &funding, 50).await;
    app.post(&format!("/v1/transactions/{voided}/void"), &json!({})).await.expect_status(200);
    app.post(&format!("/v1/transactions/{paid}/reverse"), &json!({})).await.expect_status(201);
    // 2 accounts; created ×4 (paid, held, voided, the reversal); posted; voided; reversed.
    9
}

ledger_test! {
    async fn each_event_shows_its_object_as_it_was_at_that_change(app) {
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let created = app
            .send(app.request(Method::POST, "/v1/transactions").header("Idempotency-Key", "hold-1").header("X-Correlation-Id", "order-7").json(&{
                let mut body = transfer_body(&wallet, &funding, 0);
                body["entries"][0]["amount"] = json!(300);
                body["entries"][1]["amount"] = json!(300);
                body["status"] = json!("pending");
                body
            }))
            .await;
        created.expect_status(201);
        let hold = created.id();
        // Posted right away, before the projector can have looked: the
        // created event must still show the hold as pending.
        let posted = app.post(&format!("/v1/transactions/{hold}/post"), &json!({})).await;
        posted.expect_status(200);

        // Read in the newest version (the test organization is pinned to the first).
        let newest = app.with_version("2026-11-30");
        let events = events_at_least(&newest, &format!("?object_id={hold}"), 2).await;
        assert_eq!(events.len(), 2, "{events:?}");
        let (first, second) = (&events[0], &events[1]);
        assert_eq!(first["type"], "ledger.transaction.created");
        assert_eq!(first["data"]["object"]["status"], "pending");
        assert_eq!(first["data"]["object"]["posted_at"], Value::Null);
        assert_eq!(first["data"]["object"]["entries"][0]["status"], "pending");
        assert!(first["data"].get("previous_attributes").is_none(), "a creation has no previous attributes");
        assert_eq!(first["sequence"], 1);
        assert_eq!(first["request"]["id"].as_str(), created.header("request-id"));
        assert_eq!(first["request"]["idempotency_key"], "hold-1");
        assert_eq!(first["correlation_id"], "order-7");
        assert_eq!(first["api_version"], "2026-11-30");

        assert_eq!(second["type"], "ledger.transaction.posted");
        assert_eq!(second["data"]["object"]["status"], "posted");
        assert_eq!(second["data"]["object"], posted.body, "the posted event's object is what the post answered");
        assert_eq!(second["data"]["previous_attributes"]["status"], "pending");
        assert_eq!(second["data"]["previous_attributes"]["posted_at"], Value::Null);
        assert_eq!(second["sequence"], 2);
        assert_eq!(second["request"]["id"].as_str(), posted.header("request-id"));
        assert_eq!(second["request"]["idempotency_key"], Value::Null);
        assert!(first["id"].as_str() < second["id"].as_str(), "ids sort in the order the changes happened");

        // The account: created with zero balances, one event only.
        let account_events = events_at_least(&newest, &format!("?object_id={wallet}"), 1).await;
        assert_eq!(account_events.len(), 1);
        assert_eq!(account_events[0]["type"], "ledger.account.created");
        assert_eq!(account_events[0]["data"]["object"]["balances"], json!({"posted": 0, "pending": 0, "available": 0}));
        assert_eq!(account_events[0]["data"]["object"]["lock_version"], 0);

        // One event by id; another tenant sees nothing.
        let id = second["id"].as_str().unwrap();
        assert_eq!(newest.get(&format!("/v1/events/{id}")).await.expect_status(200).body, *second);
        let other = app.client_for("globex").await;
        other.get(&format!("/v1/events/{id}")).await.expect_error(404, "not_found");
        assert!(other.list_all("/v1/events").await.is_empty());

        // The log with its context fragments still audits clean.
        assert!(matches!(settle_store::audit::verify(&app.store).await, Ok(Ok(_))));
    }
}

ledger_test! {
    async fn every_emitted_event_matches_its_schema_in_every_version(app) {
        let count = one_of_each(&app).await;
        let types = app.get("/v1/event_types").await.expect_status(200).body.clone();
        let schemas: Vec<Value> = types["data"].as_array().unwrap().clone();
        for version in ["2026-11-30", "2026-11-25"] {
            let api = app.with_version(version);
            let events = events_at_least(&api, "", count).await;
            let mut seen = std::collections::BTreeSet::new();
            for event in &events {
                let kind = event["type"].as_str().unwrap();
                seen.insert(kind.to_owned());
                let entry = schemas.iter().find(|t| t["type"] == kind).unwrap_or_else(|| panic!("{kind} is not in the catalog"));
                let schema = &entry["schemas"][version];
                assert!(schema.is_object(), "no {version} schema for {kind}");
                let mut errors = Vec::new();
                validate(schema, event, "event", &mut errors);
                assert!(errors.is_empty(), "{kind} in {version} does not match its schema: {errors:?}\n{event}");
            }
            assert_eq!(seen.len(), 5, "one of each ledger event type: {seen:?}");
        }
        // The validator can fail: a field the schema does not know is refused.
        let events = events_at_least(&app, "?type=ledger.account.created", 1).await;
        let mut tampered = events[0].clone();
        tampered["data"]["object"]["surprise"] = json!(1);
        let entry = schemas.iter().find(|t| t["type"] == "ledger.account.created").unwrap();
        let mut errors = Vec::new();
        validate(&entry["schemas"]["2026-11-30"], &tampered, "event", &mut errors);
        assert!(!errors.is_empty());
        // In the old version accounts say `version`, as every old response does.
        let old = events_at_least(&app.with_version("2026-11-25"), "?type=ledger.account.created", 1).await;
        assert_eq!(old[0]["data"]["object"]["version"], 0);
        assert!(old[0]["data"]["object"].get("lock_version").is_none());
        assert_eq!(old[0]["api_version"], "2026-11-25");
    }
}

ledger_test! {
    async fn events_are_listed_by_type_object_and_time_with_cursors(app) {
        let count = one_of_each(&app).await;
        let all = events_at_least(&app, "", count).await;
        assert_eq!(all.len(), count);
        let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "oldest first after reversing a newest-first list");

        let created = app.list_all("/v1/events?type=ledger.transaction.created").await;
        assert_eq!(created.len(), 4);
        assert!(created.iter().all(|e| e["type"] == "ledger.transaction.created"));

        // Pages of 2, forwards and back, see every event once.
        let first = app.get("/v1/events?limit=2").await.expect_status(200).body.clone();
        assert_eq!(first["data"].as_array().unwrap().len(), 2);
        assert_eq!(first["has_more"], true);
        let last_id = first["data"][1]["id"].as_str().unwrap();
        let next = app.get(&format!("/v1/events?limit=2&starting_after={last_id}")).await.body.clone();
        assert_eq!(next["data"][0]["id"].as_str(), Some(ids[count - 3]));
        let back = app.get(&format!("/v1/events?limit=2&ending_before={}", next["data"][0]["id"].as_str().unwrap())).await.body.clone();
        assert_eq!(back["data"], first["data"]);

        // Time filters: everything happened at the test clock's instant.
        let now = app.now();
        let at = |t: settle_core::clock::Timestamp| t.to_rfc3339().replace('+', "%2B");
        assert_eq!(app.list_all(&format!("/v1/events?created[gte]={}", at(now))).await.len(), count);
        assert_eq!(app.list_all(&format!("/v1/events?created[lt]={}", at(now))).await.len(), 0);
        assert_eq!(app.list_all(&format!("/v1/events?created[lt]={}", at(now.plus_secs(1)))).await.len(), count);
        assert_eq!(app.list_all(&format!("/v1/events?created[gte]={}", at(now.plus_secs(1)))).await.len(), 0);

        app.get("/v1/events?type=nope").await.expect_error(400, "invalid_request");
        app.get("/v1/events?created[gte]=yesterday").await.expect_error(400, "invalid_request");
        app.get("/v1/events?color=red").await.expect_error(400, "invalid_request");
        app.get("/v1/events/evt_nope").await.expect_error(404, "not_found");

        // Scopes: a ledger-only key may not read events; a key with every scope may.
        let narrow = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead]).await));
        narrow.get("/v1/events").await.expect_error(403, "insufficient_scope");
        let events_only = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::EventsRead]).await));
        events_only.get("/v1/events").await.expect_status(200);
    }
}

ledger_test! {
    async fn an_expired_hold_and_a_batch_emit_their_events_without_a_request_for_the_expiry(app) {
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let mut body = transfer_body(&funding, &wallet, 10);
        body["status"] = json!("pending");
        body["expires_at"] = json!(app.now().plus_secs(60).to_rfc3339());
        let hold = app.post("/v1/transactions", &body).await.expect_status(201).id();
        let batch = json!({"atomic": false, "transactions": [transfer_body(&funding, &wallet, 1), transfer_body(&funding, &wallet, 2)]});
        let reply = app.post("/v1/transactions/batch", &batch).await;
        reply.expect_status(200);
        app.clock.advance_secs(61);
        let voided = events_at_least(&app, &format!("?object_id={hold}&type=ledger.transaction.voided"), 1).await;
        assert_eq!(voided[0]["data"]["object"]["void_reason"], "expired");
        assert_eq!(voided[0]["request"], json!({"id": null, "idempotency_key": null}));
        assert_eq!(voided[0]["sequence"], 2);
        let batch_events = events_at_least(&app, "?type=ledger.transaction.created", 3).await;
        let batch_request = reply.header("request-id");
        assert_eq!(batch_events.iter().filter(|e| e["request"]["id"].as_str() == batch_request).count(), 2);
    }
}

/// Every item of a list, newest first, in pages of `limit` (`starting_after`).
async fn in_pages(api: &Api, path: &str, limit: usize) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    loop {
        let page_path = match items.last() {
            None => format!("{path}&limit={limit}"),
            Some(last) => format!("{path}&limit={limit}&starting_after={}", last["id"].as_str().unwrap()),
        };
        let page = api.get(&page_path).await.expect_status(200).body.clone();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        items.extend(data.iter().cloned());
        if page["has_more"] != json!(true) {
            return items;
        }
    }
}

ledger_test! {
    /// On SQLite a batch's created events are stored as one row (a run,
    /// settle-store's event_runs.rs); each still reads as itself: alone,
    /// in every page either way, by type, object and time, in the audit
    /// trail, and in a redelivery. On PostgreSQL the same holds row by row.
    async fn a_batchs_events_read_one_by_one_wherever_a_page_or_filter_cuts(app) {
        let funding = app.account("debit", None).await;
        let wallet = app.account("credit", None).await;
        let mut items: Vec<Value> = (1..=7).map(|n| transfer_body(&funding, &wallet, n)).collect();
        items[3]["status"] = json!("pending");
        let reply = app.post("/v1/transactions/batch", &json!({"atomic": false, "transactions": items})).await;
        reply.expect_status(200);
        let batch: Vec<String> = reply.body["results"].as_array().unwrap().iter().map(|r| r["transaction"]["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(batch.len(), 7);
        let held = batch[3].clone();
        app.post(&format!("/v1/transactions/{held}/post"), &json!({})).await.expect_status(200);
        let after = app.transfer_ok(&funding, &wallet, 9).await;
        // 2 accounts, 7 created, 1 posted, 1 more created.
        let all = events_at_least(&app, "", 11).await;
        assert_eq!(all.len(), 11);
        let ids: Vec<String> = all.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        let created: Vec<&Value> = all.iter().filter(|e| e["type"] == "ledger.transaction.created").collect();
        let objects: Vec<&str> = created.iter().map(|e| e["data"]["object"]["id"].as_str().unwrap()).collect();
        let mut expected: Vec<&str> = batch.iter().map(String::as_str).collect();
        expected.push(&after);
        assert_eq!(objects, expected, "one created event per transaction, in log order");
        assert_eq!(created[3]["data"]["object"]["status"], "pending", "as it was when created");
        assert!(created.iter().all(|e| e["sequence"] == 1));

        // Every page size, forwards and backwards, sees every event once, in order.
        for limit in 1..=4 {
            let mut forward: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    None => format!("/v1/events?limit={limit}"),
                    Some(id) => format!("/v1/events?limit={limit}&starting_after={id}"),
                };
                let page = app.get(&path).await.expect_status(200).body.clone();
                let data = page["data"].as_array().unwrap();
                forward.extend(data.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
                cursor = data.last().map(|e| e["id"].as_str().unwrap().to_owned());
                if page["has_more"] != json!(true) {
                    break;
                }
            }
            forward.reverse();
            assert_eq!(forward, ids, "newest first in pages of {limit}");
            let mut backward: Vec<String> = Vec::new();
            let mut cursor = ids[0].clone();
            loop {
                let page = app.get(&format!("/v1/events?limit={limit}&ending_before={cursor}")).await.expect_status(200).body.clone();
                let data = page["data"].as_array().unwrap();
                let mut got: Vec<String> = data.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
                got.reverse();
                backward.extend(got);
                if page["has_more"] != json!(true) {
                    break;
                }
                cursor = backward.last().unwrap().clone();
            }
            assert_eq!(backward, ids[1..].to_vec(), "oldest first in pages of {limit}, going back");
        }
        let typed = in_pages(&app, "/v1/events?type=ledger.transaction.created", 3).await;
        assert_eq!(typed.len(), 8);

        // Each event alone, and each transaction's events by object.
        for event in &all {
            let id = event["id"].as_str().unwrap();
            assert_eq!(&app.get(&format!("/v1/events/{id}")).await.expect_status(200).body, event);
        }
        for (i, transaction) in batch.iter().enumerate() {
            let of = app.list_all(&format!("/v1/events?object_id={transaction}")).await;
            let kinds: Vec<&str> = of.iter().map(|e| e["type"].as_str().unwrap()).collect();
            let sequences: Vec<i64> = of.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
            if i == 3 {
                assert_eq!((kinds, sequences), (vec!["ledger.transaction.posted", "ledger.transaction.created"], vec![2, 1]));
            } else {
                assert_eq!((kinds, sequences), (vec!["ledger.transaction.created"], vec![1]), "{transaction}");
            }
            let typed = app.list_all(&format!("/v1/events?object_id={transaction}&type=ledger.transaction.created")).await;
            assert_eq!(typed.len(), 1);
            assert_eq!(app.list_all(&format!("/v1/events?object_id={transaction}&type=ledger.account.created")).await.len(), 0);
            let audit = app.list_all(&format!("/v1/audit_events?trail=ledger&resource_id={transaction}")).await;
            assert_eq!(audit.len(), if i == 3 { 2 } else { 1 }, "{transaction}");
            assert_eq!(audit.last().unwrap()["action"], "transaction.created");
            assert_eq!(audit.last().unwrap()["request_id"].as_str(), reply.header("request-id"));
        }
        // The audit trail pages through the batch one record at a time, both ways.
        let audited = in_pages(&app, "/v1/audit_events?trail=ledger&resource_type=transaction", 1).await;
        let mut audited: Vec<String> = audited.iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
        audited.reverse();
        let transaction_events: Vec<String> = all.iter().filter(|e| e["type"].as_str().unwrap().starts_with("ledger.transaction.")).map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(audited, transaction_events);
        let back = app.get(&format!("/v1/audit_events?trail=ledger&limit=2&ending_before={}", ids[3])).await.expect_status(200).body.clone();
        let back: Vec<&str> = back["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(back, vec![ids[5].as_str(), ids[4].as_str()]);

        // A batch member redelivered to an endpoint added since reaches it.
        let receiver = crate::webhooks::Receiver::start(200).await;
        let (endpoint_id, _) = crate::webhooks::endpoint(&app, &receiver.url, json!(["*"])).await;
        let member = created[2]["id"].as_str().unwrap();
        app.post(&format!("/v1/events/{member}/redeliver"), &json!({"endpoint_id": endpoint_id})).await.expect_status(200);
        let got = receiver.until("the redelivery", |r| !r.is_empty()).await;
        assert_eq!(&got[0].json(), created[2], "the delivery carries the member, as GET /v1/events shows it");
    }
}

#[test]
fn docs_events_md_is_generated_from_the_catalog() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    let generated = settle_api::events::catalog::markdown();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated && std::env::var("SETTLE_UPDATE_DOCS").is_ok() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "docs/events.md is stale: run `SETTLE_UPDATE_DOCS=1 cargo test -p settle-api --test it docs_events_md` or `settle events catalog > docs/events.md`"
    );
}
