//! `settle`: the server and its operator commands. Every subcommand that
//! touches the database takes the same `--data-dir` / `--database-url`
//! flags (and environment variables), so it always finds the server's data.
//!
//! All of it is this library; the binary (`main.rs`) only calls [`run`].
//! That is for build time: cargo starts compiling a library as soon as the
//! metadata of its dependencies exists, so this crate compiles while
//! `settle-api` is still generating code, where a binary would wait for
//! `settle-api` to finish (docs/benchmarks.md, "Build time").

mod ach;
mod audit;
mod bench;
mod customers;
mod deprecations;
mod flags;
mod keys;
mod listen;
mod orgs;
mod otlp;
mod reconcile;
mod serve;
mod versions;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use settle_store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "settle", version, about = "Settle: a self-hostable double-entry ledger and payments core")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the data lives; shared by every subcommand.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// Directory for the SQLite database and the sandbox key file.
    #[arg(long, env = "SETTLE_DATA_DIR", default_value = "./settle-data")]
    pub data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL; default: a SQLite file in the data dir.
    #[arg(long, env = "SETTLE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The keyring of customers' key-encryption keys (default: `<data-dir>/customer-keys.json`).
    /// Every server sharing a database must read the same keyring.
    #[arg(long, env = "SETTLE_CUSTOMER_KEYRING")]
    pub customer_keyring: Option<PathBuf>,
}

impl DatabaseArgs {
    pub async fn open(&self) -> anyhow::Result<Store> {
        let store = Store::open(self.database_url.as_deref(), &self.data_dir).await.context("opening the database")?;
        store.migrate().await.context("applying migrations")?;
        Ok(store)
    }

    pub fn keyring_path(&self) -> PathBuf {
        self.customer_keyring.clone().unwrap_or_else(|| self.data_dir.join(settle_api::customers::keyring::KEYRING_FILE))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Serve(Box<serve::ServeArgs>),
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Check the tamper-evident trails (ledger log, compliance audit), or export them.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Measure transfers per second over HTTP.
    Bench(bench::BenchArgs),
    /// Compare derived state with its source of truth (and repair it).
    Reconcile {
        #[command(subcommand)]
        command: ReconcileCommand,
    },
    /// Print the API's OpenAPI 3.1 document (what `GET /v1/openapi.json` serves).
    Openapi,
    /// Print the days the Federal Reserve Banks are closed in a year, one
    /// `YYYY-MM-DD <holiday>` line each (weekends aside).
    Calendar {
        /// The year (default: this year, UTC).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1900..=2199))]
        year: Option<i32>,
    },
    /// The ACH rail: import a bank's return / NOC file into a running server.
    Ach {
        #[command(subcommand)]
        command: ach::AchCommand,
    },
    /// Customers' key-encryption keys: rotation.
    Kms {
        #[command(subcommand)]
        command: customers::KmsCommand,
    },
    /// Sanctions lists and watchlists: load a snapshot, measure screening.
    Sanctions {
        #[command(subcommand)]
        command: customers::SanctionsCommand,
    },
    /// Feature flags: stage new behaviour per organization, roll it back at once.
    Flags {
        #[command(subcommand)]
        command: flags::FlagsCommand,
    },
    /// Organizations and their pinned API versions.
    Orgs {
        #[command(subcommand)]
        command: orgs::OrgsCommand,
    },
    /// The API versions this binary serves and their changelog.
    Versions {
        #[command(subcommand)]
        command: versions::VersionsCommand,
    },
    /// Forward a sandbox's events, as they happen, to a local URL, signed with a printed secret.
    Listen(listen::ListenArgs),
    /// Make the sandbox objects that fire an event type.
    Trigger(listen::TriggerArgs),
    /// The event catalog.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Who still uses deprecated API versions and endpoints.
    Deprecations {
        #[command(subcommand)]
        command: deprecations::DeprecationsCommand,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print docs/events.md: every event type and its JSON Schema.
    Catalog,
}

#[derive(Subcommand)]
enum ReconcileCommand {
    /// Recompute every account's counters from its entries (after checking the
    /// entries against the hash-chained log) and report each account that
    /// drifted; exit 1 when one did, 2 when the log or entries are broken.
    Ledger {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Correct drifted counters (never entries), each in an audited engine transaction.
        #[arg(long)]
        repair: bool,
        /// One JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Import a bank statement file and match its lines against the ledger
    /// (the same as `POST /v1/reconciliation/statements`); importing the same
    /// statement again changes nothing.
    Import {
        #[command(flatten)]
        db: DatabaseArgs,
        /// The statement file.
        file: PathBuf,
        /// camt.053, camt.054, mt940, bai2 or csv.
        #[arg(long)]
        format: String,
        /// The ledger account (`acct_…`) that books this bank account.
        #[arg(long)]
        ledger_account: String,
        /// The organization's name.
        #[arg(long)]
        org: String,
        /// sandbox or live.
        #[arg(long)]
        environment: String,
        /// A JSON file with the CSV profile (see docs/reconciliation.md).
        #[arg(long)]
        csv_profile: Option<PathBuf>,
        /// Days either side of a line's date a transaction may be dated to match by amount.
        #[arg(long, default_value_t = 3)]
        date_window_days: i64,
        /// One JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the reconciliation report of a day (JSON, or CSV with --csv).
    Report {
        #[command(flatten)]
        db: DatabaseArgs,
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        #[arg(long)]
        org: String,
        #[arg(long)]
        environment: String,
        #[arg(long)]
        csv: bool,
    },
}

/// Parses the command line and runs the command. `#[inline(never)]`: the
/// binary links to this code rather than compiling a copy of it.
#[inline(never)]
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // Before any HTTP client is built (webhook deliveries, listen, bench).
    settle_api::webhooks::worker::install_tls_provider();
    // `serve` runs its runtime's threads below the ledger engine, which it
    // starts from this (main) thread (settle-store's priority.rs).
    let worker_nice = match &cli.command {
        Command::Serve(args) => args.worker_nice,
        _ => 0,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || settle_store::priority::lower_current_thread(worker_nice))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let traces = otlp::init_logging_and_traces(&args.otlp)?;
                let served = serve::run(*args).await;
                // After the graceful stop (or a failed start): send the spans still queued.
                traces.shutdown().await;
                served
            }
            Command::Migrate { db } => {
                db.open().await?;
                println!("migrations applied");
                Ok(ExitCode::SUCCESS)
            }
            Command::Keys { command } => keys::run(command).await,
            Command::Audit { command } => audit::run(command).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Reconcile { command: ReconcileCommand::Ledger { db, repair, json } } => reconcile::ledger(db, repair, json).await,
            Command::Reconcile {
                command: ReconcileCommand::Import { db, file, format, ledger_account, org, environment, csv_profile, date_window_days, json },
            } => reconcile::import(db, file, format, ledger_account, org, environment, csv_profile, date_window_days, json).await,
            Command::Reconcile { command: ReconcileCommand::Report { db, date, org, environment, csv } } => {
                reconcile::report(db, date, org, environment, csv).await
            }
            Command::Calendar { year } => {
                let year = year.unwrap_or_else(|| time::OffsetDateTime::now_utc().year());
                for closure in settle_core::calendar::closures(year) {
                    println!("{} {}", closure.date, closure.name);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Openapi => {
                print!("{}", settle_api::openapi::document_json());
                Ok(ExitCode::SUCCESS)
            }
            Command::Flags { command } => flags::run(command).await,
            Command::Orgs { command } => orgs::run(command).await,
            Command::Kms { command } => customers::kms(command).await,
            Command::Sanctions { command } => customers::sanctions(command).await,
            Command::Versions { command } => Ok(versions::run(command)),
            Command::Deprecations { command } => deprecations::run(command).await,
            Command::Listen(args) => listen::listen(args).await,
            Command::Ach { command } => ach::run(command).await,
            Command::Trigger(args) => listen::trigger(args).await,
            Command::Events { command: EventsCommand::Catalog } => {
                print!("{}", settle_api::events::catalog::markdown());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("settle: {e:#}");
            ExitCode::FAILURE
        }
    }
}
