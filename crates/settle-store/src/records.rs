//! What the store keeps besides the core's own types: full account records,
//! API keys, idempotency records, pages.

use settle_core::clock::Timestamp;
use settle_core::ids::{AccountId, ApiKeyId, EntryId, OrgId, TransactionId};
use settle_core::ledger::AccountState;
use settle_core::metadata::Metadata;
use settle_core::tenancy::{Environment, Scope, TenantId};

/// An account as the API shows it: the engine's state plus descriptive fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub state: AccountState,
    pub name: String,
    pub external_id: Option<String>,
    pub metadata: Metadata,
    pub created_at: Timestamp,
    /// The correlation id of the request that opened it.
    pub correlation_id: Option<settle_core::correlation::CorrelationId>,
    /// The customer the account belongs to, if any (kept in `customer_accounts`).
    pub customer: Option<CustomerLink>,
}

/// An account's owner, and who made it so (an API key id), for the audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerLink {
    pub customer_id: String,
    pub actor: String,
}

/// A request to open an account, parsed at the boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub name: String,
    pub currency: settle_core::money::Currency,
    pub normal_balance: settle_core::ledger::NormalBalance,
    pub min_available_balance: Option<i64>,
    pub external_id: Option<String>,
    pub metadata: Metadata,
    /// Opens the account as the customer's, in the same transaction (the
    /// API checked that the customer exists).
    pub customer: Option<CustomerLink>,
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub org_name: String,
    pub environment: Environment,
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// The organization's pinned API version.
    pub api_version: settle_core::api_version::ApiVersion,
    /// A rate limit of its own (migration 0003); `None`: the server's default.
    pub rate_limit: Option<settle_core::tenancy::RateLimit>,
}

/// The first outcome of a request sent with an `Idempotency-Key`, stored in
/// the same database transaction as its effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub tenant: TenantId,
    pub key: String,
    /// SHA-256 (hex) of API key id, method, path and canonical body.
    pub fingerprint: String,
    pub response: StoredResponse,
    pub created_at: Timestamp,
}

/// An HTTP response, byte for byte, so a replay is identical to the first answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Keyset pagination: at most `limit` items strictly after or before a cursor id,
/// newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Cursor,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    Start,
    /// Items older than this id (the next page).
    After(String),
    /// Items newer than this id (the previous page).
    Before(String),
}

impl Cursor {
    /// Where a keyset walk starts: `(descending, bound)`, newest first from
    /// the top or below the cursor, oldest first above it. Ids compare as
    /// strings; every id starts with a lower-case letter, so all sort below
    /// `"~"`. A walk over an account's entries (`over_entries`) gets cursors
    /// that name transactions, so they become the bounds of that
    /// transaction's entry-id range.
    pub fn keyset_start(&self, over_entries: bool) -> (bool, String) {
        let to_entry = |id: &str, upper: bool| match TransactionId::parse(id) {
            Some(t) if over_entries => {
                let (lo, hi) = EntryId::range_of(&t);
                if upper { hi } else { lo }
            }
            _ => id.to_owned(),
        };
        match self {
            Cursor::Start => (true, String::from("~")),
            Cursor::After(id) => (true, to_entry(id, false)),
            Cursor::Before(id) => (false, to_entry(id, true)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in cursor order.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest) -> Page<T> {
        let limit = request.limit as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        if matches!(request.cursor, Cursor::Before(_)) {
            // Fetched oldest-first to find the nearest newer items; show newest first.
            rows.reverse();
        }
        Page { items: rows, has_more }
    }
}

/// An account's stored record in the tamper-evident log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub seq: i64,
    pub content: Vec<u8>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl LogRecord {
    /// The record with its content as JSON, however it was stored, or as
    /// stored when it cannot be unpacked ([`crate::log_content::readable`]).
    pub fn unpacked(mut self) -> LogRecord {
        self.content = crate::log_content::readable(self.seq, std::mem::take(&mut self.content));
        self
    }
}

/// A stored entry row with its transaction's status, for entry lists and audits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    pub entry: settle_core::ledger::Entry,
    pub transaction_status: settle_core::ledger::TransactionStatus,
}

/// Re-export for callers that build account ids.
pub type AccountKey = AccountId;
