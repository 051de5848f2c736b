//! Training GPT-2 or a LLaMA-style model in candle: from scratch on a text corpus ([`train`]) and by knowledge distillation
//! from a teacher ([`distill`]). Both share one loop ([`fit`]): AdamW, linear warm-up then cosine
//! decay, global gradient-norm clipping, an indicatif bar with loss and tokens/s, and checkpoints in
//! the Hugging Face layout (config.json + model.safetensors + tokenizer.json) that the loader
//! reads unchanged. A checkpoint is written to a temporary file and renamed, so an interrupted run
//! never loses the last one; `--resume` continues from it with the same batches (each step's batch
//! is a function of the seed and the step number; Adam's moments restart).

pub mod data;
pub mod distill;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use serde::{Deserialize, Serialize};

use crate::model::any::ModelConfig;
use crate::model::{LanguageModel, Model, Tokenizer};

/// Knobs of one optimisation run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainOptions {
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup: usize,
    /// The cosine decays to lr * min_lr_ratio.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Gradients are rescaled so that their global norm is at most this.
    pub grad_clip: f64,
    pub seed: u64,
    /// Steps between checkpoints (the last step always writes one).
    pub checkpoint_every: usize,
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.seq_len < 2 {
            bail!("--steps and --batch-size must be positive and --seq-len at least 2")
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be a positive number, got {}", self.lr)
        }
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warm-up, then cosine down to lr * min_lr_ratio.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup.min(self.steps)).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + 0.5 * (self.lr - min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// What the last checkpoint recorded; `--resume` reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps completed.
    pub step: usize,
    pub options: TrainOptions,
    pub tokens_seen: u64,
    pub last_loss: f64,
    /// What produced this model (`train` or `distill ...`).
    pub recipe: String,
}

/// A model whose weights are variables, with the config that shaped it.
pub struct Trainee {
    pub varmap: VarMap,
    pub model: Model,
    pub cfg: ModelConfig,
}

impl Trainee {
    /// The architecture's initialisation drawn from `seed` ([`ModelConfig::random`]), with the
    /// weights as variables.
    pub fn fresh(cfg: impl Into<ModelConfig>, seed: u64) -> Result<Self> {
        let cfg = cfg.into();
        let (model, varmap) = cfg.random_with_vars(seed)?;
        Ok(Self { varmap, model, cfg })
    }

    /// Variables initialised from a model folder in the Hugging Face layout (one weight file or
    /// the shards its index lists).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg = crate::model::loader::read_config(dir)?;
        let trainee = Self::fresh(cfg, 0)?;
        let mut tensors = HashMap::new();
        for path in crate::model::loader::weight_files(dir)? {
            tensors.extend(
                candle_core::safetensors::load(&path, &Device::Cpu)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            );
        }
        let path = dir.join("model.safetensors");
        let prefixed = tensors.contains_key("transformer.wte.weight");
        {
            let data = trainee.varmap.data().lock().expect("varmap lock");
            for (name, var) in data.iter() {
                let key = if prefixed {
                    format!("transformer.{name}")
                } else {
                    name.clone()
                };
                let t = tensors
                    .get(&key)
                    .with_context(|| format!("{} has no tensor {key}", path.display()))?;
                if t.dims() != var.as_tensor().dims() {
                    bail!(
                        "{}: {key} has shape {:?}, the config wants {:?}",
                        path.display(),
                        t.dims(),
                        var.as_tensor().dims()
                    )
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        Ok(trainee)
    }

    fn vars(&self) -> Vec<Var> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut named: Vec<(&String, &Var)> = data.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        named.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// Writes a complete model folder: weights (as `dtype`), config, tokenizer and trainer state.
    pub fn save(
        &self,
        dir: &Path,
        tokenizer: &Tokenizer,
        state: &TrainerState,
        dtype: DType,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tensors: HashMap<String, Tensor> = {
            let data = self.varmap.data().lock().expect("varmap lock");
            data.iter()
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(dtype)?)))
                .collect::<Result<_>>()?
        };
        let write = |name: &str, f: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
            let tmp = dir.join(format!("{name}.tmp"));
            f(&tmp)?;
            std::fs::rename(&tmp, dir.join(name))
                .with_context(|| format!("cannot write {}", dir.join(name).display()))
        };
        write("model.safetensors", &|p| {
            Ok(candle_core::safetensors::save(&tensors, p)?)
        })?;
        write("config.json", &|p| {
            Ok(std::fs::write(p, self.cfg.to_json()?)?)
        })?;
        write("tokenizer.json", &|p| {
            tokenizer
                .inner()
                .save(p, false)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
            Ok(())
        })?;
        // The BOS a LLaMA tokenizer adds is said in tokenizer_config.json, not tokenizer.json.
        if let Some(bos) = tokenizer.bos() {
            write("tokenizer_config.json", &|p| {
                let token = tokenizer
                    .inner()
                    .id_to_token(bos)
                    .context("the BOS id is outside the vocabulary")?;
                let config = serde_json::json!({ "add_bos_token": true, "bos_token": token });
                Ok(std::fs::write(p, serde_json::to_string_pretty(&config)?)?)
            })?;
        }
        write("trainer_state.json", &|p| {
            Ok(std::fs::write(p, serde_json::to_string_pretty(state)?)?)
        })?;
        Ok(())
    }
}

/// Fails early, with the folder's name, when a checkpoint folder cannot be written.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create checkpoint folder {}", dir.display()))?;
    let probe = dir.join(".post-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("checkpoint folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<Option<TrainerState>> {
    let path = dir.join("trainer_state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("malformed {}", path.display())
    })?))
}

/// Mean cross-entropy of next-token prediction: logits [b, t, v] against targets [b, t].
pub fn next_token_loss(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
}

/// Rescales `grads` in place so that their global L2 norm is at most `max_norm`; returns the norm.
fn clip_gradients(
    grads: &mut candle_core::backprop::GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<f64> {
    let mut sq = 0.0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm && max_norm > 0.0 {
        let scale = max_norm / norm;
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    pub steps: usize,
    pub final_loss: f64,
    pub tokens_per_second: f64,
    pub seconds: f64,
}

/// The shared loop. `batch(step)` gives (inputs, targets) [b, t]; `loss(model, inputs, targets)` the
/// scalar to minimise. Checkpoints go to `out` every `checkpoint_every` steps and at the end.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    trainee: &Trainee,
    tokenizer: &Tokenizer,
    opts: &TrainOptions,
    out: &Path,
    start_step: usize,
    recipe: &str,
    save_dtype: DType,
    mut batch: impl FnMut(usize) -> Result<(Tensor, Tensor)>,
    loss: impl Fn(&Model, &Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> Result<FitReport> {
    opts.validate()?;
    check_writable(out)?;
    let vars = trainee.vars();
    let params = ParamsAdamW {
        lr: opts.lr_at(start_step),
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(vars.clone(), params)?;
    let bar = crate::progress::progress(opts.steps, "train");
    bar.set_position(start_step as u64);
    let start = Instant::now();
    let (mut tokens, mut last_loss) = (0u64, f64::NAN);
    for step in start_step..opts.steps {
        let (inputs, targets) = batch(step)?;
        opt.set_learning_rate(opts.lr_at(step));
        let value = loss(&trainee.model, &inputs, &targets)?;
        let mut grads = value.backward()?;
        clip_gradients(&mut grads, &vars, opts.grad_clip)?;
        opt.step(&grads)?;
        last_loss = value.to_scalar::<f32>()? as f64;
        if !last_loss.is_finite() {
            bail!("the loss diverged at step {step} (got {last_loss}); lower --lr")
        }
        tokens += inputs.elem_count() as u64;
        let rate = tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("loss {last_loss:.3} | {rate:.0} tok/s"));
        bar.inc(1);
        let done = step + 1;
        if done % opts.checkpoint_every.max(1) == 0 || done == opts.steps {
            let state = TrainerState {
                step: done,
                options: opts.clone(),
                tokens_seen: tokens,
                last_loss,
                recipe: recipe.to_string(),
            };
            trainee.save(out, tokenizer, &state, save_dtype)?;
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    Ok(FitReport {
        steps: opts.steps - start_step,
        final_loss: last_loss,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
        seconds,
    })
}

/// Mean next-token cross-entropy (nats) of `model` over token sequences (each scored from its
/// second token on, in windows of the context length); perplexity is its exponential.
pub fn cross_entropy_on(model: &dyn LanguageModel, sequences: &[Vec<u32>]) -> Result<(f64, usize)> {
    let window = model.window();
    let (mut total, mut count) = (0.0f64, 0usize);
    for seq in sequences {
        for chunk in seq.chunks(window) {
            if chunk.len() < 2 {
                continue;
            }
            let input = Tensor::new(&chunk[..chunk.len() - 1], &Device::Cpu)?.unsqueeze(0)?;
            let target = Tensor::new(&chunk[1..], &Device::Cpu)?;
            let logits = model.forward(&input, &mut model.new_cache())?.squeeze(0)?;
            let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let picked = log_probs
                .gather(&target.unsqueeze(1)?, 1)?
                .sum_all()?
                .to_scalar::<f32>()?;
            total -= picked as f64;
            count += chunk.len() - 1;
        }
    }
    if count == 0 {
        bail!("no sequence has two tokens to score")
    }
    Ok((total / count as f64, count))
}

/// Corpus files given on the command line, checked to exist.
pub fn existing_files(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if files.is_empty() {
        bail!("no corpus given: pass --corpus FILE (repeatable)")
    }
    for f in files {
        if !f.is_file() {
            bail!("corpus file {} does not exist", f.display())
        }
    }
    Ok(files.to_vec())
}
