//! The `berth` binary: thin glue over the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs go to stderr, quiet by default; RUST_LOG=berth=debug shows every Docker step.
    let rust_log = std::env::var("RUST_LOG").ok();
    tracing_subscriber::fmt()
        .with_env_filter(berth::telemetry::logs::log_filter(rust_log.as_deref()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    berth::cli::run(berth::cli::Cli::parse()).await
}
