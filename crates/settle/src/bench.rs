//! `settle bench`: measures transfers per second and latency over HTTP, the
//! way a client sees them. Without `--url` it starts its own server on a
//! temporary data dir (SQLite, or `--database-url`) and stops it afterwards.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// A running server to load; without it, bench starts its own.
    #[arg(long)]
    pub url: Option<String>,
    /// API key for `--url` (a sandbox key with ledger:write).
    #[arg(long, env = "SETTLE_API_KEY")]
    pub api_key: Option<String>,
    /// Database for the server bench starts (default: SQLite in a temporary dir).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Accounts that transfers move money between.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Transfers to make.
    #[arg(long, default_value_t = 100_000)]
    pub transfers: usize,
    /// Transfers per request: 1 uses POST /v1/transactions, more uses /v1/transactions/batch.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Share of transfers (0.0–1.0) that touch one hot account.
    #[arg(long, default_value_t = 0.0)]
    pub hot_accounts: f64,
    /// Also measure webhooks: subscribe a local receiver to every
    /// `ledger.transaction.created` and report deliveries per second and
    /// the time from commit (the event's `created_at`) to its first attempt.
    #[arg(long)]
    pub webhooks: bool,
}

/// What the bench's own webhook receiver saw: (when it arrived, the event's created_at), in microseconds.
type Arrivals = Arc<std::sync::Mutex<Vec<(i64, i64)>>>;

fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// A receiver on 127.0.0.1 that answers 200 and notes each arrival.
async fn start_receiver(arrivals: Arrivals) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the webhook receiver")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let arrivals = Arc::clone(&arrivals);
            async move {
                let at = now_micros();
                let created = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|t| t.find("\"created_at\":\"").map(|i| &t[i + 14..]))
                    .and_then(|t| t.get(..27))
                    .and_then(settle_core::clock::Timestamp::parse_rfc3339)
                    .map_or(0, settle_core::clock::Timestamp::micros);
                if let Ok(mut a) = arrivals.lock() {
                    a.push((at, created));
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

/// A server started by bench, killed when dropped.
struct OwnServer {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_server(database_url: Option<&str>) -> anyhow::Result<(OwnServer, String, String)> {
    let exe = std::env::current_exe().context("finding the settle binary")?;
    let dir = tempfile::Builder::new().prefix("settle-bench-").tempdir().context("creating a temporary data dir")?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut db_args: Vec<String> = vec![String::from("--data-dir"), dir.path().display().to_string()];
    if let Some(db) = database_url {
        db_args.push(String::from("--database-url"));
        db_args.push(db.to_owned());
    }
    let key_out = tokio::process::Command::new(&exe)
        .args(["keys", "create", "--org", "bench", "--environment", "sandbox", "--json"])
        // The load generator must measure the ledger, not the rate limiter.
        .args(["--rate-limit-per-second", "1000000", "--rate-limit-burst", "1000000"])
        .args(&db_args)
        .output()
        .await
        .context("running settle keys create")?;
    if !key_out.status.success() {
        bail!("settle keys create failed: {}", String::from_utf8_lossy(&key_out.stderr));
    }
    let key: serde_json::Value = serde_json::from_slice(key_out.stdout.trim_ascii()).context("parsing the bench key")?;
    let secret = key["secret"].as_str().context("no secret in the key output")?.to_owned();
    let log = std::fs::File::create(dir.path().join("server.log")).context("creating the server log")?;
    let child = tokio::process::Command::new(&exe)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(&db_args)
        .env("SETTLE_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting settle serve")?;
    let server = OwnServer { child, _dir: dir };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the bench server did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, url, secret))
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len as u64), indicatif::ProgressDrawTarget::stderr());
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Where the measured requests go. The load generator shares the machine
/// with the server it measures, so it drives hyper's HTTP/1.1 connection
/// directly (one keep-alive connection per client, headers built once)
/// instead of a general-purpose client: in profiles reqwest cost the bench
/// about as much CPU as the server's whole HTTP layer.
#[derive(Clone)]
struct Target {
    addr: String,
    host: HeaderValue,
    auth: HeaderValue,
}

type Lane = Option<SendRequest<Full<Bytes>>>;

impl Target {
    fn new(url: &str, key: &str) -> anyhow::Result<Target> {
        let parsed = reqwest::Url::parse(url).context("parsing --url")?;
        if parsed.scheme() != "http" {
            bail!("bench loads plain http:// servers; run it next to the server it measures");
        }
        let host = parsed.host_str().context("--url has no host")?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addr = format!("{host}:{port}");
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).context("the API key is not a valid header value")?;
        auth.set_sensitive(true);
        Ok(Target { host: HeaderValue::from_str(&addr).context("--url host")?, addr, auth })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// POSTs `body` on this client's connection, opening a new one if the last closed.
    async fn post(&self, lane: &mut Lane, path: &'static str, body: String) -> anyhow::Result<(StatusCode, Bytes)> {
        if lane.as_ref().is_none_or(SendRequest::is_closed) {
            *lane = Some(self.connect().await?);
        }
        let sender = lane.as_mut().context("no connection")?;
        let request = hyper::Request::post(path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))?;
        let sent = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        if sent.is_err() {
            *lane = None;
        }
        Ok(sent?)
    }
}

/// Clients that open the accounts before the measured run.
const SETUP_CONCURRENCY: usize = 64;

async fn create_accounts(client: &reqwest::Client, url: &str, key: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let bar = progress(count, "accounts ");
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // Setting up is not what is measured: always open accounts with 64 clients.
    for _ in 0..SETUP_CONCURRENCY {
        let (client, url, key, next, bar) = (client.clone(), url.to_owned(), key.to_owned(), Arc::clone(&next), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let body = serde_json::json!({"name": "bench", "currency": "USD", "normal_balance": "credit"});
                let response = client.post(format!("{url}/v1/accounts")).bearer_auth(&key).json(&body).send().await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("creating an account answered {}", response.status());
                }
                let value: serde_json::Value = response.json().await?;
                made.push(value["id"].as_str().unwrap_or_default().to_owned());
                bar.inc(1);
            }
            Ok::<_, anyhow::Error>(made)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for task in tasks {
        ids.extend(task.await??);
    }
    bar.finish_and_clear();
    Ok(ids)
}

fn transfer_json(out: &mut String, accounts: &[String], hot_share: f64, rng: &mut impl Rng) {
    let n = accounts.len();
    let mut from = rng.random_range(0..n);
    let mut to = rng.random_range(0..n);
    if hot_share > 0.0 && rng.random_bool(hot_share.clamp(0.0, 1.0)) {
        if rng.random_bool(0.5) { from = 0 } else { to = 0 }
    }
    if from == to {
        to = (to + 1) % n;
    }
    let amount = rng.random_range(1..=10_000);
    out.push_str(&format!(
        r#"{{"entries":[{{"account_id":"{}","direction":"debit","amount":{amount}}},{{"account_id":"{}","direction":"credit","amount":{amount}}}]}}"#,
        accounts[from], accounts[to]
    ));
}

/// Waits (at most 10 minutes) for `expected` deliveries, then reports
/// deliveries per second (first to last arrival) and commit-to-first-attempt times.
async fn webhook_report(arrivals: &Arrivals, expected: usize) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let bar = progress(expected, "webhooks ");
    loop {
        let got = arrivals.lock().map(|a| a.len()).unwrap_or(0);
        bar.set_position(got as u64);
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let seen = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for (at, created) in &seen {
        lag.saturating_record(u64::try_from(at - created).unwrap_or(0).max(1));
    }
    let first = seen.iter().map(|a| a.0).min().unwrap_or(0);
    let last = seen.iter().map(|a| a.0).max().unwrap_or(0);
    let seconds = ((last - first) as f64 / 1e6).max(1e-6);
    let ms = |q: f64| (lag.value_at_quantile(q) as f64 / 1000.0 * 10.0).round() / 10.0;
    Ok(serde_json::json!({
        "deliveries": seen.len(),
        "expected": expected,
        "deliveries_per_sec": (seen.len() as f64 / seconds).round(),
        "commit_to_first_attempt_p50_ms": ms(0.50),
        "commit_to_first_attempt_p99_ms": ms(0.99),
    }))
}

/// The `failed` count of a batch result, found in its first bytes.
fn failed_count(body: &[u8]) -> Option<u64> {
    let head = std::str::from_utf8(&body[..body.len().min(200)]).ok()?;
    let rest = &head[head.find("\"failed\":")? + 9..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.accounts < 2 || args.transfers == 0 || args.batch_size == 0 || args.concurrency == 0 {
        bail!("--accounts must be at least 2; --transfers, --batch-size and --concurrency at least 1");
    }
    if args.batch_size > settle_core::limits::MAX_BATCH_TRANSACTIONS {
        bail!("--batch-size may be at most {}", settle_core::limits::MAX_BATCH_TRANSACTIONS);
    }
    let (own_server, url, key) = match (&args.url, &args.api_key) {
        (Some(url), Some(key)) => (None, url.trim_end_matches('/').to_owned(), key.clone()),
        (Some(_), None) => bail!("--url needs --api-key (or SETTLE_API_KEY)"),
        (None, _) => {
            let (server, url, key) = start_server(args.database_url.as_deref()).await?;
            (Some(server), url, key)
        }
    };
    // Stop the server bench started however the run ends, Ctrl-C included:
    // an interrupted bench must not leave a server behind.
    let outcome = tokio::select! {
        outcome = measure(&args, &url, &key) => outcome,
        () = crate::serve::shutdown_requested() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Some(mut server) = own_server {
        let _ = server.child.start_kill();
        let _ = server.child.wait().await;
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Opens the accounts, then runs and reports the measured load.
async fn measure(args: &BenchArgs, url: &str, key: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).timeout(Duration::from_secs(60)).build()?;
    let accounts = Arc::new(create_accounts(&client, url, key, args.accounts).await?);
    let arrivals: Arrivals = Arc::default();
    if args.webhooks {
        let hook = start_receiver(Arc::clone(&arrivals)).await?;
        let body = serde_json::json!({"url": hook, "enabled_events": ["ledger.transaction.created"]});
        let response = client.post(format!("{url}/v1/webhook_endpoints")).bearer_auth(key).json(&body).send().await?;
        if response.status() != reqwest::StatusCode::CREATED {
            bail!("creating the bench's webhook endpoint answered {}", response.status());
        }
    }

    let target = Target::new(url, key)?;
    let requests = args.transfers.div_ceil(args.batch_size);
    let bar = progress(args.transfers, "transfers");
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (target, next, errors, bar, accounts) = (target.clone(), Arc::clone(&next), Arc::clone(&errors), bar.clone(), Arc::clone(&accounts));
        let (batch_size, transfers, hot) = (args.batch_size, args.transfers, args.hot_accounts);
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
            let mut lane: Lane = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let count = batch_size.min(transfers - i * batch_size);
                let mut body = String::with_capacity(count * 200 + 64);
                let path = if batch_size == 1 {
                    transfer_json(&mut body, &accounts, hot, &mut rng);
                    "/v1/transactions"
                } else {
                    body.push_str(r#"{"atomic":false,"transactions":["#);
                    for j in 0..count {
                        if j > 0 {
                            body.push(',');
                        }
                        transfer_json(&mut body, &accounts, hot, &mut rng);
                    }
                    body.push_str("]}");
                    "/v1/transactions/batch"
                };
                let sent = Instant::now();
                let failed = match target.post(&mut lane, path, body).await {
                    Ok((status, _)) if batch_size == 1 => u64::from(status != StatusCode::CREATED),
                    // The summary leads the body: read it without parsing every result.
                    Ok((status, body)) if status.is_success() => failed_count(&body).unwrap_or(count as u64),
                    Ok(_) | Err(_) => count as u64,
                };
                histogram.saturating_record(sent.elapsed().as_micros() as u64);
                errors.fetch_add(failed, Ordering::Relaxed);
                bar.inc(count as u64);
            }
            Ok::<_, anyhow::Error>(histogram)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let ms = |q: f64| (histogram.value_at_quantile(q) as f64 / 1000.0 * 100.0).round() / 100.0;
    let webhooks =
        if args.webhooks { Some(webhook_report(&arrivals, args.transfers.saturating_sub(errors.load(Ordering::Relaxed) as usize)).await?) } else { None };
    let report = serde_json::json!({
        "webhooks": webhooks,
        "transfers": args.transfers,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "transfers_per_sec": (args.transfers as f64 / seconds).round(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        // The longest wait: a pause of the engine shows here, not in p99.
        "max_ms": (histogram.max() as f64 / 1000.0 * 100.0).round() / 100.0,
        "errors": errors.load(Ordering::Relaxed),
        "requests": requests,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "accounts": args.accounts,
        "hot_accounts": args.hot_accounts,
    });
    println!("{report}");
    Ok(())
}
