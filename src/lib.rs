//! impact-drop: order exports dropped in a folder → conversions at impact.com, exactly once.
//!
//! Data flows one way through stages that know only the shared domain types (`model`):
//! `read` turns bytes into records with line numbers and content hashes; `profile` maps
//! columns to API fields; `group` (pure) assembles orders with their items; `validate` (pure)
//! is the only maker of a sendable `Conversion`; `impact::form` encodes the exact body.
//! `pipeline` is the one module that wires the stages; `commands` turn them into the CLI.
//!
//! Layout:
//! - `cli`: clap definitions only
//! - `config`: file + env → validated `Config`
//! - `model`: field catalog, rows, drafts, problems
//! - `read`: `csv`, `jsonl` readers, encodings
//! - `profile`: presets as data, and `map` to apply them
//! - `group`, `validate`: pure stages
//! - `impact`: the API's body encoding (client and sandbox to come)
//! - `pipeline`: wires the stages
//! - `commands`: `check`, `config`

pub mod archive;
pub mod cli;
pub mod commands;
pub mod config;
pub mod fuzzing;
pub mod group;
pub mod http;
pub mod impact;
pub mod ledger;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod read;
pub mod submit;
pub mod validate;
pub mod watch;
