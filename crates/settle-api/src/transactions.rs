//! `/v1/transactions`: create (one or a batch), post or void a hold, reverse,
//! read and list.

use crate::auth::{Writer, require};
use crate::body::JsonBody;
use crate::commands::{Submission, submit};
use crate::error::ApiError;
use crate::observe::RequestId;
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::render;
use crate::state::AppState;
use crate::wire::{self, BatchRequest, CreateTransactionRequest, EmptyRequest, PostRequest};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use settle_core::ids::{AccountId, TransactionId};
use settle_core::ledger::TransactionStatus;
use settle_core::limits::{MAX_ASYNC_BATCH_TRANSACTIONS, MAX_BATCH_BODY_BYTES, MAX_BATCH_TRANSACTIONS};
use settle_core::tenancy::{Principal, Scope};
use settle_store::engine::Command;

fn transaction_id(text: &str) -> Result<TransactionId, ApiError> {
    TransactionId::parse(text).ok_or_else(|| ApiError::not_found("transaction"))
}

pub async fn create(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: JsonBody<CreateTransactionRequest>,
) -> Result<Response, ApiError> {
    let draft = wire::transaction_draft("", body.value)?;
    let command = Command::CreateTransaction(Box::new(draft));
    submit(
        &state,
        Submission {
            principal: &principal,
            request_id: &request_id,
            headers: &headers,
            path: "/v1/transactions",
            canonical_body: &body.canonical,
            command,
            render: render::render_created,
        },
    )
    .await
}

pub async fn batch(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: JsonBody<BatchRequest, MAX_BATCH_BODY_BYTES>,
) -> Result<Response, ApiError> {
    let req = body.value;
    // Over the threshold a batch runs as an operation (202), which may hold more.
    let over_threshold = req.transactions.len() > state.operations.config.async_batch_threshold;
    let max = if over_threshold || crate::operations::prefers_async(&headers) { MAX_ASYNC_BATCH_TRANSACTIONS } else { MAX_BATCH_TRANSACTIONS };
    if req.transactions.is_empty() || req.transactions.len() > max {
        return Err(ApiError::invalid("transactions", format!("a batch holds 1 to {max} transactions")));
    }
    let items =
        req.transactions.into_iter().enumerate().map(|(i, t)| wire::transaction_draft(&format!("transactions[{i}]."), t)).collect::<Result<Vec<_>, _>>()?;
    let command = Command::CreateBatch { atomic: req.atomic, items };
    let canonical = if over_threshold && body.canonical.is_empty() { crate::operations::canonical(&body.raw)? } else { body.canonical };
    let submission = Submission {
        principal: &principal,
        request_id: &request_id,
        headers: &headers,
        path: "/v1/transactions/batch",
        canonical_body: &canonical,
        command,
        render: render::render_ok,
    };
    if over_threshold {
        return crate::operations::accept(&state, crate::operations::OperationKind::TransactionsBatch, submission).await;
    }
    submit(&state, submission).await
}

pub async fn post(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<PostRequest>,
) -> Result<Response, ApiError> {
    let tid = transaction_id(&id)?;
    let entries = post_entries(body.value.entries)?;
    let path = format!("/v1/transactions/{id}/post");
    let command = Command::PostTransaction { id: tid, entries };
    submit(
        &state,
        Submission {
            principal: &principal,
            request_id: &request_id,
            headers: &headers,
            path: &path,
            canonical_body: &body.canonical,
            command,
            render: render::render_ok,
        },
    )
    .await
}

/// Converts the entries of a post request (shared with the operation worker).
pub fn post_entries(entries: Option<Vec<wire::EntryRequest>>) -> Result<Option<Vec<settle_core::ledger::EntryDraft>>, ApiError> {
    match entries {
        None => Ok(None),
        Some(list) => {
            let drafts = wire::entries("entries", list)?;
            settle_core::ledger::validate_entry_count(&drafts).map_err(|e| ApiError::invalid("entries", e.to_string()))?;
            Ok(Some(drafts))
        }
    }
}

pub async fn void(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let tid = transaction_id(&id)?;
    let path = format!("/v1/transactions/{id}/void");
    let command = Command::VoidTransaction { id: tid };
    submit(
        &state,
        Submission {
            principal: &principal,
            request_id: &request_id,
            headers: &headers,
            path: &path,
            canonical_body: &body.canonical,
            command,
            render: render::render_ok,
        },
    )
    .await
}

pub async fn reverse(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let tid = transaction_id(&id)?;
    let path = format!("/v1/transactions/{id}/reverse");
    let command = Command::ReverseTransaction { id: tid };
    submit(
        &state,
        Submission {
            principal: &principal,
            request_id: &request_id,
            headers: &headers,
            path: &path,
            canonical_body: &body.canonical,
            command,
            render: render::render_created,
        },
    )
    .await
}

pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let id = transaction_id(&id)?;
    let t = state.store.get_transaction(principal.tenant, id, state.clock.now()).await?.ok_or_else(|| ApiError::not_found("transaction"))?;
    Ok(Json(render::transaction(&t)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<String>,
    starting_after: Option<String>,
    ending_before: Option<String>,
    account_id: Option<String>,
    status: Option<String>,
}

pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let params: ListParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| TransactionId::parse(id).is_some())?;
    let account =
        params.account_id.map(|a| AccountId::parse(&a).ok_or_else(|| ApiError::invalid("account_id", "account_id is not an account id"))).transpose()?;
    let status = params
        .status
        .map(|s| TransactionStatus::parse(&s).ok_or_else(|| ApiError::invalid("status", "status must be pending, posted or voided")))
        .transpose()?;
    let result = state.store.list_transactions(principal.tenant, account, status, page, state.clock.now()).await?;
    Ok(Json(render::list(result.items.iter().map(render::transaction).collect(), result.has_more)).into_response())
}
