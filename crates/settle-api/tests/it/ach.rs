//! The ACH rail over HTTP: counterparties, credits and debits through the
//! ledger, files cut by the test helper and by the scheduler under the
//! injected clock, returns (helper and return files), notifications of
//! change, cancellation, idempotency and refusals.

use crate::app::{Api, TestApp, ledger_test};
use serde_json::{Value, json};
use settle_ach::nacha;
use settle_core::tenancy::{Environment, Scope};

const ROUTING: &str = "021000021";
const ACCOUNT_NUMBER: &str = "000123456789";

/// A funded credit-normal wallet (USD) and a counterparty's bank account.
pub(crate) async fn setup(api: &Api, funds: i64) -> (String, String) {
    let wallet = api.account("credit", Some(0)).await;
    if funds > 0 {
        api.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), &json!({"amount": funds})).await.expect_status(201);
    }
    let reply = api
        .post(
            "/v1/counterparties",
            &json!({"name": "Jane Doe", "bank_accounts": [{"routing_number": ROUTING, "account_number": ACCOUNT_NUMBER, "account_type": "checking", "holder_name": "Jane Doe"}]}),
        )
        .await;
    reply.expect_status(201);
    let bank = reply.body["bank_accounts"][0]["id"].as_str().unwrap().to_owned();
    (wallet, bank)
}

fn payment_body(direction: &str, amount: i64, wallet: &str, bank: &str) -> Value {
    json!({"rail": "ach", "direction": direction, "amount": amount, "currency": "USD", "ledger_account_id": wallet,
        "counterparty_bank_account_id": bank, "sec_code": "PPD", "company_entry_description": "PAYROLL"})
}

pub(crate) async fn pay(api: &Api, direction: &str, amount: i64, wallet: &str, bank: &str) -> Value {
    let mut body = payment_body(direction, amount, wallet, bank);
    if direction == "debit" {
        // A corporate debit: no consumer authorization needed (see the consent test).
        body["sec_code"] = json!("CCD");
    }
    let reply = api.post("/v1/payments", &body).await;
    reply.expect_status(201);
    reply.body
}

pub(crate) async fn payment(api: &Api, id: &str) -> Value {
    let reply = api.get(&format!("/v1/payments/{id}")).await;
    reply.expect_status(200);
    reply.body
}

pub(crate) async fn cut(api: &Api) -> Vec<Value> {
    let reply = api.post("/v1/test_helpers/ach/cut", &json!({})).await;
    reply.expect_status(200);
    reply.body["data"].as_array().unwrap().clone()
}

pub(crate) async fn file_content(api: &Api, id: &str) -> String {
    let reply = api.get(&format!("/v1/ach/files/{id}/content")).await;
    reply.expect_status(200);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain"));
    String::from_utf8(reply.bytes.clone()).unwrap()
}

async fn ledger_status(api: &Api, transaction: &str) -> String {
    let reply = api.get(&format!("/v1/transactions/{transaction}")).await;
    reply.expect_status(200);
    reply.body["status"].as_str().unwrap().to_owned()
}

/// The bank's NOC file for `file`'s entries (only the one with trace number
/// `only`, if given): change `code` with `corrected` data.
pub(crate) fn notification_of_change(mut file: nacha::File, only: Option<&str>, code: &str, corrected: &str) -> String {
    for batch in &mut file.batches {
        batch.header.sec_code = "COR".into();
        batch.entries.retain(|e| only.is_none_or(|t| e.trace_number == t));
        for entry in &mut batch.entries {
            entry.transaction_code = 21;
            entry.amount_minor = 0;
            entry.addenda_record_indicator = '1';
            entry.addenda = vec![nacha::Addenda::Change(nacha::ChangeAddenda {
                change_code: code.into(),
                original_trace_number: entry.trace_number.clone(),
                reserved: nacha::alpha("", 6),
                original_rdfi_identification: entry.rdfi_identification.clone(),
                corrected_data: nacha::alpha(corrected, 29),
                reserved_2: nacha::alpha("", 15),
                trace_number: entry.trace_number.clone(),
            })];
        }
    }
    file.batches.retain(|b| !b.entries.is_empty());
    file.refresh_controls().unwrap();
    file.write()
}

pub(crate) fn statuses(p: &Value) -> Vec<String> {
    p["history"].as_array().unwrap().iter().map(|h| h["to"].as_str().unwrap().to_owned()).collect()
}

ledger_test! {
    async fn an_ach_credit_holds_at_creation_posts_in_the_file_and_settles(app) {
        let (wallet, bank) = setup(&app, 100_000).await;
        let p = pay(&app, "credit", 12_500, &wallet, &bank).await;
        assert_eq!(p["status"], "pending");
        let id = p["id"].as_str().unwrap().to_owned();
        let tx = p["ledger_transaction_id"].as_str().unwrap().to_owned();
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (100_000, 87_500), "the credit holds its amount");
        assert_eq!(ledger_status(&app, &tx).await, "pending");

        let files = cut(&app).await;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["payment_ids"], json!([id]));
        assert_eq!(files[0]["total_credit"], 12_500);
        let content = file_content(&app, files[0]["id"].as_str().unwrap()).await;
        let parsed = nacha::parse(&content).expect("the cut file parses with its controls");
        let (batch, entry) = parsed.entries().next().unwrap();
        assert_eq!((batch.sec_code.as_str(), batch.company_entry_description.trim()), ("PPD", "PAYROLL"));
        assert_eq!((entry.transaction_code, entry.amount_minor, entry.dfi_account_number.trim()), (22, 12_500, ACCOUNT_NUMBER));
        assert!(content.lines().all(|l| l.len() == 94) && content.lines().count() % 10 == 0);

        let p = payment(&app, &id).await;
        assert_eq!(p["status"], "submitted");
        assert_eq!(p["trace_number"].as_str().unwrap(), entry.trace_number);
        assert_eq!(ledger_status(&app, &tx).await, "posted");
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (87_500, 87_500));
        assert!(cut(&app).await.is_empty(), "nothing left to cut");

        let reply = app.post(&format!("/v1/test_helpers/payments/{id}/settle"), &json!({})).await;
        reply.expect_status(200);
        assert_eq!(statuses(&reply.body), ["pending", "submitted", "settled"]);
        app.post(&format!("/v1/payments/{id}/cancel"), &json!({})).await.expect_error(409, "payment_not_cancelable");
        let events = app.list_all(&format!("/v1/events?object_id={id}")).await;
        let mut seen: Vec<(String, i64)> = events.iter().map(|e| (e["type"].as_str().unwrap().to_owned(), e["sequence"].as_i64().unwrap())).collect();
        seen.sort_by_key(|(_, sequence)| *sequence);
        assert_eq!(seen, [("payment.created".to_owned(), 1), ("payment.submitted".to_owned(), 2), ("payment.settled".to_owned(), 3)]);
        let settled_event = events.iter().find(|e| e["type"] == "payment.settled").unwrap();
        assert_eq!(settled_event["data"]["previous_attributes"], json!({"status": "submitted"}));
        assert_eq!(settled_event["data"]["object"]["status"], "settled");
        // Each payment event matches its published schema, in every version.
        let types = app.get("/v1/event_types").await.body.clone();
        for version in ["2026-11-30", "2026-11-25"] {
            for event in app.with_version(version).list_all(&format!("/v1/events?object_id={id}")).await {
                let entry = types["data"].as_array().unwrap().iter().find(|t| t["type"] == event["type"]).unwrap().clone();
                let mut errors = Vec::new();
                crate::events::validate(&entry["schemas"][version], &event, "event", &mut errors);
                assert!(errors.is_empty(), "{} in {version}: {errors:?}", event["type"]);
            }
        }
        let listed = app.list_all("/v1/payments?status=settled").await;
        assert_eq!(listed.len(), 1);
        let files = app.list_all("/v1/ach/files").await;
        assert_eq!(files.len(), 1);
        // The account number never leaves in clear outside the file.
        let cp = app.get(&format!("/v1/counterparties/{}", p["counterparty_id"].as_str().unwrap())).await;
        assert_eq!(cp.body["bank_accounts"][0]["account_number_last4"], "6789");
        assert!(!cp.body.to_string().contains(ACCOUNT_NUMBER));
    }
}

ledger_test! {
    async fn a_returned_credit_is_reversed_and_r03_disables_the_bank_account(app) {
        let (wallet, bank) = setup(&app, 50_000).await;
        let id = pay(&app, "credit", 20_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        cut(&app).await;
        assert_eq!(app.balances(&wallet).await.available, 30_000);
        let reply = app.post(&format!("/v1/test_helpers/payments/{id}/return"), &json!({"code": "R03"})).await;
        reply.expect_status(200);
        assert_eq!(reply.body["status"], "returned");
        assert_eq!(reply.body["return_code"], "R03");
        assert!(reply.body["reversal_transaction_id"].as_str().is_some(), "{}", reply.body);
        assert_eq!(app.balances(&wallet).await, crate::app::Balances { posted: 50_000, pending: 50_000, available: 50_000 });
        let reply = app.post("/v1/payments", &payment_body("credit", 100, &wallet, &bank)).await;
        reply.expect_error(422, "bank_account_disabled");
        app.post(&format!("/v1/test_helpers/payments/{id}/return"), &json!({"code": "R01"})).await.expect_error(409, "payment_invalid_state");
    }
}

ledger_test! {
    async fn a_return_file_returns_the_payments_it_names_once(app) {
        let (wallet, bank) = setup(&app, 50_000).await;
        let first = pay(&app, "credit", 1_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let second = pay(&app, "credit", 2_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let files = cut(&app).await;
        let content = file_content(&app, files[0]["id"].as_str().unwrap()).await;
        let returns = nacha::parse(&content).unwrap().returned_with("R01").unwrap().write();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").header("content-type", "text/plain").body(returns.clone())).await;
        reply.expect_status(201);
        let outcomes: Vec<&str> = reply.body["results"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["returned", "returned"]);
        for id in [&first, &second] {
            let p = payment(&app, id).await;
            assert_eq!((p["status"].as_str(), p["return_code"].as_str()), (Some("returned"), Some("R01")));
        }
        assert_eq!(app.balances(&wallet).await.available, 50_000, "both credits are back");
        // R01 does not disable the account.
        pay(&app, "credit", 100, &wallet, &bank).await;
        // The same file again changes nothing and answers the first import.
        let again = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(returns)).await;
        again.expect_status(200);
        assert_eq!(again.body["id"], reply.body["id"]);
        assert_eq!(app.balances(&wallet).await.available, 49_900);
        // A broken file names its line and changes nothing.
        let broken = content.replacen("\n6", "\n7", 1);
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(broken)).await;
        reply.expect_error(422, "ach_file_invalid");
        assert_eq!(reply.param(), Some("line 3"));
    }
}

ledger_test! {
    async fn a_debit_is_available_only_after_settlement_and_its_hold_period(app) {
        let (wallet, bank) = setup(&app, 0).await;
        let settled = pay(&app, "debit", 7_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let returned = pay(&app, "debit", 3_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let held = pay(&app, "debit", 2_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (0, 0), "a debit's money is not available before settlement");
        let files = cut(&app).await;
        let parsed = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        assert!(parsed.entries().all(|(b, e)| e.transaction_code == 27 && b.service_class_code == 225));
        assert_eq!(parsed.control.total_debit_minor, 12_000);
        for id in [&settled, &held] {
            app.post(&format!("/v1/test_helpers/payments/{id}/settle"), &json!({})).await.expect_status(200);
        }
        // Returned before settlement: its pending credit is voided.
        app.post(&format!("/v1/test_helpers/payments/{returned}/return"), &json!({"code": "R01"})).await.expect_status(200);
        let p = payment(&app, &returned).await;
        assert_eq!(ledger_status(&app, p["ledger_transaction_id"].as_str().unwrap()).await, "voided");
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (9_000, 0), "settled, but held for the hold period");
        // Returned inside the hold period: the hold is released and the credit reversed, cleanly.
        let reply = app.post(&format!("/v1/test_helpers/payments/{held}/return"), &json!({"code": "R01"})).await;
        reply.expect_status(200);
        assert!(reply.body["ledger_issue"].is_null(), "{}", reply.body);
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (7_000, 0));
        // After the hold period the money is available (the hold expired by itself).
        let p = payment(&app, &settled).await;
        let available_at = settle_core::clock::Timestamp::parse_rfc3339(p["available_at"].as_str().unwrap()).unwrap();
        app.clock.advance_secs((available_at.micros() - app.now().micros()) / 1_000_000 + 1);
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (7_000, 7_000));
        // A late unauthorized return (60 days) after the money was spent is applied and its refused reversal recorded.
        let sink = app.account("credit", None).await;
        app.transfer_ok(&wallet, &sink, 7_000).await;
        let reply = app.post(&format!("/v1/test_helpers/payments/{settled}/return"), &json!({"code": "R10"})).await;
        reply.expect_status(200);
        assert_eq!(reply.body["status"], "returned");
        assert!(reply.body["ledger_issue"].as_str().unwrap().contains("insufficient_funds"), "{}", reply.body);
    }
}

ledger_test! {
    async fn canceling_a_pending_payment_releases_its_hold(app) {
        let (wallet, bank) = setup(&app, 10_000).await;
        let p = pay(&app, "credit", 4_000, &wallet, &bank).await;
        let id = p["id"].as_str().unwrap();
        assert_eq!(app.balances(&wallet).await.available, 6_000);
        let reply = app.post_idempotent(&format!("/v1/payments/{id}/cancel"), "cancel-1", &json!({})).await;
        reply.expect_status(200);
        assert_eq!(statuses(&reply.body), ["pending", "canceled"]);
        assert_eq!(app.balances(&wallet).await.available, 10_000);
        assert_eq!(ledger_status(&app, p["ledger_transaction_id"].as_str().unwrap()).await, "voided");
        let replay = app.post_idempotent(&format!("/v1/payments/{id}/cancel"), "cancel-1", &json!({})).await;
        replay.expect_status(200);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        app.post(&format!("/v1/payments/{id}/cancel"), &json!({})).await.expect_error(409, "payment_not_cancelable");
        assert!(cut(&app).await.is_empty(), "a canceled payment is never filed");
    }
}

ledger_test! {
    async fn a_payment_create_retried_with_its_key_makes_one_payment(app) {
        let (wallet, bank) = setup(&app, 10_000).await;
        let body = payment_body("credit", 1_000, &wallet, &bank);
        let first = app.post_idempotent("/v1/payments", "pay-1", &body).await;
        first.expect_status(201);
        let second = app.post_idempotent("/v1/payments", "pay-1", &body).await;
        second.expect_status(201);
        assert_eq!(second.bytes, first.bytes);
        assert_eq!(app.list_all("/v1/payments").await.len(), 1);
        assert_eq!(app.balances(&wallet).await.available, 9_000);
        let mut other = body.clone();
        other["amount"] = json!(2_000);
        app.post_idempotent("/v1/payments", "pay-1", &other).await.expect_error(422, "idempotency_key_reused");
        let mut with_external = body.clone();
        with_external["external_id"] = json!("invoice-7");
        app.post("/v1/payments", &with_external).await.expect_status(201);
        app.post("/v1/payments", &with_external).await.expect_error(409, "duplicate_external_id");
    }
}

ledger_test! {
    async fn bad_payments_and_counterparties_are_refused_with_their_codes_and_change_nothing(app) {
        let (wallet, bank) = setup(&app, 5_000).await;
        let bad_routing = json!({"name": "X", "bank_accounts": [{"routing_number": "021000022", "account_number": "1234", "account_type": "checking", "holder_name": "X"}]});
        let reply = app.post("/v1/counterparties", &bad_routing).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("bank_accounts[0].routing_number"));
        let mut bad_number = bad_routing.clone();
        bad_number["bank_accounts"][0]["routing_number"] = json!(ROUTING);
        bad_number["bank_accounts"][0]["account_number"] = json!("12");
        app.post("/v1/counterparties", &bad_number).await.expect_error(400, "invalid_request");
        let cases: Vec<(Value, u16, &str, &str)> = vec![
            (json!({"company_entry_description": "ELEVEN CHARS"}), 400, "invalid_request", "company_entry_description"),
            (json!({"sec_code": "IAT"}), 400, "invalid_request", "sec_code"),
            (json!({"currency": "EUR"}), 400, "invalid_request", "currency"),
            (json!({"rail": "sepa"}), 400, "invalid_request", "rail"),
            (json!({"amount": 0}), 400, "invalid_request", "amount"),
            (json!({"same_day": true, "amount": 100_000_001}), 422, "same_day_limit_exceeded", "amount"),
            (json!({"counterparty_bank_account_id": "ba_nope"}), 400, "invalid_request", "counterparty_bank_account_id"),
            (json!({"ledger_account_id": "acct_nope"}), 422, "account_not_found", "ledger_account_id"),
            (json!({"amount": 6_000}), 422, "insufficient_funds", "ledger_account_id"),
            (json!({"effective_date": "2001-01-01"}), 400, "invalid_request", "effective_date"),
        ];
        for (patch, status, code, param) in cases {
            let mut body = payment_body("credit", 1_000, &wallet, &bank);
            body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
            let reply = app.post("/v1/payments", &body).await;
            reply.expect_error(status, code);
            assert_eq!(reply.param(), Some(param), "{}", reply.body);
        }
        assert!(app.list_all("/v1/payments").await.is_empty());
        assert_eq!(app.balances(&wallet).await.available, 5_000);
        app.get("/v1/payments/pay_nope").await.expect_error(404, "not_found");
        let reader = app.api.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead, Scope::PaymentsRead]).await));
        reader.post("/v1/payments", &payment_body("credit", 1, &wallet, &bank)).await.expect_error(403, "insufficient_scope");
        reader.get("/v1/payments").await.expect_status(200);
        // Another organization sees none of it.
        let other = app.client_for("globex").await;
        other.get(&format!("/v1/counterparties/{}", "cp_00000000000000000000000000")).await.expect_error(404, "not_found");
        assert!(other.list_all("/v1/counterparties").await.is_empty());
    }
}

ledger_test! {
    async fn a_notification_of_change_updates_the_bank_account(app) {
        let (wallet, bank) = setup(&app, 5_000).await;
        let id = pay(&app, "credit", 1_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let files = cut(&app).await;
        let file = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(notification_of_change(file, None, "C01", "99887766"))).await;
        reply.expect_status(201);
        assert_eq!(reply.body["results"][0]["outcome"], "changed");
        let cp = app.get(&format!("/v1/counterparties/{}", payment(&app, &id).await["counterparty_id"].as_str().unwrap())).await;
        let account = &cp.body["bank_accounts"][0];
        assert_eq!(account["account_number_last4"], "7766");
        assert_eq!(account["notifications_of_change"][0]["code"], "C01");
        assert_eq!(account["notifications_of_change"][0]["updated_fields"], json!(["account_number"]));
        assert_eq!(payment(&app, &id).await["status"], "submitted", "a NOC does not return the payment");
        // The next file carries the corrected number.
        pay(&app, "credit", 1_000, &wallet, &bank).await;
        let files = cut(&app).await;
        let next = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        assert_eq!(next.entries().next().unwrap().1.dfi_account_number.trim(), "99887766");
    }
}

/// Seconds from the app's now to `hour:minute` New York time on the first
/// banking day strictly after today.
pub(crate) fn secs_until_next_banking_day_at(app: &TestApp, hour: u8, minute: u8) -> i64 {
    let now = settle_api::ach::payments::utc(app.now());
    let mut date = settle_ach::window::new_york(now).date();
    loop {
        date = date.next_day().unwrap();
        if settle_core::calendar::is_banking_day(date) {
            break;
        }
    }
    let local = date.with_hms(hour, minute, 0).unwrap();
    // New York's offset at that moment (approximated from noon UTC of that day, which is never within an hour of a switch).
    let offset = settle_ach::window::new_york_offset(date.with_hms(12, 0, 0).unwrap().assume_utc());
    (local.assume_offset(offset) - now).whole_seconds()
}

ledger_test! {
    async fn the_scheduler_cuts_each_window_once_and_settles_on_the_effective_date(app) {
        let (wallet, bank) = setup(&app, 0).await;
        app.clock.advance_secs(secs_until_next_banking_day_at(&app, 9, 0));
        let id = pay(&app, "debit", 5_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        // 10:31 New York: the 10:30 window closed a minute ago; the first tick files the payment in it.
        app.clock.advance_secs(91 * 60);
        assert_eq!(settle_api::ach::files::tick(&app.state).await.unwrap(), 1);
        assert_eq!(settle_api::ach::files::tick(&app.state).await.unwrap(), 0, "a window is cut once");
        let p = payment(&app, &id).await;
        assert_eq!(p["status"], "submitted");
        let files = app.list_all("/v1/ach/files").await;
        assert!(files[0]["window"].as_str().unwrap().ends_with("T10:30"), "{}", files[0]);
        // A next-day entry settles the next banking day, after the settlement hour.
        let effective = p["effective_date"].as_str().unwrap().to_owned();
        assert!(effective.as_str() > &files[0]["window"].as_str().unwrap()[..10], "{effective}");
        assert_eq!(app.balances(&wallet).await.available, 0);
        app.clock.advance_secs(secs_until_next_banking_day_at(&app, 18, 5));
        settle_api::ach::files::tick(&app.state).await.unwrap();
        let p = payment(&app, &id).await;
        assert_eq!(p["status"], "settled", "{p}");
        assert_eq!(app.balances(&wallet).await.available, 0, "held for two banking days");
        let available_at = settle_core::clock::Timestamp::parse_rfc3339(p["available_at"].as_str().unwrap()).unwrap();
        app.clock.advance_secs((available_at.micros() - app.now().micros()) / 1_000_000 + 1);
        assert_eq!(app.balances(&wallet).await.available, 5_000);
        // An R01 three banking days after settlement is late: refused, the payment unchanged.
        for _ in 0..3 {
            app.clock.advance_secs(secs_until_next_banking_day_at(&app, 12, 0));
        }
        let reply = app.post(&format!("/v1/test_helpers/payments/{id}/return"), &json!({"code": "R01"})).await;
        reply.expect_error(422, "return_window_elapsed");
        assert_eq!(payment(&app, &id).await["status"], "settled");
        // An unauthorized-debit return (R10) has 60 days: still timely.
        app.post(&format!("/v1/test_helpers/payments/{id}/return"), &json!({"code": "R10"})).await.expect_status(200);
    }
}

ledger_test! {
    async fn a_consumer_debit_needs_an_active_authorization_and_its_revocation_stops_the_next(app) {
        let wallet = app.account("credit", Some(0)).await;
        let customer = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Jane", "family_name": "Doe"})).await;
        customer.expect_status(201);
        let customer = customer.id();
        let reply = app
            .post(
                "/v1/counterparties",
                &json!({"name": "Jane Doe", "customer_id": customer, "bank_accounts": [{"routing_number": ROUTING, "account_number": ACCOUNT_NUMBER, "account_type": "savings", "holder_name": "Jane Doe"}]}),
            )
            .await;
        reply.expect_status(201);
        let bank = reply.body["bank_accounts"][0]["id"].as_str().unwrap().to_owned();
        let debit = payment_body("debit", 2_500, &wallet, &bank);
        app.post("/v1/payments", &debit).await.expect_error(422, "debit_authorization_missing");
        let granted_at = app.now().plus_secs(-60).to_rfc3339();
        let consent = app
            .post(&format!("/v1/customers/{customer}/consents"), &json!({"type": "ach_debit_authorization", "text_version": "v1", "channel": "web", "granted_at": granted_at}))
            .await;
        consent.expect_status(201);
        let p = app.post("/v1/payments", &debit).await;
        p.expect_status(201);
        let files = cut(&app).await;
        let parsed = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        assert_eq!(parsed.entries().next().unwrap().1.transaction_code, 37, "a savings debit");
        app.post(&format!("/v1/customers/{customer}/consents/{}/revoke", consent.id()), &json!({"reason": "customer called"})).await.expect_status(200);
        app.post("/v1/payments", &debit).await.expect_error(422, "debit_authorization_missing");
        // An unauthorized-debit return (R10) revokes a new authorization by itself, audited.
        let consent = app
            .post(&format!("/v1/customers/{customer}/consents"), &json!({"type": "ach_debit_authorization", "text_version": "v2", "channel": "web", "granted_at": granted_at}))
            .await;
        consent.expect_status(201);
        let second = app.post("/v1/payments", &debit).await;
        second.expect_status(201);
        cut(&app).await;
        app.post(&format!("/v1/test_helpers/payments/{}/return", second.id()), &json!({"code": "R10"})).await.expect_status(200);
        let consents = app.get(&format!("/v1/customers/{customer}/consents")).await;
        let revoked = consents.body["data"].as_array().unwrap().iter().find(|c| c["id"] == consent.body["id"]).unwrap().clone();
        assert_eq!(revoked["status"], "revoked", "{revoked}");
        app.post("/v1/payments", &debit).await.expect_error(422, "debit_authorization_missing");
        // The bank account stays usable for credits.
        let mut credit = payment_body("credit", 1, &wallet, &bank);
        credit["sec_code"] = json!("PPD");
        app.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), &json!({"amount": 100})).await.expect_status(201);
        app.post("/v1/payments", &credit).await.expect_status(201);
        // A missing customer is refused too.
        let mut body = json!({"name": "X", "customer_id": "cus_00000000000000000000000000", "bank_accounts": [{"routing_number": ROUTING, "account_number": "1234", "account_type": "checking", "holder_name": "X"}]});
        let reply = app.post("/v1/counterparties", &body).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("customer_id"));
        body["customer_id"] = json!(customer);
        app.post("/v1/counterparties", &body).await.expect_status(201);
    }
}

ledger_test! {
    async fn concurrent_scheduler_rounds_cut_a_window_once(app) {
        let (wallet, bank) = setup(&app, 10_000).await;
        for _ in 0..5 {
            pay(&app, "credit", 100, &wallet, &bank).await;
        }
        app.clock.advance_secs(secs_until_next_banking_day_at(&app, 10, 31));
        let tick = || settle_api::ach::files::tick(&app.state);
        let (a, b, c) = tokio::join!(tick(), tick(), tick());
        assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 1, "one file for the window, whoever cuts it");
        let files = app.list_all("/v1/ach/files").await;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["payment_ids"].as_array().unwrap().len(), 5);
        assert_eq!(app.list_all("/v1/payments?status=submitted").await.len(), 5);
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (9_500, 9_500), "every hold posted once");
        // Trace numbers are unique and continue in the next file.
        pay(&app, "credit", 100, &wallet, &bank).await;
        let next = cut(&app).await;
        let first = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        let second = nacha::parse(&file_content(&app, next[0]["id"].as_str().unwrap()).await).unwrap();
        let mut traces: Vec<String> = first.entries().chain(second.entries()).map(|(_, e)| e.trace_number.clone()).collect();
        traces.sort();
        traces.dedup();
        assert_eq!(traces.len(), 6);
        assert_ne!(first.header.file_id_modifier, second.header.file_id_modifier);
    }
}

ledger_test! {
    async fn a_payment_returned_for_funds_may_be_originated_again_twice(app) {
        let (wallet, bank) = setup(&app, 10_000).await;
        let original = pay(&app, "credit", 1_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        let mut current = original.clone();
        for attempt in 1..=2 {
            cut(&app).await;
            app.post(&format!("/v1/test_helpers/payments/{current}/return"), &json!({"code": "R01"})).await.expect_status(200);
            let reply = app.post_idempotent(&format!("/v1/payments/{current}/retry"), &format!("retry-{attempt}"), &json!({})).await;
            reply.expect_status(201);
            assert_eq!(reply.body["retry_of"], original.as_str());
            assert_eq!(reply.body["status"], "pending");
            assert_eq!(reply.body["amount"], 1_000);
            let again = app.post_idempotent(&format!("/v1/payments/{current}/retry"), &format!("retry-{attempt}"), &json!({})).await;
            assert_eq!(again.body["id"], reply.body["id"], "a retried request makes one retry");
            current = reply.id();
        }
        assert_eq!(app.balances(&wallet).await.available, 9_000, "only the live retry holds money");
        cut(&app).await;
        app.post(&format!("/v1/test_helpers/payments/{current}/return"), &json!({"code": "R01"})).await.expect_status(200);
        app.post(&format!("/v1/payments/{current}/retry"), &json!({})).await.expect_error(422, "payment_not_retryable");
        assert_eq!(payment(&app, &original).await["retry_count"], 2);
        // A return that is not about funds is not retried.
        let other = pay(&app, "credit", 1_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        cut(&app).await;
        app.post(&format!("/v1/test_helpers/payments/{other}/return"), &json!({"code": "R03"})).await.expect_status(200);
        app.post(&format!("/v1/payments/{other}/retry"), &json!({})).await.expect_error(422, "payment_not_retryable");
        app.post(&format!("/v1/payments/{current}/retry"), &json!({})).await.expect_error(422, "payment_not_retryable");
    }
}

ledger_test! {
    async fn return_rates_count_debit_returns_against_nachas_thresholds(app) {
        let (wallet, bank) = setup(&app, 1_000).await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(pay(&app, "debit", 100, &wallet, &bank).await["id"].as_str().unwrap().to_owned());
        }
        pay(&app, "credit", 1, &wallet, &bank).await;
        let rates = app.get("/v1/ach/return_rates").await;
        rates.expect_status(200);
        assert_eq!(rates.body["debit_entries"], 0, "pending debits are not entries yet");
        cut(&app).await;
        app.post(&format!("/v1/test_helpers/payments/{}/return", ids[0]), &json!({"code": "R10"})).await.expect_status(200);
        let rates = app.get("/v1/ach/return_rates").await.body.clone();
        assert_eq!(rates["debit_entries"], 4);
        assert_eq!((rates["unauthorized_returns"].as_i64(), rates["unauthorized_rate_bps"].as_i64()), (Some(1), Some(2_500)));
        assert_eq!(rates["overall_rate_bps"], 2_500);
        assert_eq!(rates["administrative_returns"], 0);
        assert_eq!(rates["exceeded"], json!(["unauthorized", "overall"]));
        // Sixty-one days later none of it counts.
        app.clock.advance_secs(61 * 86_400);
        assert_eq!(app.get("/v1/ach/return_rates").await.body["debit_entries"], 0);
    }
}

ledger_test! {
    async fn a_customer_blocked_by_screening_gets_no_new_payment_and_a_pending_one_fails_at_the_cut(app) {
        let (wallet, bank) = setup(&app.api, 10_000).await;
        let customer = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await.id();
        app.post(&format!("/v1/customers/{customer}/accounts"), &json!({"account_id": wallet})).await.expect_status(201);
        let pending = pay(&app.api, "credit", 2_500, &wallet, &bank).await;
        crate::customers::load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961))]).await;
        settle_api::customers::screening::refresh(&app.state).await.unwrap();

        app.post("/v1/payments", &payment_body("credit", 100, &wallet, &bank)).await.expect_error(422, "customer_blocked");
        assert!(cut(&app.api).await.is_empty(), "no file carries the blocked customer's payment");
        let failed = payment(&app.api, pending["id"].as_str().unwrap()).await;
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["history"].as_array().unwrap().last().unwrap()["reason"], "customer blocked by sanctions screening");
        assert_eq!(app.balances(&wallet).await.available, 10_000, "the hold is released");
    }
}

/// `POST /v1/test_helpers/test_clocks/{clock}/advance` to `to`, which must answer 200.
async fn advance(api: &Api, clock: &str, to: &str) {
    let reply = api.post(&format!("/v1/test_helpers/test_clocks/{clock}/advance"), &json!({"to": to})).await;
    reply.expect_status(200);
    assert_eq!(reply.body["frozen_time"], settle_core::clock::Timestamp::parse_rfc3339(to).unwrap().to_rfc3339());
}

async fn simulate_return(api: &Api, id: &str, code: &str) -> Value {
    let reply = api.post(&format!("/v1/test_helpers/payments/{id}/return"), &json!({"code": code})).await;
    reply.expect_status(200);
    reply.body
}

ledger_test! {
    async fn a_full_ach_lifecycle_runs_under_a_test_clock_and_reconciles_in_the_ledger(app) {
        // Monday 2027-03-01, 09:00 New York (EST): before the 10:30 window.
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await;
        clock.expect_status(201);
        assert_eq!(clock.body["object"], "test_clock");
        let clock = clock.id();
        let wallet = app.account("credit", Some(0)).await;
        app.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), &json!({"amount": 100_000})).await.expect_status(201);
        // Jane: a customer whose consent authorizes consumer debits.
        let customer = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Jane", "family_name": "Doe"})).await.id();
        let granted_at = app.now().plus_secs(-60).to_rfc3339();
        app.post(&format!("/v1/customers/{customer}/consents"), &json!({"type": "ach_debit_authorization", "text_version": "v1", "channel": "web", "granted_at": granted_at}))
            .await
            .expect_status(201);
        let jane = app
            .post("/v1/counterparties", &json!({"name": "Jane Doe", "customer_id": customer, "bank_accounts": [{"routing_number": ROUTING, "account_number": ACCOUNT_NUMBER, "account_type": "checking", "holder_name": "Jane Doe"}]}))
            .await;
        jane.expect_status(201);
        let jane_bank = jane.body["bank_accounts"][0]["id"].as_str().unwrap().to_owned();
        let (_, acme_bank) = setup(&app, 0).await;
        let create = |direction: &str, amount: i64, bank: &str| {
            let mut body = payment_body(direction, amount, &wallet, bank);
            body["test_clock"] = json!(clock);
            body
        };
        let mut ids = Vec::new();
        for (direction, amount, bank) in [("credit", 10_000, &acme_bank), ("credit", 20_000, &jane_bank), ("debit", 5_000, &jane_bank), ("debit", 7_000, &jane_bank), ("debit", 3_000, &jane_bank)] {
            let reply = app.post("/v1/payments", &create(direction, amount, bank)).await;
            reply.expect_status(201);
            assert_eq!((reply.body["test_clock"].as_str(), reply.body["created_at"].as_str()), (Some(clock.as_str()), Some("2027-03-01T14:00:00.000000Z")));
            ids.push(reply.id());
        }
        let [returned_credit, credit, returned_debit, debit, unauthorized_debit] = ids.clone().try_into().unwrap();
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (100_000, 70_000), "both credits hold their amounts");
        assert!(cut(&app).await.is_empty(), "a test clock's payments wait for their clock's windows");

        // 10:31 New York: the clock passes the 10:30 window, which files all five.
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        let files = app.list_all("/v1/ach/files").await;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["window"], format!("clock:{clock}:2027-03-01T10:30"));
        assert_eq!((files[0]["total_credit"].as_i64(), files[0]["total_debit"].as_i64()), (Some(30_000), Some(15_000)));
        let parsed = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        assert_eq!(parsed.entries().count(), 5);
        assert!(parsed.batches.iter().all(|b| b.header.effective_entry_date == "270302"), "next-day entries, effective Tuesday");
        for id in &ids {
            let p = payment(&app, id).await;
            assert_eq!((p["status"].as_str(), p["effective_date"].as_str()), (Some("submitted"), Some("2027-03-02")));
            assert_eq!(p["history"][1]["at"], "2027-03-01T15:30:00.000000Z", "moved at the window, on the clock");
        }
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (70_000, 70_000), "the credits' holds are posted");
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        assert_eq!(app.list_all("/v1/ach/files").await.len(), 1, "advancing to the same time cuts nothing again");

        // An administrative return (R03) before settlement: the money comes back and the bank account is disabled.
        let r = simulate_return(&app, &returned_credit, "R03").await;
        assert_eq!(r["history"].as_array().unwrap().last().unwrap()["at"], "2027-03-01T15:31:00.000000Z");
        assert_eq!(app.balances(&wallet).await.posted, 80_000);
        app.post("/v1/payments", &create("credit", 100, &acme_bank)).await.expect_error(422, "bank_account_disabled");

        // Tuesday 18:30 New York: the effective date's settlement hour has passed.
        advance(&app, &clock, "2027-03-02T23:30:00Z").await;
        for id in [&credit, &returned_debit, &debit, &unauthorized_debit] {
            assert_eq!(payment(&app, id).await["status"], "settled");
        }
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (95_000, 80_000), "settled debits are held for two banking days");
        let p = payment(&app, &debit).await;
        assert_eq!(p["available_at"], "2027-03-04T05:00:00.000000Z", "00:00 New York on the second banking day after settlement");
        let hold = p["availability_hold_transaction_id"].as_str().unwrap().to_owned();
        assert_eq!(ledger_status(&app, &hold).await, "pending");

        // A funds return (R01) inside its window: the hold is released and the credit reversed.
        let r = simulate_return(&app, &returned_debit, "R01").await;
        assert!(r["ledger_issue"].is_null(), "{r}");
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (90_000, 80_000));

        // Thursday 00:30 New York: the hold period is over; the advance released the holds.
        advance(&app, &clock, "2027-03-04T05:30:00Z").await;
        assert_eq!(ledger_status(&app, &hold).await, "voided");
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (90_000, 90_000));

        // A notification of change (C01) on the settled credit corrects Jane's account number.
        let file = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        let trace = payment(&app, &credit).await["trace_number"].as_str().unwrap().to_owned();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(notification_of_change(file, Some(&trace), "C01", "99887766"))).await;
        reply.expect_status(201);
        assert_eq!(reply.body["results"], json!([{"original_trace_number": trace, "code": "C01", "payment_id": credit, "outcome": "changed"}]));
        let cp = app.get(&format!("/v1/counterparties/{}", jane.body["id"].as_str().unwrap())).await;
        assert_eq!(cp.body["bank_accounts"][0]["account_number_last4"], "7766");
        assert_eq!(payment(&app, &credit).await["status"], "settled", "a NOC returns nothing");

        // Two weeks later on the clock: an R01 is late, an unauthorized return (R10, 60 days) is not.
        advance(&app, &clock, "2027-03-15T16:00:00Z").await;
        app.post(&format!("/v1/test_helpers/payments/{debit}/return"), &json!({"code": "R01"})).await.expect_error(422, "return_window_elapsed");
        let r = simulate_return(&app, &unauthorized_debit, "R10").await;
        assert!(r["ledger_issue"].is_null(), "{r}");
        app.post("/v1/payments", &create("debit", 100, &jane_bank)).await.expect_error(422, "debit_authorization_missing");

        // Every figure reconciles: the wallet moved by exactly what the payments that stand imply, and the clearing account holds the other side.
        let mut implied = 0i64;
        for id in &ids {
            let p = payment(&app, id).await;
            if p["status"] == "settled" {
                let amount = p["amount"].as_i64().unwrap();
                implied += if p["direction"] == "credit" { -amount } else { amount };
            }
        }
        assert_eq!(implied, -20_000 + 7_000);
        let b = app.balances(&wallet).await;
        assert_eq!(b, crate::app::Balances { posted: 100_000 + implied, pending: 100_000 + implied, available: 100_000 + implied });
        let tx = app.get(&format!("/v1/transactions/{}", payment(&app, &credit).await["ledger_transaction_id"].as_str().unwrap())).await;
        let clearing = tx.body["entries"].as_array().unwrap().iter().find(|e| e["account_id"] != wallet.as_str()).unwrap()["account_id"].as_str().unwrap().to_owned();
        let c = app.balances(&clearing).await;
        assert_eq!((c.posted, c.pending, c.available), (implied, implied, implied), "debit-normal clearing: debits in less credits out");
        let rates = app.get("/v1/ach/return_rates").await.body.clone();
        assert_eq!((rates["debit_entries"].as_i64(), rates["unauthorized_returns"].as_i64(), rates["overall_returns"].as_i64()), (Some(3), Some(1), Some(2)));
        let clock_now = app.get(&format!("/v1/test_helpers/test_clocks/{clock}")).await;
        clock_now.expect_status(200);
        assert_eq!(clock_now.body["frozen_time"], "2027-03-15T16:00:00.000000Z");
    }
}

ledger_test! {
    async fn test_clocks_move_only_forward_and_exist_only_in_the_sandbox(app) {
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let path = format!("/v1/test_helpers/test_clocks/{clock}/advance");
        let reply = app.post(&path, &json!({"to": "2027-03-01T13:59:59Z"})).await;
        reply.expect_error(422, "test_clock_backwards");
        assert_eq!(reply.param(), Some("to"));
        for (body, param) in [(json!({"to": "2029-03-02T00:00:00Z"}), "to"), (json!({"to": "yesterday"}), "to")] {
            let reply = app.post(&path, &body).await;
            reply.expect_error(400, "invalid_request");
            assert_eq!(reply.param(), Some(param));
        }
        app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "1999-12-31T23:59:59Z"})).await.expect_error(400, "invalid_request");
        assert_eq!(app.get(&format!("/v1/test_helpers/test_clocks/{clock}")).await.body["frozen_time"], "2027-03-01T14:00:00.000000Z", "unchanged");
        app.get("/v1/test_helpers/test_clocks/clock_00000000000000000000000000").await.expect_error(404, "not_found");
        let (wallet, bank) = setup(&app, 1_000).await;
        let mut body = payment_body("credit", 100, &wallet, &bank);
        body["test_clock"] = json!("clock_00000000000000000000000000");
        let reply = app.post("/v1/payments", &body).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("test_clock"));
        // A live key does not see the endpoints at all, nor may a live payment name a clock.
        let live = app.api.with_key(Some(&app.key("acme", Environment::Live, &[Scope::LedgerRead, Scope::LedgerWrite, Scope::PaymentsRead, Scope::PaymentsWrite]).await));
        live.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.expect_error(404, "not_found");
        live.get(&format!("/v1/test_helpers/test_clocks/{clock}")).await.expect_error(404, "not_found");
        live.post(&path, &json!({"to": "2027-03-02T00:00:00Z"})).await.expect_error(404, "not_found");
        let live_wallet = live.account("credit", None).await;
        let mut body = payment_body("credit", 100, &live_wallet, &bank);
        body["test_clock"] = json!(clock);
        let reply = live.post("/v1/payments", &body).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("test_clock"));
        assert!(app.list_all("/v1/payments").await.is_empty(), "nothing was created");
    }
}

/// The `settle_ach_return_rate_exceeded_bps` series of `rate` (any tenant: each test has its own server).
async fn exceeded_gauge(app: &TestApp, rate: &str) -> Option<i64> {
    let reply = app.with_key(None).get("/metrics").await;
    reply.expect_status(200);
    let text = String::from_utf8(reply.bytes.clone()).unwrap();
    text.lines()
        .find(|l| l.starts_with("settle_ach_return_rate_exceeded_bps{") && l.contains(&format!("rate=\"{rate}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

ledger_test! {
    async fn crossing_a_return_rate_threshold_emits_one_event_per_crossing_and_a_gauge(app) {
        let crossings = |api: &Api| {
            let api = api.clone();
            async move { api.list_all("/v1/events?type=ach.return_rate.threshold_crossed").await }
        };
        let (wallet, bank) = setup(&app, 0).await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(pay(&app, "debit", 100, &wallet, &bank).await["id"].as_str().unwrap().to_owned());
        }
        cut(&app).await;
        assert!(crossings(&app).await.is_empty());
        assert_eq!(exceeded_gauge(&app, "overall").await, None);
        // One R01 of four debit entries: 25% overall, above 15%.
        simulate_return(&app, &ids[0], "R01").await;
        let events = crossings(&app).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["data"]["object"]["exceeded"], json!(["overall"]));
        assert_eq!(events[0]["data"]["object"]["overall_rate_bps"], 2_500);
        assert_eq!(events[0]["data"]["previous_attributes"], json!({"exceeded": []}));
        let types = app.get("/v1/event_types").await.body.clone();
        for version in ["2026-11-30", "2026-11-25"] {
            for event in app.with_version(version).list_all("/v1/events?type=ach.return_rate.threshold_crossed").await {
                let entry = types["data"].as_array().unwrap().iter().find(|t| t["type"] == event["type"]).unwrap().clone();
                let mut errors = Vec::new();
                crate::events::validate(&entry["schemas"][version], &event, "event", &mut errors);
                assert!(errors.is_empty(), "{} in {version}: {errors:?}", event["type"]);
            }
        }
        assert_eq!(exceeded_gauge(&app, "overall").await, Some(2_500));
        assert_eq!(exceeded_gauge(&app, "unauthorized").await, None);
        // Still above: no second event. An unauthorized return crosses that threshold: one more.
        simulate_return(&app, &ids[1], "R01").await;
        assert_eq!(crossings(&app).await.len(), 1, "once per crossing");
        simulate_return(&app, &ids[2], "R10").await;
        let events = crossings(&app).await;
        assert_eq!(events.len(), 2);
        let newest = events.iter().max_by_key(|e| e["sequence"].as_i64()).unwrap();
        assert_eq!(newest["data"]["object"]["exceeded"], json!(["unauthorized", "overall"]));
        assert_eq!(newest["data"]["previous_attributes"], json!({"exceeded": ["overall"]}));
        assert_eq!(exceeded_gauge(&app, "unauthorized").await, Some(2_500));
        // Sixty-one days later the window is empty: the next cut finds the rates under every threshold…
        app.clock.advance_secs(61 * 86_400);
        let (wallet, bank) = setup(&app, 0).await;
        let mut fresh = Vec::new();
        for _ in 0..2 {
            fresh.push(pay(&app, "debit", 100, &wallet, &bank).await["id"].as_str().unwrap().to_owned());
        }
        cut(&app).await;
        assert_eq!(exceeded_gauge(&app, "overall").await, None, "the gauge goes when the rate is back under");
        assert_eq!(crossings(&app).await.len(), 2);
        // …so crossing again alerts again.
        simulate_return(&app, &fresh[0], "R01").await;
        assert_eq!(crossings(&app).await.len(), 3);
        assert_eq!(exceeded_gauge(&app, "overall").await, Some(5_000));
    }
}

ledger_test! {
    async fn a_late_return_in_a_return_file_is_dishonored_in_the_next_file(app) {
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let (wallet, bank) = setup(&app, 0).await;
        let mut body = payment_body("debit", 4_000, &wallet, &bank);
        body["sec_code"] = json!("CCD");
        body["test_clock"] = json!(clock);
        let id = app.post("/v1/payments", &body).await.id();
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        let files = app.list_all("/v1/ach/files").await;
        let original = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        // Wednesday 2027-03-10, 11:00 New York: settled on the 2nd, far outside R01's two banking days.
        advance(&app, &clock, "2027-03-10T16:00:00Z").await;
        assert_eq!(app.balances(&wallet).await.available, 4_000);
        let returns = original.returned_with("R01").unwrap().write();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(returns.clone())).await;
        reply.expect_status(201);
        assert_eq!(reply.body["results"][0]["outcome"], "dishonored");
        let p = payment(&app, &id).await;
        assert_eq!(p["status"], "settled", "a late return changes neither the payment nor its money");
        assert_eq!(p["dishonored_return"]["status"], "pending");
        assert_eq!((p["dishonored_return"]["dishonor_code"].as_str(), p["dishonored_return"]["return_code"].as_str()), (Some("R68"), Some("R01")));
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (4_000, 4_000));
        // The same payment returned late again is not dishonored twice.
        let again = original.returned_with("R03").unwrap().write();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(again)).await;
        reply.expect_status(201);
        assert_eq!(reply.body["results"][0]["outcome"], "late");
        // 15:00 New York: the 14:45 window carries the dishonored return, in its own batch.
        advance(&app, &clock, "2027-03-10T20:00:00Z").await;
        let files = app.list_all("/v1/ach/files").await;
        let outgoing: Vec<&Value> = files.iter().filter(|f| f["direction"] == "outgoing").collect();
        assert_eq!(outgoing.len(), 2, "{files:?}");
        let dishonor_file = outgoing.iter().find(|f| f["window"] == format!("clock:{clock}:2027-03-10T14:45")).unwrap();
        assert_eq!(dishonor_file["payment_ids"], json!([id]));
        let parsed = nacha::parse(&file_content(&app, dishonor_file["id"].as_str().unwrap()).await).unwrap();
        let (batch, entry) = parsed.entries().next().unwrap();
        assert_eq!((entry.transaction_code, entry.amount_minor, batch.sec_code.as_str()), (26, 4_000, "CCD"));
        let addenda = entry.return_addenda().unwrap();
        assert_eq!((addenda.reason_code.as_str(), addenda.original_trace_number.as_str()), ("R68", p["trace_number"].as_str().unwrap()));
        assert_eq!(&addenda.information[21..23], "01", "the dishonored return names the return's reason");
        let p = payment(&app, &id).await;
        assert_eq!(p["dishonored_return"]["status"], "submitted");
        assert_eq!(p["dishonored_return"]["ach_file_id"], dishonor_file["id"]);
        assert_eq!(p["dishonored_return"]["trace_number"].as_str(), Some(entry.trace_number.as_str()));
        advance(&app, &clock, "2027-03-12T20:00:00Z").await;
        assert_eq!(app.list_all("/v1/ach/files").await.iter().filter(|f| f["direction"] == "outgoing").count(), 2, "a dishonor is sent once");
        assert_eq!(app.balances(&wallet).await.available, 4_000);
        let events = app.list_all("/v1/events?type=payment.return_dishonored").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["object"]["dishonored_return"]["status"], "submitted");

        // The receiving bank contests the dishonor (R73, timely original return): the original R01 stands and is applied.
        let mut contest = parsed.clone();
        for b in &mut contest.batches {
            for e in &mut b.entries {
                for a in &mut e.addenda {
                    if let nacha::Addenda::Return(r) = a {
                        r.reason_code = "R73".into();
                    }
                }
            }
        }
        contest.refresh_controls().unwrap();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(contest.write())).await;
        reply.expect_status(201);
        assert_eq!((reply.body["results"][0]["outcome"].as_str(), reply.body["results"][0]["payment_id"].as_str()), (Some("contested"), Some(id.as_str())));
        let p = payment(&app, &id).await;
        assert_eq!((p["status"].as_str(), p["return_code"].as_str()), (Some("returned"), Some("R01")));
        assert_eq!((p["dishonored_return"]["status"].as_str(), p["dishonored_return"]["contested_code"].as_str()), (Some("contested"), Some("R73")));
        assert!(p["reversal_transaction_id"].is_string() && p["ledger_issue"].is_null(), "{p}");
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (0, 0), "the original return's ledger effect is applied");
        app.post(&format!("/v1/test_helpers/payments/{id}/contest_dishonor"), &json!({"code": "R73"})).await.expect_error(409, "payment_invalid_state");
        app.post(&format!("/v1/test_helpers/payments/{id}/contest_dishonor"), &json!({"code": "R01"})).await.expect_error(400, "invalid_request");
        assert_events_match_their_schemas(&app, &["payment.return_dishonored", "payment.returned"]).await;
    }
}

/// A customer with an active debit authorization and a counterparty for them; answers (customer, bank account).
async fn customer_with_bank_account(app: &TestApp, name: &str) -> (String, String) {
    let api: &Api = app;
    let customer = api.post("/v1/customers", &json!({"type": "individual", "given_name": name, "family_name": "Doe"})).await;
    customer.expect_status(201);
    let customer = customer.id();
    let granted_at = app.now().plus_secs(-60).to_rfc3339();
    api.post(
        &format!("/v1/customers/{customer}/consents"),
        &json!({"type": "ach_debit_authorization", "text_version": "v1", "channel": "web", "granted_at": granted_at}),
    )
    .await
    .expect_status(201);
    let reply = api
        .post("/v1/counterparties", &json!({"name": name, "customer_id": customer, "bank_accounts": [{"routing_number": ROUTING, "account_number": ACCOUNT_NUMBER, "account_type": "checking", "holder_name": name}]}))
        .await;
    reply.expect_status(201);
    (customer, reply.body["bank_accounts"][0]["id"].as_str().unwrap().to_owned())
}

async fn bank_account(api: &Api, bank: &str) -> Value {
    let counterparties = api.list_all("/v1/counterparties").await;
    counterparties.iter().flat_map(|c| c["bank_accounts"].as_array().unwrap().clone()).find(|b| b["id"] == bank).unwrap()
}

async fn audit_actions(api: &Api, resource: &str) -> Vec<(String, String)> {
    let reply = api.get(&format!("/v1/audit_events?resource_id={resource}")).await;
    reply.expect_status(200);
    reply.body["data"].as_array().unwrap().iter().map(|a| (a["action"].as_str().unwrap().to_owned(), a["actor"].as_str().unwrap().to_owned())).collect()
}

ledger_test! {
    async fn unauthorized_and_frozen_account_returns_open_audited_compliance_reviews(app) {
        // Monday 2027-03-01, 09:00 New York.
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let wallet = app.account("credit", Some(0)).await;
        app.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), &json!({"amount": 100_000})).await.expect_status(201);
        let (jane, jane_bank) = customer_with_bank_account(&app, "Jane").await;
        let (bob, bob_bank) = customer_with_bank_account(&app, "Bob").await;
        let (_, acme_bank) = setup(&app, 0).await;
        let mut ids = Vec::new();
        for (direction, bank) in [("debit", &jane_bank), ("credit", &bob_bank), ("credit", &acme_bank)] {
            let mut body = payment_body(direction, 2_000, &wallet, bank);
            body["test_clock"] = json!(clock);
            let reply = app.post("/v1/payments", &body).await;
            reply.expect_status(201);
            ids.push(reply.id());
        }
        let [debit, frozen_credit, funds_credit] = ids.try_into().unwrap();
        // The 10:30 window files them; Tuesday 18:30 New York they settle.
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        advance(&app, &clock, "2027-03-02T23:30:00Z").await;
        assert_eq!(payment(&app, &debit).await["status"], "settled");
        let reviews = app.get("/v1/compliance_reviews").await;
        reviews.expect_status(200);
        assert_eq!(reviews.body["data"].as_array().unwrap().len(), 0, "nothing to review before a return");

        // R01 opens no review and freezes nothing.
        simulate_return(&app, &funds_credit, "R01").await;
        assert_eq!(app.get("/v1/compliance_reviews").await.body["data"].as_array().unwrap().len(), 0);
        assert_eq!(bank_account(&app, &acme_bank).await["status"], "active");

        // R10 (unauthorized): the authorization is revoked, the customer flagged, a review opened, all audited.
        simulate_return(&app, &debit, "R10").await;
        let reviews = app.get(&format!("/v1/compliance_reviews?customer_id={jane}")).await;
        reviews.expect_status(200);
        let reviews = reviews.body["data"].as_array().unwrap().clone();
        assert_eq!(reviews.len(), 1, "{reviews:?}");
        let review = &reviews[0];
        assert_eq!((review["object"].as_str(), review["status"].as_str(), review["kind"].as_str()), (Some("compliance_review"), Some("open"), Some("ach_unauthorized_return")));
        assert_eq!((review["payment_id"].as_str(), review["return_code"].as_str(), review["bank_account_id"].as_str()), (Some(debit.as_str()), Some("R10"), Some(jane_bank.as_str())));
        assert_eq!(review["created_at"], "2027-03-02T23:30:00.000000Z", "dated on the payment's clock");
        let got = app.get(&format!("/v1/compliance_reviews/{}", review["id"].as_str().unwrap())).await;
        got.expect_status(200);
        assert_eq!(&got.body, review);
        assert!(audit_actions(&app, &jane).await.contains(&(String::from("customer.flagged"), String::from("settle-ach"))));
        assert!(audit_actions(&app, review["id"].as_str().unwrap()).await.contains(&(String::from("compliance_review.opened"), String::from("settle-ach"))));
        assert_eq!(bank_account(&app, &jane_bank).await["status"], "active", "a revoked authorization, not a disabled account");
        app.post("/v1/payments", &payment_body("debit", 100, &wallet, &jane_bank)).await.expect_error(422, "debit_authorization_missing");

        // R16 (account frozen): the bank account is frozen and a review opened for Bob, audited.
        simulate_return(&app, &frozen_credit, "R16").await;
        let account = bank_account(&app, &bob_bank).await;
        assert_eq!((account["status"].as_str(), account["disabled_reason"].as_str()), (Some("frozen"), Some("R16")));
        assert!(audit_actions(&app, &bob_bank).await.contains(&(String::from("bank_account.frozen"), String::from("settle-ach"))));
        assert!(audit_actions(&app, &bob).await.contains(&(String::from("customer.flagged"), String::from("settle-ach"))));
        let bobs = app.get(&format!("/v1/compliance_reviews?customer_id={bob}&status=open")).await.body["data"].as_array().unwrap().clone();
        assert_eq!(bobs.len(), 1);
        assert_eq!((bobs[0]["kind"].as_str(), bobs[0]["return_code"].as_str()), (Some("ach_account_frozen"), Some("R16")));
        let mut credit = payment_body("credit", 100, &wallet, &bob_bank);
        credit["sec_code"] = json!("CCD");
        app.post("/v1/payments", &credit).await.expect_error(422, "bank_account_disabled");
        assert_eq!(app.list_all("/v1/compliance_reviews").await.len(), 2);

        // Bad queries are refused; an unknown review is not found.
        app.get("/v1/compliance_reviews?customer_id=nope").await.expect_error(400, "invalid_request");
        app.get("/v1/compliance_reviews?status=decided").await.expect_error(400, "invalid_request");
        app.get("/v1/compliance_reviews/crv_00000000000000000000000000").await.expect_error(404, "not_found");
        assert_eq!(app.list_all("/v1/events?type=compliance_review.opened").await.len(), 2);

        // A reviewer closes Bob's review as cleared: the bank account is unfrozen, both audited, with an event.
        let review_id = bobs[0]["id"].as_str().unwrap().to_owned();
        let close = format!("/v1/compliance_reviews/{review_id}/close");
        app.post(&close, &json!({"decision": "maybe"})).await.expect_error(400, "invalid_request");
        app.post("/v1/compliance_reviews/crv_00000000000000000000000000/close", &json!({"decision": "cleared"})).await.expect_error(404, "not_found");
        let reader = app.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::CustomersRead]).await));
        reader.post(&close, &json!({"decision": "cleared"})).await.expect_error(403, "insufficient_scope");
        assert_eq!(bank_account(&app, &bob_bank).await["status"], "frozen", "refusals change nothing");
        let closed = app.post(&close, &json!({"decision": "cleared", "note": "the receiving bank lifted the freeze"})).await;
        closed.expect_status(200);
        assert_eq!((closed.body["status"].as_str(), closed.body["decision"].as_str()), (Some("closed"), Some("cleared")));
        assert_eq!(closed.body["note"], "the receiving bank lifted the freeze");
        app.post(&close, &json!({"decision": "confirmed"})).await.expect_error(409, "compliance_review_closed");
        let account = bank_account(&app, &bob_bank).await;
        assert_eq!((account["status"].as_str(), account["disabled_reason"].as_str()), (Some("active"), None));
        assert!(audit_actions(&app, &bob_bank).await.iter().any(|(action, _)| action == "bank_account.unfrozen"));
        assert!(audit_actions(&app, &review_id).await.iter().any(|(action, _)| action == "compliance_review.closed"));
        app.post("/v1/payments", &credit).await.expect_status(201);
        let events = app.list_all("/v1/events?type=compliance_review.closed").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["previous_attributes"]["status"], "open");
        assert_eq!(app.list_all("/v1/compliance_reviews?status=closed").await.len(), 1);
        // Confirming Jane's unauthorized-debit review undoes nothing: her authorization stays revoked.
        let jane_review = reviews[0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/compliance_reviews/{jane_review}/close"), &json!({"decision": "confirmed"})).await.expect_status(200);
        app.post("/v1/payments", &payment_body("debit", 100, &wallet, &jane_bank)).await.expect_error(422, "debit_authorization_missing");
        assert_events_match_their_schemas(&app, &["compliance_review.opened", "compliance_review.closed"]).await;
    }
}

/// A server whose retry policy allows one retry, one banking day after the return.
async fn start_with_one_retry(backend: crate::app::Backend) -> TestApp {
    let options = crate::app::TestOptions {
        configure: |state| {
            state.with_ach(settle_api::ach::AchConfig {
                retry: settle_api::ach::RetryPolicy { max_retries: 1, window_days: 180, delay_banking_days: 1 },
                ..settle_api::ach::AchConfig::default()
            })
        },
        ..crate::app::TestOptions::default()
    };
    TestApp::start_with(backend, options).await
}

async fn an_auto_retry_payment_is_originated_again_when_due_within_the_configured_policy(app: TestApp) {
    // Monday 2027-03-01, 09:00 New York.
    let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
    let (wallet, bank) = setup(&app, 100_000).await;
    let create = |amount: i64, auto_retry: bool| {
        let mut body = payment_body("credit", amount, &wallet, &bank);
        body["sec_code"] = json!("CCD");
        body["test_clock"] = json!(clock);
        body["auto_retry"] = json!(auto_retry);
        body
    };
    let auto = app.post("/v1/payments", &create(10_000, true)).await;
    auto.expect_status(201);
    assert_eq!(auto.body["auto_retry"], true);
    let auto = auto.id();
    let manual = app.post("/v1/payments", &create(5_000, false)).await.id();
    advance(&app, &clock, "2027-03-01T15:31:00Z").await;
    let returned = simulate_return(&app, &auto, "R01").await;
    assert_eq!(returned["retry_due_at"], "2027-03-02T05:00:00.000000Z", "00:00 New York, one banking day after the return");
    assert_eq!(simulate_return(&app, &manual, "R01").await["retry_due_at"], Value::Null, "no auto_retry: nothing scheduled");

    advance(&app, &clock, "2027-03-02T04:59:00Z").await;
    assert_eq!(app.list_all("/v1/payments").await.len(), 2, "not due yet");
    // Tuesday 10:31 New York: retried at 00:00 and filed in the 10:30 window.
    advance(&app, &clock, "2027-03-02T15:31:00Z").await;
    let payments = app.list_all("/v1/payments").await;
    assert_eq!(payments.len(), 3);
    let retry = payments.iter().find(|p| p["retry_of"] == auto.as_str()).unwrap().clone();
    assert_eq!(
        (retry["status"].as_str(), retry["created_at"].as_str(), retry["amount"].as_i64()),
        (Some("submitted"), Some("2027-03-02T05:00:00.000000Z"), Some(10_000))
    );
    assert_eq!(retry["auto_retry"], true, "a retry inherits auto_retry");
    let original = payment(&app, &auto).await;
    assert_eq!((original["retry_count"].as_u64(), &original["retry_due_at"]), (Some(1), &Value::Null));
    assert!(payments.iter().all(|p| p["retry_of"] != manual.as_str()), "the manual payment is not retried");

    // The retry comes back R09: due again, but the policy allows one retry only.
    let retry_id = retry["id"].as_str().unwrap().to_owned();
    assert!(simulate_return(&app, &retry_id, "R09").await["retry_due_at"].is_string());
    advance(&app, &clock, "2027-03-03T06:00:00Z").await;
    assert_eq!(app.list_all("/v1/payments").await.len(), 3, "no second automatic retry");
    let refused = payment(&app, &retry_id).await;
    assert_eq!(refused["retry_due_at"], Value::Null);
    assert!(refused["retry_issue"].as_str().unwrap().starts_with("payment_not_retryable"), "{refused}");
    app.post(&format!("/v1/payments/{retry_id}/retry"), &json!({})).await.expect_error(422, "payment_not_retryable");
    // The explicit retry follows the same policy: the manual payment may go once.
    app.post(&format!("/v1/payments/{manual}/retry"), &json!({})).await.expect_status(201);
    app.post(&format!("/v1/payments/{manual}/retry"), &json!({})).await.expect_error(422, "payment_not_retryable");
    let b = app.balances(&wallet).await;
    assert_eq!((b.posted, b.available), (100_000, 95_000), "every return reversed; only the manual retry holds its 5,000");
}

mod an_auto_retry_payment_is_originated_again_when_due {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        an_auto_retry_payment_is_originated_again_when_due_within_the_configured_policy(start_with_one_retry(crate::app::Backend::Sqlite).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if std::env::var("SETTLE_TEST_POSTGRES_URL").is_err() {
            eprintln!("skipped: SETTLE_TEST_POSTGRES_URL is not set");
            return;
        }
        an_auto_retry_payment_is_originated_again_when_due_within_the_configured_policy(start_with_one_retry(crate::app::Backend::Postgres).await).await;
    }
}

/// Every event of each type in `kinds` so far (at least one) matches its published schema, in every version.
async fn assert_events_match_their_schemas(app: &TestApp, kinds: &[&str]) {
    let types = app.get("/v1/event_types").await.body.clone();
    for kind in kinds {
        let entry = types["data"].as_array().unwrap().iter().find(|t| t["type"] == *kind).unwrap_or_else(|| panic!("{kind} is not in the catalog")).clone();
        for version in ["2026-11-30", "2026-11-25"] {
            let events = app.with_version(version).list_all(&format!("/v1/events?type={kind}")).await;
            assert!(!events.is_empty(), "no {kind} event");
            for event in &events {
                let mut errors = Vec::new();
                crate::events::validate(&entry["schemas"][version], event, "event", &mut errors);
                assert!(errors.is_empty(), "{kind} in {version}: {errors:?}\n{event}");
            }
        }
    }
}

/// The bank account `bank` of counterparty `counterparty`, as `GET /v1/counterparties/{id}` answers it.
async fn bank_of(api: &Api, counterparty: &str, bank: &str) -> Value {
    let reply = api.get(&format!("/v1/counterparties/{counterparty}")).await;
    reply.expect_status(200);
    reply.body["bank_accounts"].as_array().unwrap().iter().find(|b| b["id"] == bank).unwrap().clone()
}

ledger_test! {
    async fn a_prenote_is_filed_as_a_zero_dollar_entry_and_verifies_the_bank_account_after_three_banking_days(app) {
        // Monday 2027-03-01, 09:00 New York.
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let wallet = app.account("credit", Some(0)).await;
        app.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), &json!({"amount": 10_000})).await.expect_status(201);
        let created = app
            .post("/v1/counterparties", &json!({"name": "Acme", "test_clock": clock, "bank_accounts": [{"routing_number": ROUTING, "account_number": ACCOUNT_NUMBER, "account_type": "checking", "holder_name": "Acme", "verify": true}]}))
            .await;
        created.expect_status(201);
        let counterparty = created.id();
        let bank = created.body["bank_accounts"][0]["id"].as_str().unwrap().to_owned();
        let verification = &created.body["bank_accounts"][0]["verification"];
        assert_eq!((verification["status"].as_str(), verification["requested_at"].as_str()), (Some("pending"), Some("2027-03-01T14:00:00.000000Z")));
        let prenote = verification["prenote_payment_id"].as_str().unwrap().to_owned();
        let p = payment(&app, &prenote).await;
        assert_eq!((p["prenote"].as_bool(), p["amount"].as_i64(), p["direction"].as_str(), p["sec_code"].as_str()), (Some(true), Some(0), Some("credit"), Some("CCD")));
        assert!(p["ledger_account_id"].is_null() && p["ledger_transaction_id"].is_null(), "a prenote moves no money: {p}");

        // Live payments wait for the verification.
        let mut live = payment_body("credit", 1_000, &wallet, &bank);
        live["sec_code"] = json!("CCD");
        live["test_clock"] = json!(clock);
        app.post("/v1/payments", &live).await.expect_error(422, "bank_account_verification_pending");
        app.post(&format!("/v1/counterparties/{counterparty}/bank_accounts/{bank}/verify"), &json!({"test_clock": clock}))
            .await
            .expect_error(422, "bank_account_verification_pending");

        // The 10:30 window files it: a zero-dollar entry with the prenote credit code 23.
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        let files = app.list_all("/v1/ach/files").await;
        assert_eq!((files.len(), files[0]["payment_ids"].clone()), (1, json!([prenote])));
        let parsed = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        let (batch, entry) = parsed.entries().next().unwrap();
        assert_eq!((entry.transaction_code, entry.amount_minor, batch.sec_code.as_str()), (23, 0, "CCD"));
        assert_eq!((parsed.control.total_credit_minor, parsed.control.total_debit_minor), (0, 0));
        let p = payment(&app, &prenote).await;
        assert_eq!((p["status"].as_str(), p["trace_number"].as_str()), (Some("submitted"), Some(entry.trace_number.as_str())));

        // A notification of change on the prenote corrects the account as for a payment; the verification goes on.
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(notification_of_change(parsed.clone(), None, "C01", "55554444"))).await;
        reply.expect_status(201);
        assert_eq!(reply.body["results"][0]["outcome"], "changed");
        let b = bank_of(&app, &counterparty, &bank).await;
        assert_eq!((b["account_number_last4"].as_str(), b["verification"]["status"].as_str()), (Some("4444"), Some("pending")));
        assert_eq!(b["notifications_of_change"][0]["payment_id"], prenote);

        // Tuesday 18:30: settled (no ledger effect); verified no sooner than three banking days after.
        advance(&app, &clock, "2027-03-02T23:30:00Z").await;
        assert_eq!(payment(&app, &prenote).await["status"], "settled");
        let b = bank_of(&app, &counterparty, &bank).await;
        assert_eq!((b["verification"]["status"].as_str(), b["verification"]["verifiable_at"].as_str()), (Some("pending"), Some("2027-03-05T05:00:00.000000Z")));
        advance(&app, &clock, "2027-03-05T04:59:00Z").await;
        assert_eq!(bank_of(&app, &counterparty, &bank).await["verification"]["status"], "pending");
        advance(&app, &clock, "2027-03-05T05:01:00Z").await;
        let b = bank_of(&app, &counterparty, &bank).await;
        assert_eq!((b["verification"]["status"].as_str(), b["verification"]["verified_at"].as_str()), (Some("verified"), Some("2027-03-05T05:00:00.000000Z")));
        let b = app.balances(&wallet).await;
        assert_eq!((b.posted, b.available), (10_000, 10_000), "the prenote never touched the ledger");

        // Now live entries may follow.
        app.post("/v1/payments", &live).await.expect_status(201);
        let events = app.list_all("/v1/events?type=counterparty.bank_account.verification_updated").await;
        let mut seen: Vec<(String, String)> = events
            .iter()
            .map(|e| (e["data"]["object"]["verification"]["status"].as_str().unwrap().to_owned(), e["data"]["previous_attributes"]["verification"]["status"].as_str().unwrap().to_owned()))
            .collect();
        seen.sort();
        assert_eq!(seen, [(String::from("pending"), String::from("unverified")), (String::from("verified"), String::from("pending"))]);
        assert!(events.iter().all(|e| e["data"]["object"]["id"] == bank.as_str()));
        let rates = app.get("/v1/ach/return_rates").await;
        assert_eq!(rates.body["debit_entries"], 0, "a prenote is not a debit entry");
        assert_events_match_their_schemas(&app, &["counterparty.bank_account.verification_updated", "payment.created", "payment.settled"]).await;
    }
}

ledger_test! {
    async fn a_returned_prenote_fails_the_verification_applies_the_codes_action_and_refuses_payments(app) {
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let (wallet, bank) = setup(&app, 10_000).await;
        let counterparty = bank_account(&app, &bank).await["counterparty_id"].as_str().unwrap().to_owned();
        let (_, other_bank) = setup(&app, 0).await;
        let other = bank_account(&app, &other_bank).await["counterparty_id"].as_str().unwrap().to_owned();
        let verify = |cp: &str, ba: &str| format!("/v1/counterparties/{cp}/bank_accounts/{ba}/verify");
        // Bad requests are refused and change nothing.
        app.post(&verify(&counterparty, &other_bank), &json!({})).await.expect_error(404, "not_found");
        app.post(&verify("cp_nope", &bank), &json!({})).await.expect_error(404, "not_found");
        app.post(&verify(&counterparty, &bank), &json!({"sec_code": "XYZ"})).await.expect_error(400, "invalid_request");
        app.post(&verify(&counterparty, &bank), &json!({"test_clock": "clock_nope"})).await.expect_error(400, "invalid_request");
        app.post(&verify(&counterparty, &bank), &json!({"direction": "sideways"})).await.expect_error(400, "invalid_request");
        assert_eq!(bank_account(&app, &bank).await["verification"]["status"], "unverified");

        // A debit prenote (28) to the first account, a credit prenote to the second.
        let reply = app.post(&verify(&counterparty, &bank), &json!({"direction": "debit", "sec_code": "PPD", "test_clock": clock})).await;
        reply.expect_status(200);
        assert_eq!(reply.body["verification"]["status"], "pending");
        let prenote = reply.body["verification"]["prenote_payment_id"].as_str().unwrap().to_owned();
        let other_prenote = app.post(&verify(&other, &other_bank), &json!({"test_clock": clock})).await;
        other_prenote.expect_status(200);
        let other_prenote = other_prenote.body["verification"]["prenote_payment_id"].as_str().unwrap().to_owned();
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        let files = app.list_all("/v1/ach/files").await;
        let original = nacha::parse(&file_content(&app, files[0]["id"].as_str().unwrap()).await).unwrap();
        let mut codes: Vec<(u32, i64)> = original.entries().map(|(_, e)| (e.transaction_code, e.amount_minor)).collect();
        codes.sort();
        assert_eq!(codes, [(23, 0), (28, 0)]);

        // The bank returns the first prenote R03 (no account) in a return file: failed, and the account disabled as for any R03.
        let mut returns = original.clone();
        let trace = payment(&app, &prenote).await["trace_number"].as_str().unwrap().to_owned();
        for b in &mut returns.batches {
            b.entries.retain(|e| e.trace_number == trace);
        }
        returns.batches.retain(|b| !b.entries.is_empty());
        returns.refresh_controls().unwrap();
        let reply = app.send(app.request(reqwest::Method::POST, "/v1/ach/return_files").body(returns.returned_with("R03").unwrap().write())).await;
        reply.expect_status(201);
        assert_eq!((reply.body["results"][0]["outcome"].as_str(), reply.body["results"][0]["payment_id"].as_str()), (Some("returned"), Some(prenote.as_str())));
        let b = bank_account(&app, &bank).await;
        assert_eq!((b["status"].as_str(), b["disabled_reason"].as_str()), (Some("disabled"), Some("R03")));
        assert_eq!((b["verification"]["status"].as_str(), b["verification"]["return_code"].as_str()), (Some("failed"), Some("R03")));
        let p = payment(&app, &prenote).await;
        assert!(p["reversal_transaction_id"].is_null() && p["ledger_issue"].is_null(), "{p}");

        // The second comes back R06 (no action of its own): failed, and payments are refused until it is verified again.
        simulate_return(&app, &other_prenote, "R06").await;
        let b = bank_account(&app, &other_bank).await;
        assert_eq!((b["status"].as_str(), b["verification"]["status"].as_str(), b["verification"]["return_code"].as_str()), (Some("active"), Some("failed"), Some("R06")));
        let mut live = payment_body("credit", 1_000, &wallet, &other_bank);
        live["sec_code"] = json!("CCD");
        app.post("/v1/payments", &live).await.expect_error(422, "bank_account_verification_failed");
        assert_eq!(app.balances(&wallet).await.available, 10_000, "nothing held");
        app.post(&verify(&counterparty, &bank), &json!({})).await.expect_error(422, "bank_account_disabled");
        let again = app.post(&verify(&other, &other_bank), &json!({"test_clock": clock})).await;
        again.expect_status(200);
        assert_eq!(again.body["verification"]["status"], "pending");
        let statuses: Vec<String> = app
            .list_all("/v1/events?type=counterparty.bank_account.verification_updated")
            .await
            .iter()
            .filter(|e| e["data"]["object"]["id"] == other_bank.as_str())
            .map(|e| e["data"]["object"]["verification"]["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(statuses.iter().filter(|s| *s == "failed").count(), 1, "{statuses:?}");
    }
}

ledger_test! {
    async fn a_test_clock_payment_sees_the_consents_in_force_at_its_clocks_time(app) {
        // Jane's authorization was granted a minute ago (real time).
        let (_, jane_bank) = customer_with_bank_account(&app, "Jane").await;
        let wallet = app.account("credit", Some(0)).await;
        let month_ago = app.now().plus_secs(-30 * 86_400).to_rfc3339();
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": month_ago})).await.id();
        let mut on_clock = payment_body("debit", 500, &wallet, &jane_bank);
        on_clock["test_clock"] = json!(clock);
        app.post("/v1/payments", &on_clock).await.expect_error(422, "debit_authorization_missing");
        app.post("/v1/payments", &payment_body("debit", 500, &wallet, &jane_bank)).await.expect_status(201);
        // Once the clock has passed the grant, its payments are authorized too.
        advance(&app, &clock, &app.now().plus_secs(60).to_rfc3339()).await;
        app.post("/v1/payments", &on_clock).await.expect_status(201);
    }
}

/// The wallet's entries and the tenant's transactions, counted: what a sweep that applies nothing leaves unchanged.
async fn ledger_counts(api: &Api, wallet: &str) -> (usize, usize) {
    (api.list_all(&format!("/v1/accounts/{wallet}/entries")).await.len(), api.list_all("/v1/transactions").await.len())
}

ledger_test! {
    async fn a_reversal_the_ledger_refused_after_a_return_is_applied_once_by_the_scheduler_sweep_after_its_backoff(app) {
        let tick = || settle_api::ach::files::tick(&app.state);
        let (wallet, bank) = setup(&app, 0).await;
        let id = pay(&app, "debit", 7_000, &wallet, &bank).await["id"].as_str().unwrap().to_owned();
        cut(&app).await;
        app.post(&format!("/v1/test_helpers/payments/{id}/settle"), &json!({})).await.expect_status(200);
        let p = payment(&app, &id).await;
        let available_at = settle_core::clock::Timestamp::parse_rfc3339(p["available_at"].as_str().unwrap()).unwrap();
        app.clock.advance_secs((available_at.micros() - app.now().micros()) / 1_000_000 + 1);
        // The money is spent; a late unauthorized return's reversal is refused by the ledger.
        let sink = app.account("credit", None).await;
        app.transfer_ok(&wallet, &sink, 7_000).await;
        let r = simulate_return(&app, &id, "R10").await;
        assert_eq!(r["status"], "returned");
        assert_eq!(r["ledger_issue"], "return not reflected in the ledger: insufficient_funds", "{r}");
        let transaction = r["ledger_transaction_id"].as_str().unwrap().to_owned();

        // A round while the cause remains: refused again, recorded with its attempt and backoff.
        tick().await.unwrap();
        let p = payment(&app, &id).await;
        assert_eq!(
            p["ledger_issue"],
            "return not reflected in the ledger: insufficient_funds; repair attempt 1 failed (reversal not applied: insufficient_funds)"
        );
        assert_eq!(p["ledger_issue_attempts"], 1);
        let next = settle_core::clock::Timestamp::parse_rfc3339(p["ledger_issue_next_attempt_at"].as_str().unwrap()).unwrap();
        assert_eq!(next.micros() - app.now().micros(), 60_000_000, "a minute's backoff after the first attempt");
        assert!(p["reversal_transaction_id"].is_null() && p["ledger_repairs"] == json!([]), "{p}");
        assert_eq!(app.balances(&wallet).await, crate::app::Balances { posted: 0, pending: 0, available: 0 });

        // The cause removed: the money is back. The next round waits for the backoff.
        app.post(&format!("/v1/test_helpers/accounts/{wallet}/fund"), &json!({"amount": 7_000})).await.expect_status(201);
        tick().await.unwrap();
        assert_eq!(payment(&app, &id).await["ledger_issue_attempts"], 1, "not before its backoff");
        // Then two servers' rounds at once: the reversal is applied once.
        app.clock.advance_secs(61);
        let (a, b) = tokio::join!(tick(), tick());
        a.unwrap();
        b.unwrap();
        let p = payment(&app, &id).await;
        assert!(p["ledger_issue"].is_null() && p["ledger_issue_next_attempt_at"].is_null(), "{p}");
        assert_eq!(p["status"], "returned");
        let reversal = p["reversal_transaction_id"].as_str().unwrap().to_owned();
        let repairs = p["ledger_repairs"].as_array().unwrap();
        assert_eq!(repairs.len(), 1, "{p}");
        assert_eq!(repairs[0]["issue"], "return not reflected in the ledger: insufficient_funds");
        assert_eq!(repairs[0]["attempts"], 2);
        assert_eq!(repairs[0]["applied"], format!("{transaction} reversed (reversal {reversal})"));
        let original = app.get(&format!("/v1/transactions/{transaction}")).await;
        assert_eq!(original.body["reversed_by"], reversal.as_str());
        // The ledger agrees with a returned debit: the credit is undone, the wallet holds nothing of it.
        let repaired_balances = app.balances(&wallet).await;
        assert_eq!(repaired_balances, crate::app::Balances { posted: 0, pending: 0, available: 0 });
        let events = app.list_all("/v1/events?type=payment.ledger_repaired").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["data"]["object"]["id"], id.as_str());
        assert_eq!(events[0]["data"]["previous_attributes"]["ledger_issue"], "return not reflected in the ledger: insufficient_funds; repair attempt 1 failed (reversal not applied: insufficient_funds)");

        // Later rounds change nothing: balances, entries, transactions, the payment, the events.
        let counts = ledger_counts(&app, &wallet).await;
        app.clock.advance_secs(7 * 3_600);
        tick().await.unwrap();
        tick().await.unwrap();
        assert_eq!(app.balances(&wallet).await, repaired_balances);
        assert_eq!(ledger_counts(&app, &wallet).await, counts);
        assert_eq!(payment(&app, &id).await, p);
        assert_eq!(app.list_all("/v1/events?type=payment.ledger_repaired").await.len(), 1);
        assert_events_match_their_schemas(&app, &["payment.ledger_repaired"]).await;
    }
}

ledger_test! {
    async fn a_settlement_the_ledger_refused_is_posted_and_held_by_the_next_test_clock_advance(app) {
        // Monday 2027-03-01, 09:00 New York.
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let (wallet, bank) = setup(&app, 0).await;
        let customer = app.post("/v1/customers", &json!({"type": "individual", "given_name": "Ivan", "family_name": "Petrov", "date_of_birth": "1961-03-03"})).await.id();
        app.post(&format!("/v1/customers/{customer}/accounts"), &json!({"account_id": wallet})).await.expect_status(201);
        let mut body = payment_body("debit", 5_000, &wallet, &bank);
        body["sec_code"] = json!("CCD");
        body["test_clock"] = json!(clock);
        let id = app.post("/v1/payments", &body).await.id();
        advance(&app, &clock, "2027-03-01T15:31:00Z").await;
        assert_eq!(payment(&app, &id).await["status"], "submitted");
        // The customer is blocked after the cut: the settlement's post is refused by the engine.
        crate::customers::load_watchlist(&app, &[("PETROV, Ivan", &[], Some(1961))]).await;
        settle_api::customers::screening::refresh(&app.state).await.unwrap();
        advance(&app, &clock, "2027-03-02T23:30:00Z").await;
        let p = payment(&app, &id).await;
        assert_eq!((p["status"].as_str(), p["ledger_issue"].as_str()), (Some("settled"), Some("pending credit not posted: customer_blocked")));
        assert_eq!(app.balances(&wallet).await, crate::app::Balances { posted: 0, pending: 5_000, available: 0 });
        // An advance with the block in force: refused again.
        advance(&app, &clock, "2027-03-02T23:40:00Z").await;
        let p = payment(&app, &id).await;
        assert_eq!(p["ledger_issue_attempts"], 1);
        assert_eq!(p["ledger_issue"], "pending credit not posted: customer_blocked; repair attempt 1 failed (pending credit not posted: customer_blocked)");

        // Cleared as a false positive: the next advance posts the credit and places its availability hold, at the clock's time.
        let screening = app.get(&format!("/v1/screenings?customer_id={customer}")).await.body["data"][0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/screenings/{screening}/resolve"), &json!({"resolution": "false_positive", "reason": "different date of birth"}))
            .await
            .expect_status(200);
        advance(&app, &clock, "2027-03-02T23:50:00Z").await;
        let p = payment(&app, &id).await;
        assert!(p["ledger_issue"].is_null(), "{p}");
        assert_eq!(p["status"], "settled");
        assert_eq!(p["available_at"], "2027-03-04T05:00:00.000000Z");
        let hold = p["availability_hold_transaction_id"].as_str().unwrap().to_owned();
        let transaction = p["ledger_transaction_id"].as_str().unwrap().to_owned();
        assert_eq!(p["ledger_repairs"][0]["applied"], format!("{transaction} posted; availability hold {hold} placed"));
        assert_eq!(ledger_status(&app, &transaction).await, "posted");
        assert_eq!(ledger_status(&app, &hold).await, "pending");
        let repaired_balances = app.balances(&wallet).await;
        assert_eq!(repaired_balances, crate::app::Balances { posted: 5_000, pending: 0, available: 0 }, "settled, held for its hold period");

        // Another advance and a scheduler round change nothing.
        let counts = ledger_counts(&app, &wallet).await;
        advance(&app, &clock, "2027-03-02T23:55:00Z").await;
        settle_api::ach::files::tick(&app.state).await.unwrap();
        assert_eq!(app.balances(&wallet).await, repaired_balances);
        assert_eq!(ledger_counts(&app, &wallet).await, counts);
        assert_eq!(payment(&app, &id).await, p);
        // The hold it placed ends like any other.
        advance(&app, &clock, "2027-03-04T05:30:00Z").await;
        assert_eq!(ledger_status(&app, &hold).await, "voided");
        assert_eq!(app.balances(&wallet).await, crate::app::Balances { posted: 5_000, pending: 5_000, available: 5_000 });
        assert_eq!(app.list_all("/v1/events?type=payment.ledger_repaired").await.len(), 1);
    }
}
