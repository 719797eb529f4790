//! impact-drop: order exports dropped in a folder → conversions at impact.com, exactly once.
//!
//! A workspace of two crates. `impact-drop-core` (`core/`) is the pure core: everything that
//! decides what impact receives (reading, presets, grouping, validation, request bodies,
//! answers, planning), with no I/O runtime. This crate is the application around it; it
//! re-exports the core's modules so `impact_drop::model` and the like name them.
//!
//! Data flows one way: `watch` finds files → `pipeline::Delivery::intake` (core intake +
//! plan, recorded in the `ledger`) → `submit` (POSTs through `impact::client`, paced) →
//! `pipeline::Delivery::finish` (`archive`, rejects files) → `followup` (what became of each
//! accepted conversion at impact, failed-at-impact files). `pipeline` is the one module that
//! wires the stages, for `run`, `send`, `send --dry-run` and `watch` alike; `commands` only
//! parse and print.
//!
//! Layout:
//! - `cli`: clap definitions only; `config`: file + env → validated `Config` (builds the
//!   core's `Stages`); `ignore`: temp-name patterns
//! - `watch`: scans, notify hints, settling, markers, path expansion
//! - `ledger`: SQLite — opening/migrations/lock (`mod`), the commit protocol (`commit`),
//!   reporting (`report`), migrations (`schema`)
//! - `impact`: the HTTP `client`, request `pacing`, and the `sandbox` of the API
//! - `submit`: sends pending conversions and commits their outcomes
//! - `followup`: asks impact what became of accepted conversions (`APISubmissions`)
//! - `archive`: content hashes, rejects files, moving finished files
//! - `http`: the one HTTP accept loop (health endpoint and sandbox)
//! - `pipeline`: the delivery service (`Delivery`), the daemon (`daemon`) and its health
//!   endpoint (`health`)
//! - `commands`: one module per subcommand

pub use impact_drop_core::{
    contract, form, group, intake, model, plan, profile, read, response, settings, state, validate,
};

pub mod archive;
pub mod cli;
pub mod commands;
pub mod config;
pub mod followup;
pub mod http;
pub mod ignore;
pub mod impact;
pub mod ledger;
pub mod pipeline;
pub mod submit;
pub mod watch;
