//! The binary: parse the command line, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use impact_drop::cli::{Cli, LogFormat};
use impact_drop::commands::{self, Outcome};
use tracing_subscriber::EnvFilter;

/// mimalloc: `check` on 1,000,000 rows and delivery allocate many small short-lived values
/// (rows, fields, bodies); measured faster than the system allocator (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.verbose, cli.quiet);
    let mut stdout = std::io::stdout().lock();
    let mut sink = std::io::sink();
    // `--quiet`: no report on stdout; errors still reach stderr, the exit status says the rest.
    let out: &mut dyn std::io::Write = if cli.quiet { &mut sink } else { &mut stdout };
    match commands::run(cli, out) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        // A reader that went away (`status | head`) is not an error worth a word (ripgrep's
        // rule): the work is done and recorded; the output was simply not wanted.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("impact-drop: {e}");
            ExitCode::from(Outcome::Fatal.code())
        }
    }
}

fn init_tracing(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "impact_drop=error",
        (false, 0) => "impact_drop=info",
        (false, 1) => "impact_drop=debug",
        _ => "impact_drop=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(impact_drop::commands::colour_on_stderr())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
