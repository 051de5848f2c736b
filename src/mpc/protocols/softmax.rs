//! Softmax along the last dimension, max-subtracted, with an optional public mask (causal masking).
//!
//! Inputs lie in (-2^16, 2^16) ([`SCORE_BITS`]), which bounds every key's range.
//! 1. Masked entries are replaced by their row's first kept entry (a public position; local), so
//!    the maximum and exp see the row's own scores only.
//! 2. m = a coarse maximum ([`super::max::max_value_coarse`]): the tournament's keys cover the
//!    differences' range (18 bits above the fractional ones) resolved to 2^-r with 2^r >= levels / 2,
//!    so m is one of the row's values at most 2 below its maximum: keys of 20 levels for rows of
//!    65 to 256 instead of 63. Softmax does not depend on m, which only keeps exp's inputs in its
//!    domain: z = x - m lies in (-2^17, 2], and e = exp(z) (exp clamps what is far below, its
//!    key over 13 levels), then e *= mask (local, exact zeros).
//! 3. S = sum(e) lies in [1, n e^2] (the maximum contributes at least exp(0) = 1), so 1/S
//!    comes from the grid-and-series reciprocal on [1/2, 8 (n + 1)] (4 rounds; its grid of one key
//!    a row), left at many fractional bits;
//!    out = e * (1/S) is one masked product that truncates 1/S in its opening and its own result
//!    in Z_2^128 ([`super::truncating_product`]): one round, 1/S opened once a row.
//!
//! [`softmax_at`] takes x at f + `extra` fractional bits (attention scores before their
//! truncation): the max runs at that scale and exp truncates in its first opening.
//!
//! Cost: max (1 round per level of the binary tournament: 7 at n = 128, 10 at n = 1024)
//! + exp (8) + reciprocal (4) + 1 round: 23 rounds for rows of 1024 at the defaults.
//!
//! Attention ([`softmax_values_at`]) needs softmax(x) V for the value rows V of a KV cache, and
//! 1/S is per row, so softmax(x) V = (1/S) (e V): the product e V (appending the new value rows,
//! [`super::row_cache`]) needs only e, so it shares the reciprocal's first opening, and the last
//! round multiplies e V by 1/S instead of e, truncating e V in its opening. Softmax and the
//! values product then take softmax's rounds alone (the product and its truncation took 2 more),
//! and P = e / S is never rounded to f bits before it meets V.

use super::masked::Operand;
use super::reciprocal::Scaled;
use super::round::Round;
use super::row_cache::{stage_append_and_multiply, PreparedRows};
use super::{
    exp::exp_within, max::levels, max::max_value_coarse, reciprocal::reciprocal,
    reciprocal::reciprocal_in,
};
use crate::mpc::error::MpcError;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// `mask` (if any) has one entry per element of `x`, true = keep; every row must keep one entry.
pub fn softmax(p: &mut Party, x: &RingTensor, mask: Option<&[bool]>) -> Result<RingTensor> {
    softmax_at(p, x, 0, mask)
}

/// Softmax of x given at f + `extra` fractional bits; the result has f bits.
pub fn softmax_at(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    mask: Option<&[bool]>,
) -> Result<RingTensor> {
    p.labelled("softmax", |p| {
        let n = x.last_dim();
        let e = masked_exp(p, x, extra, mask)?;
        let f = p.fp.frac_bits;
        let inv = reciprocal(p, &e.sum_last(), f, 0.5, sum_bound(n))?;
        times_inverse(p, Operand::plain(&e), &inv, n)
    })
}

/// softmax(x) V per head, at f bits: x [heads, m, rows] the scores at f + `extra` bits (with
/// `mask` as in [`softmax_at`]), V the value rows of a KV cache after appending `new` to them
/// (see [`super::row_cache::append_and_multiply`]). Softmax's rounds, and no more. e V at 2f bits must
/// stay below 2^61 for its truncation, with e below e^2 (the coarse maximum): values below
/// 2^(58 - 2f) / n in magnitude (2^16 at f = 16 and 1,024 positions).
pub fn softmax_values_at(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    mask: Option<&[bool]>,
    values: &mut PreparedRows,
    new: &RingTensor,
) -> Result<RingTensor> {
    p.labelled("softmax", |p| {
        let n = x.last_dim();
        let e = masked_exp(p, x, extra, mask)?;
        // e V (at 2f bits) opens with the reciprocal's grid.
        let (to_open, product) = stage_append_and_multiply(p, values, new, &e, false)?;
        let mut first = Round::new();
        let opened = first.open(&to_open);
        let f = p.fp.frac_bits;
        let (inv, mut outputs) = reciprocal_in(p, first, &e.sum_last(), f, 0.5, sum_bound(n))?;
        let ev = product.finish(p, values, &outputs.take(opened))?;
        times_inverse(p, Operand::truncated(&ev, f), &inv, n)
    })
}

/// Softmax's inputs lie in (-2^SCORE_BITS, 2^SCORE_BITS): the domain its comparisons' keys cover.
pub const SCORE_BITS: u32 = 16;

/// The bound on S = sum e: the maximum's entry contributes at least 1, and the coarse maximum
/// lies at most 2 below the true one, so S <= n e^2 < 8 (n + 1).
fn sum_bound(n: usize) -> f64 {
    8.0 * (n as f64 + 1.0)
}

/// e = exp(x - m) for a coarse maximum m, with masked entries exactly 0 (steps 1 and 2).
fn masked_exp(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    mask: Option<&[bool]>,
) -> Result<RingTensor> {
    let n = x.last_dim();
    let x = match mask {
        Some(mask) => keep_first_in_masked(x, mask)?,
        None => x.clone(),
    };
    let x_bits = p.fp.frac_bits + extra;
    // Differences of two scores lie in (-2^(SCORE_BITS+1), 2^(SCORE_BITS+1)), one bit inside the
    // keys' range so that no difference reaches the window a coarse key misreads at its top.
    // A level may lose 2^-r with 2^r >= levels(n) / 2: the maximum is within 2 of the true one.
    let resolution = levels(n)
        .next_power_of_two()
        .trailing_zeros()
        .saturating_sub(1);
    let key_bits = (SCORE_BITS + 2 + x_bits).min(crate::mpc::dcf::BITS as u32);
    let skip = x_bits.saturating_sub(resolution);
    let m = max_value_coarse(p, &x, key_bits, skip)?;
    let z = x.sub(&m.expand_last(n))?;
    // z = x - m lies in (-2^(SCORE_BITS+1), 2].
    let mut e = exp_within(p, &z, extra, SCORE_BITS + 1)?;
    if let Some(mask) = mask {
        e.data_mut().iter_mut().zip(mask).for_each(|(v, &keep)| {
            if !keep {
                *v = 0
            }
        });
    }
    Ok(e)
}

/// x with each masked entry replaced by its row's first kept entry (a public position), so that
/// the maximum and exp see the row's own scores only; the masked entries of e are zeroed after.
fn keep_first_in_masked(x: &RingTensor, mask: &[bool]) -> Result<RingTensor> {
    let n = x.last_dim();
    if mask.len() != x.len() {
        return Err(MpcError::ShapeMismatch {
            op: "softmax mask",
            left: x.shape().to_vec(),
            right: vec![mask.len()],
        });
    }
    let mut data = x.data().to_vec();
    for (row, keep) in data.chunks_mut(n.max(1)).zip(mask.chunks(n.max(1))) {
        let first = keep.iter().position(|&k| k).ok_or_else(|| {
            MpcError::BadConfig("softmax: a row whose mask keeps no entry".into())
        })?;
        let kept = row[first];
        for (v, &k) in row.iter_mut().zip(keep) {
            if !k {
                *v = kept;
            }
        }
    }
    RingTensor::new(x.shape(), data)
}

/// v (an operand at f bits) times 1/S (one value per row of v, for rows of `n` scores), the
/// product truncated to f bits in Z_2^128: one round.
fn times_inverse(p: &mut Party, v: Operand, inv: &Scaled, n: usize) -> Result<RingTensor> {
    let f = p.fp.frac_bits;
    // 1/S at f + extra bits keeps f significant bits down to 1/S's bound.
    let extra = sum_bound(n).log2().ceil() as u32;
    let mut round = Round::new();
    // 1/S has v's shape with a last dimension of 1: opened once a row.
    let out = round.mul_truncating_rows(
        p,
        v,
        Operand::truncated(&inv.value, inv.frac_bits - f - extra),
        f + extra,
    )?;
    Ok(round.run(p)?.take(out))
}
