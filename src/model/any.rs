//! One model type for the toolkit: [`Model`] holds either architecture, and [`LanguageModel`] is
//! what the plaintext paths (drafting, plaintext verification, the benchmarks' plaintext modes,
//! training) need from one, so they take a GPT-2, a LLaMA or a [`Model`] alike.

use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::cache::KvCache;
use super::gpt2::{Config, Gpt2};
use super::llama::{Llama, LlamaConfig, MODEL_TYPES};

/// A causal language model with an external KV cache.
pub trait LanguageModel {
    /// Logits [b, t, vocab] for new tokens `ids` [b, t] that follow the `cache.len()` cached positions.
    fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor>;
    fn new_cache(&self) -> KvCache;
    fn vocab_size(&self) -> usize;
    /// The context window in positions.
    fn window(&self) -> usize;
    /// The end-of-text token, when it lies inside the vocabulary.
    fn end_of_text(&self) -> Option<u32>;
    fn device(&self) -> &Device;

    /// Logits [t, vocab] as f32 rows for one sequence of new tokens.
    fn forward_rows(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        if ids.iter().any(|&id| id as usize >= self.vocab_size()) {
            candle_core::bail!("token id out of the vocabulary of {}", self.vocab_size())
        }
        let input = Tensor::new(ids, self.device())?.unsqueeze(0)?;
        self.forward(&input, cache)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec2()
    }
}

impl LanguageModel for Gpt2 {
    fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Gpt2::forward(self, ids, cache)
    }
    fn new_cache(&self) -> KvCache {
        Gpt2::new_cache(self)
    }
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn window(&self) -> usize {
        self.config().n_positions
    }
    fn end_of_text(&self) -> Option<u32> {
        self.config().end_of_text()
    }
    fn device(&self) -> &Device {
        Gpt2::device(self)
    }
}

impl LanguageModel for Llama {
    fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Llama::forward(self, ids, cache)
    }
    fn new_cache(&self) -> KvCache {
        Llama::new_cache(self)
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn window(&self) -> usize {
        self.cfg.max_position_embeddings
    }
    fn end_of_text(&self) -> Option<u32> {
        self.cfg.end_of_text()
    }
    fn device(&self) -> &Device {
        Llama::device(self)
    }
}

/// A loaded model of either architecture.
#[derive(Debug, Clone)]
pub enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
}

impl Model {
    /// [`LanguageModel::forward`], callable without the trait in scope.
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.inner().forward(ids, cache)
    }

    /// [`LanguageModel::forward_rows`], callable without the trait in scope.
    pub fn forward_rows(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        self.inner().forward_rows(ids, cache)
    }

    pub fn new_cache(&self) -> KvCache {
        self.inner().new_cache()
    }

    /// The architecture's name, as `config.json`'s `model_type` gives it.
    pub fn architecture(&self) -> &str {
        match self {
            Model::Gpt2(_) => "gpt2",
            Model::Llama(m) => &m.cfg.model_type,
        }
    }

    fn inner(&self) -> &dyn LanguageModel {
        match self {
            Model::Gpt2(m) => m,
            Model::Llama(m) => m,
        }
    }

    /// What every path needs to know of the model's shape.
    pub fn shape(&self) -> Shape {
        Shape {
            vocab_size: self.vocab_size(),
            n_positions: self.window(),
            eos_token_id: self.end_of_text(),
        }
    }

    pub fn config(&self) -> ModelConfig {
        match self {
            Model::Gpt2(m) => ModelConfig::Gpt2(m.config().clone()),
            Model::Llama(m) => ModelConfig::Llama(m.cfg.clone()),
        }
    }

    /// The GPT-2 inside, for the paths that run GPT-2 only (the secure engine): any other
    /// architecture is a clear error naming it.
    pub fn gpt2(&self) -> anyhow::Result<&Gpt2> {
        match self {
            Model::Gpt2(m) => Ok(m),
            other => bail!(
                "this path runs GPT-2 models only, and this one is a {} model",
                other.architecture()
            ),
        }
    }

    /// [`Self::gpt2`], by value.
    pub fn into_gpt2(self) -> anyhow::Result<Gpt2> {
        match self {
            Model::Gpt2(m) => Ok(m),
            other => bail!(
                "this path runs GPT-2 models only, and this one is a {} model",
                other.architecture()
            ),
        }
    }
}

impl From<Gpt2> for Model {
    fn from(m: Gpt2) -> Self {
        Model::Gpt2(m)
    }
}

impl From<Llama> for Model {
    fn from(m: Llama) -> Self {
        Model::Llama(m)
    }
}

impl LanguageModel for Model {
    fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.inner().forward(ids, cache)
    }
    fn new_cache(&self) -> KvCache {
        self.inner().new_cache()
    }
    fn vocab_size(&self) -> usize {
        self.inner().vocab_size()
    }
    fn window(&self) -> usize {
        self.inner().window()
    }
    fn end_of_text(&self) -> Option<u32> {
        self.inner().end_of_text()
    }
    fn device(&self) -> &Device {
        self.inner().device()
    }
}

/// The part of a config that every path needs, whatever the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub vocab_size: usize,
    /// The context window (GPT-2's `n_positions`, LLaMA's `max_position_embeddings`).
    pub n_positions: usize,
    /// The end-of-text token, inside the vocabulary.
    pub eos_token_id: Option<u32>,
}

impl Shape {
    pub fn end_of_text(&self) -> Option<u32> {
        self.eos_token_id
    }
}

impl From<Config> for ModelConfig {
    fn from(c: Config) -> Self {
        Self::Gpt2(c)
    }
}

impl From<&Config> for ModelConfig {
    fn from(c: &Config) -> Self {
        Self::Gpt2(c.clone())
    }
}

impl From<LlamaConfig> for ModelConfig {
    fn from(c: LlamaConfig) -> Self {
        Self::Llama(c)
    }
}

impl From<&LlamaConfig> for ModelConfig {
    fn from(c: &LlamaConfig) -> Self {
        Self::Llama(c.clone())
    }
}

impl From<&ModelConfig> for ModelConfig {
    fn from(c: &ModelConfig) -> Self {
        c.clone()
    }
}

/// A `config.json` of either architecture, told apart by its `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Gpt2(Config),
    Llama(LlamaConfig),
}

impl ModelConfig {
    /// Parses a `config.json`: `model_type` picks the architecture (absent means GPT-2, as in the
    /// configs `post train` writes); an unknown one is an error naming it.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let json: serde_json::Value = serde_json::from_str(text).context("malformed config")?;
        let model_type = match json.get("model_type") {
            None | Some(serde_json::Value::Null) => "gpt2",
            Some(t) => t
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("model_type must be a string"))?,
        };
        let cfg = match model_type {
            "gpt2" => Self::Gpt2(serde_json::from_value(json).context("malformed GPT-2 config")?),
            t if MODEL_TYPES.contains(&t) => {
                Self::Llama(LlamaConfig::parse(json).context("malformed LLaMA-style config")?)
            }
            other => bail!(
                "model_type {other:?} is not supported (supported: gpt2, {})",
                MODEL_TYPES.join(", ")
            ),
        };
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Gpt2(c) => c.validate(),
            Self::Llama(c) => c.validate(),
        }
    }

    pub fn architecture(&self) -> &str {
        match self {
            Self::Gpt2(_) => "gpt2",
            Self::Llama(c) => &c.model_type,
        }
    }

    pub fn shape(&self) -> Shape {
        match self {
            Self::Gpt2(c) => Shape {
                vocab_size: c.vocab_size,
                n_positions: c.n_positions,
                eos_token_id: c.end_of_text(),
            },
            Self::Llama(c) => Shape {
                vocab_size: c.vocab_size,
                n_positions: c.max_position_embeddings,
                eos_token_id: c.end_of_text(),
            },
        }
    }

    /// Number of weights (a tied head counted once).
    pub fn parameter_count(&self) -> usize {
        match self {
            Self::Gpt2(c) => {
                let (d, m) = (c.n_embd, c.mlp_dim());
                c.vocab_size * d
                    + c.n_positions * d
                    + 2 * d
                    + c.n_layer * (4 * d + d * 3 * d + 3 * d + d * d + d + d * m + m + m * d + d)
            }
            Self::Llama(c) => {
                let (d, m, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
                let (q, kv) = (c.num_attention_heads * hd, c.num_kv_heads() * hd);
                let biases =
                    if c.qkv_bias() { q + 2 * kv } else { 0 } + if c.o_bias() { d } else { 0 };
                let layer = d * q + 2 * d * kv + q * d + biases + 3 * d * m + 2 * d;
                let head = if c.tie_word_embeddings {
                    0
                } else {
                    c.vocab_size * d
                };
                c.vocab_size * d + c.num_hidden_layers * layer + d + head
            }
        }
    }

    /// Loads the weights from a var builder at the checkpoint's root.
    pub fn load(&self, vb: VarBuilder) -> Result<Model> {
        Ok(match self {
            Self::Gpt2(c) => {
                // `save_pretrained` of GPT2LMHeadModel prefixes every key with `transformer.`;
                // the original checkpoints do not.
                let vb = if vb.contains_tensor("transformer.wte.weight") {
                    vb.pp("transformer")
                } else {
                    vb
                };
                Model::Gpt2(Gpt2::load(vb, c)?)
            }
            Self::Llama(c) => Model::Llama(Llama::load(vb, c)?),
        })
    }

    /// The architecture's own initialisation drawn from `seed`.
    pub fn random(&self, seed: u64) -> Result<Model> {
        Ok(self.random_with_vars(seed)?.0)
    }

    /// [`Self::random`] with the weights held as variables (for training).
    pub fn random_with_vars(&self, seed: u64) -> Result<(Model, VarMap)> {
        Ok(match self {
            Self::Gpt2(c) => {
                let (m, vars) = Gpt2::random_with_vars(c, seed)?;
                (Model::Gpt2(m), vars)
            }
            Self::Llama(c) => {
                let (m, vars) = Llama::random_with_vars(c, seed)?;
                (Model::Llama(m), vars)
            }
        })
    }

    /// The config as `config.json` text, `model_type` included for LLaMA-style models.
    pub fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Self::Gpt2(c) => serde_json::to_string_pretty(c),
            Self::Llama(c) => serde_json::to_string_pretty(c),
        }
    }
}
