-- Bank reconciliation: imported statements, their lines, links between lines
-- and ledger transactions, and an audit of every manual action. These rows
-- are bookkeeping about the ledger, never ledger state: they are written
-- directly (not through the engine) and never change an entry.
CREATE TABLE bank_statements (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    -- SHA-256 of the statement's canonical content: importing it again finds this row.
    fingerprint TEXT NOT NULL,
    format TEXT NOT NULL,
    ledger_account_id TEXT NOT NULL,
    bank_statement_id TEXT,
    account_number TEXT NOT NULL,
    currency TEXT NOT NULL,
    opening_balance BIGINT,
    closing_balance BIGINT,
    period_start TEXT,
    period_end TEXT,
    line_count BIGINT NOT NULL CHECK (line_count >= 0),
    total_credits BIGINT NOT NULL CHECK (total_credits >= 0),
    total_debits BIGINT NOT NULL CHECK (total_debits >= 0),
    imported_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, fingerprint)
);
CREATE INDEX bank_statements_by_tenant ON bank_statements (tenant_id, id);

CREATE TABLE bank_statement_lines (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    statement_id TEXT NOT NULL REFERENCES bank_statements (id),
    -- Where the line is in the bank's file: "line 12" or an element path.
    source_position TEXT NOT NULL,
    booking_date TEXT NOT NULL,
    value_date TEXT,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('credit', 'debit')),
    end_to_end_id TEXT,
    bank_reference TEXT,
    customer_reference TEXT,
    counterparty_name TEXT,
    counterparty_account TEXT,
    description TEXT,
    status TEXT NOT NULL CHECK (status IN ('matched', 'partially_matched', 'unmatched')),
    created_at BIGINT NOT NULL
);
CREATE INDEX bank_statement_lines_by_statement ON bank_statement_lines (statement_id, id);
CREATE INDEX bank_statement_lines_by_date ON bank_statement_lines (tenant_id, booking_date, id);

CREATE TABLE bank_matches (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    line_id TEXT NOT NULL REFERENCES bank_statement_lines (id),
    transaction_id TEXT NOT NULL,
    confidence BIGINT NOT NULL CHECK (confidence BETWEEN 0 AND 100),
    method TEXT NOT NULL CHECK (method IN ('auto', 'manual')),
    -- The matcher's rule (reference, split_reference, amount_date, ...) or 'manual'.
    rule TEXT NOT NULL,
    reason TEXT,
    -- The API key id, or 'cli' for the operator command.
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (line_id, transaction_id)
);
CREATE INDEX bank_matches_by_transaction ON bank_matches (tenant_id, transaction_id);

-- Every manual match and unmatch: who, when, why. Never updated or deleted.
CREATE TABLE bank_reconciliation_audit (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    line_id TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('match', 'unmatch')),
    transaction_ids TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX bank_reconciliation_audit_by_line ON bank_reconciliation_audit (line_id, id);
CREATE TRIGGER bank_reconciliation_audit_no_update BEFORE UPDATE ON bank_reconciliation_audit FOR EACH ROW EXECUTE FUNCTION settle_refuse_change('the reconciliation audit is append-only');
CREATE TRIGGER bank_reconciliation_audit_no_delete BEFORE DELETE ON bank_reconciliation_audit FOR EACH ROW EXECUTE FUNCTION settle_refuse_change('the reconciliation audit is append-only');
