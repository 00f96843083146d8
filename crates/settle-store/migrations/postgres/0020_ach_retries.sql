-- ACH automatic retries (issue 7): the work list of payments returned
-- R01/R09 with `auto_retry` whose retry is due (or will be), one row per
-- returned payment (id: the payment's), `due` until it is retried, refused
-- or retried explicitly (`done`), so the scheduler reads the due retries
-- instead of the newest returned payments. Same shape as the ACH tables
-- (0013). Payments already waiting for a retry are listed here at once.
CREATE TABLE ach_retries (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    lookup TEXT,
    external_id TEXT,
    version BIGINT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX ach_retries_by_tenant ON ach_retries (tenant_id, id);
CREATE INDEX ach_retries_by_status ON ach_retries (status, tenant_id, id);
CREATE INDEX ach_retries_by_lookup ON ach_retries (tenant_id, lookup);
INSERT INTO ach_retries (id, tenant_id, status, lookup, external_id, version, data, created_at)
SELECT id, tenant_id, 'due', NULL, NULL, 1,
       jsonb_build_object('payment_id', id, 'test_clock', data::jsonb -> 'test_clock', 'due_at', data::jsonb -> 'retry_due_at')::text,
       created_at
FROM ach_payments
WHERE status = 'returned' AND (data::jsonb ->> 'retry_due_at') IS NOT NULL;
