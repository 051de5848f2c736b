//! Engine micro-benchmarks: the Z_2^64 matmul against candle's f32 and f64 matmuls of the same
//! shapes, and rounds, bytes and time of each protocol on one GPT-2-small-sized call under a link.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::Serialize;

use crate::mpc::matmul::{matmul_u64_with, Kernel};
use crate::mpc::protocols::{
    self,
    exp::exp,
    gelu::gelu,
    layernorm::layernorm,
    max::max_value_last,
    reciprocal::{reciprocal, rsqrt},
    softmax::softmax,
    Operand, Round,
};
use crate::mpc::{run_two_party, EngineConfig, FixedPoint, LinkModel, Party, RingTensor};

#[derive(Debug, Clone, Serialize)]
pub struct MatmulRow {
    pub shape: String,
    pub u64_gops: f64,
    pub f64_gflops: f64,
    pub f32_gflops: f64,
    /// u64 throughput over candle f64 throughput.
    pub u64_over_f64: f64,
    pub kernel: String,
    /// Whether `matmul_u64` picks this kernel for the shape.
    pub dispatched: bool,
}

fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Multiply-adds per second (in G) of the matmuls on (m, k, n), best of `repeats`: one row per
/// u64 kernel this CPU runs, beside candle's f64 and f32.
pub fn matmul_throughput(m: usize, k: usize, n: usize, repeats: usize) -> Result<Vec<MatmulRow>> {
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let a: Vec<u64> = (0..m * k).map(|_| rng.next_u64()).collect();
    let b: Vec<u64> = (0..k * n).map(|_| rng.next_u64()).collect();
    let ops = (m * k * n) as f64 / 1e9;
    let candle = |dtype: DType| -> Result<f64> {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?.to_dtype(dtype)?;
        let y = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?.to_dtype(dtype)?;
        let mut result = Ok(());
        let t = best_of(repeats, || {
            if let Err(e) = x.matmul(&y) {
                result = Err(e);
            }
        });
        result?;
        Ok(t)
    };
    let (t_f64, t_f32) = (candle(DType::F64)?, candle(DType::F32)?);
    Ok(Kernel::available()
        .iter()
        .map(|&kernel| {
            let t_u64 = best_of(repeats, || {
                std::hint::black_box(matmul_u64_with(kernel, &a, &b, m, k, n));
            });
            MatmulRow {
                shape: format!("{m}x{k}x{n}"),
                u64_gops: ops / t_u64,
                f64_gflops: ops / t_f64,
                f32_gflops: ops / t_f32,
                u64_over_f64: t_f64 / t_u64,
                kernel: kernel.name().to_string(),
                dispatched: kernel == Kernel::for_rows(m),
            }
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct ProtocolRow {
    pub protocol: String,
    pub shape: String,
    pub link: String,
    pub rounds: u64,
    /// Bytes the client sent plus bytes the server sent.
    pub online_bytes: u64,
    /// Bytes of dealer corrections (offline).
    pub dealer_bytes: u64,
    /// Virtual end-to-end seconds on the link (the later of the two parties' clocks).
    pub sim_seconds: f64,
    /// Measured local compute seconds (the larger of the two parties).
    pub compute_seconds: f64,
}

/// One GPT-2-small-sized call of each protocol, run under `link`.
pub fn protocol_costs(link_name: &str, link: LinkModel) -> Result<Vec<ProtocolRow>> {
    type Setup = (
        &'static str,
        &'static str,
        Vec<usize>,
        fn(&mut Party, &RingTensor) -> crate::mpc::party::Result<RingTensor>,
    );
    let calls: Vec<Setup> = vec![
        (
            "fixed mul (incl. truncation)",
            "8x3072",
            vec![8, 3072],
            |p, x| protocols::fixed_mul(p, x, x),
        ),
        (
            "fixed mul in a chain (inputs awaiting truncation)",
            "8x3072",
            vec![8, 3072],
            |p, x| {
                // Inputs at 2f bits, as a previous product leaves them; the output stays at 2f.
                let f = p.fp.frac_bits;
                let wide = x.scale(1 << f);
                let mut round = Round::new();
                let z = round.mul(
                    p,
                    Operand::truncated(&wide, f),
                    Operand::truncated(&wide, f),
                )?;
                Ok(round.run(p)?.take(z))
            },
        ),
        ("ltz", "8x3072", vec![8, 3072], |p, x| protocols::ltz(p, x)),
        ("max", "12x8x1024", vec![12 * 8, 1024], |p, x| {
            max_value_last(p, x)
        }),
        ("exp", "12x8x1024", vec![12 * 8, 1024], |p, x| {
            // Softmax's inputs: at most 0.
            exp(p, &p.add_constant(x, p.fp.constant(-4.0)))
        }),
        (
            "reciprocal",
            "96 (softmax sums, [1/2, 1025])",
            vec![96],
            |p, x| {
                let s = p.add_constant(x, p.fp.constant(5.0));
                Ok(reciprocal(p, &s, p.fp.frac_bits, 0.5, 1025.0)?.value)
            },
        ),
        ("rsqrt", "8 ([1e-3, 1e5])", vec![8], |p, x| {
            let s = p.add_constant(x, p.fp.constant(5.0));
            Ok(rsqrt(p, &s, p.fp.frac_bits, 1e-3, 1e5, 1.0)?.value)
        }),
        ("gelu", "8x3072", vec![8, 3072], |p, x| gelu(p, x)),
        ("softmax", "12x8x1024", vec![12 * 8, 1024], |p, x| {
            softmax(p, x, None)
        }),
        ("layernorm", "8x768", vec![8, 768], |p, x| {
            let ones = p.public(&RingTensor::filled(&[768], p.fp.constant(1.0)));
            layernorm(p, x, &ones, &RingTensor::zeros(&[768]), 1e-5)
        }),
        (
            "matmul (shared weight, mask opened each call)",
            "8x768 . 768x3072",
            vec![8, 768],
            |p, x| {
                let w = RingTensor::zeros(&[768, 3072]);
                protocols::fixed_matmul(p, x, &w)
            },
        ),
    ];
    let mut rows = Vec::new();
    for (name, shape, dims, f) in calls {
        rows.push(run_call(name, shape, link_name, link, dims, f)?);
    }
    for m in [8, 1] {
        rows.push(weight_matmul_row(link_name, link, m, false)?);
        rows.push(weight_matmul_row(link_name, link, m, true)?);
    }
    rows.extend(layer_rows(link_name, link)?);
    Ok(rows)
}

/// One GPT-2-small layer as the secure forward runs it (8 new tokens after 120 cached positions,
/// random weights): the `block0` label of a one-layer model's forward, and inside it the MLP's
/// c_proj (a prepared-weight matmul whose truncation the next LayerNorm's first opening does),
/// ln_2 with c_fc (one protocol), and attention's softmax with its product by the cached values.
/// The vocabulary is cut to 1,024, which a layer never sees, to keep the embedding's set-up small.
fn layer_rows(link_name: &str, link: LinkModel) -> Result<Vec<ProtocolRow>> {
    let cfg = crate::model::Config {
        n_layer: 1,
        vocab_size: 1024,
        ..crate::model::Config::gpt2_small()
    };
    let model = crate::model::Gpt2::random(&cfg, 3)?;
    let links = [(link_name.to_string(), link)];
    let (_, labels) =
        crate::bench::secure::forward_costs("gpt2-small", model.into(), &links, 120, &[8])?;
    let labelled = |label: &str, protocol: &str, shape: &str| -> Result<ProtocolRow> {
        let c = labels
            .get(label)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("the forward labelled no {label}"))?;
        Ok(ProtocolRow {
            protocol: protocol.into(),
            shape: shape.into(),
            link: link_name.to_string(),
            rounds: c.rounds,
            online_bytes: c.bytes_sent,
            dealer_bytes: c.dealer_bytes,
            sim_seconds: c.sim_time,
            compute_seconds: c.compute_time,
        })
    };
    Ok(vec![
        labelled(
            "block0/mlp/c_proj",
            "matmul in the secure forward (c_proj; the next LayerNorm's opening truncates it)",
            "8x3072 . 3072x768",
        )?,
        labelled(
            "block0/ln_2+c_fc",
            "LayerNorm and c_fc in the secure forward (the product rides in the norm's rounds)",
            "8x768, 768x3072",
        )?,
        labelled(
            "block0/attn/softmax",
            "softmax and P V in the secure forward (e V opens with the reciprocal)",
            "12x8x128, values 128x768",
        )?,
        labelled(
            "block0",
            "GPT-2-small layer (secure forward)",
            "8 new tokens, context 128",
        )?,
    ])
}

fn run_call(
    name: &str,
    shape: &str,
    link_name: &str,
    link: LinkModel,
    dims: Vec<usize>,
    f: fn(&mut Party, &RingTensor) -> crate::mpc::party::Result<RingTensor>,
) -> Result<ProtocolRow> {
    let cfg = EngineConfig {
        link,
        ..EngineConfig::default()
    };
    let fp = FixedPoint::default();
    let n: usize = dims.iter().product();
    let mut rng = ChaCha12Rng::seed_from_u64(2);
    let values: Vec<u64> = (0..n)
        .map(|_| fp.constant((rng.next_u32() as f64 / u32::MAX as f64) * 8.0 - 4.0))
        .collect();
    let input = std::sync::Arc::new(RingTensor::new(&dims, values)?);
    let ((c0, _), (c1, _)) = run_two_party(&cfg, move |p| {
        // The client holds the input, the server holds zero shares: the protocol cannot tell.
        let x = p.public(&input);
        let before = p.net.total();
        let y = f(p, &x)?;
        let after = p.net.total();
        Ok(((before, after), y.len()))
    })?;
    Ok(row(name, shape, link_name, c0, c1))
}

type Span = (crate::mpc::Counters, crate::mpc::Counters);

fn row(name: &str, shape: &str, link_name: &str, c0: Span, c1: Span) -> ProtocolRow {
    let d = |s: &Span| {
        (
            s.1.rounds - s.0.rounds,
            s.1.bytes_sent - s.0.bytes_sent,
            s.1.dealer_bytes - s.0.dealer_bytes,
            s.1.sim_time - s.0.sim_time,
            s.1.compute_time - s.0.compute_time,
        )
    };
    let (a, b) = (d(&c0), d(&c1));
    ProtocolRow {
        protocol: name.to_string(),
        shape: shape.to_string(),
        link: link_name.to_string(),
        rounds: a.0.max(b.0),
        online_bytes: a.1 + b.1,
        dealer_bytes: a.2 + b.2,
        sim_seconds: a.3.max(b.3),
        compute_seconds: a.4.max(b.4),
    }
}

/// A product by a prepared weight as the secure forward could run it: the weight's mask opened
/// once beforehand (reported apart), then only the activations travel. `one_round`: the weight
/// lifted to the integers, so that each call truncates in its own round
/// ([`protocols::lifted_matmul`]); otherwise a Beaver product and its truncation.
fn weight_matmul_row(
    link_name: &str,
    link: LinkModel,
    rows: usize,
    one_round: bool,
) -> Result<ProtocolRow> {
    let cfg = EngineConfig {
        link,
        ..EngineConfig::default()
    };
    let ((mut c0, _), (mut c1, _)) = run_two_party(&cfg, move |p| {
        let w = p.public(&RingTensor::zeros(&[768, 3072]));
        let x = p.public(&RingTensor::zeros(&[rows, 768]));
        let (before, after) = if one_round {
            let lifted = protocols::prepare_weight_wide(p, &w)?;
            let before = p.net.total();
            protocols::matmul_weight_truncating(p, &x, &lifted)?;
            (before, p.net.total())
        } else {
            let prepared = protocols::prepare_weight(p, &w)?;
            let before = p.net.total();
            protocols::fixed_matmul_weight(p, &x, &prepared)?;
            (before, p.net.total())
        };
        Ok(((before, after), ()))
    })?;
    // The call starts when the later party is done with the set-up (the earlier one waits for
    // its peer's first message), and ends when the later party is done.
    let start = c0.0.sim_time.max(c1.0.sim_time);
    c0.0.sim_time = start;
    c1.0.sim_time = start;
    let name = if one_round {
        "matmul incl. truncation in one round (weight lifted to the integers, per call)"
    } else {
        "matmul (prepared weight, per call)"
    };
    let shape = format!("{rows}x768 . 768x3072");
    Ok(row(name, &shape, link_name, c0, c1))
}
