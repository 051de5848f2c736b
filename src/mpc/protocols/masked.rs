//! The masked product, which fuses the truncation of its inputs into the opening a product needs
//! anyway; its steps share a [`Round`] with other protocols' ([`Round::mul`], [`Round::square`],
//! [`Round::truncate`]).
//!
//! Masked product (the masked evaluation of ABY2.0 and SIGMA, with a dealer). An operand u is a
//! share of a ring value and a shift s. The parties open c = u + 2^61 + r (c = u + r when s = 0),
//! uniform because r is. As in [`super::trunc`], the operand's truncation is then
//!   T = P - R,   P = (c >> s) - 2^(61 - s)   (public),   R = a - w b   (shared),
//! with a = r >> s and b = msb(r) 2^(64 - s) from the dealer and w = [msb(c) = 0] public; T is
//! floor(u / 2^s) or one more, for |u| < 2^61. A product of two such operands,
//!   T_u T_v = P_u P_v - P_u R_v - P_v R_u + (a_u a_v - w_v a_u b_v - w_u b_u a_v + w_u w_v b_u b_v),
//! is local once the dealer has given shares of the four cross terms. So a fixed-point product
//! whose inputs wait for truncation costs one round, the same bytes as a Beaver product (8 per
//! element and operand each way), and leaves its result at the sum of the operands' fractional
//! bits, for the next opening to truncate. Chains of products (exp's squarings, the Newton-free
//! series of the reciprocal and 1/sqrt, GeLU's powers) then take one round per product.
//! A value is opened once per product; re-using an opening would need the dealer to remember masks.

use super::round::{Round, Slot, Stage};
use crate::mpc::correlation::{masked_cross_terms, Correlation};
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;
use crate::mpc::CLIENT;

/// A shared value entering a product: its ring value truncated by `shift` bits (0: as it is).
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub(super) value: &'a RingTensor,
    pub(super) shift: u32,
}

impl<'a> Operand<'a> {
    pub fn plain(value: &'a RingTensor) -> Self {
        Self { value, shift: 0 }
    }

    /// floor(value / 2^shift) or one more; |value| must be below 2^61.
    pub fn truncated(value: &'a RingTensor, shift: u32) -> Self {
        Self { value, shift }
    }
}

/// A masked product waiting for its opening: this party's dealer shares.
struct MaskedStage {
    shape: Vec<usize>,
    shifts: Vec<u32>,
    pairs: Vec<(usize, usize)>,
    /// Per operand: this party's shares of a and b (no b without a shift).
    parts: Vec<(Vec<u64>, Option<Vec<u64>>)>,
    /// Per pair: shares of the cross terms a_u a_v, a_u b_v, b_u a_v, b_u b_v (None: always zero).
    cross: Vec<[Option<Vec<u64>>; 4]>,
}

impl Round {
    /// The product of two operands, at the sum of their fractional bits after their shifts.
    pub fn mul(&mut self, p: &mut Party, u: Operand, v: Operand) -> Result<Slot> {
        self.masked_job(p, &[u, v], vec![(0, 1)])
    }

    /// The square of an operand (one opening).
    pub fn square(&mut self, p: &mut Party, u: Operand) -> Result<Slot> {
        self.masked_job(p, &[u], vec![(0, 0)])
    }

    /// floor(x / 2^shift) or one more, as [`super::truncate`] does.
    pub fn truncate(&mut self, p: &mut Party, x: &RingTensor, shift: u32) -> Result<Slot> {
        if shift == 0 {
            return Err(MpcError::BadConfig(
                "truncation by 0 bits: the shift must be in 1..=61".into(),
            ));
        }
        self.masked_job(p, &[Operand::truncated(x, shift)], vec![])
    }

    fn masked_job(
        &mut self,
        p: &mut Party,
        operands: &[Operand],
        pairs: Vec<(usize, usize)>,
    ) -> Result<Slot> {
        check_operands(operands)?;
        let shape = operands[0].value.shape().to_vec();
        let len = operands[0].value.len();
        let shifts: Vec<u32> = operands.iter().map(|o| o.shift).collect();
        let corr = Correlation::Masked {
            len,
            shifts: shifts.clone(),
            pairs: pairs.clone(),
        };
        let count = corr_components(&shifts, &pairs);
        let mut comps = p.deal_words(&corr, &vec![len; count])?.into_iter();
        let masks: Vec<Vec<u64>> = operands.iter().map(|_| comps.next().unwrap()).collect();
        let parts: Vec<(Vec<u64>, Option<Vec<u64>>)> = shifts
            .iter()
            .zip(&masks)
            .map(|(&s, r)| {
                if s == 0 {
                    (r.clone(), None)
                } else {
                    (comps.next().unwrap(), comps.next())
                }
            })
            .collect();
        let cross = pairs
            .iter()
            .map(|&(u, v)| {
                masked_cross_terms(shifts[u], shifts[v], u == v)
                    .map(|t| t.then(|| comps.next().unwrap()))
            })
            .collect();
        let client = p.is_client();
        let offset = 1u64 << TRUNC_BOUND_BITS;
        let mut masked = Vec::with_capacity(len * operands.len());
        for (o, r) in operands.iter().zip(&masks) {
            let add = if client && o.shift > 0 { offset } else { 0 };
            masked.extend(
                o.value
                    .data()
                    .iter()
                    .zip(r)
                    .map(|(x, r)| x.wrapping_add(add).wrapping_add(*r)),
            );
        }
        Ok(self.push(
            masked,
            Box::new(MaskedStage {
                shape,
                shifts,
                pairs,
                parts,
                cross,
            }),
        ))
    }
}

/// Operands of one product: one shape, and shifts the masked opening supports.
pub(super) fn check_operands(operands: &[Operand]) -> Result<()> {
    let shape = operands[0].value.shape();
    for o in operands {
        if o.value.shape() != shape {
            return Err(MpcError::ShapeMismatch {
                op: "masked product",
                left: shape.to_vec(),
                right: o.value.shape().to_vec(),
            });
        }
        if o.shift > TRUNC_BOUND_BITS {
            return Err(MpcError::BadConfig(format!(
                "truncation by {} bits: the shift must be in 0..={TRUNC_BOUND_BITS}",
                o.shift
            )));
        }
    }
    Ok(())
}

/// How many components a masked correlation has (masks, a and b, cross terms).
fn corr_components(shifts: &[u32], pairs: &[(usize, usize)]) -> usize {
    shifts.len()
        + 2 * shifts.iter().filter(|&&s| s > 0).count()
        + pairs
            .iter()
            .map(|&(u, v)| {
                masked_cross_terms(shifts[u], shifts[v], u == v)
                    .iter()
                    .filter(|t| **t)
                    .count()
            })
            .sum::<usize>()
}

impl Stage for MaskedStage {
    fn finish(self: Box<Self>, party: usize, opened: &[u64]) -> Result<Vec<RingTensor>> {
        Ok(vec![(*self).finish(party == CLIENT, opened)?])
    }
}

impl MaskedStage {
    fn finish(self, client: bool, opened: &[u64]) -> Result<RingTensor> {
        let len = opened.len() / self.shifts.len();
        // Per operand: the public P and w, and this party's share of R = a - w b.
        let mut public = Vec::with_capacity(self.shifts.len());
        let mut wraps = Vec::with_capacity(self.shifts.len());
        let mut shares = Vec::with_capacity(self.shifts.len());
        for (o, (&s, (a, b))) in self.shifts.iter().zip(&self.parts).enumerate() {
            let c = &opened[o * len..(o + 1) * len];
            if s == 0 {
                public.push(c.to_vec());
                wraps.push(vec![0u64; len]);
                shares.push(a.clone());
            } else {
                let low = (1u64 << TRUNC_BOUND_BITS) >> s;
                let b = b.as_ref().expect("a shifted operand has b");
                let w: Vec<u64> = c.iter().map(|c| (c >> 63 == 0) as u64).collect();
                public.push(c.iter().map(|c| (c >> s).wrapping_sub(low)).collect());
                shares.push(
                    (0..len)
                        .map(|i| a[i].wrapping_sub(w[i].wrapping_mul(b[i])))
                        .collect(),
                );
                wraps.push(w);
            }
        }
        let own = |p: u64| if client { p } else { 0 };
        let out: Vec<u64> = match self.pairs.first() {
            None => (0..len)
                .map(|i| own(public[0][i]).wrapping_sub(shares[0][i]))
                .collect(),
            Some(&(u, v)) => {
                let [aa, ab, ba, bb] = &self.cross[0];
                let term = |t: &Option<Vec<u64>>, i: usize| t.as_ref().map_or(0, |t| t[i]);
                let (pu, pv, ru, rv, wu, wv) = (
                    &public[u], &public[v], &shares[u], &shares[v], &wraps[u], &wraps[v],
                );
                (0..len)
                    .map(|i| {
                        let mut z = own(pu[i].wrapping_mul(pv[i]))
                            .wrapping_sub(pu[i].wrapping_mul(rv[i]))
                            .wrapping_sub(pv[i].wrapping_mul(ru[i]))
                            .wrapping_add(term(aa, i))
                            .wrapping_add(wu[i].wrapping_mul(wv[i]).wrapping_mul(term(bb, i)));
                        if u == v {
                            // R^2 = a^2 - 2 w a b + w b^2 (w^2 = w).
                            z = z.wrapping_sub(wu[i].wrapping_mul(term(ab, i)).wrapping_mul(2));
                        } else {
                            z = z
                                .wrapping_sub(wv[i].wrapping_mul(term(ab, i)))
                                .wrapping_sub(wu[i].wrapping_mul(term(ba, i)));
                        }
                        z
                    })
                    .collect()
            }
        };
        RingTensor::new(&self.shape, out)
    }
}
