//! The three ways to give prompts: `--prompt TEXT`, `--prompts FILE.jsonl`, `--prompt-ids 12,7,301`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::model::{ModelPair, Tokenizer};

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

/// One prompt, as text or as raw ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: Value,
    pub text: Option<String>,
    pub ids: Option<Vec<u32>>,
}

impl Prompt {
    /// The token ids, tokenizing the text when needed.
    pub fn token_ids(&self, tokenizer: Option<&Tokenizer>) -> Result<Vec<u32>> {
        match (&self.ids, &self.text, tokenizer) {
            (Some(ids), _, _) => Ok(ids.clone()),
            (None, Some(text), Some(tok)) => tok.encode(text),
            (None, Some(_), None) => bail!(
                "prompt {} is text but the models have no tokenizer: use --prompt-ids",
                self.id
            ),
            (None, None, _) => bail!(
                "prompt {} has neither \"prompt\" nor \"prompt_ids\"",
                self.id
            ),
        }
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

/// Other fields (a prompt's source, say) are allowed and ignored.
#[derive(Deserialize)]
struct JsonlLine {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    prompt_ids: Option<Vec<u32>>,
}

/// Reads `{"id", "prompt"}` (or `"prompt_ids"`) objects, one per line; blank lines are skipped.
pub fn read_jsonl(path: &Path) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompt file {}", path.display()))?;
    let mut prompts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: JsonlLine = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a prompt object", path.display(), n + 1))?;
        if parsed.prompt.is_none() && parsed.prompt_ids.is_none() {
            bail!(
                "{}:{}: needs \"prompt\" or \"prompt_ids\"",
                path.display(),
                n + 1
            )
        }
        prompts.push(Prompt {
            id: parsed.id.unwrap_or(Value::from(prompts.len())),
            text: parsed.prompt,
            ids: parsed.prompt_ids,
        });
    }
    if prompts.is_empty() {
        bail!("prompt file {} holds no prompts", path.display())
    }
    Ok(prompts)
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

    #[test]
    fn jsonl_reads_ids_text_and_rejects_junk() {
        let dir = std::env::temp_dir().join(format!("post-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.jsonl");
        std::fs::write(
            &good,
            "{\"id\":\"a\",\"prompt\":\"hi\"}\n\n{\"prompt_ids\":[1,2]}\n",
        )
        .unwrap();
        let prompts = read_jsonl(&good).unwrap();
        assert_eq!(prompts.len(), 2);
        assert_eq!(prompts[0].id, Value::from("a"));
        assert_eq!(prompts[1].ids, Some(vec![1, 2]));
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, "{\"id\":1}\n").unwrap();
        assert!(read_jsonl(&bad)
            .unwrap_err()
            .to_string()
            .contains("bad.jsonl:1"));
    }
}
