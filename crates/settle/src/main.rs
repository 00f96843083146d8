//! The `settle` binary: the command line is parsed and run by the library
//! ([`settle::run`]); only the allocator is chosen here.

use std::process::ExitCode;

/// The engine thread frees what HTTP workers allocated (drafts, bodies) by the
/// thousand per batch; glibc's allocator spent about 15% of the engine's time
/// on that in profiles, mimalloc much less (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    settle::run()
}
