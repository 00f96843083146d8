//! Ledger reconciliation: every account's derived counters against what its
//! entries sum to, with the entries themselves first checked against the
//! hash-chained log (they are the truth; counters are a cache of them).
//! A repair goes through the engine, so it takes the same locks as any write,
//! bumps the account's version and is itself recorded in the ledger log.

use crate::Store;
use crate::audit::{self, AuditFailure};
use crate::engine::{Command, CommandError, EngineConfig, Outcome, Reply};
use crate::error::StoreError;
use settle_core::clock::SystemClock;
use settle_core::ids::{AccountId, IdGenerator};
use settle_core::ledger::Counters;
use settle_core::tenancy::TenantId;
use std::sync::Arc;

/// An account whose stored counters differ from its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub account: AccountId,
    pub tenant: TenantId,
    pub stored: Counters,
    /// What its entries sum to.
    pub expected: Counters,
}

/// What a scan covered and found.
#[derive(Debug, Default)]
pub struct Scan {
    pub log_records: i64,
    pub entries: u64,
    pub accounts: usize,
    pub drifts: Vec<Drift>,
}

/// Checks the log and the entries, then every account's counters. A broken
/// log or entry is an [`AuditFailure`]: then no counter can be trusted to be
/// repaired from the entries, and none is.
pub async fn scan(store: &Store) -> Result<Result<Scan, AuditFailure>, StoreError> {
    let folded = match audit::fold(store).await? {
        Ok(f) => f,
        Err(failure) => return Ok(Err(failure)),
    };
    let mut sums = folded.counters;
    let mut scan = Scan { log_records: folded.log_records, entries: folded.entries, ..Scan::default() };
    for account in store.all_account_states().await? {
        scan.accounts += 1;
        let expected = sums.remove(account.id.as_str()).unwrap_or_default();
        if account.counters == expected {
            continue;
        }
        // The entries were read before the accounts: a write that landed in
        // between shows as a difference. Look again from one snapshot.
        if let Some((stored, expected)) = store.recount(&account.id).await?
            && stored != expected
        {
            scan.drifts.push(Drift { account: account.id, tenant: account.tenant, stored, expected });
        }
    }
    Ok(Ok(scan))
}

/// One account's counters before and after its repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    pub account: AccountId,
    pub before: Counters,
    pub after: Counters,
}

/// Repairs each drifted account through an engine of this process (safe
/// beside running servers: it locks like any writer). Each account's counters
/// are summed again under its lock, so a repair never trusts a stale scan.
pub async fn repair(store: &Store, drifts: &[Drift]) -> Result<Vec<Result<Repaired, CommandError>>, StoreError> {
    let (engine, task) = store.start_engine(Arc::new(SystemClock), Arc::new(IdGenerator::default()), EngineConfig::default()).await?;
    let mut results = Vec::with_capacity(drifts.len());
    for drift in drifts {
        let reply = engine.submit(drift.tenant, Command::RepairCounters { account: drift.account.clone() }, None).await;
        results.push(match reply {
            Ok(Reply::Done { result: Ok(Outcome::CountersRepaired { account, before, after }), .. }) => Ok(Repaired { account, before, after }),
            Ok(Reply::Done { result: Err(e), .. }) => Err(e),
            Ok(_) | Err(_) => Err(CommandError::Unavailable),
        });
    }
    drop(engine);
    task.finished().await;
    Ok(results)
}
