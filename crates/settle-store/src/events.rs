//! Events: what integrators learn happened, projected from the ledger log.
//!
//! The hash-chained `ledger_log` is the outbox. Each command's record is
//! written by the engine in the same database transaction as its effect, so
//! nothing the ledger did can be missing from it. The projector (one server
//! at a time, under the lease in `event_projection`) reads the records after
//! its cursor, turns them into `events` rows, and advances the cursor in the
//! same transaction as it writes them ([`Store::append_events`]): a crash
//! anywhere loses nothing and writes nothing twice. Each event also becomes
//! one `webhook_deliveries` row per subscribed endpoint, in that transaction.
//!
//! Event ids come from the log position and the change's time
//! ([`EventId::for_log`]), so they sort like `created_at` and a time filter
//! is an id range on the same indexes as every other filter.

use crate::error::StoreError;
use crate::event_runs::{self, RUN_KIND};
use crate::records::AccountRecord;
use crate::records::{Page, PageRequest};
use crate::store::Store;
use crate::webhooks::subscribed;
use rusqlite::{OptionalExtension, params};
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, EventId, TransactionId};
use settle_core::ledger::Transaction;
use settle_core::tenancy::TenantId;
use std::collections::{HashMap, HashSet};

/// One ledger log record, as the projector reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    pub seq: i64,
    /// A JSON array of the engine's log fragments.
    pub content: Vec<u8>,
    pub created_at: Timestamp,
}

/// An event to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub tenant: TenantId,
    pub kind: String,
    pub object_id: String,
    pub sequence: i64,
    /// The ledger log record it comes from; `None` for events about things
    /// outside the ledger (a webhook endpoint disabled).
    pub log_seq: Option<i64>,
    pub created_at: Timestamp,
    /// The event as JSON, in the newest API version.
    pub body: Vec<u8>,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub id: EventId,
    pub tenant: TenantId,
    pub kind: String,
    pub object_id: String,
    pub sequence: i64,
    pub created_at: Timestamp,
    pub body: Vec<u8>,
}

/// What `GET /v1/events` filters on; every filter is a keyset range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub object_id: Option<String>,
    pub created_gte: Option<Timestamp>,
    pub created_lt: Option<Timestamp>,
}

const COLUMNS: &str = "id, tenant_id, type, object_id, sequence, created_at, body";

type EventRow = (String, i64, String, String, i64, i64, Vec<u8>);

fn into_record(row: EventRow) -> EventRecord {
    let (id, tenant, kind, object_id, sequence, created_at, body) = row;
    EventRecord { id: EventId::from_trusted(id), tenant: TenantId(tenant), kind, object_id, sequence, created_at: Timestamp::from_micros(created_at), body }
}

fn sqlite_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

/// Member `n` of `run`, stored in row `row`, as a row of its own.
fn member_row(row: &EventRow, run: &event_runs::Run<'_>, n: usize) -> EventRow {
    let m = run.member(n);
    (m.id.as_str().to_owned(), row.1, row.2.clone(), m.object_id, row.4, row.5, m.body)
}

/// The first `limit` events that `keep` wants (by id and object id) of
/// `rows`, given in a page's order without repeats, each row one event or a
/// run of them ([`event_runs`]). Rows are disjoint id ranges, so a run's
/// members are built only as far as the page reaches, and rows are read
/// only until it is full (a run's row holds up to a thousand events).
fn page_of(
    rows: impl IntoIterator<Item = Result<EventRow, StoreError>>,
    descending: bool,
    limit: usize,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<Vec<EventRow>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        if out.len() >= limit {
            break;
        }
        let row = row?;
        if !event_runs::is_run(&row.6) {
            if keep(&row.0, &row.3) {
                out.push(row);
            }
            continue;
        }
        let run = event_runs::Run::read(&row.0, &row.6)?;
        for n in run.in_order(descending) {
            if out.len() >= limit {
                break;
            }
            if keep(run.id(n).as_str(), run.object_id(n)) {
                out.push(member_row(&row, &run, n));
            }
        }
    }
    Ok(out)
}

/// The tenant's event `id`, stored alone or in a run: the row with the
/// greatest id up to it (a run's row has its first member's id).
fn sqlite_event_at(c: &rusqlite::Connection, tenant: TenantId, id: &str) -> Result<Option<EventRow>, StoreError> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE tenant_id = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1"))?;
    let Some(row) = stmt.query_row(params![tenant.0, id], sqlite_event).optional()? else {
        return Ok(None);
    };
    if !event_runs::is_run(&row.6) {
        return Ok((row.0 == id).then_some(row));
    }
    let run = event_runs::Run::read(&row.0, &row.6)?;
    Ok(run.position(&EventId::from_trusted(id.to_owned())).map(|n| member_row(&row, &run, n)))
}

/// The created event of transaction `object` when a run holds it (so no
/// row names the transaction in `object_id`): among the tenant's runs of
/// the transaction's `created_at`, which is its log record's time.
/// Answers the run's row id and the event.
pub(crate) fn sqlite_created_in_run(c: &rusqlite::Connection, tenant: TenantId, object: &str) -> Result<Option<(String, EventRow)>, StoreError> {
    if TransactionId::parse(object).is_none() {
        return Ok(None);
    }
    let mut created = c.prepare_cached("SELECT created_at FROM transactions WHERE id = ?1 AND tenant_id = ?2")?;
    let Some(at) = created.query_row(params![object, tenant.0], |r| r.get::<_, i64>(0)).optional()? else {
        return Ok(None);
    };
    let (from, to) = (EventId::floor_of(Timestamp::from_micros(at)), EventId::floor_of(Timestamp::from_micros(at.saturating_add(1000))));
    let mut runs = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE tenant_id = ?1 AND object_id = '{}' AND id >= ?2 AND id < ?3 AND created_at = ?4 AND type = '{RUN_KIND}'",
        event_runs::RUN_OBJECT
    ))?;
    for row in runs.query_map(params![tenant.0, from, to, at], sqlite_event)? {
        let row = row?;
        let run = row.0.clone();
        let found = event_runs::Run::read(&row.0, &row.6)?;
        if let Some(n) = found.position_of_object(object) {
            return Ok(Some((run, member_row(&row, &found, n))));
        }
    }
    Ok(None)
}

fn pg_event(r: &tokio_postgres::Row) -> Result<EventRow, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Corrupt(format!("events row: {e}"));
    Ok((
        r.try_get(0).map_err(get)?,
        r.try_get(1).map_err(get)?,
        r.try_get(2).map_err(get)?,
        r.try_get(3).map_err(get)?,
        r.try_get(4).map_err(get)?,
        r.try_get(5).map_err(get)?,
        r.try_get(6).map_err(get)?,
    ))
}

/// A bound of a dynamically built query.
#[derive(Clone, Debug)]
enum Bound {
    Int(i64),
    Text(String),
}

/// A `WHERE` clause built from optional filters, with placeholders in the
/// style of each driver (`?N` for SQLite, `$N` for PostgreSQL).
struct Query {
    clauses: Vec<String>,
    values: Vec<Bound>,
    postgres: bool,
}

impl Query {
    fn new(postgres: bool) -> Query {
        Query { clauses: Vec::new(), values: Vec::new(), postgres }
    }

    fn push(&mut self, clause: &str, value: Bound) {
        self.values.push(value);
        let n = self.values.len();
        let placeholder = if self.postgres { format!("${n}") } else { format!("?{n}") };
        self.clauses.push(clause.replace('#', &placeholder));
    }

    fn sqlite_values(&self) -> Vec<Box<dyn rusqlite::ToSql>> {
        self.values
            .iter()
            .map(|v| -> Box<dyn rusqlite::ToSql> {
                match v {
                    Bound::Int(i) => Box::new(*i),
                    Bound::Text(t) => Box::new(t.clone()),
                }
            })
            .collect()
    }

    fn pg_values(&self) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
        self.values
            .iter()
            .map(|v| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                match v {
                    Bound::Int(i) => Box::new(*i),
                    Bound::Text(t) => Box::new(t.clone()),
                }
            })
            .collect()
    }
}

impl Store {
    /// Ledger log records after `after`, oldest first, at most `limit`.
    pub async fn logged_changes(&self, after: i64, limit: i64) -> Result<Vec<LoggedChange>, StoreError> {
        const SQL: &str = "SELECT seq, content, created_at FROM ledger_log WHERE seq > ";
        let rows: Vec<(i64, Vec<u8>, i64)> = match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    // The limit in the SQL, not bound: SQLite plans with a bound
                    // LIMIT's value and so prepares the statement again at every
                    // new binding (see `due_expiries` in sqlite.rs).
                    let mut stmt = c.prepare_cached(&format!("{SQL}?1 ORDER BY seq LIMIT {limit}"))?;
                    let rows = stmt.query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&format!("{SQL}$1 ORDER BY seq LIMIT $2")).await?;
                let mut out = Vec::new();
                for r in client.query(&stmt, &[&after, &limit]).await? {
                    out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
                }
                out
            }
        };
        Ok(rows
            .into_iter()
            .map(|(seq, content, at)| LoggedChange { seq, content: crate::log_content::readable(seq, content), created_at: Timestamp::from_micros(at) })
            .collect())
    }

    /// The newest ledger log sequence number (0 when the log is empty).
    pub async fn log_head_seq(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(seq), 0) FROM ledger_log";
        match self {
            Store::Sqlite(s) => s.read(|c| Ok(c.prepare_cached(SQL)?.query_row([], |r| r.get(0))?)).await,
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                Ok(client.query_one(SQL, &[]).await?.try_get(0)?)
            }
        }
    }

    /// Takes (or renews) the projector's lease for `owner` until
    /// `lease_until`, and returns the cursor: the last log record already
    /// turned into events. `None` while another server holds the lease.
    pub async fn claim_event_projection(&self, owner: &str, now: Timestamp, lease_until: Timestamp) -> Result<Option<i64>, StoreError> {
        const SQL: &str = "UPDATE event_projection SET lease_owner = #1, lease_expires_at = #2
                           WHERE name = 'events' AND (lease_owner IS NULL OR lease_owner = #1 OR lease_expires_at < #3) RETURNING log_seq";
        let owner = owner.to_owned();
        match self {
            Store::Sqlite(s) => {
                s.write_pooled(move |tx| {
                    Ok(tx.prepare_cached(&SQL.replace('#', "?"))?.query_row(params![owner, lease_until.micros(), now.micros()], |r| r.get(0)).optional()?)
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&SQL.replace('#', "$")).await?;
                Ok(client.query_opt(&stmt, &[&owner, &lease_until.micros(), &now.micros()]).await?.map(|r| r.try_get(0)).transpose()?)
            }
        }
    }

    /// Gives the projector's lease back (on shutdown), so another server takes over at once.
    pub async fn release_event_projection(&self, owner: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE event_projection SET lease_owner = NULL, lease_expires_at = NULL WHERE name = 'events' AND lease_owner = ";
        let owner = owner.to_owned();
        match self {
            Store::Sqlite(s) => s.write(move |tx| Ok(tx.execute(&format!("{SQL}?1"), [owner]).map(|_| ())?)).await,
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                client.execute(&format!("{SQL}$1"), &[&owner]).await?;
                Ok(())
            }
        }
    }

    /// Transactions as stored now, with every entry ever written (the
    /// projector rewinds them to the state of each change).
    pub async fn transactions_for_events(&self, ids: Vec<String>) -> Result<Vec<Transaction>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut out = Vec::with_capacity(ids.len());
                    for id in &ids {
                        if let Some(t) = crate::sqlite::transaction_by_id(c, id)? {
                            out.push(t);
                        }
                    }
                    Ok(out)
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                crate::postgres::read_transactions(&client, &refs).await
            }
        }
    }

    /// The tenants' accounts `ids` as stored now, with their customer; a
    /// missing one (or another tenant's) is left out. One read for all of
    /// them: a burst of opened accounts would otherwise cost the projector
    /// a read (and on PostgreSQL several round trips) each.
    pub async fn accounts_for_events(&self, ids: Vec<(TenantId, AccountId)>) -> Result<Vec<AccountRecord>, StoreError> {
        let wanted: Vec<String> = ids.iter().map(|(_, id)| id.as_str().to_owned()).collect();
        let stored = match self {
            Store::Sqlite(s) => s.accounts_by_ids(wanted).await?,
            Store::Postgres(p) => p.accounts_by_ids(&wanted.iter().map(String::as_str).collect::<Vec<_>>()).await?,
        };
        let theirs: std::collections::HashSet<(i64, &str)> = ids.iter().map(|(tenant, id)| (tenant.0, id.as_str())).collect();
        let mut found: Vec<AccountRecord> = stored.into_iter().filter(|r| theirs.contains(&(r.state.tenant.0, r.state.id.as_str()))).collect();
        let mut tenants: Vec<TenantId> = found.iter().map(|r| r.state.tenant).collect();
        tenants.sort_unstable_by_key(|t| t.0);
        tenants.dedup();
        let mut out = Vec::with_capacity(found.len());
        for tenant in tenants {
            let (mut theirs, rest): (Vec<AccountRecord>, Vec<AccountRecord>) = found.into_iter().partition(|r| r.state.tenant == tenant);
            self.with_customers(tenant, &mut theirs).await?;
            out.extend(theirs);
            found = rest;
        }
        Ok(out)
    }

    /// Tenants with at least one enabled webhook endpoint. The projector
    /// renders their transaction events at once (a delivery reads them right
    /// away); the others' are rendered when read.
    pub async fn tenants_with_endpoints(&self) -> Result<HashSet<TenantId>, StoreError> {
        const SQL: &str = "SELECT DISTINCT tenant_id FROM webhook_endpoints WHERE status = 'enabled'";
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(SQL)?;
                    let tenants = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
                    Ok(tenants.into_iter().map(TenantId).collect())
                })
                .await
            }
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(SQL).await?;
                let mut out = HashSet::new();
                for r in client.query(&stmt, &[]).await? {
                    out.insert(TenantId(r.try_get::<_, i64>(0)?));
                }
                Ok(out)
            }
        }
    }

    /// The highest event `sequence` stored for each (tenant, object).
    pub async fn object_sequences(&self, objects: Vec<(TenantId, String)>) -> Result<HashMap<String, i64>, StoreError> {
        const SQL: &str = "SELECT MAX(sequence) FROM events WHERE tenant_id = #1 AND object_id = #2";
        if objects.is_empty() {
            return Ok(HashMap::new());
        }
        match self {
            Store::Sqlite(s) => {
                s.read(move |c| {
                    let mut stmt = c.prepare_cached(&SQL.replace('#', "?"))?;
                    let mut out = HashMap::new();
                    for (tenant, object) in objects {
                        let mut max: Option<i64> = stmt.query_row(params![tenant.0, object], |r| r.get(0))?;
                        if max.is_none() {
                            max = sqlite_created_in_run(c, tenant, &object)?.map(|(_, r)| r.4);
                        }
                        out.insert(object, max.unwrap_or(0));
                    }
                    Ok(out)
                })
                .await
            }
            Store::Postgres(p) => {
                // One statement for all of them (a round trip each was the
                // projector's cost per updated object).
                const PG: &str = "SELECT o.object_id, (SELECT MAX(sequence) FROM events e WHERE e.tenant_id = o.tenant_id AND e.object_id = o.object_id)
                                  FROM UNNEST($1::bigint[], $2::text[]) AS o(tenant_id, object_id)";
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(PG).await?;
                let tenants: Vec<i64> = objects.iter().map(|(t, _)| t.0).collect();
                let ids: Vec<&str> = objects.iter().map(|(_, o)| o.as_str()).collect();
                let mut out = HashMap::new();
                for r in client.query(&stmt, &[&tenants, &ids]).await? {
                    let max: Option<i64> = r.try_get(1)?;
                    out.insert(r.try_get(0)?, max.unwrap_or(0));
                }
                Ok(out)
            }
        }
    }

    /// Stores `events` projected from log records `from + 1 ..= to`, fans
    /// each out to the endpoints subscribed to it, moves the cursor to `to`
    /// and renews the lease until `lease_until`, all in one transaction.
    /// `false` (nothing written) when `owner` no longer holds the lease or
    /// the cursor moved meanwhile. On SQLite the round's commit is synced by
    /// the next synced commit (the engine's, or the delivery worker's claim,
    /// which comes before any send): a power cut may lose the round, never
    /// the ledger change, and the projector then projects it again.
    pub async fn append_events(
        &self,
        owner: &str,
        from: i64,
        to: i64,
        lease_until: Timestamp,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        const ADVANCE: &str = "UPDATE event_projection SET log_seq = #1, lease_expires_at = #4 WHERE name = 'events' AND log_seq = #2 AND lease_owner = #3";
        let owner = owner.to_owned();
        match self {
            Store::Sqlite(s) => {
                s.write_pooled_as(crate::sqlite::CommitSync::Deferred, move |tx| {
                    if tx.execute(&ADVANCE.replace('#', "?"), params![to, from, owner, lease_until.micros()])? != 1 {
                        return Ok(false);
                    }
                    sqlite_write_events(tx, &events, now)?;
                    Ok(true)
                })
                .await
            }
            Store::Postgres(p) => {
                let mut client = p.pool().get().await?;
                let tx = client.transaction().await?;
                if tx.execute(&ADVANCE.replace('#', "$"), &[&to, &from, &owner, &lease_until.micros()]).await? != 1 {
                    return Ok(false);
                }
                pg_write_events(&tx, &events, now).await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    }

    /// Whether [`Store::listen_events_stored`] hears anything: on
    /// PostgreSQL, where several servers share the database; SQLite has one
    /// server per file, which wakes its worker in process.
    pub fn announces_stored_events(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Calls `wake` each time any server (this one included) commits new
    /// events, so that delivery workers act at once rather than at their
    /// next poll. PostgreSQL only (`LISTEN` on a connection of its own,
    /// outside the pool); on SQLite it returns at once.
    ///
    /// It returns when the connection ends; the caller listens again. A
    /// notification is only a hint: a worker that misses one (no listener
    /// yet, a broken connection, a pooler that drops `LISTEN`) still finds
    /// the deliveries at its next poll.
    pub async fn listen_events_stored(&self, wake: impl Fn() + Send) -> Result<(), StoreError> {
        let Store::Postgres(p) = self else {
            return Ok(());
        };
        let (client, mut connection) = p.config().connect(tokio_postgres::NoTls).await?;
        // Notifications arrive through the connection, which must be polled
        // for the `LISTEN` itself to complete.
        let driver = async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake(),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(StoreError::from(error)),
                    None => return Ok(()),
                }
            }
        };
        tokio::pin!(driver);
        let listen = format!("LISTEN {EVENTS_STORED_CHANNEL}");
        tokio::select! {
            ended = &mut driver => return ended,
            listening = client.batch_execute(&listen) => listening?,
        }
        // Only a listener from here on; `client` keeps the connection open.
        let ended = driver.await;
        drop(client);
        ended
    }

    /// The tenant's event `id`.
    pub async fn get_event(&self, tenant: TenantId, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        let row = match self {
            Store::Sqlite(s) => s.read(move |c| sqlite_event_at(c, tenant, id.as_str())).await?,
            Store::Postgres(p) => {
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = $1 AND tenant_id = $2")).await?;
                client.query_opt(&stmt, &[&id.as_str(), &tenant.0]).await?.as_ref().map(pg_event).transpose()?
            }
        };
        Ok(row.map(into_record))
    }

    /// A page of the tenant's events, newest first. Each filter narrows an
    /// id range of one index: `(tenant_id, id)`, `(tenant_id, type, id)` or
    /// `(tenant_id, object_id, id)`; a time bound is an id bound too.
    pub async fn list_events(&self, tenant: TenantId, filter: EventFilter, page: PageRequest) -> Result<Page<EventRecord>, StoreError> {
        let (descending, bound) = page.cursor.keyset_start(false);
        let limit = i64::from(page.limit) + 1;
        let build = |postgres: bool, cmp: &str, order: &str, limit: i64| {
            let mut q = Query::new(postgres);
            q.push("tenant_id = #", Bound::Int(tenant.0));
            if let Some(kind) = &filter.kind {
                q.push("type = #", Bound::Text(kind.clone()));
            }
            if let Some(object) = &filter.object_id {
                q.push("object_id = #", Bound::Text(object.clone()));
            }
            q.push(&format!("id {cmp} #"), Bound::Text(bound.clone()));
            if let Some(at) = filter.created_gte {
                q.push("id >= #", Bound::Text(EventId::floor_of(at)));
                q.push("created_at >= #", Bound::Int(at.micros()));
            }
            if let Some(at) = filter.created_lt {
                // Ids of the millisecond after `at` and later are out; the
                // exact bound is checked on the rows of that millisecond.
                q.push("id < #", Bound::Text(EventId::floor_of(Timestamp::from_micros(at.micros().saturating_add(1000)))));
                q.push("created_at < #", Bound::Int(at.micros()));
            }
            q.push(&format!("1 = 1 ORDER BY id {order} LIMIT #"), Bound::Int(limit));
            let sql = format!("SELECT {COLUMNS} FROM events WHERE {}", q.clauses.join(" AND "));
            (sql, q)
        };
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        let rows = match self {
            Store::Sqlite(s) => {
                let runs_match = filter.kind.as_deref().is_none_or(|k| k == RUN_KIND);
                let main = build(false, cmp, order, limit);
                // A run whose row is at or before an ascending bound may hold events after it.
                let straddle = (!descending && filter.object_id.is_none() && runs_match).then(|| build(false, "<=", "DESC", 1));
                let object = filter.object_id.clone();
                let in_run = object.clone().filter(|_| runs_match);
                let within = move |at: i64| filter.created_gte.is_none_or(|t| at >= t.micros()) && filter.created_lt.is_none_or(|t| at < t.micros());
                s.read(move |c| {
                    let past = |id: &str| if descending { id < bound.as_str() } else { id > bound.as_str() };
                    // (A run's row matches `object_id = ''`; its members never do.)
                    let wanted = |of: &str| object.as_deref().is_none_or(|o| o == of);
                    let keep = |id: &str, of: &str| past(id) && wanted(of);
                    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                    let mut first = Vec::new();
                    if let Some((sql, q)) = &straddle {
                        let values = q.sqlite_values();
                        first
                            .extend(c.prepare_cached(sql)?.query_map(rusqlite::params_from_iter(values.iter()), sqlite_event)?.collect::<Result<Vec<_>, _>>()?);
                    }
                    let (sql, q) = &main;
                    let values = q.sqlite_values();
                    let mut stmt = c.prepare_cached(sql)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), sqlite_event)?.map(|r| r.map_err(StoreError::from));
                    let Some(object) = &in_run else {
                        // In page order already: the straddling run comes before every row past the bound.
                        return page_of(first.into_iter().map(Ok).chain(rows), descending, limit, keep);
                    };
                    // An object's rows are few: gathered, with its created event from a run, then ordered.
                    let mut all = rows.collect::<Result<Vec<_>, _>>()?;
                    if let Some((_, row)) = sqlite_created_in_run(c, tenant, object)?
                        && within(row.5)
                    {
                        all.push(row);
                    }
                    all.sort_unstable_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
                    all.dedup_by(|a, b| a.0 == b.0);
                    page_of(all.into_iter().map(Ok), descending, limit, keep)
                })
                .await?
            }
            Store::Postgres(p) => {
                let (sql, q) = build(true, cmp, order, limit);
                let client = p.pool().get().await?;
                let stmt = client.prepare_cached(&sql).await?;
                let values = q.pg_values();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    values.iter().map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                client.query(&stmt, &refs).await?.iter().map(pg_event).collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(Page::from_rows(rows.into_iter().map(into_record).collect(), &page))
    }
}

/// The PostgreSQL channel on which a transaction that stored events owing
/// deliveries announces it at commit (see [`Store::listen_events_stored`]).
pub const EVENTS_STORED_CHANNEL: &str = "settle_events_stored";

/// The tenant's enabled endpoints: (id, enabled_events JSON).
type Subscribers = HashMap<TenantId, Vec<(String, String)>>;

const SUBSCRIBERS: &str = "SELECT id, enabled_events FROM webhook_endpoints WHERE tenant_id = #1 AND status = 'enabled' ORDER BY id";
/// A delivery owed: due now. An event redelivered later reuses its row.
const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries (endpoint_id, event_id, tenant_id, status, attempts, next_attempt_at, created_at, updated_at)
                               VALUES (#1, #2, #3, 'pending', 0, #4, #4, #4) ON CONFLICT (endpoint_id, event_id) DO NOTHING";

/// Writes events and their deliveries inside the caller's SQLite transaction.
/// Events no endpoint is owed are stored in runs where they can be ([`event_runs`]).
pub(crate) fn sqlite_write_events(tx: &rusqlite::Transaction<'_>, events: &[NewEvent], now: Timestamp) -> Result<(), StoreError> {
    let mut subscribers: Subscribers = HashMap::new();
    for e in events {
        if let std::collections::hash_map::Entry::Vacant(slot) = subscribers.entry(e.tenant) {
            let mut stmt = tx.prepare_cached(&SUBSCRIBERS.replace('#', "?"))?;
            slot.insert(stmt.query_map([e.tenant.0], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?);
        }
    }
    let owed = |e: &NewEvent| subscribers.get(&e.tenant).into_iter().flatten().any(|(_, enabled)| subscribed(enabled, &e.kind));
    let rows = event_runs::group(events, |e| !owed(e));
    SQLITE_INSERT_EVENTS.run(tx, &rows, |s, at, row| {
        let e = row.head();
        s.raw_bind_parameter(at, e.id.as_str())?;
        s.raw_bind_parameter(at + 1, e.tenant.0)?;
        s.raw_bind_parameter(at + 2, e.kind.as_str())?;
        s.raw_bind_parameter(at + 3, row.object_id())?;
        s.raw_bind_parameter(at + 4, e.sequence)?;
        s.raw_bind_parameter(at + 5, e.log_seq)?;
        s.raw_bind_parameter(at + 6, e.created_at.micros())?;
        s.raw_bind_parameter(at + 7, row.body())
    })?;
    let mut deliver = tx.prepare_cached(&INSERT_DELIVERY.replace('#', "?"))?;
    for e in events {
        for (endpoint, enabled) in subscribers.get(&e.tenant).into_iter().flatten() {
            if subscribed(enabled, &e.kind) {
                deliver.execute(params![endpoint, e.id.as_str(), e.tenant.0, now.micros()])?;
            }
        }
    }
    Ok(())
}

/// Events, many rows per statement (a projector round stores one per ledger transaction).
static SQLITE_INSERT_EVENTS: std::sync::LazyLock<crate::sqlite::bulk::BulkInsert> =
    std::sync::LazyLock::new(|| crate::sqlite::bulk::BulkInsert::new("events", "id, tenant_id, type, object_id, sequence, log_seq, created_at, body", ""));

/// All of a round's events in one statement: one array per column.
const PG_INSERT_EVENTS: &str = "INSERT INTO events (id, tenant_id, type, object_id, sequence, log_seq, created_at, body)
                                SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bytea[])";
/// All of a round's deliveries in one statement (see [`INSERT_DELIVERY`]).
const PG_INSERT_DELIVERIES: &str =
    "INSERT INTO webhook_deliveries (endpoint_id, event_id, tenant_id, status, attempts, next_attempt_at, created_at, updated_at)
                                    SELECT d.endpoint_id, d.event_id, d.tenant_id, 'pending', 0, $4, $4, $4
                                    FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS d(endpoint_id, event_id, tenant_id)
                                    ON CONFLICT (endpoint_id, event_id) DO NOTHING";
/// The enabled endpoints of several tenants at once.
const PG_SUBSCRIBERS: &str = "SELECT tenant_id, id, enabled_events FROM webhook_endpoints WHERE tenant_id = ANY($1) AND status = 'enabled' ORDER BY id";

/// Writes events and their deliveries inside the caller's PostgreSQL
/// transaction: three statements whatever the number of events (the
/// tenants' endpoints, the events, the deliveries), because on PostgreSQL
/// every statement is a round trip to the server, and one per row was what
/// bounded the projector's rate.
pub(crate) async fn pg_write_events(tx: &deadpool_postgres::Transaction<'_>, events: &[NewEvent], now: Timestamp) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tenants: Vec<i64> = events.iter().map(|e| e.tenant.0).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut subscribers: Subscribers = HashMap::new();
    let find = tx.prepare_cached(PG_SUBSCRIBERS).await?;
    for r in tx.query(&find, &[&tenants]).await? {
        let tenant: i64 = r.try_get(0)?;
        subscribers.entry(TenantId(tenant)).or_default().push((r.try_get(1)?, r.try_get(2)?));
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let tenant_ids: Vec<i64> = events.iter().map(|e| e.tenant.0).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let objects: Vec<&str> = events.iter().map(|e| e.object_id.as_str()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    let log_seqs: Vec<Option<i64>> = events.iter().map(|e| e.log_seq).collect();
    let created: Vec<i64> = events.iter().map(|e| e.created_at.micros()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.body.as_slice()).collect();
    let insert = tx.prepare_cached(PG_INSERT_EVENTS).await?;
    tx.execute(&insert, &[&ids, &tenant_ids, &kinds, &objects, &sequences, &log_seqs, &created, &bodies]).await?;
    let (mut endpoints, mut owed, mut owed_tenants): (Vec<&str>, Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new(), Vec::new());
    for e in events {
        for (endpoint, enabled) in subscribers.get(&e.tenant).into_iter().flatten() {
            if subscribed(enabled, &e.kind) {
                endpoints.push(endpoint.as_str());
                owed.push(e.id.as_str());
                owed_tenants.push(e.tenant.0);
            }
        }
    }
    if !endpoints.is_empty() {
        let deliver = tx.prepare_cached(PG_INSERT_DELIVERIES).await?;
        tx.execute(&deliver, &[&endpoints, &owed, &owed_tenants, &now.micros()]).await?;
        // Delivered to listeners at commit, and not at all on rollback.
        tx.batch_execute(&format!("NOTIFY {EVENTS_STORED_CHANNEL}")).await?;
    }
    Ok(())
}
