//! A transaction's entries, stored in its own row on SQLite (`transactions.legs`).
//!
//! Every leg used to be a row of an `entries` table: one more b-tree insert
//! per leg, repeating its transaction's id and times, which was the largest
//! single cost of the engine's commit (see `docs/benchmarks.md`). An entry's
//! id is its transaction's ULID followed by a suffix (`h00`, `p01`: the leg
//! and the position), so a stored leg keeps only what its transaction does not
//! already say:
//!
//! `[[suffix, account_id, direction, amount, currency], …]` in entry-id order;
//! a leg whose effective or creation time differs from its transaction's (the
//! legs a hold's posting adds) carries both as two more integers.
//!
//! JSON, so SQL reads it too: the migration that filled it, an operator's
//! `json_each`. Entries stay immutable: a trigger lets an update of `legs`
//! only append (`0025_entries_in_transactions.sql`).

use crate::error::StoreError;
use serde::Deserialize;
use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, EntryId, TransactionId};
use settle_core::json_text;
use settle_core::ledger::{Direction, Entry, Leg};
use settle_core::money::Currency;
use std::borrow::Cow;

/// The legs of a new transaction: a whole JSON array.
pub fn encode(transaction_id: &TransactionId, effective_at: Timestamp, created_at: Timestamp, entries: &[Entry]) -> Result<String, StoreError> {
    let mut out = String::with_capacity(2 + entries.len() * 64);
    out.push('[');
    append(&mut out, transaction_id, effective_at, created_at, entries)?;
    out.push(']');
    Ok(out)
}

/// Legs added to a stored transaction, each preceded by a comma: what SQL
/// splices in before the stored array's closing bracket.
pub fn encode_tail(transaction_id: &TransactionId, effective_at: Timestamp, created_at: Timestamp, entries: &[Entry]) -> Result<String, StoreError> {
    let mut out = String::with_capacity(entries.len() * 80);
    if !entries.is_empty() {
        out.push(',');
        append(&mut out, transaction_id, effective_at, created_at, entries)?;
    }
    Ok(out)
}

fn append(out: &mut String, transaction_id: &TransactionId, effective_at: Timestamp, created_at: Timestamp, entries: &[Entry]) -> Result<(), StoreError> {
    let body = ulid_of(transaction_id);
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let suffix =
            e.id.as_str()
                .strip_prefix(EntryId::PREFIX)
                .and_then(|rest| rest.strip_prefix(body))
                .filter(|suffix| e.transaction_id == *transaction_id && leg_of(suffix) == Some(e.leg))
                .ok_or_else(|| StoreError::Other(format!("entry {} does not belong to transaction {transaction_id} as its id says", e.id.as_str())))?;
        out.push('[');
        json_text::push_str(out, suffix);
        out.push(',');
        json_text::push_str(out, e.account_id.as_str());
        out.push(',');
        json_text::push_name(out, e.direction.as_str());
        out.push(',');
        out.push_str(itoa::Buffer::new().format(e.amount));
        out.push(',');
        json_text::push_name(out, e.currency.code());
        if e.effective_at != effective_at || e.created_at != created_at {
            out.push(',');
            out.push_str(itoa::Buffer::new().format(e.effective_at.micros()));
            out.push(',');
            out.push_str(itoa::Buffer::new().format(e.created_at.micros()));
        }
        out.push(']');
    }
    Ok(())
}

fn ulid_of(transaction_id: &TransactionId) -> &str {
    transaction_id.as_str().strip_prefix(TransactionId::PREFIX).unwrap_or(transaction_id.as_str())
}

fn leg_of(suffix: &str) -> Option<Leg> {
    match suffix.as_bytes().first() {
        Some(b'h') => Some(Leg::Pending),
        Some(b'p') => Some(Leg::Posted),
        _ => None,
    }
}

/// One stored leg, read from its JSON array.
#[derive(Deserialize)]
struct StoredLeg<'a> {
    #[serde(borrow)]
    suffix: Cow<'a, str>,
    #[serde(borrow)]
    account_id: Cow<'a, str>,
    #[serde(borrow)]
    direction: Cow<'a, str>,
    amount: i64,
    #[serde(borrow)]
    currency: Cow<'a, str>,
    #[serde(default)]
    effective_at: Option<i64>,
    #[serde(default)]
    created_at: Option<i64>,
}

/// The entries of a transaction from its stored legs. A leg that does not
/// read is corruption, reported, never guessed at.
pub fn decode(transaction_id: &TransactionId, effective_at: i64, created_at: i64, legs: &str) -> Result<Vec<Entry>, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("legs of {transaction_id}: {why}"));
    let stored: Vec<StoredLeg<'_>> = serde_json::from_str(legs).map_err(|e| corrupt(&e.to_string()))?;
    let body = ulid_of(transaction_id);
    stored
        .into_iter()
        .map(|leg| {
            let kind = leg_of(&leg.suffix).ok_or_else(|| corrupt(&format!("suffix {:?}", leg.suffix)))?;
            Ok(Entry {
                id: EntryId::from_trusted(format!("{}{body}{}", EntryId::PREFIX, leg.suffix)),
                transaction_id: transaction_id.clone(),
                account_id: AccountId::from_trusted(leg.account_id.into_owned()),
                direction: Direction::parse(&leg.direction).ok_or_else(|| corrupt(&format!("direction {:?}", leg.direction)))?,
                amount: leg.amount,
                currency: Currency::parse(&leg.currency).ok_or_else(|| corrupt(&format!("currency {:?}", leg.currency)))?,
                leg: kind,
                effective_at: Timestamp::from_micros(leg.effective_at.unwrap_or(effective_at)),
                created_at: Timestamp::from_micros(leg.created_at.unwrap_or(created_at)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction_id() -> TransactionId {
        TransactionId::from_trusted(String::from("ltx_01m8vehdq0qsfd8r6ank3abcde"))
    }

    fn entry(position: usize, leg: Leg, account: &str, direction: Direction, amount: i64, at: i64) -> Entry {
        let tx = transaction_id();
        Entry {
            id: EntryId::for_transaction(&tx, position, leg == Leg::Posted),
            transaction_id: tx,
            account_id: AccountId::from_trusted(account.to_owned()),
            direction,
            amount,
            currency: Currency::parse("EUR").expect("EUR"),
            leg,
            effective_at: Timestamp::from_micros(at),
            created_at: Timestamp::from_micros(at + 1),
        }
    }

    #[test]
    fn legs_read_back_as_the_entries_written_and_only_differing_times_are_stored() {
        let tx = transaction_id();
        let held = [
            entry(0, Leg::Pending, "acct_01m8vehc9abk5mq0000001", Direction::Debit, 250, 10),
            entry(1, Leg::Pending, "acct_01m8vehc9abk5mq0000002", Direction::Credit, 250, 10),
        ];
        let json = encode(&tx, Timestamp::from_micros(10), Timestamp::from_micros(11), &held).expect("encode");
        assert_eq!(json, r#"[["h00","acct_01m8vehc9abk5mq0000001","debit",250,"EUR"],["h01","acct_01m8vehc9abk5mq0000002","credit",250,"EUR"]]"#);
        assert_eq!(decode(&tx, 10, 11, &json).expect("decode"), held);

        // A posting appends legs with their own times, spliced as SQL does.
        let posted = [
            entry(0, Leg::Posted, "acct_01m8vehc9abk5mq0000001", Direction::Debit, 200, 50),
            entry(1, Leg::Posted, "acct_01m8vehc9abk5mq0000002", Direction::Credit, 200, 50),
        ];
        let tail = encode_tail(&tx, Timestamp::from_micros(10), Timestamp::from_micros(11), &posted).expect("tail");
        let spliced = format!("{}{tail}]", &json[..json.len() - 1]);
        assert!(spliced.ends_with(r#"["p01","acct_01m8vehc9abk5mq0000002","credit",200,"EUR",50,51]]"#), "{spliced}");
        let all: Vec<Entry> = held.iter().chain(&posted).cloned().collect();
        assert_eq!(decode(&tx, 10, 11, &spliced).expect("decode"), all);
        assert_eq!(encode(&tx, Timestamp::from_micros(10), Timestamp::from_micros(11), &all).expect("whole"), spliced);
    }

    #[test]
    fn an_entry_of_another_transaction_or_leg_is_refused_not_stored_wrongly() {
        let mut stray = entry(0, Leg::Pending, "acct_01m8vehc9abk5mq0000001", Direction::Debit, 1, 1);
        stray.leg = Leg::Posted;
        assert!(encode(&transaction_id(), Timestamp::from_micros(1), Timestamp::from_micros(2), &[stray]).is_err());
        let other = TransactionId::from_trusted(String::from("ltx_01m8vehdq0qsfd8r6ank3zzzzz"));
        let e = entry(0, Leg::Pending, "acct_01m8vehc9abk5mq0000001", Direction::Debit, 1, 1);
        assert!(encode(&other, Timestamp::from_micros(1), Timestamp::from_micros(2), &[e]).is_err());
    }

    proptest::proptest! {
        /// Whatever a transaction's legs are (how many, which kind, their
        /// amounts, currencies and times), what is stored reads back as
        /// them, and a posting's legs spliced in read back as the whole.
        #[test]
        fn any_legs_read_back_as_written(
            legs in proptest::collection::vec((0..120usize, proptest::bool::ANY, 1..=i64::MAX, proptest::bool::ANY, 0..3usize, 0..3i64), 2..8),
            split in 0..8usize,
        ) {
            let tx = transaction_id();
            let codes = ["EUR", "JPY", "BHD"];
            let entries: Vec<Entry> = legs
                .iter()
                .map(|&(position, posted, amount, debit, currency, shift)| {
                    let mut e = entry(position, if posted { Leg::Posted } else { Leg::Pending }, "acct_01m8vehc9abk5mq0000001", if debit { Direction::Debit } else { Direction::Credit }, amount, 10 + shift);
                    e.currency = Currency::parse(codes[currency]).expect("code");
                    e
                })
                .collect();
            let (at, created) = (Timestamp::from_micros(10), Timestamp::from_micros(11));
            let whole = encode(&tx, at, created, &entries).expect("encode");
            proptest::prop_assert_eq!(&decode(&tx, 10, 11, &whole).expect("decode"), &entries);
            let split = split.min(entries.len());
            let head = encode(&tx, at, created, &entries[..split]).expect("head");
            let tail = encode_tail(&tx, at, created, &entries[split..]).expect("tail");
            let spliced = if head == "[]" { format!("[{}]", tail.get(1..).unwrap_or("")) } else { format!("{}{tail}]", &head[..head.len() - 1]) };
            proptest::prop_assert_eq!(spliced, whole);
        }
    }

    #[test]
    fn damaged_legs_are_corruption() {
        let tx = transaction_id();
        for legs in [
            "",
            "{}",
            r#"[["x00","acct_1","debit",1,"EUR"]]"#,
            r#"[["h00","acct_1","up",1,"EUR"]]"#,
            r#"[["h00","acct_1","debit",1,"QQQ"]]"#,
            r#"[["h00","acct_1"]]"#,
        ] {
            assert!(matches!(decode(&tx, 1, 1, legs), Err(StoreError::Corrupt(_))), "{legs}");
        }
    }
}
