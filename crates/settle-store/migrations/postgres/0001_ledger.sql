-- The PostgreSQL twin of migrations/sqlite/0001_ledger.sql: same tables,
-- indexes and CHECK constraints. Integers and microsecond timestamps are
-- BIGINT, blobs BYTEA.
--
-- Ids are TEXT COLLATE "C": keyset pagination and entry-id ranges compare
-- ids byte by byte ("~" above every id), whatever the database's locale.

-- Tenancy and credentials.
CREATE TABLE organizations (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE tenants (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL REFERENCES organizations (id),
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'live')),
    UNIQUE (org_id, environment)
);
CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    secret_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- The ledger. Amounts and counters are integer minor units; times are
-- microseconds since the Unix epoch (UTC).
CREATE TABLE accounts (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    normal_balance TEXT NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
    min_available_balance BIGINT,
    external_id TEXT,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    posted_debits BIGINT NOT NULL CHECK (posted_debits >= 0),
    posted_credits BIGINT NOT NULL CHECK (posted_credits >= 0),
    pending_debits BIGINT NOT NULL CHECK (pending_debits >= 0),
    pending_credits BIGINT NOT NULL CHECK (pending_credits >= 0),
    version BIGINT NOT NULL
);
CREATE INDEX accounts_by_tenant ON accounts (tenant_id, id);
CREATE UNIQUE INDEX accounts_external_id ON accounts (tenant_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE transactions (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    description TEXT,
    external_id TEXT,
    effective_at BIGINT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    posted_at BIGINT,
    voided_at BIGINT,
    void_reason TEXT,
    reverses TEXT COLLATE "C",
    reversed_by TEXT COLLATE "C",
    metadata TEXT NOT NULL
);
CREATE INDEX transactions_by_tenant ON transactions (tenant_id, id);
CREATE UNIQUE INDEX transactions_external_id ON transactions (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX transactions_expiring ON transactions (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
-- Open holds of a tenant, newest first, without walking its posted transactions.
CREATE INDEX transactions_pending ON transactions (tenant_id, id) WHERE status = 'pending';

-- Entry ids begin with their transaction's id, so a transaction's entries
-- are one key range of the primary key and need no index of their own.
CREATE TABLE entries (
    id TEXT COLLATE "C" PRIMARY KEY,
    transaction_id TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    leg TEXT NOT NULL CHECK (leg IN ('pending', 'posted')),
    effective_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX entries_by_account ON entries (account_id, id);

CREATE TABLE idempotency_keys (
    tenant_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status BIGINT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);

-- Append-only, hash-chained record of every ledger change.
CREATE TABLE ledger_log (
    seq BIGINT PRIMARY KEY,
    content BYTEA NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- The chain's last (seq, hash). Every engine locks this one row (FOR UPDATE)
-- before appending, so servers sharing the database append one at a time
-- and the chain never forks.
CREATE TABLE ledger_head (
    id INT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION settle_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;
CREATE TRIGGER ledger_log_no_update BEFORE UPDATE ON ledger_log FOR EACH ROW EXECUTE FUNCTION settle_refuse_change('ledger_log is append-only');
CREATE TRIGGER ledger_log_no_delete BEFORE DELETE ON ledger_log FOR EACH ROW EXECUTE FUNCTION settle_refuse_change('ledger_log is append-only');
CREATE TRIGGER ledger_log_no_truncate BEFORE TRUNCATE ON ledger_log FOR EACH STATEMENT EXECUTE FUNCTION settle_refuse_change('ledger_log is append-only');
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries FOR EACH ROW EXECUTE FUNCTION settle_refuse_change('entries are immutable');
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries FOR EACH ROW EXECUTE FUNCTION settle_refuse_change('entries are immutable');
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries FOR EACH STATEMENT EXECUTE FUNCTION settle_refuse_change('entries are immutable');
