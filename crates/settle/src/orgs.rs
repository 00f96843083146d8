//! `settle orgs`: list organizations with their pinned API version, and
//! move an organization's pin. A moved pin takes effect within a second on
//! every server (servers cache key lookups, with the pin, for 500 ms).

use crate::DatabaseArgs;
use anyhow::Context;
use clap::Subcommand;
use settle_api::versions;
use settle_core::api_version::ApiVersion;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum OrgsCommand {
    /// List organizations and the API version each is pinned to.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Pin an organization to an API version (YYYY-MM-DD; see `settle versions list`).
    SetVersion {
        #[arg(long)]
        org: String,
        version: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(command: OrgsCommand) -> anyhow::Result<ExitCode> {
    match command {
        OrgsCommand::List { json, db } => {
            let store = db.open().await?;
            for o in store.organizations().await.context("reading organizations")? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": o.id.as_str(), "name": o.name, "api_version": o.api_version.to_string(), "created_at": o.created_at.to_rfc3339()})
                    );
                } else {
                    println!("{}\t{}", o.name, o.api_version);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OrgsCommand::SetVersion { org, version, db } => {
            let known = || versions::VERSIONS.iter().map(|v| v.version.to_string()).collect::<Vec<_>>().join(", ");
            let Some(version) = ApiVersion::parse(&version).and_then(versions::find).map(|v| v.version) else {
                eprintln!("{version:?} is not an API version; known versions: {}", known());
                return Ok(ExitCode::FAILURE);
            };
            let store = db.open().await?;
            if store.set_organization_api_version(&org, version).await.context("pinning the organization")? {
                println!("{org} is pinned to {version}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no organization {org:?}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
