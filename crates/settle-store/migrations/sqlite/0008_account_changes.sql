-- Account counters and history heads change in memory and are persisted as
-- an append-only stream (see settle-store/src/sqlite/account_changes.rs):
-- one row per engine batch with the new state of every account it changed.
-- A checkpoint writes the newest state into `accounts` rows and empties the
-- stream; an account's current state is its row overlaid with the stream.
CREATE TABLE account_changes (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
-- The ledger-log sequence that `accounts` rows are current as of.
CREATE TABLE account_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log_seq INTEGER NOT NULL
);
