-- Nothing to do on PostgreSQL: its account rows are updated in place (its WAL
-- logs row changes, not whole pages). The number is kept in step with the
-- SQLite migration 0008_account_changes, which streams account changes.
SELECT 1;
