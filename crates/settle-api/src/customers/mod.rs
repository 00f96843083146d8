//! `/v1/customers`: people and businesses, their KYC state, personal data
//! protection (envelope encryption, blind indexes, masking, erasure),
//! consents, sanctions screening and the compliance audit trail (issue 6).
//!
//! Customer rows are written directly through `settle_store::customers`
//! (never the ledger engine). Personal fields are parsed once at the
//! boundary by `settle_core::customers`, sealed under the customer's data
//! key ([`keyring`]) and never logged: error messages name the field
//! (`param`) and the rule, never the value.

pub mod accounts;
pub mod audit;
pub mod consents;
pub mod documents;
pub mod keyring;
pub mod profile;
pub mod sanctions;
pub mod screening;

use crate::error::{ApiError, ErrorType};
use crate::idempotency;
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use settle_core::clock::Timestamp;
use settle_core::ids::IdGenerator;
use settle_core::tenancy::{Principal, TenantId};
use settle_store::customers::{AuditRecord, CustomerRecord};
use settle_store::records::{IdempotencyRecord, StoredResponse};
use std::sync::Arc;

pub use profile::{create, erase, get, kyc_history, list, update, verify};

/// What the customer endpoints share: the keyring, the screening lists in
/// memory, and the id generator of customer-side objects.
#[derive(Default)]
pub struct Customers {
    /// `None` on a server started without one: customer endpoints answer 503.
    pub keyring: Option<Arc<keyring::Keyring>>,
    pub screener: screening::Screener,
    pub ids: IdGenerator,
    /// Accounts of blocked customers, per tenant, briefly cached.
    pub blocked: accounts::BlockedCache,
}

impl Customers {
    pub fn with_keyring(keyring: Arc<keyring::Keyring>) -> Customers {
        Customers { keyring: Some(keyring), ..Customers::default() }
    }

    pub(crate) fn keyring(&self) -> Result<&keyring::Keyring, ApiError> {
        self.keyring.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorType::ApiError,
                "service_unavailable",
                "this server has no customer data keyring configured; nothing was written",
            )
        })
    }
}

/// A keyring failure: a fault of ours (the cause is logged, never a value).
pub(crate) fn key_fault(e: &keyring::KeyringError) -> ApiError {
    ApiError::internal(e)
}

pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorType::ConflictError, code, message)
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Result<(Response, Vec<u8>), ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::internal(&e))?;
    let mut response = (status, body.clone()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((response, body))
}

/// A write request's idempotency: the stored answer to replay, or the key
/// claimed in this process with the request's fingerprint.
pub(crate) struct Keyed {
    pub key: Option<(String, String)>,
    pub replay: Option<Response>,
    pub _guard: Option<idempotency::InFlightGuard>,
}

pub(crate) async fn keyed(state: &AppState, principal: &Principal, headers: &HeaderMap, path: &str, canonical: &[u8]) -> Result<Keyed, ApiError> {
    let Some(key) = idempotency::key_from(headers)? else { return Ok(Keyed { key: None, replay: None, _guard: None }) };
    let fingerprint = idempotency::fingerprint(principal, "POST", path, canonical);
    if let Some(record) = state.store.find_idempotency(principal.tenant, key.clone()).await? {
        if record.fingerprint != fingerprint {
            return Err(idempotency::reused());
        }
        let status = StatusCode::from_u16(record.response.status).unwrap_or(StatusCode::OK);
        let body = open_body(state, principal.tenant, record.response.body).await?;
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Keyed { key: None, replay: Some(response), _guard: None });
    }
    let guard = state.in_flight.claim(principal.tenant, &key).ok_or_else(idempotency::in_use)?;
    Ok(Keyed { key: Some((key, fingerprint)), replay: None, _guard: Some(guard) })
}

/// Marks a stored response body sealed under a customer's data key.
const SEALED_BODY: &[u8] = b"settle-sealed-v1:";

/// A response body for the idempotency table: sealed under the customer's
/// data key when it may hold personal data (`dek` given), so the table
/// holds no personal data in clear and erasure shreds stored replays too.
pub(crate) fn seal_body(dek: Option<(&str, &keyring::DataKey)>, body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    let Some((customer_id, dek)) = dek else { return Ok(body) };
    let sealed = dek.seal(&format!("replay:{customer_id}"), &body).map_err(|e| key_fault(&e))?;
    let mut out = SEALED_BODY.to_vec();
    out.extend_from_slice(customer_id.as_bytes());
    out.push(b':');
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The stored body in clear (see [`seal_body`]); a replay after erasure is refused.
async fn open_body(state: &AppState, tenant: TenantId, body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    let Some(rest) = body.strip_prefix(SEALED_BODY) else { return Ok(body) };
    let Some(colon) = rest.iter().position(|b| *b == b':') else { return Err(ApiError::internal(&"a sealed replay body is malformed")) };
    let customer_id = String::from_utf8_lossy(&rest[..colon]).into_owned();
    let dek = profile::data_key(state, tenant, &customer_id)
        .await?
        .ok_or_else(|| conflict("customer_erased", "this request's customer was erased since; its answer cannot be replayed"))?;
    dek.open(&format!("replay:{customer_id}"), &rest[colon + 1..]).map_err(|e| key_fault(&e))
}

pub(crate) fn idempotency_record(
    tenant: TenantId,
    key: Option<(String, String)>,
    status: StatusCode,
    body: Vec<u8>,
    now: Timestamp,
) -> Option<IdempotencyRecord> {
    key.map(|(key, fingerprint)| IdempotencyRecord { tenant, key, fingerprint, response: StoredResponse { status: status.as_u16(), body }, created_at: now })
}

/// Who did it and from where, for audit records.
pub(crate) struct Actor {
    pub tenant: TenantId,
    pub actor: String,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub client_ip: Option<String>,
}

impl Actor {
    pub fn of(principal: &Principal, request_id: &crate::observe::RequestId, headers: &HeaderMap, client: crate::observe::ClientIp) -> Actor {
        Actor {
            tenant: principal.tenant,
            actor: principal.key_id.to_string(),
            request_id: Some(request_id.0.clone()),
            correlation_id: crate::correlation::from_headers(headers).map(|c| c.as_str().to_owned()),
            client_ip: client.0.map(|ip| ip.to_string()),
        }
    }

    pub fn system(tenant: TenantId, actor: &str) -> Actor {
        Actor { tenant, actor: actor.to_owned(), request_id: None, correlation_id: None, client_ip: None }
    }

    pub fn audit(&self, ids: &IdGenerator, action: &str, resource: (&str, &str), fields: Vec<String>, reason: Option<String>, now: Timestamp) -> AuditRecord {
        AuditRecord {
            id: ids.audit_event().to_string(),
            tenant: self.tenant,
            actor: self.actor.clone(),
            action: action.to_owned(),
            resource_type: resource.0.to_owned(),
            resource_id: resource.1.to_owned(),
            changed_fields: fields,
            reason,
            request_id: self.request_id.clone(),
            correlation_id: self.correlation_id.clone(),
            client_ip: self.client_ip.clone(),
            created_at: now.micros(),
        }
    }
}

/// Reads a customer of the tenant or answers 404.
pub(crate) async fn load_customer(state: &AppState, tenant: TenantId, id: &str) -> Result<CustomerRecord, ApiError> {
    if settle_core::ids::CustomerId::parse(id).is_none() {
        return Err(ApiError::not_found("customer"));
    }
    state.store.get_customer(tenant, id.to_owned()).await?.ok_or_else(|| ApiError::not_found("customer"))
}

/// A reason for the audit: 1 to 500 characters.
pub(crate) fn reason_of(text: &str, param: &str) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 500 || trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid(param, format!("{param} must be 1 to 500 characters without control characters")));
    }
    Ok(trimmed.to_owned())
}

/// Data keys re-wrapped per page during a rotation.
const REWRAP_PAGE: i64 = 500;

/// Re-wraps every data key wrapped by an older KEK with the keyring's
/// newest, while servers keep serving: each key is replaced only if it is
/// still wrapped by the version that was read (a key erased meanwhile stays
/// erased), and passes repeat until no older key remains (servers that had
/// not yet seen the new KEK may have wrapped new customers' keys with the
/// old one in the meantime). Returns how many keys were re-wrapped.
pub async fn rewrap_all(store: &settle_store::Store, ring: &keyring::Keyring) -> Result<usize, RewrapError> {
    let target = ring.current_version();
    let mut total = 0;
    loop {
        let mut after = String::new();
        let mut pass = 0;
        loop {
            let keys = store.data_keys_wrapped_before(target, after.clone(), REWRAP_PAGE).await?;
            let Some(last) = keys.last() else { break };
            after = last.customer_id.clone();
            for k in keys {
                let dek = ring.unwrap(k.tenant, &k.customer_id, k.kek_version, &k.wrapped)?;
                let (version, wrapped) = ring.wrap(k.tenant, &k.customer_id, &dek)?;
                let old = k.kek_version;
                if store.rewrap_data_key(settle_store::customers::DataKeyRecord { kek_version: version, wrapped, ..k }, old).await? {
                    pass += 1;
                }
            }
        }
        total += pass;
        if pass == 0 {
            return Ok(total);
        }
    }
}

/// Why a rotation's re-wrap stopped (it can be run again: it resumes).
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    Store(#[from] settle_store::StoreError),
    #[error(transparent)]
    Key(#[from] keyring::KeyringError),
}
