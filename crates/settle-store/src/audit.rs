//! `settle audit verify`: recomputes the hash chain of the ledger log,
//! rebuilds every entry and transaction status from the log, and checks that
//! the stored entries and account counters agree with it. The first
//! discrepancy is reported with the record or row that shows it.

use crate::Store;
use crate::error::StoreError;
use serde::Deserialize;
use settle_core::chain::{self, GENESIS, Hash};
use settle_core::ledger::Counters;
use std::collections::{BTreeSet, HashMap};

const CHUNK: i64 = 1_000;

/// What a clean audit covered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub log_records: i64,
    pub entries: u64,
    pub accounts: usize,
}

/// The first thing found wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditFailure {
    #[error("ledger log record {seq}: {reason}")]
    BrokenChain { seq: i64, reason: String },
    #[error("entry {entry}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("account {account}: stored counters {stored:?} differ from its entries {expected:?}")]
    CounterDrift { account: String, stored: Counters, expected: Counters },
    #[error("account {account}: its history chain {reason}")]
    HistoryDrift { account: String, reason: String },
}

type LoggedEntry = (String, String, String, i64, String, String);

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Fragment {
    /// Who asked for the change (request, idempotency key, correlation id):
    /// for events, not for the ledger.
    Context {},
    AccountCreated {},
    /// A reconciliation corrected derived counters; entries are untouched.
    CountersRepaired {},
    TransactionCreated {
        id: String,
        status: String,
        entries: Vec<LoggedEntry>,
    },
    TransactionChanged {
        id: String,
        status: String,
        entries: Vec<LoggedEntry>,
    },
}

/// The ledger as its log says it is: the log's chain checked, every stored
/// entry checked against it, and the counters and history each account's
/// entries imply.
pub struct Folded {
    pub log_records: i64,
    pub entries: u64,
    /// account id -> the counters its entries sum to.
    pub counters: HashMap<String, Counters>,
    /// account id -> the transactions its entries belong to.
    pub touched: HashMap<String, BTreeSet<String>>,
}

pub async fn verify(store: &Store) -> Result<Result<AuditReport, AuditFailure>, StoreError> {
    let folded = match fold(store).await? {
        Ok(f) => f,
        Err(failure) => return Ok(Err(failure)),
    };
    let mut report = AuditReport { log_records: folded.log_records, entries: folded.entries, accounts: 0 };
    let (mut counters, mut touched) = (folded.counters, folded.touched);
    for account in store.all_account_states().await? {
        let expected = counters.remove(account.id.as_str()).unwrap_or_default();
        if account.counters != expected {
            return Ok(Err(AuditFailure::CounterDrift { account: account.id.to_string(), stored: account.counters, expected }));
        }
        report.accounts += 1;
    }
    for walked in store.account_histories().await?.unwrap_or_default() {
        let drift = |reason: String| Ok(Err(AuditFailure::HistoryDrift { account: walked.account.clone(), reason }));
        if let Some(reason) = &walked.broken {
            return drift(format!("is broken: {reason}"));
        }
        // The same transactions as the entries name (chain order is creation
        // order, which need not be id order if a clock ever went back).
        let expected = touched.remove(&walked.account).unwrap_or_default();
        let listed: BTreeSet<String> = walked.transactions.iter().cloned().collect();
        if listed != expected || listed.len() != walked.transactions.len() {
            return drift(format!("lists {} transactions, its entries belong to {}", walked.transactions.len(), expected.len()));
        }
        if usize::try_from(walked.length).ok() != Some(expected.len()) {
            return drift(format!("has stored length {}, its entries belong to {} transactions", walked.length, expected.len()));
        }
    }
    Ok(Ok(report))
}

/// Rebuilds the ledger from its log and checks the stored entries against it.
pub async fn fold(store: &Store) -> Result<Result<Folded, AuditFailure>, StoreError> {
    let mut report = AuditReport::default();
    let mut prev: Hash = GENESIS;
    let mut expected_seq = 1;
    // entry id -> (account, direction, amount, currency, leg, transaction id)
    let mut entries: HashMap<String, (LoggedEntry, String)> = HashMap::new();
    let mut statuses: HashMap<String, String> = HashMap::new();
    loop {
        let records = store.log_records(expected_seq - 1, CHUNK).await?;
        if records.is_empty() {
            break;
        }
        for r in records {
            let broken = |reason: &str| Ok(Err(AuditFailure::BrokenChain { seq: r.seq, reason: reason.to_owned() }));
            if r.seq != expected_seq {
                return broken(&format!("expected sequence {expected_seq}: a record is missing"));
            }
            if r.prev_hash != prev {
                return broken("prev_hash does not match the previous record's hash");
            }
            // Unpacked contents are JSON; one still packed could not be unpacked.
            if crate::log_content::is_packed(&r.content) {
                return broken("content is packed and cannot be unpacked");
            }
            let hash = chain::link(&prev, r.seq, &r.content);
            if r.hash != hash {
                return broken("hash does not match its content");
            }
            let Ok(fragments) = serde_json::from_slice::<Vec<Fragment>>(&r.content) else {
                return broken("content is not a valid ledger log record");
            };
            for fragment in fragments {
                match fragment {
                    Fragment::Context {} | Fragment::AccountCreated {} | Fragment::CountersRepaired {} => {}
                    Fragment::TransactionCreated { id, status, entries: legs } | Fragment::TransactionChanged { id, status, entries: legs } => {
                        for leg in legs {
                            entries.insert(leg.0.clone(), (leg, id.clone()));
                        }
                        statuses.insert(id, status);
                    }
                }
            }
            prev = hash;
            expected_seq += 1;
            report.log_records += 1;
        }
    }

    let mut folded: HashMap<String, Counters> = HashMap::new();
    // account -> the transactions its entries belong to, for the history check.
    let mut touched: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut after = String::new();
    loop {
        let chunk = store.entries_chunk(&after, CHUNK).await?;
        let Some((last, _)) = chunk.last() else { break };
        after = last.id.to_string();
        for (e, status) in chunk {
            let id = e.id.to_string();
            let mismatch = |reason: &str| Ok(Err(AuditFailure::Entry { entry: id.clone(), reason: reason.to_owned() }));
            let Some(((_, account, direction, amount, currency, leg), tx)) = entries.remove(&id) else {
                return mismatch("stored but absent from the ledger log");
            };
            if account != e.account_id.as_str()
                || direction != e.direction.as_str()
                || amount != e.amount
                || currency != e.currency.code()
                || leg != e.leg.as_str()
                || tx != e.transaction_id.as_str()
            {
                return mismatch("differs from the ledger log");
            }
            if statuses.get(&tx).map(String::as_str) != Some(status.as_str()) {
                return mismatch("its transaction's status differs from the ledger log");
            }
            touched.entry(account.clone()).or_default().insert(tx.clone());
            if folded.entry(account).or_default().add_entry(e.leg, e.direction, e.amount, status).is_none() {
                return mismatch("its account's counters overflow when its entries are summed");
            }
            report.entries += 1;
        }
    }
    if let Some(id) = entries.keys().min() {
        return Ok(Err(AuditFailure::Entry { entry: id.clone(), reason: String::from("in the ledger log but not stored") }));
    }
    Ok(Ok(Folded { log_records: report.log_records, entries: report.entries, counters: folded, touched }))
}
