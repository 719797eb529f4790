//! Command-line definitions (clap) only: no behaviour lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Watches a drop folder of order exports and delivers each conversion to impact.com exactly
/// once. The auth token is read from IMPACT_AUTH_TOKEN or [impact] auth_token_file, never
/// from the command line.
#[derive(Debug, Parser)]
#[command(name = "impact-drop", version, about, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: ./impact-drop.toml if it exists]
    #[arg(long, global = true, value_name = "PATH", env = "IMPACT_DROP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read, group and validate exports, and show what impact would receive; sends nothing.
    ///
    /// Exit status: 0 every order valid, 1 some order or row invalid, 2 a file could not be
    /// read or the config is wrong.
    Check {
        /// Export files, or folders (their .csv/.tsv/.jsonl/.ndjson files)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print each conversion's exact request body
        #[arg(long)]
        show: bool,
        /// Machine-readable report on stdout
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (file + environment); the token is never shown.
    Config,
}
