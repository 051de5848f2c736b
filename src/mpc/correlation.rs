//! Correlated randomness as the parties ask for it: each [`Correlation`] is a list of components,
//! some *free* (uniform, drawn from the parties' seeds) and some *derived* from them (c = a b, ...),
//! each shared as [`Sharing`] says. Both parties and the dealer agree on the components of a
//! request (`Correlation::components`) and check a request before anything is made for it.

use std::collections::HashMap;

use rand::RngCore;
use rand_chacha::ChaCha12Rng;

use super::dcf::BITS;
use super::error::{MpcError, Result};

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
    /// A fixed mask B [k, n] for a weight used many times, remembered by the dealer under `id`:
    /// each party's share is the stream of a 2-word key from its own seed (`super::seeded_mask`).
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
    /// r_1 .. r_(k-1), each party's root seeds, shares of m = bit `bits` of r_0 and of m r_j, and
    /// DCF words over bits `skip..bits` (as [`Correlation::Comparison`]) with the payload
    /// (1 - 2m) (1, r_0, .., r_(k-1)).
    ComparisonProducts {
        len: usize,
        operands: usize,
        bits: usize,
        skip: usize,
    },
    /// Masked openings with products between them (see `protocols::masked`): per operand o a uniform
    /// mask r_o and, where `shifts[o]` > 0, a_o = r_o >> shift and b_o = msb(r_o) 2^(64 - shift);
    /// per pair (u, v) the cross terms a_u a_v, a_u b_v, b_u a_v and b_u b_v (those not always zero).
    Masked {
        len: usize,
        shifts: Vec<u32>,
        pairs: Vec<(usize, usize)>,
    },
    /// A product truncated in Z_2^128 (see `protocols::truncating_product`): per operand o (one for a square, two
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
    /// `protocols::lifted_matmul`), remembered under `id`: a uniform mask r' of the weight's 64-bit
    /// opening, B, 128-bit shares of r' and shares of msb(r').
    WideWeightMask { id: u64, k: usize, n: usize },
    /// For X [m, k] times the wide weight mask `id` (B [k, n]): a uniform mask r, 128-bit shares of
    /// r and of C = r B, shares of msb(r), and the table T[i, k, j] = msb(r[i, k]) B[k, j] mod 2^16
    /// (16-bit lanes, rows of n padded to whole words).
    WideWeightTriple { id: u64, m: usize },
    /// Per-head products against the row mask `id` ([rows, heads * dh]), see [`super::matmul::head_matmul`]:
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
        if let Correlation::Comparison { bits, skip, .. }
        | Correlation::ComparisonProducts { bits, skip, .. } = *self
        {
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
    pub(crate) fn components(
        &self,
        masks: &HashMap<u64, (usize, usize)>,
    ) -> Vec<(Sharing, usize, bool)> {
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
            Correlation::WeightMask { .. } => vec![(Own, 2, false)],
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
            Correlation::ComparisonProducts {
                len,
                operands,
                bits,
                skip,
            } => {
                let mut comps = vec![(Additive, len, false), (Own, mul(2, len), false)];
                comps.extend(vec![(Additive, len, false); operands.saturating_sub(1)]);
                comps.extend(vec![(Additive, len, true); 1 + operands]);
                comps.push((
                    Public,
                    mul(super::dcf::words(1 + operands, bits - skip), len),
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

/// `len` words of a seed stream: a party's share of a component, drawn the same way by the party
/// and by the dealer's mirror of its stream.
pub(crate) fn draw(rng: &mut ChaCha12Rng, len: usize) -> Vec<u64> {
    let mut v = vec![0u64; len];
    for x in v.iter_mut() {
        *x = rng.next_u64();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
