//! Turns for this process's SQLite writers: the engine first, the others in order.
//!
//! SQLite lets one writer in at a time. A writer that finds the lock taken
//! waits in SQLite's busy handler, which sleeps and retries with growing
//! pauses (up to 100 ms): a writer that commits back to back — the ledger
//! engine under load — takes the lock again before a sleeping one wakes, so
//! the projector and the webhook worker could wait for seconds. Every writer
//! of this process (the engine, the projector, the delivery worker, the API's
//! own writes) first takes a turn here: the others in the order they asked,
//! the engine before them unless the first has waited [`PATIENCE`] — so no
//! writer waits much longer than that, and the engine still commits in large
//! groups. Other processes (CLI commands) still meet the busy handler.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long another writer lets the engine go first. The engine commits
/// back to back under load, in large groups; making it alternate with every
/// small projector or delivery write would cost it a third of its rate, so
/// others wait up to this long (plus one engine commit) for their turn.
pub const PATIENCE: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Queue {
    /// A writer holds the turn.
    busy: bool,
    /// Other writers, first come first served: (ticket, since when).
    others: VecDeque<(u64, Instant)>,
    next_ticket: u64,
    /// Engine writers waiting for the turn.
    engines_waiting: usize,
}

/// The turn of one database file's writers, shared by every clone of its store.
#[derive(Debug)]
pub struct WriteGate {
    queue: Mutex<Queue>,
    turn: Condvar,
    patience: Duration,
}

impl Default for WriteGate {
    fn default() -> Self {
        WriteGate::with_patience(PATIENCE)
    }
}

/// A writer's turn; the next writer goes when it is dropped.
#[derive(Debug)]
pub struct Turn {
    gate: Arc<WriteGate>,
}

impl WriteGate {
    pub fn with_patience(patience: Duration) -> WriteGate {
        WriteGate { queue: Mutex::default(), turn: Condvar::new(), patience }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ledger engine's turn: before the others unless the first of them
    /// has waited [`PATIENCE`]. Blocking (writers run on threads of their
    /// own or on the blocking pool, never on the async runtime).
    pub fn enter_engine(self: &Arc<Self>) -> Turn {
        let mut q = self.lock();
        q.engines_waiting += 1;
        loop {
            let others_waited = q.others.front().map(|(_, since)| since.elapsed());
            if !q.busy && others_waited.is_none_or(|w| w < self.patience) {
                break;
            }
            let wait = others_waited.map_or(self.patience, |w| self.patience.saturating_sub(w).max(Duration::from_millis(1)));
            q = self.turn.wait_timeout(q, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.engines_waiting -= 1;
        q.busy = true;
        Turn { gate: Arc::clone(self) }
    }

    /// Any other writer's turn, in the order they asked.
    pub fn enter(self: &Arc<Self>) -> Turn {
        let mut q = self.lock();
        let mine = q.next_ticket;
        q.next_ticket = q.next_ticket.wrapping_add(1);
        let since = Instant::now();
        q.others.push_back((mine, since));
        loop {
            let first = q.others.front().is_some_and(|(t, _)| *t == mine);
            if !q.busy && first && (q.engines_waiting == 0 || since.elapsed() >= self.patience) {
                break;
            }
            let wait = if first { self.patience.saturating_sub(since.elapsed()).max(Duration::from_millis(1)) } else { self.patience };
            q = self.turn.wait_timeout(q, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.others.pop_front();
        q.busy = true;
        Turn { gate: Arc::clone(self) }
    }

    /// Writers holding or waiting for a turn.
    pub fn queued(&self) -> u64 {
        let q = self.lock();
        u64::from(q.busy) + q.others.len() as u64 + q.engines_waiting as u64
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.gate.lock().busy = false;
        self.gate.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn writers_get_their_turns_in_the_order_they_asked() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.enter();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..4u64 {
            let (theirs, order) = (Arc::clone(&gate), Arc::clone(&order));
            threads.push(std::thread::spawn(move || {
                let _turn = theirs.enter();
                order.lock().unwrap_or_else(PoisonError::into_inner).push(i);
            }));
            // Each asks only once the one before it is queued.
            while gate.queued() < i + 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(order.lock().unwrap_or_else(PoisonError::into_inner).is_empty(), "nobody writes while a turn is held");
        drop(first);
        for t in threads {
            t.join().expect("a writer thread panicked");
        }
        assert_eq!(*order.lock().unwrap_or_else(PoisonError::into_inner), vec![0, 1, 2, 3]);
        assert_eq!(gate.queued(), 0);
    }

    #[test]
    fn only_one_writer_holds_a_turn_at_a_time() {
        let gate = Arc::new(WriteGate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside) = (Arc::clone(&gate), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _turn = gate.enter();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two writers at once");
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a writer thread panicked");
        }
    }

    #[test]
    fn the_engine_goes_before_a_writer_that_has_not_waited_its_patience() {
        let gate = Arc::new(WriteGate::with_patience(Duration::from_secs(30)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.enter_engine();
        let spawn = |engine: bool| {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            std::thread::spawn(move || {
                let _turn = if engine { gate.enter_engine() } else { gate.enter() };
                order.lock().unwrap_or_else(PoisonError::into_inner).push(if engine { "engine" } else { "other" });
            })
        };
        let other = spawn(false);
        while gate.queued() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let engine = spawn(true);
        while gate.queued() < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        engine.join().expect("the engine thread panicked");
        other.join().expect("the other writer panicked");
        assert_eq!(*order.lock().unwrap_or_else(PoisonError::into_inner), vec!["engine", "other"]);
    }

    #[test]
    fn an_engine_taking_turn_after_turn_does_not_starve_another_writer() {
        let gate = Arc::new(WriteGate::with_patience(Duration::from_millis(30)));
        let turns = Arc::new(AtomicUsize::new(0));
        let engine = {
            let (gate, turns) = (Arc::clone(&gate), Arc::clone(&turns));
            std::thread::spawn(move || {
                for _ in 0..400 {
                    let _turn = gate.enter_engine();
                    turns.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        while turns.load(Ordering::SeqCst) < 5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let asked_at = turns.load(Ordering::SeqCst);
        let _turn = gate.enter();
        let got_at = turns.load(Ordering::SeqCst);
        drop(_turn);
        engine.join().expect("the engine thread panicked");
        assert!(got_at < 400, "the other writer waited for the engine to stop (asked at turn {asked_at}, got it at {got_at})");
    }
}
