//! The private model on secret shares: a secure GPT-2 forward ([`gpt2`]), private sampling
//! ([`sampling`]) with the session's joint randomness ([`coins`]), and the session that runs them
//! for the decoding loop ([`session`]), whose step requests [`step`] checks; secure generation over
//! a set of prompts and its report rows ([`generation`]).
//! Built from `mpc` protocols; the protocols know nothing of GPT-2.

pub mod cache;
pub mod coins;
pub mod generation;
pub mod gpt2;
mod layers;
pub mod llama;
pub mod model;
pub mod sampling;
pub mod session;
pub mod show;
pub mod step;

pub use cache::SecureKvCache;
pub use coins::StepUniforms;
pub use gpt2::SecureGpt2;
pub use llama::SecureLlama;
pub use model::{PrivateModel, SecureModel, SecureShape};
pub use sampling::{
    check_temperature, private_sample, private_sample_at, ClientDraws, Outcome, MIN_TEMPERATURE,
};
pub use session::{Costs, SecureVerifier, ServerView};
pub use step::Step;
