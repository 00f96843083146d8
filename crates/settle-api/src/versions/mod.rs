//! Date-based API versions (`Settle-Version: YYYY-MM-DD`), in the manner of
//! Stripe's: handlers only know the newest shape; each breaking change is
//! one module below with its date, a description, and the transformations
//! that turn a newest-shape response into the shape before the change (and
//! a request in the older shape into the newest). The version layer
//! ([`layer`]) walks them for every request whose version is older.
//!
//! To ship a breaking change: add a module with a [`Change`], add a
//! [`Version`] at the top of [`VERSIONS`] (or add the change to an
//! unreleased newest version), move [`NEWEST`], and regenerate
//! `docs/api-changelog.md` with `settle versions changelog`.

pub mod account_lock_version;
pub mod json;
pub mod layer;

use crate::error::{ApiError, ErrorType};
use axum::http::{HeaderValue, Method, StatusCode};
use json::Json;
use settle_core::api_version::ApiVersion;
use time::macros::date;

/// The request and response header that names a version.
pub const HEADER: &str = "settle-version";

/// The shape the API shipped with (v1, 2026-11-25). Organizations that
/// existed before versioning are pinned to it.
pub const INITIAL: ApiVersion = ApiVersion::from_date(date!(2026 - 11 - 25));
/// The newest version: new organizations are pinned to it, and requests that
/// carry no key and no `Settle-Version` are rendered in it.
pub const NEWEST: ApiVersion = ApiVersion::from_date(date!(2026 - 11 - 30));

/// One breaking change. Its transformations work on JSON trees and must be
/// exact inverses of what changed, for every endpoint the change touches.
pub struct Change {
    /// Stable, snake_case.
    pub id: &'static str,
    /// One line, for lists.
    pub summary: &'static str,
    /// Markdown paragraphs: what changed, why, and how to upgrade.
    pub description: &'static str,
    /// Turns a newest-shape response body (objects, lists, batch results,
    /// error envelopes) into the shape before this change.
    pub downgrade_response: fn(&mut Json),
    /// Renames an error's `param` into the name the older shape used, when it differs.
    pub downgrade_param: fn(&str) -> Option<String>,
    /// Whether this change alters the request body of `method route` (a matched route pattern).
    pub touches_request: fn(&Method, &str) -> bool,
    /// Turns an older-shape request body into the newest shape. `Ok(true)`
    /// when it changed something; an error refuses the request (for example
    /// a field only the newer shape has).
    pub upgrade_request: fn(&str, &mut Json) -> Result<bool, ApiError>,
}

/// A released version: the changes it introduced and, once it is on its
/// way out, when it was deprecated and when it may be removed.
pub struct Version {
    pub version: ApiVersion,
    /// One line describing the version as a whole.
    pub summary: &'static str,
    /// Breaking changes introduced by this version (empty for the initial one).
    pub changes: &'static [&'static Change],
    pub deprecated_at: Option<time::Date>,
    pub sunset_at: Option<time::Date>,
}

/// Every version, newest first.
pub static VERSIONS: &[Version] = &[
    Version {
        version: NEWEST,
        summary: "The account's optimistic-locking counter is named for what it is.",
        changes: &[&account_lock_version::CHANGE],
        deprecated_at: None,
        sunset_at: None,
    },
    Version {
        version: INITIAL,
        summary: "The first shape of the API: accounts, transactions, holds, reversals, batches and balances.",
        changes: &[],
        deprecated_at: Some(date!(2026 - 11 - 30)),
        sunset_at: Some(date!(2027 - 06 - 01)),
    },
];

pub fn find(version: ApiVersion) -> Option<&'static Version> {
    VERSIONS.iter().find(|v| v.version == version)
}

/// The version a stored pin stands for on this server: itself when known;
/// otherwise (a pin set by a newer server) the newest known version before
/// it, or the oldest.
pub fn resolve_pin(pin: ApiVersion) -> ApiVersion {
    VERSIONS.iter().map(|v| v.version).find(|v| *v <= pin).unwrap_or_else(|| VERSIONS.last().map_or(NEWEST, |v| v.version))
}

/// The changes a response in `version` undoes, newest first.
pub fn changes_after(version: ApiVersion) -> impl Iterator<Item = &'static Change> + Clone {
    VERSIONS.iter().take_while(move |v| v.version > version).flat_map(|v| v.changes.iter().rev().copied())
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, "invalid_api_version", message).with_param("Settle-Version")
}

fn known_list() -> String {
    VERSIONS.iter().map(|v| v.version.to_string()).collect::<Vec<_>>().join(", ")
}

/// The version a `Settle-Version` header names: a known date, or `invalid_api_version`.
pub fn from_header(value: &HeaderValue) -> Result<ApiVersion, ApiError> {
    let text = value.to_str().map_err(|_| invalid(format!("Settle-Version must be a date YYYY-MM-DD; known versions: {}", known_list())))?;
    let version =
        ApiVersion::parse(text.trim()).ok_or_else(|| invalid(format!("Settle-Version must be a date YYYY-MM-DD; known versions: {}", known_list())))?;
    find(version).map(|v| v.version).ok_or_else(|| invalid(format!("{version} is not an API version; known versions: {}", known_list())))
}

/// `docs/api-changelog.md`, generated from [`VERSIONS`].
pub fn changelog_markdown() -> String {
    let mut out = String::from(
        "# API changelog\n\n\
         <!-- Generated from crates/settle-api/src/versions/ by `settle versions changelog`; do not edit. -->\n\n\
         Every version of the Settle API, newest first. A version is the date its\n\
         breaking changes shipped; send `Settle-Version: <date>` or rely on your\n\
         organization's pinned version. How versioning and deprecation work:\n\
         [versioning.md](versioning.md).\n\n\
         | Version | Deprecated | Sunset | Changes |\n|---|---|---|---|\n",
    );
    let day = |d: Option<time::Date>| d.map_or_else(|| String::from("—"), |d| ApiVersion::from_date(d).to_string());
    for v in VERSIONS {
        let changes =
            if v.changes.is_empty() { String::from("initial version") } else { v.changes.iter().map(|c| format!("`{}`", c.id)).collect::<Vec<_>>().join(", ") };
        out.push_str(&format!("| [{0}](#{0}) | {1} | {2} | {3} |\n", v.version, day(v.deprecated_at), day(v.sunset_at), changes));
    }
    for v in VERSIONS {
        out.push_str(&format!("\n## {}\n\n{}\n", v.version, v.summary));
        if let Some(d) = v.deprecated_at {
            out.push_str(&format!("\n**Deprecated** since {}", ApiVersion::from_date(d)));
            match v.sunset_at {
                Some(s) => out.push_str(&format!("; it may stop being served after {} (the `Sunset` date).\n", ApiVersion::from_date(s))),
                None => out.push_str(".\n"),
            }
        }
        for c in v.changes {
            out.push_str(&format!("\n### `{}`: {}\n\n{}\n", c.id, c.summary, c.description.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_newest_first_with_named_ends_and_unique_change_ids() {
        assert_eq!(VERSIONS.first().map(|v| v.version), Some(NEWEST));
        assert_eq!(VERSIONS.last().map(|v| v.version), Some(INITIAL));
        assert!(VERSIONS.windows(2).all(|w| w[0].version > w[1].version), "strictly newest first");
        let mut ids: Vec<&str> = VERSIONS.iter().flat_map(|v| v.changes.iter().map(|c| c.id)).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count, "change ids are unique");
        for v in VERSIONS {
            assert_eq!(ApiVersion::parse(&v.version.to_string()), Some(v.version));
            if let (Some(d), Some(s)) = (v.deprecated_at, v.sunset_at) {
                assert!(d < s, "a sunset comes after the deprecation");
            }
        }
    }

    #[test]
    fn pins_resolve_to_a_known_version() {
        assert_eq!(resolve_pin(INITIAL), INITIAL);
        assert_eq!(resolve_pin(NEWEST), NEWEST);
        assert_eq!(ApiVersion::parse("2030-01-01").map(resolve_pin), Some(NEWEST));
        assert_eq!(ApiVersion::parse("2026-11-27").map(resolve_pin), Some(INITIAL));
        assert_eq!(ApiVersion::parse("2020-01-01").map(resolve_pin), Some(INITIAL));
    }

    #[test]
    fn changes_after_walks_back_from_newest() {
        assert_eq!(changes_after(NEWEST).count(), 0);
        assert_eq!(changes_after(INITIAL).map(|c| c.id).collect::<Vec<_>>(), ["account_lock_version"]);
    }
}
