//! SiLU, x / (1 + e^-x) (LLaMA's MLP activation), as a piecewise polynomial by GeLU's machinery
//! ([`super::gelu`]), and the gated product SiLU(gate) * up in the same 4 rounds.
//!
//! SiLU(x) = x + SiLU(-x), and SiLU(x) - x/2 = (x/2) tanh(x/2) is even. With u = x/4 and the
//! centred side variables V = (x + C)/8 (left) and W = (C - x)/8 (right), C = (A + T)/2:
//!   x < -T: 0 | [-T, -A): L(V) | [-A, A): x/2 + K(u^2) | [A, T): x + L(W) | x >= T: x,
//! A = 2.375, T = 12. L has degree 8 and K degree 4 in u^2, fitted minimax by
//! `scripts/fit_silu.py`: |error| <= 7.5e-5 on the sides, 5.9e-5 in the centre, T e^-T = 7.4e-5
//! beyond T. The side variable is centred on its interval so that L's coefficients stay near 1
//! (in powers of x/8 they reach a thousand and cancel, which 64-bit powers cannot carry). The right
//! side evaluates the same L on its own variable, so each side has its chain of powers.
//! Rounds (masked products truncate their inputs in their openings):
//! - round 1: four comparisons b_i = [x < t_i], t = (-T, -A, A, T), and x^2, v^2, w^2;
//! - round 2: u^4, V^3, V^4, W^3, W^4 (and, for the gated product, each indicator times up);
//! - round 3: the high parts u^4 (K3 u^2 + K4 u^4) and V^4 (L5 V + L6 V^2 + L7 V^3 + L8 V^4),
//!   the same for W: one product each;
//! - round 4: each piece times its indicator (differences of the b_i, exact 0/1 integers),
//!   truncating the polynomial in the same opening:
//!   y = x [x >= A] + L(W) [A <= x < T] + (x/2 + K) [-A <= x < A] + L(V) [-T <= x < -A].
//!
//! The gated product SiLU(g) up multiplies up by each indicator in round 2 instead, and round 4
//! multiplies each piece by its (indicator x up), truncating itself in Z_2^128
//! ([`super::truncating_product`]) so the result comes back at f bits for the down projection.
//!
//! A piece's polynomial may overflow far outside its interval, where it is multiplied by an exact
//! zero. Domain as GeLU's: |x| < 2^(61 - 2f - extra) (8,192 for a matmul output at 2f bits), so
//! the comparisons' keys cover 62 - f bits and resolve x - t to 2^-8 ([`Round::ltz_coarse`]); a
//! value within 2^-8 left of a cut-off may take the piece on its right, so each fit reaches 2^-8
//! past its interval. For the gated product also |up| < 2^(61 - f - extra).
//! Cost: 4 rounds.

use super::compare::not;
use super::masked::Operand;
use super::round::{Round, Slot};
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// The cut-offs and the side variables' centre.
const A: f64 = 2.375;
const T: f64 = 12.0;
const C: f64 = 7.1875;
/// Fractional bits of x - t the comparisons resolve: a cut-off is placed within 2^-8.
const CUT_BITS: u32 = 8;
/// Fractional bits of the squares in round 2's products, and of round 3's operands.
const SQUARE_BITS: u32 = 20;
const HIGH_BITS: u32 = 24;
/// The polynomials are assembled at this many fractional bits (|piece| < 32), then truncated.
const POLY_BITS: u32 = 56;
/// Fractional bits of a piece entering the gated product, and of up beyond f in it (up rounded to
/// f bits would cost |SiLU(gate)| ulps).
const GATED_BITS: u32 = 24;
const UP_BITS: u32 = 8;

// From scripts/fit_silu.py: A = 2.375, T = 12.0, C = 7.1875.
/// L(V) = sum L[k] V^k on [-T, -A), V = (x + C) / 8.
const SIDE: [f64; 9] = [
    -0.005395181657854859,
    -0.038348995574537297,
    -0.12890032475184662,
    -0.23221830518127135,
    -0.3305726184003488,
    -0.7668603614942878,
    -0.760341891051333,
    1.1556503188585014,
    1.7652250338948878,
];
/// K(u^2) = sum K[k] u^(2k) on [-A, A), u = x / 4, added to x/2.
const CENTRE: [f64; 5] = [
    5.907230969970366e-05,
    3.990777696886746,
    -5.099711417972487,
    6.352437852386043,
    -4.282164222992091,
];

pub fn silu(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    silu_at(p, x, 0)
}

/// SiLU of x given at f + `extra` fractional bits; the result has f bits.
pub fn silu_at(p: &mut Party, x: &RingTensor, extra: u32) -> Result<RingTensor> {
    p.labelled("silu", |p| pieces(p, x, extra, None))
}

/// SiLU(gate) * up, elementwise, for both given at f + `extra` fractional bits; the result has f
/// bits. The same 4 rounds as SiLU alone.
pub fn silu_mul_at(
    p: &mut Party,
    gate: &RingTensor,
    up: &RingTensor,
    extra: u32,
) -> Result<RingTensor> {
    if gate.shape() != up.shape() {
        return Err(crate::mpc::error::MpcError::ShapeMismatch {
            op: "silu_mul",
            left: gate.shape().to_vec(),
            right: up.shape().to_vec(),
        });
    }
    p.labelled("silu_mul", |p| pieces(p, gate, extra, Some(up)))
}

/// One side's powers: V (the share at `v_bits`), V^2, V^3, V^4 and their bits.
struct Side {
    powers: [(RingTensor, u32); 4],
}

impl Side {
    /// L(V) at POLY_BITS, given the high part V^4 (L5 V + ... + L8 V^4) at 2 HIGH_BITS.
    fn poly(&self, p: &Party, high: &RingTensor) -> Result<RingTensor> {
        let mut y = constant(p, high.shape(), SIDE[0]).add(&term(high, 2 * HIGH_BITS, 1.0))?;
        for ((power, at), &c) in self.powers.iter().zip(&SIDE[1..5]) {
            y = y.add(&term(power, *at, c))?;
        }
        Ok(y)
    }

    /// L5 V + L6 V^2 + L7 V^3 + L8 V^4 at POLY_BITS.
    fn high_factor(&self) -> Result<RingTensor> {
        let mut y = RingTensor::zeros(self.powers[0].0.shape());
        for ((power, at), &c) in self.powers.iter().zip(&SIDE[5..]) {
            y = y.add(&term(power, *at, c))?;
        }
        Ok(y)
    }
}

/// A power at `at` fractional bits times c, at POLY_BITS.
fn term(t: &RingTensor, at: u32, c: f64) -> RingTensor {
    t.scale((c * 2f64.powi(POLY_BITS as i32 - at as i32)).round() as i64 as u64)
}

fn constant(p: &Party, shape: &[usize], c: f64) -> RingTensor {
    p.public(&RingTensor::filled(
        shape,
        (c * 2f64.powi(POLY_BITS as i32)).round() as i64 as u64,
    ))
}

/// SiLU(x), or SiLU(x) * up when `up` is given, at f bits.
fn pieces(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    up: Option<&RingTensor>,
) -> Result<RingTensor> {
    let f = p.fp.frac_bits;
    let x_bits = f + extra;
    let at_x = |c: f64| p.fp.constant(c) << extra;
    let thresholds: Vec<RingTensor> = [-T, -A, A, T]
        .iter()
        .map(|&t| p.add_constant(x, at_x(t).wrapping_neg()))
        .collect();
    let v = p.add_constant(x, at_x(C));
    let w = p.add_constant(&x.neg(), at_x(C));
    let (x_f, v_f, w_f) = (
        Operand::truncated(x, extra),
        Operand::truncated(&v, extra),
        Operand::truncated(&w, extra),
    );

    let mut round = Round::new();
    let x2 = round.square(p, x_f)?;
    let v2 = round.square(p, v_f)?;
    let w2 = round.square(p, w_f)?;
    // In the domain x - t lies within 2^(62 - f) in the ring: keys over 62 - f bits, less the
    // fractional bits of x beyond CUT_BITS.
    let skip = x_bits.saturating_sub(CUT_BITS);
    let below = thresholds
        .iter()
        .map(|t| round.ltz_coarse(p, t, 62 - f, skip))
        .collect::<Result<Vec<_>>>()?;
    let mut out = round.run(p)?;
    // x^2 at 2f bits is u^2 at 2f + 4 (x = 4u); v^2 is V^2 at 2f + 6 (v = 8V).
    let u2_bits = 2 * f + 4;
    let side2_bits = 2 * f + 6;
    let (x2, v2, w2) = (out.take(x2), out.take(v2), out.take(w2));
    let bits: Vec<RingTensor> = below.into_iter().map(|b| out.take(b)).collect();

    // Indicators of the pieces, from b = ([x < -T], [x < -A], [x < A], [x < T]): x's own term,
    // the right side, the centre, the left side.
    let indicators = [
        not(p, &bits[2]),
        bits[3].sub(&bits[2])?,
        bits[2].sub(&bits[1])?,
        bits[1].sub(&bits[0])?,
    ];

    let mut round = Round::new();
    let u2_op = Operand::truncated(&x2, u2_bits - SQUARE_BITS);
    let u4 = round.square(p, u2_op)?; // 2 SQUARE_BITS
    let mut side_slots = Vec::new();
    for (z, z2) in [(&v_f, &v2), (&w_f, &w2)] {
        let z2_op = Operand::truncated(z2, side2_bits - SQUARE_BITS);
        let cube = round.mul(p, *z, z2_op)?; // f + 3 + SQUARE_BITS
        let fourth = round.square(p, z2_op)?; // 2 SQUARE_BITS
        side_slots.push((cube, fourth));
    }
    let up_kept = UP_BITS.min(extra);
    let gated: Option<Vec<Slot>> = up
        .map(|up| {
            indicators
                .iter()
                .map(|ind| {
                    round.mul(
                        p,
                        Operand::plain(ind),
                        Operand::truncated(up, extra - up_kept),
                    )
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let mut out = round.run(p)?;
    let u4 = out.take(u4);
    let sides: Vec<Side> = [(&v, &v2), (&w, &w2)]
        .into_iter()
        .zip(side_slots)
        .map(|((z, z2), (cube, fourth))| Side {
            powers: [
                (z.clone(), x_bits + 3),
                (z2.clone(), side2_bits),
                (out.take(cube), f + 3 + SQUARE_BITS),
                (out.take(fourth), 2 * SQUARE_BITS),
            ],
        })
        .collect();
    // Each indicator times up, at f + up_kept bits.
    let gated: Option<Vec<RingTensor>> =
        gated.map(|s| s.into_iter().map(|s| out.take(s)).collect());

    let high_op = |t| Operand::truncated(t, POLY_BITS - HIGH_BITS);
    let fourth_op = |t| Operand::truncated(t, 2 * SQUARE_BITS - HIGH_BITS);
    let centre_factor =
        term(&x2, u2_bits, CENTRE[3]).add(&term(&u4, 2 * SQUARE_BITS, CENTRE[4]))?;
    let side_factors = sides
        .iter()
        .map(Side::high_factor)
        .collect::<Result<Vec<_>>>()?;
    let mut round = Round::new();
    let centre_high = round.mul(p, fourth_op(&u4), high_op(&centre_factor))?;
    let side_high = sides
        .iter()
        .zip(&side_factors)
        .map(|(s, factor)| round.mul(p, fourth_op(&s.powers[3].0), high_op(factor)))
        .collect::<Result<Vec<_>>>()?;
    let mut out = round.run(p)?;
    let centre_high = out.take(centre_high); // 2 HIGH_BITS
    let side_high: Vec<RingTensor> = side_high.into_iter().map(|s| out.take(s)).collect();

    let left = sides[0].poly(p, &side_high[0])?;
    let right = sides[1].poly(p, &side_high[1])?;
    let centre = constant(p, x.shape(), CENTRE[0])
        .add(&term(x, x_bits, 0.5))?
        .add(&term(&x2, u2_bits, CENTRE[1]))?
        .add(&term(&u4, 2 * SQUARE_BITS, CENTRE[2]))?
        .add(&term(&centre_high, 2 * HIGH_BITS, 1.0))?;
    let polys = [&right, &centre, &left];

    let mut round = Round::new();
    let slots = match &gated {
        None => {
            let poly = |t| Operand::truncated(t, POLY_BITS - f);
            let mut slots = vec![round.mul(p, x_f, Operand::plain(&indicators[0]))?];
            for (t, ind) in polys.iter().zip(&indicators[1..]) {
                slots.push(round.mul(p, poly(t), Operand::plain(ind))?);
            }
            slots
        }
        Some(gated) => {
            let poly = |t| Operand::truncated(t, POLY_BITS - GATED_BITS);
            let mut slots =
                vec![round.mul_truncating(p, x_f, Operand::plain(&gated[0]), f + up_kept)?];
            for (t, g) in polys.iter().zip(&gated[1..]) {
                slots.push(round.mul_truncating(
                    p,
                    poly(t),
                    Operand::plain(g),
                    GATED_BITS + up_kept,
                )?);
            }
            slots
        }
    };
    let mut out = round.run(p)?;
    let mut y = RingTensor::zeros(x.shape());
    for s in slots {
        y = y.add(&out.take(s))?;
    }
    Ok(y)
}
