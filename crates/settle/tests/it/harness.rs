//! Starts `settle serve` processes and talks to them over HTTP.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_settle");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh PostgreSQL database for one test, dropped when this is dropped.
pub struct PgDatabase {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Option<PgDatabase> {
        let base = std::env::var("SETTLE_TEST_POSTGRES_URL").ok()?;
        let root = base.rsplit_once('/').map(|(r, _)| r.to_owned()).unwrap_or(base.clone());
        let admin = format!("{root}/postgres");
        let name = format!("settle_bin_t_{}_{}", std::process::id(), rand_suffix());
        let (client, conn) =
            tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("SETTLE_TEST_POSTGRES_URL is set but PostgreSQL is unreachable");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        Some(PgDatabase { url: format!("{root}/{name}"), admin, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop from a thread with its own runtime: Drop may run inside one.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % 1_000_000_000
}

/// `settle serve` on a free port.
pub struct Server {
    pub url: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Child,
}

impl Server {
    pub async fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        Server::start_with_args(data_dir, database_url, &[]).await
    }

    /// Like [`Server::start`], with more `serve` flags.
    pub async fn start_with_args(data_dir: &Path, database_url: Option<&str>, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, database_url, extra, &[]).await
    }

    /// Like [`Server::start_with_args`], with more environment variables.
    pub async fn start_with_env(data_dir: &Path, database_url: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let port = free_port();
        let mut args = vec![String::from("serve"), String::from("--listen"), format!("127.0.0.1:{port}")];
        args.extend(db_args(data_dir, database_url));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.join(format!("server-{port}.log"));
        let child = spawn(&args, &env, &log);
        let server = Server {
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            database_url: database_url.map(str::to_owned),
            log,
            args,
            env,
            child,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = crate::tls_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if client.get(format!("{}/readyz", self.url)).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become ready: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self) {
        self.child = spawn(&self.args, &self.env, &self.log);
        self.wait_ready().await;
    }

    /// `settle keys create` for this server's database; returns (id, secret).
    pub fn key(&self, org: &str, scopes: &[&str]) -> (String, String) {
        let mut args = vec!["keys", "create", "--org", org, "--environment", "sandbox", "--json"].into_iter().map(String::from).collect::<Vec<_>>();
        for s in scopes {
            args.push(String::from("--scope"));
            args.push((*s).to_owned());
        }
        args.extend(db_args(&self.data_dir, self.database_url.as_deref()));
        let out = cli(&args);
        assert!(out.status.success(), "keys create failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
        (v["id"].as_str().unwrap().to_owned(), v["secret"].as_str().unwrap().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn db_args(data_dir: &Path, database_url: Option<&str>) -> Vec<String> {
    let mut args = vec![String::from("--data-dir"), data_dir.display().to_string()];
    if let Some(url) = database_url {
        args.push(String::from("--database-url"));
        args.push(url.to_owned());
    }
    args
}

fn spawn(args: &[String], env: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(BIN).args(args).envs(env.iter().map(|(k, v)| (k, v))).stdout(file.try_clone().unwrap()).stderr(file).stdin(Stdio::null()).spawn().unwrap()
}

pub fn cli(args: &[String]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A small HTTP client bound to one server and key.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub key: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(url: &str, key: &str) -> Api {
        Api { url: url.to_owned(), key: key.to_owned(), client: crate::tls_builder().timeout(Duration::from_secs(10)).build().unwrap() }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.client.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await.unwrap()
    }

    pub async fn account(&self, normal: &str, min: Option<i64>) -> String {
        let (status, body) = self.post("/v1/accounts", json!({"name": "t", "currency": "USD", "normal_balance": normal, "min_available_balance": min})).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub fn transfer_body(from: &str, to: &str, amount: i64) -> Value {
        json!({"entries": [{"account_id": from, "direction": "debit", "amount": amount}, {"account_id": to, "direction": "credit", "amount": amount}]})
    }

    pub async fn posted(&self, account: &str) -> i64 {
        let (status, body) = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(status, 200, "{body}");
        body["balances"]["posted"].as_i64().unwrap()
    }
}
