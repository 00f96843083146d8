-- Customers and compliance (issue 6). Written directly by
-- settle-store/src/customers.rs, never through the ledger engine.
--
-- No column holds personal data in clear: the personal fields of a customer
-- are one AES-256-GCM blob under the customer's data key (`personal`), the
-- data key is stored wrapped by a key-encryption key (`customer_data_keys`),
-- and lookups by email or tax id go through keyed HMAC blind indexes.
-- Erasure deletes the data key row (crypto-shredding) and clears the blob.
CREATE TABLE customers (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('individual', 'business')),
    kyc_status TEXT NOT NULL,
    -- Requirement errors of the last decision: field names and codes, no values.
    kyc_errors TEXT NOT NULL,
    screening_status TEXT NOT NULL,
    external_id TEXT,
    metadata TEXT NOT NULL,
    personal BYTEA,
    email_index TEXT,
    tax_id_index TEXT,
    version BIGINT NOT NULL,
    erased_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX customers_by_tenant ON customers (tenant_id, id);
CREATE INDEX customers_by_email ON customers (tenant_id, email_index);
CREATE INDEX customers_by_tax_id ON customers (tenant_id, tax_id_index);

CREATE TABLE customer_data_keys (
    customer_id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    kek_version BIGINT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX customer_data_keys_by_kek ON customer_data_keys (kek_version, customer_id);

CREATE TABLE customer_kyc_events (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    -- api_key | sandbox_rules | operator | system
    decided_by TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX customer_kyc_events_by_customer ON customer_kyc_events (tenant_id, customer_id, id);

CREATE TABLE customer_consents (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    consent_type TEXT NOT NULL,
    text_version TEXT NOT NULL,
    channel TEXT NOT NULL,
    -- IP address and user agent, sealed under the customer's data key.
    sealed BYTEA,
    granted_at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX customer_consents_by_customer ON customer_consents (tenant_id, customer_id, consent_type, id);

-- A revocation is a new fact; the consent row never changes.
CREATE TABLE customer_consent_revocations (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    consent_id TEXT NOT NULL UNIQUE,
    reason TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Documents a customer supplied: the content sealed under the customer's data key.
CREATE TABLE customer_documents (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    document_type TEXT NOT NULL,
    -- Sniffed from the content's magic bytes, never taken from the client.
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX customer_documents_by_customer ON customer_documents (tenant_id, customer_id, id);

-- Ledger accounts that belong to a customer. A link (not a column on
-- `accounts`) because accounts are written by the ledger engine alone; the
-- API refuses transactions touching a blocked customer's accounts.
CREATE TABLE customer_accounts (
    tenant_id BIGINT NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    customer_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, account_id)
);
CREATE INDEX customer_accounts_by_customer ON customer_accounts (tenant_id, customer_id, account_id);

-- Sanctions lists and watchlists: global (every tenant screens against them), one row per loaded snapshot.
CREATE TABLE sanctions_lists (
    id TEXT COLLATE "C" PRIMARY KEY,
    source TEXT NOT NULL,
    format TEXT NOT NULL,
    entry_count BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    loaded_by TEXT NOT NULL,
    loaded_at BIGINT NOT NULL,
    -- Set by the one server that re-screens every customer against this snapshot.
    rescreen_claimed_at BIGINT
);
CREATE INDEX sanctions_lists_by_source ON sanctions_lists (source, id);

CREATE TABLE sanctions_entries (
    list_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    reference TEXT NOT NULL,
    names TEXT NOT NULL,
    birth_year BIGINT,
    countries TEXT NOT NULL,
    programs TEXT NOT NULL,
    PRIMARY KEY (list_id, position)
);

CREATE TABLE screenings (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    list_ids TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    matches TEXT NOT NULL,
    resolution_reason TEXT,
    resolved_by TEXT,
    resolved_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX screenings_by_customer ON screenings (tenant_id, customer_id, id);

-- Hash-chained per tenant: each row's hash covers the previous row's hash.
CREATE TABLE compliance_audit_events (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    changed_fields TEXT NOT NULL,
    reason TEXT,
    request_id TEXT,
    correlation_id TEXT,
    created_at BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (tenant_id, seq)
);
CREATE INDEX compliance_audit_events_by_tenant ON compliance_audit_events (tenant_id, id);
CREATE INDEX compliance_audit_events_by_resource ON compliance_audit_events (tenant_id, resource_id, id);
