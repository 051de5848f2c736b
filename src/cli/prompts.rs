//! The three ways to give prompts: `--prompt TEXT`, `--prompts FILE.jsonl`, `--prompt-ids 12,7,301`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::model::ModelPair;
use crate::prompts::{read_jsonl, Prompt};

/// Where the prompts come from: exactly one of the three.
#[derive(Debug, clap::Args)]
pub struct PromptArgs {
    /// One prompt as text.
    #[arg(long, group = "input")]
    pub prompt: Option<String>,
    /// Prompts as JSON lines: {"id", "prompt"} or {"id", "prompt_ids"} per line.
    #[arg(long, group = "input", value_name = "FILE.jsonl")]
    pub prompts: Option<PathBuf>,
    /// One prompt as raw token ids, comma-separated (for models without a tokenizer).
    #[arg(long, group = "input", value_name = "IDS")]
    pub prompt_ids: Option<String>,
    /// Only the first N prompts of --prompts.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Keep only the last tokens of a prompt that would not leave room for --max-new-tokens in the
    /// context window (instead of refusing it).
    #[arg(long)]
    pub truncate_prompts: bool,
}

impl PromptArgs {
    pub fn prompts(&self) -> Result<Vec<Prompt>> {
        let mut prompts = match (&self.prompt, &self.prompts, &self.prompt_ids) {
            (Some(text), None, None) => vec![Prompt {
                id: Value::from(0),
                text: Some(text.clone()),
                ids: None,
            }],
            (None, Some(path), None) => read_jsonl(path)?,
            (None, None, Some(list)) => vec![Prompt {
                id: Value::from(0),
                text: None,
                ids: Some(parse_ids(list)?),
            }],
            _ => bail!("give one of --prompt TEXT, --prompts FILE.jsonl or --prompt-ids IDS"),
        };
        if let Some(n) = self.limit {
            if n == 0 {
                bail!("--limit must be at least 1")
            }
            prompts.truncate(n);
        }
        Ok(prompts)
    }

    /// A prompt's ids, cut to leave room for `max_new` tokens when --truncate-prompts is given,
    /// and checked against the vocabulary.
    pub fn prepare(
        &self,
        prompt: &Prompt,
        pair: &ModelPair,
        max_new: usize,
        vocab: usize,
    ) -> Result<Vec<u32>> {
        let mut ids = prompt.token_ids(pair.tokenizer())?;
        let window = pair
            .private
            .config()
            .n_positions
            .min(pair.public.config().n_positions);
        if self.truncate_prompts && ids.len() + max_new > window {
            let keep = window.saturating_sub(max_new).max(1);
            ids.drain(..ids.len().saturating_sub(keep));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            bail!(
                "prompt {}: token id {bad} is outside the vocabulary of {vocab}",
                prompt.id
            )
        }
        Ok(ids)
    }
}

/// Parses `12,7,301`.
pub fn parse_ids(list: &str) -> Result<Vec<u32>> {
    let ids = list
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .with_context(|| format!("--prompt-ids: {s:?} is not a token id"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_bad_ids_are_named() {
        assert_eq!(parse_ids("12, 7,301").unwrap(), vec![12, 7, 301]);
        let err = parse_ids("12,x").unwrap_err().to_string();
        assert!(err.contains("\"x\""), "{err}");
    }
}
