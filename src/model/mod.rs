//! The model layer: GPT-2 and the LLaMA family in candle, their tokenizers, and the one loader
//! every subcommand uses.

pub mod any;
pub mod cache;
pub mod gpt2;
pub mod llama;
pub mod loader;
pub mod random;
pub mod tokenizer;

pub use any::{LanguageModel, Model};
pub use cache::KvCache;
pub use gpt2::{Config, Gpt2};
pub use llama::{Llama, LlamaConfig};
pub use loader::{load_model, load_pair, LoadedModel, ModelPair, Registry};
pub use tokenizer::Tokenizer;
