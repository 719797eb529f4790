//! The binary: parse the command line, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use impact_drop::cli::{Cli, LogFormat};
use impact_drop::commands::{self, Outcome};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, cli.verbose);
    let mut stdout = std::io::stdout().lock();
    match commands::run(cli, &mut stdout) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            eprintln!("impact-drop: {e}");
            ExitCode::from(Outcome::Fatal.code())
        }
    }
}

fn init_tracing(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "impact_drop=info",
        1 => "impact_drop=debug",
        _ => "impact_drop=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
