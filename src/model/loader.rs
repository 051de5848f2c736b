//! One loader for every subcommand: a model reference is a local folder, a name in the model
//! registry (`models/registry.json`), or a Hugging Face repo id found in the local hub cache.
//! Nothing is ever downloaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::any::{Model, ModelConfig, Shape};
use super::Tokenizer;

/// `models/registry.json`: named models and named public/private pairs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub models: BTreeMap<String, RegistryModel>,
    #[serde(default)]
    pub pairs: BTreeMap<String, RegistryPair>,
    /// The folder holding the registry file; relative paths start here.
    #[serde(skip)]
    pub root: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryModel {
    /// A folder, relative to the registry file.
    #[serde(default)]
    pub path: Option<String>,
    /// A Hugging Face repo id, looked up in the local hub cache.
    #[serde(default)]
    pub hub: Option<String>,
    /// A tokenizer folder (relative to the registry file) for models whose folder has none.
    #[serde(default)]
    pub tokenizer: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryPair {
    pub public: String,
    pub private: String,
    #[serde(default)]
    pub description: String,
}

impl Registry {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model registry {}", path.display()))?;
        let mut registry: Registry = serde_json::from_str(&text)
            .with_context(|| format!("malformed model registry {}", path.display()))?;
        registry.root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(registry)
    }

    /// `explicit`, else `$POST_REGISTRY`, else `models/registry.json` under the working directory,
    /// else the one in this crate's source tree; an empty registry when none exists.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        if let Some(path) = explicit {
            return Self::from_file(path);
        }
        if let Some(path) = std::env::var_os("POST_REGISTRY") {
            return Self::from_file(Path::new(&path));
        }
        let candidates = [
            PathBuf::from("models/registry.json"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/registry.json"),
        ];
        match candidates.iter().find(|p| p.is_file()) {
            Some(path) => Self::from_file(path),
            None => Ok(Self::default()),
        }
    }

    pub fn pair(&self, name: &str) -> Result<&RegistryPair> {
        self.pairs.get(name).with_context(|| {
            let known: Vec<&str> = self.pairs.keys().map(String::as_str).collect();
            format!(
                "unknown pair {name:?}; the registry has: {}",
                known.join(", ")
            )
        })
    }

    pub fn resolve_relative(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }
}

/// Where a model reference led: the folder with `config.json` and weights, and where its tokenizer is.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub name: String,
    pub dir: PathBuf,
    pub tokenizer_dir: PathBuf,
}

/// Resolves a reference: an existing folder first, then a registry name, then the hub cache.
pub fn resolve(reference: &str, registry: &Registry) -> Result<ResolvedModel> {
    if reference.trim().is_empty() {
        bail!("empty model reference")
    }
    let as_path = Path::new(reference);
    if as_path.is_dir() {
        return Ok(ResolvedModel {
            name: reference.to_string(),
            dir: as_path.to_path_buf(),
            tokenizer_dir: as_path.to_path_buf(),
        });
    }
    if let Some(entry) = registry.models.get(reference) {
        let dir = match (&entry.path, &entry.hub) {
            (Some(path), None) => registry.resolve_relative(path),
            (None, Some(hub)) => hub_cache_dir(hub)?,
            _ => {
                bail!("registry entry {reference:?} must have exactly one of \"path\" and \"hub\"")
            }
        };
        if !dir.is_dir() {
            bail!(
                "registry entry {reference:?} points to {}, which is not a folder",
                dir.display()
            )
        }
        let tokenizer_dir = entry
            .tokenizer
            .as_deref()
            .map(|t| registry.resolve_relative(t))
            .unwrap_or_else(|| dir.clone());
        return Ok(ResolvedModel {
            name: reference.to_string(),
            dir,
            tokenizer_dir,
        });
    }
    let dir = hub_cache_dir(reference).with_context(|| {
        format!("model {reference:?} is not a folder, not a name in the registry, and not in the Hugging Face cache")
    })?;
    Ok(ResolvedModel {
        name: reference.to_string(),
        dir: dir.clone(),
        tokenizer_dir: dir,
    })
}

/// The hub cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_root() -> PathBuf {
    if let Some(cache) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(cache);
    }
    hf_hub::Cache::from_env().path().clone()
}

/// The snapshot folder of `repo_id` in the local hub cache (never the network: `post` runs offline).
fn hub_cache_dir(repo_id: &str) -> Result<PathBuf> {
    let root = hub_cache_root();
    let repo = hf_hub::Cache::new(root.clone()).model(repo_id.to_string());
    match repo.get("config.json") {
        Some(config) => Ok(config.parent().expect("a cached file lies in a snapshot folder").to_path_buf()),
        None => bail!(
            "{repo_id:?} is not in the Hugging Face cache at {} (post never downloads; fetch it where there is network, \
             e.g. `huggingface-cli download {repo_id}`, and copy the cache here)",
            root.display()
        ),
    }
}

/// A loaded model with its tokenizer (absent for models shipped without one).
pub struct LoadedModel {
    pub name: String,
    pub dir: PathBuf,
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
}

impl LoadedModel {
    /// The vocabulary, context window and end of text, whatever the architecture.
    pub fn config(&self) -> Shape {
        self.model.shape()
    }
}

/// `config.json` of the model in `dir`, of the architecture its `model_type` names.
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("missing or unreadable {}", path.display()))?;
    let cfg =
        ModelConfig::from_json(&text).with_context(|| format!("cannot use {}", path.display()))?;
    cfg.validate()
        .with_context(|| format!("unsupported {}", path.display()))?;
    Ok(cfg)
}

/// `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("malformed {}", index.display()))?;
        let map = json["weight_map"]
            .as_object()
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    bail!("no model.safetensors in {}", dir.display())
}

/// Loads the model in `dir` (f32 on the CPU) from the Hugging Face layout of its architecture.
pub fn load_dir(name: &str, dir: &Path, tokenizer_dir: &Path) -> Result<LoadedModel> {
    let cfg = read_config(dir)?;
    let files = weight_files(dir)?;
    for file in &files {
        if !file.is_file() {
            bail!("weight file {} is missing", file.display())
        }
    }
    // SAFETY: the files are memory-mapped read-only; post never writes to a model folder it loads.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }
        .with_context(|| format!("cannot read weights in {}", dir.display()))?;
    let model = cfg
        .load(vb)
        .with_context(|| format!("bad weights in {}", dir.display()))?;
    let tokenizer = Tokenizer::from_dir(tokenizer_dir)?;
    let vocab_size = model.shape().vocab_size;
    if let Some(tok) = &tokenizer {
        if tok.vocab_size() > vocab_size {
            bail!(
                "tokenizer {} has {} tokens but the model's vocabulary is {}",
                tok.source.display(),
                tok.vocab_size(),
                vocab_size
            )
        }
    }
    Ok(LoadedModel {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        model,
        tokenizer,
    })
}

pub fn load_model(reference: &str, registry: &Registry) -> Result<LoadedModel> {
    let resolved = resolve(reference, registry)?;
    load_dir(&resolved.name, &resolved.dir, &resolved.tokenizer_dir)
        .with_context(|| format!("cannot load model {reference:?}"))
}

/// A public (drafting) model and a private (verifying) model that share one vocabulary.
pub struct ModelPair {
    pub public: LoadedModel,
    pub private: LoadedModel,
}

impl ModelPair {
    /// The tokenizer to use for text: the private model's, else the public one's.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.private
            .tokenizer
            .as_ref()
            .or(self.public.tokenizer.as_ref())
    }
}

/// Loads both models and refuses a pair whose vocabularies differ.
pub fn load_pair(public: &str, private: &str, registry: &Registry) -> Result<ModelPair> {
    let public = load_model(public, registry)?;
    let private = load_model(private, registry)?;
    check_same_vocabulary(&public, &private)?;
    Ok(ModelPair { public, private })
}

/// Loads a named pair from the registry.
pub fn load_named_pair(name: &str, registry: &Registry) -> Result<ModelPair> {
    let pair = registry.pair(name)?.clone();
    load_pair(&pair.public, &pair.private, registry)
        .with_context(|| format!("cannot load pair {name:?}"))
}

fn check_same_vocabulary(public: &LoadedModel, private: &LoadedModel) -> Result<()> {
    let (pv, sv) = (public.config().vocab_size, private.config().vocab_size);
    if pv != sv {
        bail!("public model {:?} has a vocabulary of {pv} tokens, private model {:?} of {sv}: a pair must share one tokenizer", public.name, private.name)
    }
    if let (Some(a), Some(b)) = (&public.tokenizer, &private.tokenizer) {
        if a.vocab() != b.vocab() {
            bail!(
                "the tokenizers of {:?} ({}) and {:?} ({}) differ: a pair must share one tokenizer",
                public.name,
                a.source.display(),
                private.name,
                b.source.display()
            )
        }
    }
    Ok(())
}
