//! impact.com's Conversions API: the HTTP `client`, request `pacing`, and the `sandbox`. The
//! request body (`form`) and the meaning of answers (`response`) are the core's.
pub mod client;
pub mod pacing;
pub mod sandbox;

pub use impact_drop_core::{form, response};
