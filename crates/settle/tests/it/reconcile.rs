//! `settle reconcile ledger`: a counter corrupted on purpose is found, named
//! and repaired while the server keeps serving; entries are never touched.

use crate::harness::{Api, PgDatabase, Server, cli, db_args};
use serde_json::Value;
use settle_store::sqlite::account_changes;
use std::path::Path;

/// Runs a SQL statement against the server's database, behind its back.
async fn tamper(data_dir: &Path, database_url: Option<&str>, sql: &str, account: &str) {
    match database_url {
        None => {
            // A running server's current counters are the row's overlaid with
            // the account stream: tamper with that state, and record it as a
            // stream entry the way the engine would.
            let mut db = rusqlite::Connection::open(data_dir.join("settle.sqlite3")).unwrap();
            db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
            let current = account_changes::current(&tx, account).unwrap().unwrap();
            let c = &current.counters;
            tx.execute(
                "UPDATE accounts SET posted_debits = ?2, posted_credits = ?3, pending_debits = ?4, pending_credits = ?5 WHERE id = ?1",
                rusqlite::params![account, c.posted_debits, c.posted_credits, c.pending_debits, c.pending_credits],
            )
            .unwrap();
            assert_eq!(tx.execute(sql, [account]).unwrap(), 1);
            let mut tampered = current.clone();
            tx.query_row("SELECT posted_debits, posted_credits, pending_debits, pending_credits FROM accounts WHERE id = ?1", [account], |r| {
                tampered.counters = settle_core::ledger::Counters {
                    posted_debits: r.get(0)?,
                    posted_credits: r.get(1)?,
                    pending_debits: r.get(2)?,
                    pending_credits: r.get(3)?,
                };
                Ok(())
            })
            .unwrap();
            account_changes::append(&tx, &[(account, &tampered)]).unwrap();
            tx.commit().unwrap();
        }
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            assert_eq!(client.execute(&sql.replace("?1", "$1"), &[&account]).await.unwrap(), 1);
        }
    }
}

fn reconcile(data_dir: &Path, database_url: Option<&str>, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![String::from("reconcile"), String::from("ledger")];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = cli(&[args, db_args(data_dir, database_url)].concat());
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn corrupted_counter_is_found_and_repaired(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), database_url).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (a, b) = (api.account("debit", None).await, api.account("credit", None).await);
    for amount in [100, 200] {
        assert_eq!(api.post("/v1/transactions", Api::transfer_body(&a, &b, amount)).await.0, 201);
    }
    let mut hold = Api::transfer_body(&a, &b, 50);
    hold["status"] = serde_json::json!("pending");
    assert_eq!(api.post("/v1/transactions", hold).await.0, 201);
    let (code, out) = reconcile(dir.path(), database_url, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 accounts") || out.contains("2 accounts"), "{out}");
    assert!(out.contains(": 0 drifted"), "{out}");

    // A derived counter goes wrong; the entries stay right.
    tamper(dir.path(), database_url, "UPDATE accounts SET posted_credits = posted_credits + 7, pending_credits = 0 WHERE id = ?1", &b).await;
    let (code, out) = reconcile(dir.path(), database_url, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("drift {b}")), "names the drifted account: {out}");
    assert!(out.contains("posted_credits 307 -> 300") && out.contains("pending_credits 0 -> 50"), "{out}");
    assert!(!out.contains(&format!("drift {a}")), "{out}");
    let (code, out) = reconcile(dir.path(), database_url, &["--json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["drifts"].as_array().unwrap().len(), 1);
    assert_eq!(report["drifts"][0]["account"], b.as_str());
    assert_eq!(report["drifts"][0]["stored"]["posted_credits"], 307);
    assert_eq!(report["drifts"][0]["expected"]["posted_credits"], 300);

    // Repaired while the server runs: through an engine, under the account's lock.
    let (_, before) = api.get(&format!("/v1/accounts/{b}")).await;
    let (code, out) = reconcile(dir.path(), database_url, &["--repair"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("repaired {b}: posted_credits 307 -> 300, pending_credits 0 -> 50")), "{out}");
    let (status, after) = api.get(&format!("/v1/accounts/{b}")).await;
    assert_eq!(status, 200);
    assert_eq!(after["balances"]["posted"], 300);
    assert_eq!(after["balances"]["pending"], 350);
    assert_eq!(after["lock_version"].as_i64().unwrap(), before["lock_version"].as_i64().unwrap() + 1, "a repair is a change of the account");
    let (code, out) = reconcile(dir.path(), database_url, &[]);
    assert_eq!((code, out.contains(": 0 drifted")), (Some(0), true), "{out}");

    // The server keeps writing to the repaired account, and the books still add up.
    assert_eq!(api.post("/v1/transactions", Api::transfer_body(&a, &b, 25)).await.0, 201);
    assert_eq!(api.posted(&b).await, 325);
    let (code, out) = reconcile(dir.path(), database_url, &["--repair"]);
    assert_eq!((code, out.contains(": 0 drifted")), (Some(0), true), "{out}");
    assert!(server.terminate().success());
    // The repair is in the tamper-evident log, which still verifies.
    let verify = cli(&[vec![String::from("audit"), String::from("verify")], db_args(dir.path(), database_url)].concat());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let repaired_in_log = match database_url {
        None => {
            let db = rusqlite::Connection::open(dir.path().join("settle.sqlite3")).unwrap();
            db.query_row("SELECT COUNT(*) FROM ledger_log WHERE CAST(content AS TEXT) LIKE '%counters_repaired%'", [], |r| r.get::<_, i64>(0)).unwrap()
        }
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let row = client.query_one("SELECT COUNT(*) FROM ledger_log WHERE convert_from(content, 'UTF8') LIKE '%counters_repaired%'", &[]).await.unwrap();
            row.get::<_, i64>(0)
        }
    };
    assert_eq!(repaired_in_log, 1);
}

#[tokio::test]
async fn corrupted_counter_is_found_and_repaired_on_sqlite() {
    corrupted_counter_is_found_and_repaired(None).await;
}

#[tokio::test]
async fn corrupted_counter_is_found_and_repaired_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    corrupted_counter_is_found_and_repaired(Some(&db.url)).await;
}

#[tokio::test]
async fn a_tampered_entry_is_reported_and_nothing_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (a, b) = (api.account("debit", None).await, api.account("credit", None).await);
    assert_eq!(api.post("/v1/transactions", Api::transfer_body(&a, &b, 100)).await.0, 201);
    assert!(server.terminate().success());
    let db = rusqlite::Connection::open(dir.path().join("settle.sqlite3")).unwrap();
    // b's leg (the credit, second in the transaction's stored legs) now says 150.
    db.execute_batch("DROP TRIGGER transactions_legs_append_only").unwrap();
    let changed = db.execute("UPDATE transactions SET legs = json_set(legs, '$[1][3]', 150) WHERE json_extract(legs, '$[1][1]') = ?1", [&b]).unwrap();
    assert_eq!(changed, 1);
    let (code, out) = reconcile(dir.path(), None, &["--repair"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("BROKEN") && out.contains("nothing was repaired"), "{out}");
    let credits: i64 = db.query_row("SELECT posted_credits FROM accounts WHERE id = ?1", [&b], |r| r.get(0)).unwrap();
    assert_eq!(credits, 100, "counters are left alone when the entries cannot be trusted");
}

#[tokio::test]
async fn the_scheduled_reconciliation_reports_drift_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_args(dir.path(), None, &["--reconcile-interval-secs", "1"]).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (a, b) = (api.account("debit", None).await, api.account("credit", None).await);
    assert_eq!(api.post("/v1/transactions", Api::transfer_body(&a, &b, 100)).await.0, 201);
    tamper(dir.path(), None, "UPDATE accounts SET posted_credits = posted_credits + 1 WHERE id = ?1", &b).await;
    let client = crate::tls_client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l == "settle_ledger_drifted_accounts 1") {
            assert!(text.lines().any(|l| l == "settle_ledger_log_broken 0"), "{text}");
            assert!(!text.lines().any(|l| l == "settle_ledger_reconciled_at_seconds 0"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the scheduled scan did not report the drift: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
