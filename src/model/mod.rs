//! The model layer: GPT-2 in candle, its tokenizer, and the one loader every subcommand uses.

pub mod gpt2;
pub mod loader;
pub mod random;
pub mod tokenizer;

pub use gpt2::{Config, Gpt2, KvCache};
pub use loader::{load_model, load_pair, LoadedModel, ModelPair, Registry};
pub use tokenizer::Tokenizer;
