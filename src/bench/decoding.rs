//! The paper's speedup table: standard secure decoding (one secure forward per token) and POST
//! (K public drafts verified in one secure forward) on the same prompts, through the same engine
//! session, one row per method and draft length.
//!
//! A *cell* is (pair, weights, dataset, net, temperature, new tokens, prompts, seed) with its draft
//! lengths: standard runs once per cell and is the baseline of every POST row's speedup.
//! With random weights (`--weights random`: the private model's shape, its architecture's initialisation) only
//! costs mean anything: acceptance, seconds per token and speedup are left empty, never reported,
//! and the private model drafts for itself so that each pass verifies a full K.

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use crate::decoding::{decode_with_policy, Adaptive, DecodeOptions, DraftPolicy, Fixed};
use crate::model::any::ModelConfig;
use crate::model::loader::{read_config, resolve, LoadedModel, ModelPair, Registry};
use crate::model::{Config, LlamaConfig, Tokenizer};
use crate::mpc::{EngineConfig, LinkModel};
use crate::secure::{Costs, SecureVerifier};

/// Where a pair's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// The checkpoints the registry names.
    Trained,
    /// The same shapes with their architecture's random initialisation: costs only.
    Random,
}

impl Weights {
    pub fn name(self) -> &'static str {
        match self {
            Self::Trained => "trained",
            Self::Random => "random",
        }
    }
}

/// Drafts per step: a fixed K, or `auto` (the adaptive policy of `decoding/adaptive.rs`, up to
/// [`AUTO_MAX_DRAFT_LEN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftLen {
    Fixed(usize),
    Auto,
}

/// The largest K the adaptive policy may choose.
pub const AUTO_MAX_DRAFT_LEN: usize = 8;

impl std::str::FromStr for DraftLen {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            n => n
                .parse()
                .map(Self::Fixed)
                .map_err(|_| format!("draft length {n:?}: expected a number or auto")),
        }
    }
}

impl std::fmt::Display for DraftLen {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::Fixed(k) => write!(f, "{k}"),
            Self::Auto => write!(f, "auto"),
        }
    }
}

impl<'de> Deserialize<'de> for DraftLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(k) => Ok(Self::Fixed(k)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One (cell, method, draft length) of the speedup table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    pub pair: String,
    pub public_model: String,
    pub private_model: String,
    pub weights: String,
    pub dataset: String,
    pub net: String,
    pub bandwidth_mbps: f64,
    pub rtt_ms: f64,
    pub method: String,
    /// Drafts per step: 0 for standard, K, or auto.
    pub draft_len: String,
    /// Drafts actually verified per secure step (below K where the window or the token budget
    /// cut a step short; the policy's mean with auto).
    pub mean_draft_len: f64,
    pub temperature: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub prompts: usize,
    pub tokens: usize,
    /// Secure forward passes (each with its secure sampling step).
    pub secure_steps: usize,
    /// Accepted drafts per secure step (empty with random weights).
    pub mean_accepted: Option<f64>,
    /// Accepted over drafted (empty with random weights and for standard).
    pub acceptance_rate: Option<f64>,
    pub online_rounds: u64,
    /// Online MB, both directions.
    pub online_mb: f64,
    /// Dealer MB (offline).
    pub offline_mb: f64,
    /// Simulated seconds of the session's one-time weight sharing (not in sim_seconds).
    pub setup_seconds: f64,
    pub sim_seconds: f64,
    pub compute_seconds: f64,
    /// Simulated seconds per secure step: the cost of one secure pass over K + 1 tokens.
    pub sec_per_pass: f64,
    /// Simulated seconds per generated token (empty with random weights).
    pub sec_per_token: Option<f64>,
    /// Standard's sec_per_token over this row's (1 for standard; empty with random weights).
    pub speedup: Option<f64>,
}

impl BenchRow {
    /// The columns that identify a row's cell and method in a results file.
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.cell_key(), self.method, self.draft_len)
    }

    /// The columns that identify a row's cell (its key without method and draft length): what
    /// `post sweep --shard` assigns to a shard, so that a cell's rows always run together.
    pub fn cell_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.pair,
            self.weights,
            self.dataset,
            self.net,
            self.temperature,
            self.max_new_tokens,
            self.prompts,
            self.seed,
        )
    }
}

/// What one cell runs.
pub struct Cell<'a> {
    pub pair_name: &'a str,
    pub pair: &'a ModelPair,
    pub weights: Weights,
    /// The dataset's label (its file stem).
    pub dataset: &'a str,
    /// (id, prompt ids), already cut to the context window.
    pub prompts: &'a [(String, Vec<u32>)],
    pub net: &'a str,
    pub link: LinkModel,
    pub draft_lens: &'a [DraftLen],
    pub temperature: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub sim_seed: Option<u64>,
    pub ignore_eos: bool,
}

struct Totals {
    tokens: usize,
    steps: usize,
    accepted: usize,
    drafted: usize,
    costs: Costs,
}

/// Runs standard decoding, then POST at each draft length, in one engine session; `tick` is
/// called after each prompt. Returns the standard row first.
pub fn run_cell(cell: &Cell, mut tick: impl FnMut(&str)) -> Result<Vec<BenchRow>> {
    if cell.prompts.is_empty() || cell.draft_lens.is_empty() {
        bail!("a bench cell needs prompts and at least one draft length")
    }
    if cell.draft_lens.contains(&DraftLen::Fixed(0)) {
        bail!("draft lengths must be at least 1")
    }
    let engine = EngineConfig {
        link: cell.link,
        seed: cell.sim_seed,
        ..EngineConfig::default()
    };
    let private = cell.pair.private.model.gpt2()?;
    let mut verifier = SecureVerifier::start(private, &engine, cell.temperature)
        .context("cannot start the secure session")?;
    let setup = verifier.setup;
    let eos = private.config().end_of_text();
    let mut run = |k: DraftLen, verifier: &mut SecureVerifier| -> Result<Totals> {
        let opts = DecodeOptions {
            draft_len: 0,
            temperature: cell.temperature,
            max_new_tokens: cell.max_new_tokens,
            stop_token: if cell.ignore_eos { None } else { eos },
        };
        let mut rng = ChaCha12Rng::seed_from_u64(cell.seed);
        let before = verifier.totals()?;
        let mut t = Totals {
            tokens: 0,
            steps: 0,
            accepted: 0,
            drafted: 0,
            costs: Costs::default(),
        };
        // The adaptive policy learns across the cell's prompts.
        let mut policy: Box<dyn DraftPolicy> = match k {
            DraftLen::Fixed(k) => Box::new(Fixed(k)),
            DraftLen::Auto => Box::new(Adaptive::new(AUTO_MAX_DRAFT_LEN)),
        };
        for (id, ids) in cell.prompts {
            let public = &cell.pair.public.model;
            let d = decode_with_policy(public, verifier, ids, &opts, policy.as_mut(), &mut rng)
                .with_context(|| format!("prompt {id} (K = {k}, {})", cell.net))?;
            t.tokens += d.output_ids.len();
            t.steps += d.steps;
            t.accepted += d.accepted;
            t.drafted += d.drafted;
            tick(id);
        }
        t.costs = verifier.totals()?.since(&before);
        Ok(t)
    };
    let standard = run(DraftLen::Fixed(0), &mut verifier)?;
    let mut rows = vec![row(
        cell,
        "standard",
        DraftLen::Fixed(0),
        &standard,
        &setup,
        None,
    )];
    let baseline = rows[0].sec_per_token;
    for &k in cell.draft_lens {
        let post = run(k, &mut verifier)?;
        rows.push(row(cell, "post", k, &post, &setup, baseline));
    }
    verifier.finish()?;
    Ok(rows)
}

fn per(x: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        x / n as f64
    }
}

fn row(
    cell: &Cell,
    method: &str,
    k: DraftLen,
    t: &Totals,
    setup: &Costs,
    baseline: Option<f64>,
) -> BenchRow {
    let trained = cell.weights == Weights::Trained;
    let c = &t.costs;
    let sec_per_token = trained.then(|| per(c.sim_seconds, t.tokens));
    BenchRow {
        pair: cell.pair_name.to_string(),
        public_model: cell.pair.public.name.clone(),
        private_model: cell.pair.private.name.clone(),
        weights: cell.weights.name().to_string(),
        dataset: cell.dataset.to_string(),
        net: cell.net.to_string(),
        bandwidth_mbps: cell.link.bandwidth * 8.0 / 1e6,
        rtt_ms: cell.link.rtt * 1e3,
        method: method.to_string(),
        draft_len: k.to_string(),
        mean_draft_len: per(t.drafted as f64, t.steps),
        temperature: cell.temperature,
        max_new_tokens: cell.max_new_tokens,
        seed: cell.seed,
        prompts: cell.prompts.len(),
        tokens: t.tokens,
        secure_steps: t.steps,
        mean_accepted: trained.then(|| per(t.accepted as f64, t.steps)),
        acceptance_rate: (trained && t.drafted > 0).then(|| per(t.accepted as f64, t.drafted)),
        online_rounds: c.rounds,
        online_mb: (c.client_bytes + c.server_bytes) as f64 / 1e6,
        offline_mb: c.dealer_bytes as f64 / 1e6,
        setup_seconds: setup.sim_seconds,
        sim_seconds: c.sim_seconds,
        compute_seconds: c.compute_seconds,
        sec_per_pass: per(c.sim_seconds, t.steps),
        sec_per_token,
        speedup: match (baseline, sec_per_token) {
            (None, Some(_)) if method == "standard" => Some(1.0),
            (Some(base), Some(own)) if own > 0.0 => Some(base / own),
            _ => None,
        },
    }
}

/// The shapes of the hub checkpoints the registry names, for `--weights random` without a download
/// (each as its `config.json` on the hub gives it).
fn known_shape(hub: &str) -> Option<ModelConfig> {
    let llama = |d, mlp, layers, heads, kv_heads, vocab, window, tied| {
        ModelConfig::Llama(LlamaConfig {
            vocab_size: vocab,
            max_position_embeddings: window,
            tie_word_embeddings: tied,
            ..LlamaConfig::sized(d, mlp, layers, heads, kv_heads)
        })
    };
    match hub {
        "gpt2" | "openai-community/gpt2" => Some(ModelConfig::Gpt2(Config::gpt2_small())),
        "gpt2-medium" | "openai-community/gpt2-medium" => {
            Some(ModelConfig::Gpt2(Config::gpt2_medium()))
        }
        "JackFram/llama-68m" => Some(llama(768, 3072, 2, 12, 12, 32000, 2048, false)),
        "JackFram/llama-160m" => Some(llama(768, 3072, 12, 12, 12, 32000, 2048, false)),
        "lmsys/vicuna-7b-v1.3" => Some(llama(4096, 11008, 32, 32, 32, 32000, 2048, false)),
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0" => {
            let mut cfg = llama(2048, 5632, 22, 32, 4, 32000, 2048, false);
            if let ModelConfig::Llama(c) = &mut cfg {
                c.rms_norm_eps = 1e-5;
            }
            Some(cfg)
        }
        _ => None,
    }
}

/// A model of `reference`'s shape with random weights: a local folder's config.json, or the known
/// shape of a hub checkpoint. Hub GPT-2 models get GPT-2's tokenizer shipped in
/// `models/gpt2-tokenizer`; hub LLaMA models the tokenizer in the hub cache, when it is there.
fn random_model(reference: &str, registry: &Registry, seed: u64) -> Result<LoadedModel> {
    let hub = registry
        .models
        .get(reference)
        .and_then(|m| m.hub.clone())
        .or_else(|| known_shape(reference).map(|_| reference.to_string()));
    let (cfg, tokenizer) = match hub {
        Some(hub) => {
            let cfg = known_shape(&hub).with_context(|| {
                format!("--weights random: no known shape for hub model {hub:?} (known: gpt2, gpt2-medium, JackFram/llama-68m, JackFram/llama-160m, lmsys/vicuna-7b-v1.3, TinyLlama/TinyLlama-1.1B-Chat-v1.0)")
            })?;
            let tokenizer = match cfg {
                ModelConfig::Gpt2(_) => {
                    Tokenizer::from_dir(&registry.resolve_relative("gpt2-tokenizer"))?
                }
                ModelConfig::Llama(_) => match resolve(reference, registry) {
                    Ok(resolved) => Tokenizer::from_dir(&resolved.tokenizer_dir)?,
                    Err(_) => None,
                },
            };
            (cfg, tokenizer)
        }
        None => {
            let resolved = resolve(reference, registry)?;
            let cfg = read_config(&resolved.dir)?;
            (cfg, Tokenizer::from_dir(&resolved.tokenizer_dir)?)
        }
    };
    check_memory(reference, cfg.parameter_count())?;
    let model = cfg.random(seed)?;
    Ok(LoadedModel {
        name: reference.to_string(),
        dir: Default::default(),
        model,
        tokenizer,
    })
}

/// Refuses a random model whose f32 weights would not fit in this machine's available memory
/// (Vicuna-7B needs 27 GB): one clear line instead of the kernel's out-of-memory kill.
fn check_memory(reference: &str, parameters: usize) -> Result<()> {
    let available_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        });
    let needed_gb = parameters as f64 * 4.0 / 1e9;
    if let Some(kb) = available_kb {
        let available_gb = kb * 1024.0 / 1e9;
        if needed_gb > available_gb {
            bail!("--weights random: {reference} has {parameters} parameters, {needed_gb:.1} GB as f32, more than the {available_gb:.1} GB available")
        }
    }
    Ok(())
}

/// A registry pair with trained or random weights.
pub fn load_pair(name: &str, weights: Weights, registry: &Registry) -> Result<ModelPair> {
    match weights {
        Weights::Trained => crate::model::loader::load_named_pair(name, registry).map_err(|e| {
            anyhow::anyhow!("{e:#}; for costs alone without the checkpoints, add --weights random")
        }),
        Weights::Random => {
            // The private model drafts for itself: at T = 0 every draft passes, so every secure
            // pass verifies a full K (drafting is plaintext and outside the secure cost).
            let pair = registry.pair(name)?.clone();
            let private = random_model(&pair.private, registry, 2)?;
            let public = LoadedModel {
                name: format!("{} (self-draft)", private.name),
                dir: Default::default(),
                model: private.model.clone(),
                tokenizer: private.tokenizer.clone(),
            };
            Ok(ModelPair { public, private })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_llama_shapes_have_their_published_parameter_counts() {
        let count = |hub| known_shape(hub).unwrap().parameter_count();
        // LLaMA-7B (Vicuna's base) and TinyLlama-1.1B as their model cards count them.
        assert_eq!(count("lmsys/vicuna-7b-v1.3"), 6_738_415_616);
        assert_eq!(count("TinyLlama/TinyLlama-1.1B-Chat-v1.0"), 1_100_048_384);
        // The drafters' names round their sizes: 68 M and 162 M.
        assert_eq!(count("JackFram/llama-68m") / 1_000_000, 68);
        assert_eq!(count("JackFram/llama-160m") / 1_000_000, 162);
        assert_eq!(count("gpt2"), 124_439_808);
    }
}
