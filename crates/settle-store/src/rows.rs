//! Row shapes shared by both backends, and their conversion into domain
//! types. A row that does not convert is reported as corrupt, never guessed at.

use crate::error::StoreError;
use crate::records::AccountRecord;
use crate::records::ApiKeyRecord;
use settle_core::api_version::ApiVersion;
use settle_core::clock::Timestamp;
use settle_core::correlation::CorrelationId;
use settle_core::ids::{AccountId, EntryId, TransactionId};
use settle_core::ids::{ApiKeyId, OrgId};
use settle_core::ledger::{AccountState, Counters, Direction, Entry, Leg, Transaction, TransactionStatus, VoidReason};
use settle_core::metadata::Metadata;
use settle_core::money::Currency;
use settle_core::tenancy::RateLimit;
use settle_core::tenancy::{Environment, Scope, TenantId};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

pub fn currency(text: &str) -> Result<Currency, StoreError> {
    Currency::parse(text).ok_or_else(|| corrupt("currency", text))
}

pub fn direction(text: &str) -> Result<Direction, StoreError> {
    Direction::parse(text).ok_or_else(|| corrupt("direction", text))
}

pub fn metadata(text: &str) -> Result<Metadata, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt("metadata", text))
}

pub fn metadata_json(metadata: &Metadata) -> String {
    serde_json::to_string(metadata).unwrap_or_else(|_| String::from("{}"))
}

pub struct AccountRow {
    pub id: String,
    pub tenant_id: i64,
    pub name: String,
    pub currency: String,
    pub normal_balance: String,
    pub min_available_balance: Option<i64>,
    pub external_id: Option<String>,
    pub metadata: String,
    pub created_at: i64,
    pub posted_debits: i64,
    pub posted_credits: i64,
    pub pending_debits: i64,
    pub pending_credits: i64,
    pub version: i64,
    pub correlation_id: Option<String>,
}

impl AccountRow {
    pub fn into_record(self) -> Result<AccountRecord, StoreError> {
        Ok(AccountRecord {
            state: AccountState {
                id: AccountId::from_trusted(self.id),
                tenant: TenantId(self.tenant_id),
                currency: currency(&self.currency)?,
                normal_balance: direction(&self.normal_balance)?,
                min_available_balance: self.min_available_balance,
                counters: Counters {
                    posted_debits: self.posted_debits,
                    posted_credits: self.posted_credits,
                    pending_debits: self.pending_debits,
                    pending_credits: self.pending_credits,
                },
                version: self.version,
            },
            name: self.name,
            external_id: self.external_id,
            metadata: metadata(&self.metadata)?,
            created_at: Timestamp::from_micros(self.created_at),
            correlation_id: self.correlation_id.map(CorrelationId::from_trusted),
            customer: None,
        })
    }
}

pub struct TransactionRow {
    pub id: String,
    pub tenant_id: i64,
    pub status: String,
    pub description: Option<String>,
    pub external_id: Option<String>,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub posted_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub void_reason: Option<String>,
    pub reverses: Option<String>,
    pub reversed_by: Option<String>,
    pub metadata: String,
    pub correlation_id: Option<String>,
}

impl TransactionRow {
    pub fn into_transaction(self, entries: Vec<Entry>) -> Result<Transaction, StoreError> {
        Ok(Transaction {
            status: TransactionStatus::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))?,
            void_reason: match self.void_reason.as_deref() {
                None => None,
                Some(r) => Some(VoidReason::parse(r).ok_or_else(|| corrupt("void_reason", r))?),
            },
            id: TransactionId::from_trusted(self.id),
            tenant: TenantId(self.tenant_id),
            description: self.description,
            external_id: self.external_id,
            effective_at: Timestamp::from_micros(self.effective_at),
            expires_at: self.expires_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(self.created_at),
            posted_at: self.posted_at.map(Timestamp::from_micros),
            voided_at: self.voided_at.map(Timestamp::from_micros),
            reverses: self.reverses.map(TransactionId::from_trusted),
            reversed_by: self.reversed_by.map(TransactionId::from_trusted),
            metadata: metadata(&self.metadata)?,
            correlation_id: self.correlation_id.map(CorrelationId::from_trusted),
            entries,
        })
    }
}

pub struct EntryRowData {
    pub id: String,
    pub transaction_id: String,
    pub account_id: String,
    pub direction: String,
    pub amount: i64,
    pub currency: String,
    pub leg: String,
    pub effective_at: i64,
    pub created_at: i64,
}

impl EntryRowData {
    pub fn into_entry(self) -> Result<Entry, StoreError> {
        Ok(Entry {
            direction: direction(&self.direction)?,
            currency: currency(&self.currency)?,
            leg: Leg::parse(&self.leg).ok_or_else(|| corrupt("leg", &self.leg))?,
            id: EntryId::from_trusted(self.id),
            transaction_id: TransactionId::from_trusted(self.transaction_id),
            account_id: AccountId::from_trusted(self.account_id),
            amount: self.amount,
            effective_at: Timestamp::from_micros(self.effective_at),
            created_at: Timestamp::from_micros(self.created_at),
        })
    }
}

/// Groups entries (sorted by id) under their transactions.
pub fn attach_entries(rows: Vec<TransactionRow>, mut entries: Vec<Entry>) -> Result<Vec<Transaction>, StoreError> {
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    let mut by_tx: std::collections::HashMap<String, Vec<Entry>> = std::collections::HashMap::new();
    for e in entries {
        by_tx.entry(e.transaction_id.to_string()).or_default().push(e);
    }
    rows.into_iter()
        .map(|row| {
            let own = by_tx.remove(&row.id).unwrap_or_default();
            row.into_transaction(own)
        })
        .collect()
}

/// Which keys `api_keys` returns.
#[derive(Clone, Copy, Debug)]
pub enum KeyFilter<'a> {
    All,
    SecretHash(&'a str),
    Id(&'a str),
}

pub fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

pub struct KeyRow {
    pub id: String,
    pub org_id: String,
    pub org_name: String,
    pub environment: String,
    pub tenant: i64,
    pub scopes: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub api_version: String,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_burst: Option<i64>,
}

impl KeyRow {
    pub fn into_record(self) -> Result<ApiKeyRecord, StoreError> {
        Ok(ApiKeyRecord {
            environment: Environment::parse(&self.environment).ok_or_else(|| StoreError::Corrupt(format!("environment {:?}", self.environment)))?,
            scopes: self
                .scopes
                .split_whitespace()
                .map(|s| Scope::parse(s).ok_or_else(|| StoreError::Corrupt(format!("scope {s:?}"))))
                .collect::<Result<_, _>>()?,
            id: ApiKeyId::from_trusted(self.id),
            org_id: OrgId::from_trusted(self.org_id),
            org_name: self.org_name,
            tenant: TenantId(self.tenant),
            created_at: Timestamp::from_micros(self.created_at),
            revoked_at: self.revoked_at.map(Timestamp::from_micros),
            api_version: ApiVersion::parse(&self.api_version).ok_or_else(|| StoreError::Corrupt(format!("api_version {:?}", self.api_version)))?,
            rate_limit: match (self.rate_limit_per_second, self.rate_limit_burst) {
                (Some(rate), Some(burst)) => Some(
                    u32::try_from(rate)
                        .ok()
                        .zip(u32::try_from(burst).ok())
                        .and_then(|(rate, burst)| RateLimit::new(rate, burst))
                        .ok_or_else(|| StoreError::Corrupt(format!("rate limit {rate}/{burst}")))?,
                ),
                _ => None,
            },
        })
    }
}

/// One entry with what decides whether it counted at some instant.
pub struct AsOfRow {
    pub leg: String,
    pub direction: String,
    pub amount: i64,
    pub posted_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl AsOfRow {
    /// Adds this entry to `counters` if it counted at `at`: posted legs from
    /// their effective time on; a hold's legs from then until it was posted,
    /// voided or expired.
    pub fn fold_into(&self, counters: &mut Counters, at: Timestamp) -> Result<(), StoreError> {
        let direction = direction(&self.direction)?;
        let at = at.micros();
        let live = match self.leg.as_str() {
            "posted" => true,
            "pending" => {
                let ended = [self.posted_at, self.voided_at, self.expires_at].into_iter().flatten().min();
                ended.is_none_or(|end| end > at)
            }
            other => return Err(StoreError::Corrupt(format!("leg {other:?}"))),
        };
        if !live {
            return Ok(());
        }
        let slot = match (self.leg.as_str(), direction) {
            ("posted", settle_core::ledger::Direction::Debit) => &mut counters.posted_debits,
            ("posted", settle_core::ledger::Direction::Credit) => &mut counters.posted_credits,
            (_, settle_core::ledger::Direction::Debit) => &mut counters.pending_debits,
            (_, settle_core::ledger::Direction::Credit) => &mut counters.pending_credits,
        };
        *slot = slot.checked_add(self.amount).ok_or_else(|| StoreError::Corrupt(String::from("balance overflow while folding entries")))?;
        Ok(())
    }
}

/// An account as a reader must see it while holds that have expired are
/// not yet voided by the engine: their pending legs no longer count.
/// `expired_hold_entries` are the entries of those holds (any account).
pub fn without_expired_holds(mut record: AccountRecord, expired_hold_entries: &[Entry]) -> AccountRecord {
    for e in expired_hold_entries.iter().filter(|e| e.account_id == record.state.id && e.leg == Leg::Pending) {
        let c = &mut record.state.counters;
        match e.direction {
            Direction::Debit => c.pending_debits = c.pending_debits.saturating_sub(e.amount),
            Direction::Credit => c.pending_credits = c.pending_credits.saturating_sub(e.amount),
        }
    }
    record
}

/// Adds entry `e` of transaction `t` to `counters` if it counted at `at`
/// (the caller has already kept only entries effective by then).
pub fn fold_as_of(t: &settle_core::ledger::Transaction, e: &Entry, counters: &mut Counters, at: Timestamp) -> Result<(), StoreError> {
    AsOfRow {
        leg: e.leg.as_str().to_owned(),
        direction: e.direction.as_str().to_owned(),
        amount: e.amount,
        posted_at: t.posted_at.map(Timestamp::micros),
        voided_at: t.voided_at.map(Timestamp::micros),
        expires_at: t.expires_at.map(Timestamp::micros),
    }
    .fold_into(counters, at)
}

/// Adds one stored entry, given as its stored text columns, to `sum`.
pub fn fold_entry(sum: &mut Counters, leg: &str, direction: &str, amount: i64, status: &str) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("stored entry has an unknown {what}"));
    let leg = Leg::parse(leg).ok_or_else(|| corrupt("leg"))?;
    let direction = Direction::parse(direction).ok_or_else(|| corrupt("direction"))?;
    let status = TransactionStatus::parse(status).ok_or_else(|| corrupt("transaction status"))?;
    sum.add_entry(leg, direction, amount, status).ok_or_else(|| StoreError::Corrupt(String::from("an account's entries overflow its counters")))
}
