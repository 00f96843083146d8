//! Thread priorities: the ledger engine first.
//!
//! Every ledger write goes through the engine, one batch after another, so
//! it is the one stage of the server that cannot use a second core. On a
//! machine with fewer cores than busy threads (two cores: the engine, two
//! HTTP workers, the WAL checkpointer, the bench client) every moment the
//! engine waits for a CPU is a moment every writer waits: in a batched bench
//! on two cores it spent 0.8 – 1.3 s of about 5 s runnable but not running.
//! `settle serve --worker-nice N` therefore runs its other threads at a
//! lower priority (a higher nice value) than the engine, and the
//! checkpointer lower still: lowering needs no privilege, raising the engine
//! would. It is off by default: where the HTTP workers are the bound (one
//! transfer per request) it costs more than it gives (docs/benchmarks.md).
//!
//! Linux only: there a nice value belongs to one thread (elsewhere
//! `setpriority` would change the whole process, so this does nothing).
//! A thread starts with the nice value of the thread that started it, and
//! an unprivileged thread cannot go back down: the engine and the
//! checkpointer must be started from a thread that was not lowered (`serve`
//! starts them from the main thread).

/// The highest nice value Linux accepts (the lowest priority).
pub const MAX_NICE: i32 = 19;

/// Lowers the calling thread's priority to `nice` (0 – [`MAX_NICE`]; 0 or
/// less leaves it alone). A failure is logged, not returned: the server
/// runs the same at any priority, only slower on a busy machine.
pub fn lower_current_thread(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let nice = nice.min(MAX_NICE);
        let tid = rustix::thread::gettid();
        match rustix::process::getpriority_process(Some(tid)) {
            Ok(current) if current >= nice => {}
            _ => {
                if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
                    tracing::warn!(error = %e, nice, "could not lower this thread's priority");
                }
            }
        }
    }
}

/// The calling thread's nice value (0 where threads have none of their own).
pub fn current_thread_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn lowering_one_thread_leaves_the_others_alone() {
        let before = current_thread_nice();
        let target = (before + 3).min(MAX_NICE);
        let lowered = std::thread::spawn(move || {
            lower_current_thread(target);
            current_thread_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, target);
        assert_eq!(current_thread_nice(), before, "the calling thread kept its priority");
    }

    #[test]
    fn zero_leaves_the_priority_alone() {
        let before = current_thread_nice();
        let after = std::thread::spawn(|| {
            lower_current_thread(0);
            current_thread_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(after, before);
    }
}
