//! Sandbox fault injection: `/v1/test_helpers/faults` (set, read, clear),
//! what the delivery worker asks before each attempt, and what the ACH
//! rail's simulated bank asks before it takes a file or sends a
//! notification ([`Faults::rails`], docs/sandbox.md).
//!
//! Faults are stored per tenant (organization × environment, sandbox only)
//! and every server reads them again about once a second with the feature
//! flags' [`Refreshed`] pattern, so a fault set through one server reaches
//! every server sharing the database within about a second (at once on the
//! server that took the request). A fault ends at its `until` by the
//! injected clock. Live keys never reach these paths (404, as every test
//! helper), and the worker never looks for faults of live deliveries.

use crate::auth::require;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorType};
use crate::feature_flags::Refreshed;
use crate::metrics::FaultLabels;
use crate::state::AppState;
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rand::Rng;
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::faults::{FaultEndError, FaultMode, FaultTarget, MAX_FAULT_DURATION_SECS, MAX_FAULTS_PER_TENANT, Probability, check_until};
use settle_core::tenancy::{Environment, Principal, Scope, TenantId};
use settle_store::Store;
use settle_store::faults::FaultRecord;
use std::sync::Arc;
use utoipa::ToSchema;

/// Every tenant's faults in force, as this server last read them.
#[derive(Debug, Default)]
pub struct Faults {
    all: Refreshed<Arc<Vec<FaultRecord>>>,
}

/// The modes that fired for one delivery (each rolled on its probability).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fired {
    pub timeout: bool,
    pub fail: bool,
    pub duplicate: bool,
    pub reorder: bool,
}

impl Faults {
    /// Which of `tenant`'s faults on `target` fire now, each rolled
    /// independently. Only sandboxes have faults; live answers none without a look.
    pub async fn fire(&self, store: &Store, tenant: TenantId, environment: Environment, target: FaultTarget, now: Timestamp) -> Fired {
        if environment != Environment::Sandbox {
            return Fired::default();
        }
        self.fire_stored(store, tenant, target, now).await
    }

    /// Which of `tenant`'s `rails` faults fire now, each fired one counted in
    /// `settle_faults_injected`. The rail's workers know a tenant, not its
    /// environment; that is enough, since only sandbox keys can set a fault
    /// (a live tenant holds none, and none is looked for beyond the cached list).
    /// Only `modes` (those that mean something where the rail asks) are
    /// rolled and counted.
    pub async fn rails(&self, state: &AppState, tenant: TenantId, modes: &[FaultMode]) -> Fired {
        let all = self.fire_stored(&state.store, tenant, FaultTarget::Rails, state.clock.now()).await;
        let fired = Fired {
            timeout: all.timeout && modes.contains(&FaultMode::Timeout),
            fail: all.fail && modes.contains(&FaultMode::Fail),
            duplicate: all.duplicate && modes.contains(&FaultMode::Duplicate),
            reorder: all.reorder && modes.contains(&FaultMode::Reorder),
        };
        let count =
            |mode: FaultMode| state.metrics.faults_injected.get_or_create(&FaultLabels { target: FaultTarget::Rails.as_str(), mode: mode.as_str() }).inc();
        for (is_fired, mode) in
            [(fired.timeout, FaultMode::Timeout), (fired.fail, FaultMode::Fail), (fired.duplicate, FaultMode::Duplicate), (fired.reorder, FaultMode::Reorder)]
        {
            if is_fired {
                count(mode);
            }
        }
        fired
    }

    async fn fire_stored(&self, store: &Store, tenant: TenantId, target: FaultTarget, now: Timestamp) -> Fired {
        let load = || async { store.active_faults(None, now).await.map(Arc::new) };
        let all = self.all.with("sandbox faults", load, Arc::clone).await;
        let mut fired = Fired::default();
        let mut rng = rand::rng();
        for record in all.iter().filter(|r| r.tenant == tenant && r.fault.target == target && r.fault.is_active(now)) {
            if !record.fault.probability.fires(rng.random_range(0..100u8)) {
                continue;
            }
            match record.fault.mode {
                FaultMode::Timeout => fired.timeout = true,
                FaultMode::Fail => fired.fail = true,
                FaultMode::Duplicate => fired.duplicate = true,
                FaultMode::Reorder => fired.reorder = true,
            }
        }
        fired
    }
}

/// The routes, merged into the API router. One route for every method, so
/// that a live key learns nothing from a 405 (see [`SandboxKey`]).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/v1/test_helpers/faults", any(dispatch))
}

/// A sandbox key; anything else is answered like a path that does not exist.
struct SandboxKey(Principal);

impl FromRequestParts<AppState> for SandboxKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<SandboxKey, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await.map_err(|_| crate::test_helpers::no_such_endpoint())?;
        if principal.environment != Environment::Sandbox {
            return Err(crate::test_helpers::no_such_endpoint());
        }
        Ok(SandboxKey(principal))
    }
}

/// Not a sandbox key: 404; then the method: 405; then the scope: 403.
async fn dispatch(State(state): State<AppState>, SandboxKey(principal): SandboxKey, request: Request) -> Result<Response, ApiError> {
    match *request.method() {
        Method::GET => {
            require(&principal, Scope::WebhooksRead)?;
            list(&state, principal.tenant).await
        }
        Method::PUT => {
            require(&principal, Scope::WebhooksWrite)?;
            let body = JsonBody::<FaultRequest>::from_request(request, &state).await?;
            set(&state, principal.tenant, body.value).await
        }
        Method::DELETE => {
            require(&principal, Scope::WebhooksWrite)?;
            state.store.clear_faults(principal.tenant).await?;
            state.faults.all.invalidate().await;
            list(&state, principal.tenant).await
        }
        _ => Err(crate::method_not_allowed().await),
    }
}

/// What misbehaves: `webhooks` deliveries, or `rails`, the simulated bank of the ACH rail.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FaultTarget)]
pub enum FaultTargetName {
    Webhooks,
    Rails,
}

/// How it misbehaves. Webhooks: `timeout` and `fail` record a failed attempt without sending, `duplicate` sends twice with one `webhook-id`, `reorder` sends a claimed batch newest event first.
/// Rails: `timeout` and `fail` make the bank refuse a cut file (nothing is cut; the payments wait for the next window), `duplicate` delivers each settlement, return and NOC twice, `reorder` delivers them last first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FaultMode)]
pub enum FaultModeName {
    Timeout,
    Fail,
    Duplicate,
    Reorder,
}

/// `PUT /v1/test_helpers/faults`: one fault, replacing the tenant's fault of the same target and mode.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// What misbehaves: `webhooks` deliveries, or `rails` (the ACH rail's simulated bank; see docs/sandbox.md).
    #[schema(value_type = FaultTargetName, example = "webhooks")]
    pub target: String,
    /// Webhooks: `timeout` (attempts recorded as timed out, nothing sent), `fail` (recorded as a `503`, nothing sent),
    /// `duplicate` (each delivery sent twice, same `webhook-id`), `reorder` (each claimed batch sent newest event first).
    /// Rails: `timeout` / `fail` (the bank refuses cut files), `duplicate` (notifications delivered twice), `reorder` (delivered last first).
    #[schema(value_type = FaultModeName, example = "fail")]
    pub mode: String,
    /// Percent of deliveries affected, 0 to 100; default 100.
    #[schema(minimum = 0, maximum = 100, example = 100)]
    #[serde(default)]
    pub probability: Option<i64>,
    /// When the fault ends (RFC 3339, in the future, at most 30 days away). At most one of `until` and `duration_secs`; neither: until deleted.
    #[schema(format = DateTime)]
    #[serde(default)]
    pub until: Option<String>,
    /// How long the fault lasts from now, 1 to 2,592,000 seconds.
    #[schema(minimum = 1, maximum = 2_592_000, example = 300)]
    #[serde(default)]
    pub duration_secs: Option<i64>,
}

/// A fault in force.
#[derive(Serialize, ToSchema)]
#[schema(as = Fault)]
pub struct FaultJson {
    #[schema(value_type = String, example = "fault")]
    pub object: &'static str,
    #[schema(value_type = FaultTargetName, example = "webhooks")]
    pub target: &'static str,
    #[schema(value_type = FaultModeName, example = "fail")]
    pub mode: &'static str,
    #[schema(example = 100)]
    pub probability: u8,
    /// When it ends, or null: until deleted.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The tenant's faults in force.
#[derive(Serialize, ToSchema)]
#[schema(as = FaultList)]
pub struct FaultListJson {
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<FaultJson>,
    pub has_more: bool,
}

fn fault_json(r: &FaultRecord) -> FaultJson {
    FaultJson {
        object: "fault",
        target: r.fault.target.as_str(),
        mode: r.fault.mode.as_str(),
        probability: r.fault.probability.percent(),
        until: r.fault.until.map(Timestamp::to_rfc3339),
        created_at: r.fault.created_at.to_rfc3339(),
    }
}

async fn list(state: &AppState, tenant: TenantId) -> Result<Response, ApiError> {
    let records = state.store.active_faults(Some(tenant), state.clock.now()).await?;
    Ok(Json(FaultListJson { object: "list", data: records.iter().map(fault_json).collect(), has_more: false }).into_response())
}

/// Parses the request into a fault starting `now`.
fn parse(req: FaultRequest, now: Timestamp) -> Result<settle_core::faults::Fault, ApiError> {
    let target = FaultTarget::parse(&req.target).ok_or_else(|| ApiError::invalid("target", "target must be \"webhooks\" or \"rails\""))?;
    let mode = FaultMode::parse(&req.mode).ok_or_else(|| ApiError::invalid("mode", "mode must be one of \"timeout\", \"fail\", \"duplicate\", \"reorder\""))?;
    let probability = match req.probability {
        None => Probability::ALWAYS,
        Some(p) => Probability::new(p).ok_or_else(|| ApiError::invalid("probability", "probability must be an integer percentage from 0 to 100"))?,
    };
    let until = match (req.until, req.duration_secs) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("duration_secs", "give at most one of until and duration_secs")),
        (None, None) => None,
        (Some(text), None) => {
            let at = Timestamp::parse_rfc3339(&text).ok_or_else(|| ApiError::invalid("until", "until must be an RFC 3339 timestamp"))?;
            Some(check_until(at, now).map_err(|e| match e {
                FaultEndError::NotInFuture => ApiError::invalid("until", "until must be in the future"),
                FaultEndError::TooFar => ApiError::invalid("until", "until must be at most 30 days away"),
            })?)
        }
        (None, Some(secs)) => {
            if !(1..=MAX_FAULT_DURATION_SECS).contains(&secs) {
                return Err(ApiError::invalid("duration_secs", format!("duration_secs must be from 1 to {MAX_FAULT_DURATION_SECS}")));
            }
            Some(now.plus_secs(secs))
        }
    };
    Ok(settle_core::faults::Fault { target, mode, probability, until, created_at: now })
}

async fn set(state: &AppState, tenant: TenantId, req: FaultRequest) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let fault = parse(req, now)?;
    // Bounded by the key (target × mode), checked anyway.
    let held = state.store.active_faults(Some(tenant), now).await?;
    if held.len() >= MAX_FAULTS_PER_TENANT && !held.iter().any(|r| r.fault.target == fault.target && r.fault.mode == fault.mode) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, "invalid_request", "too many faults; delete some first"));
    }
    state.store.set_fault(tenant, &fault, now).await?;
    state.faults.all.invalidate().await;
    tracing::info!(tenant = tenant.0, target = fault.target.as_str(), mode = fault.mode.as_str(), "sandbox fault set");
    Ok(Json(fault_json(&FaultRecord { tenant, fault })).into_response())
}

/// Sandbox only: the organization's faults in force in this environment.
#[utoipa::path(get, path = "/v1/test_helpers/faults", tag = "Test helpers", operation_id = "list_faults",
    responses((status = 200, description = "The faults in force.", body = FaultListJson)))]
pub fn doc_list() {}

/// Sandbox only: makes webhook deliveries or the simulated ACH bank time out, fail, repeat or reorder, for a while (see docs/sandbox.md).
#[utoipa::path(put, path = "/v1/test_helpers/faults", tag = "Test helpers", operation_id = "set_fault",
    request_body = FaultRequest,
    responses((status = 200, description = "The fault, now in force.", body = FaultJson)))]
pub fn doc_set() {}

/// Sandbox only: ends every fault of the organization in this environment.
#[utoipa::path(delete, path = "/v1/test_helpers/faults", tag = "Test helpers", operation_id = "clear_faults",
    responses((status = 200, description = "The faults in force afterwards (none).", body = FaultListJson)))]
pub fn doc_clear() {}
