//! The single write path: a task that takes commands from a bounded channel,
//! applies a batch of them to an in-memory view of the rows they touch,
//! writes all effects in one database transaction, commits once (one fsync)
//! and only then answers every caller.
//!
//! A command that breaks a rule fails alone: the core refuses it before it
//! changes the view, so its effects never reach the batch. A database error
//! while writing (a concurrent server inserting the same key, a deadlock)
//! retries the batch; if it still fails, the batch is split and each command
//! runs in its own transaction, so only the culprit fails.

use crate::error::StoreError;
use crate::records::{AccountRecord, IdempotencyRecord, NewAccount, StoredResponse};
use serde::Serialize;
use settle_core::chain::{self, Hash};
use settle_core::clock::{Clock, Timestamp};
use settle_core::correlation::CorrelationId;
use settle_core::ids::{AccountId, IdGenerator, TransactionId};
use settle_core::json_text;
use settle_core::ledger::{self, AccountState, AccountView, Counters, EntryDraft, LedgerError, Transaction, TransactionDraft, VoidReason};
use settle_core::tenancy::TenantId;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Commands waiting for the engine; senders wait (backpressure) when full.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Commands taken into one database transaction.
pub const MAX_BATCH_COMMANDS: usize = 4_096;
/// Ledger transactions (batch items count one each) in one database transaction.
pub const MAX_BATCH_ITEMS: usize = 16_384;
/// Expired holds voided per engine batch.
pub const MAX_EXPIRIES_PER_BATCH: usize = 1_000;
/// Times a batch is retried after a conflict with a concurrent writer.
const MAX_CONFLICT_RETRIES: usize = 8;

/// A state change the engine can make.
#[derive(Clone, Debug)]
pub enum Command {
    CreateAccount(NewAccount),
    CreateTransaction(Box<TransactionDraft>),
    CreateBatch {
        atomic: bool,
        items: Vec<TransactionDraft>,
    },
    PostTransaction {
        id: TransactionId,
        entries: Option<Vec<EntryDraft>>,
    },
    VoidTransaction {
        id: TransactionId,
    },
    ReverseTransaction {
        id: TransactionId,
    },
    /// Sets an account's counters to what its stored entries sum to (under
    /// the account's lock), bumping its version and logging the correction.
    /// Entries are never touched. Issued by `settle reconcile ledger --repair`.
    RepairCounters {
        account: AccountId,
    },
}

impl Command {
    fn item_count(&self) -> usize {
        match self {
            Command::CreateBatch { items, .. } => items.len().max(1),
            _ => 1,
        }
    }
}

/// What a successful command produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    Account(Box<AccountRecord>),
    Transaction(Box<Transaction>),
    /// The new reversing transaction (its `reverses` names the original).
    Reversal(Box<Transaction>),
    Batch(Vec<Result<Transaction, CommandError>>),
    /// An account's counters before and after a repair (equal: nothing to repair).
    CountersRepaired {
        account: AccountId,
        before: Counters,
        after: Counters,
    },
}

/// Why a command was refused. Every variant is a stable API error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no transaction {0}")]
    TransactionNotFound(TransactionId),
    #[error("external_id is already used by {existing}")]
    DuplicateExternalId { existing: String },
    #[error("not applied because another item of this atomic batch failed")]
    BatchAborted,
    /// The transaction touches an account whose customer is blocked by an
    /// unresolved or confirmed sanctions match. Checked here, against the
    /// blocked set read after the batch's accounts were locked, so that no
    /// transaction can commit after the block without seeing it.
    #[error("account {0} belongs to a customer blocked by an unresolved or confirmed sanctions match; nothing was written")]
    CustomerBlocked(AccountId),
    #[error("the ledger database is unavailable; nothing was written")]
    Unavailable,
    #[error("the ledger database failed while committing; the change may or may not have been written")]
    OutcomeUnknown,
}

/// Turns a result into the exact HTTP response stored for an idempotency key.
/// Supplied by the API layer so that the engine knows nothing about HTTP.
pub type Renderer = fn(&Result<Outcome, CommandError>, &str) -> StoredResponse;

/// The idempotency key of a request, to be recorded with its effect.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    pub key: String,
    pub fingerprint: String,
    pub request_id: String,
    pub render: Renderer,
}

/// The engine's answer to one command.
#[derive(Debug)]
pub enum Reply {
    /// The command ran (or was refused by a rule) and this was committed.
    Done { result: Result<Outcome, CommandError>, stored: Option<StoredResponse> },
    /// The idempotency key was already used by the same request.
    Replay(StoredResponse),
    /// The idempotency key was already used by a different request.
    KeyReused,
}

struct Envelope {
    tenant: TenantId,
    command: Command,
    idempotency: Option<IdempotencyClaim>,
    reply: oneshot::Sender<Reply>,
    /// Stamped on every object the command creates.
    correlation_id: Option<CorrelationId>,
    /// The HTTP request that sent the command, for the events it causes.
    request_id: Option<String>,
    /// The API key that sent it, and the address it came from, for the audit.
    actor: Option<String>,
    client_ip: Option<String>,
    /// The caller's span when it submitted (its request's span): the batch's
    /// span is its child, or links to it when the batch serves several.
    span: tracing::Span,
}

/// Who asked for a command: logged with its effect (a [`LogFragment::Context`])
/// so that the events projected from the log name their request.
#[derive(Clone, Debug, Default)]
pub struct SubmitContext {
    pub request_id: Option<String>,
    pub correlation_id: Option<CorrelationId>,
    /// The API key id that asked (the audit's actor).
    pub actor: Option<String>,
    /// The address of the API client that asked.
    pub client_ip: Option<String>,
}

/// The engine stopped (shutdown) or is not taking commands.
#[derive(Debug, thiserror::Error)]
#[error("the ledger engine is not running")]
pub struct EngineStopped;

/// Why [`EngineHandle::try_submit`] sent nothing, or got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: the command was not sent, so it can never run.
    #[error("the ledger engine's queue is full")]
    Overloaded,
    /// The engine stopped (shutdown) before answering.
    #[error("the ledger engine is not running")]
    Stopped,
}

/// Where callers send commands. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    sender: mpsc::Sender<Envelope>,
}

impl EngineHandle {
    /// Sends a command and waits until its effect is durable (or refused).
    pub async fn submit(&self, tenant: TenantId, command: Command, idempotency: Option<IdempotencyClaim>) -> Result<Reply, EngineStopped> {
        self.submit_correlated(tenant, command, idempotency, None).await
    }

    /// [`EngineHandle::submit`], stamping `correlation_id` on every object the command creates.
    pub async fn submit_correlated(
        &self,
        tenant: TenantId,
        command: Command,
        idempotency: Option<IdempotencyClaim>,
        correlation_id: Option<CorrelationId>,
    ) -> Result<Reply, EngineStopped> {
        self.submit_with(tenant, command, idempotency, SubmitContext { correlation_id, ..SubmitContext::default() }).await
    }

    /// [`EngineHandle::submit`] with the request's context (logged for its events).
    pub async fn submit_with(
        &self,
        tenant: TenantId,
        command: Command,
        idempotency: Option<IdempotencyClaim>,
        context: SubmitContext,
    ) -> Result<Reply, EngineStopped> {
        let (reply, answer) = oneshot::channel();
        let SubmitContext { request_id, correlation_id, actor, client_ip } = context;
        let span = tracing::Span::current();
        self.sender
            .send(Envelope { tenant, command, idempotency, reply, correlation_id, request_id, actor, client_ip, span })
            .await
            .map_err(|_| EngineStopped)?;
        answer.await.map_err(|_| EngineStopped)
    }

    /// Like [`EngineHandle::submit`], but refuses at once when the queue is
    /// full instead of waiting for room: under overload the caller answers
    /// 503 right away, and no request holds memory while it waits for a place.
    pub async fn try_submit(&self, tenant: TenantId, command: Command, idempotency: Option<IdempotencyClaim>) -> Result<Reply, SubmitError> {
        self.try_submit_correlated(tenant, command, idempotency, None).await
    }

    /// [`EngineHandle::try_submit`], stamping `correlation_id` on every object the command creates.
    pub async fn try_submit_correlated(
        &self,
        tenant: TenantId,
        command: Command,
        idempotency: Option<IdempotencyClaim>,
        correlation_id: Option<CorrelationId>,
    ) -> Result<Reply, SubmitError> {
        self.try_submit_with(tenant, command, idempotency, SubmitContext { correlation_id, ..SubmitContext::default() }).await
    }

    /// [`EngineHandle::try_submit`] with the request's context (logged for its events).
    pub async fn try_submit_with(
        &self,
        tenant: TenantId,
        command: Command,
        idempotency: Option<IdempotencyClaim>,
        context: SubmitContext,
    ) -> Result<Reply, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let SubmitContext { request_id, correlation_id, actor, client_ip } = context;
        let span = tracing::Span::current();
        self.sender.try_send(Envelope { tenant, command, idempotency, reply, correlation_id, request_id, actor, client_ip, span }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
        })?;
        answer.await.map_err(|_| SubmitError::Stopped)
    }

    /// Commands waiting to be taken into a batch.
    pub fn queue_depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// Everything one batch writes, in one database transaction.
#[derive(Debug, Default)]
pub struct BatchEffects {
    pub new_accounts: Vec<AccountRecord>,
    /// Accounts whose counters or version changed (not the new ones).
    pub account_updates: Vec<AccountState>,
    pub new_transactions: Vec<Transaction>,
    /// Existing transactions with a new status or link; `new_entries` are the legs added.
    pub transaction_updates: Vec<TransactionUpdate>,
    pub idempotency: Vec<IdempotencyRecord>,
    /// One log record per command that changed something, in order.
    pub log: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub struct TransactionUpdate {
    pub transaction: Transaction,
    /// How many of `transaction.entries` were already stored.
    pub stored_entries: usize,
}

/// A database a batch can be written to. Implementations lock what they load
/// (PostgreSQL: `FOR UPDATE`, transactions then accounts, each in id order)
/// so that several servers can share one database without lost updates.
pub trait WriteBackend: Send {
    fn begin(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Pending transactions whose expiry has passed, locked for voiding.
    fn due_expiries(&mut self, now: Timestamp, limit: usize) -> impl Future<Output = Result<Vec<TransactionId>, StoreError>> + Send;
    fn load_transactions(&mut self, ids: &[TransactionId]) -> impl Future<Output = Result<Vec<Transaction>, StoreError>> + Send;
    fn load_accounts(&mut self, ids: &[AccountId]) -> impl Future<Output = Result<Vec<AccountState>, StoreError>> + Send;
    /// Of `accounts` (just loaded, so locked), those that belong to a
    /// customer who may not move money (latest screening a potential or
    /// confirmed sanctions match), read inside the batch's transaction.
    fn blocked_accounts(&mut self, accounts: &[AccountState]) -> impl Future<Output = Result<HashSet<AccountId>, StoreError>> + Send;
    /// Existing transaction ids by (tenant, external_id).
    fn find_transaction_external_ids(
        &mut self,
        keys: &[(TenantId, String)],
    ) -> impl Future<Output = Result<HashMap<(TenantId, String), String>, StoreError>> + Send;
    /// Existing account ids by (tenant, external_id).
    fn find_account_external_ids(
        &mut self,
        keys: &[(TenantId, String)],
    ) -> impl Future<Output = Result<HashMap<(TenantId, String), String>, StoreError>> + Send;
    fn find_idempotency(
        &mut self,
        keys: &[(TenantId, String)],
    ) -> impl Future<Output = Result<HashMap<(TenantId, String), IdempotencyRecord>, StoreError>> + Send;
    /// The last log record's sequence number and hash (locked until commit).
    fn log_head(&mut self) -> impl Future<Output = Result<(i64, Hash), StoreError>> + Send;
    /// Writes every effect; `log` is already chained: (seq, content, prev, hash).
    fn write(&mut self, effects: &BatchEffects, log: &[(i64, Hash, Hash)], now: Timestamp) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn commit(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The database, as OpenTelemetry's `db.system.name` names it (`sqlite`, `postgresql`).
    fn system(&self) -> &'static str {
        "unknown"
    }
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;
    /// What the stored entries of each account sum to (see
    /// [`Counters::add_entry`]), read inside the batch's transaction.
    fn fold_accounts(&mut self, ids: &[AccountId]) -> impl Future<Output = Result<HashMap<AccountId, Counters>, StoreError>> + Send;
    /// Deletes idempotency records created before `before`, outside any batch.
    fn purge_idempotency(&mut self, before: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The next `load_accounts` of this batch reads these accounts as stored,
    /// bypassing anything the backend keeps in memory.
    fn reread(&mut self, ids: &[AccountId]) -> impl Future<Output = ()> + Send {
        let _ = ids;
        async {}
    }
    /// Housekeeping between batches, after their callers were answered
    /// (SQLite folds its account stream here); `force` on shutdown.
    fn maintain(&mut self, force: bool) -> impl Future<Output = ()> + Send {
        let _ = force;
        async {}
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How often an idle engine looks for expired holds.
    pub sweep_interval: Duration,
    /// How long idempotency records are kept.
    pub idempotency_retention: Duration,
    /// Commands that may wait for the engine; past it [`EngineHandle::try_submit`]
    /// refuses at once ([`SubmitError::Overloaded`]). At least 1.
    pub queue_capacity: usize,
    /// Told about every committed batch (metrics).
    pub observer: Option<Arc<dyn BatchObserver>>,
    /// The nice value of SQLite's WAL checkpointer thread (0: the engine's
    /// own priority; see `priority.rs`).
    pub checkpointer_nice: i32,
}

/// Told about every batch the engine committed, for metrics. It runs on the
/// engine's thread, between batches: it must be cheap and must not block.
pub trait BatchObserver: Send + Sync + std::fmt::Debug {
    /// `commands` from callers (`items` ledger transactions, a batch request
    /// counting each of its transactions) committed in one database
    /// transaction that took `elapsed` from BEGIN to COMMIT.
    fn committed(&self, commands: usize, items: usize, elapsed: Duration);
    /// A batch that could not be committed (its callers got 503s).
    fn failed(&self);
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            sweep_interval: Duration::from_millis(200),
            idempotency_retention: Duration::from_secs(24 * 3600),
            queue_capacity: QUEUE_CAPACITY,
            observer: None,
            checkpointer_nice: 0,
        }
    }
}

/// Creates the channel; the caller runs [`run`] with the receiver.
pub fn channel() -> (EngineHandle, EngineReceiver) {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    (EngineHandle { sender }, EngineReceiver(receiver))
}

/// Creates a channel that holds at most `capacity` waiting commands (at least 1).
pub fn channel_with_capacity(capacity: usize) -> (EngineHandle, EngineReceiver) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (EngineHandle { sender }, EngineReceiver(receiver))
}

/// The engine's end of the channel.
pub struct EngineReceiver(mpsc::Receiver<Envelope>);

/// Runs the engine until every [`EngineHandle`] is dropped, then finishes
/// the commands already queued and returns.
pub async fn run<B: WriteBackend>(mut backend: B, receiver: EngineReceiver, clock: Arc<dyn Clock>, ids: Arc<IdGenerator>, config: EngineConfig) {
    let mut receiver = receiver.0;
    let mut last_purge = std::time::Instant::now();
    loop {
        let first = match tokio::time::timeout(config.sweep_interval, receiver.recv()).await {
            Ok(Some(envelope)) => Some(envelope),
            Ok(None) => break,
            Err(_) => None,
        };
        let mut batch: Vec<Envelope> = Vec::new();
        let mut items = 0;
        if let Some(envelope) = first {
            items += envelope.command.item_count();
            batch.push(envelope);
        }
        while batch.len() < MAX_BATCH_COMMANDS && items < MAX_BATCH_ITEMS {
            match receiver.try_recv() {
                Ok(envelope) => {
                    items += envelope.command.item_count();
                    batch.push(envelope);
                }
                Err(_) => break,
            }
        }
        let span = batch_span(&batch);
        process(&mut backend, batch, clock.as_ref(), &ids, config.observer.as_deref()).instrument(span).await;
        backend.maintain(false).await;
        if last_purge.elapsed() > Duration::from_secs(60) {
            last_purge = std::time::Instant::now();
            let retention = i64::try_from(config.idempotency_retention.as_secs()).unwrap_or(i64::MAX);
            match backend.purge_idempotency(clock.now().plus_secs(-retention)).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
            }
        }
    }
    backend.maintain(true).await;
    tracing::info!("ledger engine drained and stopped");
}

/// Callers' spans a batch's span links to, at most (the rest are not linked;
/// OpenTelemetry SDKs keep 128 links per span by default).
pub const MAX_BATCH_LINKS: usize = 128;

/// The span of a batch (traces: `engine.batch`). A batch of one command is a
/// child of its caller's span (the request's trace shows its commit); a
/// batch of several starts its own trace and links to up to
/// [`MAX_BATCH_LINKS`] callers' spans. An idle sweep (no command) has none,
/// so an idle server exports nothing.
fn batch_span(batch: &[Envelope]) -> tracing::Span {
    // Signed: OpenTelemetry has no unsigned integers (a u64 would be exported as text).
    let items = i64::try_from(batch.iter().map(|e| e.command.item_count()).sum::<usize>()).unwrap_or(i64::MAX);
    let commands = i64::try_from(batch.len()).unwrap_or(i64::MAX);
    match batch {
        [] => tracing::Span::none(),
        [only] => tracing::info_span!(parent: &only.span, "engine.batch", commands, items, outcome = tracing::field::Empty),
        _ => {
            let span = tracing::info_span!(parent: None, "engine.batch", commands, items, outcome = tracing::field::Empty);
            for envelope in batch.iter().take(MAX_BATCH_LINKS) {
                span.follows_from(&envelope.span);
            }
            span
        }
    }
}

async fn process<B: WriteBackend>(backend: &mut B, batch: Vec<Envelope>, clock: &dyn Clock, ids: &IdGenerator, observer: Option<&dyn BatchObserver>) {
    let mut attempt = 0;
    // Set on the batch's span ([`batch_span`]) that `process` runs in.
    let batch_outcome = |outcome: &'static str| {
        tracing::Span::current().record("outcome", outcome);
    };
    loop {
        let now = clock.now();
        let started = std::time::Instant::now();
        // One span per database transaction (an idle sweep's has none).
        let transaction_span = if batch.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "db.transaction",
                db.system.name = backend.system(),
                attempt = i64::try_from(attempt).unwrap_or(i64::MAX),
                outcome = tracing::field::Empty
            )
        };
        let outcome = apply_batch(backend, &batch, now, ids).instrument(transaction_span.clone()).await;
        transaction_span.record(
            "outcome",
            match &outcome {
                Ok(_) => "committed",
                Err(StoreError::OutcomeUnknown(_)) => "outcome_unknown",
                Err(StoreError::Conflict(_)) => "conflict",
                Err(_) => "failed",
            },
        );
        drop(transaction_span);
        match outcome {
            Ok(replies) => {
                batch_outcome("committed");
                if let Some(observer) = observer
                    && !batch.is_empty()
                {
                    observer.committed(batch.len(), batch.iter().map(|e| e.command.item_count()).sum(), started.elapsed());
                }
                for (envelope, reply) in batch.into_iter().zip(replies) {
                    // A caller that went away (client disconnected) needs no answer.
                    let _ = envelope.reply.send(reply);
                }
                return;
            }
            Err(StoreError::OutcomeUnknown(cause)) => {
                backend.rollback().await;
                tracing::error!(error = %cause, commands = batch.len(), "commit outcome unknown; callers must retry with their idempotency keys");
                batch_outcome("outcome_unknown");
                if let Some(observer) = observer {
                    observer.failed();
                }
                for envelope in batch {
                    let _ = envelope.reply.send(Reply::Done { result: Err(CommandError::OutcomeUnknown), stored: None });
                }
                return;
            }
            Err(error) => {
                backend.rollback().await;
                attempt += 1;
                let retry = matches!(error, StoreError::Conflict(_)) && attempt <= MAX_CONFLICT_RETRIES;
                if retry {
                    tracing::debug!(%error, attempt, "batch conflicted with a concurrent writer; retrying");
                    tokio::time::sleep(Duration::from_millis(attempt as u64 * 2)).await;
                    continue;
                }
                if batch.len() > 1 {
                    tracing::warn!(%error, commands = batch.len(), "batch failed; retrying each command alone");
                    batch_outcome("split");
                    for envelope in batch {
                        let alone = vec![envelope];
                        let span = batch_span(&alone);
                        Box::pin(process(backend, alone, clock, ids, observer)).instrument(span).await;
                    }
                    return;
                }
                tracing::error!(%error, "ledger write failed");
                batch_outcome("failed");
                if let Some(observer) = observer {
                    observer.failed();
                }
                for envelope in batch {
                    let _ = envelope.reply.send(Reply::Done { result: Err(CommandError::Unavailable), stored: None });
                }
                return;
            }
        }
    }
}

/// A transaction the batch has loaded or created.
struct Slot {
    transaction: Transaction,
    /// Entries already stored; `None` for a transaction created in this batch.
    stored_entries: Option<usize>,
    changed: bool,
}

/// The in-memory state one batch works on.
struct BatchState<'a> {
    now: Timestamp,
    ids: &'a IdGenerator,
    view: AccountView,
    transactions: foldhash::HashMap<TransactionId, Slot>,
    transaction_external_ids: HashMap<(TenantId, String), String>,
    account_external_ids: HashMap<(TenantId, String), String>,
    idempotency: HashMap<(TenantId, String), IdempotencyRecord>,
    new_accounts: Vec<AccountRecord>,
    new_idempotency: Vec<IdempotencyRecord>,
    /// Ids of transactions created in this batch, in order.
    created_order: Vec<TransactionId>,
    log: Vec<Vec<u8>>,
    /// For accounts this batch repairs: (counters as loaded, what their stored entries sum to).
    repairs: HashMap<AccountId, (Counters, Counters)>,
    /// The correlation id of the command being executed.
    correlation_id: Option<CorrelationId>,
    /// Loaded accounts whose customer is blocked (`customer_blocked`).
    blocked: HashSet<AccountId>,
}

async fn apply_batch<B: WriteBackend>(backend: &mut B, batch: &[Envelope], now: Timestamp, ids: &IdGenerator) -> Result<Vec<Reply>, StoreError> {
    backend.begin().await?;
    // Lock order: transactions (by id), then accounts (by id), then the log head.
    // (SQLite may read all of it before taking its one lock, and then checks
    // under the lock that no writer moved the ledger: see `sqlite.rs`.)
    let due = backend.due_expiries(now, MAX_EXPIRIES_PER_BATCH).await?;
    if batch.is_empty() && due.is_empty() {
        backend.rollback().await;
        return Ok(Vec::new());
    }
    let mut wanted_transactions: BTreeSet<TransactionId> = due.iter().cloned().collect();
    // Gathered with repeats, then sorted once (the lock order) and
    // deduplicated: the sort cost 45 million instructions for 40,000 batched
    // transfers where the set kept sorted as it grew cost 59 (docs/benchmarks.md).
    let mut wanted_accounts: Vec<AccountId> = Vec::with_capacity(2 * batch.iter().map(|e| e.command.item_count()).sum::<usize>());
    let mut transaction_ext: Vec<(TenantId, String)> = Vec::new();
    let mut account_ext: Vec<(TenantId, String)> = Vec::new();
    let mut idem_keys: Vec<(TenantId, String)> = Vec::new();
    let mut repair_accounts: Vec<AccountId> = Vec::new();
    for envelope in batch {
        if let Some(claim) = &envelope.idempotency {
            idem_keys.push((envelope.tenant, claim.key.clone()));
        }
        match &envelope.command {
            Command::CreateAccount(new) => {
                if let Some(ext) = &new.external_id {
                    account_ext.push((envelope.tenant, ext.clone()));
                }
            }
            Command::CreateTransaction(draft) => note_draft(draft, envelope.tenant, &mut wanted_accounts, &mut transaction_ext),
            Command::CreateBatch { items, .. } => {
                for draft in items {
                    note_draft(draft, envelope.tenant, &mut wanted_accounts, &mut transaction_ext);
                }
            }
            Command::PostTransaction { id, entries } => {
                wanted_transactions.insert(id.clone());
                for e in entries.iter().flatten() {
                    wanted_accounts.push(e.account_id.clone());
                }
            }
            Command::VoidTransaction { id } | Command::ReverseTransaction { id } => {
                wanted_transactions.insert(id.clone());
            }
            Command::RepairCounters { account } => {
                wanted_accounts.push(account.clone());
                repair_accounts.push(account.clone());
            }
        }
    }
    let wanted_transactions: Vec<TransactionId> = wanted_transactions.into_iter().collect();
    let loaded = backend.load_transactions(&wanted_transactions).await?;
    for t in &loaded {
        for e in &t.entries {
            wanted_accounts.push(e.account_id.clone());
        }
    }
    wanted_accounts.sort_unstable();
    wanted_accounts.dedup();
    if !repair_accounts.is_empty() {
        // A repair measures what is stored, not what this engine remembers.
        backend.reread(&repair_accounts).await;
    }
    let accounts = backend.load_accounts(&wanted_accounts).await?;
    let blocked = backend.blocked_accounts(&accounts).await?;
    // Summed after the accounts are locked (or, on SQLite, checked unchanged under the lock), so no other writer can add entries in between.
    let mut repairs = HashMap::new();
    if !repair_accounts.is_empty() {
        let sums = backend.fold_accounts(&repair_accounts).await?;
        for a in &accounts {
            if let Some(sum) = sums.get(&a.id) {
                repairs.insert(a.id.clone(), (a.counters, *sum));
            }
        }
    }
    let mut state = BatchState {
        now,
        ids,
        view: accounts.into_iter().map(|a| (a.id.clone(), a)).collect(),
        transactions: loaded
            .into_iter()
            .map(|t| {
                let stored = t.entries.len();
                (t.id.clone(), Slot { transaction: t, stored_entries: Some(stored), changed: false })
            })
            .collect(),
        transaction_external_ids: if transaction_ext.is_empty() { HashMap::new() } else { backend.find_transaction_external_ids(&transaction_ext).await? },
        account_external_ids: if account_ext.is_empty() { HashMap::new() } else { backend.find_account_external_ids(&account_ext).await? },
        idempotency: if idem_keys.is_empty() { HashMap::new() } else { backend.find_idempotency(&idem_keys).await? },
        new_accounts: Vec::new(),
        new_idempotency: Vec::new(),
        created_order: Vec::new(),
        log: Vec::new(),
        repairs,
        correlation_id: None,
        blocked,
    };
    // Sized once for every transaction the batch may create, not grown by doubling.
    state.transactions.reserve(batch.iter().map(|e| e.command.item_count()).sum());
    let loaded_versions: foldhash::HashMap<AccountId, i64> = state.view.iter().map(|(id, a)| (id.clone(), a.version)).collect();

    let mut sweep_log = LogWriter::default();
    for id in &due {
        state.expire(id, &mut sweep_log);
    }
    if let Some(content) = sweep_log.finish() {
        state.log.push(content);
    }

    let mut replies = Vec::with_capacity(batch.len());
    for envelope in batch {
        replies.push(state.execute(envelope));
    }

    let mut effects = BatchEffects { log: std::mem::take(&mut state.log), ..BatchEffects::default() };
    let new_account_ids: foldhash::HashSet<AccountId> = state.new_accounts.iter().map(|a| a.state.id.clone()).collect();
    for (id, account) in &state.view {
        if new_account_ids.contains(id) {
            continue;
        }
        if loaded_versions.get(id).is_some_and(|v| *v != account.version) {
            effects.account_updates.push(account.clone());
        }
    }
    effects.account_updates.sort_by(|a, b| a.id.cmp(&b.id));
    for mut record in std::mem::take(&mut state.new_accounts) {
        if let Some(current) = state.view.get(&record.state.id) {
            record.state = current.clone();
        }
        effects.new_accounts.push(record);
    }
    for id in &state.created_order {
        if let Some(slot) = state.transactions.remove(id) {
            effects.new_transactions.push(slot.transaction);
        }
    }
    for (_, slot) in state.transactions.drain() {
        if let (true, Some(stored)) = (slot.changed, slot.stored_entries) {
            effects.transaction_updates.push(TransactionUpdate { transaction: slot.transaction, stored_entries: stored });
        }
    }
    effects.transaction_updates.sort_by(|a, b| a.transaction.id.cmp(&b.transaction.id));
    effects.idempotency = state.new_idempotency;

    let mut chained = Vec::with_capacity(effects.log.len());
    if !effects.log.is_empty() {
        let (mut seq, mut prev) = backend.log_head().await?;
        for content in &effects.log {
            seq += 1;
            let hash = chain::link(&prev, seq, content);
            chained.push((seq, prev, hash));
            prev = hash;
        }
    }
    backend.write(&effects, &chained, now).await?;
    // Only a conflict says for sure that nothing was committed; after any other
    // failure of COMMIT the change may be there, so it must not run again.
    backend.commit().await.map_err(|e| match e {
        StoreError::Conflict(cause) => StoreError::Conflict(cause),
        other => StoreError::OutcomeUnknown(other.to_string()),
    })?;
    Ok(replies)
}

fn note_draft(draft: &TransactionDraft, tenant: TenantId, accounts: &mut Vec<AccountId>, ext: &mut Vec<(TenantId, String)>) {
    accounts.extend(draft.entries.iter().map(|e| e.account_id.clone()));
    accounts.extend(draft.expected_versions.keys().cloned());
    if let Some(x) = &draft.external_id {
        ext.push((tenant, x.clone()));
    }
}

impl BatchState<'_> {
    fn execute(&mut self, envelope: &Envelope) -> Reply {
        let tenant = envelope.tenant;
        if let Some(claim) = &envelope.idempotency
            && let Some(existing) = self.idempotency.get(&(tenant, claim.key.clone()))
        {
            return if existing.fingerprint == claim.fingerprint { Reply::Replay(existing.response.clone()) } else { Reply::KeyReused };
        }
        self.correlation_id = envelope.correlation_id.clone();
        // Who asked, first: the events projected from this record name it.
        // Written before the command's own fragments (not copied in front of
        // them after: a batch's record is hundreds of kilobytes), and dropped
        // with the record if the command logs nothing.
        let mut log = LogWriter::default();
        let (request_id, idempotency_key, correlation_id) = (
            envelope.request_id.as_deref(),
            envelope.idempotency.as_ref().map(|c| c.key.as_str()),
            envelope.correlation_id.as_ref().map(CorrelationId::as_str),
        );
        let (actor, client_ip) = (envelope.actor.as_deref(), envelope.client_ip.as_deref());
        if request_id.is_some() || idempotency_key.is_some() || correlation_id.is_some() || actor.is_some() {
            log.push(&LogFragment::Context { request_id, idempotency_key, correlation_id, actor, client_ip });
        }
        let context = log.mark();
        let result = match &envelope.command {
            Command::CreateAccount(new) => self.create_account(tenant, new, &mut log),
            Command::CreateTransaction(draft) => self.create_transaction(tenant, draft, &mut log).map(|t| Outcome::Transaction(Box::new(t))),
            Command::CreateBatch { atomic, items } => Ok(Outcome::Batch(self.create_batch(tenant, *atomic, items, &mut log))),
            Command::PostTransaction { id, entries } => self
                .refuse_blocked_transaction(tenant, id, entries.iter().flatten().map(|e| &e.account_id))
                .and_then(|()| self.change_transaction(tenant, id, |view, t, now| ledger::post(view, t, entries.as_deref(), now), &mut log))
                .map(|t| Outcome::Transaction(Box::new(t))),
            // Voiding stays possible for a blocked customer: it cancels a
            // movement that never happened, moves nothing, and the released
            // amount stays in the (frozen) account (docs/compliance.md).
            Command::VoidTransaction { id } => self
                .change_transaction(tenant, id, |view, t, now| ledger::void(view, t, VoidReason::Requested, now), &mut log)
                .map(|t| Outcome::Transaction(Box::new(t))),
            Command::ReverseTransaction { id } => self
                .refuse_blocked_transaction(tenant, id, std::iter::empty())
                .and_then(|()| self.reverse(tenant, id, &mut log))
                .map(|t| Outcome::Reversal(Box::new(t))),
            Command::RepairCounters { account } => self.repair(tenant, account, &mut log),
        };
        if log.mark() == context {
            log.truncate(0);
        }
        if let Some(content) = log.finish() {
            self.log.push(content);
        }
        match &envelope.idempotency {
            Some(claim) => {
                let response = (claim.render)(&result, &claim.request_id);
                let record = IdempotencyRecord {
                    tenant,
                    key: claim.key.clone(),
                    fingerprint: claim.fingerprint.clone(),
                    response: response.clone(),
                    created_at: self.now,
                };
                self.idempotency.insert((tenant, claim.key.clone()), record.clone());
                self.new_idempotency.push(record);
                Reply::Done { result, stored: Some(response) }
            }
            None => Reply::Done { result, stored: None },
        }
    }

    fn create_account(&mut self, tenant: TenantId, new: &NewAccount, log: &mut LogWriter) -> Result<Outcome, CommandError> {
        if let Some(ext) = &new.external_id
            && let Some(existing) = self.account_external_ids.get(&(tenant, ext.clone()))
        {
            return Err(CommandError::DuplicateExternalId { existing: existing.clone() });
        }
        let state = AccountState {
            id: self.ids.account(),
            tenant,
            currency: new.currency,
            normal_balance: new.normal_balance,
            min_available_balance: new.min_available_balance,
            counters: Counters::default(),
            version: 0,
        };
        let record = AccountRecord {
            state: state.clone(),
            name: new.name.clone(),
            external_id: new.external_id.clone(),
            metadata: new.metadata.clone(),
            created_at: self.now,
            correlation_id: self.correlation_id.clone(),
            customer: new.customer.clone(),
        };
        if let Some(ext) = &new.external_id {
            self.account_external_ids.insert((tenant, ext.clone()), state.id.to_string());
        }
        log.push(&LogFragment::AccountCreated {
            id: state.id.as_str(),
            tenant: tenant.0,
            currency: state.currency.code(),
            normal_balance: state.normal_balance.as_str(),
            min_available_balance: state.min_available_balance,
            customer_id: new.customer.as_ref().map(|c| c.customer_id.as_str()),
        });
        self.view.insert(state.id.clone(), state);
        self.new_accounts.push(record.clone());
        Ok(Outcome::Account(Box::new(record)))
    }

    fn create_transaction(&mut self, tenant: TenantId, draft: &TransactionDraft, log: &mut LogWriter) -> Result<Transaction, CommandError> {
        if let Some(ext) = &draft.external_id
            && let Some(existing) = self.transaction_external_ids.get(&(tenant, ext.clone()))
        {
            return Err(CommandError::DuplicateExternalId { existing: existing.clone() });
        }
        self.refuse_blocked(tenant, draft.entries.iter().map(|e| &e.account_id))?;
        let id = self.ids.transaction();
        let mut transaction = ledger::create(&mut self.view, tenant, id, draft, self.now)?;
        transaction.correlation_id = self.correlation_id.clone();
        if let Some(ext) = &draft.external_id {
            self.transaction_external_ids.insert((tenant, ext.clone()), transaction.id.to_string());
        }
        log.created(&transaction);
        self.created_order.push(transaction.id.clone());
        self.transactions.insert(transaction.id.clone(), Slot { transaction: transaction.clone(), stored_entries: None, changed: true });
        Ok(transaction)
    }

    fn create_batch(&mut self, tenant: TenantId, atomic: bool, items: &[TransactionDraft], log: &mut LogWriter) -> Vec<Result<Transaction, CommandError>> {
        log.reserve_transactions(items.len());
        if !atomic {
            return items.iter().map(|draft| self.create_transaction(tenant, draft, log)).collect();
        }
        let view_before = self.view.clone();
        let created_before = self.created_order.len();
        let log_before = log.mark();
        let mut results = Vec::with_capacity(items.len());
        let mut failed = false;
        for draft in items {
            if failed {
                results.push(Err(CommandError::BatchAborted));
                continue;
            }
            let result = self.create_transaction(tenant, draft, log);
            failed = result.is_err();
            results.push(result);
        }
        if !failed {
            return results;
        }
        // All or none: undo the items that succeeded.
        log.truncate(log_before);
        self.view = view_before;
        for id in self.created_order.drain(created_before..) {
            if let Some(slot) = self.transactions.remove(&id)
                && let Some(ext) = &slot.transaction.external_id
            {
                self.transaction_external_ids.remove(&(tenant, ext.clone()));
            }
        }
        results
            .into_iter()
            .map(|r| match r {
                Ok(_) => Err(CommandError::BatchAborted),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Refuses when one of `accounts` (of this tenant) belongs to a blocked customer.
    fn refuse_blocked<'b>(&self, tenant: TenantId, accounts: impl IntoIterator<Item = &'b AccountId>) -> Result<(), CommandError> {
        if self.blocked.is_empty() {
            return Ok(());
        }
        for account in accounts {
            // Another tenant's account answers as missing (from the core), never as blocked.
            if self.blocked.contains(account) && self.view.get(account).is_some_and(|a| a.tenant == tenant) {
                return Err(CommandError::CustomerBlocked(account.clone()));
            }
        }
        Ok(())
    }

    /// [`BatchState::refuse_blocked`] for an existing transaction's accounts
    /// and `more`; a missing transaction is left for the command to report.
    fn refuse_blocked_transaction<'b>(&self, tenant: TenantId, id: &TransactionId, more: impl IntoIterator<Item = &'b AccountId>) -> Result<(), CommandError> {
        if self.blocked.is_empty() {
            return Ok(());
        }
        match self.transactions.get(id) {
            Some(slot) if slot.transaction.tenant == tenant => {
                self.refuse_blocked(tenant, slot.transaction.entries.iter().map(|e| &e.account_id))?;
                self.refuse_blocked(tenant, more)
            }
            _ => Ok(()),
        }
    }

    fn change_transaction(
        &mut self,
        tenant: TenantId,
        id: &TransactionId,
        change: impl FnOnce(&mut AccountView, &mut Transaction, Timestamp) -> Result<(), LedgerError>,
        log: &mut LogWriter,
    ) -> Result<Transaction, CommandError> {
        let slot = match self.transactions.get_mut(id) {
            Some(slot) if slot.transaction.tenant == tenant => slot,
            _ => return Err(CommandError::TransactionNotFound(id.clone())),
        };
        let mut working = slot.transaction.clone();
        let entries_before = working.entries.len();
        change(&mut self.view, &mut working, self.now)?;
        log.changed(&working, entries_before);
        slot.transaction = working.clone();
        slot.changed = true;
        Ok(working)
    }

    fn reverse(&mut self, tenant: TenantId, id: &TransactionId, log: &mut LogWriter) -> Result<Transaction, CommandError> {
        let new_id = self.ids.transaction();
        let slot = match self.transactions.get_mut(id) {
            Some(slot) if slot.transaction.tenant == tenant => slot,
            _ => return Err(CommandError::TransactionNotFound(id.clone())),
        };
        let mut original = slot.transaction.clone();
        let mut reversal = ledger::reverse(&mut self.view, &mut original, new_id, self.now)?;
        reversal.correlation_id = self.correlation_id.clone();
        log.created(&reversal);
        log.changed(&original, original.entries.len());
        slot.transaction = original;
        slot.changed = true;
        self.created_order.push(reversal.id.clone());
        self.transactions.insert(reversal.id.clone(), Slot { transaction: reversal.clone(), stored_entries: None, changed: true });
        Ok(reversal)
    }

    /// Corrects an account's counters by the drift between what was stored
    /// and what its stored entries sum to. Applied as a shift, not an
    /// overwrite, so that changes earlier in this batch are kept.
    fn repair(&mut self, tenant: TenantId, account: &AccountId, log: &mut LogWriter) -> Result<Outcome, CommandError> {
        let not_found = || CommandError::Ledger(LedgerError::AccountNotFound(account.clone()));
        let (loaded, sum) = self.repairs.get(account).copied().ok_or_else(not_found)?;
        let state = match self.view.get_mut(account) {
            Some(state) if state.tenant == tenant => state,
            _ => return Err(not_found()),
        };
        let before = state.counters;
        let after = before.shifted(&loaded, &sum).ok_or_else(|| CommandError::Ledger(LedgerError::BalanceOverflow(account.clone())))?;
        if after != before {
            state.counters = after;
            state.version += 1;
            // Measured once: a second repair of the same account in this batch finds no drift.
            self.repairs.insert(account.clone(), (sum, sum));
            log.push(&LogFragment::CountersRepaired { account: account.as_str(), before: counters_array(&before), after: counters_array(&after) });
        }
        Ok(Outcome::CountersRepaired { account: account.clone(), before, after })
    }

    fn expire(&mut self, id: &TransactionId, log: &mut LogWriter) {
        let Some(slot) = self.transactions.get_mut(id) else {
            return;
        };
        let mut working = slot.transaction.clone();
        match ledger::void(&mut self.view, &mut working, VoidReason::Expired, self.now) {
            Ok(()) => {
                log.changed(&working, working.entries.len());
                slot.transaction = working;
                slot.changed = true;
            }
            Err(error) => {
                tracing::error!(transaction = %id, %error, "could not void an expired hold")
            }
        }
    }
}

/// One change in the ledger log. The log holds enough to rebuild every
/// entry and every transaction status, which `settle audit verify` does.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LogFragment<'a> {
    /// Who asked for the change (first in a command's record, when known):
    /// not needed to rebuild the ledger, only to tell integrators which
    /// request caused each event. `settle audit verify` skips it.
    Context {
        request_id: Option<&'a str>,
        idempotency_key: Option<&'a str>,
        correlation_id: Option<&'a str>,
        /// The API key id that asked, and the client address it asked from
        /// (absent for the engine's own work and in records before they were kept).
        #[serde(skip_serializing_if = "Option::is_none")]
        actor: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_ip: Option<&'a str>,
    },
    AccountCreated {
        id: &'a str,
        tenant: i64,
        currency: &'a str,
        normal_balance: &'a str,
        min_available_balance: Option<i64>,
        /// The owning customer, when the account was opened as theirs.
        #[serde(skip_serializing_if = "Option::is_none")]
        customer_id: Option<&'a str>,
    },
    TransactionCreated {
        id: &'a str,
        tenant: i64,
        status: &'a str,
        entries: Vec<LogEntry<'a>>,
    },
    TransactionChanged {
        id: &'a str,
        status: &'a str,
        reversed_by: Option<&'a str>,
        entries: Vec<LogEntry<'a>>,
    },
    /// Counters as [posted_debits, posted_credits, pending_debits, pending_credits].
    CountersRepaired {
        account: &'a str,
        before: [i64; 4],
        after: [i64; 4],
    },
}

fn counters_array(c: &Counters) -> [i64; 4] {
    [c.posted_debits, c.posted_credits, c.pending_debits, c.pending_credits]
}

/// One leg, as logged: (id, account, direction, amount, currency, leg).
pub type LogEntry<'a> = (&'a str, &'a str, &'a str, i64, &'a str, &'a str);

/// The serde forms of the fragments [`LogWriter`] writes directly: what
/// its test holds the direct forms to.
#[cfg(test)]
impl<'a> LogFragment<'a> {
    fn created(t: &'a Transaction) -> LogFragment<'a> {
        LogFragment::TransactionCreated { id: t.id.as_str(), tenant: t.tenant.0, status: t.status.as_str(), entries: log_entries(&t.entries) }
    }

    fn changed(t: &'a Transaction, entries_before: usize) -> LogFragment<'a> {
        LogFragment::TransactionChanged {
            id: t.id.as_str(),
            status: t.status.as_str(),
            reversed_by: t.reversed_by.as_ref().map(TransactionId::as_str),
            entries: log_entries(t.entries.get(entries_before..).unwrap_or(&[])),
        }
    }
}

#[cfg(test)]
fn log_entries(entries: &[ledger::Entry]) -> Vec<LogEntry<'_>> {
    entries.iter().map(|e| (e.id.as_str(), e.account_id.as_str(), e.direction.as_str(), e.amount, e.currency.code(), e.leg.as_str())).collect()
}

/// Accumulates one command's fragments as a JSON array.
///
/// A transaction's fragments (one or two per transfer) are written here
/// directly, byte for byte what serde_json makes of [`LogFragment`] (a
/// proptest holds them to it): the record is hashed into the chain, so its
/// bytes must not change. Through serde they were a tenth of the engine's
/// instructions in a batched run (docs/benchmarks.md).
#[derive(Default)]
struct LogWriter {
    buffer: String,
}

/// About what a transaction's fragment takes without its legs, and per leg.
const FRAGMENT_BYTES: usize = 100;
const LEG_BYTES: usize = 100;

impl LogWriter {
    fn push(&mut self, fragment: &LogFragment<'_>) {
        self.open_fragment();
        // Serializing plain strings and integers cannot fail.
        match serde_json::to_string(fragment) {
            Ok(json) => self.buffer.push_str(&json),
            Err(_) => tracing::error!("ledger log fragment failed to serialize"),
        }
    }

    /// [`LogFragment::TransactionCreated`] of `t`.
    fn created(&mut self, t: &Transaction) {
        self.open_fragment();
        self.buffer.reserve(FRAGMENT_BYTES + LEG_BYTES * t.entries.len());
        self.buffer.push_str(r#"{"op":"transaction_created","id":"#);
        json_text::push_str(&mut self.buffer, t.id.as_str());
        self.buffer.push_str(r#","tenant":"#);
        self.buffer.push_str(itoa::Buffer::new().format(t.tenant.0));
        self.buffer.push_str(r#","status":"#);
        self.name(t.status.as_str());
        self.entries(&t.entries);
    }

    /// [`LogFragment::TransactionChanged`] of `t`, whose entries from
    /// `entries_before` on are new.
    fn changed(&mut self, t: &Transaction, entries_before: usize) {
        let entries = t.entries.get(entries_before..).unwrap_or(&[]);
        self.open_fragment();
        self.buffer.reserve(FRAGMENT_BYTES + LEG_BYTES * entries.len());
        self.buffer.push_str(r#"{"op":"transaction_changed","id":"#);
        json_text::push_str(&mut self.buffer, t.id.as_str());
        self.buffer.push_str(r#","status":"#);
        self.name(t.status.as_str());
        self.buffer.push_str(r#","reversed_by":"#);
        match &t.reversed_by {
            Some(id) => json_text::push_str(&mut self.buffer, id.as_str()),
            None => self.buffer.push_str("null"),
        }
        self.entries(entries);
    }

    /// The `entries` member (each a [`LogEntry`]) and the fragment's end.
    fn entries(&mut self, entries: &[ledger::Entry]) {
        self.buffer.push_str(r#","entries":["#);
        for (i, e) in entries.iter().enumerate() {
            self.buffer.push_str(if i == 0 { "[" } else { ",[" });
            json_text::push_str(&mut self.buffer, e.id.as_str());
            self.buffer.push(',');
            json_text::push_str(&mut self.buffer, e.account_id.as_str());
            self.buffer.push(',');
            self.name(e.direction.as_str());
            self.buffer.push(',');
            self.buffer.push_str(itoa::Buffer::new().format(e.amount));
            self.buffer.push(',');
            self.name(e.currency.code());
            self.buffer.push(',');
            self.name(e.leg.as_str());
            self.buffer.push(']');
        }
        self.buffer.push_str("]}");
    }

    fn name(&mut self, name: &str) {
        json_text::push_name(&mut self.buffer, name);
    }

    /// Room for `transfers` more transactions of two legs, so a batch's
    /// record (hundreds of kilobytes) is not grown by doubling.
    fn reserve_transactions(&mut self, transfers: usize) {
        self.buffer.reserve(transfers.saturating_mul(FRAGMENT_BYTES + 2 * LEG_BYTES));
    }

    fn open_fragment(&mut self) {
        self.buffer.push(if self.buffer.is_empty() { '[' } else { ',' });
    }

    /// Where the record ends now, to [`LogWriter::truncate`] back to.
    fn mark(&self) -> usize {
        self.buffer.len()
    }

    /// Drops every fragment pushed after `mark` (an atomic batch that failed).
    fn truncate(&mut self, mark: usize) {
        self.buffer.truncate(mark);
    }

    fn finish(mut self) -> Option<Vec<u8>> {
        if self.buffer.is_empty() {
            return None;
        }
        self.buffer.push(']');
        Some(self.buffer.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use settle_core::ids::EntryId;
    use settle_core::ledger::{Direction, Entry, Leg, TransactionStatus};
    use settle_core::money::Currency;

    /// Any text, including what JSON must escape.
    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,12}|[\\x00-\\x7f]{0,12}|[a-z0-9_]{0,20}"
    }

    fn entry() -> impl Strategy<Value = Entry> {
        (text(), text(), any::<bool>(), any::<i64>(), prop::sample::select(vec!["USD", "EUR", "JPY", "KWD"]), any::<bool>()).prop_map(
            |(id, account, debit, amount, currency, held)| Entry {
                id: EntryId::from_trusted(id),
                transaction_id: TransactionId::from_trusted(String::from("ltx_x")),
                account_id: AccountId::from_trusted(account),
                direction: if debit { Direction::Debit } else { Direction::Credit },
                amount,
                currency: Currency::parse(currency).unwrap_or_else(|| unreachable!("a known code")),
                leg: if held { Leg::Pending } else { Leg::Posted },
                effective_at: Timestamp::from_micros(1),
                created_at: Timestamp::from_micros(2),
            },
        )
    }

    fn transaction() -> impl Strategy<Value = Transaction> {
        (
            text(),
            any::<i64>(),
            prop::sample::select(vec![TransactionStatus::Pending, TransactionStatus::Posted, TransactionStatus::Voided]),
            prop::option::of(text()),
            prop::collection::vec(entry(), 0..5),
        )
            .prop_map(|(id, tenant, status, reversed_by, entries)| Transaction {
                id: TransactionId::from_trusted(id),
                tenant: TenantId(tenant),
                status,
                description: None,
                external_id: None,
                effective_at: Timestamp::from_micros(1),
                expires_at: None,
                created_at: Timestamp::from_micros(2),
                posted_at: None,
                voided_at: None,
                void_reason: None,
                reverses: None,
                reversed_by: reversed_by.map(TransactionId::from_trusted),
                metadata: Default::default(),
                correlation_id: None,
                entries,
            })
    }

    /// What serde_json makes of `fragments`, as one record.
    fn serde_record(fragments: &[LogFragment<'_>]) -> Vec<u8> {
        let mut log = LogWriter::default();
        for fragment in fragments {
            log.push(fragment);
        }
        log.finish().unwrap_or_default()
    }

    proptest! {
        /// The chain hashes a record's bytes: the direct forms must be
        /// exactly serde_json's, escapes, nulls and extreme integers included.
        #[test]
        fn direct_fragments_are_serde_jsons_bytes(t in transaction(), before in 0usize..6) {
            let mut direct = LogWriter::default();
            direct.created(&t);
            direct.changed(&t, before);
            let direct = direct.finish().unwrap_or_default();
            let expected = serde_record(&[LogFragment::created(&t), LogFragment::changed(&t, before)]);
            prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&expected));
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&direct).is_ok());
        }
    }

    #[test]
    fn a_failed_atomic_batch_leaves_the_record_as_it_was_marked() {
        let mut log = LogWriter::default();
        log.push(&LogFragment::Context { request_id: Some("req_1"), idempotency_key: None, correlation_id: None, actor: None, client_ip: None });
        let context = log.mark();
        log.push(&LogFragment::CountersRepaired { account: "acct_a", before: [0; 4], after: [1, 0, 0, 0] });
        log.truncate(context);
        let with_context_only = log.finish().unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&with_context_only), r#"[{"op":"context","request_id":"req_1","idempotency_key":null,"correlation_id":null}]"#);
        let mut empty = LogWriter::default();
        empty.truncate(empty.mark());
        assert!(empty.finish().is_none(), "a command that logs nothing leaves no record");
    }
}
