//! Selection by a shared bit, and ReLU.
//!
//! select(b, x, y) = y + b * (x - y): one Beaver product of an integer bit with a fixed-point value,
//! so no truncation. Cost: 1 round, 16 bytes per element each way. ReLU(x) = x - [x < 0] x, where
//! the comparison's own opening yields [x < 0] x ([`super::round::Round::ltz_products`]): 1 round,
//! 8 bytes per element each way.

use super::mul_many;
use super::round::Round;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// b ? x : y for shared integer bits b, elementwise; several selections share one round.
pub fn select_many(
    p: &mut Party,
    items: &[(&RingTensor, &RingTensor, &RingTensor)],
) -> Result<Vec<RingTensor>> {
    let diffs: Vec<RingTensor> = items
        .iter()
        .map(|(_, x, y)| x.sub(y))
        .collect::<Result<_>>()?;
    let pairs: Vec<(&RingTensor, &RingTensor)> = items
        .iter()
        .zip(&diffs)
        .map(|((b, _, _), d)| (*b, d))
        .collect();
    let products = mul_many(p, &pairs)?;
    items
        .iter()
        .zip(products)
        .map(|((_, _, y), prod)| y.add(&prod))
        .collect()
}

pub fn select(p: &mut Party, b: &RingTensor, x: &RingTensor, y: &RingTensor) -> Result<RingTensor> {
    Ok(select_many(p, &[(b, x, y)])?.remove(0))
}

pub fn relu(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    p.labelled("relu", |p| {
        let mut round = Round::new();
        let negative = round.ltz_products(p, x, &[])?;
        x.sub(&round.run(p)?.take(negative.times_x))
    })
}
