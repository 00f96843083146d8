//! `settle deprecations report`: who still uses deprecated API versions and
//! endpoints. Servers count uses in memory and store them every few seconds
//! and when they stop, so the report lags a running server by at most one
//! flush interval (`--deprecation-flush-secs`).

use crate::DatabaseArgs;
use anyhow::Context;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DeprecationsCommand {
    /// One line per (API key, deprecated thing): organization, environment, key id, what, count, first and last use.
    Report {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(command: DeprecationsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeprecationsCommand::Report { json, db } => {
            let store = db.open().await?;
            let rows = store.deprecation_usage().await.context("reading deprecation counts")?;
            if !json && rows.is_empty() {
                println!("no deprecated API use recorded");
            }
            for r in rows {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "org": r.org_name,
                            "org_id": r.org_id.as_str(),
                            "environment": r.environment.as_str(),
                            "key_id": r.key_id.as_str(),
                            "deprecated": r.deprecated,
                            "count": r.count,
                            "first_seen_at": r.first_seen_at.to_rfc3339(),
                            "last_seen_at": r.last_seen_at.to_rfc3339(),
                        })
                    );
                } else {
                    println!("{}\t{}\t{}\t{}\t{}\tlast {}", r.org_name, r.environment.as_str(), r.key_id, r.deprecated, r.count, r.last_seen_at.to_rfc3339());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
