//! GPT-2 on secret shares, block for block beside the candle model in `model/gpt2.rs` (as candle
//! keeps `quantized_llama.rs` beside `llama.rs`). Built from the loaded [`Gpt2`]'s weights: no second
//! copy of config parsing or weight names.
//!
//! The server's weights are its private input: its share is the weight itself, the client's is zero,
//! and every matrix is prepared once (its dealer mask opened as W - B, uniform to the client), so a
//! product sends only the activations. The client's tokens enter as a one-hot [t, vocab] times the
//! prepared token table: the server sees only the masked one-hot, and the client, who holds the
//! one-hot in the clear, gathers its rows of the public W - B itself
//! ([`matmul_weight_client_input`]: one product per party). Positions are public, so each party
//! adds its share of the position rows locally. Attention's 1/sqrt(head_dim) is folded into the
//! query columns of `c_attn` by the server before sharing.
//!
//! Every LayerNorm runs with the product after it as one protocol ([`layernorm_matmul_at`]):
//! ln_1 with c_attn, ln_2 with c_fc, ln_f with the LM head. The server folds the norm's gain into
//! the weight and its shift into the bias, the product's opening rides in the norm's fourth round
//! and its truncation in the fifth, so the three pairs take the norm's 5 rounds (they took 7, 6
//! and 7). c_attn's output comes back at f bits (the keys and values are cached at f bits), c_fc's
//! at 2f for GeLU, the logits at f or, for private sampling, at 2f.
//!
//! Fused truncations: a product whose next step opens its input anyway leaves its result at 2f
//! bits, and that step truncates it in its own first opening. The scores go to softmax, and both
//! c_proj outputs (plus the residual stream shifted to 2f) to the next LayerNorm, which also hands
//! back the residual stream truncated to f in that round. The product by the values runs inside
//! softmax ([`softmax_values_at`]): e V shares the reciprocal's first opening, and its last round
//! multiplies e V by 1/S.
//!
//! Rounds of one forward, whatever the number of new tokens (one layer, context 65-128):
//!   ln_1 + c_attn 5 | scores 1 | softmax with the values 20 | c_proj 1 | ln_2 + c_fc 5 | GeLU 4 | c_proj 1
//! = 37 per layer, plus 1 (embedding) and 5 (ln_f with the LM head). The softmax's max tournament
//! gains a level (1 round) each time the context passes a power of 2.

use anyhow::bail;

use crate::model::gpt2::{Conv1D, LayerNorm};
use crate::model::{Config, Gpt2};
use crate::mpc::error::MpcError;
use crate::mpc::party::Result;
use crate::mpc::protocols::{
    append_and_multiply,
    gelu::gelu_at,
    layernorm_matmul::{check_layernorm_matmul, layernorm_matmul_at},
    matmul_weight, matmul_weight_client_input, prepare_client_input_weight, prepare_weight_owned,
    softmax::softmax_values_at,
    PreparedWeight,
};
use crate::mpc::{Party, RingTensor};

use super::cache::SecureKvCache;
use super::layers::{merge_heads, one_hot, server_share, split_heads, values};

/// A linear layer with a prepared weight [d_in, d_out] and a shared bias.
pub(crate) struct SecureConv1D {
    pub(crate) weight: PreparedWeight,
    pub(crate) bias: RingTensor,
}

/// The server's conv weight [d_in, d_out] and bias as reals, the first `n` output columns
/// multiplied by `c` when `fold` is `Some((n, c))`.
fn conv_values(
    conv: &Conv1D,
    d_out: usize,
    fold: Option<(usize, f64)>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut w, mut b) = (values(&conv.weight)?, values(&conv.bias)?);
    if let Some((n, c)) = fold {
        w.chunks_mut(d_out)
            .for_each(|row| row[..n].iter_mut().for_each(|v| *v *= c));
        b[..n].iter_mut().for_each(|v| *v *= c);
    }
    Ok((w, b))
}

impl SecureConv1D {
    fn setup(
        p: &mut Party,
        conv: Option<&Conv1D>,
        d_in: usize,
        d_out: usize,
    ) -> anyhow::Result<Self> {
        let (w, b) = conv
            .map(|c| conv_values(c, d_out, None))
            .transpose()?
            .unzip();
        Self::from_values(p, w, b, d_in, d_out)
    }

    pub(crate) fn from_values(
        p: &mut Party,
        w: Option<Vec<f64>>,
        b: Option<Vec<f64>>,
        d_in: usize,
        d_out: usize,
    ) -> anyhow::Result<Self> {
        let w = server_share(p, w, &[d_in, d_out])?;
        Ok(Self {
            weight: prepare_weight_owned(p, w)?,
            bias: server_share(p, b, &[d_out])?,
        })
    }

    /// The output at 2f fractional bits, for the next step's opening to truncate (1 round).
    pub(crate) fn forward_untruncated(&self, p: &mut Party, xs: &RingTensor) -> Result<RingTensor> {
        let f = p.fp.frac_bits;
        matmul_weight(p, xs, &self.weight)?.add_row(&self.bias.scale(1 << f))
    }
}

/// A LayerNorm and the linear layer after it, run as one protocol in the norm's 5 rounds
/// ([`layernorm_matmul_at`]): the server folds the norm's gain into the weight, diag(gamma) W,
/// and its shift into the bias, beta W + b.
struct SecureNormLinear {
    linear: SecureConv1D,
    eps: f64,
}

impl SecureNormLinear {
    /// `fold`: as [`conv_values`], applied before the norm's gain and shift are folded in.
    fn setup(
        p: &mut Party,
        ln: Option<&LayerNorm>,
        conv: Option<&Conv1D>,
        dims: (usize, usize),
        eps: f64,
        fold: Option<(usize, f64)>,
    ) -> anyhow::Result<Self> {
        let linear = conv.map(|c| conv_values(c, dims.1, fold)).transpose()?;
        Self::from_values(p, ln, linear, dims, eps)
    }

    /// From the server's weight [d_in, d_out] and bias as reals (`None` on the client).
    fn from_values(
        p: &mut Party,
        ln: Option<&LayerNorm>,
        linear: Option<(Vec<f64>, Vec<f64>)>,
        (d_in, d_out): (usize, usize),
        eps: f64,
    ) -> anyhow::Result<Self> {
        check_layernorm_matmul(d_in, p.fp.frac_bits, eps)?;
        let (w, b) = match (ln, linear) {
            (Some(ln), Some((mut w, mut b))) => {
                let (gamma, beta) = (values(&ln.weight)?, values(&ln.bias)?);
                for (row, (g, s)) in w.chunks_mut(d_out).zip(gamma.iter().zip(&beta)) {
                    for (v, bias) in row.iter_mut().zip(b.iter_mut()) {
                        *bias += s * *v;
                        *v *= g;
                    }
                }
                (Some(w), Some(b))
            }
            _ => (None, None),
        };
        Ok(Self {
            linear: SecureConv1D::from_values(p, w, b, d_in, d_out)?,
            eps,
        })
    }

    /// LayerNorm(xs) W + b at `out_bits` fractional bits for `xs` at f + `extra` bits, and `xs`
    /// at f bits.
    fn forward(
        &self,
        p: &mut Party,
        xs: &RingTensor,
        extra: u32,
        out_bits: u32,
    ) -> Result<(RingTensor, RingTensor)> {
        let (y, xs) = layernorm_matmul_at(p, xs, extra, &self.linear.weight, out_bits, self.eps)?;
        let bias = self.linear.bias.scale(1 << (out_bits - p.fp.frac_bits));
        Ok((y.add_row(&bias)?, xs))
    }
}

struct SecureAttention {
    c_proj: SecureConv1D,
    n_head: usize,
}

impl SecureAttention {
    /// `qkv`: c_attn's output [t, 3 d] for positions past..past+t; the cache holds the `past`
    /// earlier positions.
    fn forward(
        &self,
        p: &mut Party,
        qkv: &RingTensor,
        cache: &mut super::cache::LayerCache,
    ) -> Result<RingTensor> {
        let d = qkv.last_dim() / 3;
        let t = qkv.len() / (3 * d);
        let past = cache.keys.rows();
        let f = p.fp.frac_bits;
        let q = split_heads(&qkv.narrow_last(0, d)?, self.n_head)?;
        let (k, v) = (qkv.narrow_last(d, d)?, qkv.narrow_last(2 * d, d)?);
        // The scores stay at 2f bits: softmax truncates them in its first opening.
        let scores = p.labelled("scores", |p| {
            append_and_multiply(p, &mut cache.keys, &k, &q, true)
        })?;
        let total = past + t;
        let mask: Vec<bool> = (0..self.n_head * t)
            .flat_map(|hi| (0..total).map(move |j| j <= past + hi % t))
            .collect();
        // softmax(scores) V, the new value rows appended within softmax's own rounds.
        let out = softmax_values_at(p, &scores, f, Some(&mask), &mut cache.values, &v)?;
        p.labelled("c_proj", |p| {
            self.c_proj.forward_untruncated(p, &merge_heads(&out)?)
        })
    }
}

struct SecureBlock {
    /// ln_1 and c_attn.
    ln_1_attn: SecureNormLinear,
    attn: SecureAttention,
    /// ln_2 and the MLP's c_fc.
    ln_2_fc: SecureNormLinear,
    mlp_proj: SecureConv1D,
}

impl SecureBlock {
    /// The residual stream in at f + `extra` bits, out at 2f bits (its last term untruncated).
    fn forward(
        &self,
        p: &mut Party,
        xs: &RingTensor,
        extra: u32,
        cache: &mut super::cache::LayerCache,
    ) -> Result<RingTensor> {
        let f = p.fp.frac_bits;
        let (qkv, xs) = p.labelled("ln_1+c_attn", |p| self.ln_1_attn.forward(p, xs, extra, f))?;
        let attn = p.labelled("attn", |p| self.attn.forward(p, &qkv, cache))?;
        let xs = xs.scale(1 << f).add(&attn)?;
        // c_fc's output at 2f goes to GeLU, which truncates it in its first opening.
        let (h, xs) = p.labelled("ln_2+c_fc", |p| self.ln_2_fc.forward(p, &xs, f, 2 * f))?;
        let mlp = p.labelled("mlp", |p| {
            let h = gelu_at(p, &h, f)?;
            p.labelled("c_proj", |p| self.mlp_proj.forward_untruncated(p, &h))
        })?;
        xs.scale(1 << f).add(&mlp)
    }
}

/// GPT-2 whose weights are shared between the two parties; each party holds one.
pub struct SecureGpt2 {
    /// The token table [vocab, d], prepared: one-hot inputs times it.
    wte: PreparedWeight,
    /// ln_f and the tied LM head, wte^T [d, vocab] (ln_f's gain and shift folded in), prepared.
    ln_f_head: SecureNormLinear,
    /// Position table [n_positions, d] shares.
    wpe: RingTensor,
    blocks: Vec<SecureBlock>,
    cfg: Config,
}

impl SecureGpt2 {
    /// Shares and prepares the server's model: the server passes `Some(model)`, the client `None`
    /// (it knows only the config, which is public). Both parties call this at the same point.
    pub fn setup(p: &mut Party, cfg: &Config, model: Option<&Gpt2>) -> anyhow::Result<Self> {
        if let Some(m) = model {
            if m.config() != cfg {
                bail!("the server's model does not match the announced config");
            }
        }
        let (d, v, mlp) = (cfg.n_embd, cfg.vocab_size, cfg.mlp_dim());
        let eps = cfg.layer_norm_epsilon;
        // The token table's values are read twice, so that no two copies of them are held.
        let wte_values = || model.map(|m| values(m.wte())).transpose();
        let head = wte_values()?.map(|w| {
            let transposed = (0..d * v).map(|i| w[(i % v) * d + i / v]).collect();
            (transposed, vec![0.0; v])
        });
        let ln_f_head =
            SecureNormLinear::from_values(p, model.map(|m| m.ln_f()), head, (d, v), eps)?;
        let wte = prepare_client_input_weight(p, server_share(p, wte_values()?, &[v, d])?)?;
        let wpe = server_share(
            p,
            model.map(|m| values(m.wpe())).transpose()?,
            &[cfg.n_positions, d],
        )?;
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let b = model.map(|m| &m.blocks()[i]);
            blocks.push(SecureBlock {
                ln_1_attn: SecureNormLinear::setup(
                    p,
                    b.map(|b| &b.ln_1),
                    b.map(|b| &b.attn.c_attn),
                    (d, 3 * d),
                    eps,
                    Some((d, scale)),
                )?,
                attn: SecureAttention {
                    c_proj: SecureConv1D::setup(p, b.map(|b| &b.attn.c_proj), d, d)?,
                    n_head: cfg.n_head,
                },
                ln_2_fc: SecureNormLinear::setup(
                    p,
                    b.map(|b| &b.ln_2),
                    b.map(|b| &b.mlp.c_fc),
                    (d, mlp),
                    eps,
                    None,
                )?,
                mlp_proj: SecureConv1D::setup(p, b.map(|b| &b.mlp.c_proj), mlp, d)?,
            });
        }
        Ok(Self {
            wte,
            ln_f_head,
            wpe,
            blocks,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn new_cache(&self, p: &mut Party) -> Result<SecureKvCache> {
        SecureKvCache::new(p, self.cfg.n_layer, self.cfg.n_embd, self.cfg.n_head)
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

    /// The logits at 2f fractional bits, for a consumer whose first opening truncates them
    /// (private sampling), which compares them as they are or truncates them in its own rounds.
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

    /// The logits at `out_bits` fractional bits (ln_f and the LM head as one protocol).
    fn logits_at(
        &self,
        p: &mut Party,
        ids: Option<&[u32]>,
        t: usize,
        cache: &mut SecureKvCache,
        out_bits: u32,
    ) -> Result<RingTensor> {
        let (v, d) = (self.cfg.vocab_size, self.cfg.n_embd);
        let past = cache.len();
        if t == 0 || past + t > self.cfg.n_positions {
            return Err(MpcError::BadConfig(format!(
                "{} positions ({past} cached + {t} new) do not fit the context window of {}",
                past + t,
                self.cfg.n_positions
            )));
        }
        let one_hot = one_hot(p, ids, t, v)?;
        let tokens = p.labelled("embed", |p| {
            matmul_weight_client_input(p, &one_hot, &self.wte)
        })?;
        let positions =
            RingTensor::new(&[t, d], self.wpe.data()[past * d..(past + t) * d].to_vec())?;
        let mut xs = tokens.add(&positions)?;
        // Fractional bits of the residual stream beyond f: each block hands it on at 2f.
        let mut extra = 0;
        for (i, (block, layer)) in self.blocks.iter().zip(cache.layers.iter_mut()).enumerate() {
            xs = p.labelled(&format!("block{i}"), |p| {
                block.forward(p, &xs, extra, layer)
            })?;
            extra = p.fp.frac_bits;
        }
        let (logits, _) = p.labelled("ln_f+lm_head", |p| {
            self.ln_f_head.forward(p, &xs, extra, out_bits)
        })?;
        Ok(logits)
    }
}
