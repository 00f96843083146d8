-- The ACH rail (issue 7): counterparties, their bank accounts, payments and
-- NACHA files. Bookkeeping about money in flight, not ledger state: the
-- ledger effect of every payment is an ordinary ledger transaction written
-- by the engine. Each row keeps its object whole as JSON (`data`, account
-- numbers sealed inside it) beside the columns lookups and state changes use:
-- `status` and `version` (a change applies only to the version it read).
CREATE TABLE ach_counterparties (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    -- bank account: its counterparty; payment: its trace number; file: its window.
    lookup TEXT,
    external_id TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX ach_counterparties_by_tenant ON ach_counterparties (tenant_id, id);
CREATE INDEX ach_counterparties_by_status ON ach_counterparties (status, tenant_id, id);
CREATE INDEX ach_counterparties_by_lookup ON ach_counterparties (tenant_id, lookup);
CREATE TABLE ach_bank_accounts (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    -- bank account: its counterparty; payment: its trace number; file: its window.
    lookup TEXT,
    external_id TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX ach_bank_accounts_by_tenant ON ach_bank_accounts (tenant_id, id);
CREATE INDEX ach_bank_accounts_by_status ON ach_bank_accounts (status, tenant_id, id);
CREATE INDEX ach_bank_accounts_by_lookup ON ach_bank_accounts (tenant_id, lookup);
CREATE TABLE ach_payments (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    -- bank account: its counterparty; payment: its trace number; file: its window.
    lookup TEXT,
    external_id TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX ach_payments_by_tenant ON ach_payments (tenant_id, id);
CREATE INDEX ach_payments_by_status ON ach_payments (status, tenant_id, id);
CREATE INDEX ach_payments_by_lookup ON ach_payments (tenant_id, lookup);
CREATE TABLE ach_files (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    -- bank account: its counterparty; payment: its trace number; file: its window.
    lookup TEXT,
    external_id TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX ach_files_by_tenant ON ach_files (tenant_id, id);
CREATE INDEX ach_files_by_status ON ach_files (status, tenant_id, id);
CREATE INDEX ach_files_by_lookup ON ach_files (tenant_id, lookup);
-- A window is cut once per tenant, whichever server gets there first.
CREATE UNIQUE INDEX ach_files_one_per_window ON ach_files (tenant_id, lookup);

-- Keys that held every scope before payments existed (both ledger scopes)
-- gain `payments:read` and `payments:write` (see 0006, 0012).
UPDATE api_keys SET scopes = scopes || ' payments:read payments:write'
WHERE ' ' || scopes || ' ' LIKE '% ledger:read %'
  AND ' ' || scopes || ' ' LIKE '% ledger:write %'
  AND ' ' || scopes || ' ' NOT LIKE '% payments:read %';
