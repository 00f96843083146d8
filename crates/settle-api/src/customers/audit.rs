//! `GET /v1/audit_events`: the compliance audit trail of customers,
//! consents and screenings (who, what, which fields, why, from which
//! request), newest first, hash-chained per environment. Changed fields
//! are named, never valued: the trail holds no personal data.

use crate::auth::require;
use crate::error::ApiError;
use crate::pagination::{page, parse_query};
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::ids::AuditEventId;
use settle_core::tenancy::{Principal, Scope};
use settle_store::customers::{AuditFilter, StoredAudit};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditEventJson {
    #[schema(value_type = String, example = "audit_event")]
    pub object: &'static str,
    pub id: String,
    /// Position in this environment's chain, from 1.
    pub sequence: i64,
    /// The API key id, `cli`, `sandbox` or `system`.
    pub actor: String,
    /// For example `customer.created`, `consent.revoked`, `screening.resolved`.
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
    /// SHA-256 over the previous event's hash and this event.
    pub hash: String,
    pub previous_hash: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

fn json(a: &StoredAudit) -> AuditEventJson {
    let r = &a.record;
    AuditEventJson {
        object: "audit_event",
        id: r.id.clone(),
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
    /// Only events about this object (`cus_…`, `cns_…`, `scr_…`).
    pub resource_id: Option<String>,
    /// `customer`, `consent` or `screening`.
    pub resource_type: Option<String>,
    pub action: Option<String>,
    /// An API key id, `sandbox` or `system`.
    pub actor: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit_events", tag = "Audit", operation_id = "list_audit_events",
    params(AuditListParams),
    responses((status = 200, description = "Audit events, newest first.", body = inline(crate::render::ListJson<AuditEventJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::AuditRead)?;
    let params: AuditListParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| AuditEventId::parse(id).is_some())?;
    let filter = AuditFilter { resource_id: params.resource_id, resource_type: params.resource_type, action: params.action, actor: params.actor };
    let result = state.store.list_compliance_audit(principal.tenant, filter, page).await?;
    Ok(axum::Json(crate::render::list(result.items.iter().map(json).collect(), result.has_more)).into_response())
}
