//! Exact-up-to-one-ulp truncation: shares of x (|x| < 2^61) -> shares of floor(x / 2^s) or one more.
//!
//! SecureML's local truncation fails catastrophically with probability about |x| / 2^63 per element
//! (2^-19 for a GPT-2 product at 2f = 32 fractional bits): far too often over millions of elements.
//! Here the dealer gives r, r >> s and msb(r) 2^(64-s). The parties open c = x + 2^61 + r (uniform, so it
//! reveals nothing). Because x' = x + 2^61 < 2^62, the sum wrapped mod 2^64 exactly when msb(r) = 1
//! and msb(c) = 0, which is linear in the shared msb(r) once c is public. Then
//!   floor(x' / 2^s) = (c >> s) - (r >> s) + wrap * 2^(64-s) - borrow,  borrow in {0, 1}
//! The parties drop the borrow (it depends on the low bits of c and r together), so the result is
//! floor(x / 2^s) or one more: at most one unit in the last place, never a wrap. Cost: 1 round, 8 bytes per element each way.

use super::round::Round;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Truncates several tensors by `shift` bits (1 ..= 61) in one round: the truncation-only steps
/// of a [`Round`], which also runs this same arithmetic inside its masked products.
pub fn truncate_many(p: &mut Party, xs: &[&RingTensor], shift: u32) -> Result<Vec<RingTensor>> {
    let mut round = Round::new();
    let slots = xs
        .iter()
        .map(|x| round.truncate(p, x, shift))
        .collect::<Result<Vec<_>>>()?;
    let mut out = round.run(p)?;
    Ok(slots.into_iter().map(|s| out.take(s)).collect())
}

pub fn truncate(p: &mut Party, x: &RingTensor, shift: u32) -> Result<RingTensor> {
    Ok(truncate_many(p, &[x], shift)?.remove(0))
}
