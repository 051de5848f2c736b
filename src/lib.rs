//! `post`: private GPT inference by public drafting and secure verification.
//!
//! Layers: [`model`] (GPT-2 in candle, loader, tokenizer), [`spec`] (the speculative-sampling rule
//! and the plaintext draft-and-verify decoder), [`cli`] (subcommands).

pub mod bench;
pub mod cli;
pub mod deploy;
pub mod link;
pub mod model;
pub mod mpc;
pub mod progress;
pub mod prompts;
pub mod report;
pub mod secure;
pub mod spec;
pub mod train;
