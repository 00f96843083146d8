-- ACH prenotes (issue 7): the zero-dollar entries that verify a
-- counterparty's bank account. The prenote itself is a payment row
-- (`ach_payments`, `prenote: true` in its data); this table is the work list
-- of verifications still to decide, one row per prenote (id: the prenote
-- payment's), so the scheduler finds the pending ones without reading
-- every settled payment. Same shape as the ACH tables (0013): `status`
-- (`pending`, `verified`, `failed`, `canceled`) and `lookup` (the bank account).
CREATE TABLE ach_prenotes (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    lookup TEXT,
    external_id TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX ach_prenotes_by_tenant ON ach_prenotes (tenant_id, id);
CREATE INDEX ach_prenotes_by_status ON ach_prenotes (status, tenant_id, id);
CREATE INDEX ach_prenotes_by_lookup ON ach_prenotes (tenant_id, lookup);
