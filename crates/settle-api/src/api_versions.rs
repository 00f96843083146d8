//! `GET /v1/versions`: every API version, newest first, with its changes,
//! deprecation and sunset dates, and which one is the caller's pin.
//!
//! Public, like a changelog page: it is also what the `Link` header of a
//! deprecated version points to. A request that sends a key must send a
//! valid one, and then sees its organization's pin.

use crate::error::ApiError;
use crate::state::AppState;
use crate::versions::{self, NEWEST, VERSIONS};
use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::tenancy::Principal;
use utoipa::ToSchema;

/// One breaking change of a version.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiChange)]
pub struct ApiChangeResponse {
    #[schema(value_type = String)]
    pub id: &'static str,
    #[schema(value_type = String)]
    pub summary: &'static str,
    /// Markdown.
    #[schema(value_type = String)]
    pub description: &'static str,
}

/// One API version.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiVersion)]
pub struct ApiVersionResponse {
    #[schema(value_type = String, example = "api_version")]
    pub object: &'static str,
    /// The version's date, `YYYY-MM-DD`: what `Settle-Version` takes.
    #[schema(example = "2026-11-30")]
    pub id: String,
    #[schema(value_type = String)]
    pub summary: &'static str,
    pub is_newest: bool,
    /// Whether the caller's organization is pinned to this version (always
    /// `false` without a key).
    pub is_pinned: bool,
    /// Midnight UTC of the deprecation date, or null.
    #[schema(format = DateTime)]
    pub deprecated_at: Option<String>,
    /// Midnight UTC of the date after which the version may stop being served, or null.
    #[schema(format = DateTime)]
    pub sunset_at: Option<String>,
    /// Breaking changes this version introduced.
    pub changes: Vec<ApiChangeResponse>,
}

/// Every version, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiVersionList)]
pub struct ApiVersionListResponse {
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<ApiVersionResponse>,
    pub has_more: bool,
    pub newest_version: String,
    /// The caller's organization's pinned version; null without a key.
    pub pinned_version: Option<String>,
}

fn midnight(date: time::Date) -> String {
    Timestamp::from_micros(date.midnight().assume_utc().unix_timestamp().saturating_mul(1_000_000)).to_rfc3339()
}

/// Every API version, newest first, with its breaking changes and deprecation dates. No key needed; with one, shows the organization's pin.
#[utoipa::path(get, path = "/v1/versions", tag = "Versions", operation_id = "list_api_versions", security((), ("api_key" = [])),
    responses((status = 200, description = "The versions.", body = ApiVersionListResponse)))]
pub async fn list(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    let pinned: Option<ApiVersion> = if parts.headers.contains_key(header::AUTHORIZATION) {
        Some(versions::resolve_pin(Principal::from_request_parts(&mut parts, &state).await?.api_version))
    } else {
        None
    };
    let data = VERSIONS
        .iter()
        .map(|v| ApiVersionResponse {
            object: "api_version",
            id: v.version.to_string(),
            summary: v.summary,
            is_newest: v.version == NEWEST,
            is_pinned: pinned == Some(v.version),
            deprecated_at: v.deprecated_at.map(midnight),
            sunset_at: v.sunset_at.map(midnight),
            changes: v.changes.iter().map(|c| ApiChangeResponse { id: c.id, summary: c.summary, description: c.description.trim() }).collect(),
        })
        .collect();
    Ok(Json(ApiVersionListResponse {
        object: "list",
        data,
        has_more: false,
        newest_version: NEWEST.to_string(),
        pinned_version: pinned.map(|v| v.to_string()),
    })
    .into_response())
}
