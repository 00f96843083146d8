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
    #[command(flatten)]
    pub db: DatabaseArgs,
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

/// The scheduled ledger reconciliation: a scan, logged; never a repair.
async fn reconcile_periodically(store: Store, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match settle_store::reconcile::scan(&store).await {
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
    let store = args.db.open().await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    bootstrap(&store, &args.db.data_dir).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = EngineConfig { idempotency_retention: Duration::from_secs(args.idempotency_retention_hours.saturating_mul(3600)), ..EngineConfig::default() };
    let (engine, engine_task) = store.start_engine(Arc::clone(&clock), Arc::new(IdGenerator::default()), config).await.context("starting the ledger engine")?;
    if args.reconcile_interval_secs > 0 {
        tokio::spawn(reconcile_periodically(store.clone(), Duration::from_secs(args.reconcile_interval_secs)));
    }
    let signing = signing_setup(&store, &args.db.data_dir).await?;
    let operations = settle_api::operations::OperationsConfig {
        async_batch_threshold: usize::try_from(args.async_batch_threshold).unwrap_or(settle_api::operations::DEFAULT_ASYNC_BATCH_THRESHOLD),
        ..settle_api::operations::OperationsConfig::default()
    };
    let state = settle_api::AppState::new(store, engine, clock).with_signing(signing).with_operations(operations);
    let worker = settle_api::operations::worker::spawn(state.clone());
    let deprecation_flusher =
        settle_api::deprecation::Flusher::start(Arc::clone(&state.deprecation_usage), state.store.clone(), Duration::from_secs(args.deprecation_flush_secs));
    let app = settle_api::router(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr().unwrap_or(args.listen), "settle is serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("serving")?;
    // The worker finishes the chunk it is applying and gives its operation
    // back, so the next start (or another server) resumes it at once.
    worker.stop().await;
    // Every request has been answered: store the last deprecation counts.
    deprecation_flusher.finish().await;
    // The router (and with it every engine handle) is gone: the engine
    // finishes what is queued and stops.
    engine_task.finished().await;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Where this server finds the master key that decrypts keys' signing
/// secrets: `SETTLE_MASTER_KEY`, else `<data-dir>/master.key` (read now, or
/// later when a signed key is created after the server started). Refuses to
/// start when signed keys exist that this master key cannot decrypt: every
/// server sharing a database must share its master key.
async fn signing_setup(store: &Store, data_dir: &Path) -> anyhow::Result<Signing> {
    let variable = std::env::var(MASTER_KEY_VAR).ok();
    let master = MasterKey::load(variable.as_deref(), data_dir).context("loading the master key")?;
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
