-- Nothing to do on PostgreSQL: its tables have no rowid. The number is kept
-- in step with the SQLite migration 0023, which keys events by id alone.
SELECT 1;
