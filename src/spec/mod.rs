//! Speculative decoding in plaintext: the sampling rule and the draft-and-verify loop.

pub mod decode;
pub mod rule;
pub mod sampling;

pub use decode::{
    decode_with, speculative_decode, DecodeOptions, Decoded, PlainVerifier, Verifier,
};
pub use rule::{verify_drafts, Verdict};
