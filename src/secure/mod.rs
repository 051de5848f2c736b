//! The private model on secret shares: a secure GPT-2 forward ([`gpt2`]), private sampling
//! ([`sampling`]) and the session that runs them for the decoding loop ([`session`]).
//! Built from `mpc` protocols; the protocols know nothing of GPT-2.

pub mod coins;
pub mod gpt2;
pub mod sampling;
pub mod session;
pub mod step;

pub use gpt2::{SecureGpt2, SecureKvCache};
pub use sampling::{private_sample, private_sample_at, ClientDraws};
pub use session::{Costs, SecureVerifier, ServerView};
