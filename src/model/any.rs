//! One model type for the toolkit: [`Model`] holds either architecture, and [`LanguageModel`] is
//! what the plaintext paths (drafting, plaintext verification, the benchmarks' plaintext modes,
//! training) need from one, so they take a GPT-2, a LLaMA or a [`Model`] alike.

use anyhow::bail;
use candle_core::{DType, Device, Result, Tensor};

use super::cache::KvCache;
use super::gpt2::Gpt2;
use super::llama::Llama;

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
