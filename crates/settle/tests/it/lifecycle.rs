//! First start, keys, shutdown.

use crate::harness::{Api, Server, cli, db_args};
use std::time::{Duration, Instant};

#[tokio::test]
async fn first_start_writes_a_private_sandbox_key_that_never_appears_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let key_file = dir.path().join("sandbox.key");
    let secret = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();
    assert!(secret.starts_with("sk_sandbox_") && secret.len() >= "sk_sandbox_".len() + 22, "weak secret shape");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let api = Api::new(&server.url, &secret);
    let a = api.account("credit", Some(0)).await;
    assert_eq!(api.posted(&a).await, 0);
    assert!(server.terminate().success(), "SIGTERM must exit 0");
    let log = server.log_text();
    assert!(log.contains("sandbox.key"), "the log names the key file");
    assert!(!log.contains(&secret), "the secret leaked into the log");
    for line in log.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).expect("every log line is JSON");
    }
}

#[tokio::test]
async fn a_second_start_keeps_the_first_key_and_creates_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let first = std::fs::read_to_string(dir.path().join("sandbox.key")).unwrap();
    server.terminate();
    server.restart().await;
    assert_eq!(std::fs::read_to_string(dir.path().join("sandbox.key")).unwrap(), first);
    let out = cli(&[vec![String::from("keys"), String::from("list")], db_args(dir.path(), None)].concat());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second_and_scopes_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None).await;
    let (id, secret) = server.key("acme", &[]);
    let (_, read_only) = server.key("acme", &["ledger:read"]);
    let api = Api::new(&server.url, &secret);
    let a = api.account("credit", None).await;
    let ro = Api::new(&server.url, &read_only);
    assert_eq!(ro.get(&format!("/v1/accounts/{a}")).await.0, 200);
    let (status, body) = ro.post("/v1/accounts", serde_json::json!({"name": "x", "currency": "USD", "normal_balance": "debit"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("insufficient_scope")));

    let out = cli(&[vec![String::from("keys"), String::from("revoke"), id.clone()], db_args(dir.path(), None)].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked_at = Instant::now();
    loop {
        let (status, body) = api.get(&format!("/v1/accounts/{a}")).await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "invalid_api_key");
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_millis(1000), "revoked key still accepted after a second");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let listed = cli(&[vec![String::from("keys"), String::from("list"), String::from("--json")], db_args(dir.path(), None)].concat());
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(!text.contains(&secret), "keys list must never print secrets");
    assert!(text.lines().any(|l| l.contains(&id) && l.contains("revoked_at\":\"")));
}

#[tokio::test]
async fn operator_commands_refuse_bad_input_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let base = db_args(dir.path(), None);
    let bad_scope =
        cli(&[vec!["keys", "create", "--org", "x", "--environment", "sandbox", "--scope", "root"].into_iter().map(String::from).collect(), base.clone()]
            .concat());
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("unknown scope"));
    let bad_env = cli(&[vec!["keys", "create", "--org", "x", "--environment", "prod"].into_iter().map(String::from).collect(), base.clone()].concat());
    assert!(!bad_env.status.success());
    let bad_revoke = cli(&[vec![String::from("keys"), String::from("revoke"), String::from("nope")], base].concat());
    assert!(!bad_revoke.status.success());
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address_and_the_server_still_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = crate::harness::free_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let mut server = crate::harness::Server::start_with_args(dir.path(), None, &["--metrics-listen", &metrics_listen]).await;
    let client = crate::tls_client();
    let scraped = client.get(format!("http://{metrics_listen}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains("settle_engine_queue_depth"), "{text}");
    let on_api = client.get(format!("{}/metrics", server.url)).send().await.unwrap();
    assert_eq!(on_api.status(), 404, "with --metrics-listen, the API's address does not serve metrics");
    assert!(server.terminate().success(), "the metrics listener lets the engine drain and the process exit 0");
}

/// Each thread's name and nice value, from `/proc/<pid>/task/*/stat`.
#[cfg(target_os = "linux")]
fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // `pid (comm) state …`: the comm may hold spaces, so split at its parentheses.
        let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Field 19 of stat is the nice value; `fields` starts at field 3.
        out.push((stat[open + 1..close].to_owned(), fields[16].parse().unwrap()));
    }
    out
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn worker_nice_lowers_every_thread_but_the_engine_and_the_checkpointer_twice_as_much() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_args(dir.path(), None, &["--worker-nice", "3"]).await;
    let threads = thread_priorities(server.pid());
    let nice_of = |name: &str| threads.iter().filter(|(n, _)| n == name).map(|(_, nice)| *nice).collect::<Vec<_>>();
    let base = nice_of("settle-engine");
    assert_eq!(base.len(), 1, "{threads:?}");
    let base = base[0];
    assert_eq!(nice_of("settle-checkpoi"), vec![(base + 6).min(19)], "{threads:?}");
    let workers = nice_of("tokio-rt-worker");
    assert!(!workers.is_empty() && workers.iter().all(|n| *n == (base + 3).min(19)), "{threads:?}");
    assert!(server.terminate().success());

    // By default every thread keeps the priority the server started with.
    let other = tempfile::tempdir().unwrap();
    let mut server = Server::start(other.path(), None).await;
    let threads = thread_priorities(server.pid());
    assert!(threads.iter().all(|(_, nice)| *nice == threads[0].1), "{threads:?}");
    assert!(server.terminate().success());
}

#[test]
fn calendar_prints_the_feds_closures_and_nothing_else() {
    let out = cli(&[String::from("calendar"), String::from("--year"), String::from("2027")]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "2027-01-01 New Year's Day\n\
         2027-01-18 Birthday of Martin Luther King, Jr.\n\
         2027-02-15 Washington's Birthday\n\
         2027-05-31 Memorial Day\n\
         2027-07-05 Independence Day\n\
         2027-09-06 Labor Day\n\
         2027-10-11 Columbus Day\n\
         2027-11-11 Veterans Day\n\
         2027-11-25 Thanksgiving Day\n"
    );
    let bad = cli(&[String::from("calendar"), String::from("--year"), String::from("twenty")]);
    assert!(!bad.status.success() && bad.stdout.is_empty());
}
