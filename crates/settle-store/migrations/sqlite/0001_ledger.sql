-- Tenancy and credentials.
CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE tenants (
    id INTEGER PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'live')),
    UNIQUE (org_id, environment)
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id),
    secret_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- The ledger. Amounts and counters are integer minor units; times are
-- microseconds since the Unix epoch (UTC).
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    normal_balance TEXT NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
    min_available_balance INTEGER,
    external_id TEXT,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    posted_debits INTEGER NOT NULL CHECK (posted_debits >= 0),
    posted_credits INTEGER NOT NULL CHECK (posted_credits >= 0),
    pending_debits INTEGER NOT NULL CHECK (pending_debits >= 0),
    pending_credits INTEGER NOT NULL CHECK (pending_credits >= 0),
    version INTEGER NOT NULL,
    -- The newest transaction touching this account and how many there are
    -- (see history.rs: an account's history is a chain, not an index).
    head_transaction_id TEXT,
    history_length INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX accounts_by_tenant ON accounts (tenant_id, id);
CREATE UNIQUE INDEX accounts_external_id ON accounts (tenant_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE transactions (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    description TEXT,
    external_id TEXT,
    effective_at INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    posted_at INTEGER,
    voided_at INTEGER,
    void_reason TEXT,
    reverses TEXT,
    reversed_by TEXT,
    metadata TEXT NOT NULL,
    -- For each account touched: {"acct_…": {"prev": "ltx_…" | null, "seq": n}}.
    chain TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX transactions_by_tenant ON transactions (tenant_id, id);
CREATE UNIQUE INDEX transactions_external_id ON transactions (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX transactions_expiring ON transactions (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
-- Open holds of a tenant, newest first, without walking its posted transactions.
CREATE INDEX transactions_pending ON transactions (tenant_id, id) WHERE status = 'pending';

-- Entry ids begin with their transaction's id, so a transaction's entries
-- are one key range of the primary key and need no index of their own; an
-- account's entries are found through its history chain.
CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    leg TEXT NOT NULL CHECK (leg IN ('pending', 'posted')),
    effective_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Every 64th position of an account's history, so that walking towards
-- newer transactions (a previous page) costs a bounded number of steps.
CREATE TABLE account_checkpoints (
    account_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    transaction_id TEXT NOT NULL,
    PRIMARY KEY (account_id, seq)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    tenant_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);

-- Append-only, hash-chained record of every ledger change.
CREATE TABLE ledger_log (
    seq INTEGER PRIMARY KEY,
    content BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TRIGGER ledger_log_no_update BEFORE UPDATE ON ledger_log BEGIN SELECT RAISE(ABORT, 'ledger_log is append-only'); END;
CREATE TRIGGER ledger_log_no_delete BEFORE DELETE ON ledger_log BEGIN SELECT RAISE(ABORT, 'ledger_log is append-only'); END;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'entries are immutable'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'entries are immutable'); END;
