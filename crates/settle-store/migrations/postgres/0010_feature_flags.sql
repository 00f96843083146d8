-- Feature flag rollouts set by operators (`settle flags set`); a flag with
-- no row has its default (see settle-core/src/flags.rs).
CREATE TABLE feature_flags (
    name TEXT PRIMARY KEY,
    percent INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),
    -- JSON array of organization ids that have the flag whatever the percentage.
    orgs TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
