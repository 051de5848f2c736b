//! Speculative decoding in plaintext: the sampling rule and the draft-and-verify loop.

pub mod adaptive;
pub mod decode;
pub mod rule;
pub mod sampling;

pub use adaptive::{Adaptive, DraftPolicy, Fixed};
pub use decode::{
    decode_with, decode_with_policy, speculative_decode, DecodeOptions, Decoded, PlainVerifier,
    Verifier,
};
pub use rule::{verify_drafts, Verdict};
