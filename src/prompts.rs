//! Prompt files: JSON lines of `{"id", "prompt"}` or `{"id", "prompt_ids"}`, and one prompt as
//! text or as raw token ids.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::model::Tokenizer;

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
