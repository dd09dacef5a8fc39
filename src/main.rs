//! The `sluice` binary: parse the command line, run it, turn errors into an exit code.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than the system allocator: ingest makes many small, short-lived allocations on
/// many threads (JSON trees of Segment events), where glibc's per-thread arenas keep freed memory
/// and fragment (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    match sluice::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `sluice export … | head` closing the pipe early is the reader's choice, not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.to_string().contains("Broken pipe")
    })
}
