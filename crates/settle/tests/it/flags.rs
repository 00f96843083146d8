//! `settle flags`, through the real binary: only flags the code reads can be
//! set, only for organizations that exist, and clearing restores the default.

use crate::harness::{Server, cli, db_args};
use serde_json::Value;
use std::path::Path;

fn run(command: &[&str], data_dir: &Path) -> std::process::Output {
    cli(&[command.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), db_args(data_dir, None)].concat())
}

fn listed(data_dir: &Path) -> Value {
    let out = run(&["flags", "list", "--json"], data_dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.into_iter().find(|l| l["name"] == "ledger.async_large_batches").unwrap()
}

#[tokio::test]
async fn flags_are_set_for_known_organizations_and_cleared_back_to_their_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    server.key("acme", &[]);
    assert!(server.terminate().success());

    let flag = listed(dir.path());
    assert_eq!((flag["default"].as_bool(), flag["rollout"].is_null()), (Some(true), true), "{flag}");

    let unknown_flag = run(&["flags", "set", "ledger.no_such_flag", "--percent", "10"], dir.path());
    assert!(!unknown_flag.status.success());
    assert!(String::from_utf8_lossy(&unknown_flag.stderr).contains("ledger.async_large_batches"), "names the known flags");
    let unknown_org = run(&["flags", "set", "ledger.async_large_batches", "--orgs", "acme,nope", "--percent", "0"], dir.path());
    assert!(!unknown_org.status.success());
    assert!(listed(dir.path())["rollout"].is_null(), "a refused set changes nothing");
    let too_much = run(&["flags", "set", "ledger.async_large_batches", "--percent", "101"], dir.path());
    assert!(!too_much.status.success());

    let set = run(&["flags", "set", "ledger.async_large_batches", "--orgs", "acme", "--percent", "25"], dir.path());
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let flag = listed(dir.path());
    assert_eq!(flag["rollout"]["percent"], 25);
    assert_eq!(flag["rollout"]["orgs"], serde_json::json!(["acme"]), "shown by name");

    let cleared = run(&["flags", "clear", "ledger.async_large_batches"], dir.path());
    assert!(cleared.status.success());
    assert!(listed(dir.path())["rollout"].is_null());
}
