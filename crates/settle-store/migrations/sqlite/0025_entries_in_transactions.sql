-- A transaction's entries move into its own row (see src/sqlite/legs.rs).
-- An `entries` row per leg was a second b-tree insert for every leg written,
-- repeating its transaction's id and times: the largest single cost of the
-- engine's commit. An entry's id is derived (`ent_` + the transaction's ULID
-- + the leg's suffix, `h00` or `p01`), so a leg keeps only
-- [suffix, account_id, direction, amount, currency], plus its effective and
-- creation times when they differ from its transaction's.
ALTER TABLE transactions ADD COLUMN legs TEXT NOT NULL DEFAULT '[]';

UPDATE transactions SET legs = (
    SELECT json_group_array(
        CASE WHEN e.effective_at = transactions.effective_at AND e.created_at = transactions.created_at
            THEN json_array(substr(e.id, 31), e.account_id, e.direction, e.amount, e.currency)
            ELSE json_array(substr(e.id, 31), e.account_id, e.direction, e.amount, e.currency, e.effective_at, e.created_at)
        END
        ORDER BY e.id)
    FROM entries e
    WHERE e.id > 'ent_' || substr(transactions.id, 5) AND e.id < 'ent_' || substr(transactions.id, 5) || '~'
)
WHERE EXISTS (SELECT 1 FROM entries e WHERE e.id > 'ent_' || substr(transactions.id, 5) AND e.id < 'ent_' || substr(transactions.id, 5) || '~');

-- Every leg found its transaction (entry ids begin with their transaction's
-- ULID); a leg that did not would be lost with the table, so stop instead.
CREATE TEMP TABLE entries_check (n INTEGER CHECK (n = 0));
INSERT INTO entries_check
    SELECT (SELECT count(*) FROM entries) - (SELECT coalesce(sum(json_array_length(legs)), 0) FROM transactions);
DROP TABLE entries_check;

DROP TABLE entries;

-- Entries stay immutable: legs may only be appended to (a hold's posting):
-- the new value is a JSON array that begins with the old one's elements,
-- unchanged to the byte. A transaction is never deleted.
CREATE TRIGGER transactions_legs_append_only BEFORE UPDATE OF legs ON transactions
WHEN NOT json_valid(NEW.legs) OR json_type(NEW.legs) IS NOT 'array'
    OR substr(NEW.legs, 1, length(OLD.legs) - 1) IS NOT substr(OLD.legs, 1, length(OLD.legs) - 1)
BEGIN SELECT RAISE(ABORT, 'entries are immutable'); END;
CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions BEGIN SELECT RAISE(ABORT, 'entries are immutable'); END;
-- An entry's id and (unless its leg says otherwise) its times come from its
-- transaction's row, so those columns never change either.
CREATE TRIGGER transactions_entry_fields_fixed BEFORE UPDATE OF id, tenant_id, effective_at, created_at ON transactions
WHEN NEW.id IS NOT OLD.id OR NEW.tenant_id IS NOT OLD.tenant_id OR NEW.effective_at IS NOT OLD.effective_at OR NEW.created_at IS NOT OLD.created_at
BEGIN SELECT RAISE(ABORT, 'entries are immutable'); END;
