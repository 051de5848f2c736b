//! Tensors over the ring Z_2^64: wrapping u64 arithmetic, row-major, with the few shape operations
//! the transformer needs. Shares, masks and opened values all live here.

use super::error::MpcError;
pub use super::matmul::matmul_u64;

/// A row-major tensor of u64 with wrapping (mod 2^64) arithmetic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

pub type Result<T> = std::result::Result<T, MpcError>;

impl RingTensor {
    pub fn new(shape: &[usize], data: Vec<u64>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(MpcError::ShapeMismatch {
                op: "new",
                left: shape.to_vec(),
                right: vec![data.len()],
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0; shape.iter().product()],
        }
    }

    pub fn filled(shape: &[usize], value: u64) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[u64] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [u64] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<u64> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.data.len() {
            return Err(MpcError::ShapeMismatch {
                op: "reshape",
                left: self.shape,
                right: shape.to_vec(),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    fn check_same(&self, other: &Self, op: &'static str) -> Result<()> {
        if self.shape != other.shape {
            return Err(MpcError::ShapeMismatch {
                op,
                left: self.shape.clone(),
                right: other.shape.clone(),
            });
        }
        Ok(())
    }

    /// Elementwise `f(a, b)` of two tensors of one shape.
    pub fn zip_map(
        &self,
        other: &Self,
        op: &'static str,
        f: impl Fn(u64, u64) -> u64 + Sync,
    ) -> Result<Self> {
        self.check_same(other, op)?;
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Ok(Self {
            shape: self.shape.clone(),
            data,
        })
    }

    pub fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&a| f(a)).collect(),
        }
    }

    pub fn add(&self, other: &Self) -> Result<Self> {
        self.zip_map(other, "add", u64::wrapping_add)
    }

    pub fn sub(&self, other: &Self) -> Result<Self> {
        self.zip_map(other, "sub", u64::wrapping_sub)
    }

    pub fn mul(&self, other: &Self) -> Result<Self> {
        self.zip_map(other, "mul", u64::wrapping_mul)
    }

    pub fn xor(&self, other: &Self) -> Result<Self> {
        self.zip_map(other, "xor", |a, b| a ^ b)
    }

    pub fn and(&self, other: &Self) -> Result<Self> {
        self.zip_map(other, "and", |a, b| a & b)
    }

    pub fn neg(&self) -> Self {
        self.map(u64::wrapping_neg)
    }

    pub fn scale(&self, k: u64) -> Self {
        self.map(|a| a.wrapping_mul(k))
    }

    pub fn add_assign(&mut self, other: &Self) -> Result<()> {
        self.check_same(other, "add")?;
        self.data
            .iter_mut()
            .zip(&other.data)
            .for_each(|(a, &b)| *a = a.wrapping_add(b));
        Ok(())
    }

    /// Adds `row` (length = last dim) to every row: a bias.
    pub fn add_row(&self, row: &Self) -> Result<Self> {
        let d = self.last_dim();
        if row.len() != d {
            return Err(MpcError::ShapeMismatch {
                op: "add_row",
                left: self.shape.clone(),
                right: row.shape.clone(),
            });
        }
        let mut out = self.clone();
        out.data.chunks_mut(d).for_each(|chunk| {
            chunk
                .iter_mut()
                .zip(&row.data)
                .for_each(|(a, &b)| *a = a.wrapping_add(b))
        });
        Ok(out)
    }

    /// Sums over the last dimension: [.., n] -> [.., 1].
    pub fn sum_last(&self) -> Self {
        let d = self.last_dim().max(1);
        let data = self
            .data
            .chunks(d)
            .map(|c| c.iter().fold(0u64, |s, &x| s.wrapping_add(x)))
            .collect();
        let mut shape = self.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = 1;
        }
        Self { shape, data }
    }

    /// Repeats each element `n` times along the last dimension: [.., 1] -> [.., n].
    pub fn expand_last(&self, n: usize) -> Self {
        let data = self
            .data
            .iter()
            .flat_map(|&x| std::iter::repeat_n(x, n))
            .collect();
        let mut shape = self.shape.clone();
        match shape.last_mut() {
            Some(last) if *last == 1 => *last = n,
            _ => shape.push(n),
        }
        Self { shape, data }
    }

    /// Repeats a [1, d] tensor `rows` times: [rows, d].
    pub fn expand_rows(&self, rows: usize) -> Result<Self> {
        let d = self.len();
        let data = (0..rows).flat_map(|_| self.data.iter().copied()).collect();
        Self::new(&[rows, d], data)
    }

    /// Cuts a flat run of values into tensors shaped like `like`, in order (the inverse of
    /// concatenating their data).
    pub fn split_like(flat: &[u64], like: &[&RingTensor]) -> Result<Vec<RingTensor>> {
        let mut out = Vec::with_capacity(like.len());
        let mut offset = 0;
        for t in like {
            let part = flat
                .get(offset..offset + t.len())
                .ok_or(MpcError::ShapeMismatch {
                    op: "split_like",
                    left: vec![flat.len()],
                    right: t.shape().to_vec(),
                })?;
            out.push(RingTensor::new(t.shape(), part.to_vec())?);
            offset += t.len();
        }
        Ok(out)
    }

    /// Keeps columns `start..start+len` of the last dimension.
    pub fn narrow_last(&self, start: usize, len: usize) -> Result<Self> {
        let d = self.last_dim();
        if start + len > d {
            return Err(MpcError::ShapeMismatch {
                op: "narrow_last",
                left: self.shape.clone(),
                right: vec![start, len],
            });
        }
        let data = self
            .data
            .chunks(d)
            .flat_map(|c| c[start..start + len].iter().copied())
            .collect();
        let mut shape = self.shape.clone();
        *shape.last_mut().expect("narrow needs a dimension") = len;
        Ok(Self { shape, data })
    }

    /// Rows start..start+len of the tensor seen as [rows, last dim]: [len, last dim].
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Self> {
        let d = self.last_dim();
        if (start + len) * d > self.data.len() {
            return Err(MpcError::ShapeMismatch {
                op: "narrow_rows",
                left: self.shape.clone(),
                right: vec![start, len],
            });
        }
        Self::new(&[len, d], self.data[start * d..(start + len) * d].to_vec())
    }

    /// Joins tensors with equal leading dimensions along the last dimension.
    pub fn cat_last(parts: &[&Self]) -> Result<Self> {
        let first = parts.first().expect("cat_last needs at least one part");
        let rows = first.len() / first.last_dim().max(1);
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for r in 0..rows {
            for p in parts {
                let d = p.last_dim();
                if p.len() / d.max(1) != rows {
                    return Err(MpcError::ShapeMismatch {
                        op: "cat_last",
                        left: first.shape.clone(),
                        right: p.shape.clone(),
                    });
                }
                data.extend_from_slice(&p.data[r * d..(r + 1) * d]);
            }
        }
        let mut shape = first.shape.clone();
        *shape.last_mut().expect("cat needs a dimension") =
            parts.iter().map(|p| p.last_dim()).sum();
        Ok(Self { shape, data })
    }

    /// Swaps the last two dimensions.
    pub fn transpose_last(&self) -> Result<Self> {
        let nd = self.shape.len();
        if nd < 2 {
            return Err(MpcError::ShapeMismatch {
                op: "transpose_last",
                left: self.shape.clone(),
                right: vec![],
            });
        }
        let (r, c) = (self.shape[nd - 2], self.shape[nd - 1]);
        let mut data = vec![0u64; self.data.len()];
        for (b, block) in self.data.chunks(r * c).enumerate() {
            let out = &mut data[b * r * c..(b + 1) * r * c];
            for i in 0..r {
                for j in 0..c {
                    out[j * r + i] = block[i * c + j];
                }
            }
        }
        let mut shape = self.shape.clone();
        shape.swap(nd - 2, nd - 1);
        Ok(Self { shape, data })
    }

    /// Matrix product over the last two dimensions, batched over the leading ones:
    /// [.., m, k] x [.., k, n] -> [.., m, n]; a 2-D right side is shared by every batch.
    pub fn matmul(&self, other: &Self) -> Result<Self> {
        let mismatch = || MpcError::ShapeMismatch {
            op: "matmul",
            left: self.shape.clone(),
            right: other.shape.clone(),
        };
        let (sa, sb) = (&self.shape, &other.shape);
        if sa.len() < 2 || sb.len() < 2 {
            return Err(mismatch());
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        let batch_a: usize = sa[..sa.len() - 2].iter().product();
        let batch_b: usize = sb[..sb.len() - 2].iter().product();
        if k != k2
            || (batch_b != 1 && batch_b != batch_a)
            || (batch_b != 1 && sa[..sa.len() - 2] != sb[..sb.len() - 2])
        {
            return Err(mismatch());
        }
        let mut data = Vec::with_capacity(batch_a * m * n);
        for b in 0..batch_a {
            let a = &self.data[b * m * k..(b + 1) * m * k];
            let bb = if batch_b == 1 {
                &other.data[..]
            } else {
                &other.data[b * k * n..(b + 1) * k * n]
            };
            data.extend(matmul_u64(a, bb, m, k, n));
        }
        let mut shape = sa[..sa.len() - 2].to_vec();
        shape.extend([m, n]);
        Ok(Self { shape, data })
    }
}

/// 128-bit values from pairs of words, low half first: a DCF key's root seeds, 128-bit shares.
pub fn wide_from_words(words: &[u64]) -> Vec<u128> {
    words
        .chunks_exact(2)
        .map(|w| w[0] as u128 | (w[1] as u128) << 64)
        .collect()
}

/// 128-bit values as pairs of words, low half first (the layout [`wide_from_words`] reads).
pub fn words_from_wide(values: &[u128]) -> Vec<u64> {
    values
        .iter()
        .flat_map(|v| [*v as u64, (v >> 64) as u64])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_ops_round_trip() {
        let t = RingTensor::new(&[2, 3], vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(t.transpose_last().unwrap().data(), &[1, 4, 2, 5, 3, 6]);
        assert_eq!(t.sum_last().data(), &[6, 15]);
        assert_eq!(t.sum_last().expand_last(2).data(), &[6, 6, 15, 15]);
        let parts = [&t.narrow_last(0, 1).unwrap(), &t.narrow_last(1, 2).unwrap()];
        assert_eq!(RingTensor::cat_last(&parts).unwrap(), t);
        assert!(t.add(&RingTensor::zeros(&[3, 2])).is_err());
    }
}
