//! exp(x) for x in [-2^n, 0] as (1 + x / 2^n)^(2^n) with n = `exp_iters` squarings (CrypTen's limit
//! method). 1 + x/2^n is formed for free by reading x at f + n fractional bits, and the squares stay
//! at f + n bits (they are at most 1, so their products stay below 2^(2f+2n)): each squaring doubles
//! the rounding error before it, and 8 squarings at f bits would turn one ulp into 2^7. The last
//! truncation lands on f bits. Error: the limit's bias e^x x^2 / 2^(n+1), at most 4 e^-2 / 2^(n+1)
//! (1.06e-3 for n = 8, near x = -2), plus about one ulp. Inputs below -2^n give garbage, so callers
//! subtract the maximum first (softmax). Cost: 2n rounds, 16 bytes per element per squaring
//! (a square pair opens only x - a).

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
        let mut y = p.add_constant(x, 1u64 << bits);
        for i in 0..n {
            let shift = if i + 1 == n { 2 * bits - f } else { bits };
            let sq = square(p, &y)?;
            y = truncate(p, &sq, shift)?;
        }
        Ok(y)
    })
}
