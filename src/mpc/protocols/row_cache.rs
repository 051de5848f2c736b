//! A shared matrix that grows by rows and is multiplied at every step: the keys or the values of a
//! KV cache. Like a prepared weight, each row's dealer mask B is opened once, as F = X - B, when the
//! row is appended; later products open only the other operand, so a step never re-opens the cache.
//!
//! Per head h (columns h*dh..(h+1)*dh), with E = L - A opened and C_h from the dealer:
//!   keys:   L_h X_h^T = E_h F_h^T + E_h B_h^T + A_h F_h^T + C_h,   C_h = A_h B_h^T
//!   values: L_h X_h   = E_h F_h   + E_h B_h   + A_h F_h   + C_h,   C_h = A_h B_h
//! (E F by the client alone). Appending new rows and the product share one opening.
//!
//! Cost: 1 round; each way 8 bytes per new element (t * width) and per element of L.
//! Rolling back rows ([`PreparedRows::truncate`]) is local; re-appended rows get fresh masks.

use crate::mpc::correlation::Correlation;
use crate::mpc::error::MpcError;
use crate::mpc::matmul::head_matmul;
use crate::mpc::party::{Party, Result};
use crate::mpc::ring::RingTensor;

/// A shared [rows, width] matrix split into `heads` column blocks, with its masks opened row by row.
pub struct PreparedRows {
    mask_id: u64,
    heads: usize,
    width: usize,
    /// F = X - B, public to both parties, row-major.
    masked: Vec<u64>,
    /// This party's share of B, row-major.
    mask: Vec<u64>,
}

impl PreparedRows {
    pub fn new(p: &mut Party, width: usize, heads: usize) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(MpcError::BadConfig(format!(
                "a row cache of width {width} cannot be split into {heads} heads"
            )));
        }
        Ok(Self {
            mask_id: p.dealer.new_mask_id(),
            heads,
            width,
            masked: Vec::new(),
            mask: Vec::new(),
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn rows(&self) -> usize {
        self.masked.len() / self.width
    }

    /// Keeps the first `rows` rows (how rejected drafts leave the cache); both parties call it.
    pub fn truncate(&mut self, p: &mut Party, rows: usize) -> Result<()> {
        if rows >= self.rows() {
            return Ok(());
        }
        p.deal(
            &Correlation::RowTruncate {
                id: self.mask_id,
                rows,
            },
            &[],
        )?;
        self.masked.truncate(rows * self.width);
        self.mask.truncate(rows * self.width);
        Ok(())
    }

    /// The dealer's mask of `new` and the share `new - B` to open.
    fn stage(&mut self, p: &mut Party, new: &RingTensor) -> Result<(RingTensor, RingTensor)> {
        if new.last_dim() != self.width {
            return Err(MpcError::ShapeMismatch {
                op: "append rows",
                left: new.shape().to_vec(),
                right: vec![self.rows(), self.width],
            });
        }
        let t = new.len() / self.width;
        let corr = Correlation::RowMask {
            id: self.mask_id,
            rows: t,
            width: self.width,
        };
        let b = p.deal(&corr, &[&[t, self.width]])?.remove(0);
        let to_open = new.clone().reshape(&[t, self.width])?.sub(&b)?;
        Ok((b, to_open))
    }

    fn push(&mut self, b: RingTensor, opened: &RingTensor) {
        self.mask.extend_from_slice(b.data());
        self.masked.extend_from_slice(opened.data());
    }

    /// Appends rows without a product (1 round): for filling a cache with given rows.
    pub fn append(&mut self, p: &mut Party, new: &RingTensor) -> Result<()> {
        let (b, to_open) = self.stage(p, new)?;
        let opened = p.open(&to_open)?;
        self.push(b, &opened);
        Ok(())
    }
}

/// Appends `new` [t, width] to `rows` and multiplies `left` by the whole matrix per head, in one
/// round. keys: `left` [heads, m, dh] -> [heads, m, rows]; values: [heads, m, rows] -> [heads, m, dh].
/// No truncation: the result carries the operands' fractional bits added.
pub fn append_and_multiply(
    p: &mut Party,
    rows: &mut PreparedRows,
    new: &RingTensor,
    left: &RingTensor,
    keys: bool,
) -> Result<RingTensor> {
    let (to_open, pending) = stage_append_and_multiply(p, rows, new, left, keys)?;
    let opened = p.open(&to_open)?;
    pending.finish(p, rows, &opened)
}

/// [`append_and_multiply`] waiting for its opening, so that it can share a round with other steps
/// ([`super::round::Round::open`]): this party's dealer shares and the new rows' mask.
pub struct PendingRowsProduct {
    /// The matrix it was staged on, and its rows then.
    mask_id: u64,
    rows: usize,
    b_new: RingTensor,
    a: RingTensor,
    c: RingTensor,
    m: usize,
    keys: bool,
}

/// Deals the masks of [`append_and_multiply`] and returns the values to open (the new rows minus
/// their mask, then `left` minus its mask) with what finishing the product needs.
pub fn stage_append_and_multiply(
    p: &mut Party,
    rows: &mut PreparedRows,
    new: &RingTensor,
    left: &RingTensor,
    keys: bool,
) -> Result<(RingTensor, PendingRowsProduct)> {
    let (b_new, new_open) = rows.stage(p, new)?;
    let (heads, dh) = (rows.heads, rows.width / rows.heads);
    let total = rows.rows() + new_open.shape()[0];
    let inner = if keys { dh } else { total };
    let m = left.len() / (heads * inner).max(1);
    if left.len() != heads * m * inner {
        return Err(MpcError::ShapeMismatch {
            op: "append_and_multiply",
            left: left.shape().to_vec(),
            right: vec![heads, m, inner],
        });
    }
    let corr = Correlation::HeadTriple {
        id: rows.mask_id,
        heads,
        m,
        keys,
    };
    let out_cols = if keys { total } else { dh };
    let mut parts = p
        .deal(&corr, &[&[heads * m * inner], &[heads * m * out_cols]])?
        .into_iter();
    let (a, c) = (parts.next().unwrap(), parts.next().unwrap());
    let left_open = left.clone().reshape(&[left.len()])?.sub(&a)?;
    let to_open = RingTensor::new(
        &[new_open.len() + left_open.len()],
        [new_open.data(), left_open.data()].concat(),
    )?;
    let pending = PendingRowsProduct {
        mask_id: rows.mask_id,
        rows: rows.rows(),
        b_new,
        a,
        c,
        m,
        keys,
    };
    Ok((to_open, pending))
}

impl PendingRowsProduct {
    /// Appends the opened rows to `rows` (the matrix it was staged on) and returns the product.
    pub fn finish(
        self,
        p: &Party,
        rows: &mut PreparedRows,
        opened: &RingTensor,
    ) -> Result<RingTensor> {
        if rows.mask_id != self.mask_id || rows.rows() != self.rows {
            return Err(MpcError::BadConfig(
                "a row product finishes on the matrix it was staged on, unchanged".into(),
            ));
        }
        let new_len = self.b_new.len();
        let new_rows = RingTensor::new(self.b_new.shape(), opened.data()[..new_len].to_vec())?;
        rows.push(self.b_new, &new_rows);
        let eps = &opened.data()[new_len..];
        let (heads, dh) = (rows.heads, rows.width / rows.heads);
        let (m, keys, total) = (self.m, self.keys, rows.rows());
        let product = |l: &[u64], x: &[u64]| head_matmul(l, m, x, total, heads, keys);
        let c = &self.c;
        let mut z = c.add(&RingTensor::new(c.shape(), product(eps, &rows.mask))?)?;
        z.add_assign(&RingTensor::new(
            c.shape(),
            product(self.a.data(), &rows.masked),
        )?)?;
        if p.is_client() {
            z.add_assign(&RingTensor::new(c.shape(), product(eps, &rows.masked))?)?;
        }
        z.reshape(&[heads, m, if keys { total } else { dh }])
    }
}
