//! `/v1/webhook_endpoints`: where events are delivered, signed the Standard
//! Webhooks way ([`signature`]), to URLs checked against SSRF
//! ([`destination`]), by the delivery [`worker`].
//!
//! An endpoint's secret (`whsec_…`) is shown once, in the answer that made
//! it (create, rotate); it is stored sealed under the master key (the vault
//! that also holds API keys' signing secrets). An idempotent replay of
//! those answers shows the endpoint's current secret, read from the vault:
//! the idempotency record itself never holds a secret.

pub mod destination;
pub mod signature;
pub mod worker;

use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorType};
use crate::idempotency::{self, InFlightGuard};
use crate::observe::RequestId;
use crate::pagination::{PageParams, page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use crate::versions;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::ids::{WebhookAttemptId, WebhookEndpointId};
use settle_core::limits::MAX_TEXT_CHARS;
use settle_core::metadata::Metadata;
use settle_core::tenancy::{Principal, Scope, TenantId};
use settle_store::StoreError;
use settle_store::records::{IdempotencyRecord, StoredResponse};
use settle_store::webhooks::{AttemptRecord, EndpointUpdate, WebhookEndpointRecord, Written};
use signature::WebhookSecret;
use std::future::Future;
use utoipa::ToSchema;
use worker::{Clients, WebhookConfig};

/// The type of the event announcing that Settle disabled an endpoint.
pub const DISABLED_EVENT: &str = "webhook_endpoint.disabled";
/// Event types one endpoint may list.
const MAX_ENABLED_EVENTS: usize = 64;
/// The default overlap of a rotation: the old secret signs for a day more.
const DEFAULT_ROTATION_OVERLAP_SECS: u64 = 24 * 3600;
/// The longest overlap a rotation may ask for (7 days).
const MAX_ROTATION_OVERLAP_SECS: u64 = 7 * 24 * 3600;

/// What the delivery side of the server shares.
pub struct Webhooks {
    pub config: WebhookConfig,
    pub clients: Clients,
}

impl Webhooks {
    pub fn new(config: WebhookConfig) -> Result<Webhooks, reqwest::Error> {
        Ok(Webhooks { clients: Clients::new(&config)?, config })
    }
}

impl Default for Webhooks {
    fn default() -> Self {
        let config = WebhookConfig::default();
        // Building a client fails only when the TLS backend cannot start; this build has none.
        let clients = Clients::new(&config).unwrap_or_else(|e| panic!("the webhook HTTP client cannot be built: {e}"));
        Webhooks { config, clients }
    }
}

/// A URL that receives events.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct WebhookEndpointJson {
    #[schema(example = "webhook_endpoint")]
    object: &'static str,
    #[schema(example = "we_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    id: String,
    #[schema(example = "https://example.com/webhooks/settle")]
    url: String,
    description: Option<String>,
    /// Event types it receives; `["*"]`: all.
    enabled_events: Vec<String>,
    /// The API version its events are rendered in.
    #[schema(example = "2026-11-30")]
    api_version: String,
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Metadata,
    /// `enabled` or `disabled`.
    #[schema(example = "enabled")]
    status: &'static str,
    /// Why it is disabled: `requested`, `gone` (it answered 410) or `failing` (5 days of failures).
    disabled_reason: Option<String>,
    /// The signing secret (`whsec_…`): only in the answer that created or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

pub fn endpoint_json(e: &WebhookEndpointRecord, secret: Option<String>) -> WebhookEndpointJson {
    WebhookEndpointJson {
        object: "webhook_endpoint",
        id: e.id.as_str().to_owned(),
        url: e.url.clone(),
        description: e.description.clone(),
        enabled_events: e.enabled_events.clone(),
        api_version: e.api_version.clone(),
        metadata: e.metadata.clone(),
        status: if e.is_enabled { "enabled" } else { "disabled" },
        disabled_reason: e.disabled_reason.clone(),
        secret,
        created_at: e.created_at.to_rfc3339(),
    }
}

/// An endpoint that was deleted.
#[derive(Serialize, ToSchema)]
#[schema(as = DeletedWebhookEndpoint)]
pub struct DeletedJson {
    #[schema(example = "webhook_endpoint")]
    object: &'static str,
    id: String,
    deleted: bool,
}

/// One attempt at delivering an event.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookAttempt)]
pub struct AttemptJson {
    #[schema(example = "webhook_attempt")]
    object: &'static str,
    id: String,
    endpoint_id: String,
    event_id: String,
    /// 1 for the first attempt of a delivery (a redelivery starts again at 1).
    attempt: i64,
    /// `succeeded` (a 2xx) or `failed`.
    status: &'static str,
    /// The HTTP status the endpoint answered, if it answered.
    response_status: Option<i64>,
    /// The first KiB of the answer's body.
    response_body: Option<String>,
    /// Why there was no answer (timeout, refused connection, address not allowed).
    error: Option<String>,
    latency_ms: i64,
    #[schema(format = DateTime)]
    created_at: String,
}

fn attempt_json(a: &AttemptRecord) -> AttemptJson {
    AttemptJson {
        object: "webhook_attempt",
        id: a.id.as_str().to_owned(),
        endpoint_id: a.endpoint_id.as_str().to_owned(),
        event_id: a.event_id.as_str().to_owned(),
        attempt: a.attempt,
        status: if a.succeeded { "succeeded" } else { "failed" },
        response_status: a.response_status,
        response_body: a.response_body.clone(),
        error: a.error.clone(),
        latency_ms: a.latency_ms,
        created_at: a.created_at.to_rfc3339(),
    }
}

fn endpoint_id(text: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(text).ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

fn invalid_url(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, "invalid_webhook_url", message).with_param("url")
}

/// Checks a URL for the caller's environment (resolving it for live).
async fn checked_url(state: &AppState, principal: &Principal, url: &str) -> Result<String, ApiError> {
    let rule = destination::Destinations::for_environment(principal.environment, state.webhooks.config.sandbox_destinations);
    let parsed = destination::check(url, principal.environment, rule).map_err(|e| invalid_url(e.0))?;
    if rule == destination::Destinations::Public {
        destination::resolve(&parsed, rule).await.map_err(|e| invalid_url(e.0))?;
    }
    Ok(parsed.to_string())
}

fn enabled_events(types: Vec<String>) -> Result<Vec<String>, ApiError> {
    if types.is_empty() || types.len() > MAX_ENABLED_EVENTS {
        return Err(ApiError::invalid("enabled_events", format!("enabled_events must list 1 to {MAX_ENABLED_EVENTS} event types, or [\"*\"]")));
    }
    for (i, t) in types.iter().enumerate() {
        if t != "*" && crate::events::catalog::find(t).is_none() {
            return Err(ApiError::invalid(format!("enabled_events[{i}]"), format!("{t:?} is not an event type; see GET /v1/event_types")));
        }
    }
    let mut unique = types;
    unique.dedup();
    Ok(unique)
}

fn description(text: Option<String>) -> Result<Option<String>, ApiError> {
    crate::wire::text("description", text, MAX_TEXT_CHARS)
}

fn master(state: &AppState) -> Result<&crate::signing::vault::MasterKey, ApiError> {
    state.signing.master_key().ok_or_else(|| {
        tracing::error!("webhook endpoints need a master key: set SETTLE_MASTER_KEY or <data-dir>/master.key");
        ApiError::unavailable()
    })
}

fn seal(state: &AppState, id: &WebhookEndpointId, secret: &WebhookSecret) -> Result<Vec<u8>, ApiError> {
    master(state)?.seal(id.as_str(), secret.bytes()).map_err(|e| ApiError::internal(&e))
}

fn json_response(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))
}

/// A POST that carries an `Idempotency-Key`, held in flight in this process.
struct Keyed {
    tenant: TenantId,
    key: String,
    fingerprint: String,
    _guard: InFlightGuard,
}

impl Keyed {
    fn record(&self, status: StatusCode, body: Vec<u8>, now: Timestamp) -> IdempotencyRecord {
        IdempotencyRecord {
            tenant: self.tenant,
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            response: StoredResponse { status: status.as_u16(), body },
            created_at: now,
        }
    }
}

enum Begun {
    Replay(Response),
    Run(Option<Keyed>),
}

/// The `Idempotency-Key` part of a POST that does not go through the engine:
/// replay a stored answer, refuse a reused key, or hold the key in flight.
async fn begin(state: &AppState, principal: &Principal, headers: &HeaderMap, path: &str, canonical: &[u8]) -> Result<Begun, ApiError> {
    let Some(key) = idempotency::key_from(headers)? else {
        return Ok(Begun::Run(None));
    };
    let fingerprint = idempotency::fingerprint(principal, "POST", path, canonical);
    if let Some(record) = state.store.find_idempotency(principal.tenant, key.clone()).await? {
        return replay(state, principal.tenant, record, &fingerprint).await.map(Begun::Replay);
    }
    let guard = state.in_flight.claim(principal.tenant, &key).ok_or_else(idempotency::in_use)?;
    Ok(Begun::Run(Some(Keyed { tenant: principal.tenant, key, fingerprint, _guard: guard })))
}

/// A stored answer, with the endpoint's current secret put back where the
/// first answer showed one.
async fn replay(state: &AppState, tenant: TenantId, record: IdempotencyRecord, fingerprint: &str) -> Result<Response, ApiError> {
    if record.fingerprint != fingerprint {
        return Err(idempotency::reused());
    }
    let status = StatusCode::from_u16(record.response.status).unwrap_or(StatusCode::OK);
    let mut body = record.response.body;
    if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body)
        && json.get("object").and_then(|o| o.as_str()) == Some("webhook_endpoint")
        && json.get("secret").is_some_and(serde_json::Value::is_null)
        && let Some(id) = json.get("id").and_then(|i| i.as_str()).and_then(WebhookEndpointId::parse)
    {
        let secret = match state.store.get_webhook_endpoint(tenant, id.clone()).await? {
            Some(e) => Some(WebhookSecret::from_bytes(master(state)?.open(id.as_str(), &e.secret).map_err(|e| ApiError::internal(&e))?).expose()),
            None => None,
        };
        json["secret"] = secret.map_or(serde_json::Value::Null, serde_json::Value::String);
        body = to_bytes(&json)?;
    }
    Ok(json_response(status, body, true))
}

/// The stored form of an answer that shows a secret: the secret left out (`null`).
fn without_secret(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut json: serde_json::Value = serde_json::from_slice(body).map_err(|e| ApiError::internal(&e))?;
    json["secret"] = serde_json::Value::Null;
    to_bytes(&json)
}

/// A keyed write whose answer is rendered from a count the write returns
/// (redelivery, recovery); the idempotency record is written in the same
/// transaction as the effect.
#[expect(clippy::too_many_arguments, reason = "the parts of one POST")]
pub(crate) async fn keyed_write<J, R, W, Fut>(
    state: &AppState,
    principal: &Principal,
    _request_id: &RequestId,
    headers: &HeaderMap,
    path: &str,
    canonical: &[u8],
    status: StatusCode,
    render: R,
    write: W,
) -> Result<Response, ApiError>
where
    J: Serialize,
    R: Fn(u64) -> J + Clone + Send + Sync + 'static,
    W: FnOnce(Option<Box<dyn FnOnce(u64) -> IdempotencyRecord + Send>>) -> Fut,
    Fut: Future<Output = Result<Written<u64>, StoreError>>,
{
    let keyed = match begin(state, principal, headers, path, canonical).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Run(keyed) => keyed,
    };
    let now = state.clock.now();
    let recorder = keyed.as_ref().map(|k| {
        let (tenant, key, fingerprint, render) = (k.tenant, k.key.clone(), k.fingerprint.clone(), render.clone());
        Box::new(move |count: u64| IdempotencyRecord {
            tenant,
            key,
            fingerprint,
            response: StoredResponse { status: status.as_u16(), body: serde_json::to_vec(&render(count)).unwrap_or_default() },
            created_at: now,
        }) as Box<dyn FnOnce(u64) -> IdempotencyRecord + Send>
    });
    match write(recorder).await? {
        Written::Done(count) => Ok(json_response(status, to_bytes(&render(count))?, false)),
        Written::KeyTaken(record) => replay(state, principal.tenant, record, keyed.as_ref().map_or("", |k| k.fingerprint.as_str())).await,
    }
}

/// `POST /v1/webhook_endpoints`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpointRequest {
    /// Where to send events: `https://…` (live: public addresses only), or `http://…` in the sandbox (`http://localhost:3000/…` works).
    #[schema(example = "https://example.com/webhooks/settle")]
    pub url: String,
    /// Event types to send, or `["*"]` for all.
    #[schema(example = json!(["ledger.transaction.posted"]))]
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    /// The API version to render events in (default: the organization's pinned version).
    #[schema(example = "2026-11-30")]
    pub api_version: Option<String>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
}

fn api_version(principal: &Principal, text: Option<String>) -> Result<String, ApiError> {
    let version = match text {
        None => versions::resolve_pin(principal.api_version),
        Some(t) => ApiVersion::parse(&t)
            .and_then(versions::find)
            .map(|v| v.version)
            .ok_or_else(|| ApiError::invalid("api_version", format!("{t:?} is not an API version; see GET /v1/versions")))?,
    };
    Ok(version.to_string())
}

/// Creates an endpoint. The answer shows its signing secret, once.
#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "Webhooks", operation_id = "create_webhook_endpoint",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateWebhookEndpointRequest,
    responses((status = 201, description = "The new endpoint, with its `secret`.", body = WebhookEndpointJson)))]
pub async fn create(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::WebhooksWrite>,
    headers: HeaderMap,
    body: JsonBody<CreateWebhookEndpointRequest>,
) -> Result<Response, ApiError> {
    let request = body.value;
    let url = checked_url(&state, &principal, &request.url).await?;
    let enabled_events = enabled_events(request.enabled_events)?;
    let description = description(request.description)?;
    let api_version = api_version(&principal, request.api_version)?;
    let metadata = crate::wire::metadata_of("metadata", request.metadata)?;
    let keyed = match begin(&state, &principal, &headers, "/v1/webhook_endpoints", &body.canonical).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Run(keyed) => keyed,
    };
    let now = state.clock.now();
    let id = state.events.ids.webhook_endpoint();
    let secret = WebhookSecret::generate();
    let record = WebhookEndpointRecord {
        secret: seal(&state, &id, &secret)?,
        id,
        tenant: principal.tenant,
        url,
        description,
        enabled_events,
        api_version,
        metadata,
        is_enabled: true,
        disabled_reason: None,
        previous_secret: None,
        previous_secret_expires_at: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    let answer = to_bytes(&endpoint_json(&record, Some(secret.expose())))?;
    let stored = keyed.as_ref().map(|k| without_secret(&answer).map(|b| k.record(StatusCode::CREATED, b, now))).transpose()?;
    match state.store.create_webhook_endpoint(record, stored).await? {
        Written::Done(()) => Ok(json_response(StatusCode::CREATED, answer, false)),
        Written::KeyTaken(r) => replay(&state, principal.tenant, r, keyed.as_ref().map_or("", |k| k.fingerprint.as_str())).await,
    }
}

/// One endpoint (without its secret).
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", tag = "Webhooks", operation_id = "get_webhook_endpoint",
    params(("id" = String, Path, description = "A webhook endpoint id (`we_…`).")),
    responses((status = 200, description = "The endpoint.", body = WebhookEndpointJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::WebhooksRead)?;
    let found = state.store.get_webhook_endpoint(principal.tenant, endpoint_id(&id)?).await?.ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(endpoint_json(&found, None)).into_response())
}

/// The environment's endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "Webhooks", operation_id = "list_webhook_endpoints",
    params(PageParams),
    responses((status = 200, description = "A page of endpoints.", body = crate::render::ListJson<WebhookEndpointJson>)))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::WebhooksRead)?;
    let params: PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| WebhookEndpointId::parse(id).is_some())?;
    let result = state.store.list_webhook_endpoints(principal.tenant, page).await?;
    Ok(Json(crate::render::list(result.items.iter().map(|e| endpoint_json(e, None)).collect(), result.has_more)).into_response())
}

/// `PATCH /v1/webhook_endpoints/{id}`: only the fields sent change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpointRequest {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "settle_core::metadata::deserialize_optional")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Metadata>,
    /// `true` stops deliveries (what is owed is dead-lettered; `recover` replays it); `false` starts them again.
    pub disabled: Option<bool>,
}

/// Changes an endpoint's URL, events, description or metadata, or disables / enables it.
#[utoipa::path(patch, path = "/v1/webhook_endpoints/{id}", tag = "Webhooks", operation_id = "update_webhook_endpoint",
    params(("id" = String, Path, description = "A webhook endpoint id (`we_…`).")),
    request_body = UpdateWebhookEndpointRequest,
    responses((status = 200, description = "The endpoint.", body = WebhookEndpointJson)))]
pub async fn update(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::WebhooksWrite>,
    IdPath(id): IdPath,
    body: JsonBody<UpdateWebhookEndpointRequest>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let request = body.value;
    let url = match request.url {
        Some(u) => Some(checked_url(&state, &principal, &u).await?),
        None => None,
    };
    let update = EndpointUpdate {
        url,
        enabled_events: request.enabled_events.map(enabled_events).transpose()?,
        description: request.description.map(|d| description(Some(d))).transpose()?,
        metadata: request.metadata.map(|m| crate::wire::metadata_of("metadata", Some(m))).transpose()?,
        disabled: request.disabled,
    };
    let updated =
        state.store.update_webhook_endpoint(principal.tenant, id, update, state.clock.now()).await?.ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(endpoint_json(&updated, None)).into_response())
}

/// Deletes an endpoint, what it was owed and its attempts.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "Webhooks", operation_id = "delete_webhook_endpoint",
    params(("id" = String, Path, description = "A webhook endpoint id (`we_…`).")),
    responses((status = 200, description = "Deleted.", body = DeletedJson)))]
pub async fn delete(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::WebhooksWrite)?;
    let id = endpoint_id(&id)?;
    if !state.store.delete_webhook_endpoint(principal.tenant, id.clone()).await? {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    Ok(Json(DeletedJson { object: "webhook_endpoint", id: id.as_str().to_owned(), deleted: true }).into_response())
}

/// `POST /v1/webhook_endpoints/{id}/rotate_secret`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// How long the current secret keeps signing beside the new one, 0 to 604800 (default 86400): every delivery meanwhile carries both signatures.
    #[schema(minimum = 0, maximum = 604800)]
    pub expires_in_secs: Option<u64>,
}

/// Gives the endpoint a new secret (shown once, here); the old one keeps signing for the overlap.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", tag = "Webhooks", operation_id = "rotate_webhook_endpoint_secret",
    params(("id" = String, Path, description = "A webhook endpoint id (`we_…`)."), crate::openapi::IdempotencyKey),
    request_body = RotateSecretRequest,
    responses((status = 200, description = "The endpoint, with its new `secret`.", body = WebhookEndpointJson)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::WebhooksWrite>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<RotateSecretRequest>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let overlap = body.value.expires_in_secs.unwrap_or(DEFAULT_ROTATION_OVERLAP_SECS);
    if overlap > MAX_ROTATION_OVERLAP_SECS {
        return Err(ApiError::invalid("expires_in_secs", format!("expires_in_secs must be 0 to {MAX_ROTATION_OVERLAP_SECS}")));
    }
    let path = format!("/v1/webhook_endpoints/{}/rotate_secret", id.as_str());
    let keyed = match begin(&state, &principal, &headers, &path, &body.canonical).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Run(keyed) => keyed,
    };
    let current = state.store.get_webhook_endpoint(principal.tenant, id.clone()).await?.ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let now = state.clock.now();
    let secret = WebhookSecret::generate();
    let sealed = seal(&state, &id, &secret)?;
    let overlap_secs = i64::try_from(overlap).unwrap_or(0);
    let after = WebhookEndpointRecord { updated_at: now, ..current };
    let answer = to_bytes(&endpoint_json(&after, Some(secret.expose())))?;
    let stored = keyed.as_ref().map(|k| without_secret(&answer).map(|b| k.record(StatusCode::OK, b, now))).transpose()?;
    match state.store.rotate_webhook_secret(principal.tenant, id, sealed, now.plus_secs(overlap_secs), now, stored).await? {
        Written::Done(true) => Ok(json_response(StatusCode::OK, answer, false)),
        Written::Done(false) => Err(ApiError::not_found("webhook endpoint")),
        Written::KeyTaken(r) => replay(&state, principal.tenant, r, keyed.as_ref().map_or("", |k| k.fingerprint.as_str())).await,
    }
}

/// The attempts made to deliver to an endpoint, newest first.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/attempts", tag = "Webhooks", operation_id = "list_webhook_endpoint_attempts",
    params(("id" = String, Path, description = "A webhook endpoint id (`we_…`)."), PageParams),
    responses((status = 200, description = "A page of attempts.", body = crate::render::ListJson<AttemptJson>)))]
pub async fn attempts(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::WebhooksRead)?;
    let id = endpoint_id(&id)?;
    let params: PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |a| WebhookAttemptId::parse(a).is_some())?;
    if state.store.get_webhook_endpoint(principal.tenant, id.clone()).await?.is_none() {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let result = state.store.list_webhook_attempts(principal.tenant, id, page).await?;
    Ok(Json(crate::render::list(result.items.iter().map(attempt_json).collect(), result.has_more)).into_response())
}

/// `POST /v1/webhook_endpoints/{id}/recover`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Replay deliveries of events since this instant (RFC 3339) that were dead-lettered or are waiting for a retry.
    #[schema(format = DateTime)]
    pub since: String,
}

/// What a recovery queued.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookRecovery)]
pub struct RecoveryJson {
    #[schema(example = "webhook_recovery")]
    object: &'static str,
    endpoint_id: String,
    #[schema(format = DateTime)]
    since: String,
    /// Deliveries queued again (each due now, with a fresh retry schedule).
    queued: u64,
}

/// Sends again, now, everything that failed for this endpoint since a time.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/recover", tag = "Webhooks", operation_id = "recover_webhook_endpoint",
    params(("id" = String, Path, description = "A webhook endpoint id (`we_…`)."), crate::openapi::IdempotencyKey),
    request_body = RecoverRequest,
    responses((status = 200, description = "What was queued.", body = RecoveryJson)))]
pub async fn recover(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::WebhooksWrite>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<RecoverRequest>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let since = Timestamp::parse_rfc3339(&body.value.since).ok_or_else(|| ApiError::invalid("since", "since must be an RFC 3339 timestamp"))?;
    if state.store.get_webhook_endpoint(principal.tenant, id.clone()).await?.is_none() {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let path = format!("/v1/webhook_endpoints/{}/recover", id.as_str());
    let now = state.clock.now();
    let endpoint = id.as_str().to_owned();
    let render = move |queued: u64| RecoveryJson { object: "webhook_recovery", endpoint_id: endpoint.clone(), since: since.to_rfc3339(), queued };
    let response = keyed_write(&state, &principal, &request_id, &headers, &path, &body.canonical, StatusCode::OK, render, {
        let store = state.store.clone();
        let tenant = principal.tenant;
        move |record| async move { store.recover_deliveries(tenant, id, since, now, record).await }
    })
    .await?;
    state.events.stored.notify_one();
    Ok(response)
}
