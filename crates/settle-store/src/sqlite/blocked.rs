//! The SQLite engine's view of which accounts belong to a blocked customer
//! (`customer_blocked`), kept in memory between batches.
//!
//! SQLite has one writer at a time, so whatever the engine reads inside its
//! batch's `BEGIN IMMEDIATE` transaction stays true until it commits. Reading
//! the blocked accounts there for every batch would cost a query per
//! account; instead every write that can change the set bumps the one-row
//! `blocked_generation` in its own transaction (`customers::blocking_change`,
//! and the engine itself when it opens an account for a customer), and each
//! batch reads that counter (one point query) and reloads the set only when
//! it moved. The set holds only blocked accounts: customers with an open or
//! confirmed sanctions match, which are few. A batch applied before the
//! write lock (`SqliteWriter::begin_optimistic`) reads the counter outside
//! it, and is applied again under the lock when the counter has moved by then.

use crate::error::StoreError;
use rusqlite::Connection;
use settle_core::ids::AccountId;
use settle_core::ledger::AccountState;
use std::collections::HashSet;

/// Bumps the counter: run by every transaction that may change the set.
pub const BUMP: &str = "UPDATE blocked_generation SET generation = generation + 1 WHERE id = 1";

/// The blocked accounts as of the generation last read.
#[derive(Default)]
pub struct BlockedAccounts {
    generation: Option<i64>,
    accounts: HashSet<String>,
}

/// The counter as committed now.
pub fn generation(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT generation FROM blocked_generation WHERE id = 1")?.query_row([], |r| r.get(0))?)
}

impl BlockedAccounts {
    /// Whether the set was read at `generation` (so it is still right).
    pub fn read_at(&self, generation: i64) -> bool {
        self.generation == Some(generation)
    }

    /// Of `accounts`, those blocked: read inside the batch's write
    /// transaction, or before it on the optimistic path, which checks
    /// [`BlockedAccounts::read_at`] again under the lock.
    pub fn of(&mut self, conn: &Connection, accounts: &[AccountState]) -> Result<HashSet<AccountId>, StoreError> {
        let generation = generation(conn)?;
        if self.generation != Some(generation) {
            let mut stmt = conn.prepare_cached(
                "SELECT a.account_id FROM customer_accounts a JOIN customers c ON c.tenant_id = a.tenant_id AND c.id = a.customer_id \
                 WHERE c.screening_status IN ('potential_match', 'confirmed_match')",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            self.accounts = rows.collect::<Result<_, _>>()?;
            self.generation = Some(generation);
        }
        if self.accounts.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(accounts.iter().filter(|a| self.accounts.contains(a.id.as_str())).map(|a| a.id.clone()).collect())
    }
}
