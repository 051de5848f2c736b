//! Errors of the secure engine, each naming the shape, party or value at fault.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MpcError {
    #[error("shape mismatch in {op}: {left:?} vs {right:?}")]
    ShapeMismatch {
        op: &'static str,
        left: Vec<usize>,
        right: Vec<usize>,
    },
    #[error("the peer closed the channel")]
    PeerClosed,
    #[error("no message from the peer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("bad engine configuration: {0}")]
    BadConfig(String),
    #[error("value {value} is outside the fixed-point range (|x| < {limit})")]
    OutOfRange { value: f64, limit: f64 },
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A frame or handshake message that failed its authentication tag: altered, replayed,
    /// reordered or forged on the way.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// A peer whose key is not among the trusted ones.
    #[error("untrusted peer: {0}")]
    Untrusted(String),
    /// The peer said no (busy, a taken session role, a key it does not trust, ...).
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("network I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A failure inside a labelled protocol step: the phase is the label path (`block2/attn/softmax`).
    #[error("{source} (during {phase})")]
    During {
        phase: String,
        source: Box<MpcError>,
    },
}

/// The result of everything in the secure engine.
pub type Result<T> = std::result::Result<T, MpcError>;
