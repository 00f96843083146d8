//! Double-entry ledger rules.
//!
//! An account keeps four counters (posted and pending, debits and credits);
//! every balance is derived from them. A transaction's effect on those
//! counters is a list of [`Delta`]s. [`apply`] checks every rule that
//! depends on current state (existence, currency, balance per currency,
//! overdraft limits, expected versions, overflow) against an in-memory view
//! and either changes the view or changes nothing.

use crate::clock::Timestamp;
use crate::ids::{AccountId, EntryId, TransactionId};
use crate::limits::MAX_ENTRIES_PER_TRANSACTION;
use crate::metadata::Metadata;
use crate::money::{Amount, Currency};
use crate::tenancy::TenantId;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Debit,
    Credit,
}

impl Direction {
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "debit" => Some(Direction::Debit),
            "credit" => Some(Direction::Credit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        }
    }

    pub fn opposite(self) -> Direction {
        match self {
            Direction::Debit => Direction::Credit,
            Direction::Credit => Direction::Debit,
        }
    }
}

/// The side on which an account's balance is positive: assets and expenses
/// are debit-normal, liabilities (customer wallets), equity and revenue credit-normal.
pub type NormalBalance = Direction;

/// The four counters every balance derives from. Each is a sum of positive
/// amounts, so each is non-negative; all fit in `i64` or the write is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub posted_debits: i64,
    pub posted_credits: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
}

/// Balances on the account's normal side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    /// Settled money.
    pub posted: i64,
    /// Posted plus everything pending, in and out.
    pub pending: i64,
    /// Posted less pending outflows: what may be spent now.
    pub available: i64,
}

impl Counters {
    /// Folds one stored entry into the counters it contributes to: a posted
    /// leg always, a pending leg only while its transaction is still pending
    /// (a posted or voided hold no longer counts). `None` on overflow. This is
    /// the definition the audit and the reconciliation recompute counters by.
    pub fn add_entry(&mut self, leg: Leg, direction: Direction, amount: i64, status: TransactionStatus) -> Option<()> {
        if leg == Leg::Pending && status != TransactionStatus::Pending {
            return Some(());
        }
        let slot = match (leg, direction) {
            (Leg::Posted, Direction::Debit) => &mut self.posted_debits,
            (Leg::Posted, Direction::Credit) => &mut self.posted_credits,
            (Leg::Pending, Direction::Debit) => &mut self.pending_debits,
            (Leg::Pending, Direction::Credit) => &mut self.pending_credits,
        };
        *slot = slot.checked_add(amount)?;
        Some(())
    }

    /// `self + (to - from)`, counter by counter: a correction measured against
    /// one state, applied to a later one. `None` on overflow.
    pub fn shifted(&self, from: &Counters, to: &Counters) -> Option<Counters> {
        let shift = |now: i64, a: i64, b: i64| now.checked_add(b.checked_sub(a)?);
        Some(Counters {
            posted_debits: shift(self.posted_debits, from.posted_debits, to.posted_debits)?,
            posted_credits: shift(self.posted_credits, from.posted_credits, to.posted_credits)?,
            pending_debits: shift(self.pending_debits, from.pending_debits, to.pending_debits)?,
            pending_credits: shift(self.pending_credits, from.pending_credits, to.pending_credits)?,
        })
    }

    /// The balances, or `None` when one would not fit in `i64` (which
    /// [`apply`] never lets happen to a stored account).
    pub fn balances(&self, normal: NormalBalance) -> Option<Balances> {
        let (pos_in, pos_out, pend_in, pend_out) = match normal {
            Direction::Debit => (self.posted_debits, self.posted_credits, self.pending_debits, self.pending_credits),
            Direction::Credit => (self.posted_credits, self.posted_debits, self.pending_credits, self.pending_debits),
        };
        let [pos_in, pos_out, pend_in, pend_out] = [pos_in, pos_out, pend_in, pend_out].map(i128::from);
        let posted = pos_in - pos_out;
        let pending = posted + pend_in - pend_out;
        let available = posted - pend_out;
        Some(Balances { posted: i64::try_from(posted).ok()?, pending: i64::try_from(pending).ok()?, available: i64::try_from(available).ok()? })
    }

    fn slot(&mut self, leg: Leg, direction: Direction) -> &mut i64 {
        match (leg, direction) {
            (Leg::Posted, Direction::Debit) => &mut self.posted_debits,
            (Leg::Posted, Direction::Credit) => &mut self.posted_credits,
            (Leg::Pending, Direction::Debit) => &mut self.pending_debits,
            (Leg::Pending, Direction::Credit) => &mut self.pending_credits,
        }
    }
}

/// An account as the engine sees it: only what the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    pub id: AccountId,
    pub tenant: TenantId,
    pub currency: Currency,
    pub normal_balance: NormalBalance,
    /// `Some(0)` forbids overdraft, `Some(-n)` allows `n` of overdraft, `None` means no limit.
    pub min_available_balance: Option<i64>,
    pub counters: Counters,
    /// Bumped once by every transaction that changes the account.
    pub version: i64,
}

/// Whether an entry is a hold (counts in pending) or settled money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    Pending,
    Posted,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Pending => "pending",
            Leg::Posted => "posted",
        }
    }

    pub fn parse(text: &str) -> Option<Leg> {
        match text {
            "pending" => Some(Leg::Pending),
            "posted" => Some(Leg::Posted),
            _ => None,
        }
    }
}

/// One requested leg of a transaction, parsed and bounded but not yet checked
/// against the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryDraft {
    pub account_id: AccountId,
    pub direction: Direction,
    pub amount: Amount,
    /// When the client states a currency it must equal the account's.
    pub currency: Option<Currency>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeltaOp {
    Add,
    Release,
}

/// One change to one account's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    account_id: AccountId,
    direction: Direction,
    amount: i64,
    currency: Option<Currency>,
    leg: Leg,
    op: DeltaOp,
}

/// Why a ledger change was refused. Each variant is one stable API error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("no account {0} in this organization and environment")]
    AccountNotFound(AccountId),
    #[error("entry currency {entry} does not match account {account}'s currency {account_currency}")]
    CurrencyMismatch { account: AccountId, entry: Currency, account_currency: Currency },
    #[error("debits ({debits}) and credits ({credits}) in {currency} differ")]
    Unbalanced { currency: Currency, debits: i128, credits: i128 },
    #[error("account {0} does not have enough available balance")]
    InsufficientFunds(AccountId),
    #[error("account {account} is at lock version {actual}, not the expected {expected}")]
    VersionConflict { account: AccountId, expected: i64, actual: i64 },
    #[error("an expected lock version names account {0}, which this transaction does not touch")]
    VersionForUntouchedAccount(AccountId),
    #[error("this change would overflow a balance of account {0}")]
    BalanceOverflow(AccountId),
    #[error("transaction {0} is not pending")]
    TransactionNotPending(TransactionId),
    #[error("transaction {0} is not posted; only posted transactions can be reversed")]
    TransactionNotPosted(TransactionId),
    #[error("transaction {transaction} was already reversed by {reversal}")]
    AlreadyReversed { transaction: TransactionId, reversal: TransactionId },
    #[error("posting {account_id} {direction:?} exceeds what the hold reserved for it")]
    AmountExceedsHold { account_id: AccountId, direction: Direction },
    /// Checked by the engine, after an idempotent replay had its chance.
    #[error("expires_at must be in the future")]
    ExpiryNotInFuture,
    #[error("ledger invariant broken for account {0}: a release exceeds its pending counter")]
    Invariant(AccountId),
}

/// The accounts a command may touch, loaded by the engine.
/// Hashed with foldhash: the engine hashes account ids several times per
/// transfer, and its keys are ids the server made, not chosen by clients.
pub type AccountView = HashMap<AccountId, AccountState, foldhash::fast::RandomState>;

/// Applies `deltas` to the accounts in `view` as one unit: every rule holds
/// afterwards or nothing changed. Each touched account's version goes up by one.
pub fn apply(view: &mut AccountView, tenant: TenantId, deltas: &[Delta], expected_versions: &BTreeMap<AccountId, i64>) -> Result<(), LedgerError> {
    // Work on copies of the touched accounts; write back only on success.
    let mut touched: Vec<(AccountState, Balances)> = Vec::new();
    for delta in deltas {
        let account = match view.get(&delta.account_id) {
            Some(a) if a.tenant == tenant => a,
            _ => return Err(LedgerError::AccountNotFound(delta.account_id.clone())),
        };
        if let Some(entry_currency) = delta.currency
            && entry_currency != account.currency
        {
            return Err(LedgerError::CurrencyMismatch { account: account.id.clone(), entry: entry_currency, account_currency: account.currency });
        }
        if !touched.iter().any(|(a, _)| a.id == account.id) {
            let before = account.counters.balances(account.normal_balance).ok_or_else(|| LedgerError::BalanceOverflow(account.id.clone()))?;
            touched.push((account.clone(), before));
        }
    }
    for (account_id, expected) in expected_versions {
        let Some((account, _)) = touched.iter().find(|(a, _)| &a.id == account_id) else {
            return Err(LedgerError::VersionForUntouchedAccount(account_id.clone()));
        };
        if account.version != *expected {
            return Err(LedgerError::VersionConflict { account: account_id.clone(), expected: *expected, actual: account.version });
        }
    }
    check_balanced(deltas, &touched)?;
    for delta in deltas {
        let Some((account, _)) = touched.iter_mut().find(|(a, _)| a.id == delta.account_id) else {
            return Err(LedgerError::AccountNotFound(delta.account_id.clone()));
        };
        let slot = account.counters.slot(delta.leg, delta.direction);
        *slot = match delta.op {
            DeltaOp::Add => slot.checked_add(delta.amount).ok_or_else(|| LedgerError::BalanceOverflow(account.id.clone()))?,
            DeltaOp::Release => {
                let left = slot.checked_sub(delta.amount).ok_or_else(|| LedgerError::Invariant(account.id.clone()))?;
                if left < 0 {
                    return Err(LedgerError::Invariant(account.id.clone()));
                }
                left
            }
        };
    }
    for (account, before) in &mut touched {
        let after = account.counters.balances(account.normal_balance).ok_or_else(|| LedgerError::BalanceOverflow(account.id.clone()))?;
        // A limit only stops changes that lower what is available: money
        // arriving into an overdrawn account is always welcome.
        if let Some(min) = account.min_available_balance
            && after.available < before.available
            && after.available < min
        {
            return Err(LedgerError::InsufficientFunds(account.id.clone()));
        }
        account.version += 1;
    }
    for (account, _) in touched {
        view.insert(account.id.clone(), account);
    }
    Ok(())
}

/// Debits equal credits per currency, among the entries each leg adds.
fn check_balanced(deltas: &[Delta], touched: &[(AccountState, Balances)]) -> Result<(), LedgerError> {
    let mut sums: BTreeMap<(Currency, bool), (i128, i128)> = BTreeMap::new();
    for delta in deltas.iter().filter(|d| d.op == DeltaOp::Add) {
        let currency = touched
            .iter()
            .find(|(a, _)| a.id == delta.account_id)
            .map(|(a, _)| a.currency)
            .ok_or_else(|| LedgerError::AccountNotFound(delta.account_id.clone()))?;
        let sum = sums.entry((currency, delta.leg == Leg::Posted)).or_default();
        match delta.direction {
            Direction::Debit => sum.0 += i128::from(delta.amount),
            Direction::Credit => sum.1 += i128::from(delta.amount),
        }
    }
    for ((currency, _), (debits, credits)) in sums {
        if debits != credits {
            return Err(LedgerError::Unbalanced { currency, debits, credits });
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    Pending,
    Posted,
    Voided,
}

impl TransactionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Pending => "pending",
            TransactionStatus::Posted => "posted",
            TransactionStatus::Voided => "voided",
        }
    }

    pub fn parse(text: &str) -> Option<TransactionStatus> {
        match text {
            "pending" => Some(TransactionStatus::Pending),
            "posted" => Some(TransactionStatus::Posted),
            "voided" => Some(TransactionStatus::Voided),
            _ => None,
        }
    }
}

/// One stored leg. Entries are immutable once written; a hold that is posted
/// keeps its pending legs (now `archived`) and gains posted legs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub transaction_id: TransactionId,
    pub account_id: AccountId,
    pub direction: Direction,
    pub amount: i64,
    pub currency: Currency,
    pub leg: Leg,
    pub effective_at: Timestamp,
    pub created_at: Timestamp,
}

/// How an entry reads given its transaction's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    Pending,
    Posted,
    Voided,
    /// A hold's pending leg after the hold was posted: replaced by posted legs.
    Archived,
}

impl EntryStatus {
    pub fn of(leg: Leg, transaction: TransactionStatus) -> EntryStatus {
        match (leg, transaction) {
            (Leg::Posted, _) => EntryStatus::Posted,
            (Leg::Pending, TransactionStatus::Pending) => EntryStatus::Pending,
            (Leg::Pending, TransactionStatus::Voided) => EntryStatus::Voided,
            (Leg::Pending, TransactionStatus::Posted) => EntryStatus::Archived,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Pending => "pending",
            EntryStatus::Posted => "posted",
            EntryStatus::Voided => "voided",
            EntryStatus::Archived => "archived",
        }
    }
}

/// Why a pending transaction stopped being pending without being posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoidReason {
    Requested,
    Expired,
}

impl VoidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            VoidReason::Requested => "requested",
            VoidReason::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<VoidReason> {
        match text {
            "requested" => Some(VoidReason::Requested),
            "expired" => Some(VoidReason::Expired),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub id: TransactionId,
    pub tenant: TenantId,
    pub status: TransactionStatus,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub posted_at: Option<Timestamp>,
    pub voided_at: Option<Timestamp>,
    pub void_reason: Option<VoidReason>,
    pub reverses: Option<TransactionId>,
    pub reversed_by: Option<TransactionId>,
    pub metadata: Metadata,
    /// The correlation id of the request that created it (set by the engine).
    pub correlation_id: Option<crate::correlation::CorrelationId>,
    /// All legs ever written, pending ones first, each group in request order.
    pub entries: Vec<Entry>,
}

impl Transaction {
    /// The legs that describe the transaction now: posted legs once posted, the hold's legs otherwise.
    pub fn current_entries(&self) -> impl Iterator<Item = &Entry> {
        let leg = if self.status == TransactionStatus::Posted { Leg::Posted } else { Leg::Pending };
        self.entries.iter().filter(move |e| e.leg == leg)
    }

    /// A hold past its expiry no longer counts anywhere, even before the
    /// engine has written its void.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.status == TransactionStatus::Pending && self.expires_at.is_some_and(|at| at <= now)
    }

    /// The transaction as a reader at `now` must see it: a hold past its
    /// expiry reads as voided even before the engine's sweep has written that.
    pub fn as_seen_at(mut self, now: Timestamp) -> Transaction {
        if self.is_expired(now) {
            self.status = TransactionStatus::Voided;
            self.voided_at = self.expires_at;
            self.void_reason = Some(VoidReason::Expired);
        }
        self
    }

    /// The account ids this transaction touches, sorted (the engine's lock order).
    pub fn account_ids(&self) -> Vec<AccountId> {
        let mut ids: Vec<AccountId> = self.entries.iter().map(|e| e.account_id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// A requested new transaction, parsed and bounded at the API boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionDraft {
    pub entries: Vec<EntryDraft>,
    pub status: TransactionStatus,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub effective_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub expected_versions: BTreeMap<AccountId, i64>,
    pub metadata: Metadata,
}

/// Why a draft is malformed regardless of any stored state (400s).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DraftError {
    #[error("a transaction needs at least 2 entries")]
    TooFewEntries,
    #[error("a transaction may have at most {MAX_ENTRIES_PER_TRANSACTION} entries")]
    TooManyEntries,
    #[error("expires_at is only allowed on pending transactions")]
    ExpiryOnPosted,
    #[error("status must be pending or posted")]
    VoidedOnCreate,
}

impl TransactionDraft {
    /// The checks that need no stored state.
    pub fn validate(&self) -> Result<(), DraftError> {
        validate_entry_count(&self.entries)?;
        if self.status == TransactionStatus::Voided {
            return Err(DraftError::VoidedOnCreate);
        }
        if self.expires_at.is_some() && self.status != TransactionStatus::Pending {
            return Err(DraftError::ExpiryOnPosted);
        }
        Ok(())
    }

    /// The accounts the draft names, sorted and unique.
    pub fn account_ids(&self) -> Vec<AccountId> {
        let mut ids: Vec<AccountId> = self.entries.iter().map(|e| e.account_id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

pub fn validate_entry_count(entries: &[EntryDraft]) -> Result<(), DraftError> {
    if entries.len() < 2 {
        return Err(DraftError::TooFewEntries);
    }
    if entries.len() > MAX_ENTRIES_PER_TRANSACTION {
        return Err(DraftError::TooManyEntries);
    }
    Ok(())
}

fn deltas_for(entries: &[EntryDraft], leg: Leg, op: DeltaOp) -> Vec<Delta> {
    entries
        .iter()
        .map(|e| Delta { account_id: e.account_id.clone(), direction: e.direction, amount: e.amount.minor(), currency: e.currency, leg, op })
        .collect()
}

fn release_deltas(transaction: &Transaction) -> Vec<Delta> {
    transaction
        .entries
        .iter()
        .filter(|e| e.leg == Leg::Pending)
        .map(|e| Delta { account_id: e.account_id.clone(), direction: e.direction, amount: e.amount, currency: None, leg: Leg::Pending, op: DeltaOp::Release })
        .collect()
}

fn make_entries(
    id: &TransactionId,
    drafts: &[EntryDraft],
    leg: Leg,
    view: &AccountView,
    effective_at: Timestamp,
    now: Timestamp,
) -> Result<Vec<Entry>, LedgerError> {
    drafts
        .iter()
        .enumerate()
        .map(|(position, d)| {
            let account = view.get(&d.account_id).ok_or_else(|| LedgerError::AccountNotFound(d.account_id.clone()))?;
            Ok(Entry {
                id: EntryId::for_transaction(id, position, leg == Leg::Posted),
                transaction_id: id.clone(),
                account_id: d.account_id.clone(),
                direction: d.direction,
                amount: d.amount.minor(),
                currency: account.currency,
                leg,
                effective_at,
                created_at: now,
            })
        })
        .collect()
}

/// Creates a transaction: checks every rule against `view` and updates it.
pub fn create(view: &mut AccountView, tenant: TenantId, id: TransactionId, draft: &TransactionDraft, now: Timestamp) -> Result<Transaction, LedgerError> {
    if draft.expires_at.is_some_and(|at| at <= now) {
        return Err(LedgerError::ExpiryNotInFuture);
    }
    let leg = if draft.status == TransactionStatus::Pending { Leg::Pending } else { Leg::Posted };
    apply(view, tenant, &deltas_for(&draft.entries, leg, DeltaOp::Add), &draft.expected_versions)?;
    let effective_at = draft.effective_at.unwrap_or(now);
    let entries = make_entries(&id, &draft.entries, leg, view, effective_at, now)?;
    Ok(Transaction {
        id,
        tenant,
        status: draft.status,
        description: draft.description.clone(),
        external_id: draft.external_id.clone(),
        effective_at,
        expires_at: draft.expires_at,
        created_at: now,
        posted_at: (draft.status == TransactionStatus::Posted).then_some(now),
        voided_at: None,
        void_reason: None,
        reverses: None,
        reversed_by: None,
        metadata: draft.metadata.clone(),
        correlation_id: None,
        entries,
    })
}

/// Posts a hold, in full or (with `entries`) in part: the hold's legs are
/// released and posted legs written; what was not posted becomes available again.
pub fn post(view: &mut AccountView, transaction: &mut Transaction, entries: Option<&[EntryDraft]>, now: Timestamp) -> Result<(), LedgerError> {
    if transaction.status != TransactionStatus::Pending || transaction.is_expired(now) {
        return Err(LedgerError::TransactionNotPending(transaction.id.clone()));
    }
    let held: Vec<EntryDraft> = transaction
        .current_entries()
        .filter_map(|e| Amount::new(e.amount).map(|amount| EntryDraft { account_id: e.account_id.clone(), direction: e.direction, amount, currency: None }))
        .collect();
    let posting: Vec<EntryDraft> = match entries {
        None => held.clone(),
        Some(requested) => {
            let mut reserved: BTreeMap<(&AccountId, Direction), i128> = BTreeMap::new();
            for h in &held {
                *reserved.entry((&h.account_id, h.direction)).or_default() += i128::from(h.amount.minor());
            }
            let mut asked: BTreeMap<(&AccountId, Direction), i128> = BTreeMap::new();
            for r in requested {
                *asked.entry((&r.account_id, r.direction)).or_default() += i128::from(r.amount.minor());
            }
            for ((account_id, direction), amount) in asked {
                if amount > reserved.get(&(account_id, direction)).copied().unwrap_or(0) {
                    return Err(LedgerError::AmountExceedsHold { account_id: account_id.clone(), direction });
                }
            }
            requested.to_vec()
        }
    };
    let mut deltas = release_deltas(transaction);
    deltas.extend(deltas_for(&posting, Leg::Posted, DeltaOp::Add));
    apply(view, transaction.tenant, &deltas, &BTreeMap::new())?;
    // The captured money moves now: the posted legs take effect when the hold
    // ends, so no instant counts the same money as both held and posted.
    let posted = make_entries(&transaction.id, &posting, Leg::Posted, view, transaction.effective_at.max(now), now)?;
    transaction.entries.extend(posted);
    transaction.status = TransactionStatus::Posted;
    transaction.posted_at = Some(now);
    Ok(())
}

/// Voids a hold, releasing everything it reserved. `Expired` is the engine's own sweep.
pub fn void(view: &mut AccountView, transaction: &mut Transaction, reason: VoidReason, now: Timestamp) -> Result<(), LedgerError> {
    let still_pending = transaction.status == TransactionStatus::Pending;
    let allowed = match reason {
        VoidReason::Requested => still_pending && !transaction.is_expired(now),
        VoidReason::Expired => still_pending,
    };
    if !allowed {
        return Err(LedgerError::TransactionNotPending(transaction.id.clone()));
    }
    apply(view, transaction.tenant, &release_deltas(transaction), &BTreeMap::new())?;
    transaction.status = TransactionStatus::Voided;
    // An expired hold stopped counting at its expiry, whenever the sweep ran.
    transaction.voided_at = Some(match reason {
        VoidReason::Expired => transaction.expires_at.unwrap_or(now).min(now),
        VoidReason::Requested => now,
    });
    transaction.void_reason = Some(reason);
    Ok(())
}

/// Reverses a posted transaction with a new posted one whose legs are swapped.
pub fn reverse(view: &mut AccountView, original: &mut Transaction, id: TransactionId, now: Timestamp) -> Result<Transaction, LedgerError> {
    if let Some(reversal) = &original.reversed_by {
        return Err(LedgerError::AlreadyReversed { transaction: original.id.clone(), reversal: reversal.clone() });
    }
    if original.status != TransactionStatus::Posted {
        return Err(LedgerError::TransactionNotPosted(original.id.clone()));
    }
    let swapped: Vec<EntryDraft> = original
        .current_entries()
        .filter_map(|e| {
            Amount::new(e.amount).map(|amount| EntryDraft { account_id: e.account_id.clone(), direction: e.direction.opposite(), amount, currency: None })
        })
        .collect();
    let draft = TransactionDraft {
        entries: swapped,
        status: TransactionStatus::Posted,
        description: Some(format!("Reversal of {}", original.id)),
        external_id: None,
        effective_at: None,
        expires_at: None,
        expected_versions: BTreeMap::new(),
        metadata: Metadata::new(),
    };
    let mut reversal = create(view, original.tenant, id, &draft, now)?;
    reversal.reverses = Some(original.id.clone());
    original.reversed_by = Some(reversal.id.clone());
    Ok(reversal)
}

#[cfg(test)]
mod tests;
