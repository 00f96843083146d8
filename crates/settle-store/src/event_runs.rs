//! Runs of events stored as one row (SQLite).
//!
//! A batch of a thousand transfers is one ledger log record, and the
//! projector makes a `ledger.transaction.created` event of each transfer.
//! One `events` row per event — three b-tree inserts (the table, its type
//! and object indexes) while the ledger engine waits for the write turn —
//! was about a fifth of the batched throughput (docs/benchmarks.md). So a
//! round's consecutive events of one record that no webhook endpoint is owed
//! (same tenant, type, time and sequence, ids one apart) are stored as one
//! row: the first member's id, type and columns, `object_id` empty, and a
//! body holding what the members do not share. Readers expand it
//! ([`Run`]); ids, lists, filters and bodies are what they were, and
//! PostgreSQL stores a row per event as before.
//!
//! Only `ledger.transaction.created` events form runs: a transaction's
//! `created_at` is its log record's time, so the `object_id` filter finds a
//! transaction's created event inside a run through that millisecond
//! (`events.rs`, `created_in_run`).

use crate::error::StoreError;
use crate::events::NewEvent;
use settle_core::ids::EventId;

/// The one event type stored in runs.
pub(crate) const RUN_KIND: &str = "ledger.transaction.created";
/// A run row's `object_id` (its members' are in its body).
pub(crate) const RUN_OBJECT: &str = "";
/// A run row's body begins with this; an event's own body is JSON (`{`).
const MAGIC: &[u8] = b"\0settle-event-run-1\0";

/// A row to store: one event, or a run of them.
pub(crate) enum Row<'a> {
    One(&'a NewEvent),
    Run { head: &'a NewEvent, body: Vec<u8> },
}

impl Row<'_> {
    /// The event whose columns the row carries (a run's first member).
    pub(crate) fn head(&self) -> &NewEvent {
        match self {
            Row::One(e) | Row::Run { head: e, .. } => e,
        }
    }

    pub(crate) fn object_id(&self) -> &str {
        match self {
            Row::One(e) => &e.object_id,
            Row::Run { .. } => RUN_OBJECT,
        }
    }

    pub(crate) fn body(&self) -> &[u8] {
        match self {
            Row::One(e) => &e.body,
            Row::Run { body, .. } => body,
        }
    }
}

/// Groups a round's events (in id order) into rows; `may_run` says which
/// events may go into a run (no delivery is owed for them).
pub(crate) fn group<'a>(events: &'a [NewEvent], may_run: impl Fn(&NewEvent) -> bool) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let head = &events[start];
        if head.kind != RUN_KIND || head.log_seq.is_none() || !may_run(head) {
            rows.push(Row::One(head));
            start += 1;
            continue;
        }
        let mut end = start + 1;
        while let Some(next) = events.get(end) {
            let last = &events[end - 1];
            let joins = next.kind == head.kind
                && next.tenant == head.tenant
                && next.log_seq == head.log_seq
                && next.created_at == head.created_at
                && next.sequence == head.sequence
                && next.id.follows(&last.id)
                && may_run(next);
            if !joins {
                break;
            }
            end += 1;
        }
        rows.push(Row::Run { head, body: encode(&events[start..end]) });
        start = end;
    }
    rows
}

/// Whether a stored body is a run's.
pub(crate) fn is_run(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// One event of a run, as stored before it was grouped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub id: EventId,
    pub object_id: String,
    pub body: Vec<u8>,
}

/// The events of run row `id` with body `body`, in id order.
#[cfg(test)]
fn members(id: &str, body: &[u8]) -> Result<Vec<Member>, StoreError> {
    let run = Run::read(id, body)?;
    Ok((0..run.len()).map(|n| run.member(n)).collect())
}

/// A stored run, read without building its members: a reader wants a page
/// of them or one (a run may hold a thousand events).
pub(crate) struct Run<'a> {
    /// The first member's id as a number: member `n` is `first + n`.
    first: u128,
    prefix: &'a [u8],
    suffix: &'a [u8],
    /// Each member's object id and the bytes of its body between the two.
    members: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Run<'a> {
    /// Reads run row `id` with body `body` (an error when it is no run or damaged).
    pub(crate) fn read(id: &str, body: &'a [u8]) -> Result<Run<'a>, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("event run {id}"));
        let first = EventId::from_trusted(id.to_owned()).value().ok_or_else(corrupt)?;
        let mut rest = body.strip_prefix(MAGIC).ok_or_else(corrupt)?;
        let prefix = take(&mut rest).ok_or_else(corrupt)?;
        let suffix = take(&mut rest).ok_or_else(corrupt)?;
        let count = take_len(&mut rest).ok_or_else(corrupt)?;
        // Every member's index fits the id's 16 bits (`group` only joins ids one apart).
        if count == 0 || (first & 0xFFFF) + count as u128 - 1 > 0xFFFF {
            return Err(corrupt());
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let object = take(&mut rest).ok_or_else(corrupt)?;
            let varying = take(&mut rest).ok_or_else(corrupt)?;
            members.push((std::str::from_utf8(object).map_err(|_| corrupt())?, varying));
        }
        if !rest.is_empty() {
            return Err(corrupt());
        }
        Ok(Run { first, prefix, suffix, members })
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn id(&self, n: usize) -> EventId {
        EventId::from_value(self.first + n as u128)
    }

    pub(crate) fn object_id(&self, n: usize) -> &'a str {
        self.members[n].0
    }

    /// The member with id `id`, if the run holds it.
    pub(crate) fn position(&self, id: &EventId) -> Option<usize> {
        let n = usize::try_from(id.value()?.checked_sub(self.first)?).ok()?;
        (n < self.len()).then_some(n)
    }

    /// The member of object `object`, if the run holds it.
    pub(crate) fn position_of_object(&self, object: &str) -> Option<usize> {
        self.members.iter().position(|(o, _)| *o == object)
    }

    /// Member `n` (`n < len()`), its body built.
    pub(crate) fn member(&self, n: usize) -> Member {
        let (object_id, varying) = self.members[n];
        let mut body = Vec::with_capacity(self.prefix.len() + varying.len() + self.suffix.len());
        body.extend_from_slice(self.prefix);
        body.extend_from_slice(varying);
        body.extend_from_slice(self.suffix);
        Member { id: self.id(n), object_id: object_id.to_owned(), body }
    }

    /// Member indexes in a page's order: newest first when `descending`.
    pub(crate) fn in_order(&self, descending: bool) -> impl Iterator<Item = usize> + use<> {
        let len = self.len();
        (0..len).map(move |i| if descending { len - 1 - i } else { i })
    }
}

/// The run body of `events`: the bytes every member's body begins and ends
/// with, once, then each member's object id and the bytes between.
fn encode(events: &[NewEvent]) -> Vec<u8> {
    let first = events.first().map_or(&[][..], |e| e.body.as_slice());
    let (mut prefix, mut suffix, mut shortest) = (first.len(), first.len(), first.len());
    for body in events.iter().map(|e| e.body.as_slice()) {
        // Mostly the same bytes as the first: compared whole, searched only when not.
        shortest = shortest.min(body.len());
        prefix = prefix.min(body.len());
        if first[..prefix] != body[..prefix] {
            prefix = common_prefix(&first[..prefix], body);
        }
        suffix = suffix.min(body.len());
        if first[first.len() - suffix..] != body[body.len() - suffix..] {
            suffix = common_suffix(&first[first.len() - suffix..], body);
        }
    }
    let suffix = suffix.min(shortest - prefix);
    let varying: usize = events.iter().map(|e| e.object_id.len() + e.body.len() - prefix - suffix + 8).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + prefix + suffix + 12 + varying);
    out.extend_from_slice(MAGIC);
    put(&mut out, &first[..prefix]);
    put(&mut out, &first[first.len() - suffix..]);
    put_len(&mut out, events.len());
    for e in events {
        put(&mut out, e.object_id.as_bytes());
        put(&mut out, &e.body[prefix..e.body.len() - suffix]);
    }
    out
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count()
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Bodies and runs are far below 4 GiB (a round holds at most a few thousand events).
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn take_len(rest: &mut &[u8]) -> Option<usize> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    usize::try_from(u32::from_le_bytes(*len)).ok()
}

fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_len(rest)?;
    let (bytes, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use settle_core::clock::Timestamp;
    use settle_core::tenancy::TenantId;

    fn event(index: usize, tenant: i64, kind: &str, object: &str, body: &[u8]) -> NewEvent {
        let at = Timestamp::from_micros(1_796_323_558_998_520);
        NewEvent {
            id: EventId::for_log(at, 9, index),
            tenant: TenantId(tenant),
            kind: kind.to_owned(),
            object_id: object.to_owned(),
            sequence: 1,
            log_seq: Some(9),
            created_at: at,
            body: body.to_vec(),
        }
    }

    fn expanded(rows: &[Row<'_>]) -> Vec<(EventId, String, Vec<u8>)> {
        let mut out = Vec::new();
        for row in rows {
            match row {
                Row::One(e) => out.push((e.id.clone(), e.object_id.clone(), e.body.clone())),
                Row::Run { head, body } => {
                    assert_eq!(row.object_id(), RUN_OBJECT);
                    assert!(is_run(body));
                    for m in members(head.id.as_str(), body).expect("members") {
                        out.push((m.id, m.object_id, m.body));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn consecutive_created_events_of_one_tenant_become_one_row_and_read_back_whole() {
        let events = vec![
            event(0, 1, RUN_KIND, "ltx_a", br#"{"deferred_v3":[true,"posted",null,"2024-06-01"]}"#),
            event(1, 1, RUN_KIND, "ltx_b", br#"{"deferred_v3":[true,"pending",null,"2024-06-01"]}"#),
            event(2, 1, RUN_KIND, "ltx_c", br#"{"deferred_v3":[true,"posted",null,"2024-06-01"]}"#),
            // Another tenant, another type, a gap in the indexes: each starts anew.
            event(3, 2, RUN_KIND, "ltx_d", b"{}"),
            event(4, 2, "ledger.account.created", "acct_e", b"{}"),
            event(6, 2, RUN_KIND, "ltx_f", b"{\"x\"}"),
            event(7, 2, RUN_KIND, "ltx_g", b"{\"x\"}"),
            // Owed a delivery: alone.
            event(8, 3, RUN_KIND, "ltx_h", b"{}"),
        ];
        let rows = group(&events, |e| e.tenant != TenantId(3));
        let shapes: Vec<(&str, bool)> = rows.iter().map(|r| (r.head().object_id.as_str(), matches!(r, Row::Run { .. }))).collect();
        assert_eq!(shapes, [("ltx_a", true), ("ltx_d", true), ("acct_e", false), ("ltx_f", true), ("ltx_h", false)]);
        let whole: Vec<(EventId, String, Vec<u8>)> = events.iter().map(|e| (e.id.clone(), e.object_id.clone(), e.body.clone())).collect();
        assert_eq!(expanded(&rows), whole);
    }

    #[test]
    fn a_damaged_run_is_corrupt_not_a_panic() {
        let events = [event(0, 1, RUN_KIND, "ltx_a", b"{1}"), event(1, 1, RUN_KIND, "ltx_b", b"{2}")];
        let rows = group(&events, |_| true);
        let (id, body) = (rows[0].head().id.as_str(), rows[0].body());
        for cut in MAGIC.len()..body.len() {
            assert!(members(id, &body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(members(id, &longer).is_err());
        assert!(members(id, b"{}").is_err());
    }

    #[test]
    fn a_reader_finds_a_member_by_id_or_object_and_builds_only_it() {
        let events: Vec<NewEvent> = (0..5).map(|i| event(i, 1, RUN_KIND, &format!("ltx_{i}"), format!("{{{i}}}").as_bytes())).collect();
        let rows = group(&events, |_| true);
        let run = Run::read(rows[0].head().id.as_str(), rows[0].body()).expect("a run");
        assert_eq!(run.len(), 5);
        assert_eq!(run.position(&events[3].id), Some(3));
        assert_eq!(run.position(&EventId::for_log(events[0].created_at, 9, 5)), None, "past its end");
        assert_eq!(run.position(&EventId::for_log(events[0].created_at, 8, 2)), None, "another record");
        assert_eq!(run.position_of_object("ltx_3"), Some(3));
        assert_eq!(run.member(3), Member { id: events[3].id.clone(), object_id: String::from("ltx_3"), body: b"{3}".to_vec() });
        assert_eq!(run.in_order(true).collect::<Vec<_>>(), [4, 3, 2, 1, 0]);
        assert_eq!(run.in_order(false).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    }

    proptest! {
        /// Whatever the bodies share or not, a run gives back each member's
        /// id, object and body byte for byte.
        #[test]
        fn any_run_reads_back_as_its_events(bodies in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..12), 1..20)) {
            let events: Vec<NewEvent> = bodies.iter().enumerate().map(|(i, b)| event(i, 1, RUN_KIND, &format!("ltx_{i}"), b)).collect();
            let rows = group(&events, |_| true);
            prop_assert_eq!(rows.len(), 1);
            let whole: Vec<(EventId, String, Vec<u8>)> = events.iter().map(|e| (e.id.clone(), e.object_id.clone(), e.body.clone())).collect();
            prop_assert_eq!(expanded(&rows), whole);
        }
    }
}
