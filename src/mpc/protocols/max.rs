//! Maximum and argmax along the last dimension by a k-ary tournament.
//!
//! Each level splits a row into groups of k, compares every pair of a group at once (one batched
//! comparison), turns the pairwise bits into a one-hot winner per group (a product of k-1 bits: a
//! tree of ceil(log2(k-1)) integer rounds), and keeps sum(winner * value) and sum(winner * index)
//! (one round). Ties go to the lower index. Cost per level: 1 + ceil(log2(k-1)) + 1 rounds; levels:
//! ceil(log_k n). The binary tree (k = 2, the default) is a select per pair:
//! max = a - [a - b < 0] (a - b), where the comparison's own opening also yields the product of
//! its bit with a - b (and with the index difference), see [`super::compare::stage_products`]:
//! 1 round per level, 8 bytes per pair each way (16 with the index). 7 rounds for 128 elements
//! and 10 for 1,024, where k = 4 takes 16 and 20 rounds and sends about six times the bytes.

use super::round::Round;
use super::{compare::ltz_many, mul_many};
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// Padding that loses against every value (fixed-point values stay below 2^45 in magnitude).
const LOSER: u64 = (-(1i64 << 50)) as u64;

/// (max, argmax) over the last dimension: shapes [.., 1]; the argmax is an integer share.
pub fn max_last(p: &mut Party, x: &RingTensor) -> Result<(RingTensor, RingTensor)> {
    tournament(p, x, true, Keys::EXACT)
}

/// The maximum alone over the last dimension (shape [.., 1]): half the selection bytes.
pub fn max_value_last(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    Ok(tournament(p, x, false, Keys::EXACT)?.0)
}

/// A value of each row within `levels(n)` 2^`skip` below its maximum (shape [.., 1]), for rows
/// whose pairwise differences lie in [-2^bits, 2^bits - 2^skip]: the binary tournament with
/// comparison keys over bits `skip..bits` ([`Round::ltz_products_coarse`]). A pair whose values
/// differ by less than 2^skip may keep the smaller one, so each level loses less than 2^skip;
/// the result is always one of the row's values. For a maximum that only needs to be near the
/// top (softmax's shift), at keys of `bits - skip` levels instead of 63.
pub fn max_value_coarse(p: &mut Party, x: &RingTensor, bits: u32, skip: u32) -> Result<RingTensor> {
    Ok(tournament(p, x, false, Keys { bits, skip })?.0)
}

/// Levels of the binary tournament over rows of `n`: what a coarse maximum can lose, in units of
/// 2^skip.
pub fn levels(n: usize) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// The comparison keys of the binary levels: over bits `skip..bits` of each difference.
#[derive(Clone, Copy)]
struct Keys {
    bits: u32,
    skip: u32,
}

impl Keys {
    const EXACT: Keys = Keys {
        bits: crate::mpc::dcf::BITS as u32,
        skip: 0,
    };
}

fn tournament(
    p: &mut Party,
    x: &RingTensor,
    with_index: bool,
    keys: Keys,
) -> Result<(RingTensor, RingTensor)> {
    p.labelled("max", |p| {
        let n = x.last_dim();
        let rows = x.len() / n.max(1);
        let client = p.is_client();
        let mut vals = x.data().to_vec();
        let mut idx: Vec<u64> = (0..rows)
            .flat_map(|_| (0..n as u64).map(move |j| if client { j } else { 0 }))
            .collect();
        let mut width = n;
        while width > 1 {
            // Coarse keys only in the binary tournament.
            let k = if keys.skip > 0 {
                2
            } else {
                p.approx.max_arity.clamp(2, width)
            };
            if k == 2 {
                (vals, idx) = binary_level(p, &vals, &idx, width, with_index, keys)?;
                width = width.div_ceil(2);
                continue;
            }
            let groups = width.div_ceil(k);
            // Pad every row to groups * k with losers (only the client holds the padding value).
            let padded = groups * k;
            let pad = |v: &[u64], fill: u64| -> Vec<u64> {
                v.chunks(width)
                    .flat_map(|row| {
                        row.iter()
                            .copied()
                            .chain(std::iter::repeat_n(fill, padded - width))
                    })
                    .collect()
            };
            let (v, ix) = (pad(&vals, if client { LOSER } else { 0 }), pad(&idx, 0));
            // Pairwise differences v_i - v_j (i < j) of every group.
            let pairs: Vec<(usize, usize)> = (0..k)
                .flat_map(|i| ((i + 1)..k).map(move |j| (i, j)))
                .collect();
            let mut diffs = Vec::with_capacity(rows * groups * pairs.len());
            for g in 0..rows * groups {
                let base = g * k;
                diffs.extend(
                    pairs
                        .iter()
                        .map(|&(i, j)| v[base + i].wrapping_sub(v[base + j])),
                );
            }
            let diffs = RingTensor::new(&[diffs.len()], diffs)?;
            let less = ltz_many(p, &[&diffs])?.remove(0); // [v_i < v_j]
                                                          // Factors of the winner indicator of element i: [v_j < v_i] ... as integer bits:
                                                          // for j < i: less(j, i); for j > i: 1 - less(i, j).
            let np = pairs.len();
            let pair_pos = |i: usize, j: usize| {
                pairs
                    .iter()
                    .position(|&pq| pq == (i, j))
                    .expect("pair listed")
            };
            let mut factors: Vec<Vec<u64>> = vec![Vec::with_capacity(rows * groups * k); k - 1];
            for g in 0..rows * groups {
                let l = &less.data()[g * np..(g + 1) * np];
                for i in 0..k {
                    for (slot, j) in (0..k).filter(|&j| j != i).enumerate() {
                        let f = if j < i {
                            l[pair_pos(j, i)]
                        } else {
                            one_minus(l[pair_pos(i, j)], client)
                        };
                        factors[slot].push(f);
                    }
                }
            }
            let mut factors: Vec<RingTensor> = factors
                .into_iter()
                .map(|f| RingTensor::new(&[f.len()], f))
                .collect::<Result<_>>()?;
            while factors.len() > 1 {
                let odd = if factors.len() % 2 == 1 {
                    factors.pop()
                } else {
                    None
                };
                let pairs: Vec<(&RingTensor, &RingTensor)> =
                    factors.chunks(2).map(|c| (&c[0], &c[1])).collect();
                factors = mul_many(p, &pairs)?;
                factors.extend(odd);
            }
            let winner = factors.remove(0);
            let (v, ix) = (
                RingTensor::new(&[v.len()], v)?,
                RingTensor::new(&[ix.len()], ix)?,
            );
            let chosen = if with_index {
                mul_many(p, &[(&winner, &v), (&winner, &ix)])?
            } else {
                let mut chosen = mul_many(p, &[(&winner, &v)])?;
                chosen.push(ix.clone());
                chosen
            };
            let sum_groups = |t: &RingTensor| -> Vec<u64> {
                t.data()
                    .chunks(k)
                    .map(|c| c.iter().fold(0u64, |s, &x| s.wrapping_add(x)))
                    .collect()
            };
            vals = sum_groups(&chosen[0]);
            idx = sum_groups(&chosen[1]);
            width = groups;
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("max needs a dimension") = 1;
        Ok((
            RingTensor::new(&shape, vals)?,
            RingTensor::new(&shape, idx)?,
        ))
    })
}

/// One level of the binary tournament over rows of `width`: pairs (a, b) -> a - [a - b < 0] (a - b)
/// in one round; an odd last element passes through.
fn binary_level(
    p: &mut Party,
    vals: &[u64],
    idx: &[u64],
    width: usize,
    with_index: bool,
    keys: Keys,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let half = width / 2;
    let pick = |v: &[u64], second: bool| -> Vec<u64> {
        v.chunks(width)
            .flat_map(|row| (0..half).map(move |j| row[2 * j + second as usize]))
            .collect()
    };
    let tensor = |v: Vec<u64>| RingTensor::new(&[v.len()], v);
    let (a, b) = (tensor(pick(vals, false))?, tensor(pick(vals, true))?);
    let (ia, ib) = (tensor(pick(idx, false))?, tensor(pick(idx, true))?);
    let di = ib.sub(&ia)?;
    let others = if with_index { vec![&di] } else { vec![] };
    let (chosen, mut out) = p.labelled("ltz", |p| {
        let mut round = Round::new();
        let chosen = round.ltz_products_coarse(p, &a.sub(&b)?, &others, keys.bits, keys.skip)?;
        Ok((chosen, round.run(p)?))
    })?;
    let best = a.sub(&out.take(chosen.times_x))?;
    let best_idx = if with_index {
        ia.add(&out.take(chosen.times[0]))?
    } else {
        ia
    };
    let rows = vals.len() / width.max(1);
    let odd = width % 2 == 1;
    let out_width = width.div_ceil(2);
    let (mut v_out, mut i_out) = (Vec::with_capacity(rows * out_width), Vec::new());
    for r in 0..rows {
        v_out.extend_from_slice(&best.data()[r * half..(r + 1) * half]);
        i_out.extend_from_slice(&best_idx.data()[r * half..(r + 1) * half]);
        if odd {
            v_out.push(vals[(r + 1) * width - 1]);
            i_out.push(idx[(r + 1) * width - 1]);
        }
    }
    Ok((v_out, i_out))
}

fn one_minus(bit_share: u64, client: bool) -> u64 {
    if client {
        1u64.wrapping_sub(bit_share)
    } else {
        bit_share.wrapping_neg()
    }
}
