//! A fixed-point product that truncates its own result in the round that multiplies: the product
//! is formed in Z_2^128, where each party can truncate its share locally.
//!
//! [`super::masked`]'s masked product opens c = u + 2^61 + r per operand (|u| < 2^61) and gets
//!   T = P - R,   P = (c >> s) - 2^(61 - s)   (public),   R = a - w m 2^(64 - s)   (shared),
//! with a = r >> s, m = msb(r) and w = [msb(c) = 0]. T is floor(u / 2^s) or one more *as an
//! integer*, not only mod 2^64: u + 2^61 is below 2^62, so c wraps past 2^64 exactly when m = 1 and
//! msb(c) = 0. So with 128-bit shares of a and m from the dealer, and of the cross terms a_u a_v,
//! a_u m_v, m_u a_v and m_u m_v, the parties hold shares mod 2^128 of the integer
//!   T_u T_v = P_u P_v - P_u R_v - P_v R_u + a_u a_v - w_v 2^(64 - s_v) a_u m_v
//!             - w_u 2^(64 - s_u) m_u a_v + w_u w_v 2^(128 - s_u - s_v) m_u m_v.
//! That integer is below 2^122, far from 2^127, so each party shifts its own share (SecureML's
//! local truncation): party 0 takes z0 >> t, party 1 takes -((-z1) >> t). The sum is
//! floor(T_u T_v / 2^t) or one more, unless party 0's uniform share lies within |T_u T_v| of
//! 2^128: probability |T_u T_v| / 2^128 per element, below 2^-64 for products below 2^64 (two
//! values under 2^16 in magnitude at f = 16). The low 64 bits are then shares in Z_2^64.
//!
//! Cost: 1 round (a Beaver product and its truncation took 2), 8 bytes per element and operand each
//! way. Dealer bytes: party 1 gets 16 bytes per element for each of a, m (per operand) and each
//! cross term: 128 an element for a product, 64 for a square. The opening can share a round with
//! other protocols ([`Round::mul_truncating`]). A factor per row (one value of v for
//! a row of u, [`Round::mul_truncating_rows`]) is masked and opened once per row;
//! the dealer's cross terms stay one per element. A public linear map may act on the exact
//! products before the truncation ([`Round::mul_truncating_rows_mixed`]: rotary embeddings, whose
//! angles are public), so that its own fixed-point factors cost no truncation of their own.

use super::masked::{check_operands, Operand};
use super::round::{Round, Slot, Stage};
use crate::mpc::correlation::{wide_operand_lens, Correlation};
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::{wide_from_words, RingTensor};
use crate::mpc::CLIENT;

/// A public linear map on the exact products (mod 2^128) of one call, before their truncation.
pub type WideMix = std::sync::Arc<dyn Fn(&mut [u128]) + Send + Sync>;

/// A truncating product waiting for its opening: this party's dealer shares.
pub(crate) struct WideStage {
    /// Applied to the products before the truncation (shares: the map must be linear).
    mix: Option<WideMix>,
    shape: Vec<usize>,
    shifts: Vec<u32>,
    out_shift: u32,
    /// Elements of the first operand per element of the second (1: elementwise).
    per_row: usize,
    /// Per operand: shares of a and m (128-bit).
    parts: Vec<(Vec<u128>, Vec<u128>)>,
    /// Shares of a_u a_v, a_u m_v, then (two operands) m_u a_v and m_u m_v.
    cross: Vec<Vec<u128>>,
}

impl Round {
    /// The product of two operands truncated by `shift` more bits in the same round (computed in
    /// Z_2^128, see the module doc): floor(T_u T_v / 2^shift) or one more, T being each operand
    /// after its own shift. |u| and |v| must be below 2^61.
    pub fn mul_truncating(
        &mut self,
        p: &mut Party,
        u: Operand,
        v: Operand,
        shift: u32,
    ) -> Result<Slot> {
        self.wide_job(p, &[u, v], shift)
    }

    /// The square of an operand truncated by `shift` more bits in the same round (one opening).
    pub fn square_truncating(&mut self, p: &mut Party, u: Operand, shift: u32) -> Result<Slot> {
        self.wide_job(p, &[u], shift)
    }

    /// [`Self::mul_truncating`] of u [.., n] by one factor per row, v [.., 1]: v is masked and
    /// opened once per row instead of n times.
    pub fn mul_truncating_rows(
        &mut self,
        p: &mut Party,
        u: Operand,
        v: Operand,
        shift: u32,
    ) -> Result<Slot> {
        let n = u.value.last_dim();
        let mut rows = u.value.shape().to_vec();
        if let Some(last) = rows.last_mut() {
            *last = 1;
        }
        if v.value.shape() != rows.as_slice() {
            return Err(MpcError::ShapeMismatch {
                op: "product by a factor per row",
                left: u.value.shape().to_vec(),
                right: v.value.shape().to_vec(),
            });
        }
        // Each operand on its own: their shapes differ by design.
        check_operands(&[u])?;
        check_operands(&[v])?;
        self.wide_job_rows(p, &[u, v], shift, n.max(1), None)
    }

    /// [`Self::mul_truncating_rows`] with the public linear map `mix` applied to the exact
    /// products (the whole [.., n] result, mod 2^128) before their truncation by `shift`: `mix`'s
    /// fixed-point factors are truncated with the product. The mixed values must stay far below
    /// 2^127 (the local truncation fails with probability |value| / 2^128).
    pub fn mul_truncating_rows_mixed(
        &mut self,
        p: &mut Party,
        u: Operand,
        v: Operand,
        shift: u32,
        mix: WideMix,
    ) -> Result<Slot> {
        let n = u.value.last_dim();
        check_operands(&[u])?;
        check_operands(&[v])?;
        self.wide_job_rows(p, &[u, v], shift, n.max(1), Some(mix))
    }

    fn wide_job(&mut self, p: &mut Party, operands: &[Operand], shift: u32) -> Result<Slot> {
        check_operands(operands)?;
        self.wide_job_rows(p, operands, shift, 1, None)
    }

    fn wide_job_rows(
        &mut self,
        p: &mut Party,
        operands: &[Operand],
        shift: u32,
        per_row: usize,
        mix: Option<WideMix>,
    ) -> Result<Slot> {
        if !(1..=64).contains(&shift) {
            return Err(MpcError::BadConfig(format!(
                "truncation of a product by {shift} bits: the shift must be in 1..=64"
            )));
        }
        let values: Vec<&RingTensor> = operands.iter().map(|o| o.value).collect();
        let shifts: Vec<u32> = operands.iter().map(|o| o.shift).collect();
        let (masked, mut stage) = stage(p, &values, &shifts, shift, per_row)?;
        stage.mix = mix;
        Ok(self.push(masked, Box::new(stage)))
    }
}

/// Deals the masks for the product of `operands` (one: a square) whose ring values are shifted
/// right by `shifts`, and returns the masked values to open. With `per_row` above 1 the second
/// operand holds one value per `per_row` consecutive elements of the first (a row factor, opened
/// once per row).
pub(crate) fn stage(
    p: &mut Party,
    operands: &[&RingTensor],
    shifts: &[u32],
    out_shift: u32,
    per_row: usize,
) -> Result<(Vec<u64>, WideStage)> {
    let len = operands[0].len();
    let corr = Correlation::WideProduct {
        len,
        shifts: shifts.to_vec(),
        per_row,
    };
    let cross_terms = if operands.len() == 1 { 2 } else { 4 };
    let operand_lens = wide_operand_lens(len, operands.len(), per_row);
    let mut lens = operand_lens.clone();
    lens.extend(operand_lens.iter().flat_map(|&l| [2 * l, 2 * l]));
    lens.extend(vec![2 * len; cross_terms]);
    let mut comps = p.deal_words(&corr, &lens)?.into_iter();
    let masks: Vec<Vec<u64>> = operands.iter().map(|_| comps.next().unwrap()).collect();
    let mut wide = comps.map(|c| wide_from_words(&c));
    let parts = operands
        .iter()
        .map(|_| (wide.next().unwrap(), wide.next().unwrap()))
        .collect();
    let cross = wide.collect();
    let mut masked = Vec::with_capacity(operand_lens.iter().sum());
    for (o, r) in operands.iter().zip(&masks) {
        masked.extend(offset_masked(p.is_client(), o.data(), r));
    }
    let stage = WideStage {
        mix: None,
        shape: operands[0].shape().to_vec(),
        shifts: shifts.to_vec(),
        out_shift,
        per_row,
        parts,
        cross,
    };
    Ok((masked, stage))
}

/// This party's share of x + 2^61 + r: the client adds 2^61, so that x + 2^61 is non-negative.
pub(crate) fn offset_masked(client: bool, x: &[u64], r: &[u64]) -> Vec<u64> {
    let offset = if client { 1u64 << TRUNC_BOUND_BITS } else { 0 };
    x.iter()
        .zip(r)
        .map(|(x, r)| x.wrapping_add(offset).wrapping_add(*r))
        .collect()
}

/// 2^e mod 2^128 (zero from e = 128 on).
fn power(e: u32) -> u128 {
    if e >= 128 {
        0
    } else {
        1u128 << e
    }
}

impl Stage for WideStage {
    fn finish(self: Box<Self>, party: usize, opened: &[u64]) -> Result<Vec<RingTensor>> {
        Ok(vec![(*self).finish(party == CLIENT, opened)?])
    }
}

impl WideStage {
    /// Shares of the truncated product from the opened values.
    pub(crate) fn finish(self, client: bool, opened: &[u64]) -> Result<RingTensor> {
        let len = self.parts[0].0.len();
        // Per operand: public P, the weight w 2^(64 - s) of m in R, and this party's share of R.
        let mut public = Vec::new();
        let mut weights = Vec::new();
        let mut shares = Vec::new();
        let mut start = 0;
        for (&s, (a, m)) in self.shifts.iter().zip(&self.parts) {
            let c = &opened[start..start + a.len()];
            start += a.len();
            let low = 1i128 << (TRUNC_BOUND_BITS - s);
            let p: Vec<u128> = c.iter().map(|c| ((c >> s) as i128 - low) as u128).collect();
            let w: Vec<u128> = c
                .iter()
                .map(|c| if c >> 63 == 0 { power(64 - s) } else { 0 })
                .collect();
            shares.push(
                (0..a.len())
                    .map(|i| a[i].wrapping_sub(w[i].wrapping_mul(m[i])))
                    .collect::<Vec<u128>>(),
            );
            public.push(p);
            weights.push(w);
        }
        let (u, v) = (0, self.shifts.len() - 1);
        let (pu, pv, ru, rv, wu, wv) = (
            &public[u],
            &public[v],
            &shares[u],
            &shares[v],
            &weights[u],
            &weights[v],
        );
        let square = u == v;
        let t = self.out_shift;
        let per_row = self.per_row;
        let mut exact: Vec<u128> = (0..len)
            .map(|i| {
                // The second operand's element for element i of the first.
                let j = i / per_row;
                let own = if client { pu[i].wrapping_mul(pv[j]) } else { 0 };
                let (aa, am) = (self.cross[0][i], self.cross[1][i]);
                let mut z = own
                    .wrapping_sub(pu[i].wrapping_mul(rv[j]))
                    .wrapping_sub(pv[j].wrapping_mul(ru[i]))
                    .wrapping_add(aa);
                if square {
                    // R^2 = a^2 - 2 w a m + w^2 m (m^2 = m).
                    let m = self.parts[u].1[i];
                    z = z
                        .wrapping_sub(wu[i].wrapping_mul(am).wrapping_mul(2))
                        .wrapping_add(wu[i].wrapping_mul(wu[i]).wrapping_mul(m));
                } else {
                    let (ma, mm) = (self.cross[2][i], self.cross[3][i]);
                    z = z
                        .wrapping_sub(wv[j].wrapping_mul(am))
                        .wrapping_sub(wu[i].wrapping_mul(ma))
                        .wrapping_add(wu[i].wrapping_mul(wv[j]).wrapping_mul(mm));
                }
                z
            })
            .collect();
        if let Some(mix) = &self.mix {
            mix(&mut exact);
        }
        let out: Vec<u64> = exact
            .into_iter()
            .map(|z| {
                let truncated = if client {
                    z >> t
                } else {
                    (z.wrapping_neg() >> t).wrapping_neg()
                };
                truncated as u64
            })
            .collect();
        RingTensor::new(&self.shape, out)
    }
}
