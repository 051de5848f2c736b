//! Reciprocal and inverse square root of positive values with a known range [lo, hi].
//!
//! Normalise first, then Newton: comparisons against every power of two (of four, for the square
//! root) in the range run as one batch (1 round, few bytes: one comparison per threshold per
//! value). Their bits give, by a public linear combination, the scale s = 2^-(J+1) that brings x
//! into [1/2, 1) (s = 4^-(J+1) into [1/4, 1)), so Newton needs only 3 iterations from a linear start
//! (CrypTen runs 10 from exp-based start values):
//!   1/x:        y <- y (2 - x y),          y0 = 2.9142 - 2x      (start error 0.086)
//!   1/sqrt(x):  y <- y (3 - x y^2) / 2,    y0 = 2.13 - 1.215x    (start error 0.087)
//! Results come back at f + `extra` fractional bits so that small outputs keep f bits of relative
//! precision. Cost: 1/x 1 + 2 + 4 * iters + 2 rounds (17); 1/sqrt 1 + 2 + 1 + 6 * iters + 2 (24).

use super::{compare::ltz_many, fixed_mul, mul_trunc, truncate};
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// A positive shared value's reciprocal (or inverse square root) at `frac_bits` fractional bits.
pub struct Scaled {
    pub value: RingTensor,
    pub frac_bits: u32,
}

/// Shares of [x >= base^j] for j in `js`, x read at `in_bits` fractional bits.
fn threshold_bits(
    p: &mut Party,
    x: &RingTensor,
    in_bits: u32,
    base: f64,
    js: &[i32],
) -> Result<Vec<RingTensor>> {
    let diffs: Vec<RingTensor> = js
        .iter()
        .map(|&j| {
            let t = (base.powi(j) * 2f64.powi(in_bits as i32)).round() as i64 as u64;
            p.add_constant(x, t.wrapping_neg())
        })
        .collect();
    let less = ltz_many(p, &diffs.iter().collect::<Vec<_>>())?;
    let client = p.is_client();
    Ok(less
        .into_iter()
        .map(|l| {
            l.map(|b| {
                if client {
                    1u64.wrapping_sub(b)
                } else {
                    b.wrapping_neg()
                }
            })
        })
        .collect())
}

/// sum_j bits_j * coef_j + constant, encoded at `bits` fractional bits (local).
fn linear(
    p: &Party,
    shape: &[usize],
    constant: f64,
    terms: &[(RingTensor, f64)],
    bits: u32,
) -> RingTensor {
    let enc = |v: f64| (v * 2f64.powi(bits as i32)).round() as i64 as u64;
    let mut acc = p.public(&RingTensor::filled(shape, enc(constant)));
    for (b, coef) in terms {
        acc = acc.add(&b.scale(enc(*coef))).expect("same shapes");
    }
    acc
}

fn check_range(lo: f64, hi: f64) -> Result<()> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Err(crate::mpc::error::MpcError::BadConfig(format!(
            "range [{lo}, {hi}] must satisfy 0 < lo < hi"
        )));
    }
    Ok(())
}

/// Fractional bits for the normalising scale: as many as keep x * s below 2^60.
fn scale_bits(in_bits: u32) -> u32 {
    60u32.saturating_sub(in_bits).min(44)
}

/// 1/x for x in [lo, hi], x at `in_bits` fractional bits.
pub fn reciprocal(p: &mut Party, x: &RingTensor, in_bits: u32, lo: f64, hi: f64) -> Result<Scaled> {
    check_range(lo, hi)?;
    p.labelled("reciprocal", |p| {
        let f = p.fp.frac_bits;
        let (jmin, jmax) = (lo.log2().floor() as i32, hi.log2().floor() as i32);
        let js: Vec<i32> = (jmin + 1..=jmax).collect();
        let bits = threshold_bits(p, x, in_bits, 2.0, &js)?;
        // s = 2^-(J+1) with J = jmin + number of thresholds passed.
        let terms: Vec<(RingTensor, f64)> = bits
            .into_iter()
            .zip(&js)
            .map(|(b, &j)| (b, -(2f64.powi(-(j + 1)))))
            .collect();
        let sb = scale_bits(in_bits);
        let s = linear(p, x.shape(), 2f64.powi(-(jmin + 1)), &terms, sb);
        let xn = mul_trunc(p, x, &s, in_bits + sb - f)?; // in [1/2, 1) at f bits
        let start = p.public(&RingTensor::filled(x.shape(), p.fp.constant(2.9142)));
        let mut y = start.sub(&xn.scale(2))?;
        let two = p.fp.constant(2.0);
        for _ in 0..p.approx.recip_nr_iters {
            let xy = fixed_mul(p, &xn, &y)?;
            let correction = p.add_constant(&xy.neg(), two);
            y = fixed_mul(p, &y, &correction)?;
        }
        // 1/x = y * s, kept at f + extra bits so that 1/hi still has f significant bits.
        let extra = ((jmax + 1).max(0) as u32).min(24);
        let s_out = linear(p, x.shape(), 2f64.powi(-(jmin + 1)), &terms, f + extra);
        let value = mul_trunc(p, &y, &s_out, f)?;
        Ok(Scaled {
            value,
            frac_bits: f + extra,
        })
    })
}

/// gain / sqrt(x) for x in [lo, hi], x at `in_bits` fractional bits.
pub fn rsqrt(
    p: &mut Party,
    x: &RingTensor,
    in_bits: u32,
    lo: f64,
    hi: f64,
    gain: f64,
) -> Result<Scaled> {
    check_range(lo, hi)?;
    p.labelled("rsqrt", |p| {
        let f = p.fp.frac_bits;
        let (jmin, jmax) = (
            (lo.log2() / 2.0).floor() as i32,
            (hi.log2() / 2.0).floor() as i32,
        );
        let js: Vec<i32> = (jmin + 1..=jmax).collect();
        let bits = threshold_bits(p, x, in_bits, 4.0, &js)?;
        // s4 = 4^-(J+1) brings x into [1/4, 1); s2 = gain * 2^-(J+1) undoes it on the root.
        let s4_terms: Vec<(RingTensor, f64)> = bits
            .iter()
            .zip(&js)
            .map(|(b, &j)| (b.clone(), -3.0 * 4f64.powi(-(j + 1))))
            .collect();
        let s2_terms: Vec<(RingTensor, f64)> = bits
            .into_iter()
            .zip(&js)
            .map(|(b, &j)| (b, -(2f64.powi(-(j + 1))) * gain))
            .collect();
        let sb = scale_bits(in_bits);
        let s4 = linear(p, x.shape(), 4f64.powi(-(jmin + 1)), &s4_terms, sb);
        let xn = mul_trunc(p, x, &s4, in_bits + sb - f)?; // in [1/4, 1) at f bits
        let start = p.public(&RingTensor::filled(x.shape(), p.fp.constant(2.13)));
        let mut y = start.sub(&truncate(p, &xn.scale(p.fp.constant(1.215)), f)?)?;
        let three = p.fp.constant(3.0);
        for _ in 0..p.approx.rsqrt_nr_iters {
            let y2 = fixed_mul(p, &y, &y)?;
            let xy2 = fixed_mul(p, &xn, &y2)?;
            let correction = p.add_constant(&xy2.neg(), three);
            y = mul_trunc(p, &y, &correction, f + 1)?; // the /2 rides on the truncation
        }
        let small_gain = if gain < 1.0 {
            (-gain.log2()).ceil() as u32
        } else {
            0
        };
        let extra = ((jmax + 1).max(0) as u32 + small_gain).min(24);
        let s2 = linear(
            p,
            x.shape(),
            2f64.powi(-(jmin + 1)) * gain,
            &s2_terms,
            f + extra,
        );
        let value = mul_trunc(p, &y, &s2, f)?;
        Ok(Scaled {
            value,
            frac_bits: f + extra,
        })
    })
}
