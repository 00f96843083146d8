//! `/v1/transactions`: create (one or a batch), post or void a hold, reverse,
//! read and list.

use crate::auth::{Writer, require};
use crate::body::JsonBody;
use crate::commands::{Submission, submit};
use crate::error::ApiError;
use crate::observe::{ClientIp, RequestId};
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
use utoipa::IntoParams;

fn transaction_id(text: &str) -> Result<TransactionId, ApiError> {
    TransactionId::parse(text).ok_or_else(|| ApiError::not_found("transaction"))
}

/// Moves money: a balanced set of entries, posted now or held as pending.
#[utoipa::path(post, path = "/v1/transactions", tag = "Transactions", operation_id = "create_transaction",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateTransactionRequest,
    responses((status = 201, description = "The new transaction.", body = render::TransactionJson)))]
pub async fn create(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
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
            client,
            headers: &headers,
            path: "/v1/transactions",
            canonical_body: &body.canonical,
            command,
            render: render::render_created,
        },
    )
    .await
}

/// In an atomic batch an `external_id` given twice can never succeed (the
/// second item always meets the first), and the engine's refusal would name
/// the first item's id, which the rollback leaves to no transaction: refused
/// as bad input instead, naming the second. (Not atomic, the first is created
/// and the second is a `duplicate_external_id` naming it.)
fn refuse_repeated_external_ids(items: &[settle_core::ledger::TransactionDraft]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashMap::new();
    for (i, draft) in items.iter().enumerate() {
        if let Some(ext) = draft.external_id.as_deref()
            && let Some(first) = seen.insert(ext, i)
        {
            let param = format!("transactions[{i}].external_id");
            return Err(ApiError::invalid(
                param.clone(),
                format!("{param} repeats transactions[{first}].external_id: an atomic batch with both can never succeed"),
            ));
        }
    }
    Ok(())
}

/// Up to 1000 transactions in one request and one commit; `atomic` chooses all-or-nothing.
#[utoipa::path(post, path = "/v1/transactions/batch", tag = "Transactions", operation_id = "create_transaction_batch",
    params(crate::openapi::IdempotencyKey),
    request_body = BatchRequest,
    responses((status = 200, description = "Each transaction's outcome, in request order.", body = render::BatchJson)))]
pub async fn batch(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    body: JsonBody<BatchRequest, MAX_BATCH_BODY_BYTES>,
) -> Result<Response, ApiError> {
    let req = body.value;
    // Over the threshold a batch runs as an operation (202), which may hold
    // more, unless the organization's rollout of that behaviour is off.
    let over_threshold = req.transactions.len() > state.operations.config.async_batch_threshold
        && state.flags.enabled(&state.store, &settle_core::flags::ASYNC_LARGE_BATCHES, principal.org_id.as_str()).await;
    let max = if over_threshold || crate::operations::prefers_async(&headers) { MAX_ASYNC_BATCH_TRANSACTIONS } else { MAX_BATCH_TRANSACTIONS };
    if req.transactions.is_empty() || req.transactions.len() > max {
        return Err(ApiError::invalid("transactions", format!("a batch holds 1 to {max} transactions")));
    }
    let items =
        req.transactions.into_iter().enumerate().map(|(i, t)| wire::transaction_draft(&format!("transactions[{i}]."), t)).collect::<Result<Vec<_>, _>>()?;
    if req.atomic {
        refuse_repeated_external_ids(&items)?;
    }
    let command = Command::CreateBatch { atomic: req.atomic, items };
    let canonical = if over_threshold && body.canonical.is_empty() { crate::operations::canonical(&body.raw)? } else { body.canonical };
    let submission = Submission {
        principal: &principal,
        request_id: &request_id,
        client,
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

/// Posts a pending transaction (a hold), in full or for less; what is not posted is released.
#[utoipa::path(post, path = "/v1/transactions/{id}/post", tag = "Transactions", operation_id = "post_transaction",
    params(("id" = String, Path, description = "A transaction id (`ltx_…`)."), crate::openapi::IdempotencyKey),
    request_body = PostRequest,
    responses((status = 200, description = "The posted transaction.", body = render::TransactionJson)))]
pub async fn post(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
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
            client,
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

/// Voids a pending transaction: the hold is released.
#[utoipa::path(post, path = "/v1/transactions/{id}/void", tag = "Transactions", operation_id = "void_transaction",
    params(("id" = String, Path, description = "A transaction id (`ltx_…`)."), crate::openapi::IdempotencyKey),
    request_body(content = EmptyRequest, description = "No fields.", content_type = "application/json"),
    responses((status = 200, description = "The voided transaction.", body = render::TransactionJson)))]
pub async fn void(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
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
            client,
            headers: &headers,
            path: &path,
            canonical_body: &body.canonical,
            command,
            render: render::render_ok,
        },
    )
    .await
}

/// Reverses a posted transaction with a new transaction of opposite entries.
#[utoipa::path(post, path = "/v1/transactions/{id}/reverse", tag = "Transactions", operation_id = "reverse_transaction",
    params(("id" = String, Path, description = "A transaction id (`ltx_…`)."), crate::openapi::IdempotencyKey),
    request_body(content = EmptyRequest, description = "No fields.", content_type = "application/json"),
    responses((status = 201, description = "The reversal (a new transaction).", body = render::TransactionJson)))]
pub async fn reverse(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
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
            client,
            headers: &headers,
            path: &path,
            canonical_body: &body.canonical,
            command,
            render: render::render_created,
        },
    )
    .await
}

/// One transaction with its entries.
#[utoipa::path(get, path = "/v1/transactions/{id}", tag = "Transactions", operation_id = "get_transaction",
    params(("id" = String, Path, description = "A transaction id (`ltx_…`).")),
    responses((status = 200, description = "The transaction.", body = render::TransactionJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let id = transaction_id(&id)?;
    let t = state.store.get_transaction(principal.tenant, id, state.clock.now()).await?.ok_or_else(|| ApiError::not_found("transaction"))?;
    Ok(Json(render::transaction(&t)).into_response())
}

/// Cursor pagination, oldest first, with filters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Objects per page, 1 to 100 (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// An id from the previous page: the page after it.
    starting_after: Option<String>,
    /// An id from the next page: the page before it.
    ending_before: Option<String>,
    /// Only transactions with an entry on this account.
    account_id: Option<String>,
    /// Only transactions in this status.
    #[param(value_type = Option<TransactionStatusFilter>)]
    status: Option<String>,
}

/// A transaction's status, as a list filter.
#[derive(utoipa::ToSchema)]
#[schema(as = TransactionStatus, rename_all = "lowercase")]
#[allow(dead_code, reason = "never built: it describes the accepted values in the API document")]
pub enum TransactionStatusFilter {
    Pending,
    Posted,
    Voided,
}

/// Transactions of this environment, oldest first.
#[utoipa::path(get, path = "/v1/transactions", tag = "Transactions", operation_id = "list_transactions",
    params(ListParams),
    responses((status = 200, description = "A page of transactions.", body = render::ListJson<render::TransactionJson>)))]
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
