-- Signed requests and correlation ids (issue 4).

-- The correlation id of the request that created each object (NULL for
-- objects created before this migration).
ALTER TABLE accounts ADD COLUMN correlation_id TEXT;
ALTER TABLE transactions ADD COLUMN correlation_id TEXT;

-- A key created with --require-signature has a row here: its signing secret,
-- encrypted with AES-256-GCM under the master key (never in clear), as
-- version byte || 96-bit nonce || ciphertext and tag; the key id is the AAD.
CREATE TABLE api_key_signing_secrets (
    api_key_id TEXT PRIMARY KEY REFERENCES api_keys (id),
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- Nonces of accepted signed requests, so a replay is refused by every server
-- sharing the database. Kept until the signature's `created` is out of the
-- accepted window (expires_at), then purged.
CREATE TABLE request_nonces (
    api_key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, nonce)
);
CREATE INDEX request_nonces_expiry ON request_nonces (expires_at);
