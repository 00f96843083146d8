//! Customers and compliance over HTTP: normalization at the boundary,
//! masking without the PII scope, blind-index lookups, the KYC state
//! machine with sandbox magic values, envelope encryption (no fixture PII
//! in the database file, logs or error bodies), rotation, erasure,
//! consents, sanctions screening and the hash-chained audit trail.

use crate::app::{Backend, TestApp, ledger_test};
use reqwest::Method;
use serde_json::{Value, json};
use settle_core::tenancy::{Environment, Scope};
use settle_store::customers::{SanctionsEntryRecord, SanctionsListRecord};

/// Fixture personal values; none may appear in clear anywhere we store or log.
const GIVEN: &str = "Zoëlla";
const FAMILY: &str = "Quixotefield";
const EMAIL: &str = "zoella.quixotefield@Example.COM";
const SSN: &str = "219-54-8831";
const STREET: &str = "742 Evergreen Terrace";

fn individual() -> Value {
    json!({
        "type": "individual",
        "given_name": format!("  {GIVEN} "),
        "family_name": FAMILY,
        "email": EMAIL,
        "phone": "(415) 555-2671",
        "date_of_birth": "1984-02-29",
        "address": {"line1": STREET, "city": "Springfield", "region": "il", "postal_code": "627011234", "country": "us"},
        "tax_id": {"type": "us_ssn", "value": SSN},
        "nationality": "US",
        "metadata": {"crm": "42"},
    })
}

async fn tenant_of(app: &TestApp) -> settle_core::tenancy::TenantId {
    app.store.find_api_key(settle_api::auth::hash_secret(app.api.key.as_deref().unwrap())).await.unwrap().unwrap().tenant
}

pub fn patch(app: &crate::app::Api, path: &str, body: &Value) -> impl Future<Output = crate::app::Reply> + Send + 'static {
    app.send(app.request(Method::PATCH, path).json(body))
}

ledger_test! {
    async fn a_customer_is_normalized_masked_without_the_pii_scope_and_found_by_blind_index(app) {
        let created = app.post_idempotent("/v1/customers", "cus-1", &individual()).await;
        created.expect_status(201);
        let id = created.id();
        let c = &created.body;
        assert_eq!((c["given_name"].as_str(), c["email"].as_str(), c["phone"].as_str()), (Some(GIVEN), Some("zoella.quixotefield@example.com"), Some("+14155552671")));
        assert_eq!((c["address"]["region"].as_str(), c["address"]["postal_code"].as_str(), c["address"]["country"].as_str()), (Some("US-IL"), Some("62701-1234"), Some("US")));
        assert_eq!((c["tax_id"]["value"].as_str(), c["tax_id_last4"].as_str(), c["personal_data"].as_str()), (Some(SSN), Some("8831"), Some("full")));
        assert_eq!(c["kyc"]["status"], "unverified");
        assert_eq!(c["kyc"]["requirements"]["currently_due"], json!([]));
        assert_eq!(c["kyc"]["capabilities"], json!({"ledger_hold": "inactive", "ach_debit": "inactive", "card_issuing": "inactive"}));
        // The same key replays; the same external id is refused.
        let replay = app.post_idempotent("/v1/customers", "cus-1", &individual()).await;
        assert_eq!((replay.status, replay.header("idempotent-replayed")), (201, Some("true")));

        // A key without customers:pii:read sees masks.
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::CustomersRead]).await));
        let masked = reader.get(&format!("/v1/customers/{id}")).await;
        masked.expect_status(200);
        let m = &masked.body;
        assert_eq!((m["personal_data"].as_str(), m["given_name"].as_str(), m["email"].as_str()), (Some("masked"), Some("Z***"), Some("z***@example.com")));
        assert_eq!((m["tax_id"].clone(), m["tax_id_last4"].as_str(), m["date_of_birth"].clone()), (Value::Null, Some("8831"), Value::Null));
        assert_eq!((m["address"]["line1"].clone(), m["address"]["country"].as_str()), (Value::Null, Some("US")));
        assert!(!masked.bytes.windows(FAMILY.len()).any(|w| w == FAMILY.as_bytes()));
        reader.get("/v1/customers?email=zoella.quixotefield@example.com").await.expect_error(403, "insufficient_scope");
        reader.post("/v1/customers", &individual()).await.expect_error(403, "insufficient_scope");

        // Lookups by email (any case of the domain) and tax id find it through blind indexes.
        let by_email = app.get("/v1/customers?email=zoella.quixotefield@EXAMPLE.com").await;
        assert_eq!(by_email.body["data"].as_array().map(|d| d.iter().map(|c| c["id"].clone()).collect::<Vec<_>>()), Some(vec![json!(id)]));
        let by_tax = app.get("/v1/customers?tax_id=us_ssn:219548831").await;
        assert_eq!(by_tax.body["data"].as_array().map(Vec::len), Some(1));
        assert_eq!(app.get("/v1/customers?email=someone@example.com").await.body["data"], json!([]));
        assert_eq!(app.list_all("/v1/customers").await.len(), 1);
    }
}

ledger_test! {
    async fn bad_fields_are_refused_with_the_field_named_and_without_echoing_the_value(app) {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"address": {"line1": STREET, "city": "X", "region": "IL", "postal_code": "6270", "country": "US"}}), "address.postal_code"),
            (json!({"address": {"line1": STREET, "city": "X", "region": "ZZ", "postal_code": "62701", "country": "US"}}), "address.region"),
            (json!({"address": {"line1": STREET, "city": "X", "country": "XX"}}), "address.country"),
            (json!({"tax_id": {"type": "us_ssn", "value": "666-45-6789"}}), "tax_id.value"),
            (json!({"tax_id": {"type": "eu_vat", "value": "DE136695977"}}), "tax_id.value"),
            (json!({"tax_id": {"type": "us_ein", "value": "12-3456789"}}), "tax_id.type"),
            (json!({"phone": "+1 015 555 2671"}), "phone"),
            (json!({"email": "zoella@@example"}), "email"),
            (json!({"date_of_birth": "1984-02-30"}), "date_of_birth"),
            (json!({"legal_name": "Acme"}), "legal_name"),
            (json!({"favourite_colour": "blue"}), "favourite_colour"),
        ];
        for (extra, param) in cases {
            let mut body = json!({"type": "individual", "given_name": GIVEN, "family_name": FAMILY});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let reply = app.post("/v1/customers", &body).await;
            reply.expect_error(400, "invalid_request");
            assert!(reply.param().unwrap_or("").starts_with(param) || reply.body["error"]["message"].as_str().unwrap_or("").contains(param), "{param}: {}", reply.body);
            for secret in ["666-45-6789", "6270", "DE136695977", "015 555", "zoella@@", GIVEN, FAMILY] {
                assert!(!reply.body.to_string().contains(secret), "{param}: the error echoes a value: {}", reply.body);
            }
        }
        app.post("/v1/customers", &json!({"type": "robot"})).await.expect_error(400, "invalid_request");
        assert_eq!(app.list_all("/v1/customers").await.len(), 0, "refused requests change nothing");
        let business = app.post("/v1/customers", &json!({"type": "business", "legal_name": "Ünïcode GmbH", "incorporation_country": "de", "tax_id": {"type": "eu_vat", "value": "DE 136 695 976"}})).await;
        business.expect_status(201);
        assert_eq!((business.body["legal_name"].as_str(), business.body["tax_id"]["value"].as_str()), (Some("Ünïcode GmbH"), Some("DE136695976")));
    }
}

ledger_test! {
    async fn kyc_moves_through_its_states_with_sandbox_magic_values_and_records_who_decided(app) {
        let partial = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ada", "family_name": "Pending"})).await;
        let id = partial.id();
        assert_eq!(partial.body["kyc"]["requirements"]["currently_due"], json!(["address", "tax_id", "date_of_birth"]));
        app.post(&format!("/v1/customers/{id}/verify"), &json!({})).await.expect_error(422, "verification_requirements_due");
        let patched = patch(&app, &format!("/v1/customers/{id}"), &json!({
            "date_of_birth": "1990-01-01", "tax_id": {"type": "us_ssn", "value": "219-09-9999"},
            "address": {"line1": "1 Main", "city": "Toronto", "region": "ON", "postal_code": "m5v3l9", "country": "CA"},
        })).await;
        patched.expect_status(200);
        assert_eq!(patched.body["kyc"]["requirements"]["currently_due"], json!([]));
        assert_eq!(patched.body["kyc"]["requirements"]["eventually_due"], json!(["email", "phone", "nationality"]));
        let pending = app.post(&format!("/v1/customers/{id}/verify"), &json!({})).await;
        pending.expect_status(200);
        assert_eq!(pending.body["kyc"]["status"], "pending", "the family name Pending waits for a decision");
        assert_eq!(pending.body["kyc"]["capabilities"]["ach_debit"], "pending");
        app.post(&format!("/v1/customers/{id}/verify"), &json!({})).await.expect_error(409, "invalid_kyc_transition");
        let decided = app.post(&format!("/v1/test_helpers/customers/{id}/decide"), &json!({"decision": "verified", "reason": "documents checked"})).await;
        decided.expect_status(200);
        assert_eq!(decided.body["kyc"]["capabilities"], json!({"ledger_hold": "active", "ach_debit": "active", "card_issuing": "inactive"}));
        // A live key cannot use the helper.
        let live = app.api.with_key(Some(&app.key("acme", Environment::Live, &Scope::ALL).await));
        live.post(&format!("/v1/test_helpers/customers/{id}/decide"), &json!({"decision": "verified", "reason": "x"})).await.expect_error(404, "not_found");
        // A new address after verification returns the customer to unverified.
        let moved = patch(&app, &format!("/v1/customers/{id}"), &json!({"address": {"line1": "2 Main", "city": "Toronto", "region": "ON", "postal_code": "M5V 3L9", "country": "CA"}})).await;
        assert_eq!(moved.body["kyc"]["status"], "unverified");

        let history = app.get(&format!("/v1/customers/{id}/kyc_events")).await;
        let steps: Vec<(String, String, String)> = history.body["data"].as_array().unwrap().iter()
            .map(|e| (e["to_status"].as_str().unwrap().to_owned(), e["decided_by"].as_str().unwrap().to_owned(), e["reason"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(steps, vec![
            (String::from("pending"), String::from("api_key"), String::from("submitted for verification")),
            (String::from("verified"), String::from("operator"), String::from("documents checked")),
            (String::from("unverified"), String::from("system"), String::from("identity fields changed: address")),
        ]);

        // Magic values decide at once.
        let full = |family: &str, ssn: &str| json!({"type": "individual", "given_name": "Bo", "family_name": family, "date_of_birth": "1970-05-05",
            "tax_id": {"type": "us_ssn", "value": ssn}, "address": {"line1": "1 A St", "city": "Austin", "region": "TX", "postal_code": "73301", "country": "US"}});
        for (family, ssn, status) in [("Rejected", "219-09-9999", "rejected"), ("Doe", "111-11-1111", "rejected"), ("Moreinfo", "219-09-9999", "needs_more_info"), ("Doe", "219-09-9999", "verified")] {
            let c = app.post("/v1/customers", &full(family, ssn)).await.id();
            let r = app.post(&format!("/v1/customers/{c}/verify"), &json!({})).await;
            assert_eq!(r.body["kyc"]["status"], status, "{family} {ssn}: {}", r.body);
            if status == "needs_more_info" {
                assert_eq!(r.body["kyc"]["requirements"]["errors"][0]["field"], "date_of_birth");
                assert_eq!(r.body["kyc"]["requirements"]["currently_due"], json!(["date_of_birth"]));
                let fixed = patch(&app, &format!("/v1/customers/{c}"), &json!({"date_of_birth": "1970-05-06"})).await;
                assert_eq!((fixed.body["kyc"]["status"].as_str(), fixed.body["kyc"]["requirements"]["errors"].clone()), (Some("unverified"), json!([])));
            }
        }
    }
}

ledger_test! {
    async fn consents_are_immutable_and_revocation_is_a_new_fact(app) {
        let id = app.post("/v1/customers", &individual()).await.id();
        let body = json!({"type": "ach_debit_authorization", "text_version": "2026-01", "channel": "web", "ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0", "granted_at": app.now().to_rfc3339()});
        let granted = app.post_idempotent(&format!("/v1/customers/{id}/consents"), "cns-1", &body).await;
        granted.expect_status(201);
        let consent = granted.id();
        assert_eq!((granted.body["status"].as_str(), granted.body["ip_address"].as_str()), (Some("active"), Some("203.0.113.7")));
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::CustomersRead]).await));
        let listed = reader.get(&format!("/v1/customers/{id}/consents")).await;
        assert_eq!((listed.body["data"][0]["ip_address"].clone(), listed.body["data"][0]["type"].as_str()), (Value::Null, Some("ach_debit_authorization")));
        let future = json!({"type": "data_sharing", "text_version": "1", "channel": "web", "granted_at": "2999-01-01T00:00:00Z"});
        app.post(&format!("/v1/customers/{id}/consents"), &future).await.expect_error(400, "invalid_request");

        let tenant = tenant_of(&app).await;
        let now = app.now().micros();
        let active = app.store.active_consent(tenant, id.clone(), String::from("ach_debit_authorization"), now).await.unwrap();
        assert_eq!(active.map(|c| c.id), Some(consent.clone()));
        app.clock.advance_secs(60);
        let revoked = app.post(&format!("/v1/customers/{id}/consents/{consent}/revoke"), &json!({"reason": "customer called"})).await;
        revoked.expect_status(200);
        assert_eq!((revoked.body["status"].as_str(), revoked.body["revocation_reason"].as_str()), (Some("revoked"), Some("customer called")));
        app.post(&format!("/v1/customers/{id}/consents/{consent}/revoke"), &json!({"reason": "again"})).await.expect_error(409, "consent_already_revoked");
        assert!(app.store.active_consent(tenant, id.clone(), String::from("ach_debit_authorization"), app.now().micros()).await.unwrap().is_none());
        // As of before the revocation it was active: the record itself never changed.
        assert!(app.store.active_consent(tenant, id.clone(), String::from("ach_debit_authorization"), now).await.unwrap().is_some());
        assert_eq!(app.store.get_consent(tenant, consent.clone()).await.unwrap().unwrap().granted_at, granted_at_micros(&granted.body));
    }
}

fn granted_at_micros(body: &Value) -> i64 {
    let t = time::OffsetDateTime::parse(body["granted_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1000) as i64
}

pub async fn load_watchlist(app: &TestApp, names: &[(&str, &[&str], Option<i64>)]) -> String {
    let ids = settle_core::ids::IdGenerator::default();
    let list = SanctionsListRecord {
        id: ids.sanctions_list().to_string(),
        source: String::from("internal"),
        format: String::from("internal-csv"),
        entry_count: names.len() as i64,
        fingerprint: String::from("test"),
        loaded_by: String::from("test"),
        loaded_at: app.now().micros(),
    };
    let entries = names
        .iter()
        .enumerate()
        .map(|(i, (name, aliases, year))| SanctionsEntryRecord {
            position: i as i64,
            reference: format!("W-{i}"),
            names: std::iter::once(name.to_string()).chain(aliases.iter().map(|a| a.to_string())).collect(),
            birth_year: *year,
            countries: Vec::new(),
            programs: String::from("internal"),
        })
        .collect();
    let id = list.id.clone();
    app.store.insert_sanctions_list(list, entries).await.unwrap();
    id
}

ledger_test! {
    async fn customers_are_screened_on_create_change_and_list_update_and_matches_are_resolved_with_an_audit(app) {
        // Screened on every list update: this customer exists before any list.
        let early = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await;
        assert_eq!(early.body["screening"]["status"], "not_screened");
        let early = early.id();
        load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961)), ("MUHAMMAD, Ali Hassan", &["Mohammed Ali HASAN"], None)]).await;
        assert_eq!(settle_api::customers::screening::refresh(&app.state).await.unwrap(), 1);
        assert_eq!(settle_api::customers::screening::refresh(&app.state).await.unwrap(), 0, "a snapshot is loaded and re-screened once");
        let c = app.get(&format!("/v1/customers/{early}")).await;
        assert_eq!(c.body["screening"]["status"], "potential_match");
        assert_eq!(c.body["kyc"]["capabilities"]["ledger_hold"], "suspended");
        let screenings = app.get(&format!("/v1/screenings?customer_id={early}")).await;
        let s = &screenings.body["data"][0];
        assert_eq!((s["trigger"].as_str(), s["matches"][0]["reference"].as_str(), s["matches"][0]["source"].as_str()), (Some("list_update"), Some("W-0"), Some("internal")));
        let screening = s["id"].as_str().unwrap().to_owned();
        let confirmed = app.post(&format!("/v1/screenings/{screening}/resolve"), &json!({"resolution": "confirmed_match", "reason": "same passport"})).await;
        confirmed.expect_status(200);
        app.post(&format!("/v1/screenings/{screening}/resolve"), &json!({"resolution": "false_positive", "reason": "x"})).await.expect_error(409, "screening_not_resolvable");
        assert_eq!(app.get(&format!("/v1/customers/{early}")).await.body["screening"]["status"], "confirmed_match");

        // Screened on create: spelling and order variants match.
        let ali = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ali Hasan", "family_name": "Mohamed"})).await;
        assert_eq!(ali.body["screening"]["status"], "potential_match", "{}", ali.body);
        let ali = ali.id();
        let clear = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Grace", "family_name": "Hopper"})).await;
        assert_eq!(clear.body["screening"]["status"], "clear");
        let s = app.get(&format!("/v1/screenings?customer_id={ali}")).await.body["data"][0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/screenings/{s}/resolve"), &json!({"resolution": "false_positive", "reason": "different person: date of birth 2001"})).await.expect_status(200);
        let after = app.get(&format!("/v1/customers/{ali}")).await;
        assert_eq!((after.body["screening"]["status"].as_str(), after.body["kyc"]["capabilities"]["ledger_hold"].as_str()), (Some("false_positive"), Some("inactive")));
        // Screened on change; a match resolved as a false positive does not count again.
        let changed = patch(&app, &format!("/v1/customers/{ali}"), &json!({"date_of_birth": "2001-01-01"})).await;
        assert_eq!(changed.body["screening"]["status"], "clear", "{}", changed.body);
        assert_eq!(app.list_all(&format!("/v1/screenings?customer_id={ali}")).await.len(), 2);

        // The audit names who resolved and why.
        let audit = app.get(&format!("/v1/audit_events?resource_id={screening}")).await;
        let actions: Vec<&str> = audit.body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, vec!["screening.resolved", "screening.created"]);
        assert_eq!(audit.body["data"][0]["reason"], "confirmed_match: same passport");
        assert_eq!(audit.body["data"][1]["actor"], "system");
    }
}

ledger_test! {
    async fn erasure_shreds_personal_data_and_keeps_the_audit_trail_and_rotation_loses_nothing(app) {
        let mut ids = Vec::new();
        for i in 0..3 {
            let mut body = individual();
            body["email"] = json!(format!("person{i}@example.com"));
            body["tax_id"] = json!({"type": "us_ssn", "value": format!("123-45-678{i}")});
            let id = app.post("/v1/customers", &body).await.id();
            let consent = json!({"type": "terms_of_service", "text_version": "1", "channel": "web", "ip_address": "198.51.100.9", "granted_at": app.now().to_rfc3339()});
            app.post(&format!("/v1/customers/{id}/consents"), &consent).await.expect_status(201);
            ids.push(id);
        }
        // Rotation, as `settle kms rotate` does it, while this server keeps its old keyring in memory.
        let version = settle_api::customers::keyring::add_kek(&app.keyring_path).unwrap();
        let operator = settle_api::customers::keyring::Keyring::load_or_create(&app.keyring_path).unwrap();
        assert_eq!(settle_api::customers::rewrap_all(&app.store, &operator).await.unwrap(), 3);
        assert_eq!(app.store.data_key_versions().await.unwrap(), vec![(version, 3)]);
        for id in &ids {
            let c = app.get(&format!("/v1/customers/{id}")).await;
            assert_eq!((c.body["family_name"].as_str(), c.body["personal_data"].as_str()), (Some(FAMILY), Some("full")));
        }
        // Customers created after the rotation are wrapped with the new key.
        let newer = app.post("/v1/customers", &individual()).await.id();
        assert_eq!(app.store.data_key_versions().await.unwrap(), vec![(version, 4)]);

        let erased_id = ids[0].clone();
        let erased = app.send(app.request(Method::DELETE, &format!("/v1/customers/{erased_id}/personal_data"))).await;
        erased.expect_status(200);
        assert_eq!((erased.body["personal_data"].as_str(), erased.body["given_name"].clone(), erased.body["tax_id_last4"].clone()), (Some("erased"), Value::Null, Value::Null));
        let read = app.get(&format!("/v1/customers/{erased_id}")).await;
        assert_eq!((read.body["personal_data"].as_str(), read.body["email"].clone()), (Some("erased"), Value::Null));
        let tenant = tenant_of(&app).await;
        assert!(app.store.customer_data_key(tenant, erased_id.clone()).await.unwrap().is_none(), "the data key is destroyed");
        let consents = app.get(&format!("/v1/customers/{erased_id}/consents")).await;
        assert_eq!((consents.body["data"][0]["ip_address"].clone(), consents.body["data"][0]["status"].as_str()), (Value::Null, Some("active")));
        assert_eq!(app.get("/v1/customers?email=person0@example.com").await.body["data"], json!([]));
        patch(&app, &format!("/v1/customers/{erased_id}"), &json!({"email": "new@example.com"})).await.expect_error(409, "customer_erased");
        app.post(&format!("/v1/customers/{erased_id}/verify"), &json!({})).await.expect_error(409, "customer_erased");
        // The sealed bytes that remain (consents) cannot be opened by anyone any more.
        let sealed = app.store.list_consents(tenant, erased_id.clone()).await.unwrap()[0].sealed.clone();
        assert!(sealed.is_some());
        // Others are untouched, and the audit still refers to the customer by id.
        assert_eq!(app.get(&format!("/v1/customers/{}", ids[1])).await.body["family_name"], FAMILY);
        assert_eq!(app.get(&format!("/v1/customers/{newer}")).await.body["family_name"], FAMILY);
        let audit = app.get(&format!("/v1/audit_events?resource_id={erased_id}")).await;
        let actions: Vec<&str> = audit.body["data"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, vec!["customer.personal_data_erased", "customer.created"]);
        assert_eq!(audit.body["data"][0]["client_ip"], "127.0.0.1", "the request's client address is recorded");
        assert!(!audit.body.to_string().contains(FAMILY));
        assert_eq!(app.store.verify_compliance_audit(tenant).await.unwrap(), None, "the audit chain holds");
        let no_audit = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::CustomersRead]).await));
        no_audit.get("/v1/audit_events").await.expect_error(403, "insufficient_scope");
    }
}

ledger_test! {
    async fn rotation_while_customers_are_written_loses_nothing(app) {
        // A writer keeps creating customers while an operator adds a key-encryption key
        // and re-wraps the data keys, pass after pass, as `settle kms rotate` does.
        let writer = {
            let api = app.api.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..30 {
                    let mut body = individual();
                    body["email"] = json!(format!("load{i}@example.com"));
                    let reply = api.post("/v1/customers", &body).await;
                    reply.expect_status(201);
                    ids.push(reply.id());
                }
                ids
            })
        };
        let version = settle_api::customers::keyring::add_kek(&app.keyring_path).unwrap();
        let operator = settle_api::customers::keyring::Keyring::load_or_create(&app.keyring_path).unwrap();
        let mut passes = 0;
        while !writer.is_finished() {
            settle_api::customers::rewrap_all(&app.store, &operator).await.unwrap();
            passes += 1;
        }
        let ids = writer.await.unwrap();
        // The keys wrapped after the last pass began.
        settle_api::customers::rewrap_all(&app.store, &operator).await.unwrap();
        assert!(passes > 0, "the rotation ran while customers were written");
        assert_eq!(app.store.data_key_versions().await.unwrap(), vec![(version, 30)], "every data key is under the new key");
        for (i, id) in ids.iter().enumerate() {
            let c = app.get(&format!("/v1/customers/{id}")).await;
            let email = format!("load{i}@example.com");
            assert_eq!(
                (c.body["family_name"].as_str(), c.body["email"].as_str(), c.body["personal_data"].as_str()),
                (Some(FAMILY), Some(email.as_str()), Some("full")),
                "{id} reads back whole"
            );
            let found = app.get(&format!("/v1/customers?email={email}")).await;
            assert_eq!(found.body["data"][0]["id"].as_str(), Some(id.as_str()), "{id} is found by its blind index");
        }
    }
}

/// Every file the SQLite database consists of, as bytes.
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(settle_store::store::SQLITE_FILE)) {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fixture_personal_data_reaches_the_database_file_or_the_logs() {
    let logs = crate::correlation::captured_logs();
    let app = TestApp::start(Backend::Sqlite).await;
    let id = app.post("/v1/customers", &individual()).await.id();
    patch(&app, &format!("/v1/customers/{id}"), &json!({"phone": "+44 20 7946 0958"})).await.expect_status(200);
    let consent = json!({"type": "data_sharing", "text_version": "1", "channel": "web", "ip_address": "203.0.113.99", "user_agent": "FixtureAgent/9.9", "granted_at": app.now().to_rfc3339()});
    app.post(&format!("/v1/customers/{id}/consents"), &consent).await.expect_status(201);
    app.send(app.request(Method::POST, "/v1/customers").header("Idempotency-Key", "pii-1").json(&individual())).await.expect_status(201);
    assert_eq!(
        app.get("/v1/customers?email=zoella.quixotefield@example.com").await.body["data"].as_array().map(Vec::len),
        Some(2),
        "two customers share the email"
    );
    app.post("/v1/customers", &json!({"type": "individual", "given_name": GIVEN, "tax_id": {"type": "us_ssn", "value": "666-12-3456"}}))
        .await
        .expect_error(400, "invalid_request");
    let dir = app.keyring_path.parent().unwrap().to_owned();
    let db = database_bytes(&dir);
    assert!(db.len() > 10_000, "the database files were found");
    assert!(db.windows(16).any(|w| w == b"customer.created"), "the search reads the rows (the audit action is there in clear)");
    let logged = logs.lock().unwrap().clone();
    let fixtures = [
        GIVEN,
        FAMILY,
        "zoella.quixotefield",
        "219548831",
        SSN,
        STREET,
        "Evergreen",
        "+14155552671",
        "4155552671",
        "1984-02-29",
        "442079460958",
        "203.0.113.99",
        "FixtureAgent",
        "666-12-3456",
    ];
    for f in fixtures {
        assert!(!db.windows(f.len()).any(|w| w == f.as_bytes()), "{f} is in the database file");
        assert!(!logged.windows(f.len()).any(|w| w == f.as_bytes()), "{f} is in the logs");
    }
    // The customer still reads back (the bytes were sealed, not lost).
    assert_eq!(app.get(&format!("/v1/customers/{id}")).await.body["given_name"], GIVEN);
}

fn form(kind: &str, file: &[u8], declared: &str) -> (String, Vec<u8>) {
    let boundary = "settle-test-boundary-7f3a";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{kind}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan\"\r\nContent-Type: {declared}\r\n\r\n").into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

ledger_test! {
    async fn documents_are_typed_by_content_sealed_readable_only_with_the_pii_scope_and_shredded_on_erasure(app) {
        let id = app.post("/v1/customers", &individual()).await.id();
        let scan: Vec<u8> = [b"\x89PNG\r\n\x1a\n".as_slice(), b"passport scan of Quixotefield"].concat();
        let (ct, body) = form("passport", &scan, "application/pdf");
        let path = format!("/v1/customers/{id}/documents");
        let uploaded = app.send(app.request(Method::POST, &path).header("content-type", ct).header("Idempotency-Key", "doc-1").body(body.clone())).await;
        uploaded.expect_status(201);
        assert_eq!((uploaded.body["content_type"].as_str(), uploaded.body["size_bytes"].as_i64()), (Some("image/png"), Some(scan.len() as i64)), "typed by content, not by the declared type");
        let doc = uploaded.id();
        let (ct2, _) = form("passport", &scan, "application/pdf");
        let replay = app.send(app.request(Method::POST, &path).header("content-type", ct2).header("Idempotency-Key", "doc-1").body(body)).await;
        assert_eq!((replay.status, replay.header("idempotent-replayed")), (201, Some("true")));
        let (ct, exe) = form("passport", b"MZ\x90\x00 not a document", "image/png");
        app.send(app.request(Method::POST, &path).header("content-type", ct).body(exe)).await.expect_error(422, "unsupported_document");
        let (ct, bad) = form("tax_return", &scan, "image/png");
        app.send(app.request(Method::POST, &path).header("content-type", ct).body(bad)).await.expect_error(400, "invalid_request");
        let big = vec![0xffu8; settle_api::customers::documents::MAX_UPLOAD_BYTES + 1];
        let (ct, huge) = form("passport", &big, "image/jpeg");
        app.send(app.request(Method::POST, &path).header("content-type", ct).body(huge)).await.expect_error(413, "request_too_large");
        assert_eq!(app.list_all(&path).await.len(), 1);

        let content = app.get(&format!("/v1/customers/{id}/documents/{doc}/content")).await;
        assert_eq!((content.status, content.header("content-type"), content.bytes.clone()), (200, Some("image/png"), scan.clone()));
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::CustomersRead]).await));
        reader.get(&format!("/v1/customers/{id}/documents/{doc}/content")).await.expect_error(403, "insufficient_scope");
        assert_eq!(reader.get(&path).await.body["data"][0]["id"], doc.as_str());

        app.send(app.request(Method::DELETE, &format!("/v1/customers/{id}/personal_data"))).await.expect_status(200);
        app.get(&format!("/v1/customers/{id}/documents/{doc}/content")).await.expect_error(409, "customer_erased");
        let (ct, body) = form("passport", &scan, "image/png");
        app.send(app.request(Method::POST, &path).header("content-type", ct).body(body)).await.expect_error(409, "customer_erased");
    }
}

ledger_test! {
    async fn money_movements_touching_a_blocked_customers_accounts_are_refused_and_change_nothing(app) {
        let wallet = app.account("credit", None).await;
        let other = app.account("credit", None).await;
        let funding = app.account("debit", None).await;
        app.transfer_ok(&funding, &wallet, 5000).await;
        let hold = app.hold_ok(&wallet, &other, 1000).await;
        let id = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await.id();
        let linked = app.post(&format!("/v1/customers/{id}/accounts"), &json!({"account_id": wallet})).await;
        linked.expect_status(201);
        let second = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Grace", "family_name": "Hopper"})).await.id();
        app.post(&format!("/v1/customers/{second}/accounts"), &json!({"account_id": wallet})).await.expect_error(409, "account_already_linked");
        app.post(&format!("/v1/customers/{second}/accounts"), &json!({"account_id": "acct_01jdx3q5g3n3n5v8y2w4h6k9m1"})).await.expect_error(422, "account_not_found");
        assert_eq!(app.get(&format!("/v1/customers/{id}/accounts")).await.body["data"][0]["account_id"], wallet.as_str());
        // An unresolved (potential) match blocks money already; so does a confirmed one.
        load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961))]).await;
        settle_api::customers::screening::refresh(&app.state).await.unwrap();
        app.transfer(&funding, &wallet, 100).await.expect_error(422, "customer_blocked");
        let screening = app.get(&format!("/v1/screenings?customer_id={id}")).await.body["data"][0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/screenings/{screening}/resolve"), &json!({"resolution": "confirmed_match", "reason": "confirmed by compliance"})).await.expect_status(200);

        let before = app.balances(&wallet).await;
        app.transfer(&funding, &wallet, 100).await.expect_error(422, "customer_blocked");
        app.transfer(&wallet, &other, 100).await.expect_error(422, "customer_blocked");
        // In a batch the engine refuses the blocked item alone; the other moves.
        let batch = json!({"atomic": false, "transactions": [crate::app::transfer_body(&funding, &other, 1), crate::app::transfer_body(&wallet, &other, 1)]});
        let reply = app.post("/v1/transactions/batch", &batch).await;
        reply.expect_status(200);
        assert_eq!((reply.body["results"][0]["status"].as_u64(), reply.body["results"][1]["error"]["code"].as_str()), (Some(201), Some("customer_blocked")));
        app.post(&format!("/v1/transactions/{hold}/post"), &json!({})).await.expect_error(422, "customer_blocked");
        assert_eq!(app.balances(&wallet).await, before, "refusals change nothing");
        // Accounts of other customers (and of none) move as before.
        app.transfer_ok(&funding, &other, 100).await;
    }
}

ledger_test! {
    async fn an_account_opened_for_a_customer_names_it_and_stops_money_until_a_match_is_cleared(app) {
        let id = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await.id();
        let open = |customer: &str| json!({"name": "Ivan wallet", "currency": "USD", "normal_balance": "credit", "customer_id": customer});
        let created = app.send(app.request(Method::POST, "/v1/accounts").header("Idempotency-Key", "ivan-wallet").json(&open(&id))).await;
        created.expect_status(201);
        assert_eq!(created.body["customer_id"], id.as_str());
        let wallet = created.id();
        let replay = app.send(app.request(Method::POST, "/v1/accounts").header("Idempotency-Key", "ivan-wallet").json(&open(&id))).await;
        assert_eq!((replay.status, replay.id()), (201, wallet.clone()));
        assert_eq!(app.get(&format!("/v1/accounts/{wallet}")).await.body["customer_id"], id.as_str());
        let listed = app.list_all("/v1/accounts").await;
        assert_eq!(listed.iter().find(|a| a["id"] == wallet.as_str()).map(|a| a["customer_id"].clone()), Some(json!(id)));
        assert_eq!(app.get(&format!("/v1/customers/{id}/accounts")).await.body["data"][0]["account_id"], wallet.as_str());

        // Bad owners are refused and open nothing.
        let count = listed.len();
        app.post("/v1/accounts", &open("cus_01jdx3q5g3n3n5v8y2w4h6k9m1")).await.expect_error(422, "customer_not_found");
        app.post("/v1/accounts", &open("nobody")).await.expect_error(422, "customer_not_found");
        let ledger_only = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead, Scope::LedgerWrite]).await));
        ledger_only.post("/v1/accounts", &open(&id)).await.expect_error(403, "insufficient_scope");
        let other_tenant = app.client_for("globex").await;
        other_tenant.post("/v1/accounts", &open(&id)).await.expect_error(422, "customer_not_found");
        assert_eq!(app.list_all("/v1/accounts").await.len(), count, "refusals open nothing");
        let plain = app.account("credit", None).await;
        assert_eq!(app.get(&format!("/v1/accounts/{plain}")).await.body["customer_id"], Value::Null);

        // A potential match stops money at once; clearing it as a false positive lets it move again.
        let funding = app.account("debit", None).await;
        app.transfer_ok(&funding, &wallet, 500).await;
        load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961))]).await;
        settle_api::customers::screening::refresh(&app.state).await.unwrap();
        app.transfer(&funding, &wallet, 100).await.expect_error(422, "customer_blocked");
        let screening = app.get(&format!("/v1/screenings?customer_id={id}")).await.body["data"][0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/screenings/{screening}/resolve"), &json!({"resolution": "false_positive", "reason": "different date of birth on the passport"}))
            .await
            .expect_status(200);
        app.transfer_ok(&funding, &wallet, 100).await;
    }
}
