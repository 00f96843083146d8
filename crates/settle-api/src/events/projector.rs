//! The event projector: turns ledger log records into events, off the
//! engine's path.
//!
//! One server at a time projects (the lease in `event_projection`; another
//! server takes over when it lapses). Each round reads the log records after
//! the cursor, renders their events with the API's own renderers, and stores
//! them with the new cursor in one transaction: a crash between the ledger's
//! commit and the projection loses nothing (the log is durable, the cursor
//! did not move), and nothing is projected twice (the cursor moves with the
//! events, and event ids are derived from the log position).
//!
//! `data.object` is the object as it was at the change, not as it is when
//! projected or read: the log names each change's status, the row gives the
//! fields that never change, and the fields a change sets are rewound to that
//! change (a hold created then posted yields a `created` event with
//! `status: pending` and a `posted` event with
//! `previous_attributes: {status: "pending", …}`). Transaction events are
//! stored without their object, which is rendered when they are read
//! ([`super::deferred`]), except for tenants with an enabled webhook endpoint,
//! whose deliveries read them at once; account events are stored whole.

use super::deferred::{self, DeferredTransaction};
use super::{EventDataJson, EventJson, EventRequestJson};
use crate::render;
use crate::state::AppState;
use serde::Deserialize;
use serde_json::Value;
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, EventId, OperationId};
use settle_core::ledger::{Counters, Transaction};
use settle_core::tenancy::TenantId;
use settle_store::StoreError;
use settle_store::events::{LoggedChange, NewEvent};
use settle_store::records::AccountRecord;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

mod scan;

/// Log records projected per round (one database transaction).
const MAX_RECORDS_PER_ROUND: i64 = 2_048;
/// Events stored per round, whatever the records hold (a record of a batch holds thousands).
const MAX_EVENTS_PER_ROUND: usize = 20_000;
/// How long the projector's lease lasts; renewed every round.
pub const LEASE_SECS: i64 = 15;

/// Projector settings.
#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// How often an idle projector looks at the log (it is also woken by commits).
    pub poll_interval: Duration,
    /// After a round that took every record there was, how long the
    /// projector lets new ones gather before the next: each round is a write
    /// transaction (a sync to disk, and the write lock the engine then waits
    /// for), and under a steady stream of small commits back-to-back rounds
    /// of a few records each cost more than their events.
    pub gather: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig { poll_interval: Duration::from_millis(100), gather: Duration::from_millis(20) }
    }
}

/// A running projector; [`ProjectorHandle::stop`] ends it after its round
/// and gives its lease back.
pub struct ProjectorHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ProjectorHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends it at once, as a crash would (its lease stays until it lapses).
    pub fn abort(self) {
        self.task.abort();
    }
}

pub fn spawn(state: AppState, config: ProjectorConfig) -> ProjectorHandle {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(state, config, stopped));
    ProjectorHandle { stop, task }
}

async fn run(state: AppState, config: ProjectorConfig, mut stopped: watch::Receiver<bool>) {
    let owner = state.events.ids.operation().as_str().replacen(OperationId::PREFIX, "prj_", 1);
    // The cursor and lease this projector holds, as of its last write.
    let mut held: Option<(i64, Timestamp)> = None;
    loop {
        if *stopped.borrow() {
            break;
        }
        let now = state.clock.now();
        let lease_until = now.plus_secs(LEASE_SECS);
        let mut more = false;
        // Each stored round renews the lease in its own transaction; the lease
        // is claimed on its own (a second commit) only when half of it is gone.
        let cursor = match held {
            Some((cursor, until)) if now.plus_secs(LEASE_SECS / 2) < until => Some(cursor),
            _ => match state.store.claim_event_projection(&owner, now, lease_until).await {
                Ok(found) => {
                    held = found.map(|cursor| (cursor, lease_until));
                    found
                }
                Err(error) => {
                    tracing::warn!(%error, "could not take the event projector's lease");
                    held = None;
                    None
                }
            },
        };
        if let Some(cursor) = cursor {
            match project(&state, &owner, cursor, lease_until).await {
                Ok(Round::Advanced { to, caught_up }) => {
                    held = Some((to, lease_until));
                    state.events.stored.notify_one();
                    if caught_up {
                        tokio::select! {
                            () = tokio::time::sleep(config.gather) => {}
                            _ = stopped.changed() => {}
                        }
                    }
                    more = true;
                }
                Ok(Round::Idle) => {}
                Ok(Round::Lost) => held = None,
                Err(error) => {
                    held = None;
                    tracing::warn!(%error, "event projection failed; retrying");
                }
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(config.poll_interval) => {}
            () = state.events.logged.notified() => {}
            _ = stopped.changed() => {}
        }
    }
    if let Err(error) = state.store.release_event_projection(&owner).await {
        tracing::warn!(%error, "could not give the event projector's lease back");
    }
}

/// One change in a log record, as far as events need it (the engine's
/// `LogFragment`, read back by [`scan`] or through [`RawFragment`]).
#[cfg_attr(test, derive(Debug, PartialEq))]
enum Fragment {
    Context {
        request_id: Option<String>,
        idempotency_key: Option<String>,
        correlation_id: Option<String>,
    },
    AccountCreated {
        id: String,
        tenant: i64,
    },
    TransactionCreated {
        id: String,
        tenant: i64,
        status: String,
    },
    TransactionChanged {
        id: String,
        status: String,
        reversed_by: Option<String>,
    },
    /// Operator repairs and anything newer than this server: no event.
    Other,
}

/// A fragment as read from the log: the fields events need, whatever its
/// `op`, and nothing else. Read flat rather than as a tagged enum, which
/// serde buffers whole (entries included) before choosing the variant: that
/// buffering was most of the projector's parsing time (docs/benchmarks.md).
/// A field of another type than events expect (an `op` newer than this
/// server may use the names differently) reads as absent, as the tagged enum
/// read such an `op` as [`Fragment::Other`] whatever its fields.
#[derive(Deserialize)]
struct RawFragment {
    op: String,
    #[serde(default)]
    id: Lenient<String>,
    #[serde(default)]
    tenant: Lenient<i64>,
    #[serde(default)]
    status: Lenient<String>,
    #[serde(default)]
    reversed_by: Lenient<String>,
    #[serde(default)]
    request_id: Lenient<String>,
    #[serde(default)]
    idempotency_key: Lenient<String>,
    #[serde(default)]
    correlation_id: Lenient<String>,
}

/// A string or integer field, or `None` (null, absent, or any other JSON value, skipped).
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<'de> Deserialize<'de> for Lenient<String> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor::<String>(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Lenient<i64> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor::<i64>(std::marker::PhantomData))
    }
}

struct LenientVisitor<T>(std::marker::PhantomData<T>);

/// What a [`LenientVisitor`] keeps: strings for `String`, integers for `i64`.
trait LenientValue: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
}

impl LenientValue for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

impl LenientValue for i64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
}

impl<'de, T: LenientValue> serde::de::Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_str(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Lenient(T::from_i64(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Lenient(i64::try_from(v).ok().and_then(T::from_i64)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(Lenient(None))
    }
}

impl RawFragment {
    /// The fragment, or why it is not readable (a field its `op` requires is missing).
    fn into_fragment(self) -> Result<Fragment, String> {
        let op = self.op;
        let missing = |field: &str| format!("a `{op}` fragment without `{field}`");
        Ok(match op.as_str() {
            "context" => Fragment::Context { request_id: self.request_id.0, idempotency_key: self.idempotency_key.0, correlation_id: self.correlation_id.0 },
            "account_created" => {
                Fragment::AccountCreated { id: self.id.0.ok_or_else(|| missing("id"))?, tenant: self.tenant.0.ok_or_else(|| missing("tenant"))? }
            }
            "transaction_created" => Fragment::TransactionCreated {
                id: self.id.0.ok_or_else(|| missing("id"))?,
                tenant: self.tenant.0.ok_or_else(|| missing("tenant"))?,
                status: self.status.0.ok_or_else(|| missing("status"))?,
            },
            "transaction_changed" => Fragment::TransactionChanged {
                id: self.id.0.ok_or_else(|| missing("id"))?,
                status: self.status.0.ok_or_else(|| missing("status"))?,
                reversed_by: self.reversed_by.0,
            },
            _ => Fragment::Other,
        })
    }
}

/// A log record's fragments (an unreadable record yields none, and says so).
fn parse_fragments(record: &LoggedChange) -> Vec<Fragment> {
    if let Some(fragments) = scan::fragments(&record.content) {
        return fragments;
    }
    read_with_serde(record)
}

/// Any record, however written: what [`scan`] is held to.
fn read_with_serde(record: &LoggedChange) -> Vec<Fragment> {
    let parsed = serde_json::from_slice::<Vec<RawFragment>>(&record.content)
        .map_err(|e| e.to_string())
        .and_then(|raw| raw.into_iter().map(RawFragment::into_fragment).collect::<Result<Vec<_>, _>>());
    parsed.unwrap_or_else(|error| {
        tracing::error!(seq = record.seq, %error, "a ledger log record is not readable; it yields no events");
        Vec::new()
    })
}

/// What an event's `data` will hold.
enum Data {
    /// Rendered now.
    Whole { object: Value, previous: Option<Value> },
    /// Rendered when read.
    Deferred(DeferredTransaction),
}

/// An event before its sequence and id are known.
struct Pending {
    tenant: TenantId,
    kind: &'static str,
    object_id: String,
    data: Data,
    request: EventRequestJson,
    correlation_id: Option<String>,
    seq: i64,
    created_at: Timestamp,
}

/// What a round did.
pub enum Round {
    /// No record after the cursor.
    Idle,
    /// Events stored up to log record `to`, and the lease renewed with them;
    /// `caught_up` when the round took every record there was.
    Advanced { to: i64, caught_up: bool },
    /// Another server holds the lease, or moved the cursor meanwhile.
    Lost,
}

/// Projects the records after `cursor`, renewing the lease until `lease_until`.
pub async fn project(state: &AppState, owner: &str, cursor: i64, lease_until: Timestamp) -> Result<Round, StoreError> {
    let records = state.store.logged_changes(cursor, MAX_RECORDS_PER_ROUND).await?;
    let Some(last) = records.last().map(|r| r.seq) else {
        return Ok(Round::Idle);
    };
    let parsed: Vec<(&LoggedChange, Vec<Fragment>)> = records.iter().map(|r| (r, parse_fragments(r))).collect();
    // Stop early (at a record boundary) when a round would hold too many events.
    let mut upto = last;
    let mut count = 0;
    for (r, fragments) in &parsed {
        count += fragments.len();
        if count > MAX_EVENTS_PER_ROUND && r.seq > cursor + 1 {
            upto = r.seq - 1;
            break;
        }
    }
    // A change's record does not name the tenant (a creation's does): read it from the row.
    let mut changed: Vec<String> = Vec::new();
    for (r, fragments) in &parsed {
        if r.seq > upto {
            break;
        }
        for f in fragments {
            if let Fragment::TransactionChanged { id, .. } = f {
                changed.push(id.clone());
            }
        }
    }
    changed.sort_unstable();
    changed.dedup();
    let mut rows: HashMap<String, Transaction> = if changed.is_empty() {
        HashMap::new()
    } else {
        state.store.transactions_for_events(changed).await?.into_iter().map(|t| (t.id.as_str().to_owned(), t)).collect()
    };
    // The accounts the round opened, read together (a burst of openings
    // would otherwise cost a read each).
    let mut opened: Vec<(TenantId, AccountId)> = Vec::new();
    for (r, fragments) in &parsed {
        if r.seq > upto {
            break;
        }
        for f in fragments {
            if let Fragment::AccountCreated { id, tenant } = f
                && let Some(account) = AccountId::parse(id)
            {
                opened.push((TenantId(*tenant), account));
            }
        }
    }
    let accounts: HashMap<(i64, String), AccountRecord> =
        state.store.accounts_for_events(opened).await?.into_iter().map(|a| ((a.state.tenant.0, a.state.id.as_str().to_owned()), a)).collect();

    let mut pending: Vec<Pending> = Vec::new();
    for (r, fragments) in &parsed {
        if r.seq > upto {
            break;
        }
        let (mut request, mut correlation_id) = (EventRequestJson::default(), None);
        for f in fragments {
            match f {
                Fragment::Context { request_id, idempotency_key, correlation_id: c } => {
                    request = EventRequestJson { id: request_id.clone(), idempotency_key: idempotency_key.clone() };
                    correlation_id = c.clone();
                }
                Fragment::AccountCreated { id, tenant } => {
                    let Some(object) = accounts.get(&(*tenant, id.clone())).map(account_created).transpose()? else {
                        tracing::error!(account = %id, "a logged account is missing; its event is skipped");
                        continue;
                    };
                    pending.push(Pending {
                        tenant: TenantId(*tenant),
                        kind: "ledger.account.created",
                        object_id: id.clone(),
                        data: Data::Whole { object, previous: None },
                        request: request.clone(),
                        correlation_id: correlation_id.clone(),
                        seq: r.seq,
                        created_at: r.created_at,
                    });
                }
                Fragment::TransactionCreated { id, status, .. } | Fragment::TransactionChanged { id, status, .. } => {
                    let (tenant, reversed_by) = match f {
                        Fragment::TransactionCreated { tenant, .. } => (Some(TenantId(*tenant)), None),
                        Fragment::TransactionChanged { reversed_by, .. } => (rows.get(id).map(|t| t.tenant), reversed_by.clone()),
                        _ => (None, None),
                    };
                    let Some(tenant) = tenant else {
                        tracing::error!(transaction = %id, "a logged transaction is missing; its event is skipped");
                        continue;
                    };
                    let created = matches!(f, Fragment::TransactionCreated { .. });
                    let Some(kind) = deferred::transaction_event_kind(created, status, reversed_by.as_deref()) else {
                        tracing::error!(transaction = %id, status, "a logged transaction change has no event type; skipped");
                        continue;
                    };
                    pending.push(Pending {
                        tenant,
                        kind,
                        object_id: id.clone(),
                        data: Data::Deferred(DeferredTransaction { transaction: id.clone(), created, status: status.clone(), reversed_by }),
                        request: request.clone(),
                        correlation_id: correlation_id.clone(),
                        seq: r.seq,
                        created_at: r.created_at,
                    });
                }
                Fragment::Other => {}
            }
        }
    }

    // Events a delivery will read at once are rendered now (the rows not read above, in one read).
    let subscribed = state.store.tenants_with_endpoints().await?;
    let render_now = |p: &Pending| subscribed.contains(&p.tenant) && matches!(p.data, Data::Deferred(_));
    let mut missing: Vec<String> = pending
        .iter()
        .filter(|p| render_now(p))
        .filter_map(|p| match &p.data {
            Data::Deferred(d) if !rows.contains_key(&d.transaction) => Some(d.transaction.clone()),
            _ => None,
        })
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        rows.extend(state.store.transactions_for_events(missing).await?.into_iter().map(|t| (t.id.as_str().to_owned(), t)));
    }
    for p in &mut pending {
        if !render_now(p) {
            continue;
        }
        if let Data::Deferred(d) = &p.data
            && let Some((object, previous)) = rows.get(&d.transaction).and_then(|row| deferred::render(row, d))
        {
            p.data = Data::Whole { object, previous };
        }
    }

    // Per-object sequences continue from what is stored (a created event starts at 1).
    let mut objects: Vec<(TenantId, String)> = Vec::new();
    let mut seen = HashSet::new();
    for p in &pending {
        if p.kind != "ledger.account.created" && p.kind != "ledger.transaction.created" && seen.insert(p.object_id.clone()) {
            objects.push((p.tenant, p.object_id.clone()));
        }
    }
    let mut sequences = state.store.object_sequences(objects).await?;
    let mut index_in_record: HashMap<i64, usize> = HashMap::new();
    let mut events = Vec::with_capacity(pending.len());
    let api_version = crate::versions::NEWEST.to_string();
    for p in pending {
        let sequence = sequences.entry(p.object_id.clone()).or_insert(0);
        *sequence += 1;
        let index = index_in_record.entry(p.seq).or_insert(0);
        let id = EventId::for_log(p.created_at, p.seq, *index);
        *index += 1;
        let created_at = p.created_at.to_rfc3339();
        let body = match p.data {
            Data::Whole { object, previous } => serde_json::to_vec(&EventJson {
                object: String::from("event"),
                id: id.as_str().to_owned(),
                kind: p.kind.to_owned(),
                api_version: api_version.clone(),
                created_at,
                data: EventDataJson { object, previous_attributes: previous },
                request: p.request,
                correlation_id: p.correlation_id,
                sequence: *sequence,
            }),
            Data::Deferred(d) => deferred::deferred_body(
                &d,
                &deferred::EventFields { api_version: &api_version, request: &p.request, correlation_id: p.correlation_id.as_deref() },
            ),
        }
        .map_err(|e| StoreError::Other(e.to_string()))?;
        events.push(NewEvent {
            id,
            tenant: p.tenant,
            kind: p.kind.to_owned(),
            object_id: p.object_id,
            sequence: *sequence,
            log_seq: Some(p.seq),
            created_at: p.created_at,
            body,
        });
    }
    if state.store.append_events(owner, cursor, upto, lease_until, events, state.clock.now()).await? {
        Ok(Round::Advanced { to: upto, caught_up: upto == last && i64::try_from(records.len()).is_ok_and(|n| n < MAX_RECORDS_PER_ROUND) })
    } else {
        // Another server took the lease meanwhile; it projects from the stored cursor.
        Ok(Round::Lost)
    }
}

/// An account as it was when opened: zero balances, lock version 0.
fn account_created(record: &AccountRecord) -> Result<Value, StoreError> {
    let mut record = record.clone();
    record.state.counters = Counters::default();
    record.state.version = 0;
    let json = render::account(&record).map_err(|e| StoreError::Other(e.message))?;
    serde_json::to_value(json).map_err(|e| StoreError::Other(e.to_string()))
}

/// The fields of `before` whose values differ in `after`.
pub fn changed_fields(before: &Value, after: &Value) -> Value {
    let mut previous = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, v) in b {
            if a.get(k) != Some(v) {
                previous.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content: &str) -> LoggedChange {
        LoggedChange { seq: 7, content: content.as_bytes().to_vec(), created_at: Timestamp::from_micros(0) }
    }

    #[test]
    fn fragments_read_flat_keep_what_events_need() {
        let content = r#"[{"op":"context","request_id":"req_1","idempotency_key":null,"correlation_id":"c","actor":"key_1"},
            {"op":"account_created","id":"acct_1","tenant":3,"currency":"USD","normal_balance":"debit","min_available_balance":null},
            {"op":"transaction_created","id":"ltx_1","tenant":3,"status":"posted","entries":[["ent_1","acct_1","debit",5,"USD","posted"]]},
            {"op":"transaction_changed","id":"ltx_2","status":"voided","reversed_by":null,"entries":[]},
            {"op":"counters_repaired","account":"acct_1","before":[0,0,0,0],"after":[1,1,0,0]},
            {"op":"something_newer","id":{"nested":true}}]"#;
        let fragments = parse_fragments(&record(content));
        assert_eq!(fragments.len(), 6);
        assert!(matches!(&fragments[0], Fragment::Context { request_id: Some(r), idempotency_key: None, correlation_id: Some(c) } if r == "req_1" && c == "c"));
        assert!(matches!(&fragments[1], Fragment::AccountCreated { id, tenant: 3 } if id == "acct_1"));
        assert!(matches!(&fragments[2], Fragment::TransactionCreated { id, tenant: 3, status } if id == "ltx_1" && status == "posted"));
        assert!(matches!(&fragments[3], Fragment::TransactionChanged { id, status, reversed_by: None } if id == "ltx_2" && status == "voided"));
        assert!(matches!(fragments[4], Fragment::Other));
        assert!(matches!(fragments[5], Fragment::Other));
    }

    #[test]
    fn a_fragment_missing_what_its_op_requires_makes_the_record_unreadable() {
        assert!(parse_fragments(&record(r#"[{"op":"transaction_created","id":"ltx_1","status":"posted"}]"#)).is_empty());
        assert!(parse_fragments(&record(r#"[{"id":"ltx_1"}]"#)).is_empty());
        assert!(parse_fragments(&record("not json")).is_empty());
    }
}
