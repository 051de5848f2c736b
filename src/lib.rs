//! `post`: private GPT inference by public drafting and secure verification.
//!
//! Layers: [`model`] (GPT-2 in candle, loader, tokenizer, random models), [`decoding`] (the
//! speculative-sampling rule and the plaintext draft-and-verify decoder), [`mpc`] (the secure
//! engine), [`secure`] (GPT-2 on secret shares), [`bench`](mod@bench) and [`train`](mod@train), [`progress`] and
//! [`prompts`] (shared by the library and the command line), [`cli`] (subcommands: the library
//! never depends on it).

pub mod bench;
pub mod cli;
pub mod decoding;
pub mod deploy;
pub mod link;
pub mod model;
pub mod mpc;
pub mod progress;
pub mod prompts;
pub mod report;
pub mod secure;
pub mod train;
