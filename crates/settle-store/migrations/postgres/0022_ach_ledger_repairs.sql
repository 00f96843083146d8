-- ACH ledger repairs (issue 7): the work list of payments whose ledger
-- effect was refused after their move (`ledger_issue`), one row per payment
-- (id: the payment's), `open` until the repair sweep has made the ledger
-- agree with the payment (`repaired`), so the scheduler reads the open
-- issues instead of every payment. Same shape as the ACH tables (0013); the
-- data holds the first issue, the attempts, the next attempt's time (the
-- backoff, which is also the claim of the server trying it) and the last
-- refusal. Payments with an issue already are listed here at once, due now.
CREATE TABLE ach_ledger_repairs (
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
CREATE INDEX ach_ledger_repairs_by_tenant ON ach_ledger_repairs (tenant_id, id);
CREATE INDEX ach_ledger_repairs_by_status ON ach_ledger_repairs (status, tenant_id, id);
CREATE INDEX ach_ledger_repairs_by_lookup ON ach_ledger_repairs (tenant_id, lookup);
INSERT INTO ach_ledger_repairs (id, tenant_id, status, lookup, external_id, version, data, created_at)
SELECT id, tenant_id, 'open', NULL, NULL, 1,
       jsonb_build_object('payment_id', id, 'test_clock', data::jsonb -> 'test_clock', 'issue', data::jsonb ->> 'ledger_issue', 'attempts', 0)::text,
       created_at
FROM ach_payments
WHERE (data::jsonb ->> 'ledger_issue') IS NOT NULL;
