//! Models with random weights: each architecture's own initialisation drawn from a seed, the
//! trainer's starting point and the benchmarks' stand-in for a model of a given shape.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Normal};

use super::gpt2::{Config, Gpt2};
use super::llama::{Llama, LlamaConfig};

impl Gpt2 {
    /// GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer),
    /// LayerNorm gains 1, biases 0; drawn from `seed`.
    pub fn random(cfg: &Config, seed: u64) -> Result<Gpt2> {
        Ok(Self::random_with_vars(cfg, seed)?.0)
    }

    /// [`Self::random`] with its weights held as variables (for training): the model's tensors
    /// are the variables' own.
    pub fn random_with_vars(cfg: &Config, seed: u64) -> Result<(Gpt2, VarMap)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Gpt2::load(vb, cfg)?;
        let residual_std = 0.02 / (2.0 * cfg.n_layer as f32).sqrt();
        fill(&varmap, seed, |name| {
            if name.contains("ln_") && name.ends_with(".weight") {
                Init::Constant(1.0)
            } else if name.ends_with(".bias") {
                Init::Constant(0.0)
            } else if name.ends_with("c_proj.weight") {
                Init::Normal(residual_std)
            } else {
                Init::Normal(0.02)
            }
        })?;
        Ok((model, varmap))
    }
}

impl Llama {
    /// Hugging Face's LLaMA initialisation: N(0, initializer_range) for every matrix, RMSNorm
    /// gains 1, biases 0; drawn from `seed`.
    pub fn random(cfg: &LlamaConfig, seed: u64) -> Result<Llama> {
        Ok(Self::random_with_vars(cfg, seed)?.0)
    }

    /// [`Self::random`] with its weights held as variables (for training).
    pub fn random_with_vars(cfg: &LlamaConfig, seed: u64) -> Result<(Llama, VarMap)> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Llama::load(vb, cfg)?;
        let std = cfg.initializer_range as f32;
        fill(&varmap, seed, |name| {
            if name.ends_with("norm.weight") {
                Init::Constant(1.0)
            } else if name.ends_with(".bias") {
                Init::Constant(0.0)
            } else {
                Init::Normal(std)
            }
        })?;
        Ok((model, varmap))
    }
}

enum Init {
    Constant(f32),
    Normal(f32),
}

/// Sets every variable of `varmap` as `init` says for its name, in name order (one seed, one model).
fn fill(varmap: &VarMap, seed: u64, init: impl Fn(&str) -> Init) -> Result<()> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let shape = var.as_tensor().dims().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init(name) {
            Init::Constant(c) => vec![c; n],
            Init::Normal(std) => {
                let normal = Normal::new(0.0f32, std).expect("positive std");
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            }
        };
        var.set(&Tensor::from_vec(values, shape, &Device::Cpu)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config {
            n_layer: 2,
            n_embd: 32,
            n_head: 2,
            n_positions: 16,
            vocab_size: 64,
            ..Config::gpt2_small()
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn random_models_follow_gpt2s_initialisation_and_their_seed() {
        let cfg = tiny();
        let a = Gpt2::random(&cfg, 7).unwrap();
        let b = Gpt2::random(&cfg, 7).unwrap();
        let c = Gpt2::random(&cfg, 8).unwrap();
        assert_eq!(values(a.wte()), values(b.wte()), "one seed, one model");
        assert_ne!(
            values(a.wte()),
            values(c.wte()),
            "another seed, another model"
        );
        let wte = values(a.wte());
        let std = (wte.iter().map(|v| v * v).sum::<f32>() / wte.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.002, "wte std {std}");
        let gain = values(&a.ln_f().weight);
        let bias = values(&a.ln_f().bias);
        assert!(gain.iter().all(|&g| g == 1.0) && bias.iter().all(|&b| b == 0.0));
    }
}
