//! Long-running work: `202 Accepted` and polling.
//!
//! A POST sent with `Prefer: respond-async` (RFC 7240), and a batch with more
//! items than the async threshold, is validated as usual (4xx at once, nothing
//! created), then stored as an *operation* row and answered `202 Accepted`
//! with `Location: /v1/operations/{id}`. A worker ([`worker`]) runs it later
//! through the engine and stores the response the request would have had
//! synchronously; `GET /v1/operations/{id}` shows it.
//!
//! The operation stores the request (path and canonical body), not a parsed
//! command: the worker parses it again with the same code the handlers use,
//! so what runs later is exactly what was validated now.

pub mod worker;

use crate::auth::require;
use crate::commands::Submission;
use crate::error::ApiError;
use crate::idempotency;
use crate::pagination::{page, parse_query};
use crate::path::IdPath;
use crate::state::AppState;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use settle_core::ids::{IdGenerator, OperationId};
use settle_core::limits::MAX_BATCH_TRANSACTIONS;
use settle_core::operations::OperationStatus;
use settle_core::tenancy::{Principal, Scope};
use settle_store::engine::Command;
use settle_store::operations::{CreateOperation, NewOperation, OperationRecord};
use settle_store::records::{IdempotencyRecord, StoredResponse};
use std::time::Duration;
use tokio::sync::Notify;
use utoipa::ToSchema;

/// Batches with more items than this answer `202` by default. Equal to the
/// synchronous batch limit, so every batch a client could send before (and
/// `settle bench`'s batches of up to 1000) stays synchronous.
pub const DEFAULT_ASYNC_BATCH_THRESHOLD: usize = MAX_BATCH_TRANSACTIONS;
/// Items of a non-atomic batch applied per engine command (one progress step).
pub const DEFAULT_CHUNK_ITEMS: usize = 100;
/// How long a worker holds an operation without reporting progress before
/// another worker may take it over (the first is presumed dead).
pub const DEFAULT_LEASE_SECS: i64 = 30;
/// How often an idle worker looks for operations created by other servers
/// (operations created by this server wake it at once).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How operations are created and run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationsConfig {
    /// A batch with more transactions than this runs as an operation.
    /// 1 to [`MAX_BATCH_TRANSACTIONS`]: larger batches cannot run synchronously.
    pub async_batch_threshold: usize,
    pub chunk_items: usize,
    pub lease_secs: i64,
    pub poll_interval: Duration,
    /// Operations a tenant may have pending or running at once.
    pub max_open_per_tenant: i64,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            async_batch_threshold: DEFAULT_ASYNC_BATCH_THRESHOLD,
            chunk_items: DEFAULT_CHUNK_ITEMS,
            lease_secs: DEFAULT_LEASE_SECS,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_open_per_tenant: settle_core::limits::MAX_OPEN_OPERATIONS_PER_TENANT,
        }
    }
}

/// Shared by the handlers that create operations and the worker that runs them.
#[derive(Default)]
pub struct Operations {
    pub config: OperationsConfig,
    ids: IdGenerator,
    /// Wakes this server's worker when a handler has created an operation.
    pub(crate) wake: Notify,
}

impl Operations {
    pub fn new(config: OperationsConfig) -> Operations {
        Operations { config, ..Operations::default() }
    }
}

/// What an operation does: one per POST endpoint that can run asynchronously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    AccountsCreate,
    TransactionsCreate,
    TransactionsBatch,
    TransactionsPost,
    TransactionsVoid,
    TransactionsReverse,
    TestHelpersAccountsFund,
}

impl OperationKind {
    const ALL: [OperationKind; 7] = [
        OperationKind::AccountsCreate,
        OperationKind::TransactionsCreate,
        OperationKind::TransactionsBatch,
        OperationKind::TransactionsPost,
        OperationKind::TransactionsVoid,
        OperationKind::TransactionsReverse,
        OperationKind::TestHelpersAccountsFund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::AccountsCreate => "accounts.create",
            OperationKind::TransactionsCreate => "transactions.create",
            OperationKind::TransactionsBatch => "transactions.batch",
            OperationKind::TransactionsPost => "transactions.post",
            OperationKind::TransactionsVoid => "transactions.void",
            OperationKind::TransactionsReverse => "transactions.reverse",
            OperationKind::TestHelpersAccountsFund => "test_helpers.accounts.fund",
        }
    }

    pub fn parse(text: &str) -> Option<OperationKind> {
        OperationKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The kind of a POST to `path`, or `None` for a path that cannot run
    /// asynchronously (the request then runs synchronously, as RFC 7240 allows).
    pub fn from_path(path: &str) -> Option<OperationKind> {
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["", "v1", "accounts"] => Some(OperationKind::AccountsCreate),
            ["", "v1", "transactions"] => Some(OperationKind::TransactionsCreate),
            ["", "v1", "transactions", "batch"] => Some(OperationKind::TransactionsBatch),
            ["", "v1", "transactions", _, "post"] => Some(OperationKind::TransactionsPost),
            ["", "v1", "transactions", _, "void"] => Some(OperationKind::TransactionsVoid),
            ["", "v1", "transactions", _, "reverse"] => Some(OperationKind::TransactionsReverse),
            ["", "v1", "test_helpers", "accounts", _, "fund"] => Some(OperationKind::TestHelpersAccountsFund),
            _ => None,
        }
    }
}

/// Whether the request carries `Prefer: respond-async` (RFC 7240: any of
/// possibly several `Prefer` headers, each a comma-separated list of
/// preferences with optional `;` parameters; names are case-insensitive).
pub fn prefers_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|preference| {
        let name = preference.split(';').next().unwrap_or("").split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("respond-async")
    })
}

/// The kind to run asynchronously when the client asked for it, else `None`.
pub fn async_kind(headers: &HeaderMap, path: &str) -> Option<OperationKind> {
    if prefers_async(headers) { OperationKind::from_path(path) } else { None }
}

/// The idempotency key under which chunk `index` of an operation runs. A
/// chunk that already ran (before a crash) replays instead of applying again.
pub fn chunk_key(id: &OperationId, index: usize) -> String {
    format!("{id}/chunk/{index}")
}

/// Whether a client-sent `Idempotency-Key` has the shape of a chunk key
/// (`op_<ulid>/chunk/<n>`). Such keys are reserved, so that no client
/// request can take a key an operation will need.
pub fn is_reserved_key(key: &str) -> bool {
    key.split_once("/chunk/").is_some_and(|(op, _)| OperationId::parse(op).is_some())
}

/// The canonical form of a body already parsed strictly (sorted keys, no
/// whitespace), for a request that turns out to need it only after parsing.
pub fn canonical(raw: &[u8]) -> Result<Vec<u8>, ApiError> {
    let generic: serde_json::Value = serde_json::from_slice(raw).map_err(|e| ApiError::invalid("body", format!("the request body is not valid JSON: {e}")))?;
    serde_json::to_vec(&generic).map_err(|e| ApiError::internal(&e))
}

/// `{"method", "path"}` of the request an operation runs.
#[derive(Serialize, ToSchema)]
#[schema(as = OperationRequest)]
pub struct OperationRequestJson {
    #[schema(value_type = String, example = "POST")]
    pub method: &'static str,
    pub path: String,
}

/// How much of the work is done (batch items, or 1 for a single request).
#[derive(Serialize, ToSchema)]
#[schema(as = OperationProgress)]
pub struct ProgressJson {
    pub completed: i64,
    pub total: i64,
}

/// The response the request would have had synchronously.
#[derive(Serialize, ToSchema)]
#[schema(as = OperationResult)]
pub struct OperationResultJson {
    pub status: u16,
    /// The body the request would have answered (for example a `Transaction` or a `BatchResult`).
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// The operation object: work accepted with `202` and run in the background.
#[derive(Serialize, ToSchema)]
#[schema(as = Operation)]
pub struct OperationJson {
    #[schema(value_type = String, example = "operation")]
    pub object: &'static str,
    #[schema(example = "op_01jdx3q5g3n3n5v8y2w4h6k9m1")]
    pub id: String,
    pub kind: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    #[schema(value_type = String, example = "succeeded")]
    pub status: &'static str,
    pub request: OperationRequestJson,
    pub progress: ProgressJson,
    /// Set when `status` is `succeeded`.
    pub result: Option<OperationResultJson>,
    /// Set when `status` is `failed`: the `error` object the request would have answered.
    #[schema(value_type = Option<crate::error::ErrorBody>)]
    pub error: Option<serde_json::Value>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
}

pub fn render(op: &OperationRecord) -> OperationJson {
    let (result, error) = match (&op.response, op.status) {
        (Some(response), OperationStatus::Succeeded) => {
            (Some(OperationResultJson { status: response.status, body: serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null) }), None)
        }
        (Some(response), OperationStatus::Failed) => {
            let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null);
            (None, Some(body.get("error").cloned().unwrap_or(serde_json::Value::Null)))
        }
        _ => (None, None),
    };
    OperationJson {
        object: "operation",
        id: op.id.to_string(),
        kind: op.kind.clone(),
        status: op.status.as_str(),
        request: OperationRequestJson { method: "POST", path: op.request_path.clone() },
        progress: ProgressJson { completed: op.completed, total: op.total },
        result,
        error,
        created_at: op.created_at.to_rfc3339(),
        started_at: op.started_at.map(|t| t.to_rfc3339()),
        finished_at: op.finished_at.map(|t| t.to_rfc3339()),
    }
}

/// The `Location` of a `202 Accepted`, from the operation object in its body
/// (also on a replay, whose body is stored but whose headers are not).
pub fn location_of(body: &[u8]) -> Option<HeaderValue> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let Id { id } = serde_json::from_slice::<Id>(body).ok()?;
    HeaderValue::from_str(&format!("/v1/operations/{id}")).ok()
}

fn accepted(stored: StoredResponse, replayed: bool, preference_applied: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let location = location_of(&stored.body);
    let mut response = (status, stored.body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == StatusCode::ACCEPTED {
        if let Some(location) = location {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if preference_applied {
            response.headers_mut().insert("preference-applied", HeaderValue::from_static("respond-async"));
        }
    }
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn replay_or_refuse(record: IdempotencyRecord, fingerprint: &str, preference_applied: bool) -> Result<Response, ApiError> {
    if record.fingerprint == fingerprint { Ok(accepted(record.response, true, preference_applied)) } else { Err(idempotency::reused()) }
}

/// Creates the operation for a validated request and answers `202`. With an
/// `Idempotency-Key`, the `202` is stored with the operation in one database
/// transaction, so a retry gets the same operation back.
pub async fn accept(state: &AppState, kind: OperationKind, s: Submission<'_>) -> Result<Response, ApiError> {
    let principal = s.principal;
    let tenant = principal.tenant;
    let preference_applied = prefers_async(s.headers);
    if s.canonical_body.is_empty() {
        return Err(ApiError::internal(&"an operation was accepted without its canonical body"));
    }
    let key = idempotency::key_from(s.headers)?;
    let fingerprint = idempotency::fingerprint(principal, "POST", s.path, s.canonical_body);
    if let Some(key) = &key
        && let Some(record) = state.store.find_idempotency(tenant, key.clone()).await?
    {
        return replay_or_refuse(record, &fingerprint, preference_applied);
    }
    let cap = state.operations.config.max_open_per_tenant;
    if state.store.count_open_operations(tenant).await? >= cap {
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            crate::error::ErrorType::InvalidRequestError,
            "too_many_operations",
            format!("this environment already has {cap} operations waiting or running; nothing was accepted, retry once some have finished"),
        );
        let mut response = error.into_response();
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return Ok(response);
    }
    let total = match &s.command {
        Command::CreateBatch { items, .. } => items.len(),
        _ => 1,
    };
    let now = state.clock.now();
    let new = NewOperation {
        id: state.operations.ids.operation(),
        tenant,
        api_key_id: principal.key_id.clone(),
        kind: kind.as_str().to_owned(),
        request_path: s.path.to_owned(),
        request_body: s.canonical_body.to_vec(),
        request_id: s.request_id.0.clone(),
        total: i64::try_from(total).unwrap_or(i64::MAX),
        chunk_items: i64::try_from(state.operations.config.chunk_items.max(1)).unwrap_or(i64::MAX),
        correlation_id: crate::correlation::from_headers(s.headers).map(|c| c.as_str().to_owned()),
        created_at: now,
    };
    let record = OperationRecord {
        id: new.id.clone(),
        tenant,
        api_key_id: new.api_key_id.clone(),
        kind: new.kind.clone(),
        status: OperationStatus::Pending,
        request_path: new.request_path.clone(),
        request_id: new.request_id.clone(),
        completed: 0,
        total: new.total,
        chunk_items: new.chunk_items,
        correlation_id: new.correlation_id.clone(),
        response: None,
        lease_owner: None,
        lease_expires_at: None,
        attempts: 0,
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
    };
    let body = serde_json::to_vec(&render(&record)).map_err(|e| ApiError::internal(&e))?;
    let stored = StoredResponse { status: StatusCode::ACCEPTED.as_u16(), body };
    let idempotency = key.map(|key| IdempotencyRecord { tenant, key, fingerprint: fingerprint.clone(), response: stored.clone(), created_at: now });
    match state.store.create_operation(new, idempotency).await? {
        CreateOperation::Created => {
            tracing::info!(operation = %record.id, kind = kind.as_str(), total, "operation accepted");
            state.operations.wake.notify_one();
            Ok(accepted(stored, false, preference_applied))
        }
        CreateOperation::KeyTaken(existing) => replay_or_refuse(existing, &fingerprint, preference_applied),
    }
}

fn operation_id(text: &str) -> Result<OperationId, ApiError> {
    OperationId::parse(text).ok_or_else(|| ApiError::not_found("operation"))
}

/// One operation: poll it until `status` is `succeeded` or `failed`.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "Operations", operation_id = "get_operation",
    params(("id" = String, Path, description = "An operation id (`op_…`).")),
    responses((status = 200, description = "The operation.", body = OperationJson)))]
pub async fn get(State(state): State<AppState>, principal: Principal, IdPath(id): IdPath) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let id = operation_id(&id)?;
    let op = state.store.get_operation(principal.tenant, id).await?.ok_or_else(|| ApiError::not_found("operation"))?;
    Ok(Json(render(&op)).into_response())
}

/// The operations of this environment, newest first.
#[utoipa::path(get, path = "/v1/operations", tag = "Operations", operation_id = "list_operations",
    params(crate::pagination::PageParams),
    responses((status = 200, description = "A page of operations.", body = crate::render::ListJson<OperationJson>)))]
pub async fn list(State(state): State<AppState>, principal: Principal, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    require(&principal, Scope::LedgerRead)?;
    let params: crate::pagination::PageParams = parse_query(query.as_deref())?;
    let page = page(params.limit.as_deref(), params.starting_after, params.ending_before, |id| OperationId::parse(id).is_some())?;
    let result = state.store.list_operations(principal.tenant, page).await?;
    Ok(Json(crate::render::list(result.items.iter().map(render).collect(), result.has_more)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_respond_async_is_found_among_other_preferences() {
        let mut headers = HeaderMap::new();
        assert!(!prefers_async(&headers));
        headers.append("prefer", HeaderValue::from_static("return=minimal"));
        assert!(!prefers_async(&headers));
        headers.append("prefer", HeaderValue::from_static("wait=10, Respond-Async ;foo=bar"));
        assert!(prefers_async(&headers));
        let mut other = HeaderMap::new();
        other.insert("prefer", HeaderValue::from_static("respond-asyncx"));
        assert!(!prefers_async(&other));
    }

    #[test]
    fn kinds_come_from_paths_and_round_trip() {
        assert_eq!(OperationKind::from_path("/v1/transactions/batch"), Some(OperationKind::TransactionsBatch));
        assert_eq!(OperationKind::from_path("/v1/transactions/ltx_x/void"), Some(OperationKind::TransactionsVoid));
        assert_eq!(OperationKind::from_path("/v1/test_helpers/accounts/acct_x/fund"), Some(OperationKind::TestHelpersAccountsFund));
        assert_eq!(OperationKind::from_path("/v1/operations"), None);
        for kind in OperationKind::ALL {
            assert_eq!(OperationKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn only_chunk_shaped_keys_are_reserved() {
        let id = IdGenerator::default().operation();
        assert!(is_reserved_key(&chunk_key(&id, 3)));
        assert!(!is_reserved_key("op_123/chunk/3"));
        assert!(!is_reserved_key("order-1042"));
    }
}
