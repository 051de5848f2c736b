//! One round of openings shared by several protocols (a round scheduler), and the masked product,
//! which fuses the truncation of its inputs into the opening a product needs anyway.
//!
//! Callers stage independent steps on a [`Round`] (comparisons, products, squares, truncations),
//! then [`Round::run`] opens everything at once: one exchange, one round, however many steps.
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

use super::compare::{self, LtzProductStage, LtzStage};
use super::wide::{self, WideStage};
use crate::mpc::correlation::{masked_cross_terms, Correlation};
use crate::mpc::dcf;
use crate::mpc::error::MpcError;
use crate::mpc::fixed::TRUNC_BOUND_BITS;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// A shared value entering a product: its ring value truncated by `shift` bits (0: as it is).
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    value: &'a RingTensor,
    shift: u32,
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

/// Where a staged step's output will be once the round has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

struct MaskedStage {
    shape: Vec<usize>,
    shifts: Vec<u32>,
    pairs: Vec<(usize, usize)>,
    /// Per operand: this party's shares of a and b (no b without a shift).
    parts: Vec<(Vec<u64>, Option<Vec<u64>>)>,
    /// Per pair: shares of the cross terms a_u a_v, a_u b_v, b_u a_v, b_u b_v (None: always zero).
    cross: Vec<[Option<Vec<u64>>; 4]>,
}

enum Job {
    Ltz(LtzStage, Vec<usize>),
    LtzProducts(LtzProductStage, Vec<usize>),
    Masked(MaskedStage),
    Wide(WideStage),
    /// Values masked by the caller, handed back opened.
    Open(Vec<usize>),
}

impl Job {
    fn outputs(&self) -> usize {
        match self {
            Job::LtzProducts(stage, _) => stage.outputs(),
            _ => 1,
        }
    }
}

/// Steps that open their masked values together.
#[derive(Default)]
pub struct Round {
    masked: Vec<Vec<u64>>,
    jobs: Vec<Job>,
    slots: usize,
}

/// The slots of a comparison with products ([`Round::ltz_products`]).
pub struct LtzProducts {
    /// Shares of t = [x < 0].
    pub bit: Slot,
    /// Shares of t x.
    pub times_x: Slot,
    /// Shares of t w for each other value w.
    pub times: Vec<Slot>,
}

/// The outputs of a round, taken by slot.
pub struct Outputs(Vec<Option<RingTensor>>);

impl Outputs {
    pub fn take(&mut self, slot: Slot) -> RingTensor {
        self.0[slot.0]
            .take()
            .expect("each slot of a round is taken once")
    }
}

impl Round {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stages a job; its outputs take the next slots, the first of which is returned.
    fn push(&mut self, masked: Vec<u64>, job: Job) -> Slot {
        let first = self.slots;
        self.slots += job.outputs();
        self.masked.push(masked);
        self.jobs.push(job);
        Slot(first)
    }

    /// Shares of [x < 0] (see [`super::compare`]).
    pub fn ltz(&mut self, p: &mut Party, x: &RingTensor) -> Result<Slot> {
        self.ltz_bounded(p, x, dcf::BITS as u32)
    }

    /// Shares of [x < 0] for x known to lie in [-2^bits, 2^bits): the comparison's key covers the
    /// low `bits` bits only (one level of key evaluation a bit, 63 for a whole ring element).
    /// Elements outside that range get a wrong bit.
    pub fn ltz_bounded(&mut self, p: &mut Party, x: &RingTensor, bits: u32) -> Result<Slot> {
        self.ltz_coarse(p, x, bits, 0)
    }

    /// [`Self::ltz_bounded`] at the resolution of 2^`skip`: the key skips the low `skip` bits
    /// (`bits - skip` levels). Exact on [-2^bits, 2^bits - 2^skip] except that x in (-2^skip, 0)
    /// may read as non-negative (see [`super::compare`]): for functions whose pieces agree near
    /// their cut-offs.
    pub fn ltz_coarse(
        &mut self,
        p: &mut Party,
        x: &RingTensor,
        bits: u32,
        skip: u32,
    ) -> Result<Slot> {
        if !(1..=dcf::BITS as u32).contains(&bits) || skip >= bits {
            return Err(MpcError::BadConfig(format!(
                "a comparison over {bits} bits skipping {skip}: at most {} bits, and fewer skipped",
                dcf::BITS
            )));
        }
        let (masked, stage) = compare::stage(p, x.data(), bits as usize, skip as usize)?;
        Ok(self.push(masked, Job::Ltz(stage, x.shape().to_vec())))
    }

    /// Shares of t = [x < 0], of t x and of t w for each of `others` (same shape as x), all from
    /// the comparison's own opening (see [`super::compare::stage_products`]).
    pub fn ltz_products(
        &mut self,
        p: &mut Party,
        x: &RingTensor,
        others: &[&RingTensor],
    ) -> Result<LtzProducts> {
        for w in others {
            if w.shape() != x.shape() {
                return Err(MpcError::ShapeMismatch {
                    op: "comparison products",
                    left: x.shape().to_vec(),
                    right: w.shape().to_vec(),
                });
            }
        }
        let data: Vec<&[u64]> = others.iter().map(|w| w.data()).collect();
        let (masked, stage) = compare::stage_products(p, x.data(), &data)?;
        let Slot(first) = self.push(masked, Job::LtzProducts(stage, x.shape().to_vec()));
        Ok(LtzProducts {
            bit: Slot(first),
            times_x: Slot(first + 1),
            times: (0..others.len()).map(|j| Slot(first + 2 + j)).collect(),
        })
    }

    /// The product of two operands, at the sum of their fractional bits after their shifts.
    pub fn mul(&mut self, p: &mut Party, u: Operand, v: Operand) -> Result<Slot> {
        self.masked_job(p, &[u, v], vec![(0, 1)])
    }

    /// The square of an operand (one opening).
    pub fn square(&mut self, p: &mut Party, u: Operand) -> Result<Slot> {
        self.masked_job(p, &[u], vec![(0, 0)])
    }

    /// The product of two operands truncated by `shift` more bits in the same round (computed in
    /// Z_2^128, see [`super::wide`]): floor(T_u T_v / 2^shift) or one more, T being each operand
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
        self.wide_job_rows(p, &[u, v], shift, n.max(1))
    }

    fn wide_job(&mut self, p: &mut Party, operands: &[Operand], shift: u32) -> Result<Slot> {
        check_operands(operands)?;
        self.wide_job_rows(p, operands, shift, 1)
    }

    fn wide_job_rows(
        &mut self,
        p: &mut Party,
        operands: &[Operand],
        shift: u32,
        per_row: usize,
    ) -> Result<Slot> {
        if !(1..=64).contains(&shift) {
            return Err(MpcError::BadConfig(format!(
                "truncation of a product by {shift} bits: the shift must be in 1..=64"
            )));
        }
        let values: Vec<&RingTensor> = operands.iter().map(|o| o.value).collect();
        let shifts: Vec<u32> = operands.iter().map(|o| o.shift).collect();
        let (masked, stage) = wide::stage(p, &values, &shifts, shift, per_row)?;
        Ok(self.push(masked, Job::Wide(stage)))
    }

    /// Opens values the caller has masked itself (a step staged outside the round, such as
    /// [`super::rows::stage_append_and_multiply`]); the slot holds them opened.
    pub fn open(&mut self, masked: &RingTensor) -> Slot {
        self.push(masked.data().to_vec(), Job::Open(masked.shape().to_vec()))
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
            Job::Masked(MaskedStage {
                shape,
                shifts,
                pairs,
                parts,
                cross,
            }),
        ))
    }

    /// Opens every staged value in one exchange and finishes every step.
    pub fn run(self, p: &mut Party) -> Result<Outputs> {
        if self.jobs.is_empty() {
            return Ok(Outputs(vec![]));
        }
        let flat: Vec<u64> = self.masked.iter().flatten().copied().collect();
        let opened = p.open(&RingTensor::new(&[flat.len()], flat)?)?.into_data();
        let (party, client) = (p.id, p.is_client());
        let mut offset = 0;
        let mut outputs = Vec::with_capacity(self.slots);
        for (job, masked) in self.jobs.into_iter().zip(&self.masked) {
            let c = &opened[offset..offset + masked.len()];
            offset += masked.len();
            match job {
                Job::Ltz(stage, shape) => {
                    outputs.push(Some(RingTensor::new(&shape, stage.finish(party, c))?))
                }
                Job::LtzProducts(stage, shape) => {
                    for out in stage.finish(party, c) {
                        outputs.push(Some(RingTensor::new(&shape, out)?));
                    }
                }
                Job::Masked(stage) => outputs.push(Some(stage.finish(client, c)?)),
                Job::Wide(stage) => outputs.push(Some(stage.finish(client, c)?)),
                Job::Open(shape) => outputs.push(Some(RingTensor::new(&shape, c.to_vec())?)),
            }
        }
        Ok(Outputs(outputs))
    }
}

/// Operands of one product: one shape, and shifts the masked opening supports.
fn check_operands(operands: &[Operand]) -> Result<()> {
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
