//! `GET /v1/audit_events`: every audited state change, newest first, from
//! two hash-chained trails under one cursor: the compliance audit chain of
//! customers, consents, screenings and documents (chained per environment)
//! and the ledger log's changes of accounts and transactions (one chain per
//! database; shown through the environment's ledger events). Each record
//! says who, what, which fields, why, from which request and address, and
//! where it sits in its chain. Changed fields are named, never valued: the
//! trails hold no personal data.

use crate::auth::require;
use crate::error::ApiError;
use crate::pagination::{page, parse_query};
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::ids::{AuditEventId, EventId};
use settle_core::tenancy::{Principal, Scope};
use settle_store::customers::{AuditFilter, AuditTrail, StoredAudit};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditEventJson {
    #[schema(value_type = String, example = "audit_event")]
    pub object: &'static str,
    /// `aev_…` for compliance records; a ledger record has its event's id (`evt_…`).
    pub id: String,
    /// `compliance` (the environment's compliance audit chain) or `ledger`
    /// (the ledger log, which `settle audit verify` checks).
    #[schema(example = "compliance")]
    pub trail: &'static str,
    /// Position in its trail's chain, from 1 (the ledger log's sequence for `ledger`).
    pub sequence: i64,
    /// The API key id, `cli`, `sandbox` or `system`.
    pub actor: String,
    /// For example `customer.created`, `consent.revoked`, `screening.resolved`,
    /// `account.created`, `transaction.posted`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// Names of the fields that changed (values are never recorded).
    pub changed_fields: Vec<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The address of the API client that made the request (your backend,
    /// or the proxy in front of Settle); `null` for `system` actions.
    pub client_ip: Option<String>,
    /// SHA-256 over the previous record's hash and this record (for
    /// `ledger`: the log record holding this change, which may hold several).
    pub hash: String,
    pub previous_hash: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

fn json(trail: AuditTrail, a: &StoredAudit) -> AuditEventJson {
    let r = &a.record;
    AuditEventJson {
        object: "audit_event",
        id: r.id.clone(),
        trail: trail.as_str(),
        sequence: a.seq,
        actor: r.actor.clone(),
        action: r.action.clone(),
        resource_type: r.resource_type.clone(),
        resource_id: r.resource_id.clone(),
        changed_fields: r.changed_fields.clone(),
        reason: r.reason.clone(),
        request_id: r.request_id.clone(),
        correlation_id: r.correlation_id.clone(),
        client_ip: r.client_ip.clone(),
        hash: a.hash.clone(),
        previous_hash: a.prev_hash.clone(),
        created_at: Timestamp::from_micros(r.created_at).to_rfc3339(),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// Only events about this object (`cus_…`, `cns_…`, `scr_…`, `acct_…`, `ltx_…`, `crv_…`, `ba_…`).
    pub resource_id: Option<String>,
    /// `customer`, `consent`, `screening`, `account`, `transaction`, and from
    /// the ACH rail's automatic actions `compliance_review` and `bank_account`.
    pub resource_type: Option<String>,
    pub action: Option<String>,
    /// An API key id, `cli`, `sandbox` or `system`.
    pub actor: Option<String>,
    /// `compliance` or `ledger`: only that trail (both by default).
    pub trail: Option<String>,
    /// Only events created at or after this instant (RFC 3339).
    #[serde(rename = "created[gte]")]
    #[param(rename = "created[gte]", format = DateTime)]
    pub created_gte: Option<String>,
    /// Only events created before this instant (RFC 3339).
    #[serde(rename = "created[lt]")]
    #[param(rename = "created[lt]", format = DateTime)]
    pub created_lt: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit_events", tag = "Audit", operation_id = "list_audit_events",
    params(AuditListParams),
    responses((status = 200, description = "Audit events, newest first.", body = inline(crate::render::ListJson<AuditEventJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::AuditRead)?;
    let params: AuditListParams = parse_query(query.as_deref())?;
    let page =
        page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| AuditEventId::parse(id).is_some() || EventId::parse(id).is_some())?;
    let trails: &[AuditTrail] = match params.trail.as_deref() {
        None => &[AuditTrail::Compliance, AuditTrail::Ledger],
        Some("compliance") => &[AuditTrail::Compliance],
        Some("ledger") => &[AuditTrail::Ledger],
        Some(_) => return Err(ApiError::invalid("trail", "trail must be compliance or ledger")),
    };
    let filter = AuditFilter {
        resource_id: params.resource_id,
        resource_type: params.resource_type,
        action: params.action,
        actor: params.actor,
        created_gte: crate::events::instant("created[gte]", params.created_gte)?.map(|t| t.micros()),
        created_lt: crate::events::instant("created[lt]", params.created_lt)?.map(|t| t.micros()),
    };
    let result = state.store.list_audit(principal.tenant, filter, trails, page).await?;
    Ok(axum::Json(crate::render::list(result.items.iter().map(|(trail, a)| json(*trail, a)).collect(), result.has_more)).into_response())
}
