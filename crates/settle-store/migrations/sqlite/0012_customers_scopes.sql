-- Keys that held every scope before customers existed (both ledger scopes)
-- gain `customers:read` and `customers:write` (see 0006). Not
-- `customers:pii:read` nor `audit:read`: personal data in clear and the
-- audit trail are granted to a key explicitly, never by an upgrade.
UPDATE api_keys SET scopes = scopes || ' customers:read customers:write'
WHERE ' ' || scopes || ' ' LIKE '% ledger:read %'
  AND ' ' || scopes || ' ' LIKE '% ledger:write %'
  AND ' ' || scopes || ' ' NOT LIKE '% customers:read %';
