-- Long-running operations (202 Accepted, polled at /v1/operations/{id}).
-- A row, not a task in memory: a pending operation, or a running one whose
-- lease expired (its worker died), is picked up again after a restart.
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    api_key_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    -- The accepted request: its path and canonical JSON body, and the id of
    -- the HTTP request that created the operation (error bodies name it).
    request_path TEXT NOT NULL,
    request_body BLOB NOT NULL,
    request_id TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0 CHECK (completed >= 0),
    total INTEGER NOT NULL CHECK (total >= 0),
    -- Transactions per chunk of a batch, fixed when accepted: chunk keys
    -- (`op_…/chunk/N`) must name the same items on every server and release.
    chunk_items INTEGER NOT NULL CHECK (chunk_items > 0),
    -- The X-Correlation-Id of the accepting request, stamped on what the operation creates.
    correlation_id TEXT,
    -- The response the request would have answered synchronously, once finished.
    response_status INTEGER,
    response_body BLOB,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX operations_by_tenant ON operations (tenant_id, id);
-- What the workers look for; finished operations leave this index.
CREATE INDEX operations_open ON operations (id) WHERE status IN ('pending', 'running');
