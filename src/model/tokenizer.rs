//! Text <-> token ids through the `tokenizers` crate.
//!
//! A model folder carries either a `tokenizer.json` (GPT-2's byte-level BPE, or LLaMA's
//! sentencepiece-style BPE with byte fallback: the file says which) or GPT-2's `vocab.json` +
//! `merges.txt` (byte-level BPE, no prefix space: what Hugging Face's `GPT2Tokenizer` does).
//! Whether a BOS token starts every text is what `tokenizer_config.json` says (`add_bos_token`,
//! `bos_token`, as LLaMA's checkpoints have it); without that flag, the `tokenizer.json`'s own
//! post-processor decides (transformers 5 puts LLaMA's BOS there), as in Hugging Face.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// GPT-2's end-of-text token, the separator between training documents.
pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it was read from, for error messages.
    pub source: PathBuf,
    /// What starts every text.
    bos: Bos,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bos {
    /// `tokenizer_config.json` asks for this token.
    Token(u32),
    /// `tokenizer_config.json` says `add_bos_token: false`.
    None,
    /// No flag: the tokenizer's post-processor adds its special tokens, if it has any.
    PostProcessor,
}

impl Tokenizer {
    /// The tokenizer in `dir`, or `None` when the folder has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let inner = tokenizers::Tokenizer::from_file(&json)
                .map_err(|e| anyhow!("cannot read tokenizer {}: {e}", json.display()))?;
            let bos = bos_token(dir, &inner)?;
            return Ok(Some(Self {
                inner,
                source: json,
                bos,
            }));
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_merges(&vocab, &merges).map(Some);
        }
        Ok(None)
    }

    /// GPT-2's byte-level BPE from its two files.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        let to_str = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .with_context(|| format!("non-UTF-8 path {}", p.display()))
        };
        let bpe = BPE::from_file(&to_str(vocab)?, &to_str(merges)?)
            .build()
            .map_err(|e| {
                anyhow!(
                    "cannot read BPE files {} and {}: {e}",
                    vocab.display(),
                    merges.display()
                )
            })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        Ok(Self {
            inner,
            source: vocab.to_path_buf(),
            bos: Bos::PostProcessor,
        })
    }

    /// The ids of `text`, after the BOS token when the tokenizer's config asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, self.bos == Bos::PostProcessor)
            .map_err(|e| anyhow!("cannot tokenize: {e}"))?;
        let ids = encoding.get_ids().iter().copied();
        Ok(self.bos().into_iter().chain(ids).collect())
    }

    /// The BOS token `tokenizer_config.json` asks for, if it does.
    pub fn bos(&self) -> Option<u32> {
        match self.bos {
            Bos::Token(id) => Some(id),
            _ => None,
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot detokenize: {e}"))
    }

    pub fn vocab(&self) -> HashMap<String, u32> {
        self.inner.get_vocab(true)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The id of a token string (e.g. `<|endoftext|>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Trains a byte-level BPE of `vocab_size` tokens (GPT-2's scheme, `<|endoftext|>` first) on text files.
    pub fn train_bpe(files: &[PathBuf], vocab_size: usize) -> Result<Self> {
        use tokenizers::models::bpe::BpeTrainer;
        use tokenizers::models::TrainerWrapper;
        use tokenizers::AddedToken;
        if vocab_size < 300 {
            anyhow::bail!(
                "--vocab-size must be at least 300 (256 bytes plus merges), got {vocab_size}"
            )
        }
        let alphabet = ByteLevel::alphabet().into_iter().collect();
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(alphabet)
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let names = files
            .iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        inner
            .train_from_files(&mut trainer, names)
            .map_err(|e| anyhow!("cannot train the tokenizer: {e}"))?;
        Ok(Self {
            inner,
            source: files.first().cloned().unwrap_or_default(),
            bos: Bos::PostProcessor,
        })
    }

    /// Writes `tokenizer.json` into `dir` (and, for a tokenizer that adds a BOS token, the
    /// `tokenizer_config.json` that says so).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        self.inner
            .save(&path, false)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        if let Some(bos) = self.bos() {
            let token = self
                .inner
                .id_to_token(bos)
                .context("the BOS id is outside the vocabulary")?;
            let config = serde_json::json!({ "add_bos_token": true, "bos_token": token });
            let path = dir.join("tokenizer_config.json");
            std::fs::write(&path, serde_json::to_string_pretty(&config)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// What `dir/tokenizer_config.json` says of the BOS: `add_bos_token: true` with a `bos_token`
/// (a string or `{"content": ...}`) that the vocabulary has, `false`, or nothing.
fn bos_token(dir: &Path, inner: &tokenizers::Tokenizer) -> Result<Bos> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(Bos::PostProcessor);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    match config.get("add_bos_token").and_then(|v| v.as_bool()) {
        None => return Ok(Bos::PostProcessor),
        Some(false) => return Ok(Bos::None),
        Some(true) => {}
    }
    let token = match config.get("bos_token") {
        Some(serde_json::Value::String(t)) => t.as_str(),
        Some(other) => other
            .get("content")
            .and_then(|c| c.as_str())
            .with_context(|| format!("{}: bos_token has no content", path.display()))?,
        None => anyhow::bail!("{}: add_bos_token without a bos_token", path.display()),
    };
    let id = inner.token_to_id(token).with_context(|| {
        format!(
            "{}: bos_token {token:?} is not in the vocabulary",
            path.display()
        )
    })?;
    Ok(Bos::Token(id))
}
