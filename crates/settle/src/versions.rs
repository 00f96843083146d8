//! `settle versions`: the API versions this binary serves, and the
//! changelog generated from them (committed as `docs/api-changelog.md`).

use clap::Subcommand;
use settle_api::versions::{self, NEWEST, VERSIONS};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum VersionsCommand {
    /// List versions, newest first, with deprecation and sunset dates.
    List,
    /// Print the API changelog (Markdown), as committed in docs/api-changelog.md.
    Changelog,
}

pub fn run(command: VersionsCommand) -> ExitCode {
    match command {
        VersionsCommand::List => {
            let day = |d: Option<time::Date>| d.map_or_else(|| String::from("-"), |d| settle_core::api_version::ApiVersion::from_date(d).to_string());
            for v in VERSIONS {
                let state = if v.version == NEWEST {
                    "newest"
                } else if v.deprecated_at.is_some() {
                    "deprecated"
                } else {
                    "supported"
                };
                println!("{}\t{state}\tdeprecated {}\tsunset {}", v.version, day(v.deprecated_at), day(v.sunset_at));
            }
        }
        VersionsCommand::Changelog => print!("{}", versions::changelog_markdown()),
    }
    ExitCode::SUCCESS
}
