//! Sanctions screening: the loaded lists in memory, screening a customer
//! (on create, on a change of what identifies them, and on every list
//! update), and the resolution of potential matches by a person (audited).
//!
//! Outcomes: `clear`, `potential_match` (the matched entries and their
//! scores, see `settle_core::customers::matching` for the threshold),
//! then, by `POST /v1/screenings/{id}/resolve`, `confirmed_match` or
//! `false_positive`. A later screening whose matches were all resolved as
//! false positives for this customer before is `clear`.

use super::profile::{Personal, unseal};
use super::{Actor, Keyed, conflict, idempotency_record, json_response, keyed, reason_of};
use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::observe::{ClientIp, RequestId};
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::customers::matching::{Index, ListedParty, Subject};
use settle_core::ids::{CustomerId, ScreeningId};
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::customers::{SanctionsListRecord, ScreeningRecord};
use std::sync::{Arc, RwLock};
use utoipa::{IntoParams, ToSchema};

/// How often a server looks for a new list snapshot.
pub const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Customers read per page while re-screening after a list update.
const RESCREEN_PAGE: i64 = 500;

/// The lists a server screens against.
pub struct Loaded {
    pub lists: Vec<SanctionsListRecord>,
    pub index: Index,
    /// For each party of the index, the list it comes from.
    pub list_of: Vec<usize>,
}

#[derive(Default)]
pub struct Screener {
    loaded: RwLock<Option<Arc<Loaded>>>,
}

impl Screener {
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded.read().ok().and_then(|l| l.clone())
    }

    fn set(&self, loaded: Loaded) {
        if let Ok(mut slot) = self.loaded.write() {
            *slot = Some(Arc::new(loaded));
        }
    }
}

/// One matched list entry, as stored and answered (public list data only).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
pub struct MatchJson {
    pub list_id: String,
    /// `ofac_sdn` or `internal`.
    pub source: String,
    /// The list's own reference (OFAC's `ent_num`).
    pub reference: String,
    /// The listed name or alias that matched.
    pub name: String,
    /// 0.88 to 1: see docs/compliance.md.
    pub score: f64,
    pub programs: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Screening)]
pub struct ScreeningJson {
    #[schema(value_type = String, example = "screening")]
    pub object: &'static str,
    #[schema(example = "scr_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    pub customer_id: String,
    /// `clear`, `potential_match`, `confirmed_match` or `false_positive`.
    pub status: String,
    /// `create`, `update` or `list_update`.
    pub trigger: String,
    pub list_ids: Vec<String>,
    pub matches: Vec<MatchJson>,
    pub resolution_reason: Option<String>,
    pub resolved_by: Option<String>,
    #[schema(format = DateTime)]
    pub resolved_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

pub fn screening_json(s: &ScreeningRecord) -> ScreeningJson {
    ScreeningJson {
        object: "screening",
        id: s.id.clone(),
        customer_id: s.customer_id.clone(),
        status: s.status.clone(),
        trigger: s.trigger.clone(),
        list_ids: s.list_ids.split(',').filter(|l| !l.is_empty()).map(str::to_owned).collect(),
        matches: serde_json::from_str(&s.matches).unwrap_or_default(),
        resolution_reason: s.resolution_reason.clone(),
        resolved_by: s.resolved_by.clone(),
        resolved_at: s.resolved_at.map(|t| Timestamp::from_micros(t).to_rfc3339()),
        created_at: Timestamp::from_micros(s.created_at).to_rfc3339(),
    }
}

fn subject(p: &Personal) -> Subject {
    Subject {
        names: p.screening_names(),
        birth_year: p.date_of_birth.as_deref().and_then(|d| d.get(..4)).and_then(|y| y.parse().ok()),
        country: p.nationality.clone().or_else(|| p.address.as_ref().map(|a| a.country.clone())),
    }
}

/// Screens `p` against the loaded lists: `None` when no list is loaded.
pub async fn screen(
    state: &AppState,
    tenant: TenantId,
    customer_id: &str,
    p: &Personal,
    trigger: &str,
    now: Timestamp,
) -> Result<Option<ScreeningRecord>, ApiError> {
    let Some(loaded) = state.customers.screener.current() else { return Ok(None) };
    let hits = loaded.index.screen(&subject(p));
    let matches: Vec<MatchJson> = hits
        .iter()
        .filter_map(|h| {
            let party = loaded.index.parties().get(h.party)?;
            let list = loaded.lists.get(*loaded.list_of.get(h.party)?)?;
            Some(MatchJson {
                list_id: list.id.clone(),
                source: list.source.clone(),
                reference: party.reference.clone(),
                name: h.matched_name.clone(),
                score: (h.score * 1000.0).round() / 1000.0,
                programs: party.programs.clone(),
            })
        })
        .collect();
    let status = if matches.is_empty() {
        "clear"
    } else {
        // Matches resolved as false positives for this customer before do not count again.
        let cleared: Vec<MatchJson> = state
            .store
            .false_positive_matches(tenant, customer_id.to_owned())
            .await?
            .iter()
            .flat_map(|m| serde_json::from_str::<Vec<MatchJson>>(m).unwrap_or_default())
            .collect();
        if matches.iter().all(|m| cleared.iter().any(|c| c.source == m.source && c.reference == m.reference)) { "clear" } else { "potential_match" }
    };
    Ok(Some(ScreeningRecord {
        id: state.customers.ids.screening().to_string(),
        tenant,
        customer_id: customer_id.to_owned(),
        list_ids: loaded.lists.iter().map(|l| l.id.clone()).collect::<Vec<_>>().join(","),
        trigger: trigger.to_owned(),
        status: status.to_owned(),
        matches: serde_json::to_string(&matches).map_err(|e| ApiError::internal(&e))?,
        resolution_reason: None,
        resolved_by: None,
        resolved_at: None,
        created_at: now.micros(),
    }))
}

/// Loads the newest snapshot of each list when it changed, and re-screens
/// every customer against a snapshot no server has re-screened against yet.
/// Returns how many customers this call re-screened.
pub async fn refresh(state: &AppState) -> Result<usize, ApiError> {
    let latest = state.store.latest_sanctions_lists().await?;
    let current_ids: Vec<String> = state.customers.screener.current().map(|l| l.lists.iter().map(|x| x.id.clone()).collect()).unwrap_or_default();
    let latest_ids: Vec<String> = latest.iter().map(|l| l.id.clone()).collect();
    if latest.is_empty() || latest_ids == current_ids {
        return Ok(0);
    }
    let mut parties = Vec::new();
    let mut list_of = Vec::new();
    for (i, list) in latest.iter().enumerate() {
        for e in state.store.sanctions_entries(list.id.clone()).await? {
            parties.push(ListedParty {
                reference: e.reference,
                names: e.names,
                birth_year: e.birth_year.and_then(|y| i32::try_from(y).ok()),
                countries: e.countries,
                programs: e.programs,
            });
            list_of.push(i);
        }
    }
    let index = tokio::task::spawn_blocking(move || Index::new(parties)).await.map_err(|e| ApiError::internal(&e))?;
    state.customers.screener.set(Loaded { lists: latest.clone(), index, list_of });
    tracing::info!(lists = ?latest_ids, "sanctions lists loaded");
    let now = state.clock.now();
    let mut claimed = false;
    for list in &latest {
        if !current_ids.contains(&list.id) && state.store.claim_rescreen(list.id.clone(), now.micros()).await? {
            claimed = true;
        }
    }
    if !claimed {
        return Ok(0);
    }
    rescreen_all(state).await
}

async fn rescreen_all(state: &AppState) -> Result<usize, ApiError> {
    let mut after = String::new();
    let mut count = 0;
    loop {
        let page = state.store.customers_after(after.clone(), RESCREEN_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for c in &page {
            let Some(p) = unseal(state, c).await? else { continue };
            let now = state.clock.now();
            if let Some(s) = screen(state, c.tenant, &c.id, &p, "list_update", now).await? {
                let audit = Actor::system(c.tenant, "system").audit(
                    &state.customers.ids,
                    "screening.created",
                    ("screening", &s.id),
                    vec![String::from("status")],
                    Some(format!("trigger list_update: {}", s.status)),
                    now,
                );
                let blocks = super::profile::screening_blocks(&s.status);
                state.store.record_screening(s, vec![audit]).await?;
                if blocks || super::profile::screening_blocks(&c.screening_status) {
                    state.customers.blocked.invalidate(c.tenant);
                }
                count += 1;
            }
        }
    }
    tracing::info!(customers = count, "re-screened after a sanctions list update");
    Ok(count)
}

/// Runs [`refresh`] every [`REFRESH_INTERVAL`] until the task is dropped.
pub fn spawn_refresher(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = refresh(&state).await {
                tracing::warn!(code = e.code, "sanctions list refresh failed; will retry");
            }
            tokio::time::sleep(REFRESH_INTERVAL).await;
        }
    })
}

// ---- handlers -------------------------------------------------------------

async fn load_screening(state: &AppState, tenant: TenantId, id: &str) -> Result<ScreeningRecord, ApiError> {
    if ScreeningId::parse(id).is_none() {
        return Err(ApiError::not_found("screening"));
    }
    state.store.get_screening(tenant, id.to_owned()).await?.ok_or_else(|| ApiError::not_found("screening"))
}

#[utoipa::path(get, path = "/v1/screenings/{id}", tag = "Screenings", operation_id = "get_screening",
    params(("id" = String, Path, description = "A screening id (`scr_…`).")),
    responses((status = 200, description = "The screening.", body = ScreeningJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let s = load_screening(&state, principal.tenant, &id).await?;
    Ok(axum::Json(screening_json(&s)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScreeningListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    /// Only this customer's screenings.
    pub customer_id: Option<String>,
}

#[utoipa::path(get, path = "/v1/screenings", tag = "Screenings", operation_id = "list_screenings",
    params(ScreeningListParams),
    responses((status = 200, description = "Screenings, newest first.", body = inline(crate::render::ListJson<ScreeningJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let params: ScreeningListParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| ScreeningId::parse(id).is_some())?;
    if params.customer_id.as_deref().is_some_and(|c| CustomerId::parse(c).is_none()) {
        return Err(ApiError::invalid("customer_id", "customer_id must be a customer id (cus_…)"));
    }
    let result = state.store.list_screenings(principal.tenant, params.customer_id, page).await?;
    Ok(axum::Json(crate::render::list(result.items.iter().map(screening_json).collect(), result.has_more)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveScreeningRequest {
    /// `confirmed_match` or `false_positive`.
    pub resolution: String,
    /// Why, for the audit (1 to 500 characters).
    pub reason: String,
}

/// Resolves a potential match: `confirmed_match` blocks the customer's
/// capabilities; `false_positive` clears them (and the same entries will
/// not count against this customer again).
#[utoipa::path(post, path = "/v1/screenings/{id}/resolve", tag = "Screenings", operation_id = "resolve_screening",
    params(("id" = String, Path, description = "A screening id (`scr_…`)."), crate::openapi::IdempotencyKey),
    request_body = ResolveScreeningRequest,
    responses((status = 200, description = "The resolved screening.", body = ScreeningJson)))]
pub async fn resolve(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<ResolveScreeningRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/screenings/{id}/resolve"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let resolution = match body.value.resolution.as_str() {
        r @ ("confirmed_match" | "false_positive") => r.to_owned(),
        _ => return Err(ApiError::invalid("resolution", "resolution must be confirmed_match or false_positive")),
    };
    let reason = reason_of(&body.value.reason, "reason")?;
    let now = state.clock.now();
    let before = load_screening(&state, principal.tenant, &id).await?;
    if before.status != "potential_match" || before.resolved_at.is_some() {
        return Err(conflict("screening_not_resolvable", format!("only an unresolved potential match can be resolved (this screening is {})", before.status)));
    }
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let mut after = before.clone();
    after.status = resolution.clone();
    after.resolution_reason = Some(reason.clone());
    after.resolved_by = Some(actor.actor.clone());
    after.resolved_at = Some(now.micros());
    let audit = vec![actor.audit(
        &state.customers.ids,
        "screening.resolved",
        ("screening", &id),
        vec![String::from("status")],
        Some(format!("{resolution}: {reason}")),
        now,
    )];
    let (response, bytes) = json_response(StatusCode::OK, &screening_json(&after))?;
    let idem = idempotency_record(principal.tenant, key, StatusCode::OK, bytes, now);
    if !state.store.resolve_screening(after, audit, idem).await? {
        return Err(conflict("screening_not_resolvable", "the screening was resolved meanwhile"));
    }
    // A confirmation blocks the customer's accounts on this server at once.
    state.customers.blocked.invalidate(principal.tenant);
    Ok(response)
}
