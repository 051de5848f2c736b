//! Softmax along the last dimension, max-subtracted, with an optional public mask (causal masking).
//!
//! 1. Masked entries are replaced by a public -2^20 (local), so they never win the max.
//! 2. m = max (tournament), z = x - m <= 0, e = exp(z) (exp clamps what is far below), then
//!    e *= mask (local, exact zeros).
//! 3. S = sum(e) lies in [1, n] (the maximum contributes exp(0) = 1), so 1/S comes from the
//!    grid-and-series reciprocal on [1/2, n + 1] (4 rounds), left at many fractional bits;
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
use super::{exp::exp_at, max::max_value_last, reciprocal::reciprocal, reciprocal::reciprocal_in};
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
        let inv = reciprocal(p, &e.sum_last(), f, 0.5, n as f64 + 1.0)?;
        times_inverse(p, Operand::plain(&e), &inv, n)
    })
}

/// softmax(x) V per head, at f bits: x [heads, m, rows] the scores at f + `extra` bits (with
/// `mask` as in [`softmax_at`]), V the value rows of a KV cache after appending `new` to them
/// (see [`super::row_cache::append_and_multiply`]). Softmax's rounds, and no more. e V at 2f bits must
/// stay below 2^61 for its truncation: values below 2^(61 - 2f) / n in magnitude (2^19 at f = 16
/// and 1,024 positions).
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
        let (inv, mut outputs) = reciprocal_in(p, first, &e.sum_last(), f, 0.5, n as f64 + 1.0)?;
        let ev = product.finish(p, values, &outputs.take(opened))?;
        times_inverse(p, Operand::truncated(&ev, f), &inv, n)
    })
}

/// e = exp(x - max(x)) with masked entries exactly 0 (steps 1 and 2).
fn masked_exp(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    mask: Option<&[bool]>,
) -> Result<RingTensor> {
    let n = x.last_dim();
    let x = match mask {
        Some(mask) => {
            if mask.len() != x.len() {
                return Err(MpcError::ShapeMismatch {
                    op: "softmax mask",
                    left: x.shape().to_vec(),
                    right: vec![mask.len()],
                });
            }
            let floor = if p.is_client() {
                p.fp.constant(-((1u64 << 20) as f64)) << extra
            } else {
                0
            };
            let data = x
                .data()
                .iter()
                .zip(mask)
                .map(|(&v, &keep)| if keep { v } else { floor })
                .collect();
            RingTensor::new(x.shape(), data)?
        }
        None => x.clone(),
    };
    let m = max_value_last(p, &x)?;
    let z = x.sub(&m.expand_last(n))?;
    let mut e = exp_at(p, &z, extra)?;
    if let Some(mask) = mask {
        e.data_mut().iter_mut().zip(mask).for_each(|(v, &keep)| {
            if !keep {
                *v = 0
            }
        });
    }
    Ok(e)
}

/// v (an operand at f bits) times 1/S (one value per row of v, for rows of `n` scores), the
/// product truncated to f bits in Z_2^128: one round.
fn times_inverse(p: &mut Party, v: Operand, inv: &Scaled, n: usize) -> Result<RingTensor> {
    let f = p.fp.frac_bits;
    // 1/S at f + extra bits keeps f significant bits down to 1/(n + 1).
    let extra = (n as f64 + 1.0).log2().ceil() as u32;
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
