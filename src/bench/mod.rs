//! Measurements behind `post bench`: each mode returns rows that the CLI prints and writes as CSV.

pub mod decoding;
pub mod engine;
pub mod grid;
pub mod plot;
pub mod secure;
