//! The dealer: a trusted provider of correlated randomness (Beaver triples, truncation pairs,
//! comparison keys), who never sees an online message.
//!
//! Seeds, not tensors, travel (CrypTen's "TTP" pattern): party 0 expands every share it needs from
//! its own seed and talks to nobody; party 1 expands the *free* components (uniform masks) from its
//! seed and receives from the dealer only the corrections of the *derived* ones (c = a*b - c0, ...).
//! The `Dealer` mirrors both seed streams, derives every correlation's values from them and holds
//! the fixed weight masks; it runs on its own thread ([`super::dealer_handle::start_dealer`]) or
//! as a process ([`super::remote`]).

use std::collections::HashMap;

use rand_chacha::ChaCha12Rng;

use rayon::prelude::*;

use super::correlation::{
    draw, lanes_add, lanes_sub, masked_cross_terms, table_row_words, Correlation, Sharing,
};
use super::error::{MpcError, Result};
use super::matmul::head_matmul;
use super::ring::{wide_from_words, words_from_wide};
use super::seeded_mask::{left_product_of_sum, SeededMask};

/// A fixed mask the dealer keeps for the session, `rows` x `cols`.
pub(crate) struct KeptMask {
    rows: usize,
    cols: usize,
    kind: MaskKind,
}

enum MaskKind {
    /// A row mask (a KV cache's), row-major.
    Rows(Vec<u64>),
    /// A lifted weight's 128-bit mask, two words an entry.
    Wide(Vec<u64>),
    /// A weight mask: the keys of both parties' shares, whose streams are the mask's two shares
    /// (regenerated for each product, never held whole).
    Seeded(Box<[SeededMask; 2]>),
}

impl KeptMask {
    /// Words the dealer holds for it.
    fn words(&self) -> usize {
        match &self.kind {
            MaskKind::Rows(w) | MaskKind::Wide(w) => w.len(),
            MaskKind::Seeded(_) => 4,
        }
    }
}

impl Correlation {
    /// The derived components' values from the free components' values (`own`: each party's
    /// draws of the free components, for keys whose roots stay apart).
    fn derive(
        &self,
        free: &[Vec<u64>],
        own: [&[Vec<u64>]; 2],
        masks: &HashMap<u64, KeptMask>,
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
                let Some(KeptMask {
                    rows: k,
                    cols: n,
                    kind: MaskKind::Wide(words),
                }) = masks.get(&id)
                else {
                    panic!("wide weight triple for a mask the dealer did not make for it")
                };
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
                let Some(KeptMask {
                    kind: MaskKind::Seeded(keys),
                    ..
                }) = masks.get(&id)
                else {
                    panic!("weight triple for a mask the dealer did not make for it")
                };
                vec![left_product_of_sum(&free[0], m, &keys[0], &keys[1])]
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
            Correlation::ComparisonProducts {
                len,
                operands,
                bits,
                skip,
            } => {
                let masks: Vec<&Vec<u64>> = std::iter::once(&free[0]).chain(&free[2..]).collect();
                let msb: Vec<u64> = masks[0].iter().map(|r| (r >> bits) & 1).collect();
                let width = 1 + operands;
                let key_len = super::dcf::words(width, bits - skip);
                let mut words = vec![0u64; key_len * len];
                let roots = own.map(|o| wide_from_words(&o[1]));
                let root = |b: usize, i: usize| roots[b][i];
                words
                    .par_chunks_mut(key_len)
                    .enumerate()
                    .for_each(|(i, key)| {
                        let alpha = (masks[0][i] & ((1 << bits) - 1)) >> skip;
                        let sign = 1u64.wrapping_sub(2 * msb[i]);
                        let mut beta = [sign; super::dcf::MAX_WIDTH];
                        for (j, r) in masks.iter().enumerate() {
                            beta[1 + j] = sign.wrapping_mul(r[i]);
                        }
                        let roots = [root(0, i), root(1, i)];
                        super::dcf::generate(alpha, &beta[..width], bits - skip, roots, key);
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
                len,
                ref shifts,
                per_row,
            } => {
                // a_o and m_o per operand, then the cross terms, as 128-bit words, one component
                // at a time (a wide product's components are its largest: no copies of them).
                let wide = |n: usize, value: &dyn Fn(usize) -> u128| -> Vec<u64> {
                    (0..n)
                        .flat_map(|i| {
                            let v = value(i);
                            [v as u64, (v >> 64) as u64]
                        })
                        .collect()
                };
                let a = |o: usize, i: usize| (free[o][i] >> shifts[o]) as u128;
                let m = |o: usize, i: usize| (free[o][i] >> 63) as u128;
                let mut values: Vec<Vec<u64>> = Vec::new();
                for o in 0..shifts.len() {
                    values.push(wide(free[o].len(), &|i| a(o, i)));
                    values.push(wide(free[o].len(), &|i| m(o, i)));
                }
                // The second operand (a factor per row where per_row > 1) meets every element of
                // its row; a square meets itself.
                let v = shifts.len() - 1;
                let row = |i: usize| if v == 0 { i } else { i / per_row };
                values.push(wide(len, &|i| a(0, i).wrapping_mul(a(v, row(i)))));
                values.push(wide(len, &|i| a(0, i).wrapping_mul(m(v, row(i)))));
                if shifts.len() > 1 {
                    values.push(wide(len, &|i| m(0, i).wrapping_mul(a(v, row(i)))));
                    values.push(wide(len, &|i| m(0, i).wrapping_mul(m(v, row(i)))));
                }
                values
            }
            Correlation::HeadTriple { id, heads, m, keys } => {
                let Some(KeptMask {
                    rows,
                    kind: MaskKind::Rows(mask),
                    ..
                }) = masks.get(&id)
                else {
                    panic!("head triple for a mask the dealer did not make for it")
                };
                vec![head_matmul(&free[0], m, mask, *rows, heads, keys)]
            }
        }
    }
}

fn zip_lanes(a: &[u64], b: &[u64], op: fn(u64, u64) -> u64) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| op(*x, *y)).collect()
}

/// `op` on the 128-bit values of two word vectors (the layout of [`Sharing::Additive128`]).
fn zip_wide(a: &[u64], b: &[u64], op: fn(u128, u128) -> u128) -> Vec<u64> {
    let wide = |w: &[u64]| w[0] as u128 | (w[1] as u128) << 64;
    a.chunks_exact(2)
        .zip(b.chunks_exact(2))
        .flat_map(|(x, y)| {
            let v = op(wide(x), wide(y));
            [v as u64, (v >> 64) as u64]
        })
        .collect()
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
    masks: HashMap<u64, KeptMask>,
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
    /// product (a remote dealer takes its requests from a peer): a weight triple needs a weight
    /// mask, a wide weight triple a 128-bit one, a head triple a row mask whose width the heads
    /// divide. A new weight mask needs an id no kept mask has, and rows grow (or are cut from) a
    /// row mask only: one id never names masks of two kinds.
    pub(crate) fn check_mask(&self, corr: &Correlation) -> Result<()> {
        let kept = |id: u64| self.masks.get(&id).map(|m| &m.kind);
        let ok = match *corr {
            Correlation::WeightTriple { id, .. } => matches!(kept(id), Some(MaskKind::Seeded(_))),
            Correlation::WideWeightTriple { id, .. } => matches!(kept(id), Some(MaskKind::Wide(_))),
            Correlation::HeadTriple { id, heads, .. } => match self.masks.get(&id) {
                // Its words must be its rows times its width (no count wrapped past them).
                Some(m) => match &m.kind {
                    MaskKind::Rows(words) => {
                        words.len() == m.rows.saturating_mul(m.cols) && m.cols.is_multiple_of(heads)
                    }
                    _ => false,
                },
                None => false,
            },
            Correlation::WeightMask { id, .. } | Correlation::WideWeightMask { id, .. } => {
                kept(id).is_none()
            }
            Correlation::RowMask { id, width, .. } => match self.masks.get(&id) {
                Some(m) => matches!(m.kind, MaskKind::Rows(_)) && m.cols == width,
                None => true,
            },
            Correlation::RowTruncate { id, .. } => {
                matches!(kept(id), None | Some(MaskKind::Rows(_)))
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(MpcError::Malformed(format!(
                "{corr:?} against a mask the dealer did not make for it"
            )))
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
        self.masks.values().map(KeptMask::words).sum()
    }

    /// Words `corr` adds to the kept masks.
    pub(crate) fn new_mask_words(&self, corr: &Correlation) -> usize {
        match *corr {
            // Two keys of two words.
            Correlation::WeightMask { .. } => 4,
            Correlation::WideWeightMask { k, n, .. } => k.saturating_mul(n).saturating_mul(2),
            Correlation::RowMask { rows, width, .. } => rows.saturating_mul(width),
            _ => 0,
        }
    }

    fn mask_shapes(&self) -> HashMap<u64, (usize, usize)> {
        self.masks
            .iter()
            .map(|(id, m)| (*id, (m.rows, m.cols)))
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
        let kept = |rows, cols, kind| KeptMask { rows, cols, kind };
        match *corr {
            Correlation::WeightMask { id, k, n } => {
                // Each party's share is the stream of the key it drew from its own seed.
                let key = |o: &[Vec<u64>]| SeededMask::new([o[0][0], o[0][1]], k, n);
                let keys = Box::new([key(&own0), key(&own1)]);
                self.masks.insert(id, kept(k, n, MaskKind::Seeded(keys)));
            }
            Correlation::WideWeightMask { id, k, n } => {
                let words = MaskKind::Wide(free[1].clone());
                self.masks.insert(id, kept(k, n, words));
            }
            Correlation::RowMask { id, rows, width } => {
                let entry = self
                    .masks
                    .entry(id)
                    .or_insert_with(|| kept(0, width, MaskKind::Rows(Vec::new())));
                if let MaskKind::Rows(words) = &mut entry.kind {
                    entry.rows += rows;
                    words.extend_from_slice(&free[0]);
                }
            }
            Correlation::RowTruncate { id, rows } => {
                if let Some(entry) = self.masks.get_mut(&id) {
                    if let MaskKind::Rows(words) = &mut entry.kind {
                        entry.rows = entry.rows.min(rows);
                        words.truncate(entry.rows * entry.cols);
                    }
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
                    // One copy to each party (comparison keys' words are the largest requests).
                    public.push(value.clone());
                    value
                } else {
                    split_off(sharing, &value, &share0[i])
                }
            })
            .collect();
        (corrections, public)
    }
}
