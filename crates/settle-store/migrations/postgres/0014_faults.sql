-- Sandbox fault injection (`/v1/test_helpers/faults`): what a tenant asked
-- the simulated world to get wrong, and until when. One row per target and
-- mode; `until_at` NULL means until deleted. Read by every server about once
-- a second (see settle-api/src/faults.rs). Targets: `webhooks`; `rails` is
-- reserved for the simulated payment rails.
CREATE TABLE faults (
    tenant_id BIGINT NOT NULL REFERENCES tenants (id),
    target TEXT NOT NULL,
    mode TEXT NOT NULL,
    probability_percent INTEGER NOT NULL CHECK (probability_percent BETWEEN 0 AND 100),
    until_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, target, mode)
);
