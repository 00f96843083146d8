//! Every bound in the ledger, named once. Each exists so that one request
//! cannot make the server do unbounded work or store unbounded data.

/// Entries in one transaction. Real postings rarely exceed a handful; 100
/// leaves room for fee splits and multi-leg FX while bounding row counts.
pub const MAX_ENTRIES_PER_TRANSACTION: usize = 100;
/// Transactions in one `POST /v1/transactions/batch`.
pub const MAX_BATCH_TRANSACTIONS: usize = 1000;
/// Metadata keys per object (Stripe's bound, which integrators know).
pub const MAX_METADATA_KEYS: usize = 50;
/// Length of a metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 40;
/// Length of a metadata value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 500;
/// Length of names and descriptions, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Length of an `external_id`, in characters.
pub const MAX_EXTERNAL_ID_CHARS: usize = 255;
/// Length of an `Idempotency-Key`, in bytes (all printable ASCII).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// Page size bounds for list endpoints.
pub const MAX_PAGE_LIMIT: u32 = 100;
/// Page size when the client does not say.
pub const DEFAULT_PAGE_LIMIT: u32 = 10;
/// Request body size; larger bodies answer 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Batch request bodies may carry up to 1000 transactions, so they get more room.
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Transactions in one batch that runs as an operation (`202 Accepted`):
/// ten synchronous batches' worth, which still fits the batch body limit.
pub const MAX_ASYNC_BATCH_TRANSACTIONS: usize = 10_000;
/// Operations (`202 Accepted`) one organization and environment may have
/// `pending` or `running`; past it, new ones are refused until some finish,
/// so one client cannot queue unbounded work (each may hold 8 MiB of request).
pub const MAX_OPEN_OPERATIONS_PER_TENANT: i64 = 1_000;
