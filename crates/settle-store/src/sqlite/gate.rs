//! A first-come, first-served turn for this process's SQLite writers.
//!
//! SQLite lets one writer in at a time. A writer that finds the lock taken
//! waits in SQLite's busy handler, which sleeps and retries with growing
//! pauses (up to 100 ms): a writer that commits back to back — the ledger
//! engine under load — takes the lock again before a sleeping one wakes, so
//! the projector and the webhook worker could wait for seconds. Every writer
//! of this process (the engine, the projector, the delivery worker, the API's
//! own writes) first takes a ticket here and writes in ticket order, so each
//! waits at most for the writers ahead of it. Other processes (CLI commands)
//! still meet the busy handler, as before.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

#[derive(Debug, Default)]
struct Tickets {
    /// The next ticket to hand out.
    next: u64,
    /// The ticket whose holder may write now.
    serving: u64,
}

/// The turn of one database file's writers, shared by every clone of its store.
#[derive(Debug, Default)]
pub struct WriteGate {
    tickets: Mutex<Tickets>,
    turn: Condvar,
}

/// A writer's turn; the next ticket is served when it is dropped.
#[derive(Debug)]
pub struct Turn {
    gate: Arc<WriteGate>,
}

impl WriteGate {
    /// Waits for this caller's turn (blocking: writers run on threads of
    /// their own or on the blocking pool, never on the async runtime).
    pub fn enter(self: &Arc<Self>) -> Turn {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = tickets.next;
        tickets.next = tickets.next.wrapping_add(1);
        while tickets.serving != mine {
            tickets = self.turn.wait(tickets).unwrap_or_else(PoisonError::into_inner);
        }
        Turn { gate: Arc::clone(self) }
    }

    /// Writers holding or waiting for a turn.
    pub fn queued(&self) -> u64 {
        let tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.next.wrapping_sub(tickets.serving)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut tickets = self.gate.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.serving = tickets.serving.wrapping_add(1);
        drop(tickets);
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
}
