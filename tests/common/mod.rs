//! Helpers shared by the integration tests: tiny random GPT-2 models made in Rust, and temp folders.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use post::model::{Config, Gpt2};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Normal};

pub fn tiny_config(
    vocab_size: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_positions: usize,
) -> Config {
    Config {
        vocab_size,
        n_positions,
        n_embd,
        n_layer,
        n_head,
        n_inner: None,
        layer_norm_epsilon: 1e-5,
        activation_function: "gelu_new".into(),
        eos_token_id: None,
    }
}

/// Shapes of every tensor of the Hugging Face GPT-2 layout (without the `transformer.` prefix).
pub fn weight_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (d, m) = (cfg.n_embd, cfg.mlp_dim());
    let mut shapes = vec![
        ("wte.weight".to_string(), vec![cfg.vocab_size, d]),
        ("wpe.weight".to_string(), vec![cfg.n_positions, d]),
        ("ln_f.weight".to_string(), vec![d]),
        ("ln_f.bias".to_string(), vec![d]),
    ];
    for i in 0..cfg.n_layer {
        for (name, shape) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, m]),
            ("mlp.c_fc.bias", vec![m]),
            ("mlp.c_proj.weight", vec![m, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            shapes.push((format!("h.{i}.{name}"), shape));
        }
    }
    shapes
}

/// Random weights (normal with `std`; LayerNorm gains around 1) from a fixed seed.
pub fn random_weights(cfg: &Config, seed: u64, std: f32) -> HashMap<String, Tensor> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, std).unwrap();
    weight_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let gain = name.ends_with("ln_1.weight")
                || name.ends_with("ln_2.weight")
                || name.ends_with("ln_f.weight");
            let values: Vec<f32> = (0..n)
                .map(|_| normal.sample(&mut rng) + if gain { 1.0 } else { 0.0 })
                .collect();
            (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
        })
        .collect()
}

pub fn build_model(cfg: &Config, weights: &HashMap<String, Tensor>) -> Gpt2 {
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    Gpt2::load(vb, cfg).unwrap()
}

pub fn random_model(cfg: &Config, seed: u64, std: f32) -> Gpt2 {
    build_model(cfg, &random_weights(cfg, seed, std))
}

/// Writes a Hugging Face-layout model folder (config.json + model.safetensors).
pub fn write_model_dir(dir: &Path, cfg: &Config, weights: &HashMap<String, Tensor>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
}

/// A fresh, empty folder under the system temp folder.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("post-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}
