//! A distributed comparison function (DCF): function secret sharing of f(x) = beta if x < alpha
//! else 0 over 63-bit inputs, after Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar and Rathee,
//! "Function Secret Sharing for Mixed-Mode and Fixed-Point Secure Computation" (Eurocrypt 2021),
//! figure 1. The dealer makes two keys; each party evaluates its own on a public input, and the
//! two outputs are additive shares (mod 2^64) of f(x). A key alone reveals nothing about alpha or beta.
//!
//! A key is a 128-bit root seed (the party's own) plus correction words common to both keys:
//! per level a seed, a value and two control bits, and one final value. The PRG expanding a seed
//! into two child seeds, two control bits and two values is fixed-key AES in Matyas-Meyer-Oseas
//! mode (three blocks per node), so evaluating a key costs 3 * 63 AES blocks.
//!
//! No maintained crate on crates.io offers a DCF with arithmetic output (the FSS crates found are
//! point functions or unmaintained), so it lives here in one file, tested against plaintext.

use std::sync::OnceLock;

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;

/// Input bits: the comparison circuit needs the low 63 bits of a ring element.
pub const BITS: usize = 63;
/// Correction words of one key pair as u64 words: per level (seed lo, seed hi, value), then the
/// left and right control bits of every level packed in two words, then the final value.
pub const WORDS: usize = 3 * BITS + 3;

fn cipher() -> &'static Aes128 {
    static CIPHER: OnceLock<Aes128> = OnceLock::new();
    // A fixed public key: MMO turns the permutation into a one-way compression of the seed.
    CIPHER.get_or_init(|| Aes128::new(&GenericArray::from(*b"post-dcf-prg-key")))
}

/// G(s): two child seeds (control bit cleared), two control bits and two 64-bit values.
struct Children {
    seeds: [u128; 2],
    bits: [u8; 2],
    values: [u64; 2],
}

/// G of two seeds at once (six AES blocks through the cipher together).
fn expand_pair(seeds: [u128; 2]) -> [Children; 2] {
    let inputs: [u128; 6] = std::array::from_fn(|k| seeds[k / 3] ^ (k % 3) as u128);
    let mut blocks = inputs.map(|i| GenericArray::from(i.to_le_bytes()));
    cipher().encrypt_blocks(&mut blocks);
    let out: [u128; 6] = std::array::from_fn(|k| u128::from_le_bytes(blocks[k].into()) ^ inputs[k]);
    [
        children([out[0], out[1], out[2]]),
        children([out[3], out[4], out[5]]),
    ]
}

fn expand(seed: u128) -> Children {
    let inputs = [seed, seed ^ 1, seed ^ 2];
    let mut blocks = inputs.map(|i| GenericArray::from(i.to_le_bytes()));
    cipher().encrypt_blocks(&mut blocks);
    children(std::array::from_fn(|k| {
        u128::from_le_bytes(blocks[k].into()) ^ inputs[k]
    }))
}

/// The three PRG blocks of a node as its children.
fn children(out: [u128; 3]) -> Children {
    Children {
        seeds: [out[0] & !1, out[1] & !1],
        bits: [(out[0] & 1) as u8, (out[1] & 1) as u8],
        values: [out[2] as u64, (out[2] >> 64) as u64],
    }
}

/// (-1)^t x in Z_2^64.
fn signed(x: u64, t: u8) -> u64 {
    if t == 1 {
        x.wrapping_neg()
    } else {
        x
    }
}

fn bit_of(x: u64, level: usize) -> usize {
    ((x >> (BITS - 1 - level)) & 1) as usize
}

/// The state of key generation along alpha's path: both parties' seeds and control bits, and the
/// value correction so far.
struct PathState {
    s: [u128; 2],
    t: [u8; 2],
    v_alpha: u64,
}

/// One level of key generation: writes the level's correction words into `out` and its control
/// bits into `t_bits`, and moves the state one level down alpha's path.
fn generate_level(
    st: &mut PathState,
    e: [Children; 2],
    a: usize,
    beta: u64,
    level: usize,
    out: &mut [u64],
    t_bits: &mut [u64; 2],
) {
    let (keep, lose) = (a, 1 - a);
    let (e0, e1) = (&e[0], &e[1]);
    let s_cw = e0.seeds[lose] ^ e1.seeds[lose];
    let mut v_cw = signed(
        e1.values[lose]
            .wrapping_sub(e0.values[lose])
            .wrapping_sub(st.v_alpha),
        st.t[1],
    );
    if lose == 0 {
        // Inputs that leave the path to the left are below alpha: they collect beta.
        v_cw = v_cw.wrapping_add(signed(beta, st.t[1]));
    }
    st.v_alpha = st
        .v_alpha
        .wrapping_sub(e1.values[keep])
        .wrapping_add(e0.values[keep])
        .wrapping_add(signed(v_cw, st.t[1]));
    let t_cw = [
        e0.bits[0] ^ e1.bits[0] ^ a as u8 ^ 1,
        e0.bits[1] ^ e1.bits[1] ^ a as u8,
    ];
    out[3 * level] = s_cw as u64;
    out[3 * level + 1] = (s_cw >> 64) as u64;
    out[3 * level + 2] = v_cw;
    t_bits[0] |= (t_cw[0] as u64) << level;
    t_bits[1] |= (t_cw[1] as u64) << level;
    for (b, e) in e.iter().enumerate() {
        st.s[b] = e.seeds[keep] ^ if st.t[b] == 1 { s_cw } else { 0 };
        st.t[b] = e.bits[keep] ^ (st.t[b] & t_cw[keep]);
    }
}

fn finish_key(st: &PathState, t_bits: [u64; 2], out: &mut [u64]) {
    out[3 * BITS] = t_bits[0];
    out[3 * BITS + 1] = t_bits[1];
    out[3 * BITS + 2] = signed(
        (st.s[1] as u64)
            .wrapping_sub(st.s[0] as u64)
            .wrapping_sub(st.v_alpha),
        st.t[1],
    );
}

/// The correction words of the key pair for f(x) = beta if x < alpha else 0, from the two
/// parties' root seeds; written into `out` (WORDS words).
pub fn generate(alpha: u64, beta: u64, roots: [u128; 2], out: &mut [u64]) {
    assert_eq!(out.len(), WORDS, "correction words of one key");
    let mut st = PathState {
        s: roots,
        t: [0, 1],
        v_alpha: 0,
    };
    let mut t_bits = [0u64; 2];
    for level in 0..BITS {
        let e = expand_pair(st.s);
        generate_level(
            &mut st,
            e,
            bit_of(alpha, level),
            beta,
            level,
            out,
            &mut t_bits,
        );
    }
    finish_key(&st, t_bits, out);
}

/// Party `party`'s share of f(x), from its root seed and the common correction words.
pub fn evaluate(party: usize, root: u128, words: &[u64], x: u64) -> u64 {
    let (t_left, t_right) = (words[3 * BITS], words[3 * BITS + 1]);
    let (mut s, mut t) = (root, party as u8);
    let mut v = 0u64;
    for level in 0..BITS {
        let mut e = expand(s);
        let s_cw = words[3 * level] as u128 | (words[3 * level + 1] as u128) << 64;
        let v_cw = words[3 * level + 2];
        if t == 1 {
            e.seeds[0] ^= s_cw;
            e.seeds[1] ^= s_cw;
            e.bits[0] ^= ((t_left >> level) & 1) as u8;
            e.bits[1] ^= ((t_right >> level) & 1) as u8;
        }
        let dir = bit_of(x, level);
        let term = e.values[dir].wrapping_add(if t == 1 { v_cw } else { 0 });
        v = v.wrapping_add(signed(term, party as u8));
        s = e.seeds[dir];
        t = e.bits[dir];
    }
    let last = (s as u64).wrapping_add(if t == 1 { words[3 * BITS + 2] } else { 0 });
    v.wrapping_add(signed(last, party as u8))
}

/// [`evaluate`] for many keys and inputs at once: level by level, so that the AES blocks of a
/// whole chunk go through the cipher together (AES-NI pipelines them).
pub fn evaluate_many(party: usize, roots: &[u128], words: &[u64], xs: &[u64]) -> Vec<u64> {
    const CHUNK: usize = 64;
    let mut out = Vec::with_capacity(xs.len());
    let mut blocks = vec![GenericArray::from([0u8; 16]); 3 * CHUNK];
    for (c, chunk) in xs.chunks(CHUNK).enumerate() {
        let n = chunk.len();
        let base = c * CHUNK;
        let mut s: Vec<u128> = roots[base..base + n].to_vec();
        let mut t = vec![party as u8; n];
        let mut v = vec![0u64; n];
        for level in 0..BITS {
            for j in 0..n {
                for k in 0..3 {
                    blocks[3 * j + k] = GenericArray::from((s[j] ^ k as u128).to_le_bytes());
                }
            }
            cipher().encrypt_blocks(&mut blocks[..3 * n]);
            for j in 0..n {
                let key = &words[(base + j) * WORDS..(base + j + 1) * WORDS];
                let out: [u128; 3] = std::array::from_fn(|k| {
                    u128::from_le_bytes(blocks[3 * j + k].into()) ^ (s[j] ^ k as u128)
                });
                let dir = bit_of(chunk[j], level);
                let mut seed = out[dir] & !1;
                let mut bit = (out[dir] & 1) as u8;
                let mut value = if dir == 0 {
                    out[2] as u64
                } else {
                    (out[2] >> 64) as u64
                };
                if t[j] == 1 {
                    seed ^= key[3 * level] as u128 | (key[3 * level + 1] as u128) << 64;
                    let t_cw = if dir == 0 {
                        key[3 * BITS]
                    } else {
                        key[3 * BITS + 1]
                    };
                    bit ^= ((t_cw >> level) & 1) as u8;
                    value = value.wrapping_add(key[3 * level + 2]);
                }
                v[j] = v[j].wrapping_add(signed(value, party as u8));
                s[j] = seed;
                t[j] = bit;
            }
        }
        for j in 0..n {
            let key = &words[(base + j) * WORDS..(base + j + 1) * WORDS];
            let last = (s[j] as u64).wrapping_add(if t[j] == 1 { key[3 * BITS + 2] } else { 0 });
            out.push(v[j].wrapping_add(signed(last, party as u8)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    const MASK: u64 = (1 << BITS) - 1;

    #[test]
    fn shares_add_up_to_the_comparison() {
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let mut words = vec![0u64; WORDS];
        for _ in 0..60 {
            let alpha = rng.random::<u64>() & MASK;
            let beta: u64 = rng.random();
            let roots = [rng.random::<u128>(), rng.random::<u128>()];
            generate(alpha, beta, roots, &mut words);
            let mut inputs: Vec<u64> = (0..20).map(|_| rng.random::<u64>() & MASK).collect();
            inputs.extend([
                0,
                MASK,
                alpha,
                alpha.wrapping_sub(1) & MASK,
                (alpha + 1) & MASK,
            ]);
            // Inputs sharing a long prefix with alpha exercise the deep levels.
            inputs.extend((0..8).map(|_| alpha ^ (rng.random::<u64>() & 0xFF)));
            // The batched evaluation (what the comparison protocol runs) against the same keys.
            let keys: Vec<u64> = inputs.iter().flat_map(|_| words.iter().copied()).collect();
            let batched: [Vec<u64>; 2] =
                [0, 1].map(|b| evaluate_many(b, &vec![roots[b]; inputs.len()], &keys, &inputs));
            for (i, &x) in inputs.iter().enumerate() {
                let sum =
                    evaluate(0, roots[0], &words, x).wrapping_add(evaluate(1, roots[1], &words, x));
                let want = if x < alpha { beta } else { 0 };
                assert_eq!(sum, want, "alpha {alpha:#x}, x {x:#x}");
                let batched_sum = batched[0][i].wrapping_add(batched[1][i]);
                assert_eq!(batched_sum, want, "batched, x {x:#x}");
            }
        }
    }

    #[test]
    fn one_key_alone_looks_the_same_whatever_alpha() {
        // Party 0's output on a fixed input, over many keys, is uniform for alpha below and
        // above the input alike: its top bit is balanced in both cases.
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let mut words = vec![0u64; WORDS];
        let x = 1u64 << 40;
        for alpha in [0u64, MASK] {
            let mut high = 0;
            for _ in 0..2000 {
                let roots = [rng.random::<u128>(), rng.random::<u128>()];
                generate(alpha, 1, roots, &mut words);
                high += (evaluate(0, roots[0], &words, x) >> 63) as usize;
            }
            assert!(
                (800..1200).contains(&high),
                "alpha {alpha:#x}: {high} of 2000"
            );
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    #[test]
    #[ignore = "timing, run by hand"]
    fn evaluation_speed() {
        let mut words = vec![0u64; WORDS];
        generate(12345, 1, [1, 2], &mut words);
        let start = std::time::Instant::now();
        let mut acc = 0u64;
        for x in 0..20_000u64 {
            acc = acc.wrapping_add(evaluate(0, 1, &words, x * 7919));
        }
        let per = start.elapsed().as_secs_f64() / 20_000.0;
        println!("{:.2} us per evaluation ({acc})", per * 1e6);
        let keys: Vec<u64> = (0..20_000).flat_map(|_| words.iter().copied()).collect();
        let roots = vec![1u128; 20_000];
        let xs: Vec<u64> = (0..20_000u64).map(|x| x * 7919).collect();
        let start = std::time::Instant::now();
        let batched = evaluate_many(0, &roots, &keys, &xs);
        let per = start.elapsed().as_secs_f64() / 20_000.0;
        println!("{:.2} us per batched evaluation", per * 1e6);
        let one: Vec<u64> = xs.iter().map(|&x| evaluate(0, 1, &words, x)).collect();
        assert_eq!(batched, one);
        let start = std::time::Instant::now();
        for a in 0..20_000u64 {
            generate(a * 7919, 1, [a as u128, 3], &mut words);
        }
        let per = start.elapsed().as_secs_f64() / 20_000.0;
        println!("{:.2} us per key generation", per * 1e6);
    }
}

#[cfg(test)]
mod raw_speed {
    use super::*;

    #[test]
    #[ignore = "timing, run by hand"]
    fn aes_blocks_per_second() {
        let mut blocks = vec![GenericArray::from([7u8; 16]); 1 << 20];
        let start = std::time::Instant::now();
        cipher().encrypt_blocks(&mut blocks);
        println!(
            "{:.2} ns per AES block",
            start.elapsed().as_secs_f64() * 1e9 / (1 << 20) as f64
        );
    }
}
