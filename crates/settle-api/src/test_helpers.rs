//! `/v1/test_helpers/…`: endpoints that simulate the world, for sandbox keys
//! only (as Stripe's test helpers are).
//!
//! To any other caller — a live key, no key, an unknown or revoked key — these
//! paths answer exactly like a path that does not exist (`404 not_found`, "no
//! such endpoint"), whatever the method, so a live integration cannot even
//! learn that they exist. A sandbox key then needs the usual scopes.
//!
//! Helpers change the ledger only through the engine, with ordinary
//! double-entry transactions, so the sandbox ledger stays as auditable as live.

use crate::auth::require;
use crate::body::JsonBody;
use crate::commands::{Submission, submit};
use crate::error::{ApiError, ErrorType};
use crate::observe::{ClientIp, RequestId};
use crate::path::IdPath;
use crate::render;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::{Extension, Router};
use serde::Deserialize;
use settle_core::ids::AccountId;
use settle_core::ledger::{Direction, EntryDraft, TransactionDraft, TransactionStatus};
use settle_core::limits::MAX_TEXT_CHARS;
use settle_core::metadata::Metadata;
use settle_core::money::{Amount, Currency};
use settle_core::tenancy::{Environment, Principal, Scope, TenantId};
use settle_store::engine::{Command, CommandError, Outcome, Reply};
use settle_store::records::NewAccount;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The helpers' routes, merged into the API router.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/test_helpers/accounts/{id}/fund", any(fund))
}

/// What an unknown path answers; helpers answer it to every non-sandbox caller.
pub(crate) fn no_such_endpoint() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorType::InvalidRequestError, "not_found", "no such endpoint")
}

/// A sandbox key with `ledger:write`, on a POST. In that order: anything but
/// a sandbox key is 404 (before the method, so a live key learns nothing from
/// a 405), then the method (405), then the scope (403).
pub struct SandboxWriter(pub Principal);

/// A sandbox key on a GET (reads of sandbox-only objects such as test
/// clocks), refused in the same order as [`SandboxWriter`]; the handler
/// checks its read scope.
pub struct SandboxReader(pub Principal);

/// The caller's principal if it is a sandbox key and the method is `method`:
/// anything but a sandbox key is 404, then a wrong method 405.
async fn sandbox_principal(parts: &mut Parts, state: &AppState, method: Method) -> Result<Principal, ApiError> {
    let principal = Principal::from_request_parts(parts, state).await.map_err(|_| no_such_endpoint())?;
    if principal.environment != Environment::Sandbox {
        return Err(no_such_endpoint());
    }
    if parts.method != method {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::InvalidRequestError,
            "method_not_allowed",
            "this endpoint does not accept that method",
        ));
    }
    Ok(principal)
}

impl FromRequestParts<AppState> for SandboxWriter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SandboxWriter, ApiError> {
        let principal = sandbox_principal(parts, state, Method::POST).await?;
        require(&principal, Scope::LedgerWrite)?;
        Ok(SandboxWriter(principal))
    }
}

impl FromRequestParts<AppState> for SandboxReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SandboxReader, ApiError> {
        Ok(SandboxReader(sandbox_principal(parts, state, Method::GET).await?))
    }
}

/// `POST /v1/test_helpers/accounts/{id}/fund`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundRequest {
    /// Minor units, 1 to 2^63−1.
    #[schema(minimum = 1, example = 10000)]
    pub amount: i64,
    #[serde(default)]
    pub description: Option<String>,
}

/// The funding account's `external_id` for a currency; reserved in sandboxes.
pub fn funding_external_id(currency: Currency) -> String {
    format!("settle_sandbox_funding_{}", currency.code())
}

/// The tenant's sandbox funding account in `currency`, opened on first use.
/// It is debit-normal (an asset: the money the simulated world pays in) with
/// no limit, so it can fund anything. Opening it is idempotent through its
/// reserved `external_id`: a second attempt, here or concurrently, is refused
/// as a duplicate that names the existing account.
async fn funding_account(state: &AppState, tenant: TenantId, currency: Currency) -> Result<AccountId, ApiError> {
    let new = NewAccount {
        name: format!("Sandbox funding ({})", currency.code()),
        currency,
        normal_balance: Direction::Debit,
        min_available_balance: None,
        external_id: Some(funding_external_id(currency)),
        metadata: Metadata::from([(String::from("settle_sandbox"), String::from("funding"))]),
        customer: None,
    };
    let reply = state.engine.submit(tenant, Command::CreateAccount(new), None).await.map_err(|_| ApiError::unavailable())?;
    match reply {
        Reply::Done { result: Ok(Outcome::Account(account)), .. } => Ok(account.state.id),
        Reply::Done { result: Err(CommandError::DuplicateExternalId { existing }), .. } => {
            AccountId::parse(&existing).ok_or_else(|| ApiError::internal(&"the sandbox funding account's id is malformed"))
        }
        Reply::Done { result: Err(e), .. } => Err(ApiError::from(&e)),
        Reply::Done { result: Ok(_), .. } | Reply::Replay(_) | Reply::KeyReused => {
            Err(ApiError::internal(&"unexpected engine reply while opening a funding account"))
        }
    }
}

/// The transaction that funds `account`: from the tenant's sandbox funding
/// account in the account's currency, raising the account's balance on its
/// normal side (a credit for a credit-normal wallet, a debit for a
/// debit-normal account). Shared by the handler and the operation worker.
pub async fn fund_command(state: &AppState, tenant: TenantId, account: AccountId, req: FundRequest) -> Result<Command, ApiError> {
    let amount = Amount::new(req.amount).ok_or_else(|| ApiError::invalid("amount", "amount must be a positive integer in minor units"))?;
    let description = crate::wire::text("description", req.description, MAX_TEXT_CHARS)?.unwrap_or_else(|| String::from("Sandbox funding"));
    let target = state.store.get_account(tenant, account.clone(), state.clock.now()).await?.ok_or_else(|| ApiError::not_found("account"))?;
    let funding = funding_account(state, tenant, target.state.currency).await?;
    let (funding_side, target_side) = match target.state.normal_balance {
        Direction::Credit => (Direction::Debit, Direction::Credit),
        Direction::Debit => (Direction::Credit, Direction::Debit),
    };
    let draft = TransactionDraft {
        entries: vec![
            EntryDraft { account_id: funding, direction: funding_side, amount, currency: None },
            EntryDraft { account_id: account, direction: target_side, amount, currency: None },
        ],
        status: TransactionStatus::Posted,
        description: Some(description),
        external_id: None,
        effective_at: None,
        expires_at: None,
        expected_versions: BTreeMap::new(),
        metadata: Metadata::new(),
    };
    Ok(Command::CreateTransaction(Box::new(draft)))
}

/// Sandbox only: moves money into an account from the environment's sandbox funding account (opened on first use), as if it arrived from outside.
#[utoipa::path(post, path = "/v1/test_helpers/accounts/{id}/fund", tag = "Test helpers", operation_id = "fund_account",
    params(("id" = String, Path, description = "An account id (`acct_…`)."), crate::openapi::IdempotencyKey),
    request_body = FundRequest,
    responses((status = 201, description = "The funding transaction.", body = crate::render::TransactionJson)))]
pub async fn fund(
    State(state): State<AppState>,
    SandboxWriter(principal): SandboxWriter,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<FundRequest>,
) -> Result<Response, ApiError> {
    let account = crate::accounts::account_id(&id)?;
    let command = fund_command(&state, principal.tenant, account, body.value).await?;
    let path = format!("/v1/test_helpers/accounts/{id}/fund");
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
