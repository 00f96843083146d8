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
//! Such a body is `{"deferred_object":{…},"event":{…}}`: the event with a
//! null `data.object`, and what to render into it. Bodies of every other
//! event are stored whole and pass through unchanged.

use super::EventJson;
use crate::render;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use settle_core::ids::TransactionId;
use settle_core::ledger::{Transaction, TransactionStatus};
use settle_store::{Store, StoreError};
use std::collections::HashMap;

/// How every deferred body starts (and no whole event does: those start with `{"object"`).
const PREFIX: &[u8] = b"{\"deferred_object\":";

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

#[derive(Serialize, Deserialize)]
struct DeferredBody {
    deferred_object: DeferredTransaction,
    event: EventJson,
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

/// The body stored for a transaction event: `event` with its object left to the reader.
pub fn deferred_body(event: &EventJson, object: DeferredTransaction) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        deferred_object: DeferredTransaction,
        event: &'a EventJson,
    }
    serde_json::to_vec(&Borrowed { deferred_object: object, event })
}

pub fn is_deferred(body: &[u8]) -> bool {
    body.starts_with(PREFIX)
}

/// Renders the objects of the deferred bodies among `bodies` in place (one
/// read for all their transactions); whole bodies are left as they are.
pub async fn complete(store: &Store, bodies: &mut [&mut Vec<u8>]) -> Result<(), StoreError> {
    let mut parsed: Vec<(usize, DeferredBody)> = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        if is_deferred(body) {
            let deferred: DeferredBody = serde_json::from_slice(body).map_err(|e| StoreError::Other(format!("a stored event cannot be read: {e}")))?;
            parsed.push((i, deferred));
        }
    }
    if parsed.is_empty() {
        return Ok(());
    }
    let mut wanted: Vec<String> = parsed.iter().map(|(_, d)| d.deferred_object.transaction.clone()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let rows: HashMap<String, Transaction> = store.transactions_for_events(wanted).await?.into_iter().map(|t| (t.id.as_str().to_owned(), t)).collect();
    for (i, mut deferred) in parsed {
        let d = &deferred.deferred_object;
        let row = rows.get(&d.transaction).ok_or_else(|| StoreError::Other(format!("the transaction of event {} is missing", deferred.event.id)))?;
        let (object, previous) = render(row, d).ok_or_else(|| StoreError::Other(format!("event {} names a change with no event", deferred.event.id)))?;
        deferred.event.data.object = object;
        deferred.event.data.previous_attributes = previous;
        *bodies[i] = serde_json::to_vec(&deferred.event).map_err(|e| StoreError::Other(e.to_string()))?;
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

    #[test]
    fn a_deferred_body_is_told_apart_from_a_whole_one() {
        let event = EventJson {
            object: String::from("event"),
            id: String::from("evt_1"),
            kind: String::from("ledger.transaction.created"),
            api_version: String::from("2026-11-30"),
            created_at: String::from("2026-11-30T00:00:00.000000Z"),
            data: super::super::EventDataJson { object: Value::Null, previous_attributes: None },
            request: super::super::EventRequestJson::default(),
            correlation_id: None,
            sequence: 1,
        };
        let whole = serde_json::to_vec(&event).unwrap_or_default();
        let deferred = deferred_body(
            &event,
            DeferredTransaction { transaction: String::from("ltx_1"), created: true, status: String::from("pending"), reversed_by: None },
        )
        .unwrap_or_default();
        assert!(!is_deferred(&whole));
        assert!(is_deferred(&deferred));
        let back: DeferredBody = serde_json::from_slice(&deferred).expect("a deferred body reads back");
        assert_eq!(back.event, event);
        assert_eq!(back.deferred_object.transaction, "ltx_1");
    }
}
