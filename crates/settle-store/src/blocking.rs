//! Store work off the async runtime, on tokio's blocking pool, through one
//! type-erased task.
//!
//! Why erased: tokio compiles its task machinery (harness, cell, join
//! handle: about 1,600 lines of LLVM IR) once per task type, and a closure
//! is its own type, so every SQLite read or write method spawned its own
//! copy — and did so again in every crate that awaits it (an async fn's body
//! is compiled where it is awaited). Boxing the job and its result leaves one
//! task type for all of them; the cost is two small allocations next to a
//! thread hand-off (docs/benchmarks.md, "Build time").

use crate::error::StoreError;
use std::any::Any;

type Output = Box<dyn Any + Send>;
type Job = Box<dyn FnOnce() -> Output + Send>;

/// The only spawn: not generic, so compiled once, here.
fn spawn(job: Job) -> tokio::task::JoinHandle<Output> {
    tokio::task::spawn_blocking(job)
}

/// Runs `job` on the blocking pool and returns what it returned. A job that
/// panicked is an error, as a failed `spawn_blocking` join was.
pub async fn run<T: Send + 'static>(job: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    let output = spawn(Box::new(move || Box::new(job()) as Output)).await.map_err(|e| StoreError::Other(e.to_string()))?;
    match output.downcast::<Result<T, StoreError>>() {
        Ok(result) => *result,
        Err(_) => Err(StoreError::Other(String::from("a blocking store job returned a value of another type"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_returns_its_value_and_its_error() {
        assert_eq!(run(|| Ok(41 + 1)).await.ok(), Some(42));
        let failed: Result<u8, StoreError> = run(|| Err(StoreError::Other(String::from("no")))).await;
        assert!(matches!(failed, Err(StoreError::Other(m)) if m == "no"));
    }

    #[tokio::test]
    async fn a_job_that_panics_is_an_error_not_a_panic() {
        let result: Result<(), StoreError> = run(|| panic!("job failed")).await;
        assert!(matches!(result, Err(StoreError::Other(_))));
    }
}
