//! kill -9 under load, tamper detection, and servers sharing PostgreSQL.

use crate::harness::{Api, PgDatabase, Server, cli, db_args};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

async fn kill9_loses_no_acknowledged_write(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), database_url).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let source = api.account("debit", None).await;
    let mut sinks = Vec::new();
    for _ in 0..10 {
        sinks.push(api.account("credit", None).await);
    }
    let acked: Arc<Mutex<Vec<(String, usize, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8usize {
        let (api, source, sinks, acked, stop) = (api.clone(), source.clone(), sinks.clone(), Arc::clone(&acked), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sink = (w + n) % sinks.len();
                let amount = 1 + (n % 50) as i64;
                let mut body = crate::harness::Api::transfer_body(&source, &sinks[sink], amount);
                body["external_id"] = json!(format!("crash-{w}-{n}"));
                if let Ok((201, t)) = api.call(reqwest::Method::POST, "/v1/transactions", Some(body)).await {
                    acked.lock().await.push((t["id"].as_str().unwrap().to_owned(), sink, amount));
                }
            }
        }));
    }
    while acked.lock().await.len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    server.restart().await;
    let acked = acked.lock().await.clone();
    let mut want = vec![0i64; sinks.len()];
    for (id, sink, amount) in &acked {
        let (status, t) = api.get(&format!("/v1/transactions/{id}")).await;
        assert_eq!(status, 200, "acknowledged transaction {id} lost after kill -9");
        assert_eq!(t["status"], "posted");
        want[*sink] += amount;
    }
    let mut credited = 0;
    for (i, sink) in sinks.iter().enumerate() {
        let got = api.posted(sink).await;
        assert!(got >= want[i], "sink {i} lost acknowledged credits: {got} < {}", want[i]);
        credited += got;
    }
    assert_eq!(api.posted(&source).await, credited, "the books do not balance after the crash");
    let verify = cli(&[vec![String::from("audit"), String::from("verify")], db_args(dir.path(), database_url)].concat());
    assert!(verify.status.success(), "audit verify after crash: {}", String::from_utf8_lossy(&verify.stdout));
}

#[tokio::test]
async fn kill9_under_load_loses_no_acknowledged_write_on_sqlite() {
    kill9_loses_no_acknowledged_write(None).await;
}

#[tokio::test]
async fn kill9_under_load_loses_no_acknowledged_write_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    kill9_loses_no_acknowledged_write(Some(&db.url)).await;
}

#[tokio::test]
async fn audit_verify_names_the_first_tampered_entry_and_a_drifted_counter() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (a, b) = (api.account("debit", None).await, api.account("credit", None).await);
    for amount in [100, 200, 300] {
        assert_eq!(api.post("/v1/transactions", Api::transfer_body(&a, &b, amount)).await.0, 201);
    }
    assert!(server.terminate().success());
    let verify = || cli(&[vec![String::from("audit"), String::from("verify")], db_args(dir.path(), None)].concat());
    let clean = verify();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stdout));

    let db = rusqlite::Connection::open(dir.path().join("settle.sqlite3")).unwrap();
    // An entry is a leg stored in its transaction's row (`legs`, see the
    // SQLite store): its id is the transaction's ULID and the leg's suffix.
    let (middle, victim): (String, String) = db
        .query_row("SELECT id, 'ent_' || substr(id, 5) || json_extract(legs, '$[0][0]') FROM transactions WHERE json_extract(legs, '$[0][3]') = 200", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    db.execute_batch("DROP TRIGGER transactions_legs_append_only").unwrap();
    db.execute("UPDATE transactions SET legs = json_set(legs, '$[0][3]', 250) WHERE id = ?1", [&middle]).unwrap();
    let tampered = verify();
    assert_eq!(tampered.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&tampered.stdout).contains(&victim), "must name the tampered entry");

    db.execute("UPDATE transactions SET legs = json_set(legs, '$[0][3]', 200) WHERE id = ?1", [&middle]).unwrap();
    db.execute("UPDATE accounts SET posted_credits = posted_credits + 1 WHERE id = ?1", [&b]).unwrap();
    let drifted = verify();
    assert_eq!(drifted.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&drifted.stdout).contains(&b), "must name the drifted account");

    db.execute("UPDATE accounts SET posted_credits = posted_credits - 1 WHERE id = ?1", [&b]).unwrap();
    // The history chain is derived data too: a broken link is found and named.
    let chain: String = db.query_row("SELECT chain FROM transactions WHERE id = ?1", [&middle], |r| r.get(0)).unwrap();
    db.execute("UPDATE transactions SET chain = '{}' WHERE id = ?1", [&middle]).unwrap();
    let unlinked = verify();
    assert_eq!(unlinked.status.code(), Some(1));
    let out = String::from_utf8_lossy(&unlinked.stdout);
    assert!(out.contains("history chain") && (out.contains(&a) || out.contains(&b)), "{out}");
    db.execute("UPDATE transactions SET chain = ?2 WHERE id = ?1", [&middle, &chain]).unwrap();
    db.execute("UPDATE accounts SET history_length = history_length + 1 WHERE id = ?1", [&a]).unwrap();
    let miscounted = verify();
    assert_eq!(miscounted.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&miscounted.stdout).contains(&a), "{}", String::from_utf8_lossy(&miscounted.stdout));
    db.execute("UPDATE accounts SET history_length = history_length - 1 WHERE id = ?1", [&a]).unwrap();
    assert!(verify().status.success(), "clean again");

    db.execute_batch("DROP TRIGGER ledger_log_no_update").unwrap();
    db.execute("UPDATE ledger_log SET content = CAST(replace(CAST(content AS TEXT), '300', '301') AS BLOB) WHERE seq = (SELECT MAX(seq) FROM ledger_log)", [])
        .unwrap();
    let rewritten = verify();
    assert_eq!(rewritten.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rewritten.stdout).contains("ledger log record"), "{}", String::from_utf8_lossy(&rewritten.stdout));
}

#[tokio::test]
async fn two_servers_on_one_postgres_never_overdraw_a_shared_account() {
    let Some(db) = PgDatabase::create().await else { return };
    let dir1 = tempfile::tempdir().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let s1 = Server::start(dir1.path(), Some(&db.url)).await;
    let s2 = Server::start(dir2.path(), Some(&db.url)).await;
    let (_, secret) = s1.key("acme", &[]);
    let (api1, api2) = (Api::new(&s1.url, &secret), Api::new(&s2.url, &secret));
    let source = api1.account("debit", None).await;
    let wallet = api1.account("credit", Some(0)).await;
    let sink = api1.account("credit", None).await;
    assert_eq!(api1.post("/v1/transactions", Api::transfer_body(&source, &wallet, 500)).await.0, 201);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let api = if i % 2 == 0 { api1.clone() } else { api2.clone() };
        let (wallet, sink) = (wallet.clone(), sink.clone());
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..50 {
                let (status, body) = api.post("/v1/transactions", Api::transfer_body(&wallet, &sink, 1)).await;
                statuses.push((status, body["error"]["code"].as_str().unwrap_or("").to_owned()));
            }
            statuses
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        for (status, code) in t.await.unwrap() {
            match (status, code.as_str()) {
                (201, _) => ok += 1,
                (422, "insufficient_funds") => refused += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert_eq!((ok, refused), (500, 300));
    assert_eq!(api2.posted(&wallet).await, 0);
    assert_eq!(api1.posted(&sink).await, 500);
}
