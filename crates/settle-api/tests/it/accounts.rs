//! Accounts: opening, reading balances, totals and versions, balances as of
//! an instant, and an account's entries.

use crate::app::{Balances, ledger_test, transfer_body};
use serde_json::{Value, json};
use settle_core::clock::Timestamp;

/// `2026-01-02T03:04:05.000000Z`: RFC 3339, UTC, exactly microseconds.
fn is_rfc3339_micros_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

ledger_test! {
    async fn created_account_has_zero_balances_zero_totals_and_version_zero(app) {
        let reply = app
            .post(
                "/v1/accounts",
                &json!({"name": "Customer wallet", "currency": "EUR", "normal_balance": "credit", "min_available_balance": 0,
                        "external_id": "wallet-1", "metadata": {"customer": "c_42"}}),
            )
            .await;
        reply.expect_status(201);
        let id = reply.id();
        assert!(id.starts_with("acct_") && id.len() == 31, "prefixed ULID id: {id}");
        let created_at = reply.body["created_at"].as_str().unwrap().to_owned();
        assert!(is_rfc3339_micros_utc(&created_at), "created_at {created_at}");
        assert_eq!(created_at, app.now().to_rfc3339(), "created_at comes from the server's clock");
        assert_eq!(
            reply.body,
            json!({
                "object": "account", "id": id, "name": "Customer wallet", "currency": "EUR", "normal_balance": "credit",
                "min_available_balance": 0, "balances": {"posted": 0, "pending": 0, "available": 0},
                "totals": {"posted_debits": 0, "posted_credits": 0, "pending_debits": 0, "pending_credits": 0},
                "version": 0, "external_id": "wallet-1", "metadata": {"customer": "c_42"}, "customer_id": null, "created_at": created_at,
                "correlation_id": reply.header("x-correlation-id").unwrap(),
            })
        );
        let read = app.get(&format!("/v1/accounts/{id}")).await;
        read.expect_status(200);
        assert_eq!(read.body, reply.body, "GET shows what POST returned");
    }
}

ledger_test! {
    async fn account_defaults_have_no_limit_and_empty_metadata(app) {
        let reply = app.post("/v1/accounts", &json!({"name": "ops", "currency": "JPY", "normal_balance": "debit"})).await;
        reply.expect_status(201);
        assert_eq!(reply.body["min_available_balance"], Value::Null);
        assert_eq!(reply.body["external_id"], Value::Null);
        assert_eq!(reply.body["metadata"], json!({}));
        assert_eq!(reply.body["normal_balance"], "debit");
    }
}

ledger_test! {
    async fn account_balances_and_totals_follow_each_side_and_version_counts_changes(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let untouched = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 1000).await;
        app.transfer_ok(&wallet, &source, 300).await;
        let w = app.account_json(&wallet).await;
        assert_eq!(Balances::of(&w), Balances { posted: 700, pending: 700, available: 700 });
        assert_eq!(w["totals"], json!({"posted_debits": 300, "posted_credits": 1000, "pending_debits": 0, "pending_credits": 0}));
        assert_eq!(w["version"], 2);
        let s = app.account_json(&source).await;
        assert_eq!(Balances::of(&s), Balances { posted: 700, pending: 700, available: 700 }, "debit-normal: debits minus credits");
        assert_eq!(s["totals"], json!({"posted_debits": 1000, "posted_credits": 300, "pending_debits": 0, "pending_credits": 0}));
        assert_eq!(s["version"], 2);
        assert_eq!(app.version(&untouched).await, 0, "an account no transaction touched keeps version 0");
    }
}

ledger_test! {
    async fn account_with_invalid_fields_is_refused_naming_the_field(app) {
        let cases = [
            (json!({"name": "x", "currency": "usd", "normal_balance": "credit"}), Some("currency")),
            (json!({"name": "x", "currency": "ABC", "normal_balance": "credit"}), Some("currency")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "sideways"}), Some("normal_balance")),
            (json!({"name": "", "currency": "USD", "normal_balance": "credit"}), Some("name")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "credit", "min_available_balance": 1.5}), Some("min_available_balance")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "credit", "min_available_balance": "0"}), Some("min_available_balance")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "credit", "metadata": {"k": 1}}), Some("metadata.k")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "credit", "metadata": {"": "v"}}), Some("metadata")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "credit", "external_id": ""}), Some("external_id")),
            (json!({"name": "x", "currency": "USD", "normal_balance": "credit", "colour": "red"}), None),
            (json!({"currency": "USD", "normal_balance": "credit"}), None),
        ];
        for (body, param) in cases {
            let reply = app.post("/v1/accounts", &body).await;
            reply.expect_error(400, "invalid_request");
            if let Some(param) = param {
                assert_eq!(reply.param(), Some(param), "param for {body}: {}", reply.body);
            }
        }
        let too_many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        let reply = app.post("/v1/accounts", &json!({"name": "x", "currency": "USD", "normal_balance": "credit", "metadata": too_many})).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("metadata"));
        assert_eq!(app.list_all("/v1/accounts").await.len(), 0, "no refused account was opened");
    }
}

ledger_test! {
    async fn account_external_id_reused_is_refused_naming_the_existing_account(app) {
        let first = app.account_with(json!({"name": "a", "currency": "USD", "normal_balance": "credit", "external_id": "cust-7"})).await;
        let reply = app.post("/v1/accounts", &json!({"name": "b", "currency": "USD", "normal_balance": "credit", "external_id": "cust-7"})).await;
        reply.expect_error(409, "duplicate_external_id");
        assert_eq!(reply.param(), Some("external_id"));
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&first), "the message names {first}: {message}");
        assert_eq!(app.list_all("/v1/accounts").await.len(), 1);
    }
}

ledger_test! {
    async fn balances_as_of_before_creation_are_zero_and_between_transfers_count_only_the_first(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let created = app.now();
        app.clock.advance_secs(10);
        app.transfer_ok(&source, &wallet, 100).await;
        let first = app.now();
        app.clock.advance_secs(10);
        app.transfer_ok(&source, &wallet, 50).await;
        let second = app.now();
        app.clock.advance_secs(10);

        let as_of = |at: Timestamp| format!("/v1/accounts/{wallet}/balances?as_of={}", at.to_rfc3339());
        let read = |path: String| {
            let api = app.api.clone();
            async move {
                let reply = api.get(&path).await;
                reply.expect_status(200);
                reply.body
            }
        };
        let before = read(as_of(created.plus_secs(-1))).await;
        assert_eq!(Balances::of(&before), Balances { posted: 0, pending: 0, available: 0 });
        assert_eq!(before["totals"], json!({"posted_debits": 0, "posted_credits": 0, "pending_debits": 0, "pending_credits": 0}));
        assert_eq!(before["object"], "account_balances");
        assert_eq!(before["account_id"], wallet.as_str());
        assert_eq!(before["currency"], "USD");
        assert_eq!(before["as_of"], created.plus_secs(-1).to_rfc3339());

        let between = read(as_of(first.plus_secs(5))).await;
        assert_eq!(Balances::of(&between), Balances { posted: 100, pending: 100, available: 100 }, "only the first transfer");
        assert_eq!(between["totals"]["posted_credits"], 100);
        let at_second = read(as_of(second)).await;
        assert_eq!(Balances::of(&at_second).posted, 150, "an instant includes what took effect at it");
        let now = read(format!("/v1/accounts/{wallet}/balances")).await;
        assert_eq!(Balances::of(&now), Balances { posted: 150, pending: 150, available: 150 });
        let long_ago = read(format!("/v1/accounts/{wallet}/balances?as_of=2000-01-01T00:00:00Z")).await;
        assert_eq!(Balances::of(&long_ago).posted, 0);
        let source_between = app.get(&format!("/v1/accounts/{source}/balances?as_of={}", first.plus_secs(5).to_rfc3339())).await;
        assert_eq!(Balances::of(&source_between.body).posted, 100, "the other side, as of the same instant");

        for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-01-01", "1800-01-01T00:00:00Z"] {
            let reply = app.get(&format!("/v1/accounts/{wallet}/balances?as_of={bad}")).await;
            reply.expect_error(400, "invalid_request");
            assert_eq!(reply.param(), Some("as_of"), "{bad}");
        }
        app.get(&format!("/v1/accounts/{wallet}/balances?at=2000-01-01T00:00:00Z")).await.expect_error(400, "invalid_request");
    }
}

ledger_test! {
    async fn balances_as_of_between_a_hold_and_its_capture_count_the_money_once(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", Some(0)).await;
        app.transfer_ok(&source, &wallet, 1000).await;
        app.clock.advance_secs(10);
        let hold = app.hold_ok(&wallet, &merchant, 600).await;
        let held_at = app.now();
        let wallet_while_held = app.balances(&wallet).await;
        let merchant_while_held = app.balances(&merchant).await;
        assert_eq!(wallet_while_held, Balances { posted: 1000, pending: 400, available: 400 });
        app.clock.advance_secs(10);
        app.post(&format!("/v1/transactions/{hold}/post"), &json!({})).await.expect_status(200);
        app.clock.advance_secs(10);

        let mid = held_at.plus_secs(5).to_rfc3339();
        let wallet_mid = app.get(&format!("/v1/accounts/{wallet}/balances?as_of={mid}")).await;
        let merchant_mid = app.get(&format!("/v1/accounts/{merchant}/balances?as_of={mid}")).await;
        assert_eq!(Balances::of(&wallet_mid.body), wallet_while_held, "as of {mid} the wallet read as it did then: {}", wallet_mid.body);
        assert_eq!(Balances::of(&merchant_mid.body), merchant_while_held, "as of {mid} the merchant read as it did then: {}", merchant_mid.body);
    }
}

ledger_test! {
    async fn account_entries_list_every_leg_with_its_status_newest_first(app) {
        let source = app.account("debit", None).await;
        let wallet = app.account("credit", Some(0)).await;
        let merchant = app.account("credit", None).await;
        let funding = app.transfer_ok(&source, &wallet, 1000).await;
        let spend = app.transfer_ok(&wallet, &merchant, 300).await;
        let open_hold = app.hold_ok(&wallet, &merchant, 200).await;
        let voided_hold = app.hold_ok(&wallet, &merchant, 50).await;
        app.post(&format!("/v1/transactions/{voided_hold}/void"), &json!({})).await.expect_status(200);
        let captured_hold = app.hold_ok(&wallet, &merchant, 100).await;
        let mut capture = transfer_body(&wallet, &merchant, 60);
        capture = json!({"entries": capture["entries"]});
        app.post(&format!("/v1/transactions/{captured_hold}/post"), &capture).await.expect_status(200);

        let reply = app.get(&format!("/v1/accounts/{wallet}/entries?limit=100")).await;
        reply.expect_status(200);
        assert_eq!(reply.body["object"], "list");
        assert_eq!(reply.body["has_more"], false);
        let entries = reply.body["data"].as_array().unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        for e in entries {
            assert_eq!(e["object"], "entry");
            assert!(e["id"].as_str().unwrap().starts_with("ent_"));
            assert_eq!(e["account_id"], wallet.as_str());
            assert_eq!(e["currency"], "USD");
            assert!(is_rfc3339_micros_utc(e["created_at"].as_str().unwrap()));
            assert!(is_rfc3339_micros_utc(e["effective_at"].as_str().unwrap()));
        }
        let mut seen: Vec<(String, String, i64, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["transaction_id"].as_str().unwrap().to_owned(),
                    e["direction"].as_str().unwrap().to_owned(),
                    e["amount"].as_i64().unwrap(),
                    e["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        seen.sort();
        let mut expected = vec![
            (funding, "credit", 1000, "posted"),
            (spend, "debit", 300, "posted"),
            (open_hold, "debit", 200, "pending"),
            (voided_hold, "debit", 50, "voided"),
            (captured_hold.clone(), "debit", 100, "archived"),
            (captured_hold, "debit", 60, "posted"),
        ]
        .into_iter()
        .map(|(t, d, a, s)| (t, d.to_owned(), a, s.to_owned()))
        .collect::<Vec<_>>();
        expected.sort();
        assert_eq!(seen, expected);
        assert_eq!(app.balances(&wallet).await, Balances { posted: 640, pending: 440, available: 440 });
    }
}

ledger_test! {
    async fn a_future_as_of_answers_as_of_now_and_says_so(app) {
        let wallet = app.account("credit", None).await;
        let later = app.now().plus_secs(3600).to_rfc3339();
        let reply = app.get(&format!("/v1/accounts/{wallet}/balances?as_of={later}")).await;
        reply.expect_status(200);
        assert_eq!(reply.body["as_of"], app.now().to_rfc3339().as_str());
    }
}

ledger_test! {
    async fn a_path_id_that_is_not_utf8_is_not_found_in_the_envelope(app) {
        app.get("/v1/accounts/%FF").await.expect_error(404, "not_found");
        app.get("/v1/transactions/%FF%FE").await.expect_error(404, "not_found");
        app.post("/v1/transactions/%FF/void", &json!({})).await.expect_error(404, "not_found");
    }
}

ledger_test! {
    async fn a_metadata_key_given_twice_is_refused_like_any_duplicate_field(app) {
        let body = br#"{"name":"X","currency":"USD","normal_balance":"debit","metadata":{"a":"1","a":"2"}}"#.to_vec();
        let reply = app.post_raw("/v1/accounts", body).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("metadata"), "{}", reply.body);
        assert!(app.list_all("/v1/accounts").await.is_empty());
        let reply = app.post("/v1/accounts", &json!({"name": "X", "currency": "USD", "normal_balance": "debit", "metadata": null})).await;
        reply.expect_status(201);
        assert_eq!(reply.body["metadata"], json!({}));
    }
}
