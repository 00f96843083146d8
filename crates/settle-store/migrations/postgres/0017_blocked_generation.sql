-- Nothing to do on PostgreSQL: its engine reads the blocked accounts of each
-- batch from `customer_accounts` and `customers` after locking the batch's
-- account rows, and writers that block a customer lock the same rows first.
-- The number is kept in step with the SQLite migration 0017_blocked_generation,
-- whose engine keeps the set in memory and needs a counter to know when it moved.
SELECT 1;
