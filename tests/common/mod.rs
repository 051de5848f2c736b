//! Helpers shared by the integration tests: tiny random GPT-2 models made in Rust, temp folders,
//! and runs of the `post` binary; `mpc`: protocols run on shares by two threads.
#![allow(dead_code)]

pub mod mpc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use post::decoding::sampling::probabilities;
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

/// The registry of `models/`: the shipped pairs and the tiny test models.
pub fn registry() -> post::model::loader::Registry {
    post::model::loader::Registry::from_file(&models_dir().join("registry.json")).unwrap()
}

/// Exact joint probability of the first `len` tokens after `prompt` under `model` at `temperature`.
pub fn exact_distribution(
    model: &Gpt2,
    prompt: &[u32],
    temperature: f64,
    len: usize,
) -> HashMap<Vec<u32>, f64> {
    let mut joint = HashMap::from([(vec![], 1.0)]);
    for _ in 0..len {
        let mut next = HashMap::new();
        for (seq, prob) in joint {
            let mut input = prompt.to_vec();
            input.extend(&seq);
            let rows = model.forward_rows(&input, &mut model.new_cache()).unwrap();
            for (t, &pt) in probabilities(rows.last().unwrap(), temperature)
                .iter()
                .enumerate()
            {
                let mut longer: Vec<u32> = seq.clone();
                longer.push(t as u32);
                next.insert(longer, prob * pt);
            }
        }
        joint = next;
    }
    joint
}

/// Exact joint distribution of the first `len` tokens that speculative decoding with `k` drafts
/// emits (steps as `decode_with` takes them) when a rejected draft is replaced by a draw from p
/// instead of the residual (p - q)+: a planted bias, the hardest to see of six sampler bugs
/// simulated on the distribution tests' models (chi-square divergence from p 0.17-0.36; emitting
/// q, an inverted ratio, the residual (q - p)+, the bonus from the row before, a shifted inverse
/// CDF: 0.36 and more).
pub fn resampling_p_distribution(
    public: &Gpt2,
    private: &Gpt2,
    prompt: &[u32],
    temperature: f64,
    len: usize,
    k: usize,
) -> HashMap<Vec<u32>, f64> {
    let mut memo: HashMap<(bool, Vec<u32>), Vec<f64>> = HashMap::new();
    let mut next = |is_private: bool, ctx: &[u32]| -> Vec<f64> {
        memo.entry((is_private, ctx.to_vec()))
            .or_insert_with(|| {
                let model = if is_private { private } else { public };
                let rows = model.forward_rows(ctx, &mut model.new_cache()).unwrap();
                probabilities(rows.last().unwrap(), temperature)
            })
            .clone()
    };
    let mut done = HashMap::new();
    // (tokens emitted so far, probability), one step at a time.
    let mut open = vec![(vec![], 1.0)];
    while let Some((emitted, weight)) = open.pop() {
        if emitted.len() == len {
            *done.entry(emitted).or_insert(0.0) += weight;
            continue;
        }
        let steps = k.min(len - emitted.len() - 1);
        let context = |extra: &[u32]| [prompt, &emitted[..], extra].concat();
        // Every draft sequence with its probability under q.
        let mut drafts = vec![(vec![], weight)];
        for _ in 0..steps {
            drafts = drafts
                .into_iter()
                .flat_map(|(d, w): (Vec<u32>, f64)| {
                    let q = next(false, &context(&d));
                    (0..q.len()).map(move |x| ([&d[..], &[x as u32][..]].concat(), w * q[x]))
                })
                .collect();
        }
        for (d, mut reach) in drafts {
            for i in 0..=steps {
                let p = next(true, &context(&d[..i]));
                if i == steps {
                    // Every draft accepted: the bonus token from p.
                    for (t, &pt) in p.iter().enumerate() {
                        open.push(([&emitted[..], &d[..], &[t as u32][..]].concat(), reach * pt));
                    }
                    break;
                }
                let q = next(false, &context(&d[..i]));
                let x = d[i] as usize;
                let accept = (p[x] / q[x]).min(1.0);
                // The bug: the rejected draft's replacement comes from p, not from (p - q)+.
                for (t, &pt) in p.iter().enumerate() {
                    let w = reach * (1.0 - accept) * pt;
                    if w > 0.0 {
                        open.push(([&emitted[..], &d[..i], &[t as u32][..]].concat(), w));
                    }
                }
                reach *= accept;
            }
        }
    }
    done
}

/// Share of `samples` simulated samples of `n` draws from `planted` that the chi-square test
/// against `expected` at `z` standard deviations rejects: the test's power against that bias.
pub fn chi_square_power(
    planted: &HashMap<Vec<u32>, f64>,
    expected: &HashMap<Vec<u32>, f64>,
    n: usize,
    z: f64,
    samples: usize,
) -> f64 {
    let mut cells: Vec<(&Vec<u32>, f64)> = planted.iter().map(|(k, &v)| (k, v)).collect();
    cells.sort_by(|a, b| a.0.cmp(b.0));
    let mut total = 0.0;
    let cdf: Vec<f64> = cells
        .iter()
        .map(|c| {
            total += c.1;
            total
        })
        .collect();
    let mut rng = ChaCha12Rng::seed_from_u64(99);
    let rejected = (0..samples)
        .filter(|_| {
            let mut counts = HashMap::new();
            for _ in 0..n {
                let u = rand::Rng::random::<f64>(&mut rng) * total;
                let i = cdf.partition_point(|&c| c < u).min(cells.len() - 1);
                *counts.entry(cells[i].0.clone()).or_insert(0usize) += 1;
            }
            let (stat, dof) = chi_square(&counts, expected, n);
            stat >= chi_square_critical(dof, z)
        })
        .count();
    rejected as f64 / samples as f64
}

/// Pearson's statistic of a byte string against uniform bytes (255 dof).
pub fn uniformity_chi_square(bytes: &[u8]) -> f64 {
    let mut h = [0.0f64; 256];
    bytes.iter().for_each(|&b| h[b as usize] += 1.0);
    let expected = bytes.len() as f64 / 256.0;
    h.iter().map(|c| (c - expected).powi(2) / expected).sum()
}

/// Two-sample chi-square between the byte histograms of two transcripts of any lengths.
pub fn two_sample_chi_square(a: &[u8], b: &[u8]) -> f64 {
    let (mut ha, mut hb) = ([0.0f64; 256], [0.0f64; 256]);
    a.iter().for_each(|&x| ha[x as usize] += 1.0);
    b.iter().for_each(|&x| hb[x as usize] += 1.0);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
    ha.iter()
        .zip(&hb)
        .filter(|(x, y)| *x + *y > 0.0)
        .map(|(x, y)| (ka * x - kb * y).powi(2) / (x + y))
        .sum()
}

/// Upper quantile of chi-square with `dof` degrees of freedom at z standard deviations (Wilson-Hilferty).
pub fn chi_square_critical(dof: usize, z: f64) -> f64 {
    let k = dof as f64;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Pearson's statistic over the cells with positive expected mass (cells with none must be empty);
/// cells expecting fewer than 5 counts are pooled into one, as the test's approximation needs.
pub fn chi_square(
    counts: &HashMap<Vec<u32>, usize>,
    expected: &HashMap<Vec<u32>, f64>,
    n: usize,
) -> (f64, usize) {
    for key in counts.keys() {
        assert!(
            expected.get(key).copied().unwrap_or(0.0) > 0.0,
            "{key:?} has no mass under p but was emitted"
        );
    }
    let (mut stat, mut cells) = (0.0, 0);
    let (mut pooled_want, mut pooled_got) = (0.0, 0.0);
    for (key, &prob) in expected {
        if prob > 0.0 {
            let want = prob * n as f64;
            let got = *counts.get(key).unwrap_or(&0) as f64;
            if want < 5.0 {
                pooled_want += want;
                pooled_got += got;
            } else {
                stat += (got - want).powi(2) / want;
                cells += 1;
            }
        }
    }
    if pooled_want > 0.0 {
        stat += (pooled_got - pooled_want).powi(2) / pooled_want;
        cells += 1;
    }
    (stat, cells - 1)
}

/// Runs the `post` binary from the crate root.
pub fn post(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_post"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// Runs `post`, expects success, and returns its standard output.
pub fn post_ok(args: &[&str]) -> String {
    let out = post(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `post`, expects failure, and returns its error: one line, never a panic.
pub fn post_error(args: &[&str]) -> String {
    let out = post(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: expected one line, got {stderr}"
    );
    stderr
}

/// The largest |got - want| over rows of logits of equal shapes.
pub fn max_abs_diff(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .flat_map(|(g, w)| {
            assert_eq!(g.len(), w.len());
            g.iter().zip(w).map(|(a, b)| (a - b).abs())
        })
        .fold(0.0, f32::max)
}

/// Logits of `ids` one token at a time through a fresh KV cache; also the cache's final length.
pub fn stepwise_logits(model: &post::model::Model, ids: &[u32]) -> (Vec<Vec<f32>>, usize) {
    let mut cache = model.new_cache();
    let rows = ids
        .iter()
        .map(|&id| model.forward_rows(&[id], &mut cache).unwrap().remove(0))
        .collect();
    (rows, cache.len())
}
