//! Many rows per `INSERT` statement, for the writers that store a row per
//! transfer (the engine's transactions, the projector's events).
//!
//! SQLite pays for every statement run (bind, step, reset, the VDBE's
//! set-up and halt) besides the rows it writes; with one statement per row
//! that was about a third of the engine thread's time. A statement of
//! [`ROWS_PER_STATEMENT`] rows pays it once per chunk. Values are bound in
//! place (`raw_bind_parameter`), so nothing is collected or boxed per row.

use crate::error::StoreError;
use rusqlite::{CachedStatement, Connection};

/// Rows per full statement: 32 rows of the widest table (transactions, 17
/// columns) bind 544 values, far below SQLite's limit of 32,766.
pub const ROWS_PER_STATEMENT: usize = 32;

/// One table's multi-row insert: `INSERT INTO {table} ({columns}) VALUES
/// (…), (…)`, `ROWS_PER_STATEMENT` rows per statement, and one row at a time
/// for the rest (so the statement cache holds two statements per table, not
/// one per remainder length).
pub struct BulkInsert {
    one: String,
    full: String,
    columns: usize,
}

impl BulkInsert {
    /// `tail` follows the values (`ON CONFLICT …`), empty when there is none.
    pub fn new(table: &str, columns: &str, tail: &str) -> BulkInsert {
        let count = columns.split(',').count();
        let row = |first: usize| format!("({})", (first..first + count).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", "));
        let rows = (0..ROWS_PER_STATEMENT).map(|r| row(r * count + 1)).collect::<Vec<_>>().join(", ");
        BulkInsert {
            one: format!("INSERT INTO {table} ({columns}) VALUES {} {tail}", row(1)),
            full: format!("INSERT INTO {table} ({columns}) VALUES {rows} {tail}"),
            columns: count,
        }
    }

    /// Inserts `rows`; `bind(statement, first, row)` binds one row's values
    /// at the 1-based parameter indexes `first..first + columns`.
    pub fn run<T>(&self, conn: &Connection, rows: &[T], bind: impl Fn(&mut CachedStatement<'_>, usize, &T) -> rusqlite::Result<()>) -> Result<(), StoreError> {
        let mut chunks = rows.chunks_exact(ROWS_PER_STATEMENT);
        if chunks.len() > 0 {
            let mut stmt = conn.prepare_cached(&self.full)?;
            for chunk in chunks.by_ref() {
                for (i, row) in chunk.iter().enumerate() {
                    bind(&mut stmt, i * self.columns + 1, row)?;
                }
                stmt.raw_execute()?;
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut stmt = conn.prepare_cached(&self.one)?;
            for row in rest {
                bind(&mut stmt, 1, row)?;
                stmt.raw_execute()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)").expect("table");
        conn
    }

    #[test]
    fn every_row_lands_once_in_order_whatever_the_count() {
        let insert = BulkInsert::new("t", "a, b", "");
        for n in [0, 1, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, ROWS_PER_STATEMENT + 1, 3 * ROWS_PER_STATEMENT + 7] {
            let conn = table();
            let rows: Vec<(i64, String)> = (0..n as i64).map(|i| (i, format!("row {i}"))).collect();
            insert
                .run(&conn, &rows, |s, at, (a, b)| {
                    s.raw_bind_parameter(at, a)?;
                    s.raw_bind_parameter(at + 1, b.as_str())
                })
                .expect("insert");
            let stored: Vec<(i64, String)> =
                conn.prepare("SELECT a, b FROM t ORDER BY a").and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()).expect("read back");
            assert_eq!(stored, rows, "{n} rows");
        }
    }

    #[test]
    fn a_refused_row_fails_the_insert() {
        let insert = BulkInsert::new("t", "a, b", "");
        let conn = table();
        let rows: Vec<i64> = (0..ROWS_PER_STATEMENT as i64).map(|i| if i == 5 { 4 } else { i }).collect();
        let result = insert.run(&conn, &rows, |s, at, a| {
            s.raw_bind_parameter(at, a)?;
            s.raw_bind_parameter(at + 1, "x")
        });
        assert!(result.is_err(), "a duplicate key inside a chunk must fail the statement");
    }

    #[test]
    fn a_tail_applies_to_every_row() {
        let insert = BulkInsert::new("t", "a, b", "ON CONFLICT (a) DO NOTHING");
        let conn = table();
        let rows: Vec<i64> = (0..ROWS_PER_STATEMENT as i64 + 2).map(|i| i % 3).collect();
        insert
            .run(&conn, &rows, |s, at, a| {
                s.raw_bind_parameter(at, a)?;
                s.raw_bind_parameter(at + 1, "x")
            })
            .expect("conflicts are skipped");
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).expect("count");
        assert_eq!(count, 3);
    }
}
