//! exp(x) for x in [-2^n, 0] as (1 + y + y^2/2)^(2^n) with y = x / 2^n and n = `exp_iters`
//! squarings: CrypTen's limit method with a second-order start. The plain start 1 + y makes
//! 2^n ln(1 + y) = x - x^2 / 2^(n+1) + ..., a bias of e^x x^2 / 2^(n+1) (1.06e-3 at n = 8, which
//! moved GPT-2 logits by 3e-2); with the y^2/2 term 2^n ln(1 + y + y^2/2) = x - x^3 / (6 * 4^n) + ...,
//! a bias of at most 27 e^-3 / (6 * 4^n) = 3.4e-6 at n = 8, for two more rounds (one square and its
//! truncation). On [-2, 0] in y the start stays in [1/2, 1], so every square is at most 1.
//!
//! y is read from x at f + n fractional bits (free), y^2/2 comes from x^2 at 2f bits truncated by
//! f + n + 1, and the squares stay at f + n bits (each squaring doubles the rounding error before
//! it; at f bits eight squarings would turn one ulp into 2^7). The last truncation lands on f bits.
//! Inputs below -2^n give garbage, so callers subtract the maximum first (softmax).
//! Cost: 2n + 2 rounds, 16 bytes per element per square (a square pair opens only x - a).

use super::{square, truncate};
use crate::mpc::error::MpcError;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

pub fn exp(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    p.labelled("exp", |p| {
        let (n, f) = (p.approx.exp_iters, p.fp.frac_bits);
        let bits = f + n;
        if n == 0 || 2 * bits > 60 {
            return Err(MpcError::BadConfig(format!(
                "exp_iters = {n} must be in 1..={}",
                30 - f
            )));
        }
        // 1 + y + y^2/2 at f + n bits: x at f bits is y at f + n bits; x^2 / 2^(2n+1) at f + n bits
        // is x^2 (at 2f bits) shifted right by f + n + 1.
        let x2 = square(p, x)?;
        let half_y2 = truncate(p, &x2, f + n + 1)?;
        let mut y = p.add_constant(&x.add(&half_y2)?, 1u64 << bits);
        for i in 0..n {
            let shift = if i + 1 == n { 2 * bits - f } else { bits };
            let sq = square(p, &y)?;
            y = truncate(p, &sq, shift)?;
        }
        Ok(y)
    })
}
