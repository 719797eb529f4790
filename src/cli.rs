//! Command-line definitions (clap) only: no behaviour lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `--version`: the release and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("IMPACT_DROP_COMMIT"),
    ")"
);

/// Watches a drop folder of order exports and delivers each conversion to impact.com exactly
/// once. The auth token is read from IMPACT_AUTH_TOKEN or [impact] auth_token_file, never
/// from the command line.
#[derive(Debug, Parser)]
#[command(name = "impact-drop", version = VERSION, about, max_term_width = 100)]
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

    /// No report on stdout and only errors on stderr; the exit status tells the outcome
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Start with a new, empty ledger on purpose although the archive folder holds exports
    /// an earlier ledger sent (without it, such a start is refused: a fresh ledger would send
    /// again what was sent)
    #[arg(long, global = true)]
    pub new_ledger: bool,

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
        /// Export files, or folders (their .csv/.tsv/.jsonl/.ndjson files) [default: the
        /// drop folder]
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print each conversion's exact request body and the sale amount impact computes
        #[arg(long)]
        show: bool,
        /// With --show: also say where each field came from (column and line, or config)
        #[arg(long, requires = "show")]
        sources: bool,
        /// Machine-readable report on stdout
        #[arg(long)]
        json: bool,
    },
    /// Watch the drop folder and deliver every finished export, until SIGTERM/SIGINT.
    ///
    /// The daemon to run under systemd (see samples/impact-drop.service). A first signal stops
    /// taking files and lets POSTs in flight finish (shutdown_grace_secs), then exits 0; a
    /// second signal exits at once (the ledger stays consistent either way).
    Watch,
    /// One pass over the drop folder: every export to a final state, then exit (for cron or
    /// systemd timers).
    ///
    /// Exit status: 0 every conversion accepted; 1 some rejected, invalid, still pending,
    /// failed at impact or of unknown outcome; 2 fatal (config, credentials, ledger).
    Run {
        /// The report as one JSON document on stdout (shape in the README)
        #[arg(long)]
        json: bool,
    },
    /// Process the named files now, or replay files the ledger already finished.
    ///
    /// Exit status as for `run`.
    Send {
        /// Export files (or folders of exports)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Give conversions of an already finished file that were rejected, invalid or
        /// failed another try (accepted ones are skipped). Recorded in the ledger.
        #[arg(long)]
        replay: bool,
        /// With --replay: also send conversions impact already accepted. Outside impact's
        /// dedup window this pays partners a second commission.
        #[arg(long, requires = "replay")]
        resend_accepted: bool,
        /// Show what would be sent; send and record nothing
        #[arg(long)]
        dry_run: bool,
        /// The report as one JSON document on stdout (shape in the README)
        #[arg(long, conflicts_with = "dry_run")]
        json: bool,
    },
    /// Files by state, conversions by state, oldest pending, last errors, per-file counts.
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Show at most this many files
        #[arg(long, default_value_t = 50)]
        files: usize,
    },
    /// Serve a strict local imitation of impact's conversion endpoints.
    Sandbox {
        /// Port on 127.0.0.1 (0 = any free port)
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Account SID the sandbox accepts
        #[arg(long, default_value = "IRSANDBOX0000000000000000001")]
        account_sid: String,
        /// Auth token the sandbox accepts (a sandbox-only value, never a real token)
        #[arg(long, default_value = "sandbox-token")]
        token: String,
        /// Share of requests answered 500/502/503 (0.0-1.0)
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Share of requests accepted and then cut off before the answer (0.0-1.0)
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f64,
        /// Delay before every answer, in milliseconds
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Answer the first N requests with 429
        #[arg(long, default_value_t = 0)]
        rate_limit_burst: u32,
    },
    /// The main job on the bundled samples against the bundled sandbox: shows what impact
    /// would have received. Uses a temporary folder and ledger; your files are not touched.
    Demo {
        /// Folder with sample exports and impact-drop.toml [default: the samples built into
        /// the binary]
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// Print the effective configuration (file + environment); the token is never shown.
    Config,
    /// Print a shell completion script: `impact-drop completions bash >
    /// /etc/bash_completion.d/impact-drop` (also zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `impact-drop man > /usr/local/share/man/man1/impact-drop.1`.
    Man,
}
