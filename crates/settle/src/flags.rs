//! `settle flags`: stage new behaviour per organization and roll it back at
//! once. Servers read rollouts again every second, so a change reaches every
//! server sharing the database within about a second.

use crate::DatabaseArgs;
use anyhow::Context;
use clap::Subcommand;
use settle_core::clock::{Clock, SystemClock};
use settle_core::flags::{self, Rollout};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum FlagsCommand {
    /// Every flag the code reads: its default, and its rollout if one is set.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Give a flag's behaviour to the listed organizations and to a share of all others.
    Set {
        name: String,
        /// Organization names that have it whatever the percentage (comma-separated).
        #[arg(long, value_delimiter = ',')]
        orgs: Vec<String>,
        /// Share of the other organizations, 0 to 100 (0: only the listed ones).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: u8,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove a flag's rollout: its default applies again.
    Clear {
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn known() -> String {
    flags::FLAGS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

pub async fn run(command: FlagsCommand) -> anyhow::Result<ExitCode> {
    match command {
        FlagsCommand::List { json, db } => {
            let store = db.open().await?;
            let stored = store.feature_flags().await.context("reading feature flags")?;
            let names: std::collections::HashMap<String, String> =
                store.organizations().await.context("reading organizations")?.into_iter().map(|o| (o.id.as_str().to_owned(), o.name)).collect();
            for flag in flags::FLAGS {
                let rollout = stored.iter().find(|r| r.name == flag.name);
                let orgs: Vec<&str> =
                    rollout.map(|r| r.rollout.orgs.iter().map(|id| names.get(id).map_or(id.as_str(), String::as_str)).collect()).unwrap_or_default();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": flag.name,
                            "description": flag.description,
                            "default": flag.default_on,
                            "rollout": rollout.map(|r| serde_json::json!({"percent": r.rollout.percent, "orgs": orgs, "updated_at": r.updated_at.to_rfc3339()})),
                        })
                    );
                } else {
                    let state = match rollout {
                        None => format!("default {}", if flag.default_on { "on" } else { "off" }),
                        Some(r) => format!("{}% + [{}]", r.rollout.percent, orgs.join(", ")),
                    };
                    println!("{}\t{state}\t{}", flag.name, flag.description);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FlagsCommand::Set { name, orgs, percent, db } => {
            if flags::definition(&name).is_none() {
                eprintln!("no flag {name:?}; known flags: {}", known());
                return Ok(ExitCode::FAILURE);
            }
            let store = db.open().await?;
            let all = store.organizations().await.context("reading organizations")?;
            let mut ids = Vec::new();
            for org in orgs.iter().filter(|o| !o.is_empty()) {
                match all.iter().find(|o| &o.name == org) {
                    Some(o) => ids.push(o.id.as_str().to_owned()),
                    None => {
                        eprintln!("no organization {org:?}; nothing was changed");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            store.set_feature_flag(&name, &Rollout { percent, orgs: ids }, SystemClock.now()).await.context("setting the flag")?;
            println!("{name}: {percent}% of organizations, plus [{}]", orgs.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        FlagsCommand::Clear { name, db } => {
            let Some(flag) = flags::definition(&name) else {
                eprintln!("no flag {name:?}; known flags: {}", known());
                return Ok(ExitCode::FAILURE);
            };
            let store = db.open().await?;
            let removed = store.clear_feature_flag(&name).await.context("clearing the flag")?;
            let default = if flag.default_on { "on" } else { "off" };
            println!("{name}: {} (default {default})", if removed { "rollout removed" } else { "no rollout was set" });
            Ok(ExitCode::SUCCESS)
        }
    }
}
