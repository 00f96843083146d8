-- Events and webhooks (issue 5).
--
-- The hash-chained ledger_log is the outbox: every command's record is
-- written in the same transaction as its effect and names who asked (a
-- `context` fragment). A projector reads the log after its cursor and writes
-- `events` rows (the event as the newest API version renders it), advancing
-- the cursor in the same transaction, so an event is never lost nor written
-- twice, and the engine's batches write nothing more.

-- The projector's cursor (the last ledger_log seq turned into events) and
-- the lease that makes one server at a time the projector.
CREATE TABLE event_projection (
    name TEXT PRIMARY KEY,
    log_seq INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER
);
INSERT INTO event_projection (name, log_seq) VALUES ('events', 0);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    -- The object the event is about (acct_…, ltx_…, we_…).
    object_id TEXT NOT NULL,
    -- 1, 2, 3… per object, in the order its changes happened.
    sequence INTEGER NOT NULL,
    -- The ledger_log record the event comes from (NULL: not a ledger change).
    log_seq INTEGER,
    created_at INTEGER NOT NULL,
    -- The whole event, JSON, in the newest API version.
    body BLOB NOT NULL
);
-- Keyset lists: all of a tenant's events, by type, by object, by time.
CREATE INDEX events_by_tenant ON events (tenant_id, id);
CREATE INDEX events_by_type ON events (tenant_id, type, id);
CREATE INDEX events_by_object ON events (tenant_id, object_id, id);

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    url TEXT NOT NULL,
    description TEXT,
    -- JSON array of event types, or ["*"].
    enabled_events TEXT NOT NULL,
    api_version TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    -- Why it is disabled: `requested`, `gone` (the receiver answered 410), `failing`.
    disabled_reason TEXT,
    -- Signing secrets, encrypted under the master key (bound to the endpoint id).
    secret BLOB NOT NULL,
    -- After a rotation, the old secret still signs until it expires.
    previous_secret BLOB,
    previous_secret_expires_at INTEGER,
    -- When the current run of failed attempts began (NULL: the last attempt succeeded).
    failing_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, id);

-- One event owed to one endpoint: a row until it succeeds or is dead-lettered,
-- so a restart loses nothing. A claim moves `next_attempt_at` to the end of
-- the claimer's lease: a worker that dies leaves the delivery due again then.
CREATE TABLE webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tenant_id INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- `recover`: what failed for an endpoint since a time.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (endpoint_id, created_at) WHERE status = 'failed';

CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tenant_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    response_status INTEGER,
    -- The first KiB of the response body.
    response_body TEXT,
    error TEXT,
    latency_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id);

-- Keys that held every scope before events existed (both ledger scopes) were
-- meant to do everything: they gain the new scopes. A key created later with
-- only some scopes keeps exactly those (scopes are never widened at run time).
UPDATE api_keys SET scopes = scopes || ' events:read webhooks:read webhooks:write'
WHERE ' ' || scopes || ' ' LIKE '% ledger:read %'
  AND ' ' || scopes || ' ' LIKE '% ledger:write %'
  AND ' ' || scopes || ' ' NOT LIKE '% events:read %';
