//! `settle serve`: migrations, first-start sandbox key, the engine, the API,
//! and a graceful stop on SIGINT/SIGTERM (stop accepting, finish in-flight
//! requests, drain the engine, exit 0).

use crate::DatabaseArgs;
use anyhow::Context;
use clap::Args;
use settle_api::signing::Signing;
use settle_api::signing::vault::{MASTER_KEY_FILE, MASTER_KEY_VAR, MasterKey};
use settle_core::clock::{Clock, SystemClock};
use settle_core::ids::IdGenerator;
use settle_core::tenancy::{Environment, Scope};
use settle_store::Store;
use settle_store::engine::EngineConfig;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve `GET /metrics` (Prometheus) on this address only; by default it is
    /// served on `--listen` beside the API.
    #[arg(long, env = "SETTLE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long idempotency records are kept, in hours (at least 24 is recommended).
    #[arg(long, env = "SETTLE_IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24)]
    pub idempotency_retention_hours: u64,
    /// Every this many seconds, reconcile the ledger (what `settle reconcile
    /// ledger` reports) and log each drifted account at error level; 0 turns
    /// it off. Report only: repairs are an operator's decision.
    #[arg(long, env = "SETTLE_RECONCILE_INTERVAL_SECS", default_value_t = 0)]
    pub reconcile_interval_secs: u64,
    /// How often uses of deprecated API versions and endpoints are added to the database, in seconds.
    #[arg(long, env = "SETTLE_DEPRECATION_FLUSH_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub deprecation_flush_secs: u64,
    /// Batches with more transactions than this answer 202 and run as an operation (1–1000).
    #[arg(long, env = "SETTLE_ASYNC_BATCH_THRESHOLD", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub async_batch_threshold: u64,
    /// How much lower than the ledger engine's the priority of the server's
    /// other threads is, as a nice value (0–19; 0, the default: all the
    /// same). The WAL checkpointer runs twice as low. Helps batched writes on
    /// a machine with few cores, costs one-per-request writes; Linux only
    /// (docs/operations.md, "Thread priorities").
    #[arg(long, env = "SETTLE_WORKER_NICE", default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub worker_nice: i32,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub ach: crate::ach::AchArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub otlp: crate::otlp::OtlpArgs,
}

/// Webhook deliveries (docs/webhooks.md).
#[derive(Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Delays before each attempt of a delivery (the first is the first attempt), comma-separated, with s/m/h/d units.
    #[arg(long, env = "SETTLE_WEBHOOK_RETRY_SCHEDULE", default_value = "0,5s,5m,30m,2h,5h,10h,10h")]
    pub webhook_retry_schedule: String,
    /// Which addresses sandbox deliveries may reach: `any`, or `loopback` (live deliveries: public addresses only, always).
    #[arg(long, env = "SETTLE_WEBHOOK_SANDBOX_DESTINATIONS", default_value = "any", value_parser = ["any", "loopback"])]
    pub webhook_sandbox_destinations: String,
    /// Delivery attempts in flight at once on this server.
    #[arg(long, env = "SETTLE_WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub webhook_concurrency: u64,
}

impl WebhookArgs {
    pub fn config(&self) -> anyhow::Result<settle_api::webhooks::worker::WebhookConfig> {
        use settle_api::webhooks::{destination::Destinations, worker::WebhookConfig};
        let schedule = WebhookConfig::parse_schedule(&self.webhook_retry_schedule)
            .context("--webhook-retry-schedule must be 1 to 32 comma-separated delays such as 0,5s,5m,2h,1d")?;
        let sandbox_destinations = Destinations::parse(&self.webhook_sandbox_destinations).context("--webhook-sandbox-destinations must be any or loopback")?;
        Ok(WebhookConfig { schedule, sandbox_destinations, concurrency: usize::try_from(self.webhook_concurrency).unwrap_or(64), ..WebhookConfig::default() })
    }
}

/// Rate limits, timeouts, overload, CORS and security headers (docs/rate-limits.md, docs/http.md).
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Requests per second per API key (token bucket rate), unless the key has its own.
    #[arg(long, env = "SETTLE_RATE_LIMIT_PER_SECOND", default_value_t = settle_api::rate_limit::DEFAULT_PER_SECOND)]
    pub rate_limit_per_second: u32,
    /// Requests an API key may send at once (token bucket size), unless the key has its own.
    #[arg(long, env = "SETTLE_RATE_LIMIT_BURST", default_value_t = settle_api::rate_limit::DEFAULT_BURST)]
    pub rate_limit_burst: u32,
    /// Requests per second per client IP for requests without a valid API key; 0: not limited.
    #[arg(long, env = "SETTLE_RATE_LIMIT_UNAUTHENTICATED_PER_SECOND", default_value_t = settle_api::rate_limit::DEFAULT_UNAUTHENTICATED_PER_SECOND)]
    pub rate_limit_unauthenticated_per_second: u32,
    /// Burst per client IP for requests without a valid API key.
    #[arg(long, env = "SETTLE_RATE_LIMIT_UNAUTHENTICATED_BURST", default_value_t = settle_api::rate_limit::DEFAULT_UNAUTHENTICATED_BURST)]
    pub rate_limit_unauthenticated_burst: u32,
    /// Keep the rate-limit buckets in this Redis (`redis://…`), shared by every server using it.
    #[arg(long, env = "SETTLE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the rate limiter writes.
    #[arg(long, env = "SETTLE_RATE_LIMIT_REDIS_PREFIX", default_value = "settle:ratelimit:")]
    pub rate_limit_redis_prefix: String,
    /// When Redis cannot be reached: `open` (this server's own buckets apply) or `closed` (503).
    #[arg(long, env = "SETTLE_RATE_LIMIT_REDIS_FAILURE", default_value = "open", value_parser = ["open", "closed"])]
    pub rate_limit_redis_failure: String,
    /// Seconds a request may take before it is answered 503 `request_timeout`.
    #[arg(long, env = "SETTLE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Writes that may wait for the ledger engine; past it a write answers 503 `overloaded` at once.
    #[arg(long, env = "SETTLE_ENGINE_QUEUE_CAPACITY", default_value_t = settle_store::engine::QUEUE_CAPACITY)]
    pub engine_queue_capacity: usize,
    /// An origin browsers may call the API from (repeatable; env: comma-separated). Default: CORS off.
    #[arg(long = "cors-allow-origin", env = "SETTLE_CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,
    /// Send `Strict-Transport-Security: max-age=N`; only behind TLS termination. Default: not sent.
    #[arg(long, env = "SETTLE_HSTS_MAX_AGE_SECS")]
    pub hsts_max_age_secs: Option<u64>,
}

impl HttpArgs {
    /// The API's HTTP policy from these flags.
    pub fn policy(&self) -> anyhow::Result<settle_api::hygiene::HttpPolicy> {
        use settle_api::rate_limit::{RateLimits, RedisFailure};
        use settle_core::tenancy::RateLimit;
        let default = RateLimit::new(self.rate_limit_per_second, self.rate_limit_burst)
            .with_context(|| format!("--rate-limit-per-second and --rate-limit-burst must be 1 to {}", RateLimit::MAX))?;
        let unauthenticated =
            if self.rate_limit_unauthenticated_per_second == 0 {
                None
            } else {
                Some(RateLimit::new(self.rate_limit_unauthenticated_per_second, self.rate_limit_unauthenticated_burst).with_context(|| {
                    format!("--rate-limit-unauthenticated-per-second and --rate-limit-unauthenticated-burst must be 1 to {}", RateLimit::MAX)
                })?)
            };
        let rate_limits = match &self.redis_url {
            None => RateLimits::in_memory(default, unauthenticated),
            Some(url) => {
                let failure = RedisFailure::parse(&self.rate_limit_redis_failure).context("--rate-limit-redis-failure must be open or closed")?;
                // The URL may hold a password: never in the error.
                RateLimits::redis(default, unauthenticated, url, &self.rate_limit_redis_prefix, failure)
                    .map_err(|e| anyhow::anyhow!("--redis-url is not a usable Redis URL ({:?})", e.kind()))?
            }
        };
        if self.request_timeout_secs == 0 {
            anyhow::bail!("--request-timeout-secs must be at least 1");
        }
        let cors_allow_origins = self
            .cors_allow_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| {
                let origin = o.trim();
                if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                    anyhow::bail!("--cors-allow-origin {origin:?} must be an origin like https://app.example.com (no wildcard, no path)");
                }
                axum::http::HeaderValue::from_str(origin).with_context(|| format!("--cors-allow-origin {origin:?} is not a valid origin"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(settle_api::hygiene::HttpPolicy {
            rate_limits,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            cors_allow_origins,
            hsts_max_age_secs: self.hsts_max_age_secs,
        })
    }
}

/// Name of the file that receives the first sandbox key's secret.
pub const SANDBOX_KEY_FILE: &str = "sandbox.key";

async fn bootstrap(store: &Store, data_dir: &Path) -> anyhow::Result<()> {
    if store.count_organizations().await? > 0 {
        return Ok(());
    }
    let (record, secret) = crate::keys::create_key(store, "default", Environment::Sandbox, &Scope::ALL).await?;
    std::fs::create_dir_all(data_dir).context("creating the data dir")?;
    let path = data_dir.join(SANDBOX_KEY_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}").context("writing the sandbox key")?;
    tracing::info!(key_id = %record.id, path = %path.display(), "created organization \"default\" with a sandbox API key; its secret is in this file");
    Ok(())
}

async fn shutdown_signal() {
    shutdown_requested().await;
    tracing::info!("shutdown requested: no new connections; finishing in-flight requests");
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_requested() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// SQLite reads block their thread, and a scan reads the whole ledger: on
/// SQLite it runs on a blocking thread, so HTTP workers keep serving.
/// PostgreSQL reads are asynchronous and run where they are.
async fn scan_off_the_runtime(store: &Store) -> Result<Result<settle_store::reconcile::Scan, settle_store::audit::AuditFailure>, settle_store::StoreError> {
    match store {
        Store::Postgres(_) => settle_store::reconcile::scan(store).await,
        Store::Sqlite(_) => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| settle_store::StoreError::Other(e.to_string()))?;
                runtime.block_on(settle_store::reconcile::scan(&store))
            })
            .await
            .map_err(|e| settle_store::StoreError::Other(e.to_string()))?
        }
    }
}

/// The scheduled ledger reconciliation: a scan, logged; never a repair.
async fn reconcile_periodically(store: Store, every: Duration, metrics: Arc<settle_api::metrics::Metrics>) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let scanned = scan_off_the_runtime(&store).await;
        if let Ok(result) = &scanned {
            metrics.ledger_log_broken.set(i64::from(result.is_err()));
            metrics.ledger_drifted_accounts.set(result.as_ref().map_or(0, |scan| i64::try_from(scan.drifts.len()).unwrap_or(i64::MAX)));
            metrics.ledger_reconciled_at.set(SystemClock.now().micros() / 1_000_000);
        }
        match scanned {
            Ok(Ok(scan)) if scan.drifts.is_empty() => {
                tracing::info!(accounts = scan.accounts, entries = scan.entries, "ledger reconciled: no drift");
            }
            Ok(Ok(scan)) => {
                for d in &scan.drifts {
                    tracing::error!(account = %d.account, tenant = d.tenant.0, stored = ?d.stored, entries = ?d.expected, "ledger drift: an account's counters differ from its entries; run `settle reconcile ledger --repair`");
                }
            }
            Ok(Err(failure)) => tracing::error!(%failure, "ledger reconciliation found the log or the entries broken; run `settle audit verify`"),
            Err(e) => tracing::warn!(error = %e, "ledger reconciliation could not read the ledger"),
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let http = args.http.policy()?;
    let webhooks = settle_api::webhooks::Webhooks::new(args.webhooks.config()?).context("building the webhook HTTP client")?;
    let store = args.db.open().await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    bootstrap(&store, &args.db.data_dir).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = EngineConfig { idempotency_retention: Duration::from_secs(args.idempotency_retention_hours.saturating_mul(3600)), ..EngineConfig::default() };
    let metrics = Arc::new(settle_api::metrics::Metrics::default());
    let hub = settle_api::events::Hub::default();
    let observer: Arc<dyn settle_store::engine::BatchObserver> =
        Arc::new(settle_api::events::CommitSignal { inner: Some(metrics.clone()), hub: Arc::clone(&hub) });
    let config = EngineConfig {
        queue_capacity: args.http.engine_queue_capacity.max(1),
        observer: Some(observer),
        checkpointer_nice: args.worker_nice.saturating_mul(2).min(settle_store::priority::MAX_NICE),
        ..config
    };
    let (engine, engine_task) = store.start_engine(Arc::clone(&clock), Arc::new(IdGenerator::default()), config).await.context("starting the ledger engine")?;
    if args.reconcile_interval_secs > 0 {
        tokio::spawn(reconcile_periodically(store.clone(), Duration::from_secs(args.reconcile_interval_secs), Arc::clone(&metrics)));
    }
    let signing = signing_setup(&store, &args.db.data_dir).await?;
    let operations = settle_api::operations::OperationsConfig {
        async_batch_threshold: usize::try_from(args.async_batch_threshold).unwrap_or(settle_api::operations::DEFAULT_ASYNC_BATCH_THRESHOLD),
        ..settle_api::operations::OperationsConfig::default()
    };
    let keyring_path = args.db.keyring_path();
    let keyring = settle_api::customers::keyring::Keyring::load_or_create(&keyring_path).context("loading the customer keyring")?;
    tracing::info!(path = %keyring_path.display(), versions = ?keyring.versions(), "customer keyring loaded");
    // A server with another keyring would answer every customer read with an
    // error (or, worse, wrap new keys with a KEK the others lack): refuse to start.
    let foreign = keys_this_keyring_cannot_open(&store, &keyring).await?;
    if !foreign.is_empty() {
        anyhow::bail!(
            "the customer keyring {} cannot unwrap stored customer data keys of key-encryption key versions {foreign:?}; every server sharing this database must read the same keyring (--customer-keyring)",
            keyring_path.display()
        );
    }
    let customers = settle_api::customers::Customers::with_keyring(Arc::new(keyring));
    let state = settle_api::AppState::new(store, engine, clock)
        .with_http(http)
        .with_signing(signing)
        .with_operations(operations)
        .with_metrics(metrics)
        .with_events(hub)
        .with_webhooks(webhooks)
        .with_customers(customers)
        .with_ach(args.ach.config()?);
    let worker = settle_api::operations::worker::spawn(state.clone());
    // Cuts a NACHA file per FedACH window and settles due payments (safe on several servers: a window is cut once).
    let ach_scheduler = args.ach.ach_scheduler.then(|| settle_api::ach::files::spawn_scheduler(state.clone()));
    state.store.release_leases_of_dead_servers(state.clock.now()).await.context("releasing the event and webhook leases of the previous process")?;
    let projector = settle_api::events::projector::spawn(state.clone(), settle_api::events::projector::ProjectorConfig::default());
    let deliveries = settle_api::webhooks::worker::spawn(state.clone());
    // Loads sanctions list snapshots as `settle sanctions load` stores them, and re-screens.
    let screening_refresher = settle_api::customers::screening::spawn_refresher(state.clone());
    let deprecation_flusher =
        settle_api::deprecation::Flusher::start(Arc::clone(&state.deprecation_usage), state.store.clone(), Duration::from_secs(args.deprecation_flush_secs));
    let (metrics_stop, metrics_server) = match args.metrics_listen {
        None => (None, None),
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address} for metrics"))?;
            tracing::info!(listen = %listener.local_addr().unwrap_or(address), "metrics served at /metrics");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let router = settle_api::metrics::router(state.clone());
            let server = tokio::spawn(async move {
                let serving = axum::serve(listener, router).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
            (Some(stop), Some(server))
        }
    };
    let app =
        if args.metrics_listen.is_some() { settle_api::router(state) } else { settle_api::router(state.clone()).merge(settle_api::metrics::router(state)) };
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr().unwrap_or(args.listen), "settle is serving");
    // Connection info gives the client IP that unauthenticated rate limits key on.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("serving")?;
    // The worker finishes the chunk it is applying and gives its operation
    // back, so the next start (or another server) resumes it at once.
    worker.stop().await;
    // Attempts in flight finish and are recorded; the projector gives its lease back.
    deliveries.stop().await;
    projector.stop().await;
    screening_refresher.abort();
    if let Some(scheduler) = ach_scheduler {
        scheduler.abort();
    }
    // Every request has been answered: store the last deprecation counts.
    deprecation_flusher.finish().await;
    // The metrics listener holds an engine handle too.
    if let (Some(stop), Some(server)) = (metrics_stop, metrics_server) {
        let _ = stop.send(());
        let _ = server.await;
    }
    // The router (and with it every engine handle) is gone: the engine
    // finishes what is queued and stops.
    engine_task.finished().await;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// KEK versions of stored data keys that `keyring` cannot unwrap (one key tried per version).
async fn keys_this_keyring_cannot_open(store: &Store, keyring: &settle_api::customers::keyring::Keyring) -> anyhow::Result<Vec<i64>> {
    let samples = store.sample_data_keys().await.context("reading customer data keys")?;
    Ok(samples.into_iter().filter(|k| keyring.unwrap(k.tenant, &k.customer_id, k.kek_version, &k.wrapped).is_err()).map(|k| k.kek_version).collect())
}

/// Where this server finds the master key that decrypts keys' signing
/// secrets: `SETTLE_MASTER_KEY`, else `<data-dir>/master.key` (read now, or
/// later when a signed key is created after the server started). Refuses to
/// start when signed keys exist that this master key cannot decrypt: every
/// server sharing a database must share its master key.
async fn signing_setup(store: &Store, data_dir: &Path) -> anyhow::Result<Signing> {
    let variable = std::env::var(MASTER_KEY_VAR).ok();
    // Webhook endpoints' secrets are sealed under the master key, and any
    // sandbox key may create one: a server without a master key makes one
    // (several servers sharing PostgreSQL must share SETTLE_MASTER_KEY).
    let master = match &variable {
        Some(_) => MasterKey::load(variable.as_deref(), data_dir).context("loading the master key")?,
        None => Some(MasterKey::load_or_create(None, data_dir).context("loading or creating the master key")?),
    };
    let signed = store.signing_secrets().await.context("reading keys that require signatures")?;
    if let Some((key_id, sealed)) = signed.first() {
        let Some(master) = &master else {
            anyhow::bail!(
                "{} keys require signed requests but this server has no master key: set {MASTER_KEY_VAR} (or copy {MASTER_KEY_FILE} into the data dir) from the server that created them",
                signed.len()
            );
        };
        master.decrypt(key_id, sealed).with_context(|| {
            format!("the master key does not decrypt the signing secret of {key_id}; every server sharing a database must use the same {MASTER_KEY_VAR}")
        })?;
    }
    let file = variable.is_none().then(|| data_dir.join(MASTER_KEY_FILE));
    Ok(Signing::new(master, file))
}
