-- Keys that held every scope before bank reconciliation existed (both ledger
-- scopes) were meant to do everything: they gain its scopes too (see 0006).
UPDATE api_keys SET scopes = scopes || ' reconciliation:read reconciliation:write'
WHERE ' ' || scopes || ' ' LIKE '% ledger:read %'
  AND ' ' || scopes || ' ' LIKE '% ledger:write %'
  AND ' ' || scopes || ' ' NOT LIKE '% reconciliation:read %';
