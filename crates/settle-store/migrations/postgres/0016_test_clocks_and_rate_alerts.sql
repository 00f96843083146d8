-- Sandbox test clocks (issue 7): a frozen time per clock that payments
-- created with `test_clock` follow; advancing it runs their cutoffs,
-- settlements and hold releases. Same shape as the ACH tables (0013): the
-- clock whole as JSON in `data` beside `status` and `version` (an advance
-- applies only to the version it read).
CREATE TABLE test_clocks (
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
CREATE INDEX test_clocks_by_tenant ON test_clocks (tenant_id, id);
CREATE INDEX test_clocks_by_status ON test_clocks (status, tenant_id, id);
CREATE INDEX test_clocks_by_lookup ON test_clocks (tenant_id, lookup);

-- The ACH return-rate monitor's memory (issue 7): one row per tenant with
-- the NACHA thresholds its rates exceeded at the last evaluation, so that
-- crossing one emits `ach.return_rate.threshold_crossed` once per crossing.
CREATE TABLE ach_return_rate_alerts (
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
CREATE INDEX ach_return_rate_alerts_by_tenant ON ach_return_rate_alerts (tenant_id, id);

-- Dishonored returns (issue 7): a return that arrived after its window is
-- refused, and its dishonor (R68) waits here (`status` pending) for the next
-- file cut (then submitted). One per payment: `lookup` is the payment.
CREATE TABLE ach_dishonored_returns (
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
CREATE INDEX ach_dishonored_returns_by_status ON ach_dishonored_returns (status, tenant_id, id);
CREATE INDEX ach_dishonored_returns_by_lookup ON ach_dishonored_returns (tenant_id, lookup);
