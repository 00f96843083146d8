//! The ledger repair sweep: a payment's move is written first and its
//! ledger effect second (see `super`), so an effect the ledger refuses after
//! the move (a hold not voided, a pending credit not posted, an availability
//! hold not placed, a return not reversed…) leaves the ledger disagreeing
//! with the payment. `payments::record_ledger_issue` records it on the
//! payment (`ledger_issue`) and lists the payment here (`ach_ledger_repairs`,
//! `open`); each scheduler round and each test clock advance re-applies it.
//!
//! A repair does not replay the failed command: it reads the payment's
//! status and its ledger transactions as they are now and applies only what
//! is missing for the ledger to agree with that status (post a pending hold,
//! void one, reverse a posted transaction that has no reversal, place a
//! missing availability hold under its reserved external id). So it is
//! idempotent by construction — a second sweep, or two servers sweeping at
//! once, finds nothing left to apply — and the engine refuses a second post,
//! void or reversal besides.
//!
//! Several servers: an attempt first claims the row under its version check,
//! moving its next attempt to the end of the backoff (the claim is the
//! lease: a server that dies mid-attempt leaves the row due again later);
//! the loser skips it. Success clears `ledger_issue`, appends the repair to
//! the payment's `ledger_repairs`, closes the row (`repaired`) and writes a
//! `payment.ledger_repaired` event, in one transaction. A refusal keeps the
//! issue with the latest reason and the attempt count.

use super::payments::{self, LedgerRepairJson, PaymentDirection, PaymentJson, issue_of, load, update};
use super::{LedgerRefusal, decode, encode, submit_ledger};
use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use settle_ach::payment::PaymentStatus;
use settle_core::clock::Timestamp;
use settle_core::ids::TransactionId;
use settle_core::ledger::{LedgerError, Transaction, TransactionStatus};
use settle_core::tenancy::TenantId;
use settle_store::ach::{AchRow, AchTable, AchWrite, ApplyError};
use settle_store::engine::{Command, CommandError, Outcome};
use settle_store::events::NewEvent;

/// Due repairs read per tenant and round (oldest first); the rest wait for
/// the next round.
pub const MAX_REPAIRS_PER_ROUND: i64 = 1_000;
/// The wait after a repair's first attempt; it doubles with each attempt.
pub const REPAIR_BACKOFF_FIRST_SECS: i64 = 60;
/// The longest wait between two attempts.
pub const REPAIR_BACKOFF_MAX_SECS: i64 = 6 * 3_600;

/// A row of the work list (`ach_ledger_repairs`).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Repair {
    payment_id: String,
    #[serde(default)]
    test_clock: Option<String>,
    /// The issue as first recorded.
    issue: String,
    #[serde(default)]
    attempts: u32,
    /// Not before this (RFC 3339, real time); none: due now.
    #[serde(default)]
    next_attempt_at: Option<String>,
    /// The latest attempt's refusal.
    #[serde(default)]
    last_error: Option<String>,
}

/// The wait after `attempts` attempts: 1 min, 2 min, 4 min… up to 6 h.
pub fn backoff_secs(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(20);
    REPAIR_BACKOFF_FIRST_SECS.saturating_mul(1_i64 << doublings).min(REPAIR_BACKOFF_MAX_SECS)
}

/// A row of the work list; its `lookup` is the next attempt's time (RFC 3339,
/// fixed format), so the scheduler reads only the due rows (`Store::ach_due`).
fn repair_row(tenant: TenantId, r: &Repair, status: &str, version: i64, created_at: i64) -> Result<AchRow, ApiError> {
    Ok(AchRow {
        id: r.payment_id.clone(),
        tenant,
        status: status.to_owned(),
        lookup: r.next_attempt_at.clone(),
        external_id: None,
        version,
        data: encode(r)?,
        created_at,
    })
}

/// The write that lists `p` (whose `ledger_issue` is `issue`) for the sweep,
/// due at once: a new row, or its row reopened (a payment whose earlier
/// issue was repaired, or whose open issue is replaced by a later one).
pub(crate) async fn open_write(state: &AppState, tenant: TenantId, p: &PaymentJson, issue: &str, now: Timestamp) -> Result<AchWrite, ApiError> {
    let repair =
        Repair { payment_id: p.id.clone(), test_clock: p.test_clock.clone(), issue: issue.to_owned(), attempts: 0, next_attempt_at: None, last_error: None };
    Ok(match state.store.ach_get(AchTable::LedgerRepairs, tenant, p.id.clone()).await? {
        Some(row) => AchWrite::Update(AchTable::LedgerRepairs, repair_row(tenant, &repair, "open", row.version + 1, row.created_at)?),
        None => AchWrite::Insert(AchTable::LedgerRepairs, repair_row(tenant, &repair, "open", 1, now.micros())?),
    })
}

/// Which open repairs a sweep takes.
#[derive(Clone, Copy, Debug)]
pub enum Sweep<'a> {
    /// The scheduler: every open repair of the tenant whose backoff is over.
    Due,
    /// A test clock's advance: the repairs of the clock's payments, at the
    /// clock's time `at`, without waiting for their backoff.
    Clock { id: &'a str, at: Timestamp },
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    pub repaired: usize,
    pub failed: usize,
}

/// Re-applies the tenant's missing ledger effects (see the module doc).
pub async fn sweep(state: &AppState, tenant: TenantId, which: Sweep<'_>) -> Result<SweepOutcome, ApiError> {
    let mut outcome = SweepOutcome::default();
    let now = state.clock.now();
    let rows = match which {
        Sweep::Due => state.store.ach_due(AchTable::LedgerRepairs, tenant, "open", now.to_rfc3339(), MAX_REPAIRS_PER_ROUND).await?,
        Sweep::Clock { .. } => state.store.ach_in_status(AchTable::LedgerRepairs, tenant, "open", MAX_REPAIRS_PER_ROUND).await?,
    };
    for row in rows {
        let repair: Repair = decode(&row.data)?;
        let at = match which {
            Sweep::Due => {
                if repair.next_attempt_at.as_deref().and_then(Timestamp::parse_rfc3339).is_some_and(|next| next > now) {
                    continue;
                }
                None
            }
            Sweep::Clock { id, at } => {
                if repair.test_clock.as_deref() != Some(id) {
                    continue;
                }
                Some(at)
            }
        };
        match repair_one(state, tenant, row, repair, at).await {
            Ok(Some(true)) => outcome.repaired += 1,
            Ok(Some(false)) => outcome.failed += 1,
            Ok(None) => {}
            // One payment's failure does not hold up the others; its backoff brings it back.
            Err(e) => tracing::warn!(tenant = tenant.0, code = e.code, message = %e.message, "an ACH ledger repair failed; a later round retries"),
        }
    }
    Ok(outcome)
}

/// One attempt: `Some(true)` repaired, `Some(false)` refused again (recorded),
/// `None` skipped (another server holds it, or the payment moved meanwhile).
async fn repair_one(state: &AppState, tenant: TenantId, row: AchRow, mut repair: Repair, at: Option<Timestamp>) -> Result<Option<bool>, ApiError> {
    let now = state.clock.now();
    // Claim it: the next attempt moves to the end of the backoff under the row's version.
    repair.attempts = repair.attempts.saturating_add(1);
    repair.next_attempt_at = Some(Timestamp::from_micros(now.micros().saturating_add(backoff_secs(repair.attempts).saturating_mul(1_000_000))).to_rfc3339());
    let claimed = repair_row(tenant, &repair, "open", row.version + 1, row.created_at)?;
    match state.store.ach_apply(vec![AchWrite::Update(AchTable::LedgerRepairs, claimed.clone())], Vec::new(), None, now).await {
        Ok(()) => {}
        Err(ApplyError::Stale) => return Ok(None),
        Err(ApplyError::Store(e)) => return Err(ApiError::from(e)),
    }
    let (p, _) = load(state, tenant, &repair.payment_id).await?;
    let at = match at {
        Some(at) => at,
        None => super::test_clocks::payment_now(state, tenant, &p).await?,
    };
    let result = reconcile(state, tenant, &p, at).await;
    let (mut fresh, fresh_row) = load(state, tenant, &repair.payment_id).await?;
    if fresh.status != p.status {
        // Moved meanwhile: the next attempt repairs against its new status.
        return Ok(None);
    }
    let mut writes = Vec::new();
    let mut events = Vec::new();
    let repaired = match result {
        Ok(done) => {
            let previous = fresh.ledger_issue.take();
            if fresh.reversal_transaction_id.is_none() {
                fresh.reversal_transaction_id = done.reversal;
            }
            if let Some((hold, until)) = done.availability_hold
                && fresh.availability_hold_transaction_id.is_none()
            {
                fresh.availability_hold_transaction_id = Some(hold);
                fresh.available_at = Some(until.to_rfc3339());
            }
            fresh.ledger_issue_attempts = 0;
            fresh.ledger_issue_next_attempt_at = None;
            let applied_text = if done.steps.is_empty() { String::from("nothing left to apply") } else { done.steps.join("; ") };
            fresh.ledger_repairs.push(LedgerRepairJson {
                issue: repair.issue.clone(),
                applied: applied_text,
                attempts: repair.attempts,
                repaired_at: now.to_rfc3339(),
            });
            writes.push(AchWrite::Update(AchTable::LedgerRepairs, repair_row(tenant, &repair, "repaired", claimed.version + 1, claimed.created_at)?));
            events.push(repaired_event(state, tenant, &fresh, previous)?);
            tracing::info!(payment_id = %fresh.id, attempts = repair.attempts, "an ACH payment's ledger effect was repaired");
            true
        }
        Err((step, refusal)) => {
            let reason = format!("{step}: {}", issue_of(&refusal));
            fresh.ledger_issue = Some(format!("{}; repair attempt {} failed ({reason})", repair.issue, repair.attempts));
            fresh.ledger_issue_attempts = repair.attempts;
            fresh.ledger_issue_next_attempt_at = repair.next_attempt_at.clone();
            repair.last_error = Some(reason);
            writes.push(AchWrite::Update(AchTable::LedgerRepairs, repair_row(tenant, &repair, "open", claimed.version + 1, claimed.created_at)?));
            tracing::warn!(payment_id = %fresh.id, attempts = repair.attempts, issue = ?fresh.ledger_issue, "an ACH payment's ledger effect is still refused");
            false
        }
    };
    writes.insert(0, update(tenant, &fresh, &fresh_row)?);
    match state.store.ach_apply(writes, events, None, now).await {
        Ok(()) => Ok(Some(repaired)),
        // The payment moved, or the row was taken, after this attempt read it: the ledger
        // effect (if any) is applied and idempotent; the next attempt records it.
        Err(ApplyError::Stale) => Ok(None),
        Err(ApplyError::Store(e)) => Err(ApiError::from(e)),
    }
}

/// The `payment.ledger_repaired` event of `p`, whose ledger issue (`previous`) was just repaired.
fn repaired_event(state: &AppState, tenant: TenantId, p: &PaymentJson, previous: Option<String>) -> Result<NewEvent, ApiError> {
    let object = serde_json::to_value(p).map_err(|e| ApiError::internal(&e))?;
    let previous = serde_json::json!({"ledger_issue": previous});
    super::new_event(state, tenant, String::from("payment.ledger_repaired"), (&p.id, payments::sequence_of(p)), object, Some(previous), state.clock.now())
}

/// What a repair applied.
#[derive(Debug, Default)]
struct Reconciled {
    steps: Vec<String>,
    /// A reversal made (or found) for the payment's transaction.
    reversal: Option<String>,
    /// A settled debit's availability hold placed (or found), and its end.
    availability_hold: Option<(String, Timestamp)>,
}

/// A step that the ledger refused, named for the issue.
type Refused = (&'static str, LedgerRefusal);

fn unavailable(step: &'static str) -> Refused {
    (step, LedgerRefusal::Unavailable)
}

fn not_pending(step: &'static str, t: &Transaction) -> Refused {
    (step, LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(t.id.clone()))))
}

/// Applies what is missing for the ledger to agree with `p`'s status, reading
/// its transactions first (so nothing is applied twice):
///
/// | status | the payment's transaction | also |
/// |---|---|---|
/// | pending; submitted debit | as it is (pending) | — |
/// | canceled, failed | voided | — |
/// | submitted credit, settled | posted | a settled debit's availability hold, while its period lasts |
/// | returned | voided if still pending; reversed if posted | a debit's availability hold voided first |
async fn reconcile(state: &AppState, tenant: TenantId, p: &PaymentJson, at: Timestamp) -> Result<Reconciled, Refused> {
    let mut done = Reconciled::default();
    let Some(id) = p.ledger_transaction_id.as_deref() else { return Ok(done) };
    if p.prenote {
        return Ok(done);
    }
    let id = TransactionId::parse(id).ok_or_else(|| unavailable("read the payment's transaction"))?;
    let t = read(state, tenant, &id).await.map_err(|()| unavailable("read the payment's transaction"))?;
    match (p.status, p.direction) {
        (PaymentStatus::Pending, _) | (PaymentStatus::Submitted, PaymentDirection::Debit) => {}
        (PaymentStatus::Canceled | PaymentStatus::Failed, _) => match t.status {
            TransactionStatus::Pending => {
                void(state, tenant, &t.id).await.map_err(|e| ("hold not voided", e))?;
                done.steps.push(format!("hold {} voided", t.id));
            }
            TransactionStatus::Voided => {}
            TransactionStatus::Posted => return Err(not_pending("hold not voided", &t)),
        },
        (PaymentStatus::Submitted | PaymentStatus::Settled, direction) => {
            match t.status {
                TransactionStatus::Pending => {
                    let step = if direction == PaymentDirection::Credit { "hold not posted" } else { "pending credit not posted" };
                    match submit_ledger(state, tenant, Command::PostTransaction { id: t.id.clone(), entries: None }).await {
                        Ok(_) | Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(_)))) => {}
                        Err(e) => return Err((step, e)),
                    }
                    done.steps.push(format!("{} posted", t.id));
                }
                TransactionStatus::Posted => {}
                TransactionStatus::Voided => return Err(not_pending("transaction voided, cannot be posted", &t)),
            }
            if p.status == PaymentStatus::Settled && direction == PaymentDirection::Debit {
                done.availability_hold = availability_hold(state, tenant, p, at, &mut done.steps).await?;
            }
        }
        (PaymentStatus::Returned, _) => match t.status {
            TransactionStatus::Pending => {
                void(state, tenant, &t.id).await.map_err(|e| ("pending transaction not voided", e))?;
                done.steps.push(format!("{} voided", t.id));
            }
            TransactionStatus::Voided => {}
            TransactionStatus::Posted => {
                // A settled debit still in its hold period: the hold goes first, as in the return itself.
                if let Some(hold) = p.availability_hold_transaction_id.as_deref().and_then(TransactionId::parse) {
                    let h = read(state, tenant, &hold).await.map_err(|()| unavailable("read the availability hold"))?;
                    if h.status == TransactionStatus::Pending && !h.is_expired(state.clock.now()) {
                        void(state, tenant, &hold).await.map_err(|e| ("availability hold not voided", e))?;
                        done.steps.push(format!("availability hold {hold} voided"));
                    }
                }
                done.reversal = match t.reversed_by.clone() {
                    Some(reversal) => Some(reversal.to_string()),
                    None => {
                        let reversal = match submit_ledger(state, tenant, Command::ReverseTransaction { id: t.id.clone() }).await {
                            Ok(Outcome::Reversal(r)) => r.id.to_string(),
                            Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::AlreadyReversed { reversal, .. }))) => reversal.to_string(),
                            Ok(_) => return Err(unavailable("reversal not applied")),
                            Err(e) => return Err(("reversal not applied", e)),
                        };
                        done.steps.push(format!("{} reversed (reversal {reversal})", t.id));
                        Some(reversal)
                    }
                };
            }
        },
    }
    Ok(done)
}

/// A settled debit's availability hold, placed if its period has not ended
/// and it has none yet. Its external id is reserved per payment, so a hold
/// another attempt placed is found, never placed twice.
async fn availability_hold(
    state: &AppState,
    tenant: TenantId,
    p: &PaymentJson,
    at: Timestamp,
    steps: &mut Vec<String>,
) -> Result<Option<(String, Timestamp)>, Refused> {
    let days = state.ach.config.debit_hold_banking_days;
    if days == 0 || p.availability_hold_transaction_id.is_some() {
        return Ok(None);
    }
    match payments::availability_hold(state, tenant, p, days, at).await {
        Ok(Some((hold, until))) => {
            steps.push(format!("availability hold {hold} placed"));
            Ok(Some((hold, until)))
        }
        // Its hold period is over: the money is available, as it would be by now.
        Ok(None) | Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::ExpiryNotInFuture))) => Ok(None),
        Err(LedgerRefusal::Refused(CommandError::DuplicateExternalId { existing })) => {
            let until = payments::hold_until(p, days, at).ok_or_else(|| unavailable("availability hold not placed"))?;
            Ok(Some((existing, until)))
        }
        Err(e) => Err(("availability hold not placed", e)),
    }
}

async fn read(state: &AppState, tenant: TenantId, id: &TransactionId) -> Result<Transaction, ()> {
    match state.store.get_transaction(tenant, id.clone(), state.clock.now()).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) | Err(_) => Err(()),
    }
}

/// Voids a pending transaction; one no longer pending counts as done.
async fn void(state: &AppState, tenant: TenantId, id: &TransactionId) -> Result<(), LedgerRefusal> {
    match submit_ledger(state, tenant, Command::VoidTransaction { id: id.clone() }).await {
        Ok(_) | Err(LedgerRefusal::Refused(CommandError::Ledger(LedgerError::TransactionNotPending(_)))) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_up_to_six_hours() {
        assert_eq!(backoff_secs(1), 60);
        assert_eq!(backoff_secs(2), 120);
        assert_eq!(backoff_secs(3), 240);
        assert_eq!(backoff_secs(9), 15_360);
        assert_eq!(backoff_secs(10), REPAIR_BACKOFF_MAX_SECS);
        assert_eq!(backoff_secs(u32::MAX), REPAIR_BACKOFF_MAX_SECS);
    }
}
