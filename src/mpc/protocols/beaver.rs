//! Beaver multiplication: elementwise and matrix products of two shared values, one round.
//!
//! With a triple (a, b, c = a*b) from the dealer: open eps = x - a and delta = y - b (one message each
//! way, batched for every product of the call), then z = c + eps*b + a*delta + eps*delta, the last term
//! added by the client alone. Results carry the sum of the operands' fractional bits: fixed-point
//! callers truncate afterwards ([`super::fixed_mul_many`]).
//!
//! Cost: 1 round; each way 8 bytes per element of x and y (elementwise), 8 (m k + k n) per matmul,
//! or 8 m k against a prepared weight whose mask was opened once. A prepared weight holds W - B
//! (8 bytes an entry) and this party's share of B as a key ([`SeededMask`]), regenerated in each
//! product: the weight's words of stream per product, for no weight-sized mask.

use crate::mpc::correlation::Correlation;
use crate::mpc::error::MpcError;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;
use crate::mpc::seeded_mask::SeededMask;

/// Elementwise products of several pairs in one round (no truncation).
pub fn mul_many(p: &mut Party, pairs: &[(&RingTensor, &RingTensor)]) -> Result<Vec<RingTensor>> {
    if pairs.is_empty() {
        return Ok(vec![]);
    }
    for (x, y) in pairs {
        if x.shape() != y.shape() {
            return Err(MpcError::ShapeMismatch {
                op: "mul",
                left: x.shape().to_vec(),
                right: y.shape().to_vec(),
            });
        }
    }
    let len: usize = pairs.iter().map(|(x, _)| x.len()).sum();
    let triple = p.deal(&Correlation::MulTriple { len }, &[&[len], &[len], &[len]])?;
    let (a, b, c) = (triple[0].data(), triple[1].data(), triple[2].data());
    let mut masked = Vec::with_capacity(2 * pairs.len());
    let mut offset = 0;
    for (x, y) in pairs {
        let n = x.len();
        let sub = |t: &RingTensor, mask: &[u64]| {
            t.data()
                .iter()
                .zip(&mask[offset..offset + n])
                .map(|(v, m)| v.wrapping_sub(*m))
                .collect::<Vec<_>>()
        };
        masked.push(RingTensor::new(x.shape(), sub(x, a))?);
        masked.push(RingTensor::new(y.shape(), sub(y, b))?);
        offset += n;
    }
    let opened = p.open_many(&masked.iter().collect::<Vec<_>>())?;
    let client = p.is_client();
    let mut out = Vec::with_capacity(pairs.len());
    let mut offset = 0;
    for (i, (x, _)) in pairs.iter().enumerate() {
        let (eps, delta) = (opened[2 * i].data(), opened[2 * i + 1].data());
        let data = (0..x.len())
            .map(|j| {
                let k = offset + j;
                let z = c[k]
                    .wrapping_add(eps[j].wrapping_mul(b[k]))
                    .wrapping_add(a[k].wrapping_mul(delta[j]));
                if client {
                    z.wrapping_add(eps[j].wrapping_mul(delta[j]))
                } else {
                    z
                }
            })
            .collect();
        out.push(RingTensor::new(x.shape(), data)?);
        offset += x.len();
    }
    Ok(out)
}

pub fn mul(p: &mut Party, x: &RingTensor, y: &RingTensor) -> Result<RingTensor> {
    Ok(mul_many(p, &[(x, y)])?.remove(0))
}

/// x^2 with a square pair (a, a^2): open eps = x - a only, then x^2 = a^2 + 2 eps a + eps^2
/// (the last term by the client). 1 round, 8 bytes per element each way: half of a general product.
pub fn square(p: &mut Party, x: &RingTensor) -> Result<RingTensor> {
    let len = x.len();
    let pair = p.deal(&Correlation::SquarePair { len }, &[x.shape(), x.shape()])?;
    let (a, a2) = (&pair[0], &pair[1]);
    let eps = p.open(&x.sub(a)?)?;
    let mut z = a2.add(&eps.mul(a)?.scale(2))?;
    if p.is_client() {
        z.add_assign(&eps.mul(&eps)?)?;
    }
    Ok(z)
}

fn matmul_dims(x: &RingTensor, y: &RingTensor) -> Result<(usize, usize, usize, usize)> {
    let (sx, sy) = (x.shape(), y.shape());
    let mismatch = || MpcError::ShapeMismatch {
        op: "matmul",
        left: sx.to_vec(),
        right: sy.to_vec(),
    };
    if sx.len() < 2
        || sx.len() != sy.len()
        || sx[..sx.len() - 2] != sy[..sy.len() - 2]
        || sx[sx.len() - 1] != sy[sy.len() - 2]
    {
        return Err(mismatch());
    }
    let batch = sx[..sx.len() - 2].iter().product();
    Ok((batch, sx[sx.len() - 2], sx[sx.len() - 1], sy[sy.len() - 1]))
}

/// Batched matrix product of two shared tensors [.., m, k] x [.., k, n] in one round (no truncation).
pub fn matmul(p: &mut Party, x: &RingTensor, y: &RingTensor) -> Result<RingTensor> {
    let (batch, m, k, n) = matmul_dims(x, y)?;
    let triple = p.deal(
        &Correlation::MatmulTriple { batch, m, k, n },
        &[x.shape(), y.shape(), &out_shape(x, n)],
    )?;
    let (a, b, c) = (&triple[0], &triple[1], &triple[2]);
    let opened = p.open_many(&[&x.sub(a)?, &y.sub(b)?])?;
    let (eps, delta) = (&opened[0], &opened[1]);
    let mut z = c.add(&eps.matmul(b)?)?.add(&a.matmul(delta)?)?;
    if p.is_client() {
        z.add_assign(&eps.matmul(delta)?)?;
    }
    Ok(z)
}

/// X W for an X the client holds in the clear (its share is X, the server's zero), such as its
/// one-hot tokens. The same opening of E = X - A as [`matmul_weight`], but the client forms X F
/// itself (a gather of F's rows for a one-hot X), so X W = X F + E B + C with C = A B: one product
/// against the mask share per party, where [`matmul_weight`] takes three for the client and two
/// for the server. The server learns E only, uniform as before.
pub fn matmul_weight_client_input(
    p: &mut Party,
    x: &RingTensor,
    w: &PreparedWeight,
) -> Result<RingTensor> {
    if !p.is_client() && x.data().iter().any(|&v| v != 0) {
        return Err(MpcError::BadConfig(
            "the server's share of a client input must be zero".into(),
        ));
    }
    let (masked, stage) = stage_weight_product(p, x, w, "matmul_weight_client_input")?;
    let eps = p.open(&masked)?;
    let mut z = stage.c;
    add_mask_product(&mut z, w, &eps);
    if let Some(f) = &w.masked {
        z.add_assign(&sparse_rows_product(&stage.rows, f)?)?;
    }
    z.reshape(&stage.out_shape)
}

/// X F skipping the zeros of X: a row gather for one-hot rows.
fn sparse_rows_product(x: &RingTensor, f: &RingTensor) -> Result<RingTensor> {
    let (m, k, n) = (x.shape()[0], x.shape()[1], f.shape()[1]);
    let mut out = vec![0u64; m * n];
    for (i, row) in x.data().chunks(k.max(1)).enumerate() {
        let dst = &mut out[i * n..(i + 1) * n];
        for (j, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0) {
            for (d, s) in dst.iter_mut().zip(&f.data()[j * n..(j + 1) * n]) {
                *d = d.wrapping_add(v.wrapping_mul(*s));
            }
        }
    }
    RingTensor::new(&[m, n], out)
}

fn out_shape(x: &RingTensor, n: usize) -> Vec<usize> {
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("matmul operand has dimensions") = n;
    shape
}

/// A shared weight [k, n] whose dealer mask B was opened once as F = W - B.
pub struct PreparedWeight {
    mask_id: u64,
    shape: [usize; 2],
    /// W - B, public to both parties; the server drops it for a weight that multiplies only the
    /// client's inputs, where only the client uses it.
    masked: Option<RingTensor>,
    /// This party's share of B, kept as the key of its stream (regenerated at each product).
    mask: SeededMask,
    /// Prepared by [`prepare_client_input_weight`]: no product but [`matmul_weight_client_input`].
    client_inputs_only: bool,
}

impl PreparedWeight {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// Opens W - B once (8 k n bytes each way, one round), so later products send only the activations.
pub fn prepare_weight(p: &mut Party, w: &RingTensor) -> Result<PreparedWeight> {
    prepare_weight_owned(p, w.clone())
}

/// [`prepare_weight`] taking the share by value: W - B is formed in its buffer and the opening
/// is added into it, so that the weight is held once while it is prepared.
pub fn prepare_weight_owned(p: &mut Party, mut w: RingTensor) -> Result<PreparedWeight> {
    let [k, n] = w.shape() else {
        return Err(MpcError::ShapeMismatch {
            op: "prepare_weight",
            left: w.shape().to_vec(),
            right: vec![],
        });
    };
    let (k, n) = (*k, *n);
    let mask_id = p.dealer.new_mask_id();
    let key = p
        .deal(&Correlation::WeightMask { id: mask_id, k, n }, &[&[2]])?
        .remove(0);
    let mask = SeededMask::new([key.data()[0], key.data()[1]], k, n);
    mask.subtract_from(w.data_mut());
    p.open_in_place(&mut w)?;
    Ok(PreparedWeight {
        mask_id,
        shape: [k, n],
        masked: Some(w),
        mask,
        client_inputs_only: false,
    })
}

/// [`prepare_weight_owned`] for a weight that multiplies only inputs the client holds in the
/// clear ([`matmul_weight_client_input`], such as the token table): the server never uses W - B
/// there, so it keeps only its key, and the weight may not enter any other product.
pub fn prepare_client_input_weight(p: &mut Party, w: RingTensor) -> Result<PreparedWeight> {
    let mut prepared = prepare_weight_owned(p, w)?;
    if !p.is_client() {
        prepared.masked = None;
    }
    prepared.client_inputs_only = true;
    Ok(prepared)
}

/// Adds E B_p (this party's mask share, regenerated from its key) to `z` [m, n].
fn add_mask_product(z: &mut RingTensor, w: &PreparedWeight, eps: &RingTensor) {
    let m = eps.len() / w.shape[0].max(1);
    let product = w.mask.left_product(eps.data(), m);
    for (z, e) in z.data_mut().iter_mut().zip(&product) {
        *z = z.wrapping_add(*e);
    }
}

/// X [.., m, k] times a prepared weight [k, n]: opens only X - A (one round).
/// X W = (E + A)(F + B) = E F + E B + A F + C, with E = X - A public and C = A B from the dealer.
pub fn matmul_weight(p: &mut Party, x: &RingTensor, w: &PreparedWeight) -> Result<RingTensor> {
    let (masked, stage) = stage_matmul_weight(p, x, w, "matmul_weight")?;
    let eps = p.open(&masked)?;
    stage.finish(p, w, eps)
}

/// [`matmul_weight`] waiting for its opening, so that it can share a round with other steps
/// ([`super::Round::open`]): this party's shares of the dealer's A and C = A B.
pub(crate) struct WeightStage {
    rows: RingTensor,
    a: RingTensor,
    c: RingTensor,
    out_shape: Vec<usize>,
}

/// Deals the product's masks and returns E = X - A (this party's share) to open.
pub(crate) fn stage_matmul_weight(
    p: &mut Party,
    x: &RingTensor,
    w: &PreparedWeight,
    op: &'static str,
) -> Result<(RingTensor, WeightStage)> {
    if w.client_inputs_only {
        return Err(MpcError::BadConfig(format!(
            "{op}: a weight prepared for the client's inputs only"
        )));
    }
    stage_weight_product(p, x, w, op)
}

/// [`stage_matmul_weight`] for any prepared weight.
fn stage_weight_product(
    p: &mut Party,
    x: &RingTensor,
    w: &PreparedWeight,
    op: &'static str,
) -> Result<(RingTensor, WeightStage)> {
    let [k, n] = w.shape;
    if x.last_dim() != k {
        return Err(MpcError::ShapeMismatch {
            op,
            left: x.shape().to_vec(),
            right: w.shape.to_vec(),
        });
    }
    let m = x.len() / k.max(1);
    let rows = x.clone().reshape(&[m, k])?;
    let mut parts = p.deal(
        &Correlation::WeightTriple { id: w.mask_id, m },
        &[&[m, k], &[m, n]],
    )?;
    let c = parts.pop().expect("two parts");
    let a = parts.pop().expect("two parts");
    let masked = rows.sub(&a)?;
    let stage = WeightStage {
        rows,
        a,
        c,
        out_shape: out_shape(x, n),
    };
    Ok((masked, stage))
}

impl WeightStage {
    /// X W from the opened E = X - A.
    pub(crate) fn finish(
        self,
        p: &Party,
        w: &PreparedWeight,
        eps: RingTensor,
    ) -> Result<RingTensor> {
        // E F + A F as one product (E F is the client's alone), then E B_p.
        let left = if p.is_client() {
            self.a.add(&eps)?
        } else {
            self.a
        };
        let f = w
            .masked
            .as_ref()
            .ok_or_else(|| MpcError::BadConfig("a product without W - B".into()))?;
        let mut z = self.c.add(&left.matmul(f)?)?;
        add_mask_product(&mut z, w, &eps);
        z.reshape(&self.out_shape)
    }
}
