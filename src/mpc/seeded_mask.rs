//! A weight-sized mask share kept as a key instead of a tensor.
//!
//! A prepared weight's dealer mask B = B_0 + B_1 is fixed for the session, and each party's share
//! B_p is only ever used in products X B_p. So B_p is the ChaCha12 stream of a 2-word key that
//! the party draws from its own seed (the dealer mirrors that seed, so it draws the same key):
//! word w of the [k, n] row-major mask is word w of the stream, read from any position without
//! the words before it. A product regenerates the mask a band of rows at a time
//! ([`SeededMask::left_product`]), so a party holds 16 bytes for its share of the mask, not 8 k n;
//! the dealer holds both keys and forms C = A (B_0 + B_1) the same way ([`left_product_of_sum`]),
//! never holding a whole mask either.
//!
//! Cost: the mask's words of stream at every product (regenerated, not kept): at one row of X,
//! about 8 times a product with a stored mask, 2.5 times at 16 rows, 1.3 times at 128
//! (`cargo test --release --lib seeded_mask -- --ignored --nocapture`, 768 x 3072). ChaCha rather
//! than AES-128-CTR: on this project's 2-vCPU machines the `aes` crate's CTR stream took 15 to 39
//! ns a word, ChaCha8 3 to 6.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rayon::prelude::*;

use super::matmul::matmul_u64;

/// Mask words regenerated at a time by a product: a band of rows of about 2 MB.
const BAND_WORDS: usize = 1 << 18;
/// Words of the stream one task fills.
const CHUNK_WORDS: usize = 1 << 12;
/// The seed's last 16 bytes: the key's stream is no other stream of the engine.
const DOMAIN: &[u8; 16] = b"post-seeded-mask";

/// One party's share of a [k, n] mask: the key of its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededMask {
    key: [u64; 2],
    k: usize,
    n: usize,
}

impl SeededMask {
    pub fn new(key: [u64; 2], k: usize, n: usize) -> Self {
        Self { key, k, n }
    }

    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// The stream, at word 0.
    fn stream(&self) -> ChaCha12Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.key[0].to_le_bytes());
        seed[8..16].copy_from_slice(&self.key[1].to_le_bytes());
        seed[16..].copy_from_slice(DOMAIN);
        ChaCha12Rng::from_seed(seed)
    }

    /// Rows `r0..r0 + rows` of the mask, row-major, into `out` (resized to fit).
    pub fn rows_into(&self, r0: usize, rows: usize, out: &mut Vec<u64>) {
        out.resize(rows * self.n, 0);
        let stream = self.stream();
        out.par_chunks_mut(CHUNK_WORDS)
            .enumerate()
            .for_each(|(i, chunk)| fill(&stream, r0 * self.n + i * CHUNK_WORDS, chunk));
    }

    /// The whole mask (tests and small weights; products regenerate it by bands).
    pub fn full(&self) -> Vec<u64> {
        let mut out = Vec::new();
        self.rows_into(0, self.k, &mut out);
        out
    }

    /// `data` minus the mask, in place (`data` is [k, n]): a share of W - B without a second
    /// weight-sized buffer.
    pub fn subtract_from(&self, data: &mut [u64]) {
        assert_eq!(
            data.len(),
            self.k * self.n,
            "subtract_from: not a [k, n] tensor"
        );
        let base = self.stream();
        data.par_chunks_mut(CHUNK_WORDS)
            .enumerate()
            .for_each(|(i, chunk)| {
                let mut stream = vec![0u64; chunk.len()];
                fill(&base, i * CHUNK_WORDS, &mut stream);
                for (d, s) in chunk.iter_mut().zip(&stream) {
                    *d = d.wrapping_sub(*s);
                }
            });
    }

    /// X [m, k] times this mask [k, n], regenerated a band of rows at a time.
    pub fn left_product(&self, x: &[u64], m: usize) -> Vec<u64> {
        banded_product(x, m, self.k, self.n, |r0, rows, band| {
            self.rows_into(r0, rows, band)
        })
    }
}

/// X [m, k] times the sum of two masks of one shape, X (B_0 + B_1): how the dealer forms a
/// weight triple's C from both parties' keys, a band at a time.
pub fn left_product_of_sum(x: &[u64], m: usize, a: &SeededMask, b: &SeededMask) -> Vec<u64> {
    assert_eq!(
        a.shape(),
        b.shape(),
        "left_product_of_sum: masks of two shapes"
    );
    let mut other = Vec::new();
    banded_product(x, m, a.k, a.n, |r0, rows, band| {
        a.rows_into(r0, rows, band);
        b.rows_into(r0, rows, &mut other);
        for (s, t) in band.iter_mut().zip(&other) {
            *s = s.wrapping_add(*t);
        }
    })
}

/// X [m, k] times a [k, n] matrix that `band(r0, rows, out)` produces a band of rows at a time.
fn banded_product(
    x: &[u64],
    m: usize,
    k: usize,
    n: usize,
    mut band: impl FnMut(usize, usize, &mut Vec<u64>),
) -> Vec<u64> {
    assert_eq!(x.len(), m * k, "left_product: X is not [m, k]");
    let mut out = vec![0u64; m * n];
    if out.is_empty() || k == 0 {
        return out;
    }
    let rows = (BAND_WORDS / n.max(1)).clamp(1, k);
    let (mut tile, mut left) = (Vec::new(), Vec::new());
    for r0 in (0..k).step_by(rows) {
        let kc = rows.min(k - r0);
        band(r0, kc, &mut tile);
        left.clear();
        for row in x.chunks(k) {
            left.extend_from_slice(&row[r0..r0 + kc]);
        }
        let part = matmul_u64(&left, &tile, m, kc, n);
        for (o, p) in out.iter_mut().zip(&part) {
            *o = o.wrapping_add(*p);
        }
    }
    out
}

/// Words `start..start + out.len()` of `stream` (a copy at word 0).
fn fill(stream: &ChaCha12Rng, start: usize, out: &mut [u64]) {
    let mut rng = stream.clone();
    // The position counts 32-bit words; a mask word is two of them, low first.
    rng.set_word_pos(2 * start as u128);
    let mut bytes = vec![0u8; 8 * out.len()];
    rng.fill_bytes(&mut bytes);
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *o = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
        (0..m * n)
            .map(|ij| {
                (0..k).fold(0u64, |acc, p| {
                    acc.wrapping_add(a[ij / n * k + p].wrapping_mul(b[p * n + ij % n]))
                })
            })
            .collect()
    }

    fn words(len: usize, seed: u64) -> Vec<u64> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    }

    /// Regenerated bands and chunks equal the stream drawn whole, block by block; products
    /// against the regenerated mask equal products against the stored one.
    #[test]
    fn regenerated_tiles_equal_the_full_mask() {
        // Word w is the w-th word of the key's stream, drawn here one after another.
        let key: [u64; 2] = [0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210];
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&key[0].to_le_bytes());
        seed[8..16].copy_from_slice(&key[1].to_le_bytes());
        seed[16..].copy_from_slice(b"post-seeded-mask");
        let mut rng = ChaCha12Rng::from_seed(seed);
        let reference: Vec<u64> = (0..40_002).map(|_| rng.next_u64()).collect();
        for &(k, n) in &[(1, 1), (3, 7), (40, 501), (7, 5000)] {
            let mask = SeededMask::new(key, k, n);
            let full = mask.full();
            assert_eq!(full, reference[..k * n], "{k}x{n}");
            // Any band of rows, odd starts included.
            for r0 in 0..k {
                let mut band = Vec::new();
                mask.rows_into(r0, k - r0, &mut band);
                assert_eq!(band, full[r0 * n..], "{k}x{n} from row {r0}");
            }
            let mut data = words(k * n, 3);
            let want: Vec<u64> = data
                .iter()
                .zip(&full)
                .map(|(d, b)| d.wrapping_sub(*b))
                .collect();
            mask.subtract_from(&mut data);
            assert_eq!(data, want);
            for m in [1, 5, 17] {
                let x = words(m * k, 5 + m as u64);
                assert_eq!(
                    mask.left_product(&x, m),
                    naive(&x, &full, m, k, n),
                    "{m}x{k}x{n}"
                );
            }
        }
        // A product wider than a band regenerates the mask in several bands.
        let (k, n) = (300, 2000);
        let mask = SeededMask::new([9, 10], k, n);
        let x = words(3 * k, 11);
        assert!(k * n > BAND_WORDS);
        assert_eq!(mask.left_product(&x, 3), naive(&x, &mask.full(), 3, k, n));
        // Another key, another stream.
        assert_ne!(SeededMask::new([9, 11], k, n).full()[..4], mask.full()[..4]);
    }

    /// The dealer's product against the sum of both keys' masks equals the sum of the products
    /// each party forms with its own key: C_0 + C_1 = A B_0 + A B_1.
    #[test]
    fn dealer_and_parties_agree() {
        let (k, n, m) = (130, 2100, 4);
        let (b0, b1) = (SeededMask::new([1, 2], k, n), SeededMask::new([3, 4], k, n));
        let a = words(m * k, 21);
        let dealer = left_product_of_sum(&a, m, &b0, &b1);
        let parties: Vec<u64> = b0
            .left_product(&a, m)
            .iter()
            .zip(b1.left_product(&a, m))
            .map(|(x, y)| x.wrapping_add(y))
            .collect();
        assert_eq!(dealer, parties);
        let sum: Vec<u64> = b0
            .full()
            .iter()
            .zip(b1.full())
            .map(|(x, y)| x.wrapping_add(y))
            .collect();
        assert_eq!(dealer, naive(&a, &sum, m, k, n));
    }

    /// A product with a regenerated mask against one with a stored mask, at GPT-2 small's MLP
    /// shape (768 x 3072): `cargo test --release --lib seeded_mask -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand"]
    fn regenerated_against_stored_speed() {
        let (k, n) = (768, 3072);
        let mask = SeededMask::new([5, 6], k, n);
        let stored = mask.full();
        for m in [1, 16, 128] {
            let x = words(m * k, 7);
            // The fastest of ten runs: the machines these run on are shared.
            let time = |f: &dyn Fn() -> Vec<u64>| {
                let mut best = f64::INFINITY;
                let mut sink = 0u64;
                for _ in 0..10 {
                    let start = std::time::Instant::now();
                    sink = sink.wrapping_add(f()[0]);
                    best = best.min(start.elapsed().as_secs_f64() * 1e3);
                }
                (best, sink)
            };
            let (s, a) = time(&|| matmul_u64(&x, &stored, m, k, n));
            let (r, b) = time(&|| mask.left_product(&x, m));
            assert_eq!(a, b);
            println!(
                "{m}x{k}x{n}: stored mask {s:.2} ms, regenerated {r:.2} ms ({:.2}x)",
                r / s
            );
        }
    }
}
