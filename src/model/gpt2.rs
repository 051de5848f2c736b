//! GPT-2 in candle, loading the Hugging Face `gpt2` safetensors layout unchanged.
//!
//! Pre-LayerNorm blocks, learned positions, fused `c_attn`, tanh GeLU (`gelu_new`) and an LM head
//! tied to `wte`. The KV cache lives outside the model ([`KvCache`]) so that speculative decoding can
//! roll rejected drafts back with [`KvCache::truncate`]. A forward takes any number of new tokens at
//! once: K drafts are scored in one call.
//!
//! Every op used here has a gradient, so the trainer reuses this forward unchanged.

use candle_core::{bail, DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

pub use super::cache::KvCache;

/// The fields of a Hugging Face GPT-2 `config.json` that the forward needs.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Config {
    pub vocab_size: usize,
    /// Context window (older configs also carry `n_ctx` with the same value).
    pub n_positions: usize,
    /// Hidden size, aka `hidden_size`.
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `null` or absent means 4 * n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// End-of-text token; checkpoints with a small vocabulary may name one outside it (then unused).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".to_string()
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The end-of-text token, when it lies inside the vocabulary.
    pub fn end_of_text(&self) -> Option<u32> {
        self.eos_token_id
            .filter(|&id| (id as usize) < self.vocab_size)
    }

    pub fn mlp_dim(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// Rejects configs this forward cannot run, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size == 0 || self.n_positions == 0 || self.n_layer == 0 {
            bail!("config: vocab_size, n_positions and n_layer must all be positive")
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            bail!(
                "config: n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd,
                self.n_head
            )
        }
        // gelu_new, gelu_pytorch_tanh and gelu_fast are the same tanh approximation up to rounding.
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
        ) {
            bail!(
                "config: activation_function {:?} is not supported (gelu_new only)",
                self.activation_function
            )
        }
        Ok(())
    }

    /// [`Self::validate`], and bounds for a shape announced by a peer (a server's hello, the
    /// shape a server names to the dealer): every size within what the engine's fixed-point
    /// sampling and a machine's memory can hold, so that no product of them overflows.
    pub fn validate_public(&self) -> Result<()> {
        self.validate()?;
        let bounds = [
            ("vocab_size", self.vocab_size, 1 << 17),
            ("n_positions", self.n_positions, 1 << 16),
            ("n_embd", self.n_embd, 1 << 16),
            ("n_layer", self.n_layer, 1024),
            ("n_head", self.n_head, 1024),
            ("n_inner", self.mlp_dim(), 1 << 18),
        ];
        for (field, value, max) in bounds {
            if value > max {
                bail!("config: {field} = {value} is above {max}")
            }
        }
        if self.mlp_dim() == 0 {
            bail!("config: n_inner must be positive")
        }
        if self.n_embd == 0 {
            bail!("config: n_embd must be positive")
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            bail!("config: layer_norm_epsilon must be a positive number")
        }
        Ok(())
    }

    /// GPT-2 small (124M), the `gpt2` checkpoint.
    pub fn gpt2_small() -> Self {
        Self::sized(768, 12, 12)
    }

    /// GPT-2 medium (355M), the `gpt2-medium` checkpoint.
    pub fn gpt2_medium() -> Self {
        Self::sized(1024, 24, 16)
    }

    fn sized(n_embd: usize, n_layer: usize, n_head: usize) -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: default_activation(),
            eos_token_id: Some(50256),
        }
    }
}

/// A GPT-2 `Conv1D`: a linear layer whose weight is stored as [in, out].
#[derive(Debug, Clone)]
pub struct Conv1D {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Conv1D {
    fn load(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((d_in, d_out), "weight")?;
        let bias = vb.get(d_out, "bias")?;
        Ok(Self { weight, bias })
    }
}

impl Module for Conv1D {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.broadcast_matmul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// LayerNorm written with plain ops (mean, variance) so that it has a gradient.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub c_attn: Conv1D,
    pub c_proj: Conv1D,
    n_head: usize,
    head_dim: usize,
}

impl Attention {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.n_embd;
        Ok(Self {
            c_attn: Conv1D::load(d, 3 * d, vb.pp("c_attn"))?,
            c_proj: Conv1D::load(d, d, vb.pp("c_proj"))?,
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
        })
    }

    /// `xs`: [b, t, d]; `cache`: this layer's keys and values of earlier positions.
    fn forward(&self, xs: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let (b_sz, seq_len, d) = xs.dims3()?;
        let qkv = self.c_attn.forward(xs)?;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * d, d)?
                .reshape((b_sz, seq_len, self.n_head, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = match cache.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total_len = k.dim(2)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let mask = causal_mask(seq_len, total_len - seq_len, xs.device())?;
        let scores = scores.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ys = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b_sz, seq_len, d))?;
        self.c_proj.forward(&ys)
    }
}

/// Additive mask [t, past + t]: query i (at absolute position past + i) sees keys 0..=past + i.
pub(crate) fn causal_mask(seq_len: usize, past: usize, device: &Device) -> Result<Tensor> {
    let total = past + seq_len;
    let mask: Vec<f32> = (0..seq_len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (seq_len, total), device)
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub c_fc: Conv1D,
    pub c_proj: Conv1D,
}

impl Mlp {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_fc: Conv1D::load(cfg.n_embd, cfg.mlp_dim(), vb.pp("c_fc"))?,
            c_proj: Conv1D::load(cfg.mlp_dim(), cfg.n_embd, vb.pp("c_proj"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // candle's `gelu` is the tanh approximation, which is GPT-2's `gelu_new`.
        self.c_proj.forward(&self.c_fc.forward(xs)?.gelu()?)
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        Ok(Self {
            ln_1: LayerNorm::load(cfg.n_embd, eps, vb.pp("ln_1"))?,
            attn: Attention::load(cfg, vb.pp("attn"))?,
            ln_2: LayerNorm::load(cfg.n_embd, eps, vb.pp("ln_2"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, xs: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.ln_1.forward(xs)?, cache)?)?;
        &xs + self.mlp.forward(&self.ln_2.forward(&xs)?)?
    }
}

/// GPT-2 with its tied LM head.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    cfg: Config,
}

impl Gpt2 {
    /// Loads from a var builder rooted where `wte`, `wpe`, `h.{i}` and `ln_f` live
    /// (the caller adds `pp("transformer")` for prefixed checkpoints).
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let wte = vb.get((cfg.vocab_size, cfg.n_embd), "wte.weight")?;
        let wpe = vb.get((cfg.n_positions, cfg.n_embd), "wpe.weight")?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(cfg, vb.pp(format!("h.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(cfg.n_embd, cfg.layer_norm_epsilon, vb.pp("ln_f"))?;
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The token table [vocab, d], also the tied LM head.
    pub fn wte(&self) -> &Tensor {
        &self.wte
    }

    /// The position table [n_positions, d].
    pub fn wpe(&self) -> &Tensor {
        &self.wpe
    }

    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub fn ln_f(&self) -> &LayerNorm {
        &self.ln_f
    }

    pub fn device(&self) -> &Device {
        self.wte.device()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer)
    }

    /// Logits [b, t, vocab] for new tokens `ids` [b, t] that follow the `cache.len()` cached positions.
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_b_sz, seq_len) = ids.dims2()?;
        let past = cache.len();
        cache.check_fits(seq_len, self.cfg.n_positions, self.blocks.len())?;
        let positions = Tensor::arange(past as u32, (past + seq_len) as u32, ids.device())?;
        let tok =
            self.wte
                .embedding(&ids.flatten_all()?)?
                .reshape(((), seq_len, self.cfg.n_embd))?;
        let mut xs = tok.broadcast_add(&self.wpe.embedding(&positions)?)?;
        for (block, layer_cache) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            xs = block.forward(&xs, layer_cache)?;
        }
        let xs = self.ln_f.forward(&xs)?;
        xs.broadcast_matmul(&self.wte.t()?)
    }

    /// Logits [t, vocab] as f32 rows for one sequence of new tokens.
    pub fn forward_rows(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        if ids.iter().any(|&id| id as usize >= self.cfg.vocab_size) {
            bail!("token id out of the vocabulary of {}", self.cfg.vocab_size)
        }
        let input = Tensor::new(ids, self.device())?.unsqueeze(0)?;
        self.forward(&input, cache)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec2()
    }
}
