//! `post train` (a GPT-2 or a LLaMA-style model from scratch on text files) and `post distill`
//! (align a public model to a private one, of either architecture), sharing the optimisation flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::DType;

use crate::model::any::ModelConfig;
use crate::model::llama::TokenIds;
use crate::model::loader::{load_pair, Registry};
use crate::model::{Config, LanguageModel, LlamaConfig, Tokenizer};
use crate::train::data::TokenStream;
use crate::train::distill::{loss_fn, DistillLoss};
use crate::train::{existing_files, fit, next_token_loss, read_state, TrainOptions, Trainee};

#[derive(Debug, Clone, clap::Args)]
pub struct OptimArgs {
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Tokens per training window.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 200)]
    pub checkpoint_every: usize,
    /// Store the weights as f16 (half the size; the loader reads them back as f32).
    #[arg(long)]
    pub f16: bool,
}

impl OptimArgs {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            steps: self.steps,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            lr: self.lr,
            warmup: self.warmup,
            min_lr_ratio: 0.1,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
        }
    }

    fn dtype(&self) -> DType {
        if self.f16 {
            DType::F16
        } else {
            DType::F32
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training text (repeatable); documents inside a file may be separated by a line <|endoftext|>.
    #[arg(long, required = true, value_name = "FILE")]
    pub corpus: Vec<PathBuf>,
    /// The checkpoint folder (Hugging Face layout).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Reuse the tokenizer of this folder; without it a byte-level BPE is trained on the corpus.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of the BPE trained when --tokenizer is not given.
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 4)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 192)]
    pub n_embd: usize,
    #[arg(long, default_value_t = 4)]
    pub n_head: usize,
    /// Context window.
    #[arg(long, default_value_t = 128)]
    pub n_positions: usize,
    /// The architecture: gpt2, or llama (RMSNorm, rotary positions, SiLU-gated MLP, untied head).
    #[arg(long, default_value = "gpt2", value_parser = ["gpt2", "llama"])]
    pub arch: String,
    /// llama: key-value heads (grouped-query attention); default one per head.
    #[arg(long)]
    pub n_kv_head: Option<usize>,
    /// MLP width; default 4 n_embd for gpt2, 8/3 n_embd for llama (as many weights: its MLP has
    /// three matrices).
    #[arg(long)]
    pub n_inner: Option<usize>,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run_train(args: &TrainArgs) -> Result<()> {
    let corpus = existing_files(&args.corpus)?;
    let opts = args.optim.options();
    opts.validate()?;
    crate::train::check_writable(&args.out)?;
    let state = if args.resume {
        read_state(&args.out)?
    } else {
        None
    };
    let tokenizer = match (&state, &args.tokenizer) {
        (Some(_), _) => {
            Tokenizer::from_dir(&args.out)?.context("the checkpoint has no tokenizer.json")?
        }
        (None, Some(dir)) => Tokenizer::from_dir(dir)?
            .with_context(|| format!("no tokenizer in {}", dir.display()))?,
        (None, None) => Tokenizer::train_bpe(&corpus, args.vocab_size)?,
    };
    let eos = tokenizer.token_id(crate::model::tokenizer::END_OF_TEXT);
    let cfg = model_config(args, tokenizer.vocab_size(), eos)?;
    let window = cfg.shape().n_positions;
    if args.optim.seq_len > window {
        bail!(
            "--seq-len {} exceeds --n-positions {window}",
            args.optim.seq_len
        )
    }
    let (trainee, start) = match &state {
        Some(state) => {
            let trainee = Trainee::from_dir(&args.out)?;
            if trainee.cfg != cfg {
                bail!("the checkpoint in {} has another shape ({:?}) than asked for ({:?}): incompatible, not resumed", args.out.display(), trainee.cfg, cfg)
            }
            if state.step >= opts.steps {
                bail!(
                    "the checkpoint in {} already has {} of {} steps",
                    args.out.display(),
                    state.step,
                    opts.steps
                )
            }
            (trainee, state.step)
        }
        None if args.resume => bail!(
            "--resume: no checkpoint (trainer_state.json) in {}",
            args.out.display()
        ),
        None => (Trainee::fresh(&cfg, opts.seed)?, 0),
    };
    let stream = TokenStream::from_files(&corpus, &tokenizer)?;
    eprintln!(
        "training {} ({} parameters) on {} tokens",
        args.out.display(),
        cfg.parameter_count(),
        stream.tokens.len()
    );
    let report = fit(
        &trainee,
        &tokenizer,
        &opts,
        &args.out,
        start,
        "train",
        args.optim.dtype(),
        |step| stream.batch(opts.seed, step, opts.batch_size, opts.seq_len),
        |model, inputs, targets| {
            next_token_loss(&model.forward(inputs, &mut model.new_cache())?, targets)
        },
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The shape `post train` asks for, validated.
fn model_config(args: &TrainArgs, vocab_size: usize, eos: Option<u32>) -> Result<ModelConfig> {
    let cfg = match args.arch.as_str() {
        "llama" => ModelConfig::Llama(LlamaConfig {
            vocab_size,
            max_position_embeddings: args.n_positions,
            eos_token_id: eos.map(TokenIds::One),
            bos_token_id: None,
            ..LlamaConfig::sized(
                args.n_embd,
                args.n_inner.unwrap_or(args.n_embd * 8 / 3),
                args.n_layer,
                args.n_head,
                args.n_kv_head.unwrap_or(args.n_head),
            )
        }),
        _ => {
            if args.n_kv_head.is_some() {
                bail!("--n-kv-head goes with --arch llama")
            }
            ModelConfig::Gpt2(Config {
                vocab_size,
                n_positions: args.n_positions,
                n_embd: args.n_embd,
                n_layer: args.n_layer,
                n_head: args.n_head,
                n_inner: args.n_inner,
                layer_norm_epsilon: 1e-5,
                activation_function: "gelu_new".into(),
                eos_token_id: eos,
            })
        }
    };
    cfg.validate()?;
    Ok(cfg)
}

pub fn parameter_count(cfg: &Config) -> usize {
    ModelConfig::from(cfg).parameter_count()
}

#[derive(Debug, clap::Args)]
pub struct DistillArgs {
    /// The private model (teacher).
    #[arg(long, value_name = "MODEL")]
    pub teacher: String,
    /// The public model to start from (student).
    #[arg(long, value_name = "MODEL")]
    pub student: String,
    /// Token-level data: text the teacher scores (repeatable).
    #[arg(long, value_name = "FILE")]
    pub corpus: Vec<PathBuf>,
    /// Sequence-level data: prompts (JSON lines) the teacher continues; the student learns on them.
    #[arg(long, value_name = "FILE.jsonl")]
    pub prompts: Option<PathBuf>,
    /// Tokens the teacher generates per prompt.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// fkl, rkl, tv or fkl+ce.
    #[arg(long, default_value = "fkl")]
    pub loss: String,
    /// Softmax temperature of both models inside the loss.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Where the aligned public model goes.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Add the aligned model and the pair (aligned public, teacher) to the registry under this name.
    #[arg(long, value_name = "PAIR")]
    pub register: Option<String>,
    #[command(flatten)]
    pub optim: OptimArgs,
}

pub fn run_distill(args: &DistillArgs, registry_path: Option<&Path>) -> Result<()> {
    let loss: DistillLoss = args.loss.parse().map_err(anyhow::Error::msg)?;
    if args.temperature.is_nan() || args.temperature <= 0.0 {
        bail!("--temperature must be positive, got {}", args.temperature)
    }
    if args.corpus.is_empty() && args.prompts.is_none() {
        bail!("give distillation data: --corpus FILE (token-level) and/or --prompts FILE.jsonl (sequence-level)")
    }
    let opts = args.optim.options();
    opts.validate()?;
    crate::train::check_writable(&args.out)?;
    let registry = Registry::locate(registry_path)?;
    // Loads both and refuses a pair whose vocabularies or tokenizers differ.
    let pair = load_pair(&args.student, &args.teacher, &registry)?;
    let tokenizer = pair
        .tokenizer()
        .context("distillation needs a tokenizer in the student's or teacher's folder")?;
    let student = Trainee::from_dir(&pair.public.dir)?;
    let teacher = &pair.private.model;
    if args.optim.seq_len > student.cfg.shape().n_positions.min(teacher.window()) {
        bail!(
            "--seq-len {} exceeds a model's context window",
            args.optim.seq_len
        )
    }
    let mut sequences = Vec::new();
    if !args.corpus.is_empty() {
        sequences.extend(std::iter::once(
            TokenStream::from_files(&existing_files(&args.corpus)?, tokenizer)?.tokens,
        ));
    }
    if let Some(path) = &args.prompts {
        sequences.extend(teacher_generations(
            teacher,
            tokenizer,
            path,
            args.gen_tokens,
            opts.seed,
        )?);
    }
    let stream = TokenStream::from_sequences(
        &sequences,
        tokenizer.token_id(crate::model::tokenizer::END_OF_TEXT),
    )?;
    eprintln!(
        "distilling {} -> {} with {} on {} tokens",
        pair.private.name,
        args.out.display(),
        loss.name(),
        stream.tokens.len()
    );
    let recipe = format!(
        "distill --teacher {} --student {} --loss {}",
        args.teacher,
        args.student,
        loss.name()
    );
    let report = fit(
        &student,
        tokenizer,
        &opts,
        &args.out,
        0,
        &recipe,
        args.optim.dtype(),
        |step| stream.batch(opts.seed, step, opts.batch_size, opts.seq_len),
        loss_fn(teacher, loss, args.temperature),
    )?;
    println!("{}", serde_json::to_string(&report)?);
    if let Some(name) = &args.register {
        let path = registry_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| registry.root.join("registry.json"));
        register_pair(&path, name, &args.out, &args.teacher)?;
        println!("registered pair {name:?} in {}", path.display());
    }
    Ok(())
}

/// The teacher's own continuations of each prompt (sampled at temperature 1): sequence-level KD data.
fn teacher_generations(
    teacher: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    path: &Path,
    n: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    use rand::SeedableRng;
    let prompts = crate::prompts::read_jsonl(path)?;
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let opts = crate::decoding::DecodeOptions {
        draft_len: 0,
        temperature: 1.0,
        max_new_tokens: n,
        stop_token: teacher.end_of_text(),
    };
    let window = teacher.window();
    let bar = crate::progress::progress(prompts.len(), "teacher");
    let mut out = Vec::with_capacity(prompts.len());
    for prompt in &prompts {
        let mut ids = prompt.token_ids(Some(tokenizer))?;
        ids.truncate(window.saturating_sub(n).max(1));
        let generated =
            crate::decoding::speculative_decode(teacher, teacher, &ids, &opts, &mut rng)?;
        ids.extend(generated.output_ids);
        out.push(ids);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Adds `<pair>-public` (the aligned model, path relative to the registry) and the pair itself.
fn register_pair(registry: &Path, pair: &str, model_dir: &Path, private: &str) -> Result<()> {
    let text = std::fs::read_to_string(registry).unwrap_or_else(|_| "{}".into());
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("malformed registry {}", registry.display()))?;
    let root = registry.parent().unwrap_or(Path::new("."));
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let rel = abs(model_dir)
        .strip_prefix(abs(root))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| abs(model_dir));
    let public = format!("{pair}-public");
    json["models"][&public] = serde_json::json!({ "path": rel.to_string_lossy(), "description": format!("aligned to {private} by post distill") });
    json["pairs"][pair] = serde_json::json!({ "public": public, "private": private, "description": "distilled public model with its teacher" });
    std::fs::write(registry, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", registry.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_published_gpt2_sizes() {
        // 124,439,808 and 354,823,168: GPT-2 small and medium with the tied LM head counted once.
        assert_eq!(parameter_count(&Config::gpt2_small()), 124_439_808);
        assert_eq!(parameter_count(&Config::gpt2_medium()), 354_823_168);
    }
}
