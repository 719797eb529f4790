//! Command implementations: each turns parsed arguments into work and a report, and says how
//! the process should exit. Output goes to the writer it is given.

pub mod check;

use std::io::Write;

use crate::cli::{Cli, Command};
use crate::config::{self, ConfigError};

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
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs the parsed command line.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CommandError> {
    let config = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Check { files, show, json } => check::run(&config, &files, show, json, out),
        Command::Config => {
            out.write_all(config.dump().as_bytes())?;
            Ok(Outcome::Clean)
        }
    }
}
