//! `/v1/accounts`: open accounts, read balances (now or as of an instant),
//! list accounts and an account's entries.

use crate::auth::{Writer, require};
use crate::body::JsonBody;
use crate::commands::{Submission, submit};
use crate::error::ApiError;
use crate::error::ErrorType;
use crate::observe::{ClientIp, RequestId};
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::render::{self, balances_json};
use crate::state::AppState;
use crate::wire::{self, CreateAccountRequest};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use settle_core::clock::Timestamp;
use settle_core::ids::CustomerId;
use settle_core::ids::{AccountId, EntryId};
use settle_core::limits::{MAX_EXTERNAL_ID_CHARS, MAX_TEXT_CHARS};
use settle_core::tenancy::{Principal, Scope};
use settle_store::engine::Command;
use settle_store::records::{CustomerLink, NewAccount};
use utoipa::IntoParams;

/// Opens an account. Its currency and normal side never change.
#[utoipa::path(post, path = "/v1/accounts", tag = "Accounts", operation_id = "create_account",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateAccountRequest,
    responses((status = 201, description = "The new account.", body = render::AccountJson)))]
pub async fn create(
    State(state): State<AppState>,
    Writer(principal): Writer,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    body: JsonBody<CreateAccountRequest>,
) -> Result<Response, ApiError> {
    let customer = body.value.customer_id.clone();
    let mut new = new_account(body.value)?;
    new.customer = owner(&state, &principal, principal.key_id.as_str(), customer).await?;
    let blocks_money = new.customer.is_some();
    let response = submit(
        &state,
        Submission {
            principal: &principal,
            request_id: &request_id,
            client,
            headers: &headers,
            path: "/v1/accounts",
            canonical_body: &body.canonical,
            command: Command::CreateAccount(new),
            render: render::render_created,
        },
    )
    .await;
    if blocks_money {
        // The new account may belong to a blocked customer.
        state.customers.blocked.invalidate(principal.tenant);
    }
    response
}

/// The customer an account is opened for: it must exist in the tenant, and
/// the key must be allowed to change customers (as linking later would).
pub async fn owner(state: &AppState, principal: &Principal, actor: &str, customer_id: Option<String>) -> Result<Option<CustomerLink>, ApiError> {
    let Some(customer_id) = customer_id else {
        return Ok(None);
    };
    require(principal, Scope::CustomersWrite)?;
    let missing = || {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequestError, "customer_not_found", "customer_id names no customer")
            .with_param("customer_id")
    };
    if CustomerId::parse(&customer_id).is_none() {
        return Err(missing());
    }
    let customer = state.store.get_customer(principal.tenant, customer_id).await?.ok_or_else(missing)?;
    Ok(Some(CustomerLink { customer_id: customer.id, actor: actor.to_owned() }))
}

/// Converts a create-account request (shared with the operation worker).
pub fn new_account(req: CreateAccountRequest) -> Result<NewAccount, ApiError> {
    let name = wire::text("name", Some(req.name), MAX_TEXT_CHARS)?.unwrap_or_default();
    Ok(NewAccount {
        name,
        currency: wire::currency("currency", &req.currency)?,
        normal_balance: req.normal_balance.into(),
        min_available_balance: req.min_available_balance,
        external_id: wire::text("external_id", req.external_id, MAX_EXTERNAL_ID_CHARS)?,
        metadata: wire::metadata_of("metadata", req.metadata)?,
        customer: None,
    })
}

pub fn account_id(text: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(text).ok_or_else(|| ApiError::not_found("account"))
}

/// One account with its current balances.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "Accounts", operation_id = "get_account",
    params(("id" = String, Path, description = "An account id (`acct_…`).")),
    responses((status = 200, description = "The account.", body = render::AccountJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let id = account_id(&id)?;
    let account = state.store.get_account(principal.tenant, id, state.clock.now()).await?.ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(render::account(&account)?).into_response())
}

/// The organization's accounts in this environment, oldest first.
#[utoipa::path(get, path = "/v1/accounts", tag = "Accounts", operation_id = "list_accounts",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "A page of accounts.", body = render::ListJson<render::AccountJson>)))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let params: crate::pagination::PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| AccountId::parse(id).is_some())?;
    let result = state.store.list_accounts(principal.tenant, page, state.clock.now()).await?;
    let data = result.items.iter().map(render::account).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(render::list(data, result.has_more)).into_response())
}

/// The entries that touch an account, oldest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/entries", tag = "Accounts", operation_id = "list_account_entries",
    params(("id" = String, Path, description = "An account id (`acct_…`)."), crate::pagination::PageParams),
    responses((status = 200, description = "A page of entries.", body = render::ListJson<render::EntryJson>)))]
pub async fn entries(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let id = account_id(&id)?;
    let params: crate::pagination::PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| EntryId::parse(id).is_some())?;
    let result = state.store.list_entries(principal.tenant, id, page, state.clock.now()).await?.ok_or_else(|| ApiError::not_found("account"))?;
    Ok(Json(render::list(result.items.iter().map(render::entry_row).collect(), result.has_more)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceParams {
    /// RFC 3339: the balances as of this instant (default now).
    #[param(format = DateTime)]
    as_of: Option<String>,
}

/// An account's balances now, or as of a past instant (by effective time).
#[utoipa::path(get, path = "/v1/accounts/{id}/balances", tag = "Accounts", operation_id = "get_account_balances",
    params(("id" = String, Path, description = "An account id (`acct_…`)."), BalanceParams),
    responses((status = 200, description = "The balances.", body = render::AccountBalancesJson)))]
pub async fn balances(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let id = account_id(&id)?;
    let params: BalanceParams = parse_query(query.as_deref())?;
    let now = state.clock.now();
    let at = match params.as_of {
        None => now,
        Some(text) => Timestamp::parse_rfc3339(&text).ok_or_else(|| ApiError::invalid("as_of", "as_of must be an RFC 3339 timestamp"))?,
    };
    // The future is not known yet: a later instant answers as of now, and says so.
    let at = at.min(now);
    let (account, counters) = state.store.balances_as_of(principal.tenant, id, at).await?.ok_or_else(|| ApiError::not_found("account"))?;
    let (balances, totals) = balances_json(&counters, account.state.normal_balance)?;
    Ok(Json(render::AccountBalancesJson {
        object: "account_balances",
        account_id: account.state.id.as_str(),
        currency: account.state.currency.code(),
        as_of: at.to_rfc3339(),
        balances,
        totals,
    })
    .into_response())
}
