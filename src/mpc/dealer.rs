//! The dealer: a trusted provider of correlated randomness (Beaver triples, truncation pairs,
//! random bits), who never sees an online message.
//!
//! Seeds, not tensors, travel (CrypTen's "TTP" pattern): party 0 expands every share it needs from
//! its own seed and talks to nobody; party 1 expands the *free* components (uniform masks) from its
//! seed and receives from the dealer only the corrections of the *derived* ones (c = a*b - c0, ...).
//! The dealer runs on its own thread, mirrors both seed streams, and holds the fixed weight masks.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};

use rand::{RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha12Rng;

use rayon::prelude::*;

use super::dcf::BITS;
use super::error::MpcError;
use super::matmul::head_matmul;
use super::net::Transport;
use super::remote::{decode_words, DealerLink};
use super::ring::{wide_from_words, words_from_wide};

type Result<T> = std::result::Result<T, MpcError>;

/// How the two shares of a component combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// v = s0 + s1 mod 2^64.
    Additive,
    /// v = s0 + s1 mod 2^128, each value two words (low, high).
    Additive128,
    /// v = s0 + s1 mod 2^16 in each of a word's four 16-bit lanes (a dealer table of small
    /// values, 2 bytes an entry).
    Additive16,
    /// Each party's own uniform words (a key's root seed); the dealer uses both, unsummed.
    Own,
    /// The same words for both parties (a key's correction words): sent by the dealer to each.
    Public,
}

/// A request for correlated randomness; both parties make the same requests in the same order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Correlation {
    /// a, b, c = a * b elementwise.
    MulTriple { len: usize },
    /// a, a^2 elementwise: squaring opens only x - a.
    SquarePair { len: usize },
    /// A [batch, m, k], B [batch, k, n], C = A B.
    MatmulTriple {
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
    },
    /// A fixed mask B [k, n] for a weight used many times, remembered by the dealer under `id`.
    WeightMask { id: u64, k: usize, n: usize },
    /// A [m, k] and C = A B for the weight mask `id`.
    WeightTriple { id: u64, m: usize },
    /// `rows` fresh rows [rows, width] appended to the growing row mask `id` (made on first use):
    /// the mask of a shared matrix that grows by rows, such as a KV cache.
    RowMask { id: u64, rows: usize, width: usize },
    /// Keeps the first `rows` rows of the row mask `id` (no randomness: the dealer forgets the rest).
    RowTruncate { id: u64, rows: usize },
    /// Comparison keys for `len` elements whose inputs lie in [-2^bits, 2^bits) (`bits` = 63: any
    /// ring element; see `protocols::compare`): a uniform mask r, each party's root seeds (2 words an
    /// element), additive shares of m = bit `bits` of r, and the correction words of a DCF over the
    /// low `bits` bits, for [y_lo < r_lo] with payload 1 - 2m (`dcf::words(1, bits)` an element, to
    /// both). With `skip` > 0 the key compares bits `skip..bits` only (`dcf::words(1, bits - skip)`):
    /// see `protocols::compare` on coarse comparisons.
    Comparison {
        len: usize,
        bits: usize,
        skip: usize,
    },
    /// A comparison whose bit t = [x < 0] also multiplies `operands` masked values in the same
    /// opening (see `protocols::compare::stage_products`): masks r_0 (the compared value's) and
    /// r_1 .. r_(k-1), each party's root seeds, shares of m = msb(r_0) and of m r_j, and DCF words
    /// with the payload (1 - 2m) (1, r_0, .., r_(k-1)).
    ComparisonProducts { len: usize, operands: usize },
    /// Masked openings with products between them (see `protocols::round`): per operand o a uniform
    /// mask r_o and, where `shifts[o]` > 0, a_o = r_o >> shift and b_o = msb(r_o) 2^(64 - shift);
    /// per pair (u, v) the cross terms a_u a_v, a_u b_v, b_u a_v and b_u b_v (those not always zero).
    Masked {
        len: usize,
        shifts: Vec<u32>,
        pairs: Vec<(usize, usize)>,
    },
    /// A product truncated in Z_2^128 (see `protocols::wide`): per operand o (one for a square, two
    /// for a product) a uniform mask r_o and 128-bit shares of a_o = r_o >> shifts[o] and of
    /// m_o = msb(r_o); then 128-bit shares of a_u a_v, a_u m_v, m_u a_v and m_u m_v (a square: a^2
    /// and a m, since m^2 = m). With `per_row` above 1 the second operand holds one value per
    /// `per_row` consecutive elements of the first (a factor per row), so its mask, a and m are
    /// that much shorter; the cross terms stay one per element.
    WideProduct {
        len: usize,
        shifts: Vec<u32>,
        per_row: usize,
    },
    /// A fixed 128-bit mask B [k, n] for a weight lifted to the integers (see
    /// `protocols::wide_matmul`), remembered under `id`: a uniform mask r' of the weight's 64-bit
    /// opening, B, 128-bit shares of r' and shares of msb(r').
    WideWeightMask { id: u64, k: usize, n: usize },
    /// For X [m, k] times the wide weight mask `id` (B [k, n]): a uniform mask r, 128-bit shares of
    /// r and of C = r B, shares of msb(r), and the table T[i, k, j] = msb(r[i, k]) B[k, j] mod 2^16
    /// (16-bit lanes, rows of n padded to whole words).
    WideWeightTriple { id: u64, m: usize },
    /// Per-head products against the row mask `id` ([rows, heads * dh]), see [`head_matmul`]:
    /// keys: A [heads, m, dh], C_h = A_h B_h^T; values: A [heads, m, rows], C_h = A_h B_h.
    HeadTriple {
        id: u64,
        heads: usize,
        m: usize,
        keys: bool,
    },
}

/// The element counts of a truncating product's operands: the second holds one value per
/// `per_row` elements of the first.
pub(crate) fn wide_operand_lens(len: usize, operands: usize, per_row: usize) -> Vec<usize> {
    (0..operands)
        .map(|o| if o == 1 { len / per_row.max(1) } else { len })
        .collect()
}

impl Correlation {
    /// Refuses a request the dealer cannot make (a remote dealer decodes requests from a peer):
    /// comparison keys over 1 to 63 bits, skipping fewer than they cover; truncating products
    /// whose row factor divides their length (two operands for a factor per row).
    pub fn check(&self) -> Result<()> {
        if let Correlation::WideProduct {
            len,
            ref shifts,
            per_row,
        } = *self
        {
            if per_row == 0 || len % per_row != 0 || (per_row > 1 && shifts.len() != 2) {
                return Err(MpcError::Malformed(format!(
                    "a product of {} operands over {len} elements with {per_row} per row",
                    shifts.len()
                )));
            }
        }
        let small = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(MpcError::Malformed(format!(
                    "a request with {n} {what} (at most {max})"
                )))
            } else {
                Ok(())
            }
        };
        match self {
            Correlation::ComparisonProducts { operands: 0, .. } => {
                return Err(MpcError::Malformed(
                    "a comparison with products of no operand".into(),
                ))
            }
            // The keys' payload holds the comparison bit and its products with the operands.
            Correlation::ComparisonProducts { operands, .. } => {
                small("operands", *operands, super::dcf::MAX_WIDTH - 1)?
            }
            Correlation::WideProduct { shifts, .. } if shifts.is_empty() => {
                return Err(MpcError::Malformed("a product of no operands".into()))
            }
            Correlation::WideProduct { shifts, .. } => {
                small("operands", shifts.len(), 2)?;
                if shifts.iter().any(|&s| s > 63) {
                    return Err(MpcError::Malformed(
                        "a truncating product shifting a 64-bit mask by 64 or more".into(),
                    ));
                }
            }
            Correlation::Masked { shifts, pairs, .. } => {
                small("operands", shifts.len(), 16)?;
                small("pairs", pairs.len(), 64)?;
                if shifts.iter().any(|&s| s > 63)
                    || pairs
                        .iter()
                        .any(|&(u, v)| u >= shifts.len() || v >= shifts.len())
                {
                    return Err(MpcError::Malformed(
                        "a masked product naming an operand it does not have".into(),
                    ));
                }
            }
            Correlation::HeadTriple { heads: 0, .. } => {
                return Err(MpcError::Malformed("a head product over 0 heads".into()))
            }
            _ => {}
        }
        if let Correlation::Comparison { bits, skip, .. } = *self {
            if !(1..=BITS).contains(&bits) || skip >= bits {
                return Err(MpcError::Malformed(format!(
                    "comparison keys over {bits} bits skipping {skip}"
                )));
            }
        }
        Ok(())
    }

    /// The components in order: (sharing, length, derived?). Lengths saturate rather than wrap, so
    /// that a peer's absurd request is measured as absurd and refused before anything is made.
    fn components(&self, masks: &HashMap<u64, (usize, usize)>) -> Vec<(Sharing, usize, bool)> {
        use Sharing::*;
        let mul = |a: usize, b: usize| a.saturating_mul(b);
        let mul3 = |a: usize, b: usize, c: usize| a.saturating_mul(b).saturating_mul(c);
        match *self {
            Correlation::MulTriple { len } => vec![
                (Additive, len, false),
                (Additive, len, false),
                (Additive, len, true),
            ],
            Correlation::SquarePair { len } => vec![(Additive, len, false), (Additive, len, true)],
            Correlation::MatmulTriple { batch, m, k, n } => {
                vec![
                    (Additive, mul3(batch, m, k), false),
                    (Additive, mul3(batch, k, n), false),
                    (Additive, mul3(batch, m, n), true),
                ]
            }
            Correlation::WeightMask { k, n, .. } => vec![(Additive, mul(k, n), false)],
            Correlation::WeightTriple { id, m } => {
                let (k, n) = masks.get(&id).copied().unwrap_or((0, 0));
                vec![(Additive, mul(m, k), false), (Additive, mul(m, n), true)]
            }
            Correlation::Comparison { len, bits, skip } => vec![
                (Additive, len, false),
                (Own, mul(2, len), false),
                (Additive, len, true),
                (Public, mul(super::dcf::words(1, bits - skip), len), true),
            ],
            Correlation::ComparisonProducts { len, operands } => {
                let mut comps = vec![(Additive, len, false), (Own, mul(2, len), false)];
                comps.extend(vec![(Additive, len, false); operands.saturating_sub(1)]);
                comps.extend(vec![(Additive, len, true); 1 + operands]);
                comps.push((
                    Public,
                    mul(super::dcf::words(1 + operands, BITS), len),
                    true,
                ));
                comps
            }
            Correlation::RowMask { rows, width, .. } => vec![(Additive, mul(rows, width), false)],
            Correlation::RowTruncate { .. } => vec![],
            Correlation::Masked {
                len,
                ref shifts,
                ref pairs,
            } => {
                let mut comps = vec![(Additive, len, false); shifts.len()];
                for &s in shifts {
                    if s > 0 {
                        comps.extend([(Additive, len, true), (Additive, len, true)]);
                    }
                }
                for &(u, v) in pairs {
                    let terms = masked_cross_terms(shifts[u], shifts[v], u == v);
                    comps.extend(terms.iter().filter(|t| **t).map(|_| (Additive, len, true)));
                }
                comps
            }
            Correlation::WideWeightMask { k, n, .. } => vec![
                (Additive, mul(k, n), false),
                (Additive128, mul3(2, k, n), false),
                (Additive128, mul3(2, k, n), true),
                (Additive, mul(k, n), true),
            ],
            Correlation::WideWeightTriple { id, m } => {
                let (k, n) = masks.get(&id).copied().unwrap_or((0, 0));
                vec![
                    (Additive, mul(m, k), false),
                    (Additive128, mul3(2, m, k), true),
                    (Additive, mul(m, k), true),
                    (Additive128, mul3(2, m, n), true),
                    (Additive16, mul3(m, k, table_row_words(n)), true),
                ]
            }
            Correlation::WideProduct {
                len,
                ref shifts,
                per_row,
            } => {
                let lens = wide_operand_lens(len, shifts.len(), per_row);
                let mut comps: Vec<_> = lens.iter().map(|&l| (Additive, l, false)).collect();
                for &l in &lens {
                    comps.extend([
                        (Additive128, mul(2, l), true),
                        (Additive128, mul(2, l), true),
                    ]);
                }
                let cross = if shifts.len() == 1 { 2 } else { 4 };
                comps.extend(vec![(Additive128, mul(2, len), true); cross]);
                comps
            }
            Correlation::HeadTriple { id, heads, m, keys } => {
                let (rows, width) = masks.get(&id).copied().unwrap_or((0, 0));
                let dh = width / heads.max(1);
                let (a, c) = if keys { (dh, rows) } else { (rows, dh) };
                vec![
                    (Additive, mul3(heads, m, a), false),
                    (Additive, mul3(heads, m, c), true),
                ]
            }
        }
    }

    /// The derived components' values from the free components' values (`own`: each party's
    /// draws of the free components, for keys whose roots stay apart).
    fn derive(
        &self,
        free: &[Vec<u64>],
        own: [&[Vec<u64>]; 2],
        masks: &HashMap<u64, (usize, usize, Vec<u64>)>,
    ) -> Vec<Vec<u64>> {
        match *self {
            Correlation::MulTriple { .. } => vec![free[0]
                .iter()
                .zip(&free[1])
                .map(|(a, b)| a.wrapping_mul(*b))
                .collect()],
            Correlation::SquarePair { .. } => {
                vec![free[0].iter().map(|a| a.wrapping_mul(*a)).collect()]
            }
            Correlation::MatmulTriple { batch, m, k, n } => {
                let mut c = Vec::with_capacity(batch * m * n);
                for b in 0..batch {
                    let a = &free[0][b * m * k..(b + 1) * m * k];
                    let bb = &free[1][b * k * n..(b + 1) * k * n];
                    c.extend(super::matmul::matmul_u64(a, bb, m, k, n));
                }
                vec![c]
            }
            Correlation::WeightMask { .. } => vec![],
            Correlation::WideWeightMask { .. } => {
                let r_wide: Vec<u128> = free[0].iter().map(|&r| r as u128).collect();
                let msb: Vec<u64> = free[0].iter().map(|r| r >> 63).collect();
                vec![words_from_wide(&r_wide), msb]
            }
            Correlation::WideWeightTriple { id, m } => {
                let (k, n, words) = masks
                    .get(&id)
                    .expect("wide weight triple for a mask the dealer made");
                let (k, n) = (*k, *n);
                let b = wide_from_words(words);
                let r = &free[0];
                let r_wide: Vec<u128> = r.iter().map(|&r| r as u128).collect();
                let msb: Vec<u64> = r.iter().map(|r| r >> 63).collect();
                let c = super::matmul::matmul_wide(&r_wide, &b, m, k, n);
                let row = table_row_words(n);
                let mut table = vec![0u64; m * k * row];
                table
                    .par_chunks_mut(row.max(1))
                    .enumerate()
                    .filter(|(ik, _)| msb[*ik] == 1)
                    .for_each(|(ik, dst)| {
                        let kk = ik % k;
                        for (j, v) in b[kk * n..(kk + 1) * n].iter().enumerate() {
                            dst[j / 4] |= ((*v as u16) as u64) << (16 * (j % 4));
                        }
                    });
                vec![words_from_wide(&r_wide), msb, words_from_wide(&c), table]
            }
            Correlation::WeightTriple { id, m } => {
                let (k, n, mask) = masks
                    .get(&id)
                    .expect("weight triple for a mask the dealer made");
                vec![super::matmul::matmul_u64(&free[0], mask, m, *k, *n)]
            }
            Correlation::Comparison { len, bits, skip } => {
                let r = &free[0];
                let msb: Vec<u64> = r.iter().map(|r| (r >> bits) & 1).collect();
                let key_len = super::dcf::words(1, bits - skip);
                let mut words = vec![0u64; key_len * len];
                let roots = own.map(|o| wide_from_words(&o[1]));
                let root = |b: usize, i: usize| roots[b][i];
                words
                    .par_chunks_mut(key_len)
                    .enumerate()
                    .for_each(|(i, key)| {
                        let alpha = (r[i] & ((1 << bits) - 1)) >> skip;
                        let beta = 1u64.wrapping_sub(2 * msb[i]);
                        let roots = [root(0, i), root(1, i)];
                        super::dcf::generate(alpha, &[beta], bits - skip, roots, key);
                    });
                vec![msb, words]
            }
            Correlation::ComparisonProducts { len, operands } => {
                let masks: Vec<&Vec<u64>> = std::iter::once(&free[0]).chain(&free[2..]).collect();
                let msb: Vec<u64> = masks[0].iter().map(|r| r >> 63).collect();
                let width = 1 + operands;
                let key_len = super::dcf::words(width, BITS);
                let mut words = vec![0u64; key_len * len];
                let roots = own.map(|o| wide_from_words(&o[1]));
                let root = |b: usize, i: usize| roots[b][i];
                words
                    .par_chunks_mut(key_len)
                    .enumerate()
                    .for_each(|(i, key)| {
                        let alpha = masks[0][i] & ((1 << BITS) - 1);
                        let sign = 1u64.wrapping_sub(2 * msb[i]);
                        let mut beta = [sign; super::dcf::MAX_WIDTH];
                        for (j, r) in masks.iter().enumerate() {
                            beta[1 + j] = sign.wrapping_mul(r[i]);
                        }
                        let roots = [root(0, i), root(1, i)];
                        super::dcf::generate(alpha, &beta[..width], BITS, roots, key);
                    });
                let mut out = vec![msb.clone()];
                out.extend(masks.iter().map(|r| {
                    r.iter()
                        .zip(&msb)
                        .map(|(r, m)| r.wrapping_mul(*m))
                        .collect()
                }));
                out.push(words);
                out
            }
            Correlation::RowMask { .. } | Correlation::RowTruncate { .. } => vec![],
            Correlation::Masked {
                ref shifts,
                ref pairs,
                ..
            } => {
                let mut out = Vec::new();
                // a_o and b_o of every operand (a_o = r_o where there is no shift, b_o = 0).
                let parts: Vec<(Vec<u64>, Vec<u64>)> = shifts
                    .iter()
                    .zip(free)
                    .map(|(&s, r)| {
                        if s == 0 {
                            (r.clone(), vec![0; r.len()])
                        } else {
                            let a: Vec<u64> = r.iter().map(|r| r >> s).collect();
                            let b: Vec<u64> = r.iter().map(|r| (r >> 63) << (64 - s)).collect();
                            out.push(a.clone());
                            out.push(b.clone());
                            (a, b)
                        }
                    })
                    .collect();
                let product = |x: &[u64], y: &[u64]| -> Vec<u64> {
                    x.iter().zip(y).map(|(x, y)| x.wrapping_mul(*y)).collect()
                };
                for &(u, v) in pairs {
                    let [aa, ab, ba, bb] = masked_cross_terms(shifts[u], shifts[v], u == v);
                    let ((au, bu), (av, bv)) = (&parts[u], &parts[v]);
                    if aa {
                        out.push(product(au, av));
                    }
                    if ab {
                        out.push(product(au, bv));
                    }
                    if ba {
                        out.push(product(bu, av));
                    }
                    if bb {
                        out.push(product(bu, bv));
                    }
                }
                out
            }
            Correlation::WideProduct {
                ref shifts,
                per_row,
                ..
            } => {
                // a_o and m_o per operand, then the cross terms, as 128-bit words.
                let parts: Vec<(Vec<u128>, Vec<u128>)> = shifts
                    .iter()
                    .zip(free)
                    .map(|(&s, r)| {
                        let a = r.iter().map(|&r| (r >> s) as u128).collect();
                        let m = r.iter().map(|&r| (r >> 63) as u128).collect();
                        (a, m)
                    })
                    .collect();
                let product = |x: &[u128], y: &[u128]| -> Vec<u128> {
                    x.iter().zip(y).map(|(x, y)| x.wrapping_mul(*y)).collect()
                };
                let mut values: Vec<Vec<u128>> = parts
                    .iter()
                    .flat_map(|(a, m)| [a.clone(), m.clone()])
                    .collect();
                // A row factor meets every element of its row.
                let rows = |x: &[u128]| -> Vec<u128> {
                    x.iter()
                        .flat_map(|&v| std::iter::repeat_n(v, per_row))
                        .collect()
                };
                let (au, mu) = &parts[0];
                let last = parts.last().expect("a product has operands");
                let (av, mv) = (&rows(&last.0), &rows(&last.1));
                values.push(product(au, av));
                values.push(product(au, mv));
                if shifts.len() > 1 {
                    values.push(product(mu, av));
                    values.push(product(mu, mv));
                }
                values.iter().map(|v| words_from_wide(v)).collect()
            }
            Correlation::HeadTriple { id, heads, m, keys } => {
                let (rows, _, mask) = masks
                    .get(&id)
                    .expect("head triple for a row mask the dealer made");
                vec![head_matmul(&free[0], m, mask, *rows, heads, keys)]
            }
        }
    }
}

/// Which cross terms of a masked product are not always zero: a_u a_v, a_u b_v, b_u a_v, b_u b_v.
/// b_o is zero without a shift, b_u b_v is a multiple of 2^(128 - s_u - s_v) (zero unless the
/// shifts add up to more than 64), and a square needs only one of the two mixed terms.
pub(crate) fn masked_cross_terms(su: u32, sv: u32, square: bool) -> [bool; 4] {
    [true, sv > 0, su > 0 && !square, su + sv > 64]
}

/// Words per (i, k) row of a wide weight triple's table: n 16-bit entries, four to a word.
pub(crate) fn table_row_words(n: usize) -> usize {
    n.div_ceil(4)
}

/// The four 16-bit lanes of a word added (or subtracted) lane by lane, without carries between
/// lanes (the layout of [`Sharing::Additive16`]).
pub(crate) fn lanes_add(x: u64, y: u64) -> u64 {
    const H: u64 = 0x8000_8000_8000_8000;
    ((x & !H).wrapping_add(y & !H)) ^ ((x ^ y) & H)
}

pub(crate) fn lanes_sub(x: u64, y: u64) -> u64 {
    const H: u64 = 0x8000_8000_8000_8000;
    ((x | H).wrapping_sub(y & !H)) ^ ((x ^ !y) & H)
}

fn zip_lanes(a: &[u64], b: &[u64], op: fn(u64, u64) -> u64) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| op(*x, *y)).collect()
}

fn draw(rng: &mut ChaCha12Rng, len: usize) -> Vec<u64> {
    let mut v = vec![0u64; len];
    for x in v.iter_mut() {
        *x = rng.next_u64();
    }
    v
}

/// `op` on the 128-bit values of two word vectors (the layout of [`Sharing::Additive128`]).
fn zip_wide(a: &[u64], b: &[u64], op: fn(u128, u128) -> u128) -> Vec<u64> {
    let values: Vec<u128> = wide_from_words(a)
        .into_iter()
        .zip(wide_from_words(b))
        .map(|(x, y)| op(x, y))
        .collect();
    words_from_wide(&values)
}

fn combine(sharing: Sharing, a: &[u64], b: &[u64]) -> Vec<u64> {
    match sharing {
        Sharing::Additive128 => zip_wide(a, b, u128::wrapping_add),
        Sharing::Additive16 => zip_lanes(a, b, lanes_add),
        Sharing::Additive | Sharing::Own | Sharing::Public => {
            a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
        }
    }
}

fn split_off(sharing: Sharing, value: &[u64], share0: &[u64]) -> Vec<u64> {
    match sharing {
        Sharing::Public | Sharing::Own => value.to_vec(),
        Sharing::Additive128 => zip_wide(value, share0, u128::wrapping_sub),
        Sharing::Additive16 => zip_lanes(value, share0, lanes_sub),
        Sharing::Additive => value
            .iter()
            .zip(share0)
            .map(|(v, s)| v.wrapping_sub(*s))
            .collect(),
    }
}

/// The dealer's state: mirrors of both parties' seed streams and the weight masks.
pub(crate) struct Dealer {
    rng0: ChaCha12Rng,
    rng1: ChaCha12Rng,
    masks: HashMap<u64, (usize, usize, Vec<u64>)>,
}

impl Dealer {
    /// A dealer holding each party's stream.
    pub(crate) fn new(rng0: ChaCha12Rng, rng1: ChaCha12Rng) -> Self {
        Self {
            rng0,
            rng1,
            masks: HashMap::new(),
        }
    }

    /// Refuses a product against a mask the dealer never made, or made for another kind of
    /// product (a remote dealer takes its requests from a peer): a weight triple needs a 64-bit
    /// weight mask, a wide weight triple a 128-bit one, a head triple a row mask.
    pub(crate) fn check_mask(&self, corr: &Correlation) -> Result<()> {
        let (id, words_per_entry) = match *corr {
            Correlation::WeightTriple { id, .. } | Correlation::HeadTriple { id, .. } => {
                (id, 1usize)
            }
            Correlation::WideWeightTriple { id, .. } => (id, 2),
            _ => return Ok(()),
        };
        let heads = match *corr {
            Correlation::HeadTriple { heads, .. } => heads,
            _ => 1,
        };
        match self.masks.get(&id) {
            Some((k, n, words))
                if words.len() == words_per_entry.saturating_mul(*k).saturating_mul(*n)
                    && n.is_multiple_of(heads) =>
            {
                Ok(())
            }
            _ => Err(MpcError::Malformed(format!(
                "a product against mask {id}, which the dealer did not make for it"
            ))),
        }
    }

    /// The largest component of `corr` and the words of all its components (saturating): what it
    /// would take to make it, measured before anything is made.
    pub(crate) fn request_size(&self, corr: &Correlation) -> (usize, usize) {
        let comps = corr.components(&self.mask_shapes());
        let largest = comps.iter().map(|c| c.1).max().unwrap_or(0);
        let words = comps.iter().fold(0usize, |sum, c| sum.saturating_add(c.1));
        (largest, words)
    }

    /// Words of the fixed masks the dealer keeps now.
    pub(crate) fn mask_words(&self) -> usize {
        self.masks.values().map(|m| m.2.len()).sum()
    }

    /// Words `corr` adds to the kept masks.
    pub(crate) fn new_mask_words(&self, corr: &Correlation) -> usize {
        match *corr {
            Correlation::WeightMask { k, n, .. } => k.saturating_mul(n),
            Correlation::WideWeightMask { k, n, .. } => k.saturating_mul(n).saturating_mul(2),
            Correlation::RowMask { rows, width, .. } => rows.saturating_mul(width),
            _ => 0,
        }
    }

    fn mask_shapes(&self) -> HashMap<u64, (usize, usize)> {
        self.masks
            .iter()
            .map(|(id, (k, n, _))| (*id, (*k, *n)))
            .collect()
    }

    /// Party 1's corrections for one request, and the public components that party 0 needs too
    /// (party 0's other shares follow from its seed alone).
    pub(crate) fn corrections(&mut self, corr: &Correlation) -> (Vec<Vec<u64>>, Vec<Vec<u64>>) {
        let comps = corr.components(&self.mask_shapes());
        let (mut free, mut own0, mut own1) = (Vec::new(), Vec::new(), Vec::new());
        let mut share0 = Vec::new();
        for &(sharing, len, derived) in &comps {
            let s0 = if sharing == Sharing::Public {
                Vec::new()
            } else {
                draw(&mut self.rng0, len)
            };
            if !derived {
                let s1 = draw(&mut self.rng1, len);
                free.push(combine(sharing, &s0, &s1));
                own0.push(s0.clone());
                own1.push(s1);
            }
            share0.push(s0);
        }
        match *corr {
            Correlation::WeightMask { id, k, n } => {
                self.masks.insert(id, (k, n, free[0].clone()));
            }
            Correlation::WideWeightMask { id, k, n } => {
                self.masks.insert(id, (k, n, free[1].clone()));
            }
            Correlation::RowMask { id, rows, width } => {
                let entry = self.masks.entry(id).or_insert((0, width, Vec::new()));
                entry.0 += rows;
                entry.2.extend_from_slice(&free[0]);
            }
            Correlation::RowTruncate { id, rows } => {
                if let Some(entry) = self.masks.get_mut(&id) {
                    entry.0 = entry.0.min(rows);
                    entry.2.truncate(entry.0 * entry.1);
                }
            }
            _ => {}
        }
        let derived_values = corr.derive(&free, [&own0, &own1], &self.masks);
        let mut public = Vec::new();
        let corrections = comps
            .iter()
            .enumerate()
            .filter(|(_, c)| c.2)
            .zip(derived_values)
            .map(|((i, &(sharing, _, _)), value)| {
                if sharing == Sharing::Public {
                    public.push(value.clone());
                }
                split_off(sharing, &value, &share0[i])
            })
            .collect();
        (corrections, public)
    }
}

enum Source {
    /// Party 0 of a session with a dealer process: public components arrive over TCP.
    RemoteClient(DealerLink),
    /// Party 1 of a session with a dealer process: requests go out, corrections come back.
    RemoteServer(DealerLink),
    /// Party 0: everything from its own seed, except public components (comparison keys' correction
    /// words), which the dealer sends.
    Seed { public: Receiver<Vec<Vec<u64>>> },
    /// Party 1: free components from its seed, derived ones from the dealer thread.
    Dealer {
        requests: Sender<Correlation>,
        replies: Receiver<Vec<Vec<u64>>>,
    },
}

/// The bytes of the dealer's frame of the components that `delivered` picks: the receiver knows
/// them before the frame arrives, so it refuses any other length before reading it.
fn frame_bytes(
    comps: &[(Sharing, usize, bool)],
    delivered: impl Fn(&(Sharing, usize, bool)) -> bool,
) -> usize {
    let picked: Vec<usize> = comps.iter().filter(|c| delivered(c)).map(|c| c.1).collect();
    picked
        .iter()
        .fold(1 + picked.len(), |sum, len| sum.saturating_add(*len))
        .saturating_mul(8)
}

/// One party's access to the dealer.
pub struct DealerHandle {
    rng: ChaCha12Rng,
    source: Source,
    mask_shapes: HashMap<u64, (usize, usize)>,
    next_mask_id: u64,
    /// Bytes of corrections received so far.
    pub bytes_received: u64,
}

impl DealerHandle {
    /// This party's shares of the components of `corr`, in order.
    pub fn get(&mut self, corr: &Correlation) -> Result<Vec<Vec<u64>>> {
        corr.check()?;
        let comps = corr.components(&self.mask_shapes);
        match *corr {
            Correlation::WeightMask { id, k, n } | Correlation::WideWeightMask { id, k, n } => {
                self.mask_shapes.insert(id, (k, n));
            }
            Correlation::RowMask { id, rows, width } => {
                self.mask_shapes.entry(id).or_insert((0, width)).0 += rows;
            }
            Correlation::RowTruncate { id, rows } => {
                if let Some(shape) = self.mask_shapes.get_mut(&id) {
                    shape.0 = shape.0.min(rows);
                }
            }
            Correlation::WeightTriple { id, .. }
            | Correlation::HeadTriple { id, .. }
            | Correlation::WideWeightTriple { id, .. }
                if !self.mask_shapes.contains_key(&id) =>
            {
                return Err(MpcError::BadConfig(format!(
                    "product against unknown mask {id}"
                )));
            }
            _ => {}
        }
        let needs_public = comps.iter().any(|c| c.0 == Sharing::Public);
        let (party0, delivered) = match &mut self.source {
            Source::Seed { public } if needs_public => {
                (true, public.recv().map_err(|_| MpcError::PeerClosed)?)
            }
            Source::RemoteClient(link) if needs_public => {
                let limit = frame_bytes(&comps, |c| c.0 == Sharing::Public);
                (
                    true,
                    decode_words(&link.transport.recv(link.timeout, limit)?)?,
                )
            }
            Source::Seed { .. } | Source::RemoteClient(_) => (true, Vec::new()),
            Source::Dealer { requests, replies } => {
                requests
                    .send(corr.clone())
                    .map_err(|_| MpcError::PeerClosed)?;
                (false, replies.recv().map_err(|_| MpcError::PeerClosed)?)
            }
            Source::RemoteServer(link) => {
                let request = serde_json::to_vec(corr)
                    .map_err(|e| MpcError::Malformed(format!("a correlation request: {e}")))?;
                link.transport.send(request)?;
                let limit = frame_bytes(&comps, |c| c.2);
                (
                    false,
                    decode_words(&link.transport.recv(link.timeout, limit)?)?,
                )
            }
        };
        // Party 0 takes its public components from the dealer, party 1 its derived ones; every
        // other component comes from the party's own seed.
        let mut delivered = delivered.into_iter();
        let mut out = Vec::with_capacity(comps.len());
        for &(sharing, len, derived) in &comps {
            let from_dealer = if party0 {
                sharing == Sharing::Public
            } else {
                derived
            };
            if from_dealer {
                let words = delivered.next().ok_or_else(|| {
                    MpcError::Malformed("the dealer sent too few components".into())
                })?;
                self.bytes_received += 8 * words.len() as u64;
                out.push(words);
            } else {
                out.push(draw(&mut self.rng, len));
            }
        }
        Ok(out)
    }

    /// This party's handle on a session with a dealer process (`role` 0: client, 1: server).
    pub fn remote(link: DealerLink, seed: [u8; 32], role: u64) -> Self {
        Self {
            rng: ChaCha12Rng::from_seed(seed),
            source: if role == 0 {
                Source::RemoteClient(link)
            } else {
                Source::RemoteServer(link)
            },
            mask_shapes: HashMap::new(),
            next_mask_id: 0,
            bytes_received: 0,
        }
    }

    /// A fresh id for a weight mask (both parties number them the same way).
    pub fn new_mask_id(&mut self) -> u64 {
        self.next_mask_id += 1;
        self.next_mask_id
    }
}

/// Starts a dealer thread and returns the two parties' handles. Each party's stream has its own
/// 256-bit seed, which only that party and the dealer hold: drawn from the OS, or derived from
/// `simulation_seed` for reproducible (not secure) simulation.
pub fn start_dealer(simulation_seed: Option<u64>) -> (DealerHandle, DealerHandle) {
    let (mut seed0, mut seed1) = ([0u8; 32], [0u8; 32]);
    match simulation_seed {
        Some(seed) => {
            let mut master = ChaCha12Rng::seed_from_u64(seed);
            master.fill_bytes(&mut seed0);
            master.fill_bytes(&mut seed1);
        }
        None => {
            rand::rngs::OsRng
                .try_fill_bytes(&mut seed0)
                .expect("the OS random number generator");
            rand::rngs::OsRng
                .try_fill_bytes(&mut seed1)
                .expect("the OS random number generator");
        }
    }
    let (req_tx, req_rx) = channel::<Correlation>();
    let (rep_tx, rep_rx) = channel::<Vec<Vec<u64>>>();
    let (pub_tx, pub_rx) = channel::<Vec<Vec<u64>>>();
    let mut dealer = Dealer::new(ChaCha12Rng::from_seed(seed0), ChaCha12Rng::from_seed(seed1));
    std::thread::spawn(move || {
        for corr in req_rx {
            let (corrections, public) = dealer.corrections(&corr);
            // Party 0 may have left once its part is done; party 1's reply is what matters.
            if !public.is_empty() {
                let _ = pub_tx.send(public);
            }
            if rep_tx.send(corrections).is_err() {
                break;
            }
        }
    });
    let handle = |seed, source| DealerHandle {
        rng: ChaCha12Rng::from_seed(seed),
        source,
        mask_shapes: HashMap::new(),
        next_mask_id: 0,
        bytes_received: 0,
    };
    (
        handle(seed0, Source::Seed { public: pub_rx }),
        handle(
            seed1,
            Source::Dealer {
                requests: req_tx,
                replies: rep_rx,
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_add_and_subtract_without_carries_between_lanes() {
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        let lanes = |w: u64| [0, 1, 2, 3].map(|l| (w >> (16 * l)) as u16);
        let mut words: Vec<u64> = (0..1000).map(|_| rng.next_u64()).collect();
        // Lanes at the edges: all ones, the top bit alone, zero.
        words.extend([u64::MAX, 0x8000_8000_8000_8000, 0, 0xFFFF_0000_FFFF_0000]);
        for &x in &words {
            for &y in words.iter().take(50).chain(&words[1000..]) {
                let (a, b) = (lanes(x), lanes(y));
                assert_eq!(
                    lanes(lanes_add(x, y)),
                    [0, 1, 2, 3].map(|l| a[l].wrapping_add(b[l]))
                );
                assert_eq!(
                    lanes(lanes_sub(x, y)),
                    [0, 1, 2, 3].map(|l| a[l].wrapping_sub(b[l]))
                );
            }
        }
    }
}
