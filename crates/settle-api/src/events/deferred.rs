//! Transaction events stored without their object, rendered when read.
//!
//! A ledger transaction's event names the transaction and the state the
//! change left it in; its `data.object` (and `previous_attributes`) are
//! rendered from the transaction's row when the event is read (`GET
//! /v1/events`, a webhook delivery), not when it is projected. Why: rendering
//! every transaction and storing it a second time as JSON cost the projector
//! more than the ledger spent writing the transaction itself (a profile of a
//! batched run: about half of all CPU), and most events of a busy ledger are
//! never read one by one. The row gives the fields that never change; the
//! fields a later change sets are rewound to the event's change, so a read
//! renders exactly what an eager projection would have stored.
//!
//! Tenants with an enabled webhook endpoint are the exception: a delivery
//! would read their events at once, one claim at a time, so the projector
//! renders those in its round, in one read (deferring them measured three
//! times fewer deliveries per second on PostgreSQL).
//!
//! Such a body is `{"deferred_v3":[created, status, reversed_by,
//! api_version, request id, idempotency key, correlation id]}`: what to
//! render, and the event's own fields but those its row already holds (id,
//! object, sequence, `created_at`) or that it implies (its type follows from
//! the change, `object` is always `"event"`), so a reader passes the row's
//! columns with the body ([`Stored`]). Bodies of every other event are
//! stored whole and pass through unchanged. Two earlier forms are still
//! read: `{"deferred":[transaction, created, status, reversed_by, id,
//! api_version, created_at, request id, idempotency key, correlation id,
//! sequence]}` (until 2026-12-03, 211 bytes on average in a bench run
//! against 117 now), and `{"deferred_object":{…},"event":{…}}` (the whole
//! event with a null `data.object`, until 2026-11-30, 427 bytes).

use super::{EventDataJson, EventJson, EventRequestJson};
use crate::render;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use settle_core::clock::Timestamp;
use settle_core::ids::TransactionId;
use settle_core::ledger::{Transaction, TransactionStatus};
use settle_store::{Store, StoreError};
use std::collections::HashMap;

/// How every deferred body starts (and no whole event does: those start with `{"object"`).
const PREFIX: &[u8] = b"{\"deferred_v3\":";
/// How deferred bodies stored from 2026-11-30 to 2026-12-03 start.
const SECOND_PREFIX: &[u8] = b"{\"deferred\":";
/// How deferred bodies stored before [`SECOND_PREFIX`] start.
const FIRST_PREFIX: &[u8] = b"{\"deferred_object\":";

/// Which transaction to render into an event, and the state its change left it in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeferredTransaction {
    pub transaction: String,
    /// A `ledger.transaction.created` event (otherwise: the change named by `status` / `reversed_by`).
    pub created: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversed_by: Option<String>,
}

/// The first form of a deferred body, still read.
#[derive(Serialize, Deserialize)]
struct FirstDeferredBody {
    deferred_object: DeferredTransaction,
    event: EventJson,
}

/// An event's own fields that a deferred body keeps (its row holds the others).
pub struct EventFields<'a> {
    pub api_version: &'a str,
    pub request: &'a EventRequestJson,
    pub correlation_id: Option<&'a str>,
}

/// A stored event as a reader hands it to [`complete`]: the columns a
/// deferred body leaves out, and the body, rendered in place.
pub struct Stored<'a> {
    pub id: &'a str,
    pub object_id: &'a str,
    pub sequence: i64,
    pub created_at: Timestamp,
    pub body: &'a mut Vec<u8>,
}

/// The array of a deferred body, in the order the module doc gives.
type Compact<S> = (bool, S, Option<S>, S, Option<S>, Option<S>, Option<S>);

#[derive(Serialize, Deserialize)]
struct DeferredBody<S> {
    deferred_v3: Compact<S>,
}

/// The array of a deferred body of the second form (see the module doc).
type SecondCompact = (String, bool, String, Option<String>, String, String, String, Option<String>, Option<String>, Option<String>, i64);

#[derive(Serialize, Deserialize)]
struct SecondDeferredBody {
    deferred: SecondCompact,
}

/// An event with a null `data.object`.
fn event_of(
    kind: &str,
    id: String,
    api_version: String,
    created_at: String,
    request: EventRequestJson,
    correlation_id: Option<String>,
    sequence: i64,
) -> EventJson {
    EventJson {
        object: String::from("event"),
        id,
        kind: kind.to_owned(),
        api_version,
        created_at,
        data: EventDataJson { object: Value::Null, previous_attributes: None },
        request,
        correlation_id,
        sequence,
    }
}

impl DeferredBody<String> {
    /// The event (with a null `data.object`) and what to render into it.
    fn into_parts(self, row: &Stored<'_>) -> Option<(EventJson, DeferredTransaction)> {
        let (created, status, reversed_by, api_version, request_id, idempotency_key, correlation_id) = self.deferred_v3;
        let kind = transaction_event_kind(created, &status, reversed_by.as_deref())?;
        let request = EventRequestJson { id: request_id, idempotency_key };
        let event = event_of(kind, row.id.to_owned(), api_version, row.created_at.to_rfc3339(), request, correlation_id, row.sequence);
        Some((event, DeferredTransaction { transaction: row.object_id.to_owned(), created, status, reversed_by }))
    }
}

impl SecondDeferredBody {
    fn into_parts(self) -> Option<(EventJson, DeferredTransaction)> {
        let (transaction, created, status, reversed_by, id, api_version, created_at, request_id, idempotency_key, correlation_id, sequence) = self.deferred;
        let kind = transaction_event_kind(created, &status, reversed_by.as_deref())?;
        let request = EventRequestJson { id: request_id, idempotency_key };
        let event = event_of(kind, id, api_version, created_at, request, correlation_id, sequence);
        Some((event, DeferredTransaction { transaction, created, status, reversed_by }))
    }
}

/// The event type of a logged transaction change, or `None` for a change
/// that emits none (a status an event cannot have).
pub fn transaction_event_kind(created: bool, status: &str, reversed_by: Option<&str>) -> Option<&'static str> {
    let status = TransactionStatus::parse(status)?;
    if created {
        return Some("ledger.transaction.created");
    }
    if reversed_by.is_some() {
        return Some("ledger.transaction.reversed");
    }
    match status {
        TransactionStatus::Posted => Some("ledger.transaction.posted"),
        TransactionStatus::Voided => Some("ledger.transaction.voided"),
        TransactionStatus::Pending => None,
    }
}

/// The body stored for a transaction event: what its row does not hold, with its object left to the reader.
pub fn deferred_body(object: &DeferredTransaction, event: &EventFields<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let body = DeferredBody {
        deferred_v3: (
            object.created,
            object.status.as_str(),
            object.reversed_by.as_deref(),
            event.api_version,
            event.request.id.as_deref(),
            event.request.idempotency_key.as_deref(),
            event.correlation_id,
        ),
    };
    serde_json::to_vec(&body)
}

pub fn is_deferred(body: &[u8]) -> bool {
    body.starts_with(PREFIX) || body.starts_with(SECOND_PREFIX) || body.starts_with(FIRST_PREFIX)
}

/// A deferred body read back: the event with a null `data.object`, and what to render into it.
fn parse(row: &Stored<'_>) -> Result<(EventJson, DeferredTransaction), StoreError> {
    let unreadable = |e: &dyn std::fmt::Display| StoreError::Other(format!("a stored event cannot be read: {e}"));
    let no_type = || unreadable(&"a deferred event names a change with no event type");
    let body = row.body.as_slice();
    if body.starts_with(FIRST_PREFIX) {
        let first: FirstDeferredBody = serde_json::from_slice(body).map_err(|e| unreadable(&e))?;
        return Ok((first.event, first.deferred_object));
    }
    if body.starts_with(SECOND_PREFIX) {
        let second: SecondDeferredBody = serde_json::from_slice(body).map_err(|e| unreadable(&e))?;
        return second.into_parts().ok_or_else(no_type);
    }
    let compact: DeferredBody<String> = serde_json::from_slice(body).map_err(|e| unreadable(&e))?;
    compact.into_parts(row).ok_or_else(no_type)
}

/// Renders the objects of the deferred bodies among `stored` in place (one
/// read for all their transactions); whole bodies are left as they are.
pub async fn complete(store: &Store, stored: &mut [Stored<'_>]) -> Result<(), StoreError> {
    let mut parsed: Vec<(usize, EventJson, DeferredTransaction)> = Vec::new();
    for (i, row) in stored.iter().enumerate() {
        if is_deferred(row.body) {
            let (event, deferred) = parse(row)?;
            parsed.push((i, event, deferred));
        }
    }
    if parsed.is_empty() {
        return Ok(());
    }
    let mut wanted: Vec<String> = parsed.iter().map(|(_, _, d)| d.transaction.clone()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let rows: HashMap<String, Transaction> = store.transactions_for_events(wanted).await?.into_iter().map(|t| (t.id.as_str().to_owned(), t)).collect();
    for (i, mut event, d) in parsed {
        let row = rows.get(&d.transaction).ok_or_else(|| StoreError::Other(format!("the transaction of event {} is missing", event.id)))?;
        let (object, previous) = render(row, &d).ok_or_else(|| StoreError::Other(format!("event {} names a change with no event", event.id)))?;
        event.data.object = object;
        event.data.previous_attributes = previous;
        *stored[i].body = serde_json::to_vec(&event).map_err(|e| StoreError::Other(e.to_string()))?;
    }
    Ok(())
}

/// The `data.object` and `previous_attributes` of a deferred event, from its
/// transaction's row (for events the projector renders at once).
pub fn render(row: &Transaction, d: &DeferredTransaction) -> Option<(Value, Option<Value>)> {
    transaction_change(row, d.created, &d.status, d.reversed_by.as_deref())
}

fn rendered(t: &Transaction) -> Value {
    serde_json::to_value(render::transaction(t)).unwrap_or(Value::Null)
}

/// The transaction right after one logged change, and (for updates) the
/// fields that change set, as they were before it.
fn transaction_change(row: &Transaction, created: bool, status: &str, reversed_by: Option<&str>) -> Option<(Value, Option<Value>)> {
    transaction_event_kind(created, status, reversed_by)?;
    let status = TransactionStatus::parse(status)?;
    let mut after = row.clone();
    after.status = status;
    // What later changes set is not there yet.
    after.reversed_by = reversed_by.map(|r| TransactionId::from_trusted(r.to_owned()));
    if status != TransactionStatus::Posted {
        after.posted_at = None;
    }
    if status != TransactionStatus::Voided {
        after.voided_at = None;
        after.void_reason = None;
    }
    if created {
        return Some((rendered(&after), None));
    }
    let mut before = after.clone();
    if reversed_by.is_some() {
        before.reversed_by = None;
    } else {
        before.status = TransactionStatus::Pending;
        before.posted_at = None;
        before.voided_at = None;
        before.void_reason = None;
    }
    let (after, before) = (rendered(&after), rendered(&before));
    let previous = super::projector::changed_fields(&before, &after);
    Some((after, Some(previous)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_that_has_an_event_type_names_it() {
        assert_eq!(transaction_event_kind(true, "pending", None), Some("ledger.transaction.created"));
        assert_eq!(transaction_event_kind(true, "posted", None), Some("ledger.transaction.created"));
        assert_eq!(transaction_event_kind(false, "posted", None), Some("ledger.transaction.posted"));
        assert_eq!(transaction_event_kind(false, "voided", None), Some("ledger.transaction.voided"));
        assert_eq!(transaction_event_kind(false, "posted", Some("ltx_x")), Some("ledger.transaction.reversed"));
        assert_eq!(transaction_event_kind(false, "pending", None), None);
        assert_eq!(transaction_event_kind(true, "unheard_of", None), None);
    }

    fn event(kind: &str, idempotency_key: Option<&str>, correlation_id: Option<&str>) -> EventJson {
        EventJson {
            object: String::from("event"),
            id: String::from("evt_1"),
            kind: kind.to_owned(),
            api_version: String::from("2026-11-30"),
            created_at: String::from("2026-11-30T00:00:00.000000Z"),
            data: EventDataJson { object: Value::Null, previous_attributes: None },
            request: EventRequestJson { id: Some(String::from("req_1")), idempotency_key: idempotency_key.map(str::to_owned) },
            correlation_id: correlation_id.map(str::to_owned),
            sequence: 3,
        }
    }

    fn fields(e: &EventJson) -> EventFields<'_> {
        EventFields { api_version: &e.api_version, request: &e.request, correlation_id: e.correlation_id.as_deref() }
    }

    /// The row a reader would pass with `body` for `event` about `object`.
    fn row<'a>(event: &'a EventJson, object: &'a DeferredTransaction, body: &'a mut Vec<u8>) -> Stored<'a> {
        let created_at = Timestamp::parse_rfc3339(&event.created_at).expect("a test time");
        Stored { id: &event.id, object_id: &object.transaction, sequence: event.sequence, created_at, body }
    }

    #[test]
    fn a_deferred_body_is_told_apart_from_a_whole_one_and_reads_back_as_its_event_with_its_row() {
        let cases = [
            (
                event("ledger.transaction.created", None, None),
                DeferredTransaction { transaction: String::from("ltx_1"), created: true, status: String::from("pending"), reversed_by: None },
            ),
            (
                event("ledger.transaction.reversed", Some("key \"1\""), Some("corr_1")),
                DeferredTransaction {
                    transaction: String::from("ltx_2"),
                    created: false,
                    status: String::from("posted"),
                    reversed_by: Some(String::from("ltx_3")),
                },
            ),
            (
                event("ledger.transaction.voided", Some("k"), None),
                DeferredTransaction { transaction: String::from("ltx_4"), created: false, status: String::from("voided"), reversed_by: None },
            ),
        ];
        for (event, object) in cases {
            let whole = serde_json::to_vec(&event).unwrap_or_default();
            let mut deferred = deferred_body(&object, &fields(&event)).unwrap_or_default();
            assert!(!is_deferred(&whole));
            assert!(is_deferred(&deferred));
            // What the row holds is not repeated: neither the event's id, its object's, nor its time.
            let text = String::from_utf8_lossy(&deferred).into_owned();
            assert!(!text.contains(&event.id) && !text.contains(&object.transaction) && !text.contains(&event.created_at), "{text}");
            assert!(deferred.len() < 120, "{} bytes: {text}", deferred.len());
            let (back, what) = parse(&row(&event, &object, &mut deferred)).expect("a deferred body reads back");
            assert_eq!(back, event);
            assert_eq!(what, object);
        }
    }

    #[test]
    fn deferred_bodies_of_the_earlier_forms_are_still_read_whatever_the_row_says() {
        let event = event("ledger.transaction.posted", Some("k"), Some("corr_1"));
        let object = DeferredTransaction { transaction: String::from("ltx_1"), created: false, status: String::from("posted"), reversed_by: None };
        // As the projector stored them until 2026-11-30.
        let first = serde_json::to_vec(&FirstDeferredBody { deferred_object: object.clone(), event: event.clone() }).unwrap_or_default();
        assert!(first.starts_with(b"{\"deferred_object\":{"));
        // As the projector stored them until 2026-12-03 (byte for byte).
        let second = format!(
            r#"{{"deferred":["ltx_1",false,"posted",null,"{}","2026-11-30","{}","req_1","k","corr_1",{}]}}"#,
            event.id, event.created_at, event.sequence
        )
        .into_bytes();
        for mut body in [first, second] {
            assert!(is_deferred(&body));
            let elsewhere = DeferredTransaction { transaction: String::from("ltx_other"), ..object.clone() };
            let (back, what) = parse(&row(&event, &elsewhere, &mut body)).expect("reads back");
            assert_eq!(back, event);
            assert_eq!(what, object);
        }
    }

    #[test]
    fn a_deferred_body_whose_change_has_no_event_type_is_refused() {
        let event = event("ledger.transaction.created", None, None);
        let object = DeferredTransaction { transaction: String::from("ltx_1"), created: false, status: String::from("pending"), reversed_by: None };
        let mut body = deferred_body(&object, &fields(&event)).unwrap_or_default();
        assert!(parse(&row(&event, &object, &mut body)).is_err());
    }
}
