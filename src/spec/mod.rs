//! Speculative decoding in plaintext: the sampling rule and the draft-and-verify loop.

pub mod decode;
pub mod rule;
pub mod sampling;

pub use decode::{speculative_decode, DecodeOptions, Decoded};
pub use rule::{verify_drafts, Verdict};
