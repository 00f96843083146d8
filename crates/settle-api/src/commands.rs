//! Sends a command to the engine with idempotency handled around it: the one
//! path every POST takes.

use crate::error::ApiError;
use crate::idempotency;
use crate::observe::RequestId;
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use settle_core::tenancy::Principal;
use settle_store::engine::{Command, CommandError, IdempotencyClaim, Renderer, Reply};
use settle_store::engine::{SubmitContext, SubmitError};
use settle_store::records::StoredResponse;

/// What a POST handler hands over once it has parsed its input.
pub struct Submission<'a> {
    pub principal: &'a Principal,
    pub request_id: &'a RequestId,
    pub client: crate::observe::ClientIp,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub canonical_body: &'a [u8],
    pub command: Command,
    pub render: Renderer,
}

fn respond(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let location = if status == StatusCode::ACCEPTED { crate::operations::location_of(&stored.body) } else { None };
    let code = if status.is_client_error() || status.is_server_error() { crate::error::AnsweredCode::of(&stored.body) } else { None };
    let mut response = (status, stored.body).into_response();
    if let Some(code) = code {
        response.extensions_mut().insert(code);
    }
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub async fn submit(state: &AppState, s: Submission<'_>) -> Result<Response, ApiError> {
    if let Some(kind) = crate::operations::async_kind(s.headers, s.path) {
        return crate::operations::accept(state, kind, s).await;
    }
    let tenant = s.principal.tenant;
    let key = idempotency::key_from(s.headers)?;
    let mut _guard = None;
    let claim = match key {
        None => None,
        Some(key) => {
            let fingerprint = idempotency::fingerprint(s.principal, "POST", s.path, s.canonical_body);
            if let Some(record) = state.store.find_idempotency(tenant, key.clone()).await? {
                return if record.fingerprint == fingerprint { Ok(respond(record.response, true)) } else { Err(idempotency::reused()) };
            }
            _guard = Some(state.in_flight.claim(tenant, &key).ok_or_else(idempotency::in_use)?);
            Some(IdempotencyClaim { key, fingerprint, request_id: s.request_id.0.clone(), render: s.render })
        }
    };
    let correlation_id = crate::correlation::from_headers(s.headers);
    let context = SubmitContext {
        request_id: Some(s.request_id.0.clone()),
        correlation_id,
        actor: Some(s.principal.key_id.to_string()),
        client_ip: s.client.0.map(|ip| ip.to_string()),
    };
    let reply = match state.engine.try_submit_with(tenant, s.command, claim, context).await {
        Ok(reply) => reply,
        Err(SubmitError::Overloaded) => return Ok(crate::hygiene::unavailable_now(ApiError::overloaded())),
        Err(SubmitError::Stopped) => return Err(ApiError::unavailable()),
    };
    match reply {
        Reply::Done { result: Err(CommandError::Unavailable), .. } => Err(ApiError::unavailable()),
        Reply::Done { result: Err(CommandError::OutcomeUnknown), .. } => Err(ApiError::outcome_unknown()),
        Reply::Done { stored: Some(stored), .. } => Ok(respond(stored, false)),
        Reply::Done { result, stored: None } => Ok(respond((s.render)(&result, &s.request_id.0), false)),
        Reply::Replay(stored) => Ok(respond(stored, true)),
        Reply::KeyReused => Err(idempotency::reused()),
    }
}
