//! impact.com's Conversions API: the request body (`form`), and later the client and sandbox.
pub mod client;
pub mod form;
pub mod pacing;
pub mod response;
pub mod sandbox;
