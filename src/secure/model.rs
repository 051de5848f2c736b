//! One interface to the secure models: the session, private sampling and the benchmarks take a
//! [`SecureModel`] of either architecture, set up from a plaintext model the server holds
//! ([`PrivateModel`]) and the public shape the client knows ([`SecureShape`]).

use anyhow::bail;

use super::cache::SecureKvCache;
use super::gpt2::SecureGpt2;
use super::llama::SecureLlama;
use crate::model::{Config, Gpt2, Llama, LlamaConfig, Model};
use crate::mpc::party::Result;
use crate::mpc::{Party, RingTensor};

/// The private model's public shape: what the client knows of it.
#[derive(Debug, Clone, PartialEq)]
pub enum SecureShape {
    Gpt2(Config),
    Llama(LlamaConfig),
}

impl SecureShape {
    /// The context window in positions.
    pub fn window(&self) -> usize {
        match self {
            SecureShape::Gpt2(c) => c.n_positions,
            SecureShape::Llama(c) => c.max_position_embeddings,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            SecureShape::Gpt2(c) => c.vocab_size,
            SecureShape::Llama(c) => c.vocab_size,
        }
    }

    pub fn end_of_text(&self) -> Option<u32> {
        match self {
            SecureShape::Gpt2(c) => c.end_of_text(),
            SecureShape::Llama(c) => c.end_of_text(),
        }
    }

    /// The width of one layer's cached keys (and values) per position.
    pub fn kv_width(&self) -> usize {
        match self {
            SecureShape::Gpt2(c) => c.n_embd,
            SecureShape::Llama(c) => c.num_kv_heads() * c.head_dim(),
        }
    }

    pub fn layers(&self) -> usize {
        match self {
            SecureShape::Gpt2(c) => c.n_layer,
            SecureShape::Llama(c) => c.num_hidden_layers,
        }
    }
}

impl From<&Config> for SecureShape {
    fn from(c: &Config) -> Self {
        SecureShape::Gpt2(c.clone())
    }
}

impl From<&LlamaConfig> for SecureShape {
    fn from(c: &LlamaConfig) -> Self {
        SecureShape::Llama(c.clone())
    }
}

/// A plaintext model the server can share: GPT-2, a LLaMA, or a [`Model`] of either.
pub trait PrivateModel {
    fn secure_shape(&self) -> SecureShape;
    /// The model as the toolkit's one type (cheap: candle tensors are shared, not copied).
    fn to_model(&self) -> Model;

    /// Its first `n` decoder layers at full width, with the embedding, final norm and head: for
    /// costs measured by layer (the layers are identical in shape). LLaMA-style models only.
    fn with_layers(&self, n: usize) -> anyhow::Result<Model> {
        match self.to_model() {
            Model::Llama(mut m) => {
                if n == 0 || n > m.layers.len() {
                    bail!(
                        "--layers {n}: the model has {} decoder layers",
                        m.layers.len()
                    );
                }
                m.layers.truncate(n);
                m.cfg.num_hidden_layers = n;
                Ok(Model::Llama(m))
            }
            other => bail!(
                "--layers runs LLaMA-style models only, and this one is a {} model",
                other.architecture()
            ),
        }
    }
}

impl PrivateModel for Gpt2 {
    fn secure_shape(&self) -> SecureShape {
        self.config().into()
    }
    fn to_model(&self) -> Model {
        Model::Gpt2(self.clone())
    }
}

impl PrivateModel for Llama {
    fn secure_shape(&self) -> SecureShape {
        self.config().into()
    }
    fn to_model(&self) -> Model {
        Model::Llama(self.clone())
    }
}

impl PrivateModel for Model {
    fn secure_shape(&self) -> SecureShape {
        match self {
            Model::Gpt2(m) => m.secure_shape(),
            Model::Llama(m) => m.secure_shape(),
        }
    }
    fn to_model(&self) -> Model {
        self.clone()
    }
}

/// A secure model of either architecture, as each party holds it.
pub enum SecureModel {
    Gpt2(SecureGpt2),
    Llama(SecureLlama),
}

impl SecureModel {
    /// Shares and prepares the server's model: the server passes `Some(model)`, the client `None`;
    /// both pass the announced shape, which the server's model must have.
    pub fn setup(
        p: &mut Party,
        shape: &SecureShape,
        model: Option<&Model>,
    ) -> anyhow::Result<Self> {
        Ok(match (shape, model) {
            (SecureShape::Gpt2(cfg), None) => SecureModel::Gpt2(SecureGpt2::setup(p, cfg, None)?),
            (SecureShape::Gpt2(cfg), Some(Model::Gpt2(m))) => {
                SecureModel::Gpt2(SecureGpt2::setup(p, cfg, Some(m))?)
            }
            (SecureShape::Llama(cfg), None) => {
                SecureModel::Llama(SecureLlama::setup(p, cfg, None)?)
            }
            (SecureShape::Llama(cfg), Some(Model::Llama(m))) => {
                SecureModel::Llama(SecureLlama::setup(p, cfg, Some(m))?)
            }
            (_, Some(m)) => bail!(
                "the server's {} model does not match the announced architecture",
                m.architecture()
            ),
        })
    }

    pub fn shape(&self) -> SecureShape {
        match self {
            SecureModel::Gpt2(m) => m.config().into(),
            SecureModel::Llama(m) => m.config().into(),
        }
    }

    pub fn window(&self) -> usize {
        self.shape().window()
    }

    pub fn vocab_size(&self) -> usize {
        self.shape().vocab_size()
    }

    pub fn end_of_text(&self) -> Option<u32> {
        self.shape().end_of_text()
    }

    pub fn new_cache(&self, p: &mut Party) -> Result<SecureKvCache> {
        match self {
            SecureModel::Gpt2(m) => m.new_cache(p),
            SecureModel::Llama(m) => m.new_cache(p),
        }
    }

    /// Shared logits [t, vocab] at f fractional bits (see [`SecureGpt2::forward`]).
    pub fn forward(
        &self,
        p: &mut Party,
        ids: Option<&[u32]>,
        t: usize,
        cache: &mut SecureKvCache,
    ) -> Result<RingTensor> {
        match self {
            SecureModel::Gpt2(m) => m.forward(p, ids, t, cache),
            SecureModel::Llama(m) => m.forward(p, ids, t, cache),
        }
    }

    /// The logits at 2f fractional bits, for private sampling.
    pub fn forward_untruncated(
        &self,
        p: &mut Party,
        ids: Option<&[u32]>,
        t: usize,
        cache: &mut SecureKvCache,
    ) -> Result<RingTensor> {
        match self {
            SecureModel::Gpt2(m) => m.forward_untruncated(p, ids, t, cache),
            SecureModel::Llama(m) => m.forward_untruncated(p, ids, t, cache),
        }
    }
}

impl From<SecureGpt2> for SecureModel {
    fn from(m: SecureGpt2) -> Self {
        SecureModel::Gpt2(m)
    }
}
