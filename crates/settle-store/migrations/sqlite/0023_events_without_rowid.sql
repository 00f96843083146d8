-- Events keyed by their id alone. A rowid table with a TEXT primary key is
-- two b-trees (the rows by rowid, and an index from id to rowid), so every
-- event was inserted twice; nothing reads events by rowid.
CREATE TABLE events_by_id (
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
    -- The whole event, JSON, in the newest API version (or deferred: events/deferred.rs).
    body BLOB NOT NULL
) WITHOUT ROWID;
INSERT INTO events_by_id (id, tenant_id, type, object_id, sequence, log_seq, created_at, body)
    SELECT id, tenant_id, type, object_id, sequence, log_seq, created_at, body FROM events;
DROP TABLE events;
ALTER TABLE events_by_id RENAME TO events;
-- Keyset lists: all of a tenant's events, by type, by object, by time.
CREATE INDEX events_by_tenant ON events (tenant_id, id);
CREATE INDEX events_by_type ON events (tenant_id, type, id);
CREATE INDEX events_by_object ON events (tenant_id, object_id, id);
