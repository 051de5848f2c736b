//! A fixed-point product by a prepared weight that truncates itself in the round that multiplies:
//! X W at f bits in one round a call (a Beaver product and its truncation take two).
//!
//! [`super::truncating_product`]'s construction carried over to a matrix product. The opening
//! c = X + 2^61 + r (|X| < 2^61, r uniform) gives X exactly as an integer:
//!   X = P - R,   P = c - 2^61 (public),   R = r - 2^64 w m (shared),
//! with m = msb(r) and w = [msb(c) = 0] (c wraps past 2^64 exactly when m = 1 and msb(c) = 0).
//! The weight is lifted to the integers once, when it is prepared: its own such opening gives
//! shares of W mod 2^128, and a second opening makes F = W - B public for a dealer mask B
//! uniform mod 2^128 (2 rounds, once). A call then needs shares of Z = X W modulo 2^(64 + f),
//! where each party's local truncation is exact to one ulp (a wrap of the shares costs 2^64 after
//! the shift, which Z_2^64 forgets):
//!   Z = P W - R F - R B,   R B = r B - 2^64 (w∘m) B,
//! - P W: each party multiplies the public P by its share of W (F + B_0 for the client, B_1);
//! - R F: each party multiplies its share of R by the public F;
//! - r B = C from the dealer (128-bit shares);
//! - (w∘m) B matters modulo 2^f only (it is multiplied by 2^64), and w is public only after the
//!   opening, inside the sum over k: the dealer sends shares of the table
//!   T[i, k, j] = m[i, k] B[k, j] mod 2^16, and each party adds the rows (i, k) with w = 1.
//!
//! The result is floor(X W / 2^f) or one more, always (no failure probability: the shares are
//! exact modulo 2^(64 + f)). Valid for |X|, |W| < 2^61 in the ring and f <= 16 (the table's width).
//!
//! Cost per call of X [m, k] by W [k, n]: 1 round, 8 m k bytes each way (the Beaver opening's;
//! no m n opening for a truncation). Dealer bytes (party 1): 2 m k n for the table (38 MB at
//! 8 x 768 . 768 x 3072), 16 m n for C, 24 m k for r and msb(r). Compute per party: two products
//! of 64-bit halves kept exact in 128 bits (one full multiplication a product,
//! [`matmul_full_transposed`]), one product mod 2^16 over 3k (the high parts, [`matmul_u16`]) and
//! a pass over the table, where the Beaver product and its truncation take three products over
//! Z_2^64: about 2.5 times the compute at 8 rows, and less than the two rounds' at one row
//! (`post bench --mode engine`). Preparing a weight: 2 rounds, 8 + 16 bytes an element each way; 40 dealer bytes an element.
//!
//! Not used by the secure forward: every product there already takes one round or none of its
//! own (its truncation rides in the next protocol's opening).

use super::truncating_product::offset_masked;
use crate::mpc::correlation::{lanes_add, table_row_words, Correlation};
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::matmul::{matmul_full_transposed, matmul_u16};
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::{wide_from_words, RingTensor};

/// The table's entries are 16-bit: the output shift f may not exceed it.
const TABLE_BITS: u32 = 16;

/// A weight [k, n] lifted to the integers and masked once: F = W - B public mod 2^128. A call
/// needs products mod 2^80 only, kept as exact 64 x 64-bit products of the low halves plus
/// products mod 2^16 of everything that lands at 2^64.
pub struct WideWeight {
    mask_id: u64,
    k: usize,
    n: usize,
    /// Low halves, transposed ([n, k]): of G, this party's share of W = F + B (F + B_0 for the
    /// client, B_1 for the server), and of F.
    own_low_t: Vec<u64>,
    masked_low_t: Vec<u64>,
    /// [3k, n] mod 2^16: the high halves of G and F, then F's low half (the parts that meet
    /// c, R's low half and R's high half at 2^64).
    high: Vec<u16>,
    /// 2^61 times the column sums of G (P = c - 2^61 enters as c G - 2^61 sum_k G).
    offset_columns: Vec<u128>,
}

impl WideWeight {
    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }
}

/// Lifts a shared weight [k, n] (|W| < 2^61 in the ring) to shares of the integer W mod 2^128 and
/// opens F = W - B under a fresh dealer mask B: 2 rounds, once per weight.
pub fn prepare_weight_wide(p: &mut Party, w: &RingTensor) -> Result<WideWeight> {
    let [k, n] = w.shape() else {
        return Err(MpcError::ShapeMismatch {
            op: "prepare_weight_wide",
            left: w.shape().to_vec(),
            right: vec![],
        });
    };
    let (k, n) = (*k, *n);
    p.labelled("prepare_weight_wide", |p| {
        let mask_id = p.dealer.new_mask_id();
        let len = k * n;
        let mut parts = p
            .deal_words(
                &Correlation::WideWeightMask { id: mask_id, k, n },
                &[len, 2 * len, 2 * len, len],
            )?
            .into_iter();
        let mut next = || parts.next().expect("four parts");
        let (r, b, r_wide, msb) = (
            next(),
            wide_from_words(&next()),
            wide_from_words(&next()),
            next(),
        );
        let client = p.is_client();
        let masked = RingTensor::new(&[k, n], offset_masked(client, w.data(), &r))?;
        let c = p.open(&masked)?;
        // Shares of the integer W mod 2^128, then F = W - B opened.
        let lifted = lift(client, c.data(), &r_wide, &msb);
        let to_open: Vec<u128> = lifted
            .iter()
            .zip(&b)
            .map(|(x, b)| x.wrapping_sub(*b))
            .collect();
        let masked = p.open_wide(&to_open)?;
        let own: Vec<u128> = if client {
            masked
                .iter()
                .zip(&b)
                .map(|(f, b)| f.wrapping_add(*b))
                .collect()
        } else {
            b
        };
        let mut offset_columns = vec![0u128; n];
        for row in own.chunks(n.max(1)) {
            for (s, g) in offset_columns.iter_mut().zip(row) {
                *s = s.wrapping_add(*g);
            }
        }
        for s in offset_columns.iter_mut() {
            *s = s.wrapping_shl(TRUNC_BOUND_BITS);
        }
        let low_t = |v: &[u128]| -> Vec<u64> {
            (0..k * n).map(|jp| v[jp % k * n + jp / k] as u64).collect()
        };
        let high = own
            .iter()
            .map(|x| (x >> 64) as u16)
            .chain(masked.iter().map(|x| (x >> 64) as u16))
            .chain(masked.iter().map(|x| *x as u16))
            .collect();
        Ok(WideWeight {
            mask_id,
            k,
            n,
            own_low_t: low_t(&own),
            masked_low_t: low_t(&masked),
            high,
            offset_columns,
        })
    })
}

/// This party's share of R = r - 2^64 [msb(c) = 0] msb(r), the integer that the opening
/// c = x + 2^61 + r leaves secret: x = c - 2^61 - R exactly (shares of msb(r) mod 2^64 suffice,
/// since they meet 2^64).
fn mask_integer(c: u64, r: u128, msb: u64) -> u128 {
    if c >> 63 == 0 {
        r.wrapping_sub((msb as u128) << 64)
    } else {
        r
    }
}

/// Shares mod 2^128 of the integers x from their opening c: c - 2^61 (the client's) - R.
fn lift(client: bool, c: &[u64], r: &[u128], msb: &[u64]) -> Vec<u128> {
    c.iter()
        .zip(r.iter().zip(msb))
        .map(|(&c, (&r, &m))| {
            let own = if client {
                (c as u128).wrapping_sub(1 << TRUNC_BOUND_BITS)
            } else {
                0
            };
            own.wrapping_sub(mask_integer(c, r, m))
        })
        .collect()
}

/// X [.., k] times a wide weight [k, n], truncated by f bits: one round.
pub fn matmul_weight_truncating(
    p: &mut Party,
    x: &RingTensor,
    w: &WideWeight,
) -> Result<RingTensor> {
    let (k, n, f) = (w.k, w.n, p.fp.frac_bits);
    if x.last_dim() != k {
        return Err(MpcError::ShapeMismatch {
            op: "matmul_weight_truncating",
            left: x.shape().to_vec(),
            right: vec![k, n],
        });
    }
    if !(1..=TABLE_BITS).contains(&f) {
        return Err(MpcError::BadConfig(format!(
            "a one-round matmul truncates by 1 to {TABLE_BITS} bits, not {f}"
        )));
    }
    p.labelled("matmul_wide", |p| {
        let m = x.len() / k.max(1);
        let row = table_row_words(n);
        let mut parts = p
            .deal_words(
                &Correlation::WideWeightTriple { id: w.mask_id, m },
                &[m * k, 2 * m * k, m * k, 2 * m * n, m * k * row],
            )?
            .into_iter();
        let mut next = || parts.next().expect("five parts");
        let (r, r_wide, msb, c_share, table) = (
            next(),
            wide_from_words(&next()),
            next(),
            wide_from_words(&next()),
            next(),
        );
        let client = p.is_client();
        let masked = RingTensor::new(&[m, k], offset_masked(client, x.data(), &r))?;
        let c = p.open(&masked)?;
        let c = c.data();
        // R = r - 2^64 w m (this party's share), then Z = c G - 2^61 sum_k G - R F - C + 2^64 H
        // mod 2^80: the low halves' exact products, and mod 2^16 at 2^64 the rest,
        // c G_hi - R_lo F_hi - R_hi F_lo (one stacked product) and the table's rows.
        let wraps: Vec<bool> = c.iter().map(|c| c >> 63 == 0).collect();
        let r_share: Vec<u128> = (0..m * k)
            .map(|ik| mask_integer(c[ik], r_wide[ik], msb[ik]))
            .collect();
        let r_low: Vec<u64> = r_share.iter().map(|r| *r as u64).collect();
        let mut left = vec![0u16; m * 3 * k];
        for (i, row) in left.chunks_mut(3 * k).enumerate() {
            for kk in 0..k {
                let ik = i * k + kk;
                row[kk] = c[ik] as u16;
                row[k + kk] = (r_share[ik] as u16).wrapping_neg();
                row[2 * k + kk] = ((r_share[ik] >> 64) as u16).wrapping_neg();
            }
        }
        let cg = matmul_full_transposed(c, &w.own_low_t, m, k, n);
        let rf = matmul_full_transposed(&r_low, &w.masked_low_t, m, k, n);
        let cross = matmul_u16(&left, &w.high, m, 3 * k, n);
        // H = sum over k of the table rows (i, k) with w = 1, in 16-bit lanes.
        let mut high = vec![0u64; m * row];
        for (i, acc) in high.chunks_mut(row.max(1)).enumerate() {
            for kk in (0..k).filter(|&kk| wraps[i * k + kk]) {
                let t = &table[(i * k + kk) * row..(i * k + kk + 1) * row];
                for (a, t) in acc.iter_mut().zip(t) {
                    *a = lanes_add(*a, *t);
                }
            }
        }
        let keep = (1u128 << (64 + f)) - 1;
        let out: Vec<u64> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let lane = (high[i * row + j / 4] >> (16 * (j % 4))) as u16;
                let top = lane.wrapping_add(cross[ij]);
                let z = cg[ij]
                    .wrapping_sub(w.offset_columns[j])
                    .wrapping_sub(rf[ij])
                    .wrapping_sub(c_share[ij])
                    .wrapping_add((top as u128) << 64);
                // Local truncation modulo 2^(64 + f): exact to one ulp.
                if client {
                    ((z & keep) >> f) as u64
                } else {
                    (((z.wrapping_neg() & keep) >> f) as u64).wrapping_neg()
                }
            })
            .collect();
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("a matmul operand has dimensions") = n;
        RingTensor::new(&shape, out)
    })
}
