//! exp(x) for any x <= 0, as s^(2^n) with s = 1 + y + y^2/2 + y^3/6 + y^4/24, y = x / 2^n and
//! n = `exp_iters` squarings (CrypTen's limit method with a fourth-order start), set to 0 below
//! -2^(n+1).
//!
//! Bias: 2^n ln(s) = x - x^5 / (120 * 16^n) + ..., so the result is above e^x by at most
//! 5^5 e^-5 / (120 * 16^n) = 1.7e-7 at n = 5 (at x = -5). The start is positive and at most 1 on
//! [-2, 0] in y, so every square stays in [0, 1]; below -2^(n+1) (y < -2) it grows, so a comparison
//! (in the first round) gives a bit b and the last round multiplies by it, and a deselected value,
//! however wrong, times an exact 0 is 0. The clamp need not be exact: b compares x with -2^n at a
//! resolution of 2^n ([`Round::ltz_coarse`]), so b = 0 below -2^(n+1), b = 1 from -2^n, and either
//! between, where the start is still valid and e^x < e^-32 is far below an ulp. Its key covers
//! x's range above that resolution only: 62 - f - extra - n levels for any x (41 at f bits), and
//! bound + 1 - n for x known to lie above -2^bound ([`exp_within`]: 13 in softmax, whose inputs
//! lie above -2^17) instead of 63. Small positive x (up to 2) are in the domain too: softmax's
//! coarse maximum leaves the top entries up to 2 above it. Softmax's masked entries and the
//! wide rows of a low temperature need no clamp before.
//!
//! Rounds, with the masked products of [`super::round`] (each product truncates its inputs in
//! its own opening):
//! - round 1: y^2 and the comparison;
//! - round 2: y^3/6 + y^4/24 = (y^2/6)(y + y^2/4), one product (1/6 is the only inexact constant);
//! - rounds 3 to n + 2: the n squarings of s, each at B = f + n + 1 fractional bits;
//! - round n + 3: the last square truncated to f bits times b.
//!
//! Cost: n + 3 rounds (8 at n = 5), 8 bytes per element each way per opened operand.
//!
//! [`exp_at`] takes x at f + `extra` fractional bits (softmax over scores awaiting their
//! truncation): y is used linearly at 2B + 1 and 2B + 2 bits, which x reaches by a left shift when
//! f + extra <= 2B + 1, and the first square truncates it in its opening.

use super::compare::not;
use super::masked::Operand;
use super::round::Round;
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

pub fn exp(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    exp_at(p, x, 0)
}

/// exp of x given at f + `extra` fractional bits; the result has f bits.
pub fn exp_at(p: &mut Party, x: &RingTensor, extra: u32) -> Result<RingTensor> {
    // Any x of the fixed-point range: |x| below 2^61 in the ring.
    let bound = TRUNC_BOUND_BITS.saturating_sub(p.fp.frac_bits + extra);
    exp_within(p, x, extra, bound)
}

/// [`exp_at`] for x known to lie in (-2^`bound`, 2]: the clamp's key covers `bound` + 1 bits of
/// x beyond its fractional ones, less the n + f + extra that its resolution skips.
pub fn exp_within(p: &mut Party, x: &RingTensor, extra: u32, bound: u32) -> Result<RingTensor> {
    p.labelled("exp", |p| {
        let (n, f) = (p.approx.exp_iters, p.fp.frac_bits);
        // y = x / 2^n at B = f + n + 1 bits (one bit more than x carries, for the squarings);
        // the start is assembled at 2B + 2 bits, which must stay below 2^61.
        let b = f + n + 1;
        // e^(-2^(n+1)) must be below half an ulp for the clamp to be invisible.
        if n < 3 || 2 * b + 2 > 61 {
            return Err(MpcError::BadConfig(format!(
                "exp_iters = {n} must be in 3..={}",
                (59 - 2 * (f + 1)) / 2
            )));
        }
        let x_bits = f + extra;
        if x_bits + n > 2 * b + 1 {
            return Err(MpcError::BadConfig(format!(
                "exp of an input at {x_bits} fractional bits: at most {}",
                2 * b + 1 - n
            )));
        }
        // y = x / 2^n at `bits` fractional bits, for bits >= x_bits + n: x shifted, no truncation.
        let y_at = |bits: u32| x.scale(1 << (bits - n - x_bits));
        let mut round = Round::new();
        // y^2 at 2B: y at B bits is x shifted, or truncated by x_bits + n - B bits in the opening.
        let y2 = if x_bits + n > b {
            round.square(p, Operand::truncated(x, x_bits + n - b))?
        } else {
            let y = y_at(b);
            round.square(p, Operand::plain(&y))?
        };
        // The clamp compares x with -2^n to a resolution of 2^n: x < -2^(n+1) reads below, x
        // >= -2^n reads above, and between them either (where the start is still valid, and
        // e^-2^n is below an ulp). x + 2^n lies in (-2^(bound+1), 2^n + 2].
        let skip = x_bits + n;
        let key_bits = (bound + 1 + x_bits).min(crate::mpc::dcf::BITS as u32);
        if bound <= n || skip >= key_bits {
            return Err(MpcError::BadConfig(format!(
                "exp over (-2^{bound}, 2] at {x_bits} fractional bits with {n} squarings"
            )));
        }
        let shift = p.fp.constant(2f64.powi(n as i32)) << extra;
        let below = round.ltz_coarse(p, &p.add_constant(x, shift), key_bits, skip)?;
        let mut out = round.run(p)?;
        let (y2, keep) = (out.take(y2), not(p, &out.take(below)));

        // y^2/6 at 61 bits (at most 2/3 on the valid range) and y + y^2/4 at 2B + 2 bits.
        let sixth = (2f64.powi(61 - 2 * b as i32) / 6.0).round() as u64;
        let y2_sixth = y2.scale(sixth);
        let y_quarter = y_at(2 * b + 2).add(&y2)?;
        let mut round = Round::new();
        let cubic = round.mul(
            p,
            Operand::truncated(&y2_sixth, 61 - b),
            Operand::truncated(&y_quarter, b + 2),
        )?;
        let cubic = round.run(p)?.take(cubic); // y^3/6 + y^4/24 at 2B

        // s at 2B + 1 bits: 1 + y + y^2/2 + 2 * (y^3/6 + y^4/24 at 2B).
        let start = y_at(2 * b + 1).add(&y2)?.add(&cubic.scale(2))?;
        let mut s = p.add_constant(&start, 1u64 << (2 * b + 1));
        let mut bits = 2 * b + 1;
        for _ in 0..n {
            let mut round = Round::new();
            let sq = round.square(p, Operand::truncated(&s, bits - b))?;
            s = round.run(p)?.take(sq);
            bits = 2 * b;
        }
        let mut round = Round::new();
        let e = round.mul(p, Operand::truncated(&s, bits - f), Operand::plain(&keep))?;
        Ok(round.run(p)?.take(e))
    })
}
