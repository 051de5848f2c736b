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
//! 8 rounds and 192 bytes an element each way.

use crate::mpc::dcf;
use crate::mpc::dealer::Correlation;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;
use rayon::prelude::*;

/// Additive shares of [x < 0] (integers 0/1) for several tensors at once: 1 round in all.
pub fn ltz_many(p: &mut Party, xs: &[&RingTensor]) -> Result<Vec<RingTensor>> {
    p.labelled("ltz", |p| {
        let flat: Vec<u64> = xs.iter().flat_map(|x| x.data().iter().copied()).collect();
        let len = flat.len();
        let keys = p.deal(
            &Correlation::Comparison { len },
            &[&[len], &[2 * len], &[len], &[dcf::WORDS * len]],
        )?;
        let (r, roots, m, words) = (
            keys[0].data(),
            keys[1].data(),
            keys[2].data(),
            keys[3].data(),
        );
        let masked: Vec<u64> = flat
            .iter()
            .zip(r)
            .map(|(x, r)| x.wrapping_add(*r))
            .collect();
        let y = p.open(&RingTensor::new(&[len], masked)?)?;
        let (party, client) = (p.id, p.is_client());
        let low = (1u64 << dcf::BITS) - 1;
        let roots: Vec<u128> = roots
            .chunks(2)
            .map(|w| w[0] as u128 | (w[1] as u128) << 64)
            .collect();
        let inputs: Vec<u64> = y.data().iter().map(|y| y & low).collect();
        const CHUNK: usize = 512;
        let shares: Vec<u64> = inputs
            .par_chunks(CHUNK)
            .enumerate()
            .flat_map_iter(|(c, xs)| {
                let start = c * CHUNK;
                let keys = &words[start * dcf::WORDS..(start + xs.len()) * dcf::WORDS];
                dcf::evaluate_many(party, &roots[start..start + xs.len()], keys, xs)
            })
            .collect();
        let bits: Vec<u64> = shares
            .iter()
            .zip(m)
            .zip(y.data())
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
            .collect();
        RingTensor::split_like(&bits, xs)
    })
}

pub fn ltz(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    Ok(ltz_many(p, &[x])?.remove(0))
}
