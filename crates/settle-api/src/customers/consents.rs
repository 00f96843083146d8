//! Consents: immutable records of what a customer agreed to, when, how and
//! to which text. Revoking is a new record, never an edit. The IP address
//! and user agent are personal data: sealed under the customer's data key
//! (so erasure shreds them too) and shown only with `customers:pii:read`.

use super::profile::data_key;
use super::{Actor, Keyed, conflict, idempotency_record, json_response, keyed, load_customer, reason_of};
use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::observe::{ClientIp, RequestId};
use crate::path::IdPath;
use crate::state::AppState;
use axum::Extension;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::ids::ConsentId;
use settle_core::tenancy::{Principal, Scope};
use settle_store::customers::{ConsentRecord, RevocationRecord};
use utoipa::ToSchema;

/// The consent types we record.
pub const CONSENT_TYPES: &[&str] = &["ach_debit_authorization", "data_sharing", "terms_of_service"];
/// How consent was given.
pub const CHANNELS: &[&str] = &["web", "mobile_app", "paper", "phone", "in_person", "api"];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConsentRequest {
    /// `ach_debit_authorization`, `data_sharing` or `terms_of_service`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The version of the text the customer agreed to (1 to 100 characters).
    pub text_version: String,
    /// `web`, `mobile_app`, `paper`, `phone`, `in_person` or `api`.
    pub channel: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// When the customer agreed (RFC 3339; not in the future).
    #[schema(format = DateTime)]
    pub granted_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeConsentRequest {
    /// Why, for the record (1 to 500 characters).
    pub reason: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Sealed {
    ip_address: Option<String>,
    user_agent: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Consent)]
pub struct ConsentJson {
    #[schema(value_type = String, example = "consent")]
    pub object: &'static str,
    #[schema(example = "cns_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    pub customer_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text_version: String,
    pub channel: String,
    /// Shown with `customers:pii:read` only; `null` after erasure.
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// `active` or `revoked`.
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub granted_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    pub revocation_reason: Option<String>,
    /// The API key that recorded it.
    pub recorded_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

fn rfc3339(micros: i64) -> String {
    Timestamp::from_micros(micros).to_rfc3339()
}

async fn consent_json(state: &AppState, c: &ConsentRecord, full: bool) -> Result<ConsentJson, ApiError> {
    let mut sealed = Sealed::default();
    if full && let (Some(bytes), Some(dek)) = (&c.sealed, data_key(state, c.tenant, &c.customer_id).await?) {
        let plain = dek.open(&format!("consent:{}", c.id), bytes).map_err(|e| super::key_fault(&e))?;
        sealed = serde_json::from_slice(&plain).map_err(|e| ApiError::internal(&e))?;
    }
    Ok(ConsentJson {
        object: "consent",
        id: c.id.clone(),
        customer_id: c.customer_id.clone(),
        kind: c.consent_type.clone(),
        text_version: c.text_version.clone(),
        channel: c.channel.clone(),
        ip_address: sealed.ip_address,
        user_agent: sealed.user_agent,
        status: if c.revocation.is_some() { "revoked" } else { "active" },
        granted_at: rfc3339(c.granted_at),
        revoked_at: c.revocation.as_ref().map(|r| rfc3339(r.revoked_at)),
        revocation_reason: c.revocation.as_ref().map(|r| r.reason.clone()),
        recorded_by: c.actor.clone(),
        created_at: rfc3339(c.created_at),
    })
}

fn parse_time(text: &str, param: &str, now: Timestamp) -> Result<i64, ApiError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid(param, format!("{param} must be an RFC 3339 date-time")))?;
    let micros = i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|_| ApiError::invalid(param, format!("{param} is out of range")))?;
    if micros > now.micros() {
        return Err(ApiError::invalid(param, format!("{param} must not be in the future")));
    }
    Ok(micros)
}

/// Records a consent the customer gave.
#[utoipa::path(post, path = "/v1/customers/{id}/consents", tag = "Customers", operation_id = "create_consent",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    request_body = CreateConsentRequest,
    responses((status = 201, description = "The consent.", body = ConsentJson)))]
pub async fn create(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<CreateConsentRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/customers/{id}/consents"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let req = &body.value;
    let now = state.clock.now();
    let kind =
        CONSENT_TYPES.iter().find(|t| **t == req.kind).ok_or_else(|| ApiError::invalid("type", format!("type must be one of {}", CONSENT_TYPES.join(", "))))?;
    let channel =
        CHANNELS.iter().find(|c| **c == req.channel).ok_or_else(|| ApiError::invalid("channel", format!("channel must be one of {}", CHANNELS.join(", "))))?;
    let text_version = req.text_version.trim();
    if text_version.is_empty() || text_version.chars().count() > 100 || text_version.chars().any(char::is_control) {
        return Err(ApiError::invalid("text_version", "text_version must be 1 to 100 characters"));
    }
    let ip = req
        .ip_address
        .as_deref()
        .map(|ip| ip.trim().parse::<std::net::IpAddr>().map(|a| a.to_string()))
        .transpose()
        .map_err(|_| ApiError::invalid("ip_address", "ip_address must be an IPv4 or IPv6 address"))?;
    let agent = req.user_agent.as_deref().map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned);
    if agent.as_ref().is_some_and(|a| a.chars().count() > 500 || a.chars().any(char::is_control)) {
        return Err(ApiError::invalid("user_agent", "user_agent must be at most 500 characters without control characters"));
    }
    let granted_at = parse_time(&req.granted_at, "granted_at", now)?;
    let customer = load_customer(&state, principal.tenant, &id).await?;
    let dek = data_key(&state, customer.tenant, &customer.id).await?.ok_or_else(|| conflict("customer_erased", "this customer's personal data was erased"))?;
    let consent_id = state.customers.ids.consent().to_string();
    let sealed = if ip.is_some() || agent.is_some() {
        let plain = serde_json::to_vec(&Sealed { ip_address: ip, user_agent: agent }).map_err(|e| ApiError::internal(&e))?;
        Some(dek.seal(&format!("consent:{consent_id}"), &plain).map_err(|e| super::key_fault(&e))?)
    } else {
        None
    };
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let record = ConsentRecord {
        id: consent_id.clone(),
        tenant: customer.tenant,
        customer_id: customer.id.clone(),
        consent_type: (*kind).to_owned(),
        text_version: text_version.to_owned(),
        channel: (*channel).to_owned(),
        sealed,
        granted_at,
        actor: actor.actor.clone(),
        created_at: now.micros(),
        revocation: None,
    };
    let full = principal.has_scope(Scope::CustomersPiiRead);
    let (response, bytes) = json_response(StatusCode::CREATED, &consent_json(&state, &record, full).await?)?;
    let audit = vec![actor.audit(
        &state.customers.ids,
        "consent.granted",
        ("consent", &consent_id),
        vec![String::from("type"), String::from("text_version")],
        None,
        now,
    )];
    let bytes = super::seal_body(Some((&customer.id, &dek)), bytes)?;
    state.store.insert_consent(record, audit, idempotency_record(customer.tenant, key, StatusCode::CREATED, bytes, now)).await?;
    Ok(response)
}

/// The customer's consents, oldest first.
#[utoipa::path(get, path = "/v1/customers/{id}/consents", tag = "Customers", operation_id = "list_consents",
    params(("id" = String, Path, description = "A customer id (`cus_…`).")),
    responses((status = 200, description = "The consents.", body = inline(crate::render::ListJson<ConsentJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let customer = load_customer(&state, principal.tenant, &id).await?;
    let full = principal.has_scope(Scope::CustomersPiiRead);
    let mut items = Vec::new();
    for c in state.store.list_consents(customer.tenant, customer.id).await? {
        items.push(consent_json(&state, &c, full).await?);
    }
    Ok(axum::Json(crate::render::list(items, false)).into_response())
}

/// `{customer_id}/consents/{consent_id}` in a path.
pub struct ConsentPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for ConsentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((a, b))) => Ok(ConsentPath(a, b)),
            Err(_) => Err(ApiError::not_found("consent")),
        }
    }
}

/// Revokes a consent: a new record; the consent itself never changes.
#[utoipa::path(post, path = "/v1/customers/{id}/consents/{consent_id}/revoke", tag = "Customers", operation_id = "revoke_consent",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), ("consent_id" = String, Path, description = "A consent id (`cns_…`)."), crate::openapi::IdempotencyKey),
    request_body = RevokeConsentRequest,
    responses((status = 200, description = "The consent, revoked.", body = ConsentJson)))]
pub async fn revoke(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    ConsentPath(customer_id, consent_id): ConsentPath,
    body: JsonBody<RevokeConsentRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } =
        keyed(&state, &principal, &headers, &format!("/v1/customers/{customer_id}/consents/{consent_id}/revoke"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let reason = reason_of(&body.value.reason, "reason")?;
    let now = state.clock.now();
    if ConsentId::parse(&consent_id).is_none() {
        return Err(ApiError::not_found("consent"));
    }
    let consent = state
        .store
        .get_consent(principal.tenant, consent_id.clone())
        .await?
        .filter(|c| c.customer_id == customer_id)
        .ok_or_else(|| ApiError::not_found("consent"))?;
    if consent.revocation.is_some() {
        return Err(conflict("consent_already_revoked", "this consent was revoked already"));
    }
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let revocation = RevocationRecord {
        id: state.customers.ids.consent_revocation().to_string(),
        consent_id: consent_id.clone(),
        reason: reason.clone(),
        revoked_at: now.micros(),
        actor: actor.actor.clone(),
        created_at: now.micros(),
    };
    let mut after = consent.clone();
    after.revocation = Some(revocation.clone());
    let full = principal.has_scope(Scope::CustomersPiiRead);
    let (response, bytes) = json_response(StatusCode::OK, &consent_json(&state, &after, full).await?)?;
    let dek = data_key(&state, principal.tenant, &customer_id).await?;
    let bytes = super::seal_body(dek.as_ref().map(|d| (customer_id.as_str(), d)), bytes)?;
    let audit = vec![actor.audit(&state.customers.ids, "consent.revoked", ("consent", &consent_id), vec![String::from("status")], Some(reason), now)];
    if !state.store.revoke_consent(principal.tenant, revocation, audit, idempotency_record(principal.tenant, key, StatusCode::OK, bytes, now)).await? {
        return Err(conflict("consent_already_revoked", "this consent was revoked already"));
    }
    Ok(response)
}
