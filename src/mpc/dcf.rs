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

/// Input bits at most: the comparison of a whole ring element needs its low 63 bits. A key may
/// cover fewer (the low `bits` of its inputs), for inputs known to be bounded: one level a bit.
pub const BITS: usize = 63;
/// The widest payload a key carries (a comparison bit and its products with three masks).
pub const MAX_WIDTH: usize = 4;
/// Correction words of one key pair with a one-word payload over [`BITS`] bits.
pub const WORDS: usize = words(1, BITS);

/// Correction words of one key pair over `bits` input bits whose payload has `width` words: per
/// level (seed lo, seed hi, `width` values), then the left and right control bits of every level
/// packed in two words, then the final `width` values.
pub const fn words(width: usize, bits: usize) -> usize {
    (2 + width) * bits + 2 + width
}

fn cipher() -> &'static Aes128 {
    static CIPHER: OnceLock<Aes128> = OnceLock::new();
    // A fixed public key: MMO turns the permutation into a one-way compression of the seed.
    CIPHER.get_or_init(|| Aes128::new(&GenericArray::from(*b"post-dcf-prg-key")))
}

type Block = GenericArray<u8, aes::cipher::consts::U16>;

/// MMO(x) = AES_k(x) xor x: `out[i]` from `inputs[i]`, through the caller's working `blocks`.
fn mmo(inputs: &[u128], blocks: &mut [Block], out: &mut [u128]) {
    let blocks = &mut blocks[..inputs.len()];
    for (b, i) in blocks.iter_mut().zip(inputs) {
        *b = Block::from(i.to_le_bytes());
    }
    cipher().encrypt_blocks(blocks);
    for ((o, b), i) in out.iter_mut().zip(blocks.iter()).zip(inputs) {
        *o = u128::from_le_bytes((*b).into()) ^ i;
    }
}

/// G(s): two child seeds (control bit cleared), two control bits and two payloads of `width` words.
/// Block k of the seed (s xor k) gives the left and right seeds (k = 0, 1) and the left and right
/// value word k - 2 (k >= 2): 2 + width blocks per node.
#[derive(Clone, Copy)]
struct Children {
    seeds: [u128; 2],
    bits: [u8; 2],
    values: [[u64; MAX_WIDTH]; 2],
}

fn children(out: &[u128]) -> Children {
    let mut values = [[0u64; MAX_WIDTH]; 2];
    for (k, block) in out[2..].iter().enumerate() {
        values[0][k] = *block as u64;
        values[1][k] = (*block >> 64) as u64;
    }
    Children {
        seeds: [out[0] & !1, out[1] & !1],
        bits: [(out[0] & 1) as u8, (out[1] & 1) as u8],
        values,
    }
}

/// G of the two parties' seeds during key generation.
fn expand_pair(seeds: [u128; 2], width: usize) -> [Children; 2] {
    const MAX_NODE: usize = 2 + MAX_WIDTH;
    let n = 2 + width;
    let mut inputs = [0u128; 2 * MAX_NODE];
    for (b, s) in seeds.iter().enumerate() {
        for k in 0..n {
            inputs[b * n + k] = s ^ k as u128;
        }
    }
    let mut blocks = [Block::default(); 2 * MAX_NODE];
    let mut out = [0u128; 2 * MAX_NODE];
    mmo(&inputs[..2 * n], &mut blocks, &mut out);
    [children(&out[..n]), children(&out[n..2 * n])]
}

/// The leaf's seed as a payload: word 0 is the seed's low half, word k >= 1 comes from
/// MMO(s xor (k + 2)). Both keys convert alike, so equal seeds off alpha's path cancel.
fn convert(seed: u128, width: usize, blocks: &mut [Block], out: &mut [u64]) {
    out[0] = seed as u64;
    let inputs: [u128; MAX_WIDTH] = std::array::from_fn(|k| seed ^ (k + 3) as u128);
    let mut mixed = [0u128; MAX_WIDTH];
    mmo(&inputs[..width - 1], blocks, &mut mixed);
    for k in 1..width {
        out[k] = mixed[k - 1] as u64;
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

/// The bit of `x` read at `level` of a tree over `bits` bits (most significant first).
fn bit_of(x: u64, level: usize, bits: usize) -> usize {
    ((x >> (bits - 1 - level)) & 1) as usize
}

/// The state of key generation along alpha's path: both parties' seeds and control bits, and the
/// value correction so far.
struct PathState {
    s: [u128; 2],
    t: [u8; 2],
    v_alpha: [u64; MAX_WIDTH],
}

/// One level of key generation: writes the level's correction words into `out` and its control
/// bits into `t_bits`, and moves the state one level down alpha's path.
fn generate_level(
    st: &mut PathState,
    e: &[Children],
    a: usize,
    beta: &[u64],
    level: usize,
    out: &mut [u64],
    t_bits: &mut [u64; 2],
) {
    let width = beta.len();
    let (keep, lose) = (a, 1 - a);
    let (e0, e1) = (&e[0], &e[1]);
    let s_cw = e0.seeds[lose] ^ e1.seeds[lose];
    let row = (2 + width) * level;
    out[row] = s_cw as u64;
    out[row + 1] = (s_cw >> 64) as u64;
    for k in 0..width {
        let mut v_cw = signed(
            e1.values[lose][k]
                .wrapping_sub(e0.values[lose][k])
                .wrapping_sub(st.v_alpha[k]),
            st.t[1],
        );
        if lose == 0 {
            // Inputs that leave the path to the left are below alpha: they collect beta.
            v_cw = v_cw.wrapping_add(signed(beta[k], st.t[1]));
        }
        st.v_alpha[k] = st.v_alpha[k]
            .wrapping_sub(e1.values[keep][k])
            .wrapping_add(e0.values[keep][k])
            .wrapping_add(signed(v_cw, st.t[1]));
        out[row + 2 + k] = v_cw;
    }
    let t_cw = [
        e0.bits[0] ^ e1.bits[0] ^ a as u8 ^ 1,
        e0.bits[1] ^ e1.bits[1] ^ a as u8,
    ];
    t_bits[0] |= (t_cw[0] as u64) << level;
    t_bits[1] |= (t_cw[1] as u64) << level;
    for (b, e) in e.iter().enumerate() {
        st.s[b] = e.seeds[keep] ^ if st.t[b] == 1 { s_cw } else { 0 };
        st.t[b] = e.bits[keep] ^ (st.t[b] & t_cw[keep]);
    }
}

/// The correction words of the key pair for f(x) = beta if x < alpha else 0 on `bits`-bit inputs
/// (beta: 1 to [`MAX_WIDTH`] words), from the two parties' root seeds; written into `out`
/// (`words(width, bits)`).
pub fn generate(alpha: u64, beta: &[u64], bits: usize, roots: [u128; 2], out: &mut [u64]) {
    let width = beta.len();
    assert!(
        (1..=MAX_WIDTH).contains(&width),
        "payload of 1 to {MAX_WIDTH} words"
    );
    assert!((1..=BITS).contains(&bits), "inputs of 1 to {BITS} bits");
    assert_eq!(out.len(), words(width, bits), "correction words of one key");
    let mut st = PathState {
        s: roots,
        t: [0, 1],
        v_alpha: [0; MAX_WIDTH],
    };
    let mut t_bits = [0u64; 2];
    for level in 0..bits {
        let e = expand_pair(st.s, width);
        generate_level(
            &mut st,
            &e,
            bit_of(alpha, level, bits),
            beta,
            level,
            out,
            &mut t_bits,
        );
    }
    let tail = (2 + width) * bits;
    out[tail] = t_bits[0];
    out[tail + 1] = t_bits[1];
    let mut blocks = [Block::default(); MAX_WIDTH];
    let mut last = [[0u64; MAX_WIDTH]; 2];
    for (seed, last) in st.s.iter().zip(last.iter_mut()) {
        convert(*seed, width, &mut blocks, last);
    }
    for k in 0..width {
        out[tail + 2 + k] = signed(
            last[1][k]
                .wrapping_sub(last[0][k])
                .wrapping_sub(st.v_alpha[k]),
            st.t[1],
        );
    }
}

/// Party `party`'s shares of f(x) (`width` words), from its root seed and the correction words
/// of a key over `bits`-bit inputs.
pub fn evaluate(
    party: usize,
    root: u128,
    words: &[u64],
    x: u64,
    (width, bits): (usize, usize),
) -> Vec<u64> {
    evaluate_many(party, &[root], words, &[x], (width, bits))
}

/// [`evaluate`] for many keys and inputs at once (`width` output words per input, flattened):
/// level by level, so that the AES blocks of a whole chunk go through the cipher together
/// (AES-NI pipelines them).
pub fn evaluate_many(
    party: usize,
    roots: &[u128],
    words: &[u64],
    xs: &[u64],
    (width, bits): (usize, usize),
) -> Vec<u64> {
    assert!((1..=BITS).contains(&bits), "inputs of 1 to {BITS} bits");
    // The width as a constant lets the compiler unroll the per-word loops of the hot path.
    match width {
        1 => evaluate_width::<1>(party, roots, words, xs, bits),
        2 => evaluate_width::<2>(party, roots, words, xs, bits),
        3 => evaluate_width::<3>(party, roots, words, xs, bits),
        4 => evaluate_width::<4>(party, roots, words, xs, bits),
        _ => panic!("payload of 1 to {MAX_WIDTH} words, got {width}"),
    }
}

fn evaluate_width<const W: usize>(
    party: usize,
    roots: &[u128],
    words: &[u64],
    xs: &[u64],
    bits: usize,
) -> Vec<u64> {
    const CHUNK: usize = 64;
    let key_len = self::words(W, bits);
    let per_node = 2 + W;
    let tail = per_node * bits;
    let mut out = vec![0u64; xs.len() * W];
    let mut blocks = vec![Block::default(); per_node * CHUNK];
    let mut last = [0u64; MAX_WIDTH];
    for (c, chunk) in xs.chunks(CHUNK).enumerate() {
        let n = chunk.len();
        let base = c * CHUNK;
        let mut s: Vec<u128> = roots[base..base + n].to_vec();
        let mut t = vec![party as u8; n];
        let mut v = vec![[0u64; W]; n];
        for level in 0..bits {
            for (j, s) in s.iter().enumerate() {
                for k in 0..per_node {
                    blocks[per_node * j + k] = Block::from((s ^ k as u128).to_le_bytes());
                }
            }
            cipher().encrypt_blocks(&mut blocks[..per_node * n]);
            let row = per_node * level;
            for j in 0..n {
                let key = &words[(base + j) * key_len..(base + j + 1) * key_len];
                let node = |k: usize| {
                    u128::from_le_bytes(blocks[per_node * j + k].into()) ^ (s[j] ^ k as u128)
                };
                let dir = bit_of(chunk[j], level, bits);
                let out_dir = node(dir);
                let mut seed = out_dir & !1;
                let mut bit = (out_dir & 1) as u8;
                let on = t[j] == 1;
                if on {
                    seed ^= key[row] as u128 | (key[row + 1] as u128) << 64;
                    bit ^= ((key[tail + dir] >> level) & 1) as u8;
                }
                for k in 0..W {
                    let mut value = (node(2 + k) >> (64 * dir)) as u64;
                    if on {
                        value = value.wrapping_add(key[row + 2 + k]);
                    }
                    v[j][k] = v[j][k].wrapping_add(signed(value, party as u8));
                }
                s[j] = seed;
                t[j] = bit;
            }
        }
        for j in 0..n {
            let key = &words[(base + j) * key_len..(base + j + 1) * key_len];
            convert(s[j], W, &mut blocks, &mut last);
            for k in 0..W {
                let fin = last[k].wrapping_add(if t[j] == 1 { key[tail + 2 + k] } else { 0 });
                out[(base + j) * W + k] = v[j][k].wrapping_add(signed(fin, party as u8));
            }
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
        for trial in 0..80 {
            let width = 1 + trial % MAX_WIDTH;
            // Full keys, and keys over fewer bits (inputs then read modulo 2^bits).
            let bits = [BITS, 46, 20, 1][trial / 20];
            let mask = (1u64 << bits) - 1;
            let mut words = vec![0u64; super::words(width, bits)];
            let alpha = rng.random::<u64>() & mask;
            let beta: Vec<u64> = (0..width).map(|_| rng.random()).collect();
            let roots = [rng.random::<u128>(), rng.random::<u128>()];
            generate(alpha, &beta, bits, roots, &mut words);
            let mut inputs: Vec<u64> = (0..20).map(|_| rng.random::<u64>() & mask).collect();
            inputs.extend([
                0,
                mask,
                alpha,
                alpha.wrapping_sub(1) & mask,
                (alpha + 1) & mask,
            ]);
            // Inputs sharing a long prefix with alpha exercise the deep levels.
            inputs.extend((0..8).map(|_| alpha ^ (rng.random::<u64>() & 0xFF & mask)));
            // The batched evaluation (what the comparison protocol runs) against the same keys.
            let keys: Vec<u64> = inputs.iter().flat_map(|_| words.iter().copied()).collect();
            let batched: [Vec<u64>; 2] = [0, 1].map(|b| {
                let roots = vec![roots[b]; inputs.len()];
                evaluate_many(b, &roots, &keys, &inputs, (width, bits))
            });
            for (i, &x) in inputs.iter().enumerate() {
                let one = [0, 1].map(|b| evaluate(b, roots[b], &words, x, (width, bits)));
                for k in 0..width {
                    let want = if x < alpha { beta[k] } else { 0 };
                    let sum = one[0][k].wrapping_add(one[1][k]);
                    assert_eq!(sum, want, "alpha {alpha:#x}, x {x:#x}, word {k} of {width}");
                    let batched_sum =
                        batched[0][i * width + k].wrapping_add(batched[1][i * width + k]);
                    assert_eq!(batched_sum, want, "batched, x {x:#x}, word {k}");
                }
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
                generate(alpha, &[1], BITS, roots, &mut words);
                high += (evaluate(0, roots[0], &words, x, (1, BITS))[0] >> 63) as usize;
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
        for (width, bits) in [(1, BITS), (1, 46), (2, BITS), (3, BITS)] {
            let mut words = vec![0u64; super::words(width, bits)];
            let beta = vec![1u64; width];
            generate(12345, &beta, bits, [1, 2], &mut words);
            let keys: Vec<u64> = (0..20_000).flat_map(|_| words.iter().copied()).collect();
            let roots = vec![1u128; 20_000];
            let xs: Vec<u64> = (0..20_000u64).map(|x| x * 7919 % (1 << bits)).collect();
            let start = std::time::Instant::now();
            let batched = evaluate_many(0, &roots, &keys, &xs, (width, bits));
            let per = start.elapsed().as_secs_f64() / 20_000.0;
            println!(
                "width {width}, {bits} bits: {:.2} us per batched evaluation",
                per * 1e6
            );
            let one: Vec<u64> = xs
                .iter()
                .flat_map(|&x| evaluate(0, 1, &words, x, (width, bits)))
                .collect();
            assert_eq!(batched, one);
            let start = std::time::Instant::now();
            for a in 0..20_000u64 {
                generate(
                    a * 7919 % (1 << bits),
                    &beta,
                    bits,
                    [a as u128, 3],
                    &mut words,
                );
            }
            let per = start.elapsed().as_secs_f64() / 20_000.0;
            println!(
                "width {width}, {bits} bits: {:.2} us per key generation",
                per * 1e6
            );
        }
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
