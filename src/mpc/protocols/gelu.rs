//! GPT-2's GeLU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as a piecewise polynomial.
//!
//! With u = x/4 and the identity GeLU(x) = x + GeLU(-x):
//!   x < -4: 0 | [-4, -2): L(u) | [-2, 2): x/2 + C(u^2) | [2, 4): x + L(-u) | x >= 4: x
//! L has degree 4 in u, C degree 4 in u^2; both were fitted (minimax by reweighted least squares)
//! to the tanh form: |error| <= 1e-4 on every piece, 7e-5 at the cut-offs. Four comparisons run as
//! one batch (1 round); powers u^2..u^8 take three product levels (6 rounds); the polynomials are
//! truncated together (1 round) and one round of bit products picks the piece:
//!   y = x + b4 (R - x) + b3 (C - R) + b2 (L - C) + b1 (0 - L),  b_i = [x < t_i], t = (-4, -2, 2, 4).
//! A piece's polynomial may overflow far outside its interval, but a deselected value is multiplied
//! by an exact zero bit, so every representable x is handled. Cost: 9 rounds.

use super::{compare::ltz_many, mul_many, mul_trunc, select::select_many, truncate_many};
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Extra fractional bits of the powers of u.
const POWER_EXTRA_BITS: u32 = 10;

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
    p.labelled("gelu", |p| {
        let f = p.fp.frac_bits;
        let thresholds: Vec<RingTensor> = [-4.0, -2.0, 2.0, 4.0]
            .iter()
            .map(|&t| p.add_constant(x, p.fp.constant(t).wrapping_neg()))
            .collect();
        let bits = ltz_many(p, &thresholds.iter().collect::<Vec<_>>())?;

        // Powers at P = f + 10 bits (the large coefficients would otherwise multiply the powers'
        // rounding): u^2, 4u^3 (= x u^2), u^4, u^6, u^8. x = 4u and 4u^3 carry their factor of four in
        // their coefficients, which saves a truncation with its own shift.
        let pb = f + POWER_EXTRA_BITS;
        let u2 = mul_trunc(p, x, x, 2 * f + 4 - pb)?;
        let level2 = mul_many(p, &[(x, &u2), (&u2, &u2)])?;
        // x u^2 sits at f + P bits; lifted to 2P it shares one truncation with u^4.
        let lifted = level2[0].scale(1 << (pb - f));
        let t = truncate_many(p, &[&lifted, &level2[1]], pb)?;
        let (four_u3, u4) = (t[0].clone(), t[1].clone());
        let level3 = mul_many(p, &[(&u2, &u4), (&u4, &u4)])?;
        let t = truncate_many(p, &[&level3[0], &level3[1]], pb)?;
        let (u6, u8) = (&t[0], &t[1]);

        // Polynomials at f + P bits: coefficients at f bits times powers at P bits (x at f bits gets
        // its coefficient at P bits), truncated together by P.
        let enc = |c: f64| p.fp.constant(c);
        let enc_p = |c: f64| (c * 2f64.powi(pb as i32)).round() as i64 as u64;
        let client = p.is_client();
        let constant = |c: f64| -> RingTensor {
            let v = (c * 2f64.powi((f + pb) as i32)).round() as i64 as u64;
            if client {
                RingTensor::filled(x.shape(), v)
            } else {
                RingTensor::zeros(x.shape())
            }
        };
        let side = |sign: f64| -> Result<RingTensor> {
            let mut acc = constant(SIDE[0]);
            acc = acc.add(&x.scale(enc_p(sign * SIDE[1] / 4.0)))?;
            acc = acc.add(&u2.scale(enc(SIDE[2])))?;
            acc = acc.add(&four_u3.scale(enc(sign * SIDE[3] / 4.0)))?;
            acc.add(&u4.scale(enc(SIDE[4])))
        };
        let left = side(1.0)?;
        let right_poly = side(-1.0)?;
        let mut centre = constant(CENTRE[0]).add(&x.scale(enc_p(0.5)))?;
        for (power, &c) in [&u2, &u4, u6, u8].into_iter().zip(&CENTRE[1..]) {
            centre = centre.add(&power.scale(enc(c)))?;
        }
        let polys = truncate_many(p, &[&left, &right_poly, &centre], pb)?;
        let (left, centre) = (&polys[0], &polys[2]);
        let right = polys[1].add(x)?;
        let zero = RingTensor::zeros(x.shape());
        // y = x + b4 (R - x) + b3 (C - R) + b2 (L - C) + b1 (0 - L)
        let picks = select_many(
            p,
            &[
                (&bits[3], &right, x),
                (&bits[2], centre, &right),
                (&bits[1], left, centre),
                (&bits[0], &zero, left),
            ],
        )?;
        let mut y = x.clone();
        for (pick, base) in picks.iter().zip([x, &right, centre, left]) {
            y = y.add(&pick.sub(base)?)?;
        }
        Ok(y)
    })
}
