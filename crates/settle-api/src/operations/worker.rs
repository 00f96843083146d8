//! The worker that runs operations: one per server.
//!
//! It claims the oldest runnable operation under a lease (see
//! `settle_store::operations`), parses its stored request with the handlers'
//! own code, and sends it to the engine in chunks. Each chunk runs under an
//! idempotency key derived from the operation id and the chunk's position
//! ([`chunk_key`]), recorded by the engine in the same database transaction as
//! the chunk's effect. So when a worker dies after a chunk committed but before
//! the operation row says so, the next worker replays that chunk's stored
//! answer instead of applying it again: resuming never applies anything twice.
//!
//! A non-atomic batch runs `chunk_items` transactions per chunk, reporting
//! progress (and renewing its lease) after each; an atomic batch and every
//! other request is one chunk, since splitting it would break all-or-nothing.

use super::{OperationKind, chunk_key};
use crate::error::ApiError;
use crate::render;
use crate::state::AppState;
use crate::wire::{BatchRequest, CreateAccountRequest, CreateTransactionRequest, EmptyRequest, PostRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use settle_core::ids::{AccountId, OperationId, TransactionId};
use settle_store::engine::{Command, CommandError, IdempotencyClaim, Renderer, Reply, SubmitContext};
use settle_store::operations::{ClaimedOperation, OperationRecord};
use settle_store::records::{CustomerLink, StoredResponse};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::sync::watch;

/// Attempts at one chunk while the database is unavailable before the
/// operation is put back for later (its chunks are keyed, so retrying is safe).
const MAX_CHUNK_ATTEMPTS: u32 = 10;
/// Wait between those attempts, multiplied by the attempt number.
const CHUNK_RETRY_STEP: Duration = Duration::from_millis(100);

/// A running worker. [`WorkerHandle::stop`] lets it finish the chunk it is
/// applying, gives its operation back, and waits for it to end.
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends the worker at once, as a crash would: whatever it held stays
    /// `running` until its lease expires. For tests of crash recovery.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts this server's worker.
pub fn spawn(state: AppState) -> WorkerHandle {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(state, stopped));
    WorkerHandle { stop, task }
}

async fn run(state: AppState, mut stopped: watch::Receiver<bool>) {
    let owner = state.operations.ids.operation().as_str().replacen(OperationId::PREFIX, "wkr_", 1);
    tracing::info!(worker = %owner, "operation worker started");
    loop {
        if *stopped.borrow() {
            break;
        }
        let now = state.clock.now();
        match state.store.claim_operation(&owner, now, now.plus_secs(state.operations.config.lease_secs)).await {
            Ok(Some(claimed)) => {
                execute(&state, &owner, claimed, &stopped).await;
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not look for operations"),
        }
        tokio::select! {
            () = state.operations.wake.notified() => {}
            () = tokio::time::sleep(state.operations.config.poll_interval) => {}
            _ = stopped.changed() => {}
        }
    }
    tracing::info!(worker = %owner, "operation worker stopped");
}

/// What the worker does with an operation's request.
pub struct Plan {
    /// Engine commands in order, each with the number of items it covers.
    pub chunks: Vec<(Command, usize)>,
    pub render: Renderer,
    /// A batch's chunks answer one `batch_result` together.
    pub is_batch: bool,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("the stored request body no longer parses: {e}")))
}

/// The `{id}` segment at `index` of an operation's path.
fn segment(path: &str, index: usize) -> &str {
    path.split('/').nth(index).unwrap_or("")
}

/// Parses an operation's stored request into engine commands, with the code
/// the synchronous handlers use.
pub async fn plan(state: &AppState, op: &OperationRecord, body: &[u8]) -> Result<Plan, ApiError> {
    let kind = OperationKind::parse(&op.kind).ok_or_else(|| ApiError::internal(&format!("operation {} has an unknown kind", op.id)))?;
    let transaction = |index: usize| TransactionId::parse(segment(&op.request_path, index)).ok_or_else(|| ApiError::not_found("transaction"));
    let one = |command: Command, render: Renderer| Plan { chunks: vec![(command, 1)], render, is_batch: false };
    Ok(match kind {
        OperationKind::AccountsCreate => {
            let request = parse::<CreateAccountRequest>(body)?;
            // The owner was checked (scope, existence) when the operation was accepted.
            let owner = request.customer_id.clone().map(|customer_id| CustomerLink { customer_id, actor: op.api_key_id.to_string() });
            let mut new = crate::accounts::new_account(request)?;
            new.customer = owner;
            one(Command::CreateAccount(new), render::render_created)
        }
        OperationKind::TransactionsCreate => {
            let draft = crate::wire::transaction_draft("", parse::<CreateTransactionRequest>(body)?)?;
            one(Command::CreateTransaction(Box::new(draft)), render::render_created)
        }
        OperationKind::TransactionsBatch => {
            let req: BatchRequest = parse(body)?;
            let items = req
                .transactions
                .into_iter()
                .enumerate()
                .map(|(i, t)| crate::wire::transaction_draft(&format!("transactions[{i}]."), t))
                .collect::<Result<Vec<_>, _>>()?;
            // The chunk size is the one fixed when the operation was accepted,
            // so every server (and release) names the same items by a chunk key.
            let chunk_items = usize::try_from(op.chunk_items).unwrap_or(usize::MAX).max(1);
            let chunks = if req.atomic || items.len() <= chunk_items {
                let n = items.len();
                vec![(Command::CreateBatch { atomic: req.atomic, items }, n)]
            } else {
                items.chunks(chunk_items).map(|c| (Command::CreateBatch { atomic: false, items: c.to_vec() }, c.len())).collect()
            };
            Plan { chunks, render: render::render_ok, is_batch: true }
        }
        OperationKind::TransactionsPost => {
            let entries = crate::transactions::post_entries(parse::<PostRequest>(body)?.entries)?;
            one(Command::PostTransaction { id: transaction(3)?, entries }, render::render_ok)
        }
        OperationKind::TransactionsVoid => {
            parse::<EmptyRequest>(body)?;
            one(Command::VoidTransaction { id: transaction(3)? }, render::render_ok)
        }
        OperationKind::TransactionsReverse => {
            parse::<EmptyRequest>(body)?;
            one(Command::ReverseTransaction { id: transaction(3)? }, render::render_created)
        }
        OperationKind::TestHelpersAccountsFund => {
            let account = AccountId::parse(segment(&op.request_path, 4)).ok_or_else(|| ApiError::not_found("account"))?;
            let command = crate::test_helpers::fund_command(state, op.tenant, account, parse(body)?).await?;
            one(command, render::render_created)
        }
    })
}

/// The fingerprint of a chunk: no client request can produce it, since
/// client fingerprints hash a length-prefixed key id, method and path.
fn chunk_fingerprint(id: &OperationId, index: usize) -> String {
    hex::encode(Sha256::digest(format!("settle operation chunk\n{}\n{index}", id.as_str()).as_bytes()))
}

/// Why a chunk has no answer yet.
#[derive(Debug)]
pub enum ChunkInterrupted {
    /// The engine stopped (the server is shutting down).
    EngineStopped,
    /// The database stayed unavailable.
    Unavailable,
}

/// Applies chunk `index` of an operation through the engine, or replays its
/// stored answer when it was applied before. Public so that crash tests can
/// commit a chunk without the operation row learning of it.
pub async fn apply_chunk(state: &AppState, op: &OperationRecord, index: usize, command: Command, render: Renderer) -> Result<StoredResponse, ChunkInterrupted> {
    let claim = IdempotencyClaim { key: chunk_key(&op.id, index), fingerprint: chunk_fingerprint(&op.id, index), request_id: op.request_id.clone(), render };
    for attempt in 1..=MAX_CHUNK_ATTEMPTS {
        let correlation = op.correlation_id.as_deref().and_then(settle_core::correlation::CorrelationId::parse);
        let reply = state
            .engine
            .submit_with(
                op.tenant,
                command.clone(),
                Some(claim.clone()),
                SubmitContext { request_id: Some(op.request_id.clone()), correlation_id: correlation, actor: Some(op.api_key_id.to_string()), client_ip: None },
            )
            .await
            .map_err(|_| ChunkInterrupted::EngineStopped)?;
        match reply {
            Reply::Done { result: Err(CommandError::Unavailable | CommandError::OutcomeUnknown), .. } => {
                // Nothing, or something we cannot see, was written: the same
                // key makes the retry answer what actually happened.
                tracing::warn!(operation = %op.id, chunk = index, attempt, "database unavailable while applying a chunk; retrying");
                tokio::time::sleep(CHUNK_RETRY_STEP * attempt).await;
            }
            Reply::Done { stored: Some(stored), .. } | Reply::Replay(stored) => return Ok(stored),
            Reply::Done { result, stored: None } => return Ok(render(&result, &op.request_id)),
            Reply::KeyReused => {
                let error = ApiError::internal(&format!("the idempotency key of chunk {index} of {} holds another request", op.id));
                return Ok(StoredResponse { status: error.status.as_u16(), body: error.body(&op.request_id) });
            }
        }
    }
    Err(ChunkInterrupted::Unavailable)
}

#[derive(Serialize)]
struct MergedBatch {
    object: &'static str,
    succeeded: u64,
    failed: u64,
    results: Vec<serde_json::Value>,
}

/// Joins the `batch_result`s of a batch's chunks into the one the whole
/// batch would have answered, with item indexes counted across chunks. A
/// chunk that did not answer 200 answers for the whole operation.
fn merge_batch(chunks: Vec<StoredResponse>) -> Result<StoredResponse, ApiError> {
    if chunks.len() == 1 {
        return chunks.into_iter().next().ok_or_else(|| ApiError::internal(&"no chunk"));
    }
    let mut merged = MergedBatch { object: "batch_result", succeeded: 0, failed: 0, results: Vec::new() };
    for chunk in chunks {
        if chunk.status != 200 {
            return Ok(chunk);
        }
        let mut body: serde_json::Value = serde_json::from_slice(&chunk.body).map_err(|e| ApiError::internal(&e))?;
        merged.succeeded += body["succeeded"].as_u64().unwrap_or(0);
        merged.failed += body["failed"].as_u64().unwrap_or(0);
        let offset = merged.results.len() as u64;
        let Some(results) = body.get_mut("results").and_then(serde_json::Value::as_array_mut) else {
            return Err(ApiError::internal(&"a chunk's batch_result has no results"));
        };
        for mut item in results.drain(..) {
            let index = item["index"].as_u64().unwrap_or(0);
            item["index"] = serde_json::Value::from(offset + index);
            merged.results.push(item);
        }
    }
    let body = serde_json::to_vec(&merged).map_err(|e| ApiError::internal(&e))?;
    Ok(StoredResponse { status: 200, body })
}

fn error_response(error: &ApiError, op: &OperationRecord) -> StoredResponse {
    StoredResponse { status: error.status.as_u16(), body: error.body(&op.request_id) }
}

async fn finish(state: &AppState, owner: &str, op: &OperationRecord, completed: i64, response: StoredResponse) {
    let status = response.status;
    match state.store.finish_operation(&op.id, owner, completed, response, state.clock.now()).await {
        Ok(true) => tracing::info!(operation = %op.id, status, "operation finished"),
        Ok(false) => tracing::warn!(operation = %op.id, "operation was taken over by another worker before it finished here"),
        Err(error) => tracing::warn!(operation = %op.id, %error, "could not store an operation's result; it runs again when its lease expires"),
    }
}

async fn release(state: &AppState, owner: &str, op: &OperationRecord) {
    if let Err(error) = state.store.release_operation(&op.id, owner, state.clock.now()).await {
        tracing::warn!(operation = %op.id, %error, "could not give an operation back; it runs again when its lease expires");
    }
}

async fn execute(state: &AppState, owner: &str, claimed: ClaimedOperation, stopped: &watch::Receiver<bool>) {
    let op = claimed.record;
    tracing::info!(operation = %op.id, kind = %op.kind, attempt = op.attempts, "operation started");
    let plan = match plan(state, &op, &claimed.request_body).await {
        Ok(plan) => plan,
        Err(error) => {
            // Only a request that was valid when accepted and no longer is
            // (for example a test helper's account) ends here.
            finish(state, owner, &op, 0, error_response(&error, &op)).await;
            return;
        }
    };
    let chunk_count = plan.chunks.len();
    let mut responses = Vec::with_capacity(chunk_count);
    let mut completed: i64 = 0;
    for (index, (command, items)) in plan.chunks.into_iter().enumerate() {
        if *stopped.borrow() {
            release(state, owner, &op).await;
            return;
        }
        let response = match apply_chunk(state, &op, index, command, plan.render).await {
            Ok(response) => response,
            Err(interrupted) => {
                tracing::warn!(operation = %op.id, chunk = index, ?interrupted, "operation interrupted; giving it back");
                release(state, owner, &op).await;
                return;
            }
        };
        completed += i64::try_from(items).unwrap_or(i64::MAX);
        if !plan.is_batch || response.status != 200 {
            finish(state, owner, &op, completed, response).await;
            return;
        }
        responses.push(response);
        if index + 1 < chunk_count {
            let now = state.clock.now();
            match state.store.renew_operation(&op.id, owner, completed, now, now.plus_secs(state.operations.config.lease_secs)).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(operation = %op.id, "operation was taken over by another worker; leaving it to that one");
                    return;
                }
                Err(error) => {
                    tracing::warn!(operation = %op.id, %error, "could not record progress; the operation runs again when its lease expires");
                    return;
                }
            }
        }
    }
    let response = merge_batch(responses).unwrap_or_else(|error| error_response(&error, &op));
    finish(state, owner, &op, completed, response).await;
}
