//! LayerNorm over the last dimension: (x - mean) / sqrt(var + eps) * gamma + beta.
//!
//! 1. mean = sum(x) * (1/d), with 1/d carried at 12 extra bits (1 round).
//! 2. diff = x - mean; q = sum(diff^2) at 2f fractional bits, never truncated (1 round), so tiny
//!    variances keep their precision: q = d * var.
//! 3. r = sqrt(d) / sqrt(q + d eps) = 1 / sqrt(var + eps) by the normalised Newton rsqrt on
//!    [d eps, d (max_variance + eps)] (24 rounds; its comparisons are per row, so they cost few bytes).
//! 4. out = diff * r (2 rounds), then * gamma (2 rounds) + beta. gamma and beta are shares (the
//!    server's weights). Cost: 30 rounds.

use super::{fixed_mul, mul_public, mul_trunc, reciprocal::rsqrt, square};
use crate::mpc::error::MpcError;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

pub fn layernorm(
    p: &mut Party,
    x: &RingTensor,
    gamma: &RingTensor,
    beta: &RingTensor,
    eps: f64,
) -> Result<RingTensor> {
    p.labelled("layernorm", |p| {
        let d = x.last_dim();
        if gamma.len() != d || beta.len() != d {
            return Err(MpcError::ShapeMismatch {
                op: "layernorm",
                left: x.shape().to_vec(),
                right: gamma.shape().to_vec(),
            });
        }
        let f = p.fp.frac_bits;
        let mean = mul_public(p, &x.sum_last(), 1.0 / d as f64, 12)?;
        let diff = x.sub(&mean.expand_last(d))?;
        let q = square(p, &diff)?.sum_last();
        let d_eps = (d as f64 * eps * 2f64.powi(2 * f as i32)).round() as u64;
        let q = p.add_constant(&q, d_eps);
        let max_var = p.approx.max_variance;
        let r = rsqrt(
            p,
            &q,
            2 * f,
            d as f64 * eps.max(1e-9),
            d as f64 * (max_var + eps),
            (d as f64).sqrt(),
        )?;
        let normed = mul_trunc(p, &diff, &r.value.expand_last(d), r.frac_bits)?;
        let rows = x.len() / d;
        let gamma_rows = gamma
            .clone()
            .reshape(&[1, d])?
            .expand_rows(rows)?
            .reshape(x.shape())?;
        let scaled = fixed_mul(p, &normed, &gamma_rows)?;
        scaled.add_row(beta)
    })
}
