//! Sandbox faults on the ACH rail (`target: "rails"`, docs/sandbox.md): a
//! simulated bank that refuses files, repeats its notifications or delivers
//! them out of order, and the proof that nothing is lost or doubled in the
//! payments or the ledger; and the rail's metrics moving with it.

use crate::ach::{cut, file_content, notification_of_change, pay, payment, secs_until_next_banking_day_at, setup, statuses};
use crate::app::{Api, ledger_test};
use crate::faults::{clear_faults, sample, scrape, set_fault};
use serde_json::{Value, json};
use settle_ach::nacha;

const RETURN_FILES: &str = "/v1/ach/return_files";

fn id(p: &Value) -> String {
    p["id"].as_str().unwrap().to_owned()
}

async fn files(api: &Api) -> Vec<Value> {
    api.list_all("/v1/ach/files").await
}

async fn import(api: &Api, file: String) -> Value {
    let reply = api.send(api.request(reqwest::Method::POST, RETURN_FILES).body(file)).await;
    reply.expect_status(201);
    reply.body
}

fn outcomes(file: &Value) -> Vec<(String, String)> {
    file["results"].as_array().unwrap().iter().map(|r| (r["payment_id"].as_str().unwrap_or("").to_owned(), r["outcome"].as_str().unwrap().to_owned())).collect()
}

/// The count of `to` in the payment's history.
fn times(p: &Value, to: &str) -> usize {
    statuses(p).iter().filter(|s| *s == to).count()
}

ledger_test! {
    async fn a_file_the_bank_refuses_is_cut_once_when_it_accepts_again_and_no_money_moves_twice(app) {
        let (wallet, bank) = setup(&app, 100_000).await;
        let credit = pay(&app, "credit", 10_000, &wallet, &bank).await;
        let debit = pay(&app, "debit", 5_000, &wallet, &bank).await;
        let before = app.balances(&wallet).await;
        assert_eq!((before.posted, before.available), (100_000, 90_000));

        // The bank does not answer: the sandbox cut says so, and nothing is cut.
        set_fault(&app, json!({"target": "rails", "mode": "timeout"})).await;
        let reply = app.post("/v1/test_helpers/ach/cut", &json!({})).await;
        reply.expect_error(409, "ach_transmission_failed");
        assert!(reply.body["error"]["message"].as_str().unwrap().contains("timeout"));
        clear_faults(&app).await;

        // The bank refuses files: the scheduler tries its window every round and cuts nothing.
        set_fault(&app, json!({"target": "rails", "mode": "fail"})).await;
        app.post("/v1/test_helpers/ach/cut", &json!({})).await.expect_error(409, "ach_transmission_failed");
        app.clock.advance_secs(secs_until_next_banking_day_at(&app, 10, 31));
        for _ in 0..2 {
            assert_eq!(settle_api::ach::files::tick(&app.state).await.unwrap(), 0, "no file while the bank refuses");
        }
        assert!(files(&app).await.is_empty(), "a refused file is not recorded");
        for p in [&credit, &debit] {
            let now = payment(&app, &id(p)).await;
            assert_eq!(now["status"], "pending");
            assert_eq!(statuses(&now), statuses(p), "a refused file moves no payment");
        }
        let during = app.balances(&wallet).await;
        assert_eq!((during.posted, during.available), (100_000, 90_000), "a refused file moves no money");

        // The bank accepts again: the same window is cut once, with every payment once.
        clear_faults(&app).await;
        assert_eq!(settle_api::ach::files::tick(&app.state).await.unwrap(), 1);
        assert_eq!(settle_api::ach::files::tick(&app.state).await.unwrap(), 0, "the window is cut once");
        let cut_files = files(&app).await;
        assert_eq!(cut_files.len(), 1);
        assert_eq!(cut_files[0]["entry_count"], 2);
        let mut carried: Vec<String> = cut_files[0]["payment_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        carried.sort();
        let mut expected = vec![id(&credit), id(&debit)];
        expected.sort();
        assert_eq!(carried, expected);
        let parsed = nacha::parse(&file_content(&app, cut_files[0]["id"].as_str().unwrap()).await).unwrap();
        assert_eq!(parsed.entries().count(), 2);
        for p in [&credit, &debit] {
            let now = payment(&app, &id(p)).await;
            assert_eq!((now["status"].as_str(), times(&now, "submitted")), (Some("submitted"), 1));
        }
        let after = app.balances(&wallet).await;
        assert_eq!((after.posted, after.available), (90_000, 90_000), "the credit's hold is posted once");

        let text = scrape(&app).await;
        assert!(sample(&text, r#"settle_faults_injected_total{target="rails",mode="timeout"}"#).is_some_and(|v| v >= 1.0), "{text}");
        assert!(sample(&text, r#"settle_faults_injected_total{target="rails",mode="fail"}"#).is_some_and(|v| v >= 3.0), "{text}");
        assert_eq!(sample(&text, r#"settle_ach_files_cut_total{kind="scheduled"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"settle_ach_files_cut_total{kind="sandbox"}"#), None, "refused sandbox cuts are not counted");
        assert_eq!(sample(&text, r#"settle_ach_entries_written_total{entry="credit"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"settle_ach_entries_written_total{entry="debit"}"#), Some(1.0));
    }
}

ledger_test! {
    async fn notifications_delivered_twice_and_out_of_order_change_each_payment_once(app) {
        let (wallet, bank) = setup(&app, 100_000).await;
        let first = id(&pay(&app, "credit", 1_000, &wallet, &bank).await);
        let second = id(&pay(&app, "credit", 2_000, &wallet, &bank).await);
        let third = id(&pay(&app, "credit", 4_000, &wallet, &bank).await);
        let debit = id(&pay(&app, "debit", 3_000, &wallet, &bank).await);
        let cut_files = cut(&app).await;
        assert_eq!(cut_files.len(), 1);
        let original = nacha::parse(&file_content(&app, cut_files[0]["id"].as_str().unwrap()).await).unwrap();
        assert_eq!(app.balances(&wallet).await.posted, 93_000);
        let trace = |p: &str| {
            let api = app.api.clone();
            let p = p.to_owned();
            async move { payment(&api, &p).await["trace_number"].as_str().unwrap().to_owned() }
        };
        let returned_traces = [trace(&first).await, trace(&second).await];
        let debit_trace = trace(&debit).await;

        set_fault(&app, json!({"target": "rails", "mode": "duplicate"})).await;
        set_fault(&app, json!({"target": "rails", "mode": "reorder"})).await;

        // Returns of the first two credits: applied last first, each twice; the second delivery changes nothing.
        let mut returns = original.clone();
        for batch in &mut returns.batches {
            batch.entries.retain(|e| returned_traces.contains(&e.trace_number));
        }
        returns.batches.retain(|b| !b.entries.is_empty());
        returns.refresh_controls().unwrap();
        let imported = import(&app, returns.returned_with("R01").unwrap().write()).await;
        let applied = outcomes(&imported);
        let in_file_order: Vec<String> = returns
            .entries()
            .map(|(_, e)| e.trace_number.clone())
            .map(|t| if t == returned_traces[0] { first.clone() } else { second.clone() })
            .collect();
        let (last, earlier) = (in_file_order[1].clone(), in_file_order[0].clone());
        let expected: Vec<(String, String)> = [(&last, "returned"), (&last, "duplicate"), (&earlier, "returned"), (&earlier, "duplicate")]
            .into_iter()
            .map(|(p, o)| (p.clone(), o.to_owned()))
            .collect();
        assert_eq!(applied, expected, "last entry first, each delivered twice");
        for p in [&first, &second] {
            let now = payment(&app, p).await;
            assert_eq!((now["status"].as_str(), times(&now, "returned")), (Some("returned"), 1));
            assert!(now["reversal_transaction_id"].is_string());
        }
        assert_eq!(app.balances(&wallet).await.posted, 96_000, "each returned credit comes back once");

        // A notification of change delivered twice is recorded once.
        let noc = notification_of_change(original.clone(), Some(&debit_trace), "C01", "99887766");
        let changed = import(&app, noc).await;
        assert_eq!(outcomes(&changed), vec![(debit.clone(), String::from("changed")), (debit.clone(), String::from("duplicate"))]);
        let cp = app.get(&format!("/v1/counterparties/{}", payment(&app, &debit).await["counterparty_id"].as_str().unwrap())).await;
        assert_eq!(cp.body["bank_accounts"][0]["notifications_of_change"].as_array().unwrap().len(), 1);

        // The debit's settlement reported twice (sandbox helper): settled once, its money posted once.
        let settled = app.post(&format!("/v1/test_helpers/payments/{debit}/settle"), &json!({})).await;
        settled.expect_status(200);
        let now = payment(&app, &debit).await;
        assert_eq!((now["status"].as_str(), times(&now, "settled")), (Some("settled"), 1));
        assert_eq!(app.balances(&wallet).await.posted, 99_000);

        // A sandbox return delivered twice: returned once, reversed once.
        let reply = app.post(&format!("/v1/test_helpers/payments/{debit}/return"), &json!({"code": "R01"})).await;
        reply.expect_status(200);
        let now = payment(&app, &debit).await;
        assert_eq!((now["status"].as_str(), times(&now, "returned")), (Some("returned"), 1));
        assert_eq!(app.balances(&wallet).await.posted, 96_000, "the debit is taken back once");

        // The scheduler's settlements, reordered and doubled: the third credit settles once.
        app.clock.advance_secs(secs_until_next_banking_day_at(&app, 18, 5));
        app.clock.advance_secs(secs_until_next_banking_day_at(&app, 18, 5));
        settle_api::ach::files::tick(&app.state).await.unwrap();
        let now = payment(&app, &third).await;
        assert_eq!((now["status"].as_str(), times(&now, "settled")), (Some("settled"), 1));
        for p in [&first, &second, &debit] {
            assert_eq!(payment(&app, p).await["status"], "returned", "a returned payment never settles");
        }
        let end = app.balances(&wallet).await;
        assert_eq!((end.posted, end.available), (96_000, 96_000), "money out: only the third credit");

        // Every event of every payment once: one per history step.
        for p in [&first, &second, &third, &debit] {
            let events = app.list_all(&format!("/v1/events?object_id={p}")).await;
            assert_eq!(events.len(), statuses(&payment(&app, p).await).len(), "{p}: {events:?}");
        }

        let text = scrape(&app).await;
        assert!(sample(&text, r#"settle_faults_injected_total{target="rails",mode="duplicate"}"#).is_some_and(|v| v >= 4.0), "{text}");
        assert!(sample(&text, r#"settle_faults_injected_total{target="rails",mode="reorder"}"#).is_some_and(|v| v >= 2.0), "{text}");
        assert_eq!(sample(&text, r#"settle_ach_returns_total{family="other",code="R01"}"#), Some(3.0), "duplicates are not returns");
        assert_eq!(sample(&text, r#"settle_ach_notifications_of_change_total{code="C01"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"settle_ach_return_files_total{outcome="imported"}"#), Some(2.0));
    }
}

ledger_test! {
    async fn return_file_metrics_count_imports_replays_rejections_and_untimely_returns(app) {
        let (wallet, bank) = setup(&app, 50_000).await;
        let p = id(&pay(&app, "credit", 1_000, &wallet, &bank).await);
        let cut_files = cut(&app).await;
        let content = file_content(&app, cut_files[0]["id"].as_str().unwrap()).await;
        // Malformed, then refused before parsing: rejected, nothing applied.
        app.send(app.request(reqwest::Method::POST, RETURN_FILES).body(content.replacen("\n6", "\n7", 1))).await.expect_error(422, "ach_file_invalid");
        app.send(app.request(reqwest::Method::POST, RETURN_FILES).body(vec![0xff_u8, 0xfe])).await.expect_error(422, "ach_file_invalid");
        assert_eq!(payment(&app, &p).await["status"], "submitted");
        // Settled long ago: an R01 is untimely, dishonored once, then late.
        app.post(&format!("/v1/test_helpers/payments/{p}/settle"), &json!({})).await.expect_status(200);
        app.clock.advance_secs(10 * 86_400);
        let late = nacha::parse(&content).unwrap().returned_with("R01").unwrap();
        let first = import(&app, late.write()).await;
        assert_eq!(outcomes(&first), vec![(p.clone(), String::from("dishonored"))]);
        let replay = app.send(app.request(reqwest::Method::POST, RETURN_FILES).body(late.write())).await;
        replay.expect_status(200);
        // The same return in another file (another modifier): late, the dishonor is recorded already.
        let mut again = late.clone();
        again.header.file_id_modifier = 'Z';
        assert_eq!(outcomes(&import(&app, again.write()).await), vec![(p.clone(), String::from("late"))]);
        assert_eq!(payment(&app, &p).await["status"], "settled", "an untimely return changes nothing");

        let text = scrape(&app).await;
        assert_eq!(sample(&text, r#"settle_ach_return_files_total{outcome="rejected"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"settle_ach_return_files_total{outcome="replayed"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"settle_ach_return_files_total{outcome="imported"}"#), Some(2.0));
        assert_eq!(sample(&text, r#"settle_ach_untimely_returns_total{outcome="dishonored"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"settle_ach_untimely_returns_total{outcome="late"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"settle_ach_returns_total{family="other",code="R01"}"#), None, "no return was applied");
        assert_eq!(sample(&text, r#"settle_ach_files_cut_total{kind="sandbox"}"#), Some(1.0));
    }
}

ledger_test! {
    async fn a_test_clocks_window_the_bank_refuses_is_skipped_and_its_payment_goes_in_the_next_window(app) {
        // Monday 2027-03-01, 09:00 New York: before the 10:30 window.
        let clock = app.post("/v1/test_helpers/test_clocks", &json!({"frozen_time": "2027-03-01T14:00:00Z"})).await.id();
        let (wallet, bank) = setup(&app, 10_000).await;
        let mut body = json!({"rail": "ach", "direction": "credit", "amount": 2_500, "currency": "USD", "ledger_account_id": wallet,
            "counterparty_bank_account_id": bank, "sec_code": "PPD", "company_entry_description": "PAYROLL"});
        body["test_clock"] = json!(clock);
        let created = app.post("/v1/payments", &body).await;
        created.expect_status(201);
        let p = id(&created.body);

        set_fault(&app, json!({"target": "rails", "mode": "fail"})).await;
        // Past the 10:30 window: the advance succeeds, the window's file is refused, the payment waits.
        let path = format!("/v1/test_helpers/test_clocks/{clock}/advance");
        app.post(&path, &json!({"to": "2027-03-01T15:45:00Z"})).await.expect_status(200);
        assert_eq!(payment(&app, &p).await["status"], "pending");
        assert!(files(&app).await.is_empty());
        assert_eq!(app.balances(&wallet).await.posted, 10_000);

        // The bank accepts again: the 14:45 window carries it, once.
        clear_faults(&app).await;
        app.post(&path, &json!({"to": "2027-03-01T20:00:00Z"})).await.expect_status(200);
        let now = payment(&app, &p).await;
        assert_eq!((now["status"].as_str(), times(&now, "submitted")), (Some("submitted"), 1));
        let cut_files = files(&app).await;
        assert_eq!(cut_files.len(), 1);
        assert_eq!(cut_files[0]["payment_ids"], json!([p]));
        assert!(cut_files[0]["window"].as_str().unwrap().ends_with("T14:45"), "{}", cut_files[0]["window"]);
        assert_eq!(app.balances(&wallet).await.posted, 7_500, "the hold is posted once");
        let text = scrape(&app).await;
        assert_eq!(sample(&text, r#"settle_ach_files_cut_total{kind="test_clock"}"#), Some(1.0));
    }
}
