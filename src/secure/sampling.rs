//! Private sampling: the speculative rule on shared logits, with no secure division and no secure
//! log. Both parties learn the number of accepted drafts; only the client learns the next token.
//!
//! Input: shared logits L [k+1, vocab] (rows 0..k score drafts x_0..x_{k-1}, row k is the bonus
//! position); the client's drafts and the public model's q_i; the step's uniforms, public to both
//! parties and drawn by neither alone (the session's coin toss, [`super::coins`]): a client that
//! chose them could replay a position with chosen uniforms and binary-search the private model's
//! probabilities. They are public, so they scale shares locally: no product needs them.
//!
//! T = 0 (greedy): a_i = argmax_j L_ij for every row at once (one tournament); draft i is accepted
//! iff a_i = x_i, tested as 1 - [a_i - x_i < 0] - [x_i - a_i < 0]. The prefix products of the
//! acceptance bits sum to n, the number of leading acceptances: only n is opened (to both, not
//! the bits after the first rejection), then the server reveals a_n to the client.
//!
//! T > 0: z = L / T, e = exp(z - max z), S = sum e (the softmax numerator and denominator, no
//! 1/S; exp takes any input at most 0, so any temperature is in its domain):
//! 1. draft i is accepted iff u_i (q_i(x_i) S_i) < e_i(x_i), i.e. u_i < p_i(x_i) / q_i(x_i);
//! 2. residual r_ij = max(0, e_ij - q_ij S_i) (= S_i max(0, p_ij - q_ij)); the bonus row has q = 0;
//! 3. inverse CDF: with C_ij = r_i0 + ... + r_ij and t_i = u'_i sum_j r_ij, the token is
//!    y_i = #{j : C_ij < t_i} (S cancels). Every row is sampled at once; n is opened and the
//!    client learns y_n only.
//!
//! What the uniforms being public tells: the server learns u_i and n, so that u_i < p_i / q_i for
//! the accepted drafts and not for the first rejected one; it learned n before, and neither the
//! drafts nor q, so this bounds a ratio of two probabilities at tokens it does not know.
//!
//! Precision: e, S and q S at f bits (q_i(x_i) enters at 24 bits and its product with S truncates
//! itself to f); the uniforms at 24 bits, so u (q S) and u' sum(r) stay below 2^57 for
//! vocabularies up to 2^17. The output follows the private model up to these roundings and
//! exp's error (at most 3.4e-5 on each e_ij in [0, 1]).
//!
//! Rounds (the tournament: one round a level, 16 over 50,257 entries):
//! T = 0: tournament + 1 (comparisons) + ceil(log2 k) + 1 (n opened to both) + 1 one-way message
//! (the token); T > 0: (1 if T != 1 and the logits await truncation) + tournament + exp (8) + 3
//! (the products, q S and q(x) S truncating themselves in Z_2^128; the comparisons, the
//! residual's product riding on its comparison; the inverse CDF's comparisons) + ceil(log2 k),
//! plus the same opening and message. With no drafts (standard decoding) the acceptance test and
//! the opening drop out. [`private_sample_at`] takes the logits before the LM head's truncation:
//! the argmax compares them at 2f bits; at T = 1 exp truncates them in its first opening, at other
//! temperatures one truncation round (the one the LM head would have taken) precedes the local
//! product by 1/T.

use super::coins::StepUniforms;
use crate::decoding::Verdict;
use crate::mpc::error::MpcError;
use crate::mpc::party::Result;
use crate::mpc::protocols::{
    exp::exp_at,
    ltz_many,
    max::{max_last, max_value_last},
    mul_many, not, truncate, Operand, Round,
};
use crate::mpc::{Party, RingTensor, CLIENT};

/// What the client brings to one sampling step (the uniforms are the session's, not its own).
#[derive(Debug, Clone)]
pub struct ClientDraws {
    pub drafts: Vec<u32>,
    /// The public model's distribution for each draft (used at T > 0).
    pub q: Vec<Vec<f64>>,
}

/// What one sampling step tells each party: both learn the number of accepted drafts (opened
/// inside the protocol), only the client the next token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    /// The token after the accepted drafts: `Some` on the client, `None` on the server.
    pub next: Option<u32>,
}

impl Outcome {
    /// The client's verdict (`None` on the server).
    pub fn verdict(&self) -> Option<Verdict> {
        self.next.map(|next| Verdict {
            accepted: self.accepted,
            next,
        })
    }
}

pub use super::coins::PROB_BITS;
/// Fractional bits of 1/T (z = logits / T comes out at f + TEMPERATURE_BITS, within exp's input).
const TEMPERATURE_BITS: u32 = 24;

/// The lowest temperature above 0 (greedy). z - max z at f + TEMPERATURE_BITS = 40 bits must stay
/// below 2^61 for exp's first opening, i.e. |z - max z| = |L_j - max L| / T < 2^21: at T = 0.01,
/// logits of magnitude up to 2^13 (8192; GPT-2's are within a few hundred) keep 2^14 / 0.01 * 2^40
/// < 2^61, and 1/T at 24 bits (1.7e9) is exact to 6e-10 relatively. Lower temperatures would
/// shrink that bound on the logits, and are greedy in all but name: at T = 0.01 a gap of one
/// logit already weighs e^-100.
pub const MIN_TEMPERATURE: f64 = 0.01;

/// `Ok` for 0 (greedy) or a finite temperature of at least [`MIN_TEMPERATURE`]; otherwise why not.
pub fn check_temperature(temperature: f64) -> std::result::Result<(), String> {
    if temperature == 0.0 || (temperature.is_finite() && temperature >= MIN_TEMPERATURE) {
        Ok(())
    } else {
        Err(format!(
            "temperature {temperature}: must be 0 (greedy) or at least the minimum {MIN_TEMPERATURE}"
        ))
    }
}

fn encode_prob(x: f64) -> u64 {
    ((x.clamp(0.0, 1.0) * (1u64 << PROB_BITS) as f64).round() as u64).min((1 << PROB_BITS) - 1)
}

/// A value only the client knows, as a share: its own value on the client, zeros on the server.
fn client_known(
    p: &Party,
    shape: &[usize],
    values: impl FnOnce() -> Vec<u64>,
) -> Result<RingTensor> {
    if p.is_client() {
        RingTensor::new(shape, values())
    } else {
        Ok(RingTensor::zeros(shape))
    }
}

/// Applies the speculative rule to shared logits [k+1, vocab]. Both parties pass the step's
/// uniforms (unused at T = 0); the client passes its draws, the server `None`.
pub fn private_sample(
    p: &mut Party,
    logits: &RingTensor,
    k: usize,
    temperature: f64,
    uniforms: &StepUniforms,
    draws: Option<&ClientDraws>,
) -> Result<Outcome> {
    private_sample_at(p, logits, 0, k, temperature, uniforms, draws)
}

/// [`private_sample`] on logits at f + `extra` fractional bits (the LM head's product before its
/// truncation, `extra` = f): the argmax compares them as they are; at T = 1 exp's first opening
/// truncates them, at other temperatures one truncation does. |logits| 2^(f + extra) must stay
/// below 2^61 (and |logits| below 2^13 at the lowest temperature, see [`MIN_TEMPERATURE`]).
pub fn private_sample_at(
    p: &mut Party,
    logits: &RingTensor,
    extra: u32,
    k: usize,
    temperature: f64,
    uniforms: &StepUniforms,
    draws: Option<&ClientDraws>,
) -> Result<Outcome> {
    check_temperature(temperature).map_err(MpcError::BadConfig)?;
    let v = logits.last_dim();
    if logits.len() != (k + 1) * v {
        return Err(MpcError::ShapeMismatch {
            op: "private_sample",
            left: logits.shape().to_vec(),
            right: vec![k + 1, v],
        });
    }
    let in_range = |u: &[u64], len: usize| u.len() == len && u.iter().all(|&x| x >> PROB_BITS == 0);
    if temperature > 0.0 && !(in_range(&uniforms.accept, k) && in_range(&uniforms.sample, k + 1)) {
        return Err(MpcError::BadConfig(format!(
            "the uniforms for {k} drafts must be {k} and {} values below 2^{PROB_BITS}",
            k + 1
        )));
    }
    let draws = if p.is_client() {
        let d =
            draws.ok_or_else(|| MpcError::BadConfig("the client must pass its draws".into()))?;
        let q_ok = temperature == 0.0 || (d.q.len() == k && d.q.iter().all(|q| q.len() == v));
        if d.drafts.len() != k || d.drafts.iter().any(|&x| x as usize >= v) || !q_ok {
            return Err(MpcError::BadConfig(format!(
                "draws for {k} drafts over {v} tokens are malformed"
            )));
        }
        Some(d)
    } else {
        None
    };
    let (accepted, candidates) = if temperature == 0.0 {
        p.labelled("greedy", |p| greedy(p, logits, k, draws))?
    } else {
        p.labelled("sample", |p| {
            sample(p, logits, extra, k, temperature, uniforms, draws)
        })?
    };
    // The number of leading acceptances: only it is opened, not whether a draft after the first
    // rejection would have passed (the private model's business).
    let leading = if k == 0 {
        None
    } else {
        Some(p.labelled("prefix", |p| Ok(prefix_products(p, &accepted)?.sum_last()))?)
    };
    p.labelled("reveal", |p| {
        // The count goes to both in one opening, so the server knows it from the protocol, not
        // from the client's word (with no drafts there is nothing to accept).
        let n = match &leading {
            None => 0,
            Some(leading) => p.open(leading)?.data()[0],
        };
        if n > k as u64 {
            return Err(MpcError::Malformed(format!("{n} accepted of {k} drafts")));
        }
        let n = n as usize;
        let next = p.reveal_to(CLIENT, &candidates.narrow_rows(n, 1)?)?;
        Ok(Outcome {
            accepted: n,
            next: next.map(|t| t.data()[0] as u32),
        })
    })
}

/// c_i = b_0 b_1 ... b_i for shared integer bits [k] (Hillis-Steele: ceil(log2 k) product rounds).
fn prefix_products(p: &mut Party, bits: &RingTensor) -> Result<RingTensor> {
    let k = bits.len();
    let mut c = bits.data().to_vec();
    let mut d = 1;
    while d < k {
        let later = RingTensor::new(&[k - d], c[d..].to_vec())?;
        let earlier = RingTensor::new(&[k - d], c[..k - d].to_vec())?;
        let product = mul_many(p, &[(&later, &earlier)])?.remove(0);
        c[d..].copy_from_slice(product.data());
        d *= 2;
    }
    RingTensor::new(&[1, k], c)
}

/// (acceptance bits [k], candidate tokens [k+1, 1]) at T = 0.
fn greedy(
    p: &mut Party,
    logits: &RingTensor,
    k: usize,
    draws: Option<&ClientDraws>,
) -> Result<(RingTensor, RingTensor)> {
    let (_, argmax) = max_last(p, logits)?;
    if k == 0 {
        return Ok((RingTensor::zeros(&[0, 1]), argmax));
    }
    let drafts = client_known(p, &[k, 1], || {
        draws.map_or(vec![], |d| d.drafts.iter().map(|&x| x as u64).collect())
    })?;
    let diff = argmax.narrow_rows(0, k)?.sub(&drafts)?;
    let lt = ltz_many(p, &[&diff, &diff.neg()])?;
    let equal = not(p, &lt[0]).sub(&lt[1])?;
    Ok((equal, argmax))
}

/// (acceptance bits [k], candidate tokens [k+1, 1]) at T > 0.
fn sample(
    p: &mut Party,
    logits: &RingTensor,
    extra: u32,
    k: usize,
    temperature: f64,
    uniforms: &StepUniforms,
    draws: Option<&ClientDraws>,
) -> Result<(RingTensor, RingTensor)> {
    let (v, f) = (logits.last_dim(), p.fp.frac_bits);
    // z = logits / T at f + z_extra bits: the logits at f bits (truncated first if they wait for
    // it) times 1/T at TEMPERATURE_BITS, a local product; at T = 1 the logits as they are.
    let (z, z_extra) = if temperature == 1.0 {
        (logits.clone(), extra)
    } else {
        let at_f = if extra > 0 {
            truncate(p, logits, extra)?
        } else {
            logits.clone()
        };
        let scale = (2f64.powi(TEMPERATURE_BITS as i32) / temperature).round() as u64;
        (at_f.scale(scale), TEMPERATURE_BITS)
    };
    let max = max_value_last(p, &z)?;
    // exp takes any x <= 0 (it sets what lies far below to 0 itself), so the wide rows of a low
    // temperature need no clamp; it truncates z to f bits in its first opening.
    let e = exp_at(p, &z.sub(&max.expand_last(v))?, z_extra)?;
    let sum = e.sum_last();

    // One round of products with client-known factors: e_i(x_i) by a one-hot, q_i(x_i) S_i and
    // q_ij S_i, the last two truncating themselves to f bits (Z_2^128).
    let one_hot = client_known(p, &[k, v], || {
        let mut h = vec![0u64; k * v];
        if let Some(d) = draws {
            d.drafts
                .iter()
                .enumerate()
                .for_each(|(i, &x)| h[i * v + x as usize] = 1);
        }
        h
    })?;
    // q_i(x_i) at PROB_BITS: finer than q's f bits, at no cost (its product drops those bits).
    let q_draft = client_known(p, &[k, 1], || {
        draws.map_or(vec![], |d| {
            (0..k)
                .map(|i| encode_prob(d.q[i][d.drafts[i] as usize]))
                .collect()
        })
    })?;
    let q = client_known(p, &[k + 1, v], || {
        let mut q = vec![0u64; (k + 1) * v];
        if let Some(d) = draws {
            for (i, row) in d.q.iter().enumerate() {
                for (j, &qj) in row.iter().enumerate() {
                    q[i * v + j] = p.fp.constant(qj);
                }
            }
        }
        q
    })?;
    let (e_draft, sum_draft) = (e.narrow_rows(0, k)?, sum.narrow_rows(0, k)?);
    let mut round = Round::new();
    let at_draft = round.mul(p, Operand::plain(&one_hot), Operand::plain(&e_draft))?;
    let qs_draft = round.mul_truncating(
        p,
        Operand::plain(&q_draft),
        Operand::plain(&sum_draft),
        PROB_BITS,
    )?;
    // S is one value a row: opened once a row, not once per vocabulary entry.
    let q_sum = round.mul_truncating_rows(p, Operand::plain(&q), Operand::plain(&sum), f)?;
    let mut out = round.run(p)?;
    // u (q S) - 2^24 e(x) at f + 24 bits, by the public u (a local scale): q S <= S <= v (1 + 3.4e-5)
    // is below v 2^f in the ring, so |u q S| < v 2^(f + 24) = 2^57 for v <= 2^17 at f = 16, and
    // 2^24 e(x) < 2^(f + 25): the margin stays far below the comparison's 2^62.
    let accept_u = RingTensor::new(&[k, 1], uniforms.accept.clone())?;
    let e_at_draft = out.take(at_draft).sum_last().scale(1 << PROB_BITS);
    let accept_margin = out.take(qs_draft).mul(&accept_u)?.sub(&e_at_draft)?; // < 0: accept
    let diff = e.sub(&out.take(q_sum))?;

    // Acceptance, and r = max(0, e - q S) = diff - [diff < 0] diff from the comparison's own
    // opening; then r's cumulative sums and the threshold t = u' sum(r), a local scale by the
    // public u' at f + 24 bits like the sums (below 2^57 as above).
    let mut round = Round::new();
    let accepted = round.ltz(p, &accept_margin)?;
    let negative = round.ltz_products(p, &diff, &[])?;
    let mut out = round.run(p)?;
    let accepted = out.take(accepted);
    let residual = diff.sub(&out.take(negative.times_x))?;
    let sample_u = RingTensor::new(&[k + 1, 1], uniforms.sample.clone())?;
    let threshold = residual.sum_last().mul(&sample_u)?;
    let mut cumulative = residual.scale(1 << PROB_BITS);
    for row in cumulative.data_mut().chunks_mut(v) {
        for j in 1..v {
            row[j] = row[j].wrapping_add(row[j - 1]);
        }
    }
    let below = ltz_many(p, &[&cumulative.sub(&threshold.expand_last(v))?])?.remove(0);
    Ok((accepted, below.sum_last()))
}
