//! The `berth` binary: thin glue over the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Logs go to stderr, quiet by default; RUST_LOG=berth=debug shows every Docker step.
        let rust_log = std::env::var("RUST_LOG").ok();
        tracing_subscriber::fmt()
            .with_env_filter(berth::telemetry::logs::log_filter(rust_log.as_deref()))
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
        berth::cli::run(berth::cli::Cli::parse()).await
    })
}

/// glibc gives each thread that allocates under contention an arena of its own (up to 8 per
/// core) and returns little of them to the system: at 10k sets the operator's peak RSS was
/// 202 MB with the default and 189 MB with two arenas, at the same speed (docs/benchmarks.md).
/// `MALLOC_ARENA_MAX` in the environment still wins. Before any thread exists, as glibc asks.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
