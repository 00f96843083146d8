//! The operator side of API versions, through the real binary: new
//! organizations start on the newest version, `settle orgs` moves pins,
//! `settle deprecations report` shows uses stored by a graceful stop, and
//! `settle versions changelog` prints the committed changelog.

use crate::harness::{PgDatabase, Server, cli, db_args};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const OLD: &str = "2026-11-25";
const NEW: &str = "2026-11-30";

fn run(command: &[&str], data_dir: &Path, database_url: Option<&str>) -> std::process::Output {
    cli(&[command.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), db_args(data_dir, database_url)].concat())
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "command failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// (Settle-Version, Deprecation) of `GET /v1/accounts`, optionally naming a version.
async fn served(url: &str, secret: &str, version: Option<&str>) -> (String, Option<String>) {
    let mut request = crate::tls_client().get(format!("{url}/v1/accounts")).bearer_auth(secret);
    if let Some(v) = version {
        request = request.header("Settle-Version", v);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    (header("settle-version").unwrap(), header("deprecation"))
}

async fn new_organizations_start_on_the_newest_version_and_operators_move_pins(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), database_url).await;
    let listed = stdout(&run(&["orgs", "list"], dir.path(), database_url));
    assert_eq!(listed.trim(), format!("default\t{NEW}"), "the first-start organization is on the newest version");
    let sandbox = std::fs::read_to_string(dir.path().join("sandbox.key")).unwrap().trim().to_owned();
    assert_eq!(served(&server.url, &sandbox, None).await, (NEW.to_owned(), None));

    let (_, secret) = server.key("acme", &[]);
    let lines: Vec<Value> = stdout(&run(&["orgs", "list", "--json"], dir.path(), database_url)).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let acme = lines.iter().find(|o| o["name"] == "acme").unwrap();
    assert_eq!(acme["api_version"], NEW, "keys create pins a new organization to the newest version");
    assert_eq!(served(&server.url, &secret, None).await, (NEW.to_owned(), None));

    let moved = stdout(&run(&["orgs", "set-version", "--org", "acme", OLD], dir.path(), database_url));
    assert!(moved.contains(OLD), "{moved}");
    let started = Instant::now();
    loop {
        let (version, deprecation) = served(&server.url, &secret, None).await;
        if version == OLD {
            assert_eq!(deprecation.as_deref(), Some("@1795996800"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "the moved pin did not apply within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second key for an existing organization keeps the organization's pin.
    let (_, second) = server.key("acme", &[]);
    assert_eq!(served(&server.url, &second, None).await.0, OLD);
}

async fn operators_cannot_pin_unknown_versions_or_organizations(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::start(dir.path(), database_url).await;
    for bad in ["2026-11-26", "latest", "2026-02-30"] {
        let out = run(&["orgs", "set-version", "--org", "default", bad], dir.path(), database_url);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains(NEW), "the refusal lists the known versions");
    }
    let out = run(&["orgs", "set-version", "--org", "nope", OLD], dir.path(), database_url);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no organization"));
    assert_eq!(stdout(&run(&["orgs", "list"], dir.path(), database_url)).trim(), format!("default\t{NEW}"), "nothing changed");
}

async fn deprecated_uses_are_stored_on_a_graceful_stop_and_reported(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // An hour between periodic flushes: only the stop can have stored the counts.
    let mut server = Server::start_with_args(dir.path(), database_url, &["--deprecation-flush-secs", "3600"]).await;
    let (acme_key, acme) = server.key("acme", &[]);
    let sandbox = std::fs::read_to_string(dir.path().join("sandbox.key")).unwrap().trim().to_owned();
    assert_eq!(served(&server.url, &acme, Some(OLD)).await.1.as_deref(), Some("@1795996800"));
    served(&server.url, &acme, Some(OLD)).await;
    served(&server.url, &acme, Some(NEW)).await;
    served(&server.url, &sandbox, None).await;
    assert_eq!(stdout(&run(&["deprecations", "report"], dir.path(), database_url)).trim(), "no deprecated API use recorded");
    assert!(server.terminate().success(), "SIGTERM must exit 0");

    let report: Vec<Value> =
        stdout(&run(&["deprecations", "report", "--json"], dir.path(), database_url)).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(report.len(), 1, "{report:?}");
    let line = &report[0];
    assert_eq!(
        (line["org"].as_str(), line["key_id"].as_str(), line["deprecated"].as_str(), line["count"].as_i64()),
        (Some("acme"), Some(acme_key.as_str()), Some("version 2026-11-25"), Some(2))
    );
    assert_eq!(line["environment"], "sandbox");
    assert!(line["last_seen_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let text = stdout(&run(&["deprecations", "report"], dir.path(), database_url));
    assert!(text.contains("acme") && text.contains(&acme_key) && text.contains("version 2026-11-25\t2"), "{text}");
    assert!(!text.contains(&acme), "no secret in the report");
}

#[tokio::test]
async fn new_organizations_start_on_the_newest_version_and_operators_move_pins_sqlite() {
    new_organizations_start_on_the_newest_version_and_operators_move_pins(None).await;
}

#[tokio::test]
async fn new_organizations_start_on_the_newest_version_and_operators_move_pins_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    new_organizations_start_on_the_newest_version_and_operators_move_pins(Some(&db.url)).await;
}

#[tokio::test]
async fn operators_cannot_pin_unknown_versions_or_organizations_sqlite() {
    operators_cannot_pin_unknown_versions_or_organizations(None).await;
}

#[tokio::test]
async fn operators_cannot_pin_unknown_versions_or_organizations_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    operators_cannot_pin_unknown_versions_or_organizations(Some(&db.url)).await;
}

#[tokio::test]
async fn deprecated_uses_are_stored_on_a_graceful_stop_and_reported_sqlite() {
    deprecated_uses_are_stored_on_a_graceful_stop_and_reported(None).await;
}

#[tokio::test]
async fn deprecated_uses_are_stored_on_a_graceful_stop_and_reported_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    deprecated_uses_are_stored_on_a_graceful_stop_and_reported(Some(&db.url)).await;
}

#[test]
fn versions_changelog_prints_the_committed_changelog() {
    let out = cli(&[String::from("versions"), String::from("changelog")]);
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api-changelog.md")).unwrap();
    assert!(stdout(&out) == committed, "docs/api-changelog.md is stale: regenerate it with `settle versions changelog > docs/api-changelog.md`");
}
