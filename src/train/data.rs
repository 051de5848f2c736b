//! Token streams for training: corpus files tokenised into one stream (documents separated by
//! end-of-text), and batches of windows drawn from it by a seeded generator.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::model::tokenizer::END_OF_TEXT;
use crate::model::Tokenizer;

/// One long sequence of token ids.
#[derive(Debug, Clone)]
pub struct TokenStream {
    pub tokens: Vec<u32>,
}

impl TokenStream {
    /// Tokenises each file; a file may hold many documents separated by a line `<|endoftext|>`.
    pub fn from_files(files: &[PathBuf], tokenizer: &Tokenizer) -> Result<Self> {
        let eos = tokenizer.token_id(END_OF_TEXT);
        let mut tokens = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read corpus {}", file.display()))?;
            for doc in text
                .split(END_OF_TEXT)
                .map(str::trim)
                .filter(|d| !d.is_empty())
            {
                tokens.extend(tokenizer.encode(doc)?);
                tokens.extend(eos);
            }
        }
        if tokens.len() < 2 {
            bail!(
                "the corpus ({}) holds no text",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Ok(Self { tokens })
    }

    pub fn from_sequences(sequences: &[Vec<u32>], eos: Option<u32>) -> Result<Self> {
        let mut tokens = Vec::new();
        for s in sequences {
            tokens.extend(s);
            tokens.extend(eos);
        }
        if tokens.len() < 2 {
            bail!("no training text")
        }
        Ok(Self { tokens })
    }

    /// The batch of step `step`: `batch` windows of `seq_len` inputs and their next tokens, at
    /// offsets drawn from (seed, step) alone, so that a resumed run sees the same batches.
    pub fn batch(
        &self,
        seed: u64,
        step: usize,
        batch: usize,
        seq_len: usize,
    ) -> Result<(Tensor, Tensor)> {
        let seq_len = seq_len.min(self.tokens.len() - 1);
        let mut rng =
            ChaCha12Rng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for _ in 0..batch {
            let start = rng.random_range(0..self.tokens.len() - seq_len);
            inputs.extend_from_slice(&self.tokens[start..start + seq_len]);
            targets.extend_from_slice(&self.tokens[start + 1..start + seq_len + 1]);
        }
        Ok((
            Tensor::from_vec(inputs, (batch, seq_len), &Device::Cpu)?,
            Tensor::from_vec(targets, (batch, seq_len), &Device::Cpu)?,
        ))
    }
}
