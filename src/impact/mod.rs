//! impact.com's Conversions API: the request body (`form`), and later the client and sandbox.
pub mod form;
pub mod response;
