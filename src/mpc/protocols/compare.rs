//! Less-than-zero: shares of x -> additive shares of the bit [x < 0], i.e. the top bit of x, by
//! function secret sharing from the dealer (Boyle et al. 2021; the construction SIGMA and Orca use).
//!
//! The dealer draws a uniform mask r and gives the parties shares of r, shares of m = msb(r) and
//! the two keys of a distributed comparison function ([`crate::mpc::dcf`]) for
//! g(z) = (1 - 2m) [z < r_lo] on 63-bit z, where r_lo is r without its top bit. The parties open
//! y = x + r (uniform, so it reveals nothing) and, with y_lo = y without its top bit,
//!   msb(x) = msb(y) xor m xor [y_lo < r_lo]          (the borrow of y - r into the top bit)
//!   m xor c = m + (1 - 2m) c,  so  shares of m xor c = shares of m + DCF(y_lo),
//! and xor with the public msb(y) is local (1 - v where msb(y) = 1). Exact for every x.
//!
//! Cost: 1 round, 8 bytes per element each way. Dealer bytes: party 1 gets its share of m
//! (8 bytes an element) and both parties get the keys' correction words (`dcf::WORDS` * 8 = 1,536
//! bytes an element); each party's root seeds and shares of r come from its own seed. Evaluating a
//! key takes 189 AES blocks per element and party. The Kogge-Stone circuit this replaces took
//! 8 rounds and 192 bytes an element each way. The opening can share a round with other protocols
//! ([`super::round::Round::ltz`]).

use super::round::Round;
use crate::mpc::dcf;
use crate::mpc::dealer::Correlation;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;
use rayon::prelude::*;

/// A comparison waiting for its opening: this party's key material.
pub(crate) struct LtzStage {
    roots: Vec<u128>,
    m: Vec<u64>,
    words: Vec<u64>,
}

/// Deals the keys for `x` and returns the masked value x + r to open.
pub(crate) fn stage(p: &mut Party, x: &[u64]) -> Result<(Vec<u64>, LtzStage)> {
    let len = x.len();
    let keys = p.deal(
        &Correlation::Comparison { len },
        &[&[len], &[2 * len], &[len], &[dcf::WORDS * len]],
    )?;
    let mut keys = keys.into_iter().map(RingTensor::into_data);
    let mut next = || keys.next().unwrap_or_default();
    let (r, roots, m, words) = (next(), next(), next(), next());
    let masked = x.iter().zip(&r).map(|(x, r)| x.wrapping_add(*r)).collect();
    let roots = roots
        .chunks(2)
        .map(|w| w[0] as u128 | (w[1] as u128) << 64)
        .collect();
    Ok((masked, LtzStage { roots, m, words }))
}

impl LtzStage {
    /// Shares of [x < 0] from the opened y = x + r.
    pub(crate) fn finish(self, party: usize, y: &[u64]) -> Vec<u64> {
        let client = party == crate::mpc::CLIENT;
        let low = (1u64 << dcf::BITS) - 1;
        let inputs: Vec<u64> = y.iter().map(|y| y & low).collect();
        const CHUNK: usize = 512;
        let shares: Vec<u64> = inputs
            .par_chunks(CHUNK)
            .enumerate()
            .flat_map_iter(|(c, xs)| {
                let start = c * CHUNK;
                let keys = &self.words[start * dcf::WORDS..(start + xs.len()) * dcf::WORDS];
                dcf::evaluate_many(party, &self.roots[start..start + xs.len()], keys, xs)
            })
            .collect();
        shares
            .iter()
            .zip(&self.m)
            .zip(y)
            .map(|((v, m), y)| {
                let g = m.wrapping_add(*v);
                if y >> 63 == 0 {
                    g
                } else if client {
                    1u64.wrapping_sub(g)
                } else {
                    g.wrapping_neg()
                }
            })
            .collect()
    }
}

/// Additive shares of [x < 0] (integers 0/1) for several tensors at once: 1 round in all.
pub fn ltz_many(p: &mut Party, xs: &[&RingTensor]) -> Result<Vec<RingTensor>> {
    p.labelled("ltz", |p| {
        let mut round = Round::new();
        let slots = xs
            .iter()
            .map(|x| round.ltz(p, x))
            .collect::<Result<Vec<_>>>()?;
        let mut out = round.run(p)?;
        Ok(slots.into_iter().map(|s| out.take(s)).collect())
    })
}

pub fn ltz(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    Ok(ltz_many(p, &[x])?.remove(0))
}

/// 1 - b for shared integer bits b.
pub fn not(p: &Party, b: &RingTensor) -> RingTensor {
    p.add_constant(&b.neg(), 1)
}
