//! The pure core of impact-drop: everything that decides what impact receives, with no I/O
//! runtime (no tokio, SQLite, HTTP or file watching; `.ci/run` checks its dependency tree).
//!
//! Data flows one way through stages that know only the domain types (`model`, `state`,
//! `settings`):
//! - `read`: bytes → records with line numbers and content hashes (`csv`, `jsonl`, encodings);
//! - `profile`: presets as data, and `map` to apply them to a header or JSON object;
//! - `group` (pure): rows → orders with their items;
//! - `validate` (pure): the only maker of a sendable `Conversion`;
//! - `money` (pure): the sale amount impact will compute, lines that are not a sale,
//!   discounts per line, reconciliation with the export's own figure;
//! - `form`: the exact request body; `response`: what impact's answer means;
//! - `plan` (pure): a file's conversions + what the ledger knows → what to send and what
//!   every line became;
//! - `intake`: one file read end to end through the stages above;
//! - `contract`: impact's contract as the sandbox reads it, written independently of
//!   `validate` and `model`, so a bug in one is caught by the other.

pub mod contract;
pub mod form;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod group;
pub mod intake;
pub mod model;
pub mod money;
pub mod plan;
pub mod profile;
pub mod read;
pub mod response;
pub mod settings;
pub mod state;
pub mod validate;
