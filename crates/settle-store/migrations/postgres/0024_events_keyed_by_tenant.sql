-- Nothing to do on PostgreSQL, whose events keep their id as primary key and
-- (tenant_id, id) as an index. The number is kept in step with the SQLite
-- migration 0024, which keys events by (tenant_id, id).
SELECT 1;
