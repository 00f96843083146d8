//! `settle audit verify` covers both trails; `settle audit export` writes
//! them out for an auditor, with no personal data.

use crate::harness::{Api, PgDatabase, Server, cli, db_args};
use serde_json::{Value, json};
use std::path::Path;

fn audit(args: &[&str], dir: &Path, database_url: Option<&str>) -> std::process::Output {
    let mut all: Vec<String> = vec![String::from("audit")];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.extend(db_args(dir, database_url));
    cli(&all)
}

async fn both_trails_verify_and_export(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), database_url).await;
    let (key_id, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    let (a, b) = (api.account("debit", None).await, api.account("credit", None).await);
    assert_eq!(api.post("/v1/transactions", Api::transfer_body(&a, &b, 1234)).await.0, 201);
    let (status, customer) = api.post("/v1/customers", json!({"type": "individual", "given_name": "Quixotefield", "family_name": "Zamorsky"})).await;
    assert_eq!(status, 201, "{customer}");
    let id = customer["id"].as_str().unwrap().to_owned();
    let (status, _) = api.call(reqwest::Method::PATCH, &format!("/v1/customers/{id}"), Some(json!({"family_name": "Zamorsky-Vale"}))).await.unwrap();
    assert_eq!(status, 200);
    assert!(server.terminate().success());

    let clean = audit(&["verify"], dir.path(), database_url);
    let out = String::from_utf8_lossy(&clean.stdout).into_owned();
    assert!(clean.status.success(), "{out}");
    assert!(out.contains("1 compliance audit chains verified"), "{out}");

    let file = dir.path().join("export.jsonl");
    let exported = audit(&["export", "--from", "2000-01-01", "--output", file.to_str().unwrap()], dir.path(), database_url);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ledger: Vec<&Value> = lines.iter().filter(|l| l["trail"] == "ledger_log").collect();
    let compliance: Vec<&Value> = lines.iter().filter(|l| l["trail"] == "compliance_audit").collect();
    assert!(ledger.len() >= 3, "two accounts and a transaction: {text}");
    assert!(ledger.windows(2).all(|w| w[1]["previous_hash"] == w[0]["hash"]), "the ledger records chain in order");
    assert!(text.contains("1234"), "the transaction's amount is in its log record");
    // Every ledger change names who asked and from where.
    let contexts: Vec<&Value> = ledger.iter().filter_map(|l| l["record"].as_array()?.iter().find(|f| f["op"] == "context")).collect();
    assert_eq!(contexts.len(), 3, "{text}");
    assert!(contexts.iter().all(|c| c["actor"] == key_id.as_str() && c["client_ip"] == "127.0.0.1"), "{contexts:?}");
    assert_eq!(compliance[0]["action"], "customer.created");
    assert_eq!((compliance[0]["organization"].as_str(), compliance[0]["resource_id"].as_str()), (Some("acme"), Some(id.as_str())));
    assert!(compliance.windows(2).all(|w| w[1]["previous_hash"] == w[0]["hash"]));
    assert_eq!(compliance[0]["client_ip"], "127.0.0.1");
    assert!(!text.contains("Quixotefield") && !text.contains("Zamorsky"), "no personal data in the export");

    // A period with nothing in it exports nothing; a bad date is refused.
    let empty = audit(&["export", "--from", "2000-01-01", "--to", "2000-01-02"], dir.path(), database_url);
    assert!(empty.status.success() && empty.stdout.is_empty());
    let bad = audit(&["export", "--from", "yesterday"], dir.path(), database_url);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test]
async fn audit_verify_and_export_cover_the_ledger_log_and_the_compliance_chains_on_sqlite() {
    both_trails_verify_and_export(None).await;
}

#[tokio::test]
async fn audit_verify_and_export_cover_the_ledger_log_and_the_compliance_chains_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    both_trails_verify_and_export(Some(&db.url)).await;
}

#[tokio::test]
async fn audit_verify_names_a_tampered_compliance_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let (_, secret) = server.key("acme", &[]);
    let api = Api::new(&server.url, &secret);
    for name in ["Ada", "Grace"] {
        assert_eq!(api.post("/v1/customers", json!({"type": "individual", "given_name": name, "family_name": "Lovelace"})).await.0, 201);
    }
    assert!(server.terminate().success());
    assert!(audit(&["verify"], dir.path(), None).status.success());
    let db = rusqlite::Connection::open(dir.path().join("settle.sqlite3")).unwrap();
    let refused = db.execute("UPDATE compliance_audit_events SET actor = 'someone_else' WHERE seq = 1", []);
    assert!(refused.unwrap_err().to_string().contains("append-only"), "a trigger keeps the trail append-only");
    db.execute_batch("DROP TRIGGER compliance_audit_events_no_update").unwrap();
    db.execute("UPDATE compliance_audit_events SET actor = 'someone_else' WHERE seq = 1", []).unwrap();
    let tampered = audit(&["verify"], dir.path(), None);
    assert_eq!(tampered.status.code(), Some(1));
    let out = String::from_utf8_lossy(&tampered.stdout);
    assert!(out.contains("compliance audit of acme (sandbox): record 1"), "{out}");
}
