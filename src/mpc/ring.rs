//! Tensors over the ring Z_2^64: wrapping u64 arithmetic, row-major, with the few shape operations
//! the transformer needs. Shares, masks and opened values all live here.

use rayon::prelude::*;

use super::error::MpcError;

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

    /// Multiplies every row elementwise by `row`: a LayerNorm gain.
    pub fn mul_row(&self, row: &Self) -> Result<Self> {
        let d = self.last_dim();
        if row.len() != d {
            return Err(MpcError::ShapeMismatch {
                op: "mul_row",
                left: self.shape.clone(),
                right: row.shape.clone(),
            });
        }
        let mut out = self.clone();
        out.data.chunks_mut(d).for_each(|chunk| {
            chunk
                .iter_mut()
                .zip(&row.data)
                .for_each(|(a, &b)| *a = a.wrapping_mul(b))
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

    /// Elementwise `self` times a broadcast per-row value `col` ([.., 1]).
    pub fn mul_col(&self, col: &Self) -> Result<Self> {
        self.mul(&col.expand_last(self.last_dim()))
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

/// Rows of A per micro-kernel call: each loaded row of B serves four rows of C.
const MR: usize = 4;
/// Depth of one panel of B kept hot in cache while a block of rows sweeps it.
const KC: usize = 128;

/// C = A B over Z_2^64 (A: m x k, B: k x n, row-major), cache-blocked and rayon-parallel.
/// The inner loop is compiled three times and picked at run time: AVX-512DQ (64-bit vector
/// multiplies), AVX2, and baseline x86-64, so one release binary runs everywhere.
pub fn matmul_u64(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    assert_eq!(a.len(), m * k, "matmul_u64: A is not m x k");
    assert_eq!(b.len(), k * n, "matmul_u64: B is not k x n");
    let threads = rayon::current_num_threads().max(1);
    // Split rows when there are many, columns when the matrix is thin (decoding shapes).
    let row_block = if m >= 16 * threads {
        m.div_ceil(4 * threads).div_ceil(MR) * MR
    } else {
        m.max(1)
    };
    let col_block = if m >= 16 * threads {
        n.max(1)
    } else {
        n.div_ceil(4 * threads).clamp(64.min(n.max(1)), 1024)
    };
    let tasks: Vec<(usize, usize)> = (0..m)
        .step_by(row_block)
        .flat_map(|r0| (0..n).step_by(col_block.max(1)).map(move |c0| (r0, c0)))
        .collect();
    let blocks: Vec<(usize, usize, Vec<u64>)> = tasks
        .par_iter()
        .map(|&(r0, c0)| {
            let rows = row_block.min(m - r0);
            let cols = col_block.min(n - c0);
            (r0, c0, block_product(a, b, k, n, r0, rows, c0, cols))
        })
        .collect();
    let mut c = vec![0u64; m * n];
    for (r0, c0, block) in blocks {
        let cols = block.len() / row_block.min(m - r0).max(1);
        for (i, row) in block.chunks(cols.max(1)).enumerate() {
            c[(r0 + i) * n + c0..(r0 + i) * n + c0 + cols].copy_from_slice(row);
        }
    }
    c
}

/// One block of C: rows r0..r0+rows, columns c0..c0+cols, as a rows x cols buffer.
#[allow(clippy::too_many_arguments)]
fn block_product(
    a: &[u64],
    b: &[u64],
    k: usize,
    n: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
) -> Vec<u64> {
    let mut c = vec![0u64; rows * cols];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for i0 in (0..rows).step_by(MR) {
            let mr = MR.min(rows - i0);
            let c_rows = &mut c[i0 * cols..(i0 + mr) * cols];
            let a_rows: [&[u64]; MR] = std::array::from_fn(|r| {
                let row = r0 + i0 + r.min(mr - 1);
                &a[row * k + k0..row * k + k0 + kc]
            });
            kernel(c_rows, mr, cols, &a_rows, b, n, k0, kc, c0);
        }
    }
    c
}

#[allow(clippy::too_many_arguments)]
fn kernel(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    k0: usize,
    kc: usize,
    c0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has AVX-512F/DQ, checked just above.
            return unsafe { kernel_avx512(c, mr, cols, a, b, n, k0, kc, c0) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { kernel_avx2(c, mr, cols, a, b, n, k0, kc, c0) };
        }
    }
    kernel_generic(c, mr, cols, a, b, n, k0, kc, c0)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    k0: usize,
    kc: usize,
    c0: usize,
) {
    kernel_generic(c, mr, cols, a, b, n, k0, kc, c0)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    k0: usize,
    kc: usize,
    c0: usize,
) {
    kernel_generic(c, mr, cols, a, b, n, k0, kc, c0)
}

/// c[r][j] += sum_p a[r][p] * b[k0 + p][c0 + j] for r < mr: four rows share each loaded row of B.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn kernel_generic(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    k0: usize,
    kc: usize,
    c0: usize,
) {
    let (c01, c23) = c.split_at_mut((2 * cols).min(c.len()));
    let (c0_row, c1_row) = c01.split_at_mut(cols.min(c01.len()));
    let (c2_row, c3_row) = c23.split_at_mut(cols.min(c23.len()));
    for p in 0..kc {
        let brow = &b[(k0 + p) * n + c0..(k0 + p) * n + c0 + cols];
        let (x0, x1, x2, x3) = (a[0][p], a[1][p], a[2][p], a[3][p]);
        if mr == MR {
            for j in 0..cols {
                let bj = brow[j];
                c0_row[j] = c0_row[j].wrapping_add(x0.wrapping_mul(bj));
                c1_row[j] = c1_row[j].wrapping_add(x1.wrapping_mul(bj));
                c2_row[j] = c2_row[j].wrapping_add(x2.wrapping_mul(bj));
                c3_row[j] = c3_row[j].wrapping_add(x3.wrapping_mul(bj));
            }
        } else {
            for (r, x) in [x0, x1, x2].into_iter().enumerate().take(mr) {
                let row = match r {
                    0 => &mut *c0_row,
                    1 => &mut *c1_row,
                    _ => &mut *c2_row,
                };
                for j in 0..cols {
                    row[j] = row[j].wrapping_add(x.wrapping_mul(brow[j]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] =
                        c[i * n + j].wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
                }
            }
        }
        c
    }

    #[test]
    fn blocked_matmul_equals_naive_on_odd_shapes() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 130, 9),
            (17, 33, 65),
            (70, 260, 3),
            (2, 300, 1500),
            (129, 7, 131),
        ] {
            let a: Vec<u64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<u64> = (0..k * n).map(|_| next()).collect();
            assert_eq!(
                matmul_u64(&a, &b, m, k, n),
                naive(&a, &b, m, k, n),
                "{m}x{k}x{n}"
            );
        }
    }

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
