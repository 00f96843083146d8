//! The WAL checkpointer: copies the WAL into the database file from a thread
//! of its own, so that no writer's `COMMIT` pays for it, and keeps the WAL short.
//!
//! SQLite writes a WAL from its start again only when a writer begins while
//! every frame is already copied into the database. With the engine and the
//! projector committing back to back that never happens by itself: the WAL
//! grew by the whole write volume (5 GB in a 3M-transfer bench), and since
//! every page read looks the page up in the WAL's index first and every
//! checkpoint sorts the frames it has not copied yet, both slowed as it grew
//! (a 3M-transfer run went 15–25 % slower than a 300k one). So once the WAL
//! is longer than [`POLICY`] allows, the checkpointer copies the rest under
//! the write turn and makes the next writer start the WAL over.

use super::gate::WriteGate;
use crate::error::StoreError;
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// When the checkpointer copies the WAL and when it starts it over.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// How often the WAL is copied into the database.
    pub interval: Duration,
    /// A WAL longer than this, in pages, is started over.
    pub restart_frames: i64,
}

/// Every 250 ms; started over past 64 MiB of 4 KiB pages.
pub const POLICY: Policy = Policy { interval: Duration::from_millis(250), restart_frames: 16_384 };
/// How long a restart waits for readers still on the old WAL before it gives
/// up until the next round; it holds the write turn meanwhile.
const RESTART_PATIENCE: Duration = Duration::from_millis(100);
/// How long the last checkpoint, on a clean stop, waits for readers.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Stops the checkpoint thread when told.
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts the `settle-checkpoint` thread on `conn`. `running` is set while
    /// it runs (pooled writers then leave checkpoints to it); `policy` is
    /// [`POLICY`] except in tests. The thread runs at `nice` (see
    /// `priority.rs`: copying the WAL can wait while the engine needs the CPU).
    pub fn start(conn: Connection, gate: Arc<WriteGate>, running: Arc<AtomicBool>, policy: Policy, nice: i32) -> Result<Checkpointer, StoreError> {
        // Only a restart waits for readers (a passive checkpoint never does).
        conn.busy_timeout(RESTART_PATIENCE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        running.store(true, Ordering::SeqCst);
        let thread_running = Arc::clone(&running);
        let spawned = std::thread::Builder::new().name(String::from("settle-checkpoint")).spawn(move || {
            crate::priority::lower_current_thread(nice);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(policy.interval);
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
                    // Only when no reader held back part of the WAL (a long
                    // audit, another process): a restart would wait for it
                    // while holding the write turn.
                    Ok((frames, copied)) if frames >= policy.restart_frames && copied == frames => restart(&conn, &gate),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
            // A last full checkpoint leaves a small WAL behind on a clean stop.
            let _ = conn.busy_timeout(STOP_PATIENCE);
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            thread_running.store(false, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            running.store(false, Ordering::SeqCst);
            return Err(StoreError::Other(e.to_string()));
        }
        Ok(Checkpointer { stop })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies the rest of the WAL and makes the next writer start it over.
/// SQLite blocks writers while this runs, so it takes the write turn first:
/// this process's writers then wait at the gate, not in the busy handler.
fn restart(conn: &Connection, gate: &Arc<WriteGate>) {
    let _turn = gate.enter();
    match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
        Ok(0) => {}
        // A reader was still on the old WAL: the next round tries again.
        Ok(_) => tracing::debug!("WAL restart waited for a reader; tried again next round"),
        Err(e) => tracing::warn!(error = %e, "WAL restart failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> Connection {
        let conn = super::super::open(path).expect("open");
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;").expect("no automatic checkpoint");
        conn
    }

    /// A writer that commits back to back for a while, taking its turn as the
    /// engine does, with the checkpointer running: returns the WAL's length
    /// in bytes at the end.
    fn wal_after_load(restart_frames: i64) -> u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let writer = open(&path);
        writer.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)").expect("table");
        let running = Arc::new(AtomicBool::new(false));
        let gate: Arc<WriteGate> = Arc::default();
        let policy = Policy { interval: Duration::from_millis(10), restart_frames };
        let checkpointer = Checkpointer::start(open(&path), Arc::clone(&gate), Arc::clone(&running), policy, 0).expect("start");
        assert!(running.load(Ordering::SeqCst));
        let body = vec![7u8; 16 * 1024];
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(1_500) {
            let _turn = gate.enter_engine();
            writer.execute_batch("BEGIN IMMEDIATE").expect("begin");
            for _ in 0..8 {
                writer.execute("INSERT INTO t (body) VALUES (?1)", [&body]).expect("insert");
            }
            writer.execute_batch("COMMIT").expect("commit");
        }
        let length = std::fs::metadata(dir.path().join("wal.db-wal")).expect("wal").len();
        checkpointer.stop();
        length
    }

    #[test]
    fn a_long_wal_is_started_over_while_writers_commit_back_to_back() {
        // 256 frames of 4 KiB: 1 MiB, looked at every 10 ms. Without restarts
        // the WAL holds everything written; with them, a few rounds' worth.
        let restarted = wal_after_load(256);
        let never = wal_after_load(i64::MAX);
        assert!(restarted.saturating_mul(3) < never, "WAL with restarts {restarted} B, without {never} B");
    }
}
