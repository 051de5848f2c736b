//! LayerNorm and the product that follows it, in LayerNorm's own 5 rounds: the product's opening
//! and its truncation ride in rounds the norm runs anyway.
//!
//! The norm's affine part moves into the weight, in plaintext, by its owner: with the gain folded
//! in (W_g = diag(gamma) W) and the shift into the bias (beta W + b),
//!   LayerNorm(x) W + b = D W_g r + (beta W + b),   r = sqrt(d) / sqrt(Q),
//! with D = a (x - mean) and Q = a^2 d (var + eps) as in [`super::layernorm`]. This protocol forms
//! D W_g r; the caller adds the bias. On the grid interval k that holds Q, [`super::layernorm`]'s
//! series r = c1 - c2 xn + c3 xn^2 (xn = Q s^2, s = 2^-(J+1)) is rewritten by completing the square:
//!   r = s ((g Q - h)^2 + K),   g = sqrt(c3 / s) s^2,   h = sqrt(c3 / s) c2 / (2 c3),
//!   K = (c1 - c2^2 / (4 c3)) / s,
//! so one product (g Q) and one square give the bracket, and the power of two s goes into D:
//! - round 1: Q's squares (D truncated in the opening to f + 8 bits, each square truncating itself
//!   to 2f), and the residual stream truncated to f;
//! - round 2: Q on the grid (8 points an octave);
//! - round 3: u = g Q - h and Ds = D s, both truncating in Z_2^128 ([`super::truncating_product`]);
//! - round 4: K + u^2, and the opening of Ds - A for the product Ds W_g by the prepared weight;
//! - round 5: (Ds W_g)(K + u^2), truncating to the caller's fractional bits in the same round.
//!
//! The square completes with positive terms (u^2 carries about a sixth of r), so no precision is
//! lost to cancellation; g spans Q's 37 octaves, so its encoding is sized from the grid and a
//! range whose g cannot keep 2^-16 relative precision is refused (eps below about 1e-8 at d = 768).
//! Against LayerNorm then a product by a prepared weight (5 + 2 rounds, or 5 + 1 when the next
//! opening truncates), this saves 2 (or 1) rounds. Each way it opens 3 d + n words a row (d for
//! the squares, for D and for the product's Ds - A, n for the product; s, g Q and the bracket are
//! one word a row, [`super::round::Round::mul_truncating_rows`]), plus d for the residual stream
//! when it arrives at 2f bits; LayerNorm alone opened about 14 d.
//!
//! RMSNorm (LLaMA's, x / sqrt(mean(x^2) + eps), [`NormKind::Rms`]) is the same protocol with
//! D = a x instead of a (x - mean): then Q = a^2 d (mean(x^2) + eps) and D r = x / sqrt(mean(x^2)
//! + eps), with the same grid, series and rounds.
//!
//! Domain: as [`super::layernorm`] (Q below 2^(61 - 2f), d |x| 2^(f + extra) below 2^61), and
//! |D s W_g| below 2^(61 - 2f) for the product (any real weight: |D s| <= 1 per element).

use super::beaver::{stage_matmul_weight, PreparedWeight};
use super::layernorm::GRID;
use super::masked::Operand;
use super::reciprocal::{rsqrt_coefficients, Grid};
use super::round::Round;
use super::truncating_product::WideMix;
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Fractional bits of Ds (|Ds| <= 1), so Ds W_g is at NORMED_BITS + f.
const NORMED_BITS: u32 = 28;
/// Fractional bits of u (|u| about 2 to 4), so K + u^2 is at 2 ROOT_BITS.
const ROOT_BITS: u32 = 24;
/// Fractional bits of the last product's operands after their truncation in its opening.
const PRODUCT_BITS: u32 = 32;
const BRACKET_BITS: u32 = 24;
/// Fractional bits of D beyond f in its square (|D| below 2^(45 - SQUARE_BITS) in the domain).
const SQUARE_BITS: u32 = 8;
/// Relative precision g must keep at its smallest.
const SLOPE_PRECISION_BITS: i32 = 16;

/// The per-interval factors of r = s ((g Q - h)^2 + K), and their encodings' fractional bits.
struct Plan {
    slope_bits: u32,
    scale_bits: u32,
}

/// (s, g, h, K) on interval k of `grid`.
fn factors(grid: &Grid, d: usize) -> impl Fn(i64) -> [f64; 4] + '_ {
    let (c1, c2, c3) = rsqrt_coefficients(grid, (d as f64).sqrt());
    move |k| {
        let s = 2f64.powi(-(grid.octave(k, 2) as i32 + 1));
        let (c1, c2, c3) = (c1(k), c2(k), c3(k));
        let root = (c3 / s).sqrt();
        [
            s,
            root * s * s,
            root * c2 / (2.0 * c3),
            (c1 - c2 * c2 / (4.0 * c3)) / s,
        ]
    }
}

/// Sizes the encodings of s (exact powers of two) and g over every interval of the grid on
/// [floor, top], or refuses a range too wide for g's fixed-point encoding.
fn plan(grid: &Grid, d: usize) -> Result<Plan> {
    let factor = factors(grid, d);
    let range = |i: usize| {
        grid.intervals()
            .map(|k| factor(k)[i])
            .fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    // The largest encoding stays below 2^60 (a masked operand must be below 2^61).
    let bits_for = |hi: f64| (TRUNC_BOUND_BITS as i32 - 1 - hi.log2().ceil() as i32).max(0);
    let ((s_lo, s_hi), (g_lo, g_hi)) = (range(0), range(1));
    let (scale_bits, slope_bits) = (bits_for(s_hi), bits_for(g_hi));
    if s_lo.log2() + (scale_bits as f64) < 0.0
        || g_lo.log2() + (slope_bits as f64) < SLOPE_PRECISION_BITS as f64
    {
        return Err(MpcError::BadConfig(format!(
            "LayerNorm with the next product: variances spanning 2^{:.0} to 2^{:.0} (eps too small \
             for d = {d}) do not fit one fixed-point encoding; use LayerNorm and the product apart",
            g_lo.log2(),
            g_hi.log2()
        )));
    }
    Ok(Plan {
        slope_bits: slope_bits as u32,
        scale_bits: scale_bits as u32,
    })
}

/// Q's range: the floor a^2 d eps up to the fixed-point bound.
fn q_range(d: usize, f: u32, eps: f64) -> (f64, f64) {
    let k = d.next_power_of_two().trailing_zeros();
    let a = d as f64 / 2f64.powi(k as i32);
    let floor = a * a * d as f64 * eps.max(1e-12);
    (floor, 2f64.powi((TRUNC_BOUND_BITS - 2 * f) as i32))
}

/// Whether rows of width `d` with this `eps` can take the fused path (the check
/// [`layernorm_matmul_at`] makes before its first round).
pub fn check_layernorm_matmul(d: usize, frac_bits: u32, eps: f64) -> Result<()> {
    let (floor, top) = q_range(d, frac_bits, eps);
    plan(&Grid::plan(floor, top, GRID)?, d).map(|_| ())
}

/// Which normalisation precedes the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// LayerNorm: (x - mean) / sqrt(var + eps).
    Centred,
    /// RMSNorm: x / sqrt(mean(x^2) + eps).
    Rms,
}

/// (x - mean) / sqrt(var + eps) times the prepared weight `w` (gain folded in by its owner), at
/// `out_bits` fractional bits, for x at f + `extra` bits; also x truncated to f bits (x itself
/// when `extra` is 0), as [`super::layernorm::layernorm_at`] returns it.
pub fn layernorm_matmul_at(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    w: &PreparedWeight,
    out_bits: u32,
    eps: f64,
) -> Result<(RingTensor, RingTensor)> {
    norm_matmul_at(p, x, extra, w, out_bits, eps, NormKind::Centred, None)
}

/// [`layernorm_matmul_at`] for either normalisation: RMSNorm(x) W (gain folded in) when `kind` is
/// [`NormKind::Rms`]. `mix`: a public linear map on the product's rows and its factors'
/// fractional bits (rotary embeddings, [`super::rotary::Rotary::mix`]), applied before the last
/// truncation, which also drops those bits: no round of its own.
#[allow(clippy::too_many_arguments)]
pub fn norm_matmul_at(
    p: &mut Party,
    x: &RingTensor,
    extra: u32,
    w: &PreparedWeight,
    out_bits: u32,
    eps: f64,
    kind: NormKind,
    mix: Option<(WideMix, u32)>,
) -> Result<(RingTensor, RingTensor)> {
    let label = match kind {
        NormKind::Centred => "layernorm_matmul",
        NormKind::Rms => "rmsnorm_matmul",
    };
    p.labelled(label, |p| {
        let d = x.last_dim();
        if d == 0 || w.shape()[0] != d {
            return Err(MpcError::ShapeMismatch {
                op: "layernorm_matmul",
                left: x.shape().to_vec(),
                right: w.shape().to_vec(),
            });
        }
        let f = p.fp.frac_bits;
        if !(1..PRODUCT_BITS + BRACKET_BITS).contains(&out_bits) {
            return Err(MpcError::BadConfig(format!(
                "LayerNorm with the next product: {out_bits} output fractional bits (1..{})",
                PRODUCT_BITS + BRACKET_BITS
            )));
        }
        let k = d.next_power_of_two().trailing_zeros();
        let (floor, top) = q_range(d, f, eps);
        let plan = plan(&Grid::plan(floor, top, GRID)?, d)?;
        // d x - sum(x) = 2^k a (x - mean), or d x = 2^k a x for RMSNorm.
        let spread = match kind {
            NormKind::Centred => x.scale(d as u64).sub(&x.sum_last().expand_last(d))?,
            NormKind::Rms => x.scale(d as u64),
        };

        let mut round = Round::new();
        // D keeps SQUARE_BITS more bits into its square, which truncates itself back to 2f: D
        // rounded to f bits would cost a row of variance 1e-3 about 1e-4 of its Q.
        let kept = SQUARE_BITS.min(k + extra);
        let centred = Operand::truncated(&spread, k + extra - kept);
        let squares = if kept > 0 {
            round.square_truncating(p, centred, 2 * kept)?
        } else {
            round.square(p, centred)?
        };
        let input = if extra > 0 {
            Some(round.truncate(p, x, extra)?)
        } else {
            None
        };
        let mut out = round.run(p)?;
        let squares = out.take(squares); // at 2f bits
        let input = input.map_or_else(|| x.clone(), |slot| out.take(slot));
        let q = p.add_constant(
            &squares.sum_last(),
            (floor * 2f64.powi(2 * f as i32)).round() as u64,
        );

        let grid = Grid::measure(p, &q, 2 * f, floor, top, GRID)?;
        let factor = factors(&grid, d);

        // D s = spread s / 2^k with spread = d (x - mean) at f bits after its own truncation.
        let s = grid.piecewise(p, |k| factor(k)[0], plan.scale_bits);
        let slope = grid.piecewise(p, |k| factor(k)[1], plan.slope_bits);
        let mut round = Round::new();
        let normed = round.mul_truncating_rows(
            p,
            Operand::truncated(&spread, extra),
            Operand::plain(&s),
            f + k + plan.scale_bits - NORMED_BITS,
        )?;
        let slope_q = round.mul_truncating(
            p,
            Operand::plain(&q),
            Operand::plain(&slope),
            2 * f + plan.slope_bits - ROOT_BITS,
        )?;
        let mut out = round.run(p)?;
        let (normed, slope_q) = (out.take(normed), out.take(slope_q));
        let u = slope_q.sub(&grid.piecewise(p, |k| factor(k)[2], ROOT_BITS))?;

        let mut round = Round::new();
        let (masked, product) = stage_matmul_weight(p, &normed, w, "layernorm_matmul")?;
        let opened = round.open(&masked);
        let squared = round.square(p, Operand::plain(&u))?;
        let mut out = round.run(p)?;
        let product = product.finish(p, w, out.take(opened))?; // at NORMED_BITS + f
        let bracket = out
            .take(squared)
            .add(&grid.piecewise(p, |k| factor(k)[3], 2 * ROOT_BITS))?;

        let mut round = Round::new();
        let (product, bracket) = (
            Operand::truncated(&product, NORMED_BITS + f - PRODUCT_BITS),
            Operand::truncated(&bracket, 2 * ROOT_BITS - BRACKET_BITS),
        );
        let shift = PRODUCT_BITS + BRACKET_BITS - out_bits;
        let y = match mix {
            None => round.mul_truncating_rows(p, product, bracket, shift)?,
            Some((mix, bits)) => {
                round.mul_truncating_rows_mixed(p, product, bracket, shift + bits, mix)?
            }
        };
        Ok((round.run(p)?.take(y), input))
    })
}
