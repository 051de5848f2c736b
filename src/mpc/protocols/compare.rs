//! Less-than-zero: shares of x -> additive shares of the bit [x < 0], i.e. the top bit of x.
//!
//! x = x0 + x1 (mod 2^64), where the client knows x0 and the server x1. msb(x) = msb(x0) ^ msb(x1) ^
//! carry into bit 63, and that carry comes from a Kogge-Stone prefix over the low bits, run on
//! xor-shared 64-bit words (all 64 bit positions of an element in one word):
//!   g = x0 & x1, p = x0 ^ x1;  for d in 1, 2, 4, 8, 16, 32: g ^= p & (g << d), p &= p << d
//! One AND round for g, six for the levels (both ANDs of a level share a round), then one round to
//! turn the xor bit into an additive one (B2A with a dealer bit). Cost: 8 rounds whatever the
//! number of elements; each way 8 * (2 + 5*4 + 2) = 192 bytes per element plus one bit.
//!
//! Why not function secret sharing (one online round, SIGMA/Orca): its keys are about 1 KB per
//! element and need a PRG evaluation per bit; the circuit needs no AES and its dealer traffic is
//! 3 words per AND. FSS is the next lever for WAN rounds.

use crate::mpc::dealer::Correlation;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// AND of several pairs of xor-shared word tensors in one round (Beaver over GF(2)^64).
pub fn and_many(p: &mut Party, pairs: &[(&RingTensor, &RingTensor)]) -> Result<Vec<RingTensor>> {
    let words: usize = pairs.iter().map(|(x, _)| x.len()).sum();
    let t = p.deal(
        &Correlation::AndTriple { words },
        &[&[words], &[words], &[words]],
    )?;
    let (a, b, c) = (t[0].data(), t[1].data(), t[2].data());
    let mut masked = Vec::with_capacity(2 * words);
    let mut offset = 0;
    for (x, y) in pairs {
        masked.extend(x.data().iter().zip(&a[offset..]).map(|(v, m)| v ^ m));
        masked.extend(y.data().iter().zip(&b[offset..]).map(|(v, m)| v ^ m));
        offset += x.len();
    }
    let opened = p
        .open_xor_many(&[&RingTensor::new(&[masked.len()], masked)?])?
        .remove(0);
    let opened = opened.data();
    let client = p.is_client();
    let mut out = Vec::with_capacity(pairs.len());
    let (mut offset, mut pos) = (0, 0);
    for (x, _) in pairs {
        let n = x.len();
        let (e, f) = (&opened[pos..pos + n], &opened[pos + n..pos + 2 * n]);
        let data = (0..n)
            .map(|j| {
                let k = offset + j;
                let z = c[k] ^ (e[j] & b[k]) ^ (f[j] & a[k]);
                if client {
                    z ^ (e[j] & f[j])
                } else {
                    z
                }
            })
            .collect();
        out.push(RingTensor::new(x.shape(), data)?);
        offset += n;
        pos += 2 * n;
    }
    Ok(out)
}

/// Xor-shared bits (in bit 0) -> additive shares of the same bits, one round.
/// With a dealer bit r (xor and additive shares): open t = s ^ r (64 bits to a word), then
/// s = t + r - 2 t r.
pub fn bit_to_arith(p: &mut Party, bits: &RingTensor) -> Result<RingTensor> {
    let len = bits.len();
    let pair = p.deal(&Correlation::BitPair { len }, &[&[len], &[len]])?;
    let masked: Vec<u64> = bits
        .data()
        .iter()
        .zip(pair[0].data())
        .map(|(s, r)| (s ^ r) & 1)
        .collect();
    let packed: Vec<u64> = masked
        .chunks(64)
        .map(|c| c.iter().enumerate().fold(0u64, |w, (i, &b)| w | (b << i)))
        .collect();
    let opened = p
        .open_xor_many(&[&RingTensor::new(&[packed.len()], packed)?])?
        .remove(0);
    let client = p.is_client();
    let data = (0..len)
        .map(|i| {
            let t = (opened.data()[i / 64] >> (i % 64)) & 1;
            let r = pair[1].data()[i];
            let share = if t == 1 { r.wrapping_neg() } else { r };
            if client {
                share.wrapping_add(t)
            } else {
                share
            }
        })
        .collect();
    RingTensor::new(bits.shape(), data)
}

/// Additive shares of [x < 0] (integers 0/1) for several tensors at once: 8 rounds in all.
pub fn ltz_many(p: &mut Party, xs: &[&RingTensor]) -> Result<Vec<RingTensor>> {
    p.labelled("ltz", |p| {
        let flat: Vec<u64> = xs.iter().flat_map(|x| x.data().iter().copied()).collect();
        let len = flat.len();
        let own = RingTensor::new(&[len], flat)?;
        // Xor shares of the two addends: the client holds (x0, 0), the server (0, x1).
        let zero = RingTensor::zeros(&[len]);
        let (a, b) = if p.is_client() {
            (own.clone(), zero)
        } else {
            (zero, own.clone())
        };
        let mut prop = own.clone(); // p = x0 ^ x1, shared as (x0, x1)
        let mut gen = and_many(p, &[(&a, &b)])?.remove(0);
        for d in [1u32, 2, 4, 8, 16, 32] {
            let g_shift = gen.map(|w| w << d);
            if d < 32 {
                let p_shift = prop.map(|w| w << d);
                let mut ands = and_many(p, &[(&prop, &g_shift), (&prop, &p_shift)])?;
                prop = ands.pop().expect("two ands");
                gen = gen.xor(&ands.pop().expect("two ands"))?;
            } else {
                gen = gen.xor(&and_many(p, &[(&prop, &g_shift)])?.remove(0))?;
            }
        }
        // msb(x) = msb(x0) ^ msb(x1) ^ carry into bit 63 (= generate bit 62 of the prefix).
        let msb = own.zip_map(&gen, "msb", |x, g| ((x >> 63) ^ (g >> 62)) & 1)?;
        let bits = bit_to_arith(p, &msb)?;
        RingTensor::split_like(bits.data(), xs)
    })
}

pub fn ltz(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    Ok(ltz_many(p, &[x])?.remove(0))
}
