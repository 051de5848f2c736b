//! LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * gamma + beta, in 5 rounds.
//!
//! No division by d and no mean truncation: with 2^k >= d and a = d / 2^k in (1/2, 1],
//!   D = (d x - sum(x)) / 2^k = a (x - mean),   Q = sum(D^2) + a^2 d eps = a^2 d (var + eps),
//!   out = D gamma sqrt(d) / sqrt(Q) + beta,
//! and the factor a cancels. 1/sqrt(Q) is the grid-and-series inverse square root of
//! [`super::reciprocal`] with the row's coefficients multiplied into D gamma directly, so the
//! per-row result is never formed:
//!   out = (D gamma) c1 - ((D gamma) c2) xn + ((D gamma) c3) xn^2 + beta.
//! Rounds (masked products truncate their inputs in their openings):
//! - round 1: D^2 and D gamma (D = d x - sum(x) truncated by k in the opening);
//! - round 2: Q on a grid of 8 points an octave (one comparison key per row for all the points);
//! - round 3: xn = Q s, and D gamma times c1, c2, c3;
//! - round 4: (D gamma c2) xn and xn^2;
//! - round 5: (D gamma c3) xn^2 truncated to f bits in Z_2^128 ([`super::truncating_product`], xn^2 opened once
//!   a row), and the other two terms truncated to f bits in the same opening.
//!
//! Domain: every row whose Q fits the fixed-point range, Q < 2^(61 - 2f) (for f = 16 and d = 768,
//! any variance up to 1.2e6), with |D| < 2^(30 - f) per element and outputs below 32 in magnitude;
//! the grid covers all of it, so no input inside the range fails silently.
//! Cost: 5 rounds (this engine before: 30; its comparisons are per row, so they cost few bytes).
//!
//! [`layernorm_at`] takes x at f + `extra` fractional bits (a residual sum whose last term is a
//! matmul's output before its truncation): D is truncated by k + extra in its opening, and x
//! itself, truncated to f bits for the residual stream, shares round 1. Then d |x| 2^(f + extra)
//! must stay below 2^61.

use super::masked::Operand;
use super::reciprocal::{normalise, rsqrt_coefficients, Grid};
use super::round::Round;
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Grid points per octave: the series' error 5/16 e^3 with e = (2^(1/8) - 1) / (2^(1/8) + 1) is
/// 2.5e-5 relative, below an ulp of outputs up to 2; half the comparisons of 1/sqrt's grid, which
/// matters because LayerNorm's grid spans the whole fixed-point range (37 octaves).
pub(crate) const GRID: u32 = 8;
/// Fractional bits of D gamma in its products, and of the series' factors.
const G_BITS: u32 = 20;
const FACTOR_BITS: u32 = 24;

pub fn layernorm(
    p: &mut Party,
    x: &RingTensor,
    gamma: &RingTensor,
    beta: &RingTensor,
    eps: f64,
) -> Result<RingTensor> {
    Ok(layernorm_at(p, x, 0, gamma, beta, eps)?.0)
}

/// LayerNorm of x given at f + `extra` fractional bits: (the result at f bits, x truncated to f
/// bits), the second from round 1 (x itself when `extra` is 0).
pub fn layernorm_at(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    gamma: &RingTensor,
    beta: &RingTensor,
    eps: f64,
) -> Result<(RingTensor, RingTensor)> {
    p.labelled("layernorm", |p| {
        let d = x.last_dim();
        if gamma.len() != d || beta.len() != d || d == 0 {
            return Err(MpcError::ShapeMismatch {
                op: "layernorm",
                left: x.shape().to_vec(),
                right: gamma.shape().to_vec(),
            });
        }
        let f = p.fp.frac_bits;
        let k = d.next_power_of_two().trailing_zeros();
        let a = d as f64 / 2f64.powi(k as i32);
        let rows = x.len() / d;
        let spread = x.scale(d as u64).sub(&x.sum_last().expand_last(d))?;
        let gamma_rows = gamma
            .clone()
            .reshape(&[1, d])?
            .expand_rows(rows)?
            .reshape(x.shape())?;

        let mut round = Round::new();
        let centred = Operand::truncated(&spread, k + extra);
        let squares = round.square(p, centred)?;
        let scaled = round.mul(p, centred, Operand::plain(&gamma_rows))?;
        let input = if extra > 0 {
            Some(round.truncate(p, x, extra)?)
        } else {
            None
        };
        let mut out = round.run(p)?;
        let (squares, scaled) = (out.take(squares), out.take(scaled)); // both at 2f bits
        let input = input.map_or_else(|| x.clone(), |slot| out.take(slot));

        let floor = a * a * d as f64 * eps.max(1e-12);
        let q = p.add_constant(
            &squares.sum_last(),
            (floor * 2f64.powi(2 * f as i32)).round() as u64,
        );
        let top = 2f64.powi((TRUNC_BOUND_BITS - 2 * f) as i32);
        let grid = Grid::measure(p, &q, 2 * f, floor, top, GRID)?;

        // Coefficients at e bits so that every product lands at G_BITS + e = 2 FACTOR_BITS.
        let e = 2 * FACTOR_BITS - G_BITS;
        let (c1, c2, c3) = rsqrt_coefficients(&grid, (d as f64).sqrt());
        let coef = |c: &dyn Fn(i64) -> f64| grid.piecewise(p, c, e).expand_last(d);
        let (c1, c2, c3) = (coef(&*c1), coef(&*c2), coef(&*c3));
        let g = Operand::truncated(&scaled, 2 * f - G_BITS);
        let mut round = Round::new();
        let (xn, xn_bits) = normalise(&mut round, p, &grid, &q, 2 * f, 2)?;
        let first = round.mul(p, g, Operand::plain(&c1))?;
        let second = round.mul(p, g, Operand::plain(&c2))?;
        let third = round.mul(p, g, Operand::plain(&c3))?;
        let mut out = round.run(p)?;
        let (xn, first, second, third) = (
            out.take(xn),
            out.take(first),
            out.take(second),
            out.take(third),
        );

        let xn_op = Operand::truncated(&xn, xn_bits - FACTOR_BITS);
        let xn_rows = xn.expand_last(d);
        let mut round = Round::new();
        let second = round.mul(
            p,
            Operand::truncated(&second, FACTOR_BITS),
            Operand::truncated(&xn_rows, xn_bits - FACTOR_BITS),
        )?;
        let xn2 = round.square(p, xn_op)?;
        let mut out = round.run(p)?;
        let (second, xn2) = (out.take(second), out.take(xn2));

        // The last product truncates itself to f bits (in Z_2^128) while the first two terms are
        // truncated in the same opening.
        let mut round = Round::new();
        let third = round.mul_truncating_rows(
            p,
            Operand::truncated(&third, FACTOR_BITS),
            Operand::truncated(&xn2, FACTOR_BITS),
            2 * FACTOR_BITS - f,
        )?;
        let rest = round.truncate(p, &first.sub(&second)?, 2 * FACTOR_BITS - f)?;
        let mut out = round.run(p)?;
        let normed = out.take(rest).add(&out.take(third))?;
        Ok((normed.add_row(beta)?, input))
    })
}
