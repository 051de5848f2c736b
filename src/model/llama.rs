//! LLaMA-style decoders in candle (`llama`, `mistral` without a sliding window, `qwen2`), loading
//! the Hugging Face `LlamaForCausalLM` safetensors layout unchanged.
//!
//! Pre-RMSNorm blocks, rotary positions (Hugging Face's `rotate_half` convention: the first and
//! second halves of each head are the pairs rotated), grouped-query attention, the SiLU-gated MLP,
//! and an LM head tied to the embedding or its own. Linear weights are kept as stored, [out, in].
//! The KV cache is GPT-2's external [`KvCache`] (keys after rotation, one entry per key-value
//! head), so speculative decoding rolls drafts back the same way. Every op has a gradient, so the
//! trainer reuses this forward unchanged.

use candle_core::{bail, DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::cache::KvCache;
use super::gpt2::causal_mask;

/// The architectures this file runs, as `config.json` names them in `model_type`.
pub const MODEL_TYPES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// A token id, or a list of them (LLaMA 3 names several end-of-text tokens).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(id) => Some(*id),
            TokenIds::Many(ids) => ids.first().copied(),
        }
    }
}

/// The fields of a Hugging Face LLaMA / Mistral / Qwen2 `config.json` that the forward needs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LlamaConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// The gated MLP's width.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: heads of keys and values; absent means one per query head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; absent means hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// transformers 5 writes `rope_parameters: {rope_theta, rope_type}` instead; [`Self::parse`]
    /// folds it in here.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// LLaMA's switch for biases on q, k, v and o (Qwen2 has q, k, v biases regardless).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Only `null` is run: every scaling kind (linear, dynamic, yarn, llama3) is refused.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5's form of `rope_theta` and `rope_scaling`: only `rope_type: "default"` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2's switch for `sliding_window` (Mistral has none: a window given is used).
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
}

fn default_model_type() -> String {
    "llama".to_string()
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10000.0
}

fn default_max_position_embeddings() -> usize {
    2048
}

fn default_hidden_act() -> String {
    "silu".to_string()
}

fn default_initializer_range() -> f64 {
    0.02
}

impl LlamaConfig {
    /// A `config.json`, with transformers 5's `rope_parameters` folded into `rope_theta`.
    pub fn parse(json: serde_json::Value) -> serde_json::Result<Self> {
        let mut cfg: Self = serde_json::from_value(json)?;
        if let Some(theta) = cfg
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
        {
            cfg.rope_theta = theta;
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Biases on the q, k and v projections: Qwen2 always, LLaMA with `attention_bias`.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// A bias on the output projection: LLaMA with `attention_bias` only.
    pub fn o_bias(&self) -> bool {
        self.attention_bias && self.model_type != "qwen2"
    }

    /// The end-of-text token (the first, when several are named), when it lies inside the vocabulary.
    pub fn end_of_text(&self) -> Option<u32> {
        self.eos_token_id
            .as_ref()
            .and_then(TokenIds::first)
            .filter(|&id| (id as usize) < self.vocab_size)
    }

    /// The sliding attention window, when the config turns one on.
    fn effective_window(&self) -> Option<usize> {
        match (self.sliding_window, self.use_sliding_window) {
            (_, Some(false)) | (None, _) => None,
            (Some(w), _) => Some(w),
        }
    }

    /// Rejects configs this forward cannot run, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            bail!(
                "config: model_type {:?} is not a LLaMA-style model ({})",
                self.model_type,
                MODEL_TYPES.join(", ")
            )
        }
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
            || self.max_position_embeddings == 0
        {
            bail!("config: vocab_size, hidden_size, intermediate_size, num_hidden_layers and max_position_embeddings must all be positive")
        }
        let (heads, kv_heads) = (self.num_attention_heads, self.num_kv_heads());
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!("config: num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv_heads})")
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(heads) {
            bail!(
                "config: hidden_size ({}) must be a multiple of num_attention_heads ({heads})",
                self.hidden_size
            )
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            bail!(
                "config: the head width ({}) must be even for rotary positions",
                self.head_dim()
            )
        }
        if self.hidden_act != "silu" {
            bail!(
                "config: hidden_act {:?} is not supported (silu only)",
                self.hidden_act
            )
        }
        if self.mlp_bias {
            bail!("config: mlp_bias = true is not supported")
        }
        if let Some(kind) = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_type"))
            .and_then(|k| k.as_str())
            .filter(|&k| k != "default")
        {
            bail!("config: rope_parameters of rope_type {kind:?} is not supported (plain rotary positions only)")
        }
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|k| k.as_str())
                .unwrap_or("unnamed");
            bail!("config: rope_scaling of kind {kind:?} is not supported (plain rotary positions only)")
        }
        if let Some(window) = self.effective_window() {
            if window < self.max_position_embeddings {
                bail!(
                    "config: sliding_window = {window} is smaller than the context of {} positions; \
                     sliding-window attention is not supported",
                    self.max_position_embeddings
                )
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            bail!("config: rms_norm_eps must be a positive number")
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            bail!("config: rope_theta must be a positive number")
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            bail!("config: initializer_range must be a number >= 0")
        }
        Ok(())
    }

    /// A shape with LLaMA's defaults (untied head, no biases, 2048 positions, vocabulary 32000).
    pub fn sized(
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
    ) -> Self {
        Self {
            model_type: default_model_type(),
            vocab_size: 32000,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: Some(num_key_value_heads),
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: default_rope_theta(),
            max_position_embeddings: default_max_position_embeddings(),
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            hidden_act: default_hidden_act(),
            rope_scaling: None,
            rope_parameters: None,
            sliding_window: None,
            use_sliding_window: None,
            bos_token_id: Some(TokenIds::One(1)),
            eos_token_id: Some(TokenIds::One(2)),
            initializer_range: default_initializer_range(),
        }
    }
}

/// A linear layer stored as Hugging Face stores it: weight [out, in], optional bias [out].
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    fn load(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((d_out, d_in), "weight")?;
        let bias = if bias {
            Some(vb.get(d_out, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = xs.broadcast_matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
    }
}

/// RMSNorm, x / sqrt(mean(x^2) + eps) * weight, written with plain ops so that it has a gradient.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mean_square = xs.sqr()?.mean_keepdim(D::Minus1)?;
        xs.broadcast_div(&(mean_square + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}

/// The rotation angles of positions `past..past + len`: cos and sin [len, head_dim], each half of
/// a row repeating the frequencies theta^(-2i / head_dim), as Hugging Face lays them out.
pub fn rotary_tables(
    head_dim: usize,
    theta: f64,
    past: usize,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
        .collect();
    let angles: Vec<f64> = (past..past + len)
        .flat_map(|p| (0..head_dim).map(move |i| (p, i)))
        .map(|(p, i)| p as f64 * inv_freq[i % half])
        .collect();
    let cos: Vec<f32> = angles.iter().map(|a| a.cos() as f32).collect();
    let sin: Vec<f32> = angles.iter().map(|a| a.sin() as f32).collect();
    Ok((
        Tensor::from_vec(cos, (len, head_dim), device)?,
        Tensor::from_vec(sin, (len, head_dim), device)?,
    ))
}

/// x * cos + rotate_half(x) * sin for x [b, h, t, d], rotate_half(x) = [-x2, x1].
pub fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = xs.dim(D::Minus1)? / 2;
    let x1 = xs.narrow(D::Minus1, 0, half)?;
    let x2 = xs.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    xs.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// [b, kv_heads, t, d] -> [b, kv_heads * n_rep, t, d]: each key-value head serves n_rep query heads.
fn repeat_kv(xs: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(xs);
    }
    let (b, kv_heads, t, d) = xs.dims4()?;
    xs.unsqueeze(2)?
        .expand((b, kv_heads, n_rep, t, d))?
        .reshape((b, kv_heads * n_rep, t, d))
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

impl Attention {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (q_dim, kv_dim) = (cfg.num_attention_heads * hd, cfg.num_kv_heads() * hd);
        let bias = cfg.qkv_bias();
        Ok(Self {
            q_proj: Linear::load(d, q_dim, bias, vb.pp("q_proj"))?,
            k_proj: Linear::load(d, kv_dim, bias, vb.pp("k_proj"))?,
            v_proj: Linear::load(d, kv_dim, bias, vb.pp("v_proj"))?,
            o_proj: Linear::load(q_dim, d, cfg.o_bias(), vb.pp("o_proj"))?,
            n_head: cfg.num_attention_heads,
            n_kv_head: cfg.num_kv_heads(),
            head_dim: hd,
        })
    }

    /// `xs`: [b, t, d]; `cos`, `sin`: the new positions' rotations; `cache`: this layer's keys
    /// (rotated) and values of earlier positions.
    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (b_sz, seq_len, _) = xs.dims3()?;
        let heads = |proj: &Linear, n: usize| -> Result<Tensor> {
            proj.forward(xs)?
                .reshape((b_sz, seq_len, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = apply_rotary(&heads(&self.q_proj, self.n_head)?, cos, sin)?;
        let k = apply_rotary(&heads(&self.k_proj, self.n_kv_head)?, cos, sin)?;
        let v = heads(&self.v_proj, self.n_kv_head)?;
        let (k, v) = match cache.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total_len = k.dim(2)?;
        let n_rep = self.n_head / self.n_kv_head;
        let (k, v) = (repeat_kv(k, n_rep)?, repeat_kv(v, n_rep)?);
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let mask = causal_mask(seq_len, total_len - seq_len, xs.device())?;
        let probs = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
        let ys = probs.matmul(&v.contiguous()?)?.transpose(1, 2)?.reshape((
            b_sz,
            seq_len,
            self.n_head * self.head_dim,
        ))?;
        self.o_proj.forward(&ys)
    }
}

/// down(silu(gate(x)) * up(x)).
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (d, m) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::load(d, m, false, vb.pp("gate_proj"))?,
            up_proj: Linear::load(d, m, false, vb.pp("up_proj"))?,
            down_proj: Linear::load(m, d, false, vb.pp("down_proj"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gated = (self.gate_proj.forward(xs)?.silu()? * self.up_proj.forward(xs)?)?;
        self.down_proj.forward(&gated)
    }
}

#[derive(Debug, Clone)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    fn load(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(d, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::load(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::load(d, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs)?, cos, sin, cache)?;
        let xs = (xs + attn)?;
        &xs + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&xs)?)?
    }
}

/// A LLaMA-style decoder with its LM head.
#[derive(Debug, Clone)]
pub struct Llama {
    /// The token table [vocab, d].
    pub embed_tokens: Tensor,
    pub layers: Vec<Block>,
    /// The final RMSNorm.
    pub norm: RmsNorm,
    /// The LM head [vocab, d]: `embed_tokens` itself when the config ties them.
    pub lm_head: Tensor,
    pub cfg: LlamaConfig,
}

impl Llama {
    /// Loads from a var builder rooted where `model.embed_tokens`, `model.layers.{i}`,
    /// `model.norm` and `lm_head` live.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        cfg.validate()?;
        let (vocab, d) = (cfg.vocab_size, cfg.hidden_size);
        let body = vb.pp("model");
        let embed_tokens = body.get((vocab, d), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(cfg, body.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(d, cfg.rms_norm_eps, body.pp("norm"))?;
        // A tied checkpoint may still carry `lm_head.weight` (a copy); the embedding is the head.
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.get((vocab, d), "lm_head.weight")?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers)
    }

    /// Logits [b, t, vocab] for new tokens `ids` [b, t] that follow the `cache.len()` cached positions.
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (_b_sz, seq_len) = ids.dims2()?;
        let past = cache.len();
        cache.check_fits(seq_len, self.cfg.max_position_embeddings, self.layers.len())?;
        let (cos, sin) = rotary_tables(
            self.cfg.head_dim(),
            self.cfg.rope_theta,
            past,
            seq_len,
            ids.device(),
        )?;
        let mut xs = self.embed_tokens.embedding(&ids.flatten_all()?)?.reshape((
            (),
            seq_len,
            self.cfg.hidden_size,
        ))?;
        for (block, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            xs = block.forward(&xs, &cos, &sin, layer_cache)?;
        }
        let xs = self.norm.forward(&xs)?;
        xs.broadcast_matmul(&self.lm_head.t()?)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(kv_heads: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 50,
            max_position_embeddings: 32,
            initializer_range: 0.3,
            ..LlamaConfig::sized(32, 48, 2, 4, kv_heads)
        }
    }

    fn rows(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn rotary_rotates_each_pair_i_and_i_plus_half_by_its_angle() {
        let (d, theta, past, len) = (8, 500.0, 3, 4);
        let values: Vec<f32> = (0..len * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let xs = Tensor::from_vec(values.clone(), (1, 1, len, d), &Device::Cpu).unwrap();
        let (cos, sin) = rotary_tables(d, theta, past, len, &Device::Cpu).unwrap();
        let got = rows(&apply_rotary(&xs, &cos, &sin).unwrap());
        for t in 0..len {
            for i in 0..d / 2 {
                // f64: the 2-D rotation of (x_i, x_{i + d/2}) by (past + t) * theta^(-2i/d).
                let angle = (past + t) as f64 * theta.powf(-2.0 * i as f64 / d as f64);
                let (a, b) = (values[t * d + i] as f64, values[t * d + i + d / 2] as f64);
                let want = (
                    a * angle.cos() - b * angle.sin(),
                    a * angle.sin() + b * angle.cos(),
                );
                assert!((got[t * d + i] as f64 - want.0).abs() < 1e-5);
                assert!((got[t * d + i + d / 2] as f64 - want.1).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn rms_norm_matches_its_f64_definition() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.7 - 3.0).collect();
        let weight: Vec<f32> = (0..6).map(|i| 0.5 + i as f32 * 0.25).collect();
        let norm = RmsNorm {
            weight: Tensor::new(weight.as_slice(), &Device::Cpu).unwrap(),
            eps: 1e-6,
        };
        let xs = Tensor::from_vec(values.clone(), (2, 6), &Device::Cpu).unwrap();
        let got = rows(&norm.forward(&xs).unwrap());
        for r in 0..2 {
            let row = &values[r * 6..r * 6 + 6];
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 6.0;
            for (i, &v) in row.iter().enumerate() {
                let want = v as f64 / (ms + 1e-6).sqrt() * weight[i] as f64;
                assert!((got[r * 6 + i] as f64 - want).abs() < 1e-5);
            }
        }
    }

    /// Grouped-query attention is multi-head attention whose key and value heads are repeated:
    /// a GQA model equals the MHA model with each kv head's weights copied to its query heads.
    #[test]
    fn grouped_query_attention_equals_attention_with_repeated_kv_heads() {
        let gqa = Llama::random(&tiny(2), 4).unwrap();
        let mut mha = Llama::random(&tiny(4), 9).unwrap();
        mha.embed_tokens = gqa.embed_tokens.clone();
        mha.lm_head = gqa.lm_head.clone();
        mha.norm = gqa.norm.clone();
        let repeat = |w: &Tensor| -> Tensor {
            // [kv * hd, d] -> [kv * 2 * hd, d]: each head's rows twice, in order.
            let (rows_, d) = w.dims2().unwrap();
            let hd = rows_ / 2;
            w.reshape((2, 1, hd, d))
                .unwrap()
                .repeat((1, 2, 1, 1))
                .unwrap()
                .reshape((4 * hd, d))
                .unwrap()
        };
        for (m, g) in mha.layers.iter_mut().zip(&gqa.layers) {
            let mut layer = g.clone();
            layer.self_attn.k_proj.weight = repeat(&g.self_attn.k_proj.weight);
            layer.self_attn.v_proj.weight = repeat(&g.self_attn.v_proj.weight);
            layer.self_attn.n_kv_head = 4;
            *m = layer;
        }
        let ids = [3u32, 1, 4, 1, 5, 9, 2, 6];
        let a = gqa.forward_rows(&ids, &mut gqa.new_cache()).unwrap();
        let b = mha.forward_rows(&ids, &mut mha.new_cache()).unwrap();
        let diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "GQA vs repeated MHA: {diff}");
        let spread = a[7].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            spread > 0.1,
            "logits {spread}: the comparison means something"
        );
    }

    #[test]
    fn random_models_follow_their_seed_and_tie_the_head_when_asked() {
        let cfg = tiny(2);
        let (a, b, c) = (
            Llama::random(&cfg, 1).unwrap(),
            Llama::random(&cfg, 1).unwrap(),
            Llama::random(&cfg, 2).unwrap(),
        );
        assert_eq!(rows(&a.lm_head), rows(&b.lm_head));
        assert_ne!(rows(&a.lm_head), rows(&c.lm_head));
        assert_ne!(rows(&a.lm_head), rows(&a.embed_tokens), "untied");
        assert!(rows(&a.norm.weight).iter().all(|&g| g == 1.0));
        let embed = rows(&a.embed_tokens);
        let std = (embed.iter().map(|v| v * v).sum::<f32>() / embed.len() as f32).sqrt();
        assert!((std - 0.3).abs() < 0.03, "std {std}");
        let tied = Llama::random(
            &LlamaConfig {
                tie_word_embeddings: true,
                ..cfg
            },
            1,
        )
        .unwrap();
        assert_eq!(rows(&tied.lm_head), rows(&tied.embed_tokens));
    }

    #[test]
    fn configs_this_forward_cannot_run_are_refused_naming_the_field() {
        let base = tiny(2);
        let refused = [
            (
                LlamaConfig {
                    num_key_value_heads: Some(3),
                    ..base.clone()
                },
                "num_key_value_heads",
            ),
            (
                LlamaConfig {
                    rope_scaling: Some(serde_json::json!({"type": "linear", "factor": 2.0})),
                    ..base.clone()
                },
                "linear",
            ),
            (
                LlamaConfig {
                    rope_parameters: Some(serde_json::json!({"rope_type": "yarn"})),
                    ..base.clone()
                },
                "yarn",
            ),
            (
                LlamaConfig {
                    model_type: "mistral".into(),
                    sliding_window: Some(8),
                    ..base.clone()
                },
                "sliding_window",
            ),
            (
                LlamaConfig {
                    mlp_bias: true,
                    ..base.clone()
                },
                "mlp_bias",
            ),
        ];
        for (cfg, field) in refused {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        // Qwen2's window is off unless use_sliding_window says so.
        let qwen = LlamaConfig {
            model_type: "qwen2".into(),
            sliding_window: Some(8),
            use_sliding_window: Some(false),
            ..base.clone()
        };
        assert!(qwen.validate().is_ok() && qwen.qkv_bias() && !qwen.o_bias());
        // transformers 5's rope_parameters carry the theta.
        let mut json = serde_json::to_value(&base).unwrap();
        json["rope_parameters"] =
            serde_json::json!({"rope_theta": 500000.0, "rope_type": "default"});
        assert_eq!(LlamaConfig::parse(json).unwrap().rope_theta, 500000.0);
    }
}
