//! The models and decoding in plaintext and on shares, one binary: candle against Hugging Face
//! (`hf_reference`), the secure forward against candle (`secure_forward`), the speculative sampler's
//! distribution (`speculative`), the trained models that ship in `models/` (`shipped`) and the
//! LLaMA family against Hugging Face (`llama`).

#[path = "../common/mod.rs"]
mod common;

mod hf_reference;
mod llama;
mod secure_forward;
mod shipped;
mod speculative;
