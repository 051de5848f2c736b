//! Rotary position embeddings on shares (LLaMA's, Hugging Face's `rotate_half` layout), in no
//! round of their own.
//!
//! Per head of `head_dim` columns, x -> x cos + rotate_half(x) sin with rotate_half(x) = [-x2, x1]
//! and the angle (past + r) theta^(-2i / head_dim) of row r. The positions are public to both
//! parties, so the rotation is a public linear map on each row: each party applies it to its own
//! share. Its factors cos and sin are fixed-point, so the rotated value carries their fractional
//! bits; rather than truncate it in a round of its own, [`Rotary::mix`] hands the map to the
//! product before it ([`super::layernorm_matmul::norm_matmul_at`], through
//! [`super::round::Round::mul_truncating_rows_mixed`]), which applies it to the exact products
//! in Z_2^128 and truncates the factors' bits with its own. The keys and queries then come out of
//! the norm and projection already rotated, at f bits, in its 5 rounds.

use std::sync::Arc;

use super::truncating_product::WideMix;
use crate::mpc::error::MpcError;
use crate::mpc::party::Result;

/// Fractional bits of cos and sin: 2^-20 relative, and the mixed products stay near 2^81, so the
/// local truncation in Z_2^128 fails with probability about 2^-47 per element.
pub const ROTARY_BITS: u32 = 20;

/// The rotation of one model: head width and the frequencies theta^(-2i / head_dim).
#[derive(Debug, Clone)]
pub struct Rotary {
    head_dim: usize,
    inv_freq: Vec<f64>,
}

impl Rotary {
    pub fn new(head_dim: usize, theta: f64) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) || theta <= 0.0 {
            return Err(MpcError::BadConfig(format!(
                "rotary embeddings need an even head width and a positive theta (head_dim \
                 {head_dim}, theta {theta})"
            )));
        }
        let inv_freq = (0..head_dim / 2)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        Ok(Self { head_dim, inv_freq })
    }

    /// round(cos 2^ROTARY_BITS) and round(sin 2^ROTARY_BITS) of position `pos`, per frequency.
    fn factors(&self, pos: usize) -> Vec<(u128, u128)> {
        let scale = 2f64.powi(ROTARY_BITS as i32);
        let encode = |v: f64| (v * scale).round() as i64 as i128 as u128;
        self.inv_freq
            .iter()
            .map(|f| {
                let angle = pos as f64 * f;
                (encode(angle.cos()), encode(angle.sin()))
            })
            .collect()
    }

    /// The map on rows [t, width] of positions `past..past + t` that rotates the first `heads`
    /// heads of each row and leaves the other columns (the values) as they are; it scales the
    /// rotated columns by 2^ROTARY_BITS, so the untouched ones are scaled too, to keep one
    /// truncation for the whole row. Wrapping arithmetic: it acts on shares mod 2^128.
    pub fn mix(&self, past: usize, t: usize, width: usize, heads: usize) -> Result<WideMix> {
        let (dh, half) = (self.head_dim, self.head_dim / 2);
        if heads * dh > width {
            return Err(MpcError::BadConfig(format!(
                "{heads} rotated heads of {dh} do not fit rows of {width}"
            )));
        }
        let rows: Vec<Vec<(u128, u128)>> = (past..past + t).map(|pos| self.factors(pos)).collect();
        let one = 1u128 << ROTARY_BITS;
        Ok(Arc::new(move |z: &mut [u128]| {
            for (row, factors) in z.chunks_mut(width).zip(&rows) {
                for head in row[..heads * dh].chunks_mut(dh) {
                    let (x1, x2) = head.split_at_mut(half);
                    for ((a, b), &(c, s)) in x1.iter_mut().zip(x2.iter_mut()).zip(factors) {
                        let (u, v) = (*a, *b);
                        *a = u.wrapping_mul(c).wrapping_sub(v.wrapping_mul(s));
                        *b = v.wrapping_mul(c).wrapping_add(u.wrapping_mul(s));
                    }
                }
                for v in &mut row[heads * dh..] {
                    *v = v.wrapping_mul(one);
                }
            }
        }))
    }
}
