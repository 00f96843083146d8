//! Bank reconciliation over HTTP: import (and re-import), automatic
//! matches, manual match and unmatch with their audit, reports in JSON and
//! CSV, and malformed statements answered with where they are wrong.

use crate::app::{Api, ledger_test};
use reqwest::Method;
use serde_json::{Value, json};
use settle_core::tenancy::{Environment, Scope};

/// The day the server's clock is on, `YYYY-MM-DD`.
fn today(app: &crate::app::TestApp) -> String {
    app.now().to_rfc3339()[..10].to_owned()
}

async fn transaction(api: &Api, body: Value) -> String {
    let reply = api.post("/v1/transactions", &body).await;
    reply.expect_status(201);
    reply.id()
}

/// Money into the bank (a debit on the bank's asset account) or out of it.
fn movement(bank: &str, other: &str, amount: i64, money_in: bool, extra: Value) -> Value {
    let (debit, credit) = if money_in { (bank, other) } else { (other, bank) };
    let mut body = json!({"entries": [
        {"account_id": debit, "direction": "debit", "amount": amount},
        {"account_id": credit, "direction": "credit", "amount": amount},
    ]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn lines(api: &Api, statement: &str) -> Vec<Value> {
    api.list_all(&format!("/v1/reconciliation/statements/{statement}/lines")).await
}

ledger_test! {
    async fn a_statement_is_imported_once_matched_by_rule_and_reconciled_by_hand_with_an_audit(app) {
        let bank = app.account("debit", None).await;
        let customers = app.account("credit", None).await;
        let expenses = app.account("debit", None).await;
        let deposit = transaction(&app, movement(&bank, &customers, 12_500, true, json!({"external_id": "INV-1"}))).await;
        let rent = transaction(&app, movement(&bank, &expenses, 4050, false, json!({"description": "rent to Landlord Ltd"}))).await;
        let batch = transaction(&app, movement(&bank, &customers, 7700, true, json!({"metadata": {"reference": "BATCH-9"}}))).await;
        let stray = transaction(&app, movement(&bank, &customers, 9999, true, json!({"description": "nobody's"}))).await;
        let day = today(&app);
        let csv = format!(
            "date,amount,currency,reference,counterparty,description\n\
             {day},125.00,USD,INV-1,ACME Corp,invoice 1\n\
             {day},-40.50,USD,,Landlord Ltd,rent\n\
             {day},30.00,USD,BATCH-9,,part 1\n\
             {day},47.00,USD,BATCH-9,,part 2\n\
             {day},-5.00,USD,,,=cmd|' /C calc'!A0\n"
        );
        let request = json!({"format": "csv", "content": csv, "ledger_account_id": bank});

        let first = app.post_idempotent("/v1/reconciliation/statements", "import-1", &request).await;
        first.expect_status(201);
        let statement = first.id();
        assert_eq!(first.body["lines"], json!({"matched": 2, "partially_matched": 2, "unmatched": 1}), "{}", first.body);
        assert_eq!((first.body["total_credits"].as_i64(), first.body["total_debits"].as_i64()), (Some(20_200), Some(4550)));
        // The same key replays; the same content under another key (or none) is the same statement, unchanged.
        let replay = app.post_idempotent("/v1/reconciliation/statements", "import-1", &request).await;
        replay.expect_status(201);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, first.body);
        let again = app.post("/v1/reconciliation/statements", &request).await;
        again.expect_status(200);
        assert_eq!(again.body, first.body);
        let listed = app.list_all("/v1/reconciliation/statements").await;
        assert_eq!(listed.len(), 1);

        let found = lines(&app, &statement).await;
        let summary: Vec<(String, String, Vec<String>)> = found
            .iter()
            .map(|l| {
                let rules = l["matches"].as_array().unwrap().iter().map(|m| format!("{}:{}", m["rule"].as_str().unwrap(), m["transaction_id"].as_str().unwrap())).collect();
                (l["amount"].to_string(), l["status"].as_str().unwrap().to_owned(), rules)
            })
            .collect();
        assert_eq!(summary, vec![
            (String::from("12500"), String::from("matched"), vec![format!("reference:{deposit}")]),
            (String::from("-4050"), String::from("matched"), vec![format!("amount_date_counterparty:{rent}")]),
            (String::from("3000"), String::from("partially_matched"), vec![format!("split_reference:{batch}")]),
            (String::from("4700"), String::from("partially_matched"), vec![format!("split_reference:{batch}")]),
            (String::from("-500"), String::from("unmatched"), vec![]),
        ]);
        assert_eq!(found[0]["matches"][0]["confidence"], 100);
        assert_eq!(found[1]["matches"][0]["confidence"], 80);
        assert_eq!(found[4]["position"], "line 6");

        // The bank fee is booked afterwards and matched by hand.
        let fee_line = found[4]["id"].as_str().unwrap().to_owned();
        let fee = transaction(&app, movement(&bank, &expenses, 500, false, json!({"description": "bank fee"}))).await;
        let match_path = format!("/v1/reconciliation/lines/{fee_line}/match");
        app.post(&match_path, &json!({"transaction_id": fee, "reason": ""})).await.expect_error(400, "invalid_request");
        app.post(&match_path, &json!({"transaction_id": deposit, "reason": "wrong one"})).await.expect_error(409, "transaction_already_matched");
        let matched = app.post(&match_path, &json!({"transaction_id": fee, "reason": "fee booked late"})).await;
        matched.expect_status(200);
        assert_eq!(matched.body["status"], "matched", "{}", matched.body);
        assert_eq!(matched.body["matches"][0]["method"], "manual");
        assert_eq!(matched.body["matches"][0]["reason"], "fee booked late");

        // Unmatching the batch's first part leaves the second unexplained by itself.
        let part_one = found[2]["id"].as_str().unwrap().to_owned();
        let unmatched = app.post(&format!("/v1/reconciliation/lines/{part_one}/unmatch"), &json!({"reason": "the bank split it differently"})).await;
        unmatched.expect_status(200);
        assert_eq!((unmatched.body["status"].as_str(), unmatched.body["matches"].as_array().map(Vec::len)), (Some("unmatched"), Some(0)));
        let after = lines(&app, &statement).await;
        assert_eq!(after[3]["status"], "partially_matched");
        app.post(&format!("/v1/reconciliation/lines/{part_one}/unmatch"), &json!({"reason": "again"})).await.expect_error(409, "line_not_matched");

        // The audit says who, what and why, for each manual action.
        let key = app.store.find_api_key(settle_api::auth::hash_secret(app.api.key.as_deref().unwrap())).await.unwrap().unwrap();
        let audit = app.store.bank_line_audit(key.tenant, fee_line.clone()).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!((audit[0].action.as_str(), audit[0].reason.as_str(), audit[0].actor.as_str()), ("match", "fee booked late", key.id.as_str()));
        assert_eq!(audit[0].transaction_ids, vec![fee.clone()]);
        let audit = app.store.bank_line_audit(key.tenant, part_one.clone()).await.unwrap();
        assert_eq!((audit.len(), audit[0].action.as_str(), audit[0].transaction_ids.clone()), (1, "unmatch", vec![batch.clone()]));

        // The day's report: both sides, in JSON and as CSV.
        let report = app.get(&format!("/v1/reconciliation/reports/{day}")).await;
        report.expect_status(200);
        let s = &report.body["summary"][0];
        assert_eq!(s["ledger_account_id"], bank.as_str());
        assert_eq!((s["matched"]["count"].as_i64(), s["partially_matched"]["count"].as_i64(), s["unmatched"]["count"].as_i64()), (Some(3), Some(1), Some(1)));
        let unexplained: Vec<&str> = report.body["unmatched_transactions"].as_array().unwrap().iter().map(|t| t["transaction_id"].as_str().unwrap()).collect();
        assert_eq!(unexplained, vec![stray.as_str()]);
        let csv_reply = app.send(app.request(Method::GET, &format!("/v1/reconciliation/reports/{day}")).header("accept", "text/csv")).await;
        csv_reply.expect_status(200);
        assert_eq!(csv_reply.header("content-type"), Some("text/csv; charset=utf-8"));
        let text = String::from_utf8(csv_reply.bytes.clone()).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 1 + 5 + 1, "{text}");
        assert!(rows[0].starts_with("side,statement_id,line_id,booking_date"));
        assert!(rows[1].contains(",125.00,USD,credit,matched,") && rows[1].contains(&deposit), "{}", rows[1]);
        assert!(rows[5].contains("'=cmd"), "a formula in bank text is defused: {}", rows[5]);
        assert!(rows[6].starts_with("ledger,") && rows[6].contains(&stray) && rows[6].contains(",99.99,"), "{}", rows[6]);
        let by_query = app.get(&format!("/v1/reconciliation/reports/{day}?format=csv")).await;
        assert_eq!(by_query.bytes, csv_reply.bytes);
        let per_statement = app.get(&format!("/v1/reconciliation/statements/{statement}/report")).await;
        per_statement.expect_status(200);
        assert_eq!(per_statement.body["lines"].as_array().map(Vec::len), Some(5));
    }
}

ledger_test! {
    async fn malformed_statements_are_refused_with_their_position_and_change_nothing(app) {
        let bank = app.account("debit", None).await;
        let mt940 = ":20:STMT\n:25:123\n:28C:1/1\n:60F:C260101USD100,00\n:61:2601020102C5,00NTRFREF1\n:62F:C260102USD106,00\n";
        let reply = app.post("/v1/reconciliation/statements", &json!({"format": "mt940", "content": mt940, "ledger_account_id": bank})).await;
        reply.expect_error(422, "statement_invalid");
        assert_eq!(reply.param(), Some("line 6"));
        assert!(reply.body["error"]["message"].as_str().unwrap().contains("106.00"), "{}", reply.body);
        let camt = "<Document><BkToCstmrStmt><Stmt><Acct><Id><IBAN>X</IBAN></Id></Acct><Ntry><Amt Ccy=\"USD\">1.234</Amt></Ntry></Stmt></BkToCstmrStmt></Document>";
        let reply = app.post("/v1/reconciliation/statements", &json!({"format": "camt.053", "content": camt, "ledger_account_id": bank})).await;
        reply.expect_error(422, "statement_invalid");
        assert!(reply.param().unwrap().starts_with("element /Document[1]/BkToCstmrStmt[1]/Stmt[1]/Ntry[1]"), "{}", reply.body);
        let reply = app.post("/v1/reconciliation/statements", &json!({"format": "bai2", "content": "\u{1}garbage", "ledger_account_id": bank})).await;
        reply.expect_error(422, "statement_invalid");
        // No request string may hold a NUL (PostgreSQL's text cannot): refused before parsing.
        let reply = app.post("/v1/reconciliation/statements", &json!({"format": "bai2", "content": "\u{0}garbage", "ledger_account_id": bank})).await;
        reply.expect_error(400, "invalid_request");
        assert_eq!(reply.param(), Some("content"));
        app.post("/v1/reconciliation/statements", &json!({"format": "ofx", "content": "x", "ledger_account_id": bank})).await.expect_error(400, "invalid_request");
        let fixed = mt940.replace("106,00", "105,00");
        app.post("/v1/reconciliation/statements", &json!({"format": "mt940", "content": fixed, "ledger_account_id": "acct_01jdx3q5g3n3n5v8y2w4h6k9m1"})).await.expect_error(422, "account_not_found");
        assert!(app.list_all("/v1/reconciliation/statements").await.is_empty());
        // The reconciliation scopes are their own.
        let ledger_only = app.with_key(Some(&app.key("acme", Environment::Sandbox, &[Scope::LedgerRead, Scope::LedgerWrite]).await));
        ledger_only.post("/v1/reconciliation/statements", &json!({"format": "mt940", "content": fixed, "ledger_account_id": bank})).await.expect_error(403, "insufficient_scope");
        ledger_only.get("/v1/reconciliation/statements").await.expect_error(403, "insufficient_scope");
        let ok = app.post("/v1/reconciliation/statements", &json!({"format": "mt940", "content": fixed, "ledger_account_id": bank})).await;
        ok.expect_status(201);
        assert_eq!(ok.body["lines"]["unmatched"], 1);
    }
}
