//! GPT-2's GeLU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as a piecewise polynomial.
//!
//! With u = x/4 and the identity GeLU(x) = x + GeLU(-x):
//!   x < -4: 0 | [-4, -2): L(u) | [-2, 2): x/2 + C(u^2) | [2, 4): x + L(-u) | x >= 4: x
//! L has degree 4 in u, C degree 4 in u^2; both were fitted (minimax by reweighted least squares)
//! to the tanh form: |error| <= 1e-4 on every piece, 7e-5 at the cut-offs.
//! Rounds (masked products truncate their inputs in their openings):
//! - round 1: four comparisons b_i = [x < t_i], t = (-4, -2, 2, 4), from one key and one opening of
//!   x + r ([`Round::ltz_thresholds`]), and x^2;
//! - round 2: 4u^3 = x u^2 and u^4;
//! - round 3: u^6 C[3] + u^8 C[4] = u^4 (C[3] u^2 + C[4] u^4), one product;
//! - round 4: each piece times its indicator, truncating the polynomial in the same opening:
//!   y = x [x >= 2] + L(-u) [2 <= x < 4] + (x/2 + C) [-2 <= x < 2] + L(u) [-4 <= x < -2],
//!   the indicators being differences of the b_i (exact 0/1 integers).
//!
//! A piece's polynomial may overflow far outside its interval, but it is multiplied by an exact
//! zero indicator there, so every x of the domain is handled. The domain, |x| < 2^(61 - 2f -
//! extra) (8,192 for a matmul's output at 2f bits, f = 16), bounds x below 2^(61 - f) in the ring,
//! so the comparisons' keys cover 62 - f bits rather than 63. And the pieces agree near their
//! cut-offs (using the right-hand piece up to 2^-8 left of a cut-off errs by at most 1.2e-4), so
//! the comparisons resolve x - t to 2^-8 only ([`Round::ltz_coarse`]), skipping x's lower
//! fractional bits: 46 - f - extra + 8 key levels (22 in the forward, where x has 2f bits; 38 on
//! f-bit inputs) instead of 46 (63 unbounded), one key for the four; GeLU's comparisons were most
//! of a layer's LAN compute. Cost: 4 rounds.
//!
//! [`gelu_at`] takes x at f + `extra` fractional bits (a matmul's output before its truncation):
//! its comparisons run at that scale, its first products truncate x in their openings and the
//! linear terms use x as it is, so the matmul's truncation costs no round of its own.

use super::compare::not;
use super::masked::Operand;
use super::round::Round;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Fractional bits of x - t the comparisons resolve: a cut-off is placed within 2^-8.
const CUT_BITS: u32 = 8;
/// Fractional bits of u^2 and of the higher powers in their products.
const SQUARE_BITS: u32 = 20;
const POWER_BITS: u32 = 22;
/// The polynomials are assembled at this many fractional bits, then truncated to f.
const POLY_BITS: u32 = 56;
/// Fractional bits of the centre's top factor C[3] u^2 + C[4] u^4 before its truncation (C[4] is
/// encoded at TAIL_BITS - 2 SQUARE_BITS = 12 bits, an error below 2^-13 u^8 < 5e-7).
const TAIL_BITS: u32 = 52;

/// L(u) = sum L[k] u^k on [-4, -2).
const SIDE: [f64; 5] = [
    -0.6931618631805718,
    -2.744224511791464,
    -4.074677001648516,
    -2.6844947637919434,
    -0.6608902591297533,
];
/// C(u^2) = sum C[k] u^(2k) on [-2, 2), added to x/2.
const CENTRE: [f64; 5] = [
    9.686354121349643e-05,
    6.36231237240022,
    -16.387509074735718,
    32.81680148751618,
    -31.927701446630646,
];

pub fn gelu(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    gelu_at(p, x, 0)
}

/// GeLU of x given at f + `extra` fractional bits (|x| below 2^(61 - 2f - extra)); the result
/// has f bits.
pub fn gelu_at(p: &mut Party, x: &RingTensor, extra: u32) -> Result<RingTensor> {
    p.labelled("gelu", |p| {
        let f = p.fp.frac_bits;
        let x_bits = f + extra;
        let thresholds: Vec<u64> = [-4.0, -2.0, 2.0, 4.0]
            .iter()
            .map(|&t| p.fp.constant(t) << extra)
            .collect();
        let x_f = Operand::truncated(x, extra);
        let mut round = Round::new();
        let x2 = round.square(p, x_f)?;
        // In the domain x - t lies within 2^(62 - f) in the ring: keys over 62 - f bits, less
        // the fractional bits of x beyond CUT_BITS.
        let skip = x_bits.saturating_sub(CUT_BITS);
        // One key and one opening of x + r for the four cut-offs.
        let below = round.ltz_thresholds(p, x, &thresholds, 62 - f, skip)?;
        let mut out = round.run(p)?;
        let x2 = out.take(x2); // u^2 at 2f + 4 bits (x = 4u)
        let bits: Vec<RingTensor> = below.into_iter().map(|b| out.take(b)).collect();
        let u2_bits = 2 * f + 4;

        let mut round = Round::new();
        let u2 = Operand::truncated(&x2, u2_bits - SQUARE_BITS);
        let four_u3 = round.mul(p, x_f, u2)?; // f + SQUARE_BITS
        let u4 = round.square(p, u2)?; // 2 SQUARE_BITS
        let mut out = round.run(p)?;
        let (four_u3, u4) = (out.take(four_u3), out.take(u4));

        // Each term at `to` bits: a power at b bits times its coefficient at `to` - b bits.
        let term_at = |t: &RingTensor, at: u32, c: f64, to: u32| {
            t.scale((c * 2f64.powi((to - at) as i32)).round() as i64 as u64)
        };
        let term = |t: &RingTensor, at: u32, c: f64| term_at(t, at, c, POLY_BITS);

        // The centre's top terms in one product: u^4 (C[3] u^2 + C[4] u^4), at most 10.2 in
        // magnitude on [-2, 2) inside its factor at TAIL_BITS (elsewhere multiplied by 0).
        let tail_factor = term_at(&x2, u2_bits, CENTRE[3], TAIL_BITS).add(&term_at(
            &u4,
            2 * SQUARE_BITS,
            CENTRE[4],
            TAIL_BITS,
        ))?;
        let mut round = Round::new();
        let tail = round.mul(
            p,
            Operand::truncated(&u4, 2 * SQUARE_BITS - POWER_BITS),
            Operand::truncated(&tail_factor, TAIL_BITS - POWER_BITS),
        )?;
        let tail = round.run(p)?.take(tail); // 2 POWER_BITS
        let constant = |c: f64| {
            p.public(&RingTensor::filled(
                x.shape(),
                (c * 2f64.powi(POLY_BITS as i32)).round() as i64 as u64,
            ))
        };
        let side = |sign: f64| -> Result<RingTensor> {
            constant(SIDE[0])
                .add(&term(x, x_bits, sign * SIDE[1] / 4.0))?
                .add(&term(&x2, u2_bits, SIDE[2]))?
                .add(&term(&four_u3, f + SQUARE_BITS, sign * SIDE[3] / 4.0))?
                .add(&term(&u4, 2 * SQUARE_BITS, SIDE[4]))
        };
        let (left, right) = (side(1.0)?, side(-1.0)?);
        let mut centre = constant(CENTRE[0]).add(&term(x, x_bits, 0.5))?;
        let powers = [
            (&x2, u2_bits, CENTRE[1]),
            (&u4, 2 * SQUARE_BITS, CENTRE[2]),
            (&tail, 2 * POWER_BITS, 1.0),
        ];
        for (power, at, c) in powers {
            centre = centre.add(&term(power, at, c))?;
        }

        // Indicators of the pieces, from b = ([x < -4], [x < -2], [x < 2], [x < 4]).
        let at_least_2 = not(p, &bits[2]);
        let upper = bits[3].sub(&bits[2])?;
        let middle = bits[2].sub(&bits[1])?;
        let lower = bits[1].sub(&bits[0])?;
        let poly = |t| Operand::truncated(t, POLY_BITS - f);
        let mut round = Round::new();
        let slots = [
            round.mul(p, x_f, Operand::plain(&at_least_2))?,
            round.mul(p, poly(&right), Operand::plain(&upper))?,
            round.mul(p, poly(&centre), Operand::plain(&middle))?,
            round.mul(p, poly(&left), Operand::plain(&lower))?,
        ];
        let mut out = round.run(p)?;
        let mut y = RingTensor::zeros(x.shape());
        for s in slots {
            y = y.add(&out.take(s))?;
        }
        Ok(y)
    })
}
