//! Softmax along the last dimension, max-subtracted, with an optional public mask (causal masking).
//!
//! 1. Masked entries are replaced by a public -2^20 (local), so they never win the max.
//! 2. m = max (k-ary tournament), z = x - m <= 0, e = exp(z), then e *= mask (local, exact zeros).
//! 3. S = sum(e) lies in [1, n] (the maximum contributes exp(0) = 1), so 1/S comes from the
//!    normalised Newton reciprocal on [1/2, n + 1], kept at extra precision, and out = e * (1/S).
//!
//! Cost: max + exp (2 exp_iters + 2) + reciprocal (17) + 2 rounds: 57 rounds for rows of 1024 at the defaults.

use super::{exp::exp, max::max_last, mul_trunc, reciprocal::reciprocal};
use crate::mpc::error::MpcError;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// `mask` (if any) has one entry per element of `x`, true = keep; every row must keep one entry.
pub fn softmax(p: &mut Party, x: &RingTensor, mask: Option<&[bool]>) -> Result<RingTensor> {
    p.labelled("softmax", |p| {
        let n = x.last_dim();
        let x = match mask {
            Some(mask) => {
                if mask.len() != x.len() {
                    return Err(MpcError::ShapeMismatch {
                        op: "softmax mask",
                        left: x.shape().to_vec(),
                        right: vec![mask.len()],
                    });
                }
                let floor = if p.is_client() {
                    p.fp.constant(-((1u64 << 20) as f64))
                } else {
                    0
                };
                let data = x
                    .data()
                    .iter()
                    .zip(mask)
                    .map(|(&v, &keep)| if keep { v } else { floor })
                    .collect();
                RingTensor::new(x.shape(), data)?
            }
            None => x.clone(),
        };
        let (m, _) = max_last(p, &x)?;
        let z = x.sub(&m.expand_last(n))?;
        let mut e = exp(p, &z)?;
        if let Some(mask) = mask {
            e.data_mut().iter_mut().zip(mask).for_each(|(v, &keep)| {
                if !keep {
                    *v = 0
                }
            });
        }
        let f = p.fp.frac_bits;
        let sum = e.sum_last();
        let inv = reciprocal(p, &sum, f, 0.5, n as f64 + 1.0)?;
        mul_trunc(p, &e, &inv.value.expand_last(n), inv.frac_bits)
    })
}
