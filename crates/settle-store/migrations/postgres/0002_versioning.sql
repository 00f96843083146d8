-- The PostgreSQL twin of migrations/sqlite/0002_versioning.sql.
--
-- Every organization is pinned to the API version (a date) its requests are
-- rendered in when they name none. Organizations that exist when this runs
-- were built against the first API shape, so they are pinned to it
-- ('2026-11-25'); the server and `settle keys create` pin new organizations
-- to the newest version explicitly.
ALTER TABLE organizations ADD COLUMN api_version TEXT NOT NULL DEFAULT '2026-11-25';

-- How often each API key used something deprecated (a version or an
-- endpoint). Several servers add their in-memory counts with one upsert each.
CREATE TABLE deprecation_usage (
    key_id TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id),
    deprecated TEXT NOT NULL,
    use_count BIGINT NOT NULL CHECK (use_count > 0),
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, deprecated)
);
