//! Events: `GET /v1/events`, `GET /v1/events/{id}`, `GET /v1/event_types`
//! and `POST /v1/events/{id}/redeliver`, plus how an event is rendered.
//!
//! Events are written by the [`projector`] from the ledger log (the outbox),
//! stored whole in the newest API version. An event is shown in an older
//! version (a client's `Settle-Version`, an endpoint's `api_version`)
//! through the version layer's own response transformations
//! ([`render_in`]), never by a second renderer.

pub mod catalog;
pub mod deferred;
pub mod projector;

use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::observe::RequestId;
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use crate::versions::layer::ServedVersion;
use crate::versions::{self, json::Json};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json as AxumJson};
use serde::{Deserialize, Serialize};
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::ids::{EventId, WebhookEndpointId};
use settle_core::tenancy::{Principal, Scope};
use settle_store::events::{EventFilter, EventRecord};
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa::{IntoParams, ToSchema};

/// What the projector, the delivery worker and the handlers share.
#[derive(Default)]
pub struct EventsHub {
    /// Ids of endpoints, attempts and events made outside the log.
    pub ids: settle_core::ids::IdGenerator,
    /// Woken when new events (so new deliveries) were stored. Signalled with
    /// `notify_one`, which keeps the wake-up for a worker that is busy
    /// claiming or sending when it comes (`notify_waiters` would drop it,
    /// and those deliveries would wait for the next poll).
    pub stored: Notify,
    /// Woken when the ledger committed something (the projector looks sooner).
    pub logged: Notify,
}

/// Shared for the lifetime of the server.
pub type Hub = Arc<EventsHub>;

/// The request that caused an event (none for the engine's own changes,
/// such as a hold that expired).
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, Default, PartialEq, Eq)]
#[schema(as = EventRequest)]
pub struct EventRequestJson {
    /// The `Request-Id` of the request.
    pub id: Option<String>,
    /// Its `Idempotency-Key`, when it sent one.
    pub idempotency_key: Option<String>,
}

/// The object of an event, as it was right after the change.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
#[schema(as = EventData)]
pub struct EventDataJson {
    /// The object (account, transaction, webhook endpoint) as the API renders it in `api_version`.
    #[schema(value_type = Object)]
    pub object: serde_json::Value,
    /// On updates: the previous values of the fields that changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub previous_attributes: Option<serde_json::Value>,
}

/// Something that happened, for clients that poll and for webhooks.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
#[schema(as = Event)]
pub struct EventJson {
    #[schema(example = "event")]
    pub object: String,
    #[schema(example = "evt_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    /// One of `GET /v1/event_types`.
    #[serde(rename = "type")]
    #[schema(example = "ledger.transaction.posted")]
    pub kind: String,
    /// The API version `data.object` is rendered in.
    #[schema(example = "2026-11-30")]
    pub api_version: String,
    /// When the change happened.
    #[schema(format = DateTime)]
    pub created_at: String,
    pub data: EventDataJson,
    pub request: EventRequestJson,
    /// The `X-Correlation-Id` of the request that caused it.
    pub correlation_id: Option<String>,
    /// 1, 2, 3… per object, in the order its changes happened: order a
    /// receiver's events of one object by it.
    pub sequence: i64,
}

/// An event body (stored in the newest version) in `version`: the version
/// layer's response transformations walked back, and `api_version` set.
pub fn render_in(body: &[u8], version: ApiVersion) -> Result<Vec<u8>, ApiError> {
    if version >= versions::NEWEST {
        return Ok(body.to_vec());
    }
    let text = std::str::from_utf8(body).map_err(|e| ApiError::internal(&e))?;
    let mut json = Json::parse(text).map_err(|e| ApiError::internal(&e))?;
    for change in versions::changes_after(version) {
        (change.downgrade_response)(&mut json);
    }
    if let (Some(slot), Ok(value)) = (json.get_mut("api_version"), Json::string(&version.to_string())) {
        *slot = value;
    }
    json.to_bytes().map_err(|e| ApiError::internal(&e))
}

/// Only `api_version` changes here: the version layer turns the rest of the
/// response (the `data.object`s) into the client's version on its way out.
fn stamp_version(body: &[u8], version: ApiVersion) -> Result<Vec<u8>, ApiError> {
    if version >= versions::NEWEST {
        return Ok(body.to_vec());
    }
    let text = std::str::from_utf8(body).map_err(|e| ApiError::internal(&e))?;
    let mut json = Json::parse(text).map_err(|e| ApiError::internal(&e))?;
    if let (Some(slot), Ok(value)) = (json.get_mut("api_version"), Json::string(&version.to_string())) {
        *slot = value;
    }
    json.to_bytes().map_err(|e| ApiError::internal(&e))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn event_id(text: &str) -> Result<EventId, ApiError> {
    EventId::parse(text).ok_or_else(|| ApiError::not_found("event"))
}

/// One event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "Events", operation_id = "get_event",
    params(("id" = String, Path, description = "An event id (`evt_…`).")),
    responses((status = 200, description = "The event.", body = EventJson)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Extension(served): Extension<ServedVersion>,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    require(&principal, Scope::EventsRead)?;
    let mut record = state.store.get_event(principal.tenant, event_id(&id)?).await?.ok_or_else(|| ApiError::not_found("event"))?;
    deferred::complete(&state.store, &mut [stored(&mut record)]).await?;
    Ok(json_response(StatusCode::OK, stamp_version(&record.body, served.0)?))
}

/// `GET /v1/events` filters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    /// Objects per page, 1 to 100 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// An id from the previous page: the page after it.
    pub starting_after: Option<String>,
    /// An id from the next page: the page before it.
    pub ending_before: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events about this object (`acct_…`, `ltx_…`, `we_…`).
    pub object_id: Option<String>,
    /// Only events created at or after this instant (RFC 3339).
    #[serde(rename = "created[gte]")]
    #[param(rename = "created[gte]", format = DateTime)]
    pub created_gte: Option<String>,
    /// Only events created before this instant (RFC 3339).
    #[serde(rename = "created[lt]")]
    #[param(rename = "created[lt]", format = DateTime)]
    pub created_lt: Option<String>,
}

pub(crate) fn instant(param: &str, text: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| Timestamp::parse_rfc3339(&t).ok_or_else(|| ApiError::invalid(param, format!("{param} must be an RFC 3339 timestamp")))).transpose()
}

/// The environment's events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "Events", operation_id = "list_events",
    params(EventListParams),
    responses((status = 200, description = "A page of events.", body = crate::render::ListJson<EventJson>)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Extension(served): Extension<ServedVersion>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(&principal, Scope::EventsRead)?;
    let params: EventListParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| EventId::parse(id).is_some())?;
    if let Some(kind) = &params.kind
        && catalog::find(kind).is_none()
    {
        return Err(ApiError::invalid("type", format!("{kind:?} is not an event type; see GET /v1/event_types")));
    }
    if params.object_id.as_ref().is_some_and(|id| id.is_empty() || id.len() > 64) {
        return Err(ApiError::invalid("object_id", "object_id must be an object id"));
    }
    let filter = EventFilter {
        kind: params.kind,
        object_id: params.object_id,
        created_gte: instant("created[gte]", params.created_gte)?,
        created_lt: instant("created[lt]", params.created_lt)?,
    };
    let mut result = state.store.list_events(principal.tenant, filter, page).await?;
    deferred::complete(&state.store, &mut result.items.iter_mut().map(stored).collect::<Vec<_>>()).await?;
    Ok(json_response(StatusCode::OK, list_body(&result.items, result.has_more, served.0)?))
}

/// A stored event as [`deferred::complete`] reads it.
fn stored(record: &mut EventRecord) -> deferred::Stored<'_> {
    deferred::Stored { id: record.id.as_str(), object_id: &record.object_id, sequence: record.sequence, created_at: record.created_at, body: &mut record.body }
}

/// A list of stored events, without parsing them again (newest version).
fn list_body(items: &[EventRecord], has_more: bool, version: ApiVersion) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(items.iter().map(|e| e.body.len() + 1).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&stamp_version(&e.body, version)?);
    }
    out.extend_from_slice(if has_more { b"],\"has_more\":true}" } else { b"],\"has_more\":false}" });
    Ok(out)
}

/// The catalog: every event type, with a JSON Schema of its event in each API version.
#[utoipa::path(get, path = "/v1/event_types", tag = "Events", operation_id = "list_event_types",
    responses((status = 200, description = "Every event type.", body = crate::render::ListJson<catalog::EventTypeJson>)))]
pub async fn types() -> Response {
    AxumJson(crate::render::list(catalog::types_json(), false)).into_response()
}

/// `POST /v1/events/{id}/redeliver`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RedeliverRequest {
    /// Only to this endpoint (`we_…`), subscribed or not; default: every enabled endpoint subscribed to the event's type.
    pub endpoint_id: Option<String>,
}

/// What a redelivery queued.
#[derive(Serialize, ToSchema)]
#[schema(as = EventRedelivery)]
pub struct RedeliveryJson {
    #[schema(example = "event_redelivery")]
    pub object: &'static str,
    pub event_id: String,
    /// Deliveries queued (each due now, with a fresh retry schedule).
    pub queued: u64,
}

/// Sends an event again, now, with a fresh retry schedule.
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", tag = "Events", operation_id = "redeliver_event",
    params(("id" = String, Path, description = "An event id (`evt_…`)."), crate::openapi::IdempotencyKey),
    request_body = RedeliverRequest,
    responses((status = 200, description = "What was queued.", body = RedeliveryJson)))]
pub async fn redeliver(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::WebhooksWrite>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<RedeliverRequest>,
) -> Result<Response, ApiError> {
    let id = event_id(&id)?;
    let event = state.store.get_event(principal.tenant, id.clone()).await?.ok_or_else(|| ApiError::not_found("event"))?;
    let endpoint = match body.value.endpoint_id.as_deref() {
        None => None,
        Some(text) => {
            let endpoint = WebhookEndpointId::parse(text).ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            let found = state.store.get_webhook_endpoint(principal.tenant, endpoint.clone()).await?;
            if found.is_none() {
                return Err(ApiError::not_found("webhook endpoint"));
            }
            Some(endpoint)
        }
    };
    let path = format!("/v1/events/{}/redeliver", id.as_str());
    let now = state.clock.now();
    let shown = id.as_str().to_owned();
    let render = move |queued: u64| RedeliveryJson { object: "event_redelivery", event_id: shown.clone(), queued };
    let response = crate::webhooks::keyed_write(&state, &principal, &request_id, &headers, &path, &body.canonical, StatusCode::OK, render, {
        let store = state.store.clone();
        let tenant = principal.tenant;
        move |record| async move { store.redeliver_event(tenant, event.id, event.kind, endpoint, now, record).await }
    })
    .await?;
    state.events.stored.notify_one();
    Ok(response)
}

/// Tells the projector about every committed batch, so that events follow
/// commits within milliseconds instead of a poll interval; passes
/// everything on to the observer it wraps (metrics).
#[derive(Debug)]
pub struct CommitSignal {
    pub inner: Option<Arc<dyn settle_store::engine::BatchObserver>>,
    pub hub: Hub,
}

impl std::fmt::Debug for EventsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventsHub")
    }
}

impl settle_store::engine::BatchObserver for CommitSignal {
    fn committed(&self, commands: usize, items: usize, elapsed: std::time::Duration) {
        if let Some(inner) = &self.inner {
            inner.committed(commands, items, elapsed);
        }
        self.hub.logged.notify_one();
    }

    fn failed(&self) {
        if let Some(inner) = &self.inner {
            inner.failed();
        }
    }
}
