//! The protocol library: small functions over this party's shares and the channel.
//! Each file's doc gives the steps and the cost in rounds and bytes.

pub mod beaver;
pub mod compare;
pub mod exp;
pub mod gelu;
pub mod layernorm;
pub mod layernorm_matmul;
pub mod lifted_matmul;
pub mod masked;
pub mod max;
pub mod reciprocal;
pub mod rotary;
pub mod round;
pub mod row_cache;
pub mod select;
pub mod silu;
pub mod softmax;
pub mod trunc;
pub mod truncating_product;

use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

pub use beaver::{
    matmul, matmul_weight, matmul_weight_client_input, mul, mul_many, prepare_client_input_weight,
    prepare_weight, prepare_weight_owned, square, PreparedWeight,
};
pub use compare::{ltz, ltz_many, not};
pub use lifted_matmul::{matmul_weight_truncating, prepare_weight_wide, WideWeight};
pub use masked::Operand;
pub use round::Round;
pub use row_cache::{append_and_multiply, PreparedRows};
pub use trunc::{truncate, truncate_many};

/// Fixed-point products of several pairs, each truncated in its own round (1 round in all, see
/// [`truncating_product`]); inputs below 2^61 in the ring.
pub fn fixed_mul_many(
    p: &mut Party,
    pairs: &[(&RingTensor, &RingTensor)],
) -> Result<Vec<RingTensor>> {
    let f = p.fp.frac_bits;
    let mut round = Round::new();
    let slots = pairs
        .iter()
        .map(|(x, y)| round.mul_truncating(p, Operand::plain(x), Operand::plain(y), f))
        .collect::<Result<Vec<_>>>()?;
    let mut out = round.run(p)?;
    Ok(slots.into_iter().map(|s| out.take(s)).collect())
}

pub fn fixed_mul(p: &mut Party, x: &RingTensor, y: &RingTensor) -> Result<RingTensor> {
    Ok(fixed_mul_many(p, &[(x, y)])?.remove(0))
}

/// One product truncated by `shift` bits (1 round, see [`truncating_product`]).
pub fn mul_trunc(p: &mut Party, x: &RingTensor, y: &RingTensor, shift: u32) -> Result<RingTensor> {
    let mut round = Round::new();
    let z = round.mul_truncating(p, Operand::plain(x), Operand::plain(y), shift)?;
    Ok(round.run(p)?.take(z))
}

/// Fixed-point matrix product of two shared tensors (2 rounds).
pub fn fixed_matmul(p: &mut Party, x: &RingTensor, y: &RingTensor) -> Result<RingTensor> {
    let z = matmul(p, x, y)?;
    let f = p.fp.frac_bits;
    truncate(p, &z, f)
}

/// Fixed-point product with a prepared weight (2 rounds).
pub fn fixed_matmul_weight(
    p: &mut Party,
    x: &RingTensor,
    w: &PreparedWeight,
) -> Result<RingTensor> {
    let z = matmul_weight(p, x, w)?;
    let f = p.fp.frac_bits;
    truncate(p, &z, f)
}

/// Multiplies by a public real with `extra` more bits of precision than the encoding, then
/// truncates (1 round): the constant c becomes round(c * 2^(f + extra)).
pub fn mul_public(p: &mut Party, x: &RingTensor, c: f64, extra: u32) -> Result<RingTensor> {
    let shift = p.fp.frac_bits + extra;
    let k = (c * 2f64.powi(shift as i32)).round() as i64 as u64;
    truncate(p, &x.scale(k), shift)
}
