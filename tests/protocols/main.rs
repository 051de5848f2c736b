//! Every protocol on secret shares, opened and compared with f64 plaintext over realistic GPT-2
//! ranges; rounds must not depend on the number of rows. One binary, a module per family
//! (plus the engine's network and leakage tests; real-time shaping, timed by the wall clock, is a
//! binary of its own, tests/shaping.rs); the helpers the families share are here.

#[path = "../common/mod.rs"]
mod common;

mod arithmetic;
mod comparison;
mod leakage;
mod matmul;
mod network;
mod nonlinear;
mod normalisation;
mod softmax;

use common::mpc::{assert_close, assert_costs, decode_at, encode, run, uniform, Outcome};
use post::mpc::protocols::{
    self,
    exp::exp,
    gelu::gelu,
    layernorm::layernorm,
    max::max_last,
    reciprocal, select,
    softmax::{softmax, softmax_values_at},
    PreparedRows,
};
use post::mpc::{EngineConfig, FixedPoint, LinkModel, RingTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

fn cfg() -> EngineConfig {
    EngineConfig {
        link: LinkModel::ideal(),
        ..EngineConfig::default()
    }
}

fn fp() -> FixedPoint {
    FixedPoint::default()
}

fn ulp() -> f64 {
    1.0 / fp().scale()
}

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// The reals that the fixed-point encoding of `xs` stands for.
fn encoded(xs: &[f64]) -> Vec<f64> {
    xs.iter()
        .map(|&x| fp().decode_one(fp().encode_one(x).unwrap()))
        .collect()
}

fn matmul_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
        }
    }
    c
}

/// Ring values uniform in (-2^61, 2^61), the whole range a one-round matmul lifts.
fn full_range(rng: &mut ChaCha12Rng, n: usize) -> Vec<u64> {
    let bound = (1i64 << 61) - 1;
    (0..n)
        .map(|_| rng.random_range(-bound..=bound) as u64)
        .collect()
}

/// Inputs within 1/8 left of GeLU's cut-offs, where its comparisons (resolving 2^-8) may pick the
/// right-hand piece: a coarser resolution would exceed the tests' bound there.
fn just_below_cut_offs() -> Vec<f64> {
    [-4.0, -2.0, 2.0, 4.0]
        .into_iter()
        .flat_map(|t| {
            let fine = (1..=16).map(move |j| t - j as f64 / 4096.0);
            let coarse = (1..=8).map(move |j| t - j as f64 / 64.0);
            fine.chain(coarse)
        })
        .collect()
}

fn softmax_ref(row: &[f64], keep: &[bool]) -> Vec<f64> {
    let m = row
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(v, _)| *v)
        .fold(f64::MIN, f64::max);
    let e: Vec<f64> = row
        .iter()
        .zip(keep)
        .map(|(v, &k)| if k { (v - m).exp() } else { 0.0 })
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// [`softmax_ref`] of every row of `width`.
fn softmax_rows(x: &[f64], keep: &[bool], width: usize) -> Vec<f64> {
    x.chunks(width)
        .zip(keep.chunks(width))
        .flat_map(|(row, keep)| softmax_ref(row, keep))
        .collect()
}

/// LayerNorm in f64 over rows of `d`, eps = 1e-5.
fn layernorm_ref(x: &[f64], d: usize, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            row.iter()
                .enumerate()
                .map(move |(i, v)| (v - mean) / (var + 1e-5).sqrt() * gamma[i] + beta[i])
        })
        .collect()
}

/// Rows of `d` around 3 with variances 1e-3 .. 1e6 (past the 1e5 an earlier LayerNorm was limited
/// to) and a constant row (variance 0: eps alone); (values, rows).
fn rows_over_variances(rng: &mut ChaCha12Rng, d: usize) -> (Vec<f64>, usize) {
    let scales = [0.03, 0.3, 1.0, 10.0, 100.0, 1000.0, 0.0];
    let mut x = Vec::new();
    for s in scales {
        x.extend(uniform(rng, d, -1.7, 1.7).iter().map(|v| v * s + 3.0));
    }
    (x, scales.len())
}

/// LayerNorm's normalisation (no gain, no shift) in f64 over rows of `d`, eps = 1e-5.
fn normalised_ref(x: &[f64], d: usize) -> Vec<f64> {
    layernorm_ref(x, d, &vec![1.0; d], &vec![0.0; d])
}

/// Rounds of one call over `rows` rows.
fn rounds_for(rows: usize, which: &'static str) -> u64 {
    let mut rng = ChaCha12Rng::seed_from_u64(13);
    let d = 32;
    let x = uniform(&mut rng, rows * d, -3.0, 3.0);
    let w = uniform(&mut rng, d * d, -0.1, 0.1);
    let ones = vec![1.0; d];
    let inputs = vec![
        encode(fp(), &[rows, d], &x),
        encode(fp(), &[d, d], &w),
        encode(fp(), &[d], &ones),
    ];
    let out = run(&cfg(), inputs, move |p, s| {
        let y = match which {
            "matmul" => protocols::fixed_matmul(p, &s[0], &s[1])?,
            "gelu" => gelu(p, &s[0])?,
            "softmax" => softmax(p, &s[0], None)?,
            "layernorm" => layernorm(p, &s[0], &s[2], &s[2].map(|_| 0), 1e-5)?,
            "layernorm_matmul" => {
                let w = protocols::prepare_weight(p, &s[1])?;
                protocols::layernorm_matmul::layernorm_matmul_at(p, &s[0], 0, &w, 16, 1e-5)?.0
            }
            "max" => max_last(p, &s[0])?.0,
            "matmul_wide" => {
                let w = protocols::prepare_weight_wide(p, &s[1])?;
                protocols::matmul_weight_truncating(p, &s[0], &w)?
            }
            _ => unreachable!(),
        };
        Ok(vec![y])
    });
    out.client.rounds
}

/// Reals encoded at 2f = 32 fractional bits: a product's output before its truncation.
fn at_2f(shape: &[usize], xs: &[f64]) -> RingTensor {
    let data = xs
        .iter()
        .map(|v| (v * 2f64.powi(32)).round() as i64 as u64)
        .collect();
    RingTensor::new(shape, data).unwrap()
}

/// softmax(scores) V against cached value rows, as attention forms it: heads 2, dh 8, 34 cached
/// rows and 6 new ones, causal mask, scores at 2f bits. `fused`: [`softmax_values_at`] (the
/// product in softmax's rounds); otherwise softmax, then the product, then its truncation.
fn attention_values(fused: bool) -> (Outcome, Vec<f64>) {
    let mut rng = ChaCha12Rng::seed_from_u64(12);
    let (heads, dh, past, t) = (2, 8, 34, 6);
    let (width, total) = (heads * dh, past + t);
    let values = uniform(&mut rng, total * width, -4.0, 4.0);
    let scores = uniform(&mut rng, heads * t * total, -30.0, 30.0);
    let mask: Vec<bool> = (0..heads * t)
        .flat_map(|hi| (0..total).map(move |j| j <= past + hi % t))
        .collect();
    let mask_for_run = mask.clone();
    let out = run(
        &cfg(),
        vec![
            at_2f(&[heads, t, total], &scores),
            encode(fp(), &[total, width], &values),
        ],
        move |p, s| {
            let mut rows = PreparedRows::new(p, width, heads)?;
            rows.append(p, &s[1].narrow_rows(0, past)?)?;
            let new = s[1].narrow_rows(past, t)?;
            let mask = Some(mask_for_run.as_slice());
            let out = if fused {
                softmax_values_at(p, &s[0], 16, mask, &mut rows, &new)?
            } else {
                let probs = protocols::softmax::softmax_at(p, &s[0], 16, mask)?;
                let o = protocols::append_and_multiply(p, &mut rows, &new, &probs, false)?;
                protocols::truncate(p, &o, 16)?
            };
            Ok(vec![out])
        },
    );
    let probs = softmax_rows(&scores, &mask, total);
    let v = encoded(&values);
    let mut want = Vec::with_capacity(heads * t * dh);
    for h in 0..heads {
        for i in 0..t {
            let row = &probs[(h * t + i) * total..(h * t + i + 1) * total];
            for c in 0..dh {
                want.push((0..total).map(|j| row[j] * v[j * width + h * dh + c]).sum());
            }
        }
    }
    (out, want)
}

#[test]
fn rounds_do_not_depend_on_the_number_of_rows() {
    for which in [
        "matmul",
        "gelu",
        "softmax",
        "layernorm",
        "layernorm_matmul",
        "max",
        "matmul_wide",
    ] {
        let one = rounds_for(1, which);
        let sixteen = rounds_for(16, which);
        println!("{which}: {one} rounds");
        assert_eq!(
            one, sixteen,
            "{which}: 1 row {one} rounds, 16 rows {sixteen}"
        );
    }
}
