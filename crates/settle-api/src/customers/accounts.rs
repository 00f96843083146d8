//! Customers' ledger accounts, and the refusal of money movements that
//! touch a blocked customer's account (`422 customer_blocked`).
//!
//! The link lives in `customer_accounts`: written by the engine in the
//! account's own transaction when `POST /v1/accounts` names a `customer_id`,
//! or here when an existing account is linked. A customer is blocked while
//! its latest screening is a `potential_match` (unresolved) or a
//! `confirmed_match`. The check runs in the API before a command reaches the
//! engine, against a per-tenant set of blocked accounts cached for
//! [`BLOCKED_TTL`] (like API keys): a decision taken on this server applies
//! at once, one taken on another server within that time. The engine itself
//! does not check, so a transaction already queued when a customer becomes
//! blocked can still commit.

use super::{Actor, Keyed, conflict, idempotency_record, json_response, keyed, load_customer};
use crate::auth::{Scoped, require, scope};
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorType};
use crate::observe::{ClientIp, RequestId};
use crate::path::IdPath;
use crate::state::AppState;
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::clock::Timestamp;
use settle_core::ids::AccountId;
use settle_core::tenancy::{Principal, Scope, TenantId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// How long a tenant's set of blocked accounts is trusted.
pub const BLOCKED_TTL: Duration = Duration::from_millis(500);
/// Tenants whose sets are kept before the cache is cleared.
const BLOCKED_CAPACITY: usize = 10_000;

type BlockedSet = Arc<HashSet<String>>;

#[derive(Default)]
pub struct BlockedCache {
    entries: Mutex<HashMap<TenantId, (BlockedSet, Instant)>>,
}

impl BlockedCache {
    fn get(&self, tenant: TenantId) -> Option<BlockedSet> {
        let entries = self.entries.lock().ok()?;
        let (set, at) = entries.get(&tenant)?;
        (at.elapsed() < BLOCKED_TTL).then(|| Arc::clone(set))
    }

    fn put(&self, tenant: TenantId, set: BlockedSet) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= BLOCKED_CAPACITY {
                entries.clear();
            }
            entries.insert(tenant, (set, Instant::now()));
        }
    }

    /// Forgets a tenant's set (after a screening decision on this server).
    pub fn invalidate(&self, tenant: TenantId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&tenant);
        }
    }
}

/// Refuses when any of `accounts` belongs to a blocked customer.
pub async fn refuse_blocked(state: &AppState, tenant: TenantId, accounts: &[&AccountId]) -> Result<(), ApiError> {
    let blocked = match state.customers.blocked.get(tenant) {
        Some(set) => set,
        None => {
            let set: BlockedSet = Arc::new(state.store.blocked_accounts_of_tenant(tenant).await?.into_iter().collect());
            state.customers.blocked.put(tenant, Arc::clone(&set));
            set
        }
    };
    if blocked.is_empty() {
        return Ok(());
    }
    if let Some(account) = accounts.iter().find(|a| blocked.contains(a.as_str())) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::LedgerError,
            "customer_blocked",
            format!("account {account} belongs to a customer blocked by an unresolved or confirmed sanctions match; nothing was written"),
        )
        .with_param("entries"));
    }
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkAccountRequest {
    #[schema(example = "acct_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub account_id: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = CustomerAccount)]
pub struct CustomerAccountJson {
    #[schema(value_type = String, example = "customer_account")]
    pub object: &'static str,
    pub customer_id: String,
    pub account_id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Links a ledger account to the customer (an account belongs to one customer at most).
#[utoipa::path(post, path = "/v1/customers/{id}/accounts", tag = "Customers", operation_id = "link_customer_account",
    params(("id" = String, Path, description = "A customer id (`cus_…`)."), crate::openapi::IdempotencyKey),
    request_body = LinkAccountRequest,
    responses((status = 201, description = "The link.", body = CustomerAccountJson)))]
pub async fn link(
    State(state): State<AppState>,
    Scoped(principal, _): Scoped<scope::CustomersWrite>,
    Extension(request_id): Extension<RequestId>,
    client: ClientIp,
    headers: HeaderMap,
    IdPath(id): IdPath,
    body: JsonBody<LinkAccountRequest>,
) -> Result<Response, ApiError> {
    let Keyed { key, replay, _guard } = keyed(&state, &principal, &headers, &format!("/v1/customers/{id}/accounts"), &body.canonical).await?;
    if let Some(r) = replay {
        return Ok(r);
    }
    let now = state.clock.now();
    let customer = load_customer(&state, principal.tenant, &id).await?;
    let account_missing =
        || ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::LedgerError, "account_not_found", "account_id names no account").with_param("account_id");
    let account = AccountId::parse(&body.value.account_id).ok_or_else(account_missing)?;
    state.store.get_account(principal.tenant, account.clone(), now).await?.ok_or_else(account_missing)?;
    let actor = Actor::of(&principal, &request_id, &headers, client);
    let json = CustomerAccountJson {
        object: "customer_account",
        customer_id: customer.id.clone(),
        account_id: account.to_string(),
        created_at: Timestamp::from_micros(now.micros()).to_rfc3339(),
    };
    let (response, bytes) = json_response(StatusCode::CREATED, &json)?;
    let audit = vec![actor.audit(
        &state.customers.ids,
        "customer.account_linked",
        ("customer", &customer.id),
        vec![String::from("accounts")],
        Some(account.to_string()),
        now,
    )];
    let linked = state
        .store
        .link_customer_account(
            principal.tenant,
            customer.id.clone(),
            account.to_string(),
            actor.actor.clone(),
            now.micros(),
            audit,
            idempotency_record(principal.tenant, key, StatusCode::CREATED, bytes, now),
        )
        .await?;
    if !linked {
        let owner = state.store.account_customer(principal.tenant, account.to_string()).await?.unwrap_or_default();
        return Err(conflict("account_already_linked", format!("the account belongs to customer {owner} already")).with_param("account_id"));
    }
    state.customers.blocked.invalidate(principal.tenant);
    Ok(response)
}

/// The customer's ledger accounts.
#[utoipa::path(get, path = "/v1/customers/{id}/accounts", tag = "Customers", operation_id = "list_customer_accounts",
    params(("id" = String, Path, description = "A customer id (`cus_…`).")),
    responses((status = 200, description = "The links.", body = inline(crate::render::ListJson<CustomerAccountJson>))))]
pub async fn list(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::CustomersRead)?;
    let customer = load_customer(&state, principal.tenant, &id).await?;
    let links = state.store.customer_accounts(customer.tenant, customer.id.clone()).await?;
    let items: Vec<CustomerAccountJson> = links
        .into_iter()
        .map(|(account_id, at)| CustomerAccountJson {
            object: "customer_account",
            customer_id: customer.id.clone(),
            account_id,
            created_at: Timestamp::from_micros(at).to_rfc3339(),
        })
        .collect();
    Ok(axum::Json(crate::render::list(items, false)).into_response())
}
