//! Webhook endpoints, the deliveries owed to them, and every attempt made.
//!
//! These rows are bookkeeping about notifications, not ledger state, so they
//! are written here directly rather than through the engine. A delivery is
//! a row from the moment its event is stored (same transaction, see
//! `events`) until it succeeds or is dead-lettered, so a restart loses none.
//!
//! Claiming: a due `pending` delivery is taken by moving its
//! `next_attempt_at` to the end of the claimer's lease and naming the
//! claimer; the attempt's outcome is written only while the claimer still
//! holds it. A worker that dies leaves its deliveries due again when the
//! lease ends (a retry with the same `webhook-id`, which receivers dedupe).
//! On PostgreSQL the candidates are locked `FOR UPDATE SKIP LOCKED`, so
//! several servers share the work and never send one delivery twice in the
//! normal case; on SQLite the write lock serializes claims.

use crate::error::StoreError;
use crate::events::{NewEvent, pg_write_events, sqlite_write_events};
use crate::records::{IdempotencyRecord, Page, PageRequest};
use crate::rows;
use crate::store::Store;
use rusqlite::{OptionalExtension, params};
use settle_core::clock::Timestamp;
use settle_core::ids::{EventId, WebhookAttemptId, WebhookEndpointId};
use settle_core::metadata::Metadata;
use settle_core::tenancy::{Environment, TenantId};

/// Whether an endpoint subscribed to `enabled_events` (a JSON array of
/// types, or `["*"]`) receives events of type `kind`.
pub fn subscribed(enabled_events: &str, kind: &str) -> bool {
    serde_json::from_str::<Vec<String>>(enabled_events).is_ok_and(|types| types.iter().any(|t| t == "*" || t == kind))
}

/// A webhook endpoint as stored; secrets stay sealed (see `settle-api`'s vault).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpointRecord {
    pub id: WebhookEndpointId,
    pub tenant: TenantId,
    pub url: String,
    pub description: Option<String>,
    pub enabled_events: Vec<String>,
    /// The API version its deliveries are rendered in (`YYYY-MM-DD`).
    pub api_version: String,
    pub metadata: Metadata,
    pub is_enabled: bool,
    /// `requested`, `gone` (the receiver answered 410) or `failing`.
    pub disabled_reason: Option<String>,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<Timestamp>,
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for WebhookEndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpointRecord").field("id", &self.id).field("tenant", &self.tenant).finish_non_exhaustive()
    }
}

/// What `PATCH /v1/webhook_endpoints/{id}` changes; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub metadata: Option<Metadata>,
    /// `Some(true)`: disable (reason `requested`); `Some(false)`: enable again.
    pub disabled: Option<bool>,
}

/// What a write that may carry an idempotency key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written<T> {
    Done(T),
    /// The idempotency key was taken meanwhile by a concurrent request; nothing was written.
    KeyTaken(IdempotencyRecord),
}

/// A delivery a worker now holds, with everything needed to send it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    pub tenant: TenantId,
    pub environment: Environment,
    /// Attempts already made (0 for the first).
    pub attempts: i64,
    pub event_type: String,
    pub event_body: Vec<u8>,
    pub event_created_at: Timestamp,
    /// The event's object and its place among that object's events (a
    /// deferred body leaves them to its row).
    pub event_object_id: String,
    pub event_sequence: i64,
    pub url: String,
    pub api_version: String,
    pub secret: Vec<u8>,
    pub previous_secret: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<Timestamp>,
    pub failing_since: Option<Timestamp>,
}

impl std::fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedDelivery").field("endpoint_id", &self.endpoint_id).field("event_id", &self.event_id).finish_non_exhaustive()
    }
}

/// One attempt, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: WebhookAttemptId,
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    pub tenant: TenantId,
    /// 1 for the first attempt.
    pub attempt: i64,
    pub succeeded: bool,
    pub response_status: Option<i64>,
    /// The first KiB of the response body.
    pub response_body: Option<String>,
    /// Why no response came (timeout, refused connection, blocked address).
    pub error: Option<String>,
    pub latency_ms: i64,
    pub created_at: Timestamp,
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryNext {
    Succeeded,
    RetryAt(Timestamp),
    /// The schedule is exhausted (or the endpoint is gone): dead-lettered.
    DeadLettered,
}

/// One attempt with what follows from it, to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedDelivery {
    pub attempt: AttemptRecord,
    pub next: DeliveryNext,
    pub health: EndpointHealth,
}

/// What happens to the endpoint after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointHealth {
    /// It answered 2xx: its run of failures (if any) ends.
    Healthy,
    /// It failed; its run of failures starts now unless one is going on.
    Failing,
    /// Disabled at once for `reason`, with its pending deliveries
    /// dead-lettered and `event` (announcing it) stored and fanned out.
    Disable { reason: &'static str, event: Box<NewEvent> },
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, enabled_events, api_version, metadata, status, disabled_reason, secret, previous_secret, \
                                previous_secret_expires_at, failing_since, created_at, updated_at";

struct EndpointRow {
    id: String,
    tenant: i64,
    url: String,
    description: Option<String>,
    enabled_events: String,
    api_version: String,
    metadata: String,
    status: String,
    disabled_reason: Option<String>,
    secret: Vec<u8>,
    previous_secret: Option<Vec<u8>>,
    previous_secret_expires_at: Option<i64>,
    failing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl EndpointRow {
    fn into_record(self) -> Result<WebhookEndpointRecord, StoreError> {
        Ok(WebhookEndpointRecord {
            enabled_events: serde_json::from_str(&self.enabled_events).map_err(|_| StoreError::Corrupt(format!("enabled_events of {}", self.id)))?,
            metadata: rows::metadata(&self.metadata)?,
            id: WebhookEndpointId::from_trusted(self.id),
            tenant: TenantId(self.tenant),
            url: self.url,
            description: self.description,
            api_version: self.api_version,
            is_enabled: self.status == "enabled",
            disabled_reason: self.disabled_reason,
            secret: self.secret,
            previous_secret: self.previous_secret,
            previous_secret_expires_at: self.previous_secret_expires_at.map(Timestamp::from_micros),
            failing_since: self.failing_since.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
        })
    }
}

fn sqlite_endpoint(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndpointRow> {
    Ok(EndpointRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        url: r.get(2)?,
        description: r.get(3)?,
        enabled_events: r.get(4)?,
        api_version: r.get(5)?,
        metadata: r.get(6)?,
        status: r.get(7)?,
        disabled_reason: r.get(8)?,
        secret: r.get(9)?,
        previous_secret: r.get(10)?,
        previous_secret_expires_at: r.get(11)?,
        failing_since: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

fn pg<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a tokio_postgres::Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(|e| StoreError::Corrupt(format!("webhooks column {i}: {e}")))
}

fn pg_endpoint(r: &tokio_postgres::Row) -> Result<EndpointRow, StoreError> {
    Ok(EndpointRow {
        id: pg(r, 0)?,
        tenant: pg(r, 1)?,
        url: pg(r, 2)?,
        description: pg(r, 3)?,
        enabled_events: pg(r, 4)?,
        api_version: pg(r, 5)?,
        metadata: pg(r, 6)?,
        status: pg(r, 7)?,
        disabled_reason: pg(r, 8)?,
        secret: pg(r, 9)?,
        previous_secret: pg(r, 10)?,
        previous_secret_expires_at: pg(r, 11)?,
        failing_since: pg(r, 12)?,
        created_at: pg(r, 13)?,
        updated_at: pg(r, 14)?,
    })
}

fn events_json(types: &[String]) -> String {
    serde_json::to_string(types).unwrap_or_else(|_| String::from("[]"))
}

const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) VALUES (#1, #2, #3, #4, #5, #6)";

fn sqlite_idempotency(tx: &rusqlite::Transaction<'_>, record: Option<&IdempotencyRecord>) -> Result<(), StoreError> {
    if let Some(r) = record {
        tx.execute(
            &INSERT_IDEMPOTENCY.replace('#', "?"),
            params![r.tenant.0, r.key, r.fingerprint, r.response.status, r.response.body, r.created_at.micros()],
        )?;
    }
    Ok(())
}

async fn pg_idempotency(tx: &deadpool_postgres::Transaction<'_>, record: Option<&IdempotencyRecord>) -> Result<(), StoreError> {
    if let Some(r) = record {
        tx.execute(
            &INSERT_IDEMPOTENCY.replace('#', "$"),
            &[&r.tenant.0, &r.key, &r.fingerprint, &i64::from(r.response.status), &r.response.body, &r.created_at.micros()],
        )
        .await?;
    }
    Ok(())
}

/// A delivery's columns when claimed, joined with its event, endpoint and tenant.
const CLAIMED_COLUMNS: &str = "d.endpoint_id, d.event_id, d.tenant_id, t.environment, d.attempts, e.type, e.body, e.created_at, w.url, w.api_version, w.secret, \
                               w.previous_secret, w.previous_secret_expires_at, w.failing_since, e.object_id, e.sequence";

impl crate::sqlite::SqliteStore {
    /// [`crate::sqlite::SqliteStore::write`] on a pooled connection: for
    /// writes that recur every few milliseconds (projection, deliveries).
    pub(crate) async fn write_pooled<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_pooled_as(crate::sqlite::CommitSync::Full, f).await
    }

    /// [`Self::write_pooled`] with the commit synced as `sync` says: the
    /// event projector's rounds are [`crate::sqlite::CommitSync::Deferred`].
    pub(crate) async fn write_pooled_as<T: Send + 'static>(
        &self,
        sync: crate::sqlite::CommitSync,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        crate::blocking::run(move || this.write_pooled_with(sync, f)).await
    }
}

/// What an attempt writes: (its time, the delivery's new status, when the
/// delivery is next due, the attempt's status).
fn columns(f: &FinishedDelivery) -> (Timestamp, &'static str, Timestamp, &'static str) {
    let now = f.attempt.created_at;
    let (status, next_at) = match f.next {
        DeliveryNext::Succeeded => ("succeeded", now),
        DeliveryNext::RetryAt(at) => ("pending", at),
        DeliveryNext::DeadLettered => ("failed", now),
    };
    (now, status, next_at, if f.attempt.succeeded { "succeeded" } else { "failed" })
}

/// Whether a batch of attempts can be recorded with one statement per
/// table: it disables no endpoint, and names each delivery once (a lapsed
/// lease re-claimed by the same worker could name one twice; attempt by
/// attempt, the second then finds the lease gone, as it should).
fn is_plain_batch(finished: &[FinishedDelivery]) -> bool {
    let mut keys = std::collections::HashSet::with_capacity(finished.len());
    finished.iter().all(|f| !matches!(f.health, EndpointHealth::Disable { .. }) && keys.insert((f.attempt.endpoint_id.as_str(), f.attempt.event_id.as_str())))
}

/// Where an endpoint's `failing_since` ends up after a batch's attempts,
/// as if they had been applied one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HealthAfter {
    /// The last one succeeded: no run of failures.
    Healthy,
    /// Failures since `t`, after a success in the batch: the run starts at `t`.
    FailingSince(Timestamp),
    /// Failures only: a run starts at `t` unless one is going on.
    FailingUnlessAlready(Timestamp),
}

impl HealthAfter {
    /// The state after `before` (the batch so far; `None`: nothing yet) and then `health` at `at`.
    fn then(before: Option<HealthAfter>, health: &EndpointHealth, at: Timestamp) -> Option<HealthAfter> {
        match (health, before) {
            (EndpointHealth::Healthy, _) => Some(HealthAfter::Healthy),
            (EndpointHealth::Failing, None) => Some(HealthAfter::FailingUnlessAlready(at)),
            (EndpointHealth::Failing, Some(HealthAfter::Healthy)) => Some(HealthAfter::FailingSince(at)),
            (EndpointHealth::Failing, Some(kept)) => Some(kept),
            // Batches that disable are recorded attempt by attempt.
            (EndpointHealth::Disable { .. }, kept) => kept,
        }
    }
}

/// Records a plain batch (see [`is_plain_batch`]) on PostgreSQL in one
/// transaction of two statements: the deliveries and their attempts (only
/// for deliveries `owner` still holds), then the endpoints' health. Attempt
/// by attempt it was three round trips per delivery, which bounded the
/// delivery rate.
async fn pg_finish_plain(p: &crate::postgres::PgStore, owner: &str, finished: &[FinishedDelivery]) -> Result<usize, StoreError> {
    const RECORD: &str =
        "WITH i AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[],
                                                        $9::text[], $10::bigint[], $11::text[], $12::text[], $13::bigint[])
                                     AS i(endpoint_id, event_id, tenant_id, status, next_at, at, attempt_id, attempt, attempt_status, response_status,
                                          response_body, error, latency_ms)),
                          done AS (UPDATE webhook_deliveries d SET status = i.status, attempts = d.attempts + 1, next_attempt_at = i.next_at,
                                          lease_owner = NULL, updated_at = i.at
                                   FROM i WHERE d.endpoint_id = i.endpoint_id AND d.event_id = i.event_id AND d.lease_owner = $14 AND d.status = 'pending'
                                   RETURNING d.endpoint_id, d.event_id),
                          kept AS (INSERT INTO webhook_attempts (id, endpoint_id, event_id, tenant_id, attempt, status, response_status, response_body,
                                                                 error, latency_ms, created_at)
                                   SELECT i.attempt_id, i.endpoint_id, i.event_id, i.tenant_id, i.attempt, i.attempt_status, i.response_status,
                                          i.response_body, i.error, i.latency_ms, i.at
                                   FROM i JOIN done ON done.endpoint_id = i.endpoint_id AND done.event_id = i.event_id)
                          SELECT endpoint_id, event_id FROM done";
    // Writes only what changes: most batches leave every endpoint as it was.
    const HEALTH: &str =
        "UPDATE webhook_endpoints w SET failing_since = h.since FROM UNNEST($1::text[], $2::bigint[], $3::bool[]) AS h(id, since, unless_failing)
                          WHERE w.id = h.id AND CASE WHEN h.unless_failing THEN w.failing_since IS NULL ELSE w.failing_since IS DISTINCT FROM h.since END";
    let n = finished.len();
    let (mut endpoints, mut events, mut tenants, mut statuses, mut next_ats, mut ats) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut ids, mut numbers, mut outcomes, mut codes, mut bodies, mut errors, mut latencies) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for f in finished {
        let (now, status, next_at, attempt_status) = columns(f);
        let a = &f.attempt;
        endpoints.push(a.endpoint_id.as_str());
        events.push(a.event_id.as_str());
        tenants.push(a.tenant.0);
        statuses.push(status);
        next_ats.push(next_at.micros());
        ats.push(now.micros());
        ids.push(a.id.as_str());
        numbers.push(a.attempt);
        outcomes.push(attempt_status);
        codes.push(a.response_status);
        bodies.push(a.response_body.as_deref());
        errors.push(a.error.as_deref());
        latencies.push(a.latency_ms);
    }
    let mut client = p.pool().get().await?;
    let tx = client.transaction().await?;
    let record = tx.prepare_cached(RECORD).await?;
    let done = tx
        .query(&record, &[&endpoints, &events, &tenants, &statuses, &next_ats, &ats, &ids, &numbers, &outcomes, &codes, &bodies, &errors, &latencies, &owner])
        .await?;
    let mut recorded = std::collections::HashSet::with_capacity(done.len());
    for r in &done {
        recorded.insert((pg::<String>(r, 0)?, pg::<String>(r, 1)?));
    }
    // Each endpoint's health after its recorded attempts, in their order.
    let mut health: Vec<(&str, Option<HealthAfter>)> = Vec::new();
    for f in finished {
        let a = &f.attempt;
        if !recorded.contains(&(a.endpoint_id.as_str().to_owned(), a.event_id.as_str().to_owned())) {
            continue;
        }
        match health.iter_mut().find(|(id, _)| *id == a.endpoint_id.as_str()) {
            Some((_, state)) => *state = HealthAfter::then(*state, &f.health, a.created_at),
            None => health.push((a.endpoint_id.as_str(), HealthAfter::then(None, &f.health, a.created_at))),
        }
    }
    let (mut ids, mut since, mut unless_failing) = (Vec::new(), Vec::new(), Vec::new());
    for (id, state) in health {
        let (at, unless) = match state {
            None => continue,
            Some(HealthAfter::Healthy) => (None, false),
            Some(HealthAfter::FailingSince(t)) => (Some(t.micros()), false),
            Some(HealthAfter::FailingUnlessAlready(t)) => (Some(t.micros()), true),
        };
        ids.push(id);
        since.push(at);
        unless_failing.push(unless);
    }
    if !ids.is_empty() {
        let update = tx.prepare_cached(HEALTH).await?;
        tx.execute(&update, &[&ids, &since, &unless_failing]).await?;
    }
    tx.commit().await?;
    Ok(recorded.len())
}

impl Store {
    /// Stores a new endpoint and, when the request carried an
    /// `Idempotency-Key`, its idempotency record, in one transaction.
    pub async fn create_webhook_endpoint(&self, e: WebhookEndpointRecord, idempotency: Option<IdempotencyRecord>) -> Result<Written<()>, StoreError> {
        const SQL: &str =
            "INSERT INTO webhook_endpoints (id, tenant_id, url, description, enabled_events, api_version, metadata, status, secret, created_at, updated_at)
                           VALUES (#1, #2, #3, #4, #5, #6, #7, 'enabled', #8, #9, #9)";
        let key = idempotency.as_ref().map(|r| (r.tenant, r.key.clone()));
        let events = events_json(&e.enabled_events);
        let metadata = rows::metadata_json(&e.metadata);
        let result = match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    tx.execute(
                        &SQL.replace('#', "?"),
                        params![e.id.as_str(), e.tenant.0, e.url, e.description, events, e.api_version, metadata, e.secret, e.created_at.micros()],
                    )?;
                    sqlite_idempotency(tx, idempotency.as_ref())
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    &SQL.replace('#', "$"),
                    &[&e.id.as_str(), &e.tenant.0, &e.url, &e.description, &events, &e.api_version, &metadata, &e.secret, &e.created_at.micros()],
                )
                .await?;
                pg_idempotency(&tx, idempotency.as_ref()).await?;
                tx.commit().await.map_err(StoreError::from)
            }
        };
        self.written(result, key).await
    }

    /// A conflict on the idempotency key means a concurrent request with the
    /// same key won: answer with what it stored.
    async fn written<T>(&self, result: Result<T, StoreError>, key: Option<(TenantId, String)>) -> Result<Written<T>, StoreError> {
        match (result, key) {
            (Ok(value), _) => Ok(Written::Done(value)),
            (Err(StoreError::Conflict(cause)), Some((tenant, key))) => match self.find_idempotency(tenant, key).await? {
                Some(record) => Ok(Written::KeyTaken(record)),
                None => Err(StoreError::Conflict(cause)),
            },
            (Err(e), _) => Err(e),
        }
    }

    /// The tenant's endpoint `id` (another tenant's answers `None`).
    pub async fn get_webhook_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<Option<WebhookEndpointRecord>, StoreError> {
        let row = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1 AND tenant_id = ?2"))?;
                    Ok(stmt.query_row(params![id.as_str(), tenant.0], sqlite_endpoint).optional()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2")).await?;
                client.query_opt(&stmt, &[&id.as_str(), &tenant.0]).await?.as_ref().map(pg_endpoint).transpose()?
            }
        };
        row.map(EndpointRow::into_record).transpose()
    }

    /// A page of the tenant's endpoints, newest first.
    pub async fn list_webhook_endpoints(&self, tenant: TenantId, page: PageRequest) -> Result<Page<WebhookEndpointRecord>, StoreError> {
        let (descending, bound) = page.cursor.keyset_start(false);
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let limit = i64::from(page.limit) + 1;
        let rows = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = ?1 AND id {cmp} ?2 ORDER BY id {order} LIMIT ?3");
                    let mut stmt = c.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params![tenant.0, bound, limit], sqlite_endpoint)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id {cmp} $2 ORDER BY id {order} LIMIT $3");
                let stmt = client.prepare_cached(&sql).await?;
                client.query(&stmt, &[&tenant.0, &bound, &limit]).await?.iter().map(pg_endpoint).collect::<Result<Vec<_>, _>>()?
            }
        };
        let records = rows.into_iter().map(EndpointRow::into_record).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(records, &page))
    }

    /// Applies `update`; `None` when the tenant has no such endpoint.
    /// Disabling dead-letters what it still owed (`recover` replays it);
    /// enabling again starts a fresh run without failures.
    pub async fn update_webhook_endpoint(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
        update: EndpointUpdate,
        now: Timestamp,
    ) -> Result<Option<WebhookEndpointRecord>, StoreError> {
        let Some(mut e) = self.get_webhook_endpoint(tenant, id.clone()).await? else {
            return Ok(None);
        };
        if let Some(url) = update.url {
            e.url = url;
        }
        if let Some(types) = update.enabled_events {
            e.enabled_events = types;
        }
        if let Some(description) = update.description {
            e.description = description;
        }
        if let Some(metadata) = update.metadata {
            e.metadata = metadata;
        }
        let newly_disabled = update.disabled == Some(true) && e.is_enabled;
        match update.disabled {
            Some(true) if e.is_enabled => (e.is_enabled, e.disabled_reason) = (false, Some(String::from("requested"))),
            Some(false) if !e.is_enabled => (e.is_enabled, e.disabled_reason, e.failing_since) = (true, None, None),
            _ => {}
        }
        e.updated_at = now;
        const SQL: &str = "UPDATE webhook_endpoints SET url = #3, enabled_events = #4, description = #5, metadata = #6, status = #7, disabled_reason = #8,
                           failing_since = #9, updated_at = #10 WHERE id = #1 AND tenant_id = #2";
        const DEAD_LETTER: &str =
            "UPDATE webhook_deliveries SET status = 'failed', lease_owner = NULL, updated_at = #2 WHERE endpoint_id = #1 AND status = 'pending'";
        let (events, metadata) = (events_json(&e.enabled_events), rows::metadata_json(&e.metadata));
        let status = if e.is_enabled { "enabled" } else { "disabled" };
        let failing = e.failing_since.map(Timestamp::micros);
        let record = e.clone();
        match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    tx.execute(
                        &SQL.replace('#', "?"),
                        params![e.id.as_str(), e.tenant.0, e.url, events, e.description, metadata, status, e.disabled_reason, failing, now.micros()],
                    )?;
                    if newly_disabled {
                        tx.execute(&DEAD_LETTER.replace('#', "?"), params![e.id.as_str(), now.micros()])?;
                    }
                    Ok(())
                })
                .await?
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                tx.execute(
                    &SQL.replace('#', "$"),
                    &[&e.id.as_str(), &e.tenant.0, &e.url, &events, &e.description, &metadata, &status, &e.disabled_reason, &failing, &now.micros()],
                )
                .await?;
                if newly_disabled {
                    tx.execute(&DEAD_LETTER.replace('#', "$"), &[&e.id.as_str(), &now.micros()]).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(Some(record))
    }

    /// Deletes an endpoint with its deliveries and attempts; `false` when the tenant has no such endpoint.
    pub async fn delete_webhook_endpoint(&self, tenant: TenantId, id: WebhookEndpointId) -> Result<bool, StoreError> {
        const ENDPOINT: &str = "DELETE FROM webhook_endpoints WHERE id = #1 AND tenant_id = #2";
        const OWNED: [&str; 2] = ["DELETE FROM webhook_deliveries WHERE endpoint_id = #1", "DELETE FROM webhook_attempts WHERE endpoint_id = #1"];
        match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    if tx.execute(&ENDPOINT.replace('#', "?"), params![id.as_str(), tenant.0])? == 0 {
                        return Ok(false);
                    }
                    for sql in OWNED {
                        tx.execute(&sql.replace('#', "?"), [id.as_str()])?;
                    }
                    Ok(true)
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                if tx.execute(&ENDPOINT.replace('#', "$"), &[&id.as_str(), &tenant.0]).await? == 0 {
                    return Ok(false);
                }
                for sql in OWNED {
                    tx.execute(&sql.replace('#', "$"), &[&id.as_str()]).await?;
                }
                tx.commit().await?;
                Ok(true)
            }
        }
    }

    /// Replaces the endpoint's secret with `secret`; the current one keeps
    /// signing (beside the new) until `previous_expires_at`. `None` inside
    /// when the tenant has no such endpoint.
    pub async fn rotate_webhook_secret(
        &self,
        tenant: TenantId,
        id: WebhookEndpointId,
        secret: Vec<u8>,
        previous_expires_at: Timestamp,
        now: Timestamp,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<Written<bool>, StoreError> {
        const SQL: &str = "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = #3, secret = #4, updated_at = #5
                           WHERE id = #1 AND tenant_id = #2";
        let key = idempotency.as_ref().map(|r| (r.tenant, r.key.clone()));
        let result = match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    let n = tx.execute(&SQL.replace('#', "?"), params![id.as_str(), tenant.0, previous_expires_at.micros(), secret, now.micros()])?;
                    if n == 1 {
                        sqlite_idempotency(tx, idempotency.as_ref())?;
                    }
                    Ok(n == 1)
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                let n = tx.execute(&SQL.replace('#', "$"), &[&id.as_str(), &tenant.0, &previous_expires_at.micros(), &secret, &now.micros()]).await?;
                if n == 1 {
                    pg_idempotency(&tx, idempotency.as_ref()).await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            }
        };
        self.written(result, key).await
    }

    /// Makes `event` due again now for `endpoint` (or, with `None`, for
    /// every enabled endpoint of the tenant subscribed to its type), with a
    /// fresh retry schedule. Returns how many deliveries were queued; `render`
    /// makes the idempotency record from that count.
    pub async fn redeliver_event(
        &self,
        tenant: TenantId,
        event: EventId,
        event_type: String,
        endpoint: Option<WebhookEndpointId>,
        now: Timestamp,
        idempotency: Option<Box<dyn FnOnce(u64) -> IdempotencyRecord + Send>>,
    ) -> Result<Written<u64>, StoreError> {
        const ENDPOINTS: &str = "SELECT id, enabled_events FROM webhook_endpoints WHERE tenant_id = #1 AND status = 'enabled'";
        const UPSERT: &str = "INSERT INTO webhook_deliveries (endpoint_id, event_id, tenant_id, status, attempts, next_attempt_at, created_at, updated_at)
                              VALUES (#1, #2, #3, 'pending', 0, #4, #4, #4)
                              ON CONFLICT (endpoint_id, event_id) DO UPDATE SET status = 'pending', attempts = 0, next_attempt_at = #4, lease_owner = NULL, updated_at = #4";
        let only = endpoint.map(|e| e.as_str().to_owned());
        let pick = move |found: Vec<(String, String)>| -> Vec<String> {
            found
                .into_iter()
                .filter(|(id, enabled)| match &only {
                    Some(wanted) => id == wanted,
                    None => subscribed(enabled, &event_type),
                })
                .map(|(id, _)| id)
                .collect()
        };
        let key_of = |r: &IdempotencyRecord| (r.tenant, r.key.clone());
        let mut key = None;
        let result = match self {
            Store::Sqlite(s) => {
                let (tx_key_tx, tx_key_rx) = std::sync::mpsc::channel();
                let result = s
                    .write_pooled(move |tx| {
                        let found = tx.prepare_cached(&ENDPOINTS.replace('#', "?"))?.query_map([tenant.0], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<
                            Vec<(String, String)>,
                            _,
                        >>(
                        )?;
                        let targets = pick(found);
                        let mut stmt = tx.prepare_cached(&UPSERT.replace('#', "?"))?;
                        for id in &targets {
                            stmt.execute(params![id, event.as_str(), tenant.0, now.micros()])?;
                        }
                        let count = targets.len() as u64;
                        if let Some(render) = idempotency {
                            let record = render(count);
                            let _ = tx_key_tx.send(key_of(&record));
                            sqlite_idempotency(tx, Some(&record))?;
                        }
                        Ok(count)
                    })
                    .await;
                key = tx_key_rx.try_recv().ok();
                result
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                let mut found = Vec::new();
                for r in tx.query(&ENDPOINTS.replace('#', "$"), &[&tenant.0]).await? {
                    found.push((pg(&r, 0)?, pg(&r, 1)?));
                }
                let targets = pick(found);
                let stmt = tx.prepare_cached(&UPSERT.replace('#', "$")).await?;
                for id in &targets {
                    tx.execute(&stmt, &[id, &event.as_str(), &tenant.0, &now.micros()]).await?;
                }
                let count = targets.len() as u64;
                let mut outcome = Ok(count);
                if let Some(render) = idempotency {
                    let record = render(count);
                    key = Some(key_of(&record));
                    outcome = pg_idempotency(&tx, Some(&record)).await.map(|()| count);
                }
                match outcome {
                    Ok(count) => tx.commit().await.map(|()| count).map_err(StoreError::from),
                    Err(e) => Err(e),
                }
            }
        };
        self.written(result, key).await
    }

    /// Makes every delivery to `endpoint` created since `since` that was
    /// dead-lettered, or is waiting for a retry, due again now with a fresh
    /// schedule. Returns how many.
    pub async fn recover_deliveries(
        &self,
        tenant: TenantId,
        endpoint: WebhookEndpointId,
        since: Timestamp,
        now: Timestamp,
        idempotency: Option<Box<dyn FnOnce(u64) -> IdempotencyRecord + Send>>,
    ) -> Result<Written<u64>, StoreError> {
        const SQL: &str = "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = #4, lease_owner = NULL, updated_at = #4
                           WHERE endpoint_id = #1 AND tenant_id = #2 AND created_at >= #3 AND (status = 'failed' OR (status = 'pending' AND attempts > 0))";
        let mut key = None;
        let result = match self {
            Store::Sqlite(s) => {
                let (key_tx, key_rx) = std::sync::mpsc::channel();
                let result = s
                    .write_pooled(move |tx| {
                        let count = tx.execute(&SQL.replace('#', "?"), params![endpoint.as_str(), tenant.0, since.micros(), now.micros()])? as u64;
                        if let Some(render) = idempotency {
                            let record = render(count);
                            let _ = key_tx.send((record.tenant, record.key.clone()));
                            sqlite_idempotency(tx, Some(&record))?;
                        }
                        Ok(count)
                    })
                    .await;
                key = key_rx.try_recv().ok();
                result
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                let count = tx.execute(&SQL.replace('#', "$"), &[&endpoint.as_str(), &tenant.0, &since.micros(), &now.micros()]).await?;
                let mut outcome = Ok(count);
                if let Some(render) = idempotency {
                    let record = render(count);
                    key = Some((record.tenant, record.key.clone()));
                    outcome = pg_idempotency(&tx, Some(&record)).await.map(|()| count);
                }
                match outcome {
                    Ok(count) => tx.commit().await.map(|()| count).map_err(StoreError::from),
                    Err(e) => Err(e),
                }
            }
        };
        self.written(result, key).await
    }

    /// Claims up to `limit` due deliveries of enabled endpoints for `owner`
    /// until `lease_until`, oldest due first.
    pub async fn claim_deliveries(&self, owner: &str, now: Timestamp, lease_until: Timestamp, limit: i64) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let owner = owner.to_owned();
        let select = |lock: &str, p: &str| {
            format!(
                "SELECT d.endpoint_id, d.event_id FROM webhook_deliveries d WHERE d.status = 'pending' AND d.next_attempt_at <= {p}1
                 ORDER BY d.next_attempt_at LIMIT {p}2 {lock}"
            )
        };
        type Details = (String, String, i64, String, i64, String, Vec<u8>, i64, String, String, Vec<u8>, Option<Vec<u8>>, Option<i64>, Option<i64>);
        type Claimed = (Details, (String, i64));
        let rows: Vec<Claimed> = match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    let keys = tx
                        .prepare_cached(&select("", "?"))?
                        .query_map(params![now.micros(), limit], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                        .collect::<Result<Vec<_>, _>>()?;
                    if keys.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut take =
                        tx.prepare_cached("UPDATE webhook_deliveries SET lease_owner = ?1, next_attempt_at = ?2 WHERE endpoint_id = ?3 AND event_id = ?4")?;
                    // Exactly the rows this claim took (never ones an earlier claim of
                    // the same owner still holds, which a time-based lookup could
                    // return). The event's row is the one with the greatest id up to it:
                    // itself, or the run holding it (event_runs.rs), whose
                    // member this delivery then carries.
                    let mut read = tx.prepare_cached(&format!(
                        "SELECT {CLAIMED_COLUMNS}, e.id FROM webhook_deliveries d JOIN events e ON e.tenant_id = d.tenant_id
                           AND e.id = (SELECT x.id FROM events x WHERE x.tenant_id = d.tenant_id AND x.id <= d.event_id ORDER BY x.id DESC LIMIT 1)
                         JOIN webhook_endpoints w ON w.id = d.endpoint_id
                         JOIN tenants t ON t.id = d.tenant_id WHERE d.endpoint_id = ?1 AND d.event_id = ?2 AND w.status = 'enabled'"
                    ))?;
                    let mut out = Vec::with_capacity(keys.len());
                    for (endpoint, event) in &keys {
                        take.execute(params![owner, lease_until.micros(), endpoint, event])?;
                        let row: Option<(Details, (String, i64), String)> = read
                            .query_row(params![endpoint, event], |r| {
                                Ok((
                                    (
                                        r.get(0)?,
                                        r.get(1)?,
                                        r.get(2)?,
                                        r.get(3)?,
                                        r.get(4)?,
                                        r.get(5)?,
                                        r.get(6)?,
                                        r.get(7)?,
                                        r.get(8)?,
                                        r.get(9)?,
                                        r.get(10)?,
                                        r.get(11)?,
                                        r.get(12)?,
                                        r.get(13)?,
                                    ),
                                    (r.get(14)?, r.get(15)?),
                                    r.get::<_, String>(16)?,
                                ))
                            })
                            .optional()?;
                        let Some((mut claimed, (mut object_id, sequence), row_id)) = row else {
                            continue;
                        };
                        if crate::event_runs::is_run(&claimed.6) {
                            let run = crate::event_runs::Run::read(&row_id, &claimed.6)?;
                            let Some(n) = run.position(&EventId::from_trusted(event.clone())) else {
                                continue;
                            };
                            let member = run.member(n);
                            (claimed.6, object_id) = (member.body, member.object_id);
                        } else if &row_id != event {
                            continue;
                        }
                        out.push((claimed, (object_id, sequence)));
                    }
                    Ok(out)
                })
                .await?
            }
            Store::Postgres(p) => {
                // One statement, so one round trip: take the rows (locked
                // `SKIP LOCKED`, so concurrent claimers never take the same
                // ones) and read exactly those with their event and endpoint.
                let claim = format!(
                    "WITH taken AS (UPDATE webhook_deliveries SET lease_owner = $3, next_attempt_at = $4 WHERE (endpoint_id, event_id) IN ({})
                                    RETURNING endpoint_id, event_id, tenant_id, attempts)
                     SELECT {CLAIMED_COLUMNS} FROM taken d JOIN events e ON e.id = d.event_id JOIN webhook_endpoints w ON w.id = d.endpoint_id
                     JOIN tenants t ON t.id = d.tenant_id WHERE w.status = 'enabled' ORDER BY d.event_id",
                    select("FOR UPDATE SKIP LOCKED", "$")
                );
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&claim).await?;
                let mut out = Vec::new();
                for r in client.query(&stmt, &[&now.micros(), &limit, &owner, &lease_until.micros()]).await? {
                    out.push((
                        (
                            pg(&r, 0)?,
                            pg(&r, 1)?,
                            pg(&r, 2)?,
                            pg(&r, 3)?,
                            pg(&r, 4)?,
                            pg(&r, 5)?,
                            pg(&r, 6)?,
                            pg(&r, 7)?,
                            pg(&r, 8)?,
                            pg(&r, 9)?,
                            pg(&r, 10)?,
                            pg(&r, 11)?,
                            pg(&r, 12)?,
                            pg(&r, 13)?,
                        ),
                        (pg(&r, 14)?, pg(&r, 15)?),
                    ));
                }
                out
            }
        };
        rows.into_iter()
            .map(|(r, (event_object_id, event_sequence))| {
                Ok(ClaimedDelivery {
                    endpoint_id: WebhookEndpointId::from_trusted(r.0),
                    event_id: EventId::from_trusted(r.1),
                    tenant: TenantId(r.2),
                    environment: Environment::parse(&r.3).ok_or_else(|| StoreError::Corrupt(format!("environment {:?}", r.3)))?,
                    attempts: r.4,
                    event_type: r.5,
                    event_body: r.6,
                    event_created_at: Timestamp::from_micros(r.7),
                    event_object_id,
                    event_sequence,
                    url: r.8,
                    api_version: r.9,
                    secret: r.10,
                    previous_secret: r.11,
                    previous_secret_expires_at: r.12.map(Timestamp::from_micros),
                    failing_since: r.13.map(Timestamp::from_micros),
                })
            })
            .collect()
    }

    /// Records attempts and what follows from each, all in one transaction
    /// (one commit for many attempts: recording, not sending, would
    /// otherwise bound the delivery rate). An attempt whose delivery `owner`
    /// no longer holds (its lease lapsed and another worker took it) is
    /// skipped. Returns how many were recorded.
    pub async fn finish_deliveries(&self, owner: &str, finished: Vec<FinishedDelivery>) -> Result<usize, StoreError> {
        const DELIVERY: &str = "UPDATE webhook_deliveries SET status = #4, attempts = attempts + 1, next_attempt_at = #5, lease_owner = NULL, updated_at = #6
                                WHERE endpoint_id = #1 AND event_id = #2 AND lease_owner = #3 AND status = 'pending'";
        const ATTEMPT: &str = "INSERT INTO webhook_attempts (id, endpoint_id, event_id, tenant_id, attempt, status, response_status, response_body, error, latency_ms, created_at)
                               VALUES (#1, #2, #3, #4, #5, #6, #7, #8, #9, #10, #11)";
        const HEALTHY: &str = "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = #1 AND failing_since IS NOT NULL";
        const FAILING: &str = "UPDATE webhook_endpoints SET failing_since = #2 WHERE id = #1 AND failing_since IS NULL";
        const DISABLE: &str = "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = #2, updated_at = #3 WHERE id = #1 AND status = 'enabled'";
        const DEAD_LETTER: &str =
            "UPDATE webhook_deliveries SET status = 'failed', lease_owner = NULL, updated_at = #2 WHERE endpoint_id = #1 AND status = 'pending'";
        if finished.is_empty() {
            return Ok(0);
        }
        let owner = owner.to_owned();
        match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    let q = |sql: &str| sql.replace('#', "?");
                    let mut recorded = 0;
                    let mut delivery = tx.prepare_cached(&q(DELIVERY))?;
                    let mut attempt = tx.prepare_cached(&q(ATTEMPT))?;
                    let mut healthy = tx.prepare_cached(&q(HEALTHY))?;
                    let mut failing = tx.prepare_cached(&q(FAILING))?;
                    for f in &finished {
                        let (now, status, next_at, attempt_status) = columns(f);
                        let a = &f.attempt;
                        if delivery.execute(params![a.endpoint_id.as_str(), a.event_id.as_str(), owner, status, next_at.micros(), now.micros()])? != 1 {
                            continue;
                        }
                        recorded += 1;
                        attempt.execute(params![
                            a.id.as_str(),
                            a.endpoint_id.as_str(),
                            a.event_id.as_str(),
                            a.tenant.0,
                            a.attempt,
                            attempt_status,
                            a.response_status,
                            a.response_body,
                            a.error,
                            a.latency_ms,
                            a.created_at.micros()
                        ])?;
                        match &f.health {
                            EndpointHealth::Healthy => {
                                healthy.execute([a.endpoint_id.as_str()])?;
                            }
                            EndpointHealth::Failing => {
                                failing.execute(params![a.endpoint_id.as_str(), now.micros()])?;
                            }
                            EndpointHealth::Disable { reason, event } => {
                                if tx.execute(&q(DISABLE), params![a.endpoint_id.as_str(), reason, now.micros()])? == 1 {
                                    tx.execute(&q(DEAD_LETTER), params![a.endpoint_id.as_str(), now.micros()])?;
                                    sqlite_write_events(tx, std::slice::from_ref(event), now)?;
                                }
                            }
                        }
                    }
                    Ok(recorded)
                })
                .await
            }
            Store::Postgres(p) if is_plain_batch(&finished) => pg_finish_plain(p, &owner, &finished).await,
            Store::Postgres(p) => {
                // A batch that disables an endpoint: attempt by attempt, as
                // the disabling dead-letters what the endpoint still owed.
                let q = |sql: &str| sql.replace('#', "$");
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                let (delivery, attempt) = (tx.prepare_cached(&q(DELIVERY)).await?, tx.prepare_cached(&q(ATTEMPT)).await?);
                let (healthy, failing) = (tx.prepare_cached(&q(HEALTHY)).await?, tx.prepare_cached(&q(FAILING)).await?);
                let mut recorded = 0;
                for f in &finished {
                    let (now, status, next_at, attempt_status) = columns(f);
                    let a = &f.attempt;
                    if tx.execute(&delivery, &[&a.endpoint_id.as_str(), &a.event_id.as_str(), &owner, &status, &next_at.micros(), &now.micros()]).await? != 1 {
                        continue;
                    }
                    recorded += 1;
                    tx.execute(
                        &attempt,
                        &[
                            &a.id.as_str(),
                            &a.endpoint_id.as_str(),
                            &a.event_id.as_str(),
                            &a.tenant.0,
                            &a.attempt,
                            &attempt_status,
                            &a.response_status,
                            &a.response_body,
                            &a.error,
                            &a.latency_ms,
                            &a.created_at.micros(),
                        ],
                    )
                    .await?;
                    match &f.health {
                        EndpointHealth::Healthy => {
                            tx.execute(&healthy, &[&a.endpoint_id.as_str()]).await?;
                        }
                        EndpointHealth::Failing => {
                            tx.execute(&failing, &[&a.endpoint_id.as_str(), &now.micros()]).await?;
                        }
                        EndpointHealth::Disable { reason, event } => {
                            if tx.execute(&q(DISABLE), &[&a.endpoint_id.as_str(), reason, &now.micros()]).await? == 1 {
                                tx.execute(&q(DEAD_LETTER), &[&a.endpoint_id.as_str(), &now.micros()]).await?;
                                pg_write_events(&tx, std::slice::from_ref(event), now).await?;
                            }
                        }
                    }
                }
                tx.commit().await?;
                Ok(recorded)
            }
        }
    }

    /// A page of the attempts made to deliver to `endpoint`, newest first.
    pub async fn list_webhook_attempts(&self, tenant: TenantId, endpoint: WebhookEndpointId, page: PageRequest) -> Result<Page<AttemptRecord>, StoreError> {
        const COLUMNS: &str = "id, endpoint_id, event_id, tenant_id, attempt, status, response_status, response_body, error, latency_ms, created_at";
        type Row = (String, String, String, i64, i64, String, Option<i64>, Option<String>, Option<String>, i64, i64);
        let (descending, bound) = page.cursor.keyset_start(false);
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let limit = i64::from(page.limit) + 1;
        let sql = |p: &str| {
            format!("SELECT {COLUMNS} FROM webhook_attempts WHERE endpoint_id = {p}1 AND tenant_id = {p}2 AND id {cmp} {p}3 ORDER BY id {order} LIMIT {p}4")
        };
        let rows: Vec<Row> = match self {
            Store::Sqlite(s) => {
                let sql = sql("?");
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params![endpoint.as_str(), tenant.0, bound, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?))
                    })?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let mut out = Vec::new();
                for r in client.query(&sql("$"), &[&endpoint.as_str(), &tenant.0, &bound, &limit]).await? {
                    out.push((
                        pg(&r, 0)?,
                        pg(&r, 1)?,
                        pg(&r, 2)?,
                        pg(&r, 3)?,
                        pg(&r, 4)?,
                        pg(&r, 5)?,
                        pg(&r, 6)?,
                        pg(&r, 7)?,
                        pg(&r, 8)?,
                        pg(&r, 9)?,
                        pg(&r, 10)?,
                    ));
                }
                out
            }
        };
        let records = rows
            .into_iter()
            .map(|r| AttemptRecord {
                id: WebhookAttemptId::from_trusted(r.0),
                endpoint_id: WebhookEndpointId::from_trusted(r.1),
                event_id: EventId::from_trusted(r.2),
                tenant: TenantId(r.3),
                attempt: r.4,
                succeeded: r.5 == "succeeded",
                response_status: r.6,
                response_body: r.7,
                error: r.8,
                latency_ms: r.9,
                created_at: Timestamp::from_micros(r.10),
            })
            .collect();
        Ok(Page::from_rows(records, &page))
    }

    /// On SQLite, one server owns the file: at its start, whatever a
    /// previous process held (the projector's lease, claimed deliveries) was
    /// held by a process that is gone, so it is released at once instead of
    /// when the leases lapse. On PostgreSQL another server may be alive and
    /// holding them: leases there only lapse.
    pub async fn release_leases_of_dead_servers(&self, now: Timestamp) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    tx.execute("UPDATE event_projection SET lease_owner = NULL, lease_expires_at = NULL", [])?;
                    tx.execute(
                        "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = ?1 WHERE status = 'pending' AND lease_owner IS NOT NULL",
                        [now.micros()],
                    )?;
                    Ok(())
                })
                .await
            }
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Deliveries due at `now` that no worker holds: the backlog gauge. One
    /// COUNT over the `webhook_deliveries_due` index (claimed deliveries are
    /// due only when their lease ends, so they are not counted). The worker
    /// runs it every few seconds, never per request.
    pub async fn webhook_backlog(&self, now: Timestamp) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    Ok(c.prepare_cached("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?1")?
                        .query_row([now.micros()], |r| r.get(0))?)
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                pg(&client.query_one("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1", &[&now.micros()]).await?, 0)
            }
        }
    }

    /// How many deliveries are `pending`, `succeeded` and `failed` for the
    /// tenant (tests and operators).
    pub async fn delivery_counts(&self, tenant: TenantId) -> Result<(i64, i64, i64), StoreError> {
        const SQL: &str =
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END), 0),
                                  COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) FROM webhook_deliveries WHERE tenant_id = ";
        // SQLite sums to an integer; PostgreSQL's SUM of integers is numeric, so it counts per status instead.
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| Ok(c.prepare_cached(&format!("{SQL}?1"))?.query_row([tenant.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)).await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let mut counts = [0i64; 3];
                for (i, status) in ["pending", "succeeded", "failed"].iter().enumerate() {
                    counts[i] =
                        pg(&client.query_one("SELECT COUNT(*) FROM webhook_deliveries WHERE tenant_id = $1 AND status = $2", &[&tenant.0, status]).await?, 0)?;
                }
                Ok((counts[0], counts[1], counts[2]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folds a batch's healths for one endpoint, as `pg_finish_plain` does.
    fn after(healths: &[(EndpointHealth, i64)]) -> Option<HealthAfter> {
        healths.iter().fold(None, |state, (health, at)| HealthAfter::then(state, health, Timestamp::from_micros(*at)))
    }

    #[test]
    fn a_batch_leaves_an_endpoints_health_as_its_attempts_one_by_one_would() {
        use EndpointHealth::{Failing, Healthy};
        assert_eq!(after(&[]), None, "no attempt: nothing to write");
        assert_eq!(after(&[(Healthy, 1), (Healthy, 2)]), Some(HealthAfter::Healthy));
        // Only failures: a run already going on keeps its start.
        assert_eq!(after(&[(Failing, 1), (Failing, 2)]), Some(HealthAfter::FailingUnlessAlready(Timestamp::from_micros(1))));
        // A success ends any run; the next failure starts a new one, whatever was stored.
        assert_eq!(after(&[(Failing, 1), (Healthy, 2), (Failing, 3), (Failing, 4)]), Some(HealthAfter::FailingSince(Timestamp::from_micros(3))));
        assert_eq!(after(&[(Failing, 1), (Healthy, 2)]), Some(HealthAfter::Healthy));
    }

    #[test]
    fn batches_that_disable_or_name_a_delivery_twice_are_recorded_one_by_one() {
        let finished = |endpoint: &str, event: &str, health: EndpointHealth| FinishedDelivery {
            attempt: AttemptRecord {
                id: WebhookAttemptId::from_trusted(format!("wha_{endpoint}{event}")),
                endpoint_id: WebhookEndpointId::from_trusted(endpoint.to_owned()),
                event_id: EventId::from_trusted(event.to_owned()),
                tenant: TenantId(1),
                attempt: 1,
                succeeded: false,
                response_status: Some(500),
                response_body: None,
                error: None,
                latency_ms: 1,
                created_at: Timestamp::from_micros(1),
            },
            next: DeliveryNext::RetryAt(Timestamp::from_micros(2)),
            health,
        };
        let (a, b) = (finished("we_a", "evt_1", EndpointHealth::Failing), finished("we_a", "evt_2", EndpointHealth::Failing));
        assert!(is_plain_batch(&[a.clone(), b.clone()]));
        assert!(!is_plain_batch(&[a.clone(), b, a.clone()]), "the same delivery twice");
        let event = NewEvent {
            id: EventId::from_trusted(String::from("evt_3")),
            tenant: TenantId(1),
            kind: String::from("webhook_endpoint.disabled"),
            object_id: String::from("we_a"),
            sequence: 1,
            log_seq: None,
            created_at: Timestamp::from_micros(1),
            body: Vec::new(),
        };
        assert!(!is_plain_batch(&[a, finished("we_a", "evt_3", EndpointHealth::Disable { reason: "gone", event: Box::new(event) })]));
    }
}
