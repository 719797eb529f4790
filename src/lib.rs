//! impact-drop: order exports in a drop folder → conversions at impact.com, exactly once.
pub mod config;
pub mod group;
pub mod impact;
pub mod model;
pub mod profile;
pub mod read;
pub mod validate;
