//! Command implementations: each turns parsed arguments into work and a report, and says how
//! the process should exit. Output goes to the writer it is given.

pub mod check;
pub mod deliver;
pub mod sandbox;
pub mod status;
pub mod watch;

use std::io::Write;

use crate::cli::{Cli, Command};
use crate::config::{self, ConfigError};
use crate::impact::sandbox::Faults;
use crate::ledger::LedgerError;
use crate::model::Problem;
use crate::plan::Mode;

/// How a command ended, mapped to the process exit status by `main`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything valid / accepted: exit 0.
    Clean,
    /// Something was rejected, invalid or left pending: exit 1.
    Problems,
    /// A fatal error: exit 2.
    Fatal,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Problems => 1,
            Outcome::Fatal => 2,
        }
    }

    /// The worse of two outcomes.
    pub fn and(self, other: Outcome) -> Outcome {
        if self.code() >= other.code() {
            self
        } else {
            other
        }
    }
}

/// Errors that stop a command before it does its work.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Deliver(#[from] crate::pipeline::DeliverError),
    #[error(transparent)]
    Daemon(#[from] crate::pipeline::daemon::DaemonError),
    #[error("cannot start the sandbox on {addr}: {source}")]
    Sandbox {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// SIGTERM or SIGINT (cron, systemd timers and Ctrl-C all stop a process that way): the
/// first stops taking new work and lets POSTs in flight finish and be recorded (`cancel`);
/// a second exits at once with status 130 (what was not recorded is sent again next time,
/// within the in-flight bound). Call from inside the runtime.
pub fn stop_on_signals(cancel: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
            }
            signals += 1;
            if signals == 1 {
                tracing::info!(
                    "signal received: stopping; POSTs in flight finish and are recorded (a second signal exits at once)"
                );
                cancel.cancel();
            } else {
                tracing::warn!("second signal: exiting now; conversions in flight stay pending");
                std::process::exit(130);
            }
        }
    });
}

/// Whether stderr gets colours: only a terminal, and never with `NO_COLOR` set to anything
/// but the empty string (no-color.org, as ripgrep and cargo do).
pub fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl CommandError {
    /// The reader of stdout went away (`impact-drop status | head`).
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            CommandError::Output(e) => e.kind() == std::io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }
}

/// Writes `value` as pretty JSON and a newline; an I/O error keeps its kind (a closed pipe
/// stays a closed pipe).
pub fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| match e.io_error_kind() {
        Some(kind) => std::io::Error::new(kind, e),
        None => std::io::Error::other(e),
    })?;
    writeln!(out)
}

/// The plural ending for `n` of something: `""` for one, else `"s"`.
pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `1 row`, `2 rows`: a count and its noun, in the singular for one.
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", plural(n))
}

/// The command line as given, for the ledger's audit trail of runs.
pub fn command_line() -> String {
    std::env::args().skip(1).collect::<Vec<_>>().join(" ")
}

/// `path:line: field: message`, the way every command prints a problem.
pub fn location(path: &std::path::Path, p: &Problem) -> String {
    let mut s = path.display().to_string();
    if let Some(l) = p.line {
        s.push_str(&format!(":{l}"));
    }
    s.push_str(": ");
    if let Some(f) = &p.field {
        s.push_str(f);
        s.push_str(": ");
    }
    s.push_str(&p.message);
    s
}

/// Runs the parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    // Commands that need no config file.
    match &cli.command {
        Command::Sandbox {
            port,
            account_sid,
            token,
            error_rate,
            drop_rate,
            latency_ms,
            rate_limit_burst,
        } => {
            let faults = Faults {
                error_rate: *error_rate,
                drop_rate: *drop_rate,
                latency_ms: *latency_ms,
                rate_limit_burst: *rate_limit_burst,
                ..Faults::default()
            };
            return sandbox::serve(*port, account_sid, token, faults, out);
        }
        Command::Demo { samples } => return sandbox::demo(samples.as_deref(), out),
        // Generated from the CLI definition itself, so they never miss a subcommand or flag.
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "impact-drop", out);
            return Ok(Outcome::Clean);
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(out)?;
            return Ok(Outcome::Clean);
        }
        _ => {}
    }
    let mut config = config::load(cli.config.as_deref())?;
    config.allow_new_ledger = cli.new_ledger;
    match cli.command {
        Command::Watch => watch::run(config),
        Command::Run { json } => deliver::run(
            &config,
            deliver::Request {
                args: command_line(),
                command: "run",
                files: None,
                mode: Mode::Normal,
                warn: true,
            },
            json,
            out,
        ),
        Command::Send {
            files,
            replay,
            resend_accepted,
            dry_run,
            json,
        } => {
            let mode = if replay {
                Mode::Replay { resend_accepted }
            } else {
                Mode::Normal
            };
            if dry_run {
                return deliver::dry_run(&config, &files, mode, out);
            }
            deliver::run(
                &config,
                deliver::Request {
                    args: command_line(),
                    command: "send",
                    files: Some(files),
                    mode,
                    warn: true,
                },
                json,
                out,
            )
        }
        Command::Status { json, files } => status::run(&config, json, files, out),
        Command::Sandbox { .. }
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Man => Ok(Outcome::Clean),
        Command::Check {
            files,
            show,
            sources,
            json,
        } => {
            // No file named: the drop folder, as `run` would read it.
            let files = if files.is_empty() {
                vec![config.source.drop_dir.clone()]
            } else {
                files
            };
            check::run(&config, &files, show, sources, json, out)
        }
        Command::Config => {
            out.write_all(config.dump().as_bytes())?;
            Ok(Outcome::Clean)
        }
    }
}
