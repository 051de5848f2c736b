//! Reciprocal and inverse square root of positive values with a known range [lo, hi], in four
//! rounds and without Newton iterations.
//!
//! - Round 1, a grid: comparisons against 2^(i/G) for every grid point in the range, one batch
//!   (one key and one opening per *row* for all the points, [`Round::ltz_thresholds`], so they
//!   cost few bytes). Any function of the interval
//!   [2^(k/G), 2^((k+1)/G)) that holds x is a public linear combination of these bits.
//! - Round 2, normalise: xn = x s with s = 2^-(J+1) (1/x; xn in [1/2, 1)) or 4^-(J+1) (1/sqrt;
//!   [1/4, 1)), exact powers of two read off the grid.
//! - Rounds 3 and 4, a series around the grid's start y0 (the best constant on the interval, so
//!   u = xn y0^k is within e = (rho - 1) / (rho + 1) of 1, rho = 2^(1/G)), with the interval's
//!   coefficients folded in, so no Newton step is needed:
//!   1/x = s y0 (3 - 3u + u^2) with u = xn y0 (error e^3), and
//!   1/sqrt(x) = s' y0 (15/8 - 5/4 u + 3/8 u^2) with u = xn y0^2 (error 5/16 (2e)^3, s' = 2^-(J+1)),
//!   that is c1 - c2 xn + c3 xn^2 with per-interval c1, c2, c3: xn c2 and xn^2 in round 3 (masked
//!   products that truncate xn in their opening), xn^2 c3 in round 4.
//!
//! With G = 16 the series error is at most 1.0e-5 (1/x) and 3.2e-6 (1/sqrt) relative. Results
//! come back at many fractional bits (`Scaled`), and the caller truncates them in its own next
//! opening. Inputs outside [lo, hi] are outside the domain (their series diverges).
//! Cost: 4 rounds (CrypTen: 10 Newton iterations; this engine before: 17 and 24).

use super::compare::not;
use super::masked::Operand;
use super::round::{Outputs, Round, Slot};
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// A positive shared value's reciprocal (or inverse square root) at `frac_bits` fractional bits.
pub struct Scaled {
    pub value: RingTensor,
    pub frac_bits: u32,
}

/// Grid points per octave of the reciprocal and of the inverse square root.
const RECIP_GRID: u32 = 16;
const RSQRT_GRID: u32 = 16;
/// Fractional bits of the normalised value in the series' products.
const NORM_BITS: u32 = 20;

/// Where x lies on the grid 2^(k/G): shares of [x >= 2^(k/G)] for k = kmin + 1 ..= kmax.
pub(crate) struct Grid {
    per_octave: u32,
    kmin: i64,
    bits: Vec<RingTensor>,
}

impl Grid {
    /// Compares x (at `in_bits` fractional bits) with every grid point in (lo, hi) in one round.
    pub(crate) fn measure(
        p: &mut Party,
        x: &RingTensor,
        in_bits: u32,
        lo: f64,
        hi: f64,
        per_octave: u32,
    ) -> Result<Self> {
        Ok(Self::measure_in(p, Round::new(), x, in_bits, (lo, hi), per_octave)?.0)
    }

    /// [`Self::measure`] in `round`, whose other steps' outputs come back with the grid.
    pub(crate) fn measure_in(
        p: &mut Party,
        mut round: Round,
        x: &RingTensor,
        in_bits: u32,
        (lo, hi): (f64, f64),
        per_octave: u32,
    ) -> Result<(Self, Outputs)> {
        let plan = Self::plan(lo, hi, per_octave)?;
        let (g, kmin) = (per_octave as f64, plan.kmin);
        // Every grid point compared with one key and one opening of x + r per value.
        let points: Vec<u64> = (kmin + 1..=plan.kmax())
            .map(|k| (2f64.powf(k as f64 / g) * 2f64.powi(in_bits as i32)).round() as i64 as u64)
            .collect();
        let less = if points.is_empty() {
            vec![]
        } else {
            round.ltz_thresholds(p, x, &points, crate::mpc::dcf::BITS as u32, 0)?
        };
        let mut outputs = round.run(p)?;
        let bits = less
            .into_iter()
            .map(|slot| not(p, &outputs.take(slot)))
            .collect();
        let grid = Self {
            per_octave,
            kmin,
            bits,
        };
        Ok((grid, outputs))
    }

    /// The grid over [lo, hi] before any comparison: its intervals, for a caller that sizes its
    /// fixed-point encodings before the round (its bits are empty placeholders).
    pub(crate) fn plan(lo: f64, hi: f64, per_octave: u32) -> Result<Self> {
        check_range(lo, hi)?;
        let g = per_octave as f64;
        let kmin = (g * lo.log2()).floor() as i64;
        let kmax = (g * hi.log2()).ceil() as i64 - 1;
        let bits = (kmin..kmax).map(|_| RingTensor::zeros(&[0])).collect();
        Ok(Self {
            per_octave,
            kmin,
            bits,
        })
    }

    /// The interval [2^(k/G), 2^((k+1)/G)) as reals.
    pub(crate) fn interval(&self, k: i64) -> (f64, f64) {
        let g = self.per_octave as f64;
        (2f64.powf(k as f64 / g), 2f64.powf((k + 1) as f64 / g))
    }

    /// Octave index J of interval k with octaves of 2^octave_log2 (x in [2^(J o), 2^((J+1) o))).
    pub(crate) fn octave(&self, k: i64, octave_log2: i64) -> i64 {
        k.div_euclid(self.per_octave as i64 * octave_log2)
    }

    /// Highest interval index.
    pub(crate) fn kmax(&self) -> i64 {
        self.kmin + self.bits.len() as i64
    }

    /// Every interval index a value can fall in.
    pub(crate) fn intervals(&self) -> std::ops::RangeInclusive<i64> {
        self.kmin..=self.kmax()
    }

    /// Shares of v(k) for the interval k that holds x, encoded at `bits` fractional bits (local).
    pub(crate) fn piecewise(&self, p: &Party, v: impl Fn(i64) -> f64, bits: u32) -> RingTensor {
        let enc = |v: f64| (v * 2f64.powi(bits as i32)).round() as i64 as u64;
        let shape = self.bits.first().map_or(vec![0], |b| b.shape().to_vec());
        let mut acc = p.public(&RingTensor::filled(&shape, enc(v(self.kmin))));
        for (i, b) in self.bits.iter().enumerate() {
            let k = self.kmin + 1 + i as i64;
            let step = enc(v(k)).wrapping_sub(enc(v(k - 1)));
            if step != 0 {
                acc = acc.add(&b.scale(step)).expect("same shapes");
            }
        }
        acc
    }
}

fn check_range(lo: f64, hi: f64) -> Result<()> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Err(MpcError::BadConfig(format!(
            "range [{lo}, {hi}] must satisfy 0 < lo < hi"
        )));
    }
    Ok(())
}

/// Stages xn = x s for the exact power of two s = 2^-(J+1) (octaves of 2^`octave_log2`) read off
/// the grid: returns xn's slot and its fractional bits. x is truncated in the opening if x s would
/// not fit below 2^61.
pub(crate) fn normalise(
    round: &mut Round,
    p: &mut Party,
    grid: &Grid,
    x: &RingTensor,
    in_bits: u32,
    octave_log2: i64,
) -> Result<(Slot, u32)> {
    // s needs `top` bits to be exact at its smallest; more bits keep xn at NORM_BITS or more.
    let top = ((grid.octave(grid.kmax(), octave_log2) + 1) * octave_log2).max(0) as u32;
    if top + NORM_BITS > TRUNC_BOUND_BITS {
        return Err(MpcError::BadConfig(format!(
            "a range up to 2^{top} is too wide to normalise in the fixed-point range"
        )));
    }
    let kept = in_bits.min(TRUNC_BOUND_BITS - top);
    let sb = top.max(NORM_BITS.saturating_sub(kept));
    let s = grid.piecewise(
        p,
        |k| 2f64.powi(-((grid.octave(k, octave_log2) + 1) * octave_log2) as i32),
        sb,
    );
    let xn = round.mul(p, Operand::truncated(x, in_bits - kept), Operand::plain(&s))?;
    Ok((xn, kept + sb))
}

/// Rounds 1 and 2 of both functions: the grid (in `first`, with its other steps, whose outputs
/// come back), then xn (octaves of 2^`octave_log2`).
fn grid_and_normalise(
    p: &mut Party,
    first: Round,
    x: &RingTensor,
    in_bits: u32,
    range: (f64, f64),
    per_octave: u32,
    octave_log2: i64,
) -> Result<(Grid, RingTensor, u32, Outputs)> {
    let (grid, outputs) = Grid::measure_in(p, first, x, in_bits, range, per_octave)?;
    let mut round = Round::new();
    let (xn, xn_bits) = normalise(&mut round, p, &grid, x, in_bits, octave_log2)?;
    let xn = round.run(p)?.take(xn);
    Ok((grid, xn, xn_bits, outputs))
}

/// c1 - c2 xn + c3 xn^2 for per-interval coefficients (2 rounds): the series of both functions.
/// Coefficients are encoded at `e` bits; the result is at NORM_BITS + e.
fn series(
    p: &mut Party,
    grid: &Grid,
    xn: &RingTensor,
    xn_bits: u32,
    coefs: [&dyn Fn(i64) -> f64; 3],
    e: u32,
) -> Result<Scaled> {
    let c1 = grid.piecewise(p, coefs[0], NORM_BITS + e);
    let c2 = grid.piecewise(p, coefs[1], e);
    let c3 = grid.piecewise(p, coefs[2], e);
    let xn_op = Operand::truncated(xn, xn_bits - NORM_BITS);
    let mut round = Round::new();
    let p2 = round.mul(p, xn_op, Operand::plain(&c2))?;
    let x2 = round.square(p, xn_op)?;
    let mut out = round.run(p)?;
    let (p2, x2) = (out.take(p2), out.take(x2));
    let mut round = Round::new();
    let p3 = round.mul(p, Operand::truncated(&x2, NORM_BITS), Operand::plain(&c3))?;
    let p3 = round.run(p)?.take(p3);
    Ok(Scaled {
        value: c1.sub(&p2)?.add(&p3)?,
        frac_bits: NORM_BITS + e,
    })
}

/// Fractional bits for coefficients whose products reach `largest` in magnitude.
fn coef_bits(largest: f64) -> u32 {
    (TRUNC_BOUND_BITS as i32 - 1 - NORM_BITS as i32 - largest.log2().ceil() as i32).clamp(8, 40)
        as u32
}

/// 1/x for x in [lo, hi], x at `in_bits` fractional bits.
pub fn reciprocal(p: &mut Party, x: &RingTensor, in_bits: u32, lo: f64, hi: f64) -> Result<Scaled> {
    Ok(reciprocal_in(p, Round::new(), x, in_bits, lo, hi)?.0)
}

/// [`reciprocal`] whose first round also runs the steps staged on `first`: their outputs come
/// back with the result (how softmax overlaps its product by the values with the reciprocal).
pub fn reciprocal_in(
    p: &mut Party,
    first: Round,
    x: &RingTensor,
    in_bits: u32,
    lo: f64,
    hi: f64,
) -> Result<(Scaled, Outputs)> {
    check_range(lo, hi)?;
    p.labelled("reciprocal", |p| {
        let (grid, xn, xn_bits, outputs) =
            grid_and_normalise(p, first, x, in_bits, (lo, hi), RECIP_GRID, 1)?;
        // On interval k: s = 2^-(J+1) and y0 = 2 / (a + b) for the normalised ends a, b.
        let s = |k: i64| 2f64.powi(-(grid.octave(k, 1) as i32 + 1));
        let y0 = |k: i64| {
            let (a, b) = grid.interval(k);
            2.0 / ((a + b) * s(k))
        };
        let c1 = |k: i64| 3.0 * s(k) * y0(k);
        let c2 = |k: i64| 3.0 * s(k) * y0(k).powi(2);
        let c3 = |k: i64| s(k) * y0(k).powi(3);
        let value = series(p, &grid, &xn, xn_bits, [&c1, &c2, &c3], coef_bits(3.1 / lo))?;
        Ok((value, outputs))
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
        let (grid, xn, xn_bits, _) =
            grid_and_normalise(p, Round::new(), x, in_bits, (lo, hi), RSQRT_GRID, 2)?;
        let (c1, c2, c3) = rsqrt_coefficients(&grid, gain);
        series(
            p,
            &grid,
            &xn,
            xn_bits,
            [&c1, &c2, &c3],
            coef_bits(1.3 * gain / lo.sqrt()),
        )
    })
}

type Coefficient<'a> = Box<dyn Fn(i64) -> f64 + 'a>;

/// The per-interval coefficients of gain / sqrt(x) = c1 - c2 xn + c3 xn^2 (octaves of 4).
pub(crate) fn rsqrt_coefficients(
    grid: &Grid,
    gain: f64,
) -> (Coefficient<'_>, Coefficient<'_>, Coefficient<'_>) {
    let s2 = move |k: i64| 2f64.powi(-(grid.octave(k, 2) as i32 + 1));
    let y0 = move |k: i64| {
        let (a, b) = grid.interval(k);
        (2.0 / ((a + b) * s2(k) * s2(k))).sqrt()
    };
    (
        Box::new(move |k| gain * s2(k) * y0(k) * 15.0 / 8.0),
        Box::new(move |k| gain * s2(k) * y0(k).powi(3) * 5.0 / 4.0),
        Box::new(move |k| gain * s2(k) * y0(k).powi(5) * 3.0 / 8.0),
    )
}
