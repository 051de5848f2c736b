//! A LLaMA-style decoder on secret shares, block for block beside the candle model in
//! `model/llama.rs`, built from the loaded [`Llama`]'s weights as [`super::gpt2`] is from GPT-2's.
//!
//! As for GPT-2, the server's weights are its private input and every matrix is prepared once; the
//! client's tokens enter as one-hot rows times the prepared token table. What differs:
//! - **RMSNorm** runs with the product after it as one protocol in 5 rounds
//!   ([`norm_matmul_at`] with [`NormKind::Rms`]), its gain folded into the weight by the server:
//!   input_layernorm with q, k and v (one weight [d, (heads + 2 kv_heads) head_dim]),
//!   post_attention_layernorm with gate and up (one weight [d, 2 intermediate]), the final norm
//!   with the LM head (tied or untied).
//! - **Rotary embeddings**: positions are public, so the rotation of q and k is a public linear
//!   map ([`Rotary`]); it acts on the exact products of the norm's last round, whose truncation
//!   also drops cos and sin's fractional bits: the keys and queries come out rotated, at f bits,
//!   in no round of their own. Attention's 1/sqrt(head_dim) is folded into q's columns.
//! - **Grouped-query attention**: kv_heads heads of keys and values, each serving heads / kv_heads
//!   query heads; the queries of one group are stacked as rows of their key-value head, so the
//!   cached rows are multiplied once per group.
//! - **The gated MLP**: SiLU(gate) * up in SiLU's 4 rounds ([`silu_mul_at`], gate and up at 2f
//!   bits from the norm's product, truncated in its openings), then down_proj.
//!
//! Rounds of one forward, whatever the number of new tokens (one layer, context 65-128):
//!   norm + qkv 5 | scores 1 | softmax with the values 20 | o_proj 1 | norm + gate/up 5 |
//!   SiLU(gate) up 4 | down_proj 1 = 37 per layer, plus 1 (embedding) and 5 (norm with the head).

use anyhow::bail;

use crate::model::llama::{Linear, RmsNorm};
use crate::model::{Llama, LlamaConfig};
use crate::mpc::error::MpcError;
use crate::mpc::party::Result;
use crate::mpc::protocols::{
    append_and_multiply,
    layernorm_matmul::{check_layernorm_matmul, norm_matmul_at, NormKind},
    matmul_weight_client_input, prepare_weight,
    rotary::{Rotary, ROTARY_BITS},
    silu::silu_mul_at,
    softmax::softmax_values_at,
    PreparedWeight,
};
use crate::mpc::{Party, RingTensor};

use super::cache::{LayerCache, SecureKvCache};
use super::gpt2::SecureConv1D as SecureLinear;
use super::layers::{merge_heads, one_hot, server_share, split_heads, values};

/// Linear layers side by side as one [d_in, sum d_out] weight and bias (HF stores [d_out, d_in]),
/// each output column times its layer's factor.
fn stacked(layers: &[(&Linear, f64)]) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut cols: Vec<(Vec<f64>, usize, f64)> = Vec::new();
    let mut bias = Vec::new();
    for (lin, c) in layers {
        let (d_out, d_in) = lin.weight.dims2()?;
        cols.push((values(&lin.weight)?, d_in, *c));
        match &lin.bias {
            Some(b) => bias.extend(values(b)?.into_iter().map(|v| v * c)),
            None => bias.extend(std::iter::repeat_n(0.0, d_out)),
        }
    }
    let d_in = cols.first().map_or(0, |c| c.1);
    if cols.iter().any(|c| c.1 != d_in) {
        bail!("stacked projections must share their input width");
    }
    let width = bias.len();
    let mut w = vec![0.0; d_in * width];
    let mut start = 0;
    for (weight, _, c) in &cols {
        let d_out = weight.len() / d_in.max(1);
        for o in 0..d_out {
            for i in 0..d_in {
                w[i * width + start + o] = weight[o * d_in + i] * c;
            }
        }
        start += d_out;
    }
    Ok((w, bias))
}

/// The eps the fused norm can encode at width `d`: narrow rows cannot span Q's range down to a
/// tiny eps (d = 32 at 1e-6), so eps rises to the smallest power-of-two multiple that fits, at most
/// 1e-4; that changes only rows whose mean square is below it (none in a real model's residual
/// stream). Wide models (LLaMA-68M's d = 768 at 1e-6) keep their own.
fn usable_eps(d: usize, frac_bits: u32, eps: f64) -> Result<f64> {
    let mut e = eps;
    while e <= 1e-4 {
        if check_layernorm_matmul(d, frac_bits, e).is_ok() {
            return Ok(e);
        }
        e *= 2.0;
    }
    check_layernorm_matmul(d, frac_bits, eps).map(|_| eps)
}

/// An RMSNorm and the linear layer after it as one protocol, the norm's gain folded into the
/// weight's rows by the server.
struct SecureRmsLinear {
    linear: SecureLinear,
    eps: f64,
}

impl SecureRmsLinear {
    fn setup(
        p: &mut Party,
        norm: Option<&RmsNorm>,
        linear: Option<(Vec<f64>, Vec<f64>)>,
        (d_in, d_out): (usize, usize),
        eps: f64,
    ) -> anyhow::Result<Self> {
        let eps = usable_eps(d_in, p.fp.frac_bits, eps)?;
        let (w, b) = match (norm, linear) {
            (Some(norm), Some((mut w, b))) => {
                let gamma = values(&norm.weight)?;
                for (row, g) in w.chunks_mut(d_out).zip(&gamma) {
                    row.iter_mut().for_each(|v| *v *= g);
                }
                (Some(w), Some(b))
            }
            _ => (None, None),
        };
        Ok(Self {
            linear: SecureLinear::from_values(p, w, b, d_in, d_out)?,
            eps,
        })
    }

    /// RMSNorm(xs) W + b at `out_bits` for `xs` at f + `extra` bits, and `xs` at f bits; `mix`
    /// as [`norm_matmul_at`]'s (the bias is added after it, unmixed).
    fn forward(
        &self,
        p: &mut Party,
        xs: &RingTensor,
        extra: u32,
        out_bits: u32,
        mix: Option<(crate::mpc::protocols::truncating_product::WideMix, u32)>,
    ) -> Result<(RingTensor, RingTensor)> {
        let w = &self.linear.weight;
        let (y, xs) = norm_matmul_at(p, xs, extra, w, out_bits, self.eps, NormKind::Rms, mix)?;
        let bias = self.linear.bias.scale(1 << (out_bits - p.fp.frac_bits));
        Ok((y.add_row(&bias)?, xs))
    }
}

struct SecureAttention {
    o_proj: SecureLinear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl SecureAttention {
    /// `qkv`: the rotated queries and keys and the values [t, (heads + 2 kv_heads) head_dim] for
    /// positions past..past+t; the cache holds the `past` earlier positions.
    fn forward(
        &self,
        p: &mut Party,
        qkv: &RingTensor,
        cache: &mut LayerCache,
    ) -> Result<RingTensor> {
        let (dh, kv) = (self.head_dim, self.kv_heads);
        let (q_width, kv_width) = (self.heads * dh, kv * dh);
        let t = qkv.len() / qkv.last_dim().max(1);
        let past = cache.keys.rows();
        let f = p.fp.frac_bits;
        // [heads, t, dh] is [kv_heads, group t, dh]: the query heads of one group are consecutive.
        let q = split_heads(&qkv.narrow_last(0, q_width)?, self.heads)?;
        let (k, v) = (
            qkv.narrow_last(q_width, kv_width)?,
            qkv.narrow_last(q_width + kv_width, kv_width)?,
        );
        let scores = p.labelled("scores", |p| {
            append_and_multiply(p, &mut cache.keys, &k, &q, true)
        })?;
        let total = past + t;
        let mask: Vec<bool> = (0..self.heads * t)
            .flat_map(|hi| (0..total).map(move |j| j <= past + hi % t))
            .collect();
        let out = softmax_values_at(p, &scores, f, Some(&mask), &mut cache.values, &v)?;
        // [kv_heads, group t, dh] back to [heads, t, dh], then [t, heads dh].
        let out = out.reshape(&[self.heads, t, dh])?;
        p.labelled("o_proj", |p| {
            self.o_proj.forward_untruncated(p, &merge_heads(&out)?)
        })
    }
}

struct SecureBlock {
    /// input_layernorm with q, k and v.
    norm_qkv: SecureRmsLinear,
    attn: SecureAttention,
    /// post_attention_layernorm with gate and up.
    norm_gate_up: SecureRmsLinear,
    down_proj: SecureLinear,
}

impl SecureBlock {
    /// The residual stream in at f + `extra` bits, out at 2f bits (its last term untruncated).
    fn forward(
        &self,
        p: &mut Party,
        xs: &RingTensor,
        extra: u32,
        rotary: &Rotary,
        cache: &mut LayerCache,
    ) -> Result<RingTensor> {
        let f = p.fp.frac_bits;
        let t = xs.len() / xs.last_dim().max(1);
        let width = self.norm_qkv.linear.bias.len();
        let rotated = self.attn.heads + self.attn.kv_heads;
        let mix = rotary.mix(cache.keys.rows(), t, width, rotated)?;
        let (qkv, xs) = p.labelled("norm+qkv", |p| {
            self.norm_qkv
                .forward(p, xs, extra, f, Some((mix, ROTARY_BITS)))
        })?;
        let attn = p.labelled("attn", |p| self.attn.forward(p, &qkv, cache))?;
        let xs = xs.scale(1 << f).add(&attn)?;
        // gate and up at 2f go to the gated SiLU, which truncates them in its openings.
        let (gate_up, xs) = p.labelled("norm+gate_up", |p| {
            self.norm_gate_up.forward(p, &xs, f, 2 * f, None)
        })?;
        let mlp = p.labelled("mlp", |p| {
            let m = gate_up.last_dim() / 2;
            let (gate, up) = (gate_up.narrow_last(0, m)?, gate_up.narrow_last(m, m)?);
            let h = silu_mul_at(p, &gate, &up, f)?;
            p.labelled("down_proj", |p| self.down_proj.forward_untruncated(p, &h))
        })?;
        xs.scale(1 << f).add(&mlp)
    }
}

/// A LLaMA-style model whose weights are shared between the two parties; each party holds one.
pub struct SecureLlama {
    /// The token table [vocab, d], prepared: one-hot inputs times it.
    embed: PreparedWeight,
    /// The final norm and the LM head [d, vocab] (the norm's gain folded in), prepared.
    norm_head: SecureRmsLinear,
    blocks: Vec<SecureBlock>,
    rotary: Rotary,
    cfg: LlamaConfig,
}

impl SecureLlama {
    /// Shares and prepares the server's model: the server passes `Some(model)`, the client `None`
    /// (it knows only the config, which is public). Both parties call this at the same point.
    pub fn setup(p: &mut Party, cfg: &LlamaConfig, model: Option<&Llama>) -> anyhow::Result<Self> {
        cfg.validate()?;
        if let Some(m) = model {
            if m.config() != cfg {
                bail!("the server's model does not match the announced config");
            }
        }
        if cfg.qkv_bias() || cfg.mlp_bias {
            bail!(
                "the secure LLaMA takes no q/k/v or MLP biases ({} has them): the rotation of a \
                 shared bias is not implemented",
                cfg.model_type
            );
        }
        let (d, v, m) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size);
        let (heads, kv, dh) = (cfg.num_attention_heads, cfg.num_kv_heads(), cfg.head_dim());
        if kv == 0 || !heads.is_multiple_of(kv) {
            bail!("{heads} query heads cannot share {kv} key-value heads evenly");
        }
        let eps = cfg.rms_norm_eps;
        let rotary = Rotary::new(dh, cfg.rope_theta)?;
        let embed_values = model.map(|m| values(&m.embed_tokens)).transpose()?;
        let head = model
            .map(|m| {
                let w = values(&m.lm_head)?;
                let transposed = (0..d * v).map(|i| w[(i % v) * d + i / v]).collect();
                anyhow::Ok((transposed, vec![0.0; v]))
            })
            .transpose()?;
        let norm_head = SecureRmsLinear::setup(p, model.map(|m| &m.norm), head, (d, v), eps)?;
        let embed = prepare_weight(p, &server_share(p, embed_values, &[v, d])?)?;
        let scale = 1.0 / (dh as f64).sqrt();
        let qkv_width = (heads + 2 * kv) * dh;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let b = model.map(|m| &m.layers[i]);
            let qkv = b
                .map(|b| {
                    let a = &b.self_attn;
                    stacked(&[(&a.q_proj, scale), (&a.k_proj, 1.0), (&a.v_proj, 1.0)])
                })
                .transpose()?;
            let gate_up = b
                .map(|b| stacked(&[(&b.mlp.gate_proj, 1.0), (&b.mlp.up_proj, 1.0)]))
                .transpose()?;
            let o = b
                .map(|b| stacked(&[(&b.self_attn.o_proj, 1.0)]))
                .transpose()?;
            let down = b.map(|b| stacked(&[(&b.mlp.down_proj, 1.0)])).transpose()?;
            let (o_w, o_b) = o.unzip();
            let (down_w, down_b) = down.unzip();
            blocks.push(SecureBlock {
                norm_qkv: SecureRmsLinear::setup(
                    p,
                    b.map(|b| &b.input_layernorm),
                    qkv,
                    (d, qkv_width),
                    eps,
                )?,
                attn: SecureAttention {
                    o_proj: SecureLinear::from_values(p, o_w, o_b, heads * dh, d)?,
                    heads,
                    kv_heads: kv,
                    head_dim: dh,
                },
                norm_gate_up: SecureRmsLinear::setup(
                    p,
                    b.map(|b| &b.post_attention_layernorm),
                    gate_up,
                    (d, 2 * m),
                    eps,
                )?,
                down_proj: SecureLinear::from_values(p, down_w, down_b, m, d)?,
            });
        }
        Ok(Self {
            embed,
            norm_head,
            blocks,
            rotary,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn new_cache(&self, p: &mut Party) -> Result<SecureKvCache> {
        let kv = self.cfg.num_kv_heads();
        let width = kv * self.cfg.head_dim();
        SecureKvCache::new(p, self.cfg.num_hidden_layers, width, kv)
    }

    /// Shared logits [t, vocab] (f fractional bits) for `t` new tokens after the cached positions.
    /// The client passes its token ids; the server passes `None` and learns only `t`.
    pub fn forward(
        &self,
        p: &mut Party,
        ids: Option<&[u32]>,
        t: usize,
        cache: &mut SecureKvCache,
    ) -> Result<RingTensor> {
        let f = p.fp.frac_bits;
        self.logits_at(p, ids, t, cache, f)
    }

    /// The logits at 2f fractional bits, for private sampling (as [`super::SecureGpt2`]'s).
    pub fn forward_untruncated(
        &self,
        p: &mut Party,
        ids: Option<&[u32]>,
        t: usize,
        cache: &mut SecureKvCache,
    ) -> Result<RingTensor> {
        let f = p.fp.frac_bits;
        self.logits_at(p, ids, t, cache, 2 * f)
    }

    fn logits_at(
        &self,
        p: &mut Party,
        ids: Option<&[u32]>,
        t: usize,
        cache: &mut SecureKvCache,
        out_bits: u32,
    ) -> Result<RingTensor> {
        let v = self.cfg.vocab_size;
        let (past, window) = (cache.len(), self.cfg.max_position_embeddings);
        if t == 0 || past + t > window {
            return Err(MpcError::BadConfig(format!(
                "{} positions ({past} cached + {t} new) do not fit the context window of {window}",
                past + t
            )));
        }
        let one_hot = one_hot(p, ids, t, v)?;
        let mut xs = p.labelled("embed", |p| {
            matmul_weight_client_input(p, &one_hot, &self.embed)
        })?;
        let mut extra = 0;
        for (i, (block, layer)) in self.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            xs = p.labelled(&format!("block{i}"), |p| {
                block.forward(p, &xs, extra, &self.rotary, layer)
            })?;
            extra = p.fp.frac_bits;
        }
        let (logits, _) = p.labelled("norm+lm_head", |p| {
            self.norm_head.forward(p, &xs, extra, out_bits, None)
        })?;
        Ok(logits)
    }
}
