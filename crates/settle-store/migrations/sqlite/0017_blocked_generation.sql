-- The engine refuses transactions touching a blocked customer's accounts at
-- write time (`customer_blocked`). On SQLite it keeps the set of blocked
-- accounts in memory; every write that can change the set (a screening, its
-- resolution, a customer change, an account linked to a customer) bumps this
-- one-row counter in its own transaction, and the engine reads it in each
-- batch's transaction (one point query) to reload the set only when it moved.
CREATE TABLE blocked_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO blocked_generation (id, generation) VALUES (1, 0);
