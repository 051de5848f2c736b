//! Matrix products over Z_2^64 (wrapping u64), the hot loop of every secure linear layer.
//!
//! Candle has no Z_2^64 matmul, so this is ours: cache-blocked, rayon-parallel over row or column
//! blocks (column blocks for the thin decoding shapes), with the inner kernel picked at run time so
//! that one release binary runs on any x86-64 ([`Kernel`]):
//! - AVX-512DQ: an 8x16 register tile over a packed panel of B, one 64-bit vector multiply
//!   (`vpmullq`) and one add per eight products; C is touched once per tile, not per product.
//! - AVX2 (no 64-bit vector multiply): a 4x4 register tile over a packed panel of B, splitting
//!   a*b mod 2^64 = lo(a) lo(b) + (hi(a) lo(b) + lo(a) hi(b)) << 32 into three 32x32->64 `vpmuludq`;
//!   the cross sums are accumulated apart and shifted once per tile, not per product.
//! - Rows: a row-blocked loop (four rows of C share each loaded row of B) that the compiler
//!   vectorises for the widest unit present; it serves thin products (fewer than 16 rows), where
//!   packing B would cost as much as the arithmetic, and CPUs with neither extension.

use rayon::prelude::*;

/// Rows of A per micro-kernel call: each loaded row of B serves four rows of C.
const MR: usize = 4;
/// Depth of one panel of B kept hot in cache while a block of rows sweeps it.
const KC: usize = 256;
/// Columns of one packed panel (AVX2 path).
const NC: usize = 256;
/// Rows of C per parallel block with a tile kernel.
const TILE_ROWS: usize = 64;

/// Per-head products against the column blocks of a row-major matrix `rows_mat` [rows, heads * dh]
/// (head h owns columns h*dh..(h+1)*dh), as attention needs them against a KV cache:
/// keys: `left` [heads, m, dh] -> [heads, m, rows] = left_h X_h^T;
/// values: `left` [heads, m, rows] -> [heads, m, dh] = left_h X_h.
pub fn head_matmul(
    left: &[u64],
    m: usize,
    rows_mat: &[u64],
    rows: usize,
    heads: usize,
    keys: bool,
) -> Vec<u64> {
    let width = rows_mat.len().checked_div(rows).unwrap_or(0);
    let dh = width / heads.max(1);
    let mut out = Vec::with_capacity(heads * m * if keys { rows } else { dh });
    for h in 0..heads {
        // X_h as [rows, dh], or its transpose [dh, rows] for keys.
        let mut x_h = vec![0u64; rows * dh];
        for r in 0..rows {
            for c in 0..dh {
                let v = rows_mat[r * width + h * dh + c];
                if keys {
                    x_h[c * rows + r] = v;
                } else {
                    x_h[r * dh + c] = v;
                }
            }
        }
        let (k, n) = if keys { (dh, rows) } else { (rows, dh) };
        out.extend(matmul_u64(&left[h * m * k..(h + 1) * m * k], &x_h, m, k, n));
    }
    out
}

/// The inner loop of [`matmul_u64`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Rows,
    Avx2Tile,
    Avx512Tile,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Rows => "rows",
            Kernel::Avx2Tile => "avx2",
            Kernel::Avx512Tile => "avx512dq",
        }
    }

    /// The kernels this CPU can run, slowest first (detected once).
    pub fn available() -> &'static [Kernel] {
        static AVAILABLE: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut kernels = vec![Kernel::Rows];
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") {
                    kernels.push(Kernel::Avx2Tile);
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq")
                {
                    kernels.push(Kernel::Avx512Tile);
                }
            }
            kernels
        })
    }

    /// The kernel [`matmul_u64`] uses for a product of `m` rows: the widest tile this CPU has,
    /// or rows below 16 (a thin product reads each element of B too few times to pay its packing).
    pub fn for_rows(m: usize) -> Kernel {
        if m < 16 {
            return Kernel::Rows;
        }
        *Kernel::available()
            .last()
            .expect("rows is always available")
    }
}

/// C = A B over Z_2^64 (A: m x k, B: k x n, row-major).
pub fn matmul_u64(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    matmul_u64_with(Kernel::for_rows(m), a, b, m, k, n)
}

/// [`matmul_u64`] with a chosen kernel, which must be one of [`Kernel::available`].
pub fn matmul_u64_with(
    kernel: Kernel,
    a: &[u64],
    b: &[u64],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<u64> {
    assert!(
        Kernel::available().contains(&kernel),
        "matmul_u64: this CPU cannot run the {} kernel",
        kernel.name()
    );
    assert_eq!(a.len(), m * k, "matmul_u64: A is not m x k");
    assert_eq!(b.len(), k * n, "matmul_u64: B is not k x n");
    let threads = rayon::current_num_threads().max(1);
    let (row_block, col_block) = if kernel == Kernel::Rows {
        // Split rows when there are many, columns when the matrix is thin (decoding shapes).
        if m >= 16 * threads {
            (m.div_ceil(4 * threads).div_ceil(MR) * MR, n.max(1))
        } else {
            let cols = n.div_ceil(4 * threads).clamp(64.min(n.max(1)), 1024);
            (m.max(1), cols)
        }
    } else {
        // A tile kernel packs each panel of B once per block: blocks of 64 rows reuse every
        // packed element 64 times, and the columns are cut for about two blocks per thread.
        let row_blocks = m.div_ceil(TILE_ROWS).max(1);
        let cols = (n * row_blocks)
            .div_ceil(2 * threads)
            .next_multiple_of(16)
            .clamp(64, 512);
        (TILE_ROWS, cols)
    };
    let tasks: Vec<(usize, usize)> = (0..m)
        .step_by(row_block)
        .flat_map(|r0| (0..n).step_by(col_block.max(1)).map(move |c0| (r0, c0)))
        .collect();
    let blocks: Vec<(usize, usize, usize, Vec<u64>)> = tasks
        .par_iter()
        .map(|&(r0, c0)| {
            let rows = row_block.min(m - r0);
            let cols = col_block.min(n - c0);
            let block = block_product(kernel, a, b, k, n, r0, rows, c0, cols);
            (r0, c0, cols, block)
        })
        .collect();
    let mut c = vec![0u64; m * n];
    for (r0, c0, cols, block) in blocks {
        for (i, row) in block.chunks(cols.max(1)).enumerate() {
            c[(r0 + i) * n + c0..(r0 + i) * n + c0 + cols].copy_from_slice(row);
        }
    }
    c
}

/// C = A B over Z_2^128 for 128-bit B (A: m x k of u64 or u128, B: k x n, row-major): the
/// dealer's C = r B for [`crate::mpc::protocols::lifted_matmul`]. A plain loop over blocks of
/// columns; a u64 left operand costs two multiplications a product, a u128 one three.
pub fn matmul_wide<T: Copy + Sync + Into<u128>>(
    a: &[T],
    b: &[u128],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<u128> {
    assert_eq!(a.len(), m * k, "matmul_wide: A is not m x k");
    assert_eq!(b.len(), k * n, "matmul_wide: B is not k x n");
    const COLS: usize = 128;
    let blocks: Vec<(usize, Vec<u128>)> = (0..n)
        .step_by(COLS)
        .collect::<Vec<_>>()
        .par_iter()
        .map(|&c0| {
            let cols = COLS.min(n - c0);
            let mut acc = vec![0u128; m * cols];
            for kk in 0..k {
                let row = &b[kk * n + c0..kk * n + c0 + cols];
                for (i, dst) in acc.chunks_mut(cols).enumerate() {
                    let x: u128 = a[i * k + kk].into();
                    for (d, y) in dst.iter_mut().zip(row) {
                        *d = d.wrapping_add(x.wrapping_mul(*y));
                    }
                }
            }
            (c0, acc)
        })
        .collect();
    let mut c = vec![0u128; m * n];
    for (c0, acc) in blocks {
        let cols = COLS.min(n - c0);
        for (i, row) in acc.chunks(cols).enumerate() {
            c[i * n + c0..i * n + c0 + cols].copy_from_slice(row);
        }
    }
    c
}

/// The exact products A B as 128-bit integers, summed mod 2^128, for 64-bit A (m x k) and B given
/// transposed (B^T: n x k): each output is a dot product of two contiguous rows, its 128-bit sum
/// kept in registers (one full 64 x 64 multiplication a product). With [`matmul_u16`] for the
/// high parts, this is how a party forms a product mod 2^80 ([`crate::mpc::protocols::lifted_matmul`]).
pub fn matmul_full_transposed(a: &[u64], bt: &[u64], m: usize, k: usize, n: usize) -> Vec<u128> {
    assert_eq!(a.len(), m * k, "matmul_full_transposed: A is not m x k");
    assert_eq!(bt.len(), k * n, "matmul_full_transposed: B^T is not n x k");
    // Columns of C (rows of B^T) per task; every task takes all rows of A.
    let cols = n.div_ceil(8 * rayon::current_num_threads().max(1)).max(1);
    let mut ct = vec![0u128; n * m];
    ct.par_chunks_mut(cols * m.max(1))
        .enumerate()
        .for_each(|(t, block)| {
            for (jj, out) in block.chunks_mut(m.max(1)).enumerate() {
                let j = t * cols + jj;
                let col = &bt[j * k..(j + 1) * k];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot_full(&a[i * k..(i + 1) * k], col);
                }
            }
        });
    let mut c = vec![0u128; m * n];
    for (j, col) in ct.chunks(m.max(1)).enumerate() {
        for (i, v) in col.iter().enumerate() {
            c[i * n + j] = *v;
        }
    }
    c
}

/// sum x_p y_p over the integers, mod 2^128: four independent sums hide the multiplier's latency.
fn dot_full(x: &[u64], y: &[u64]) -> u128 {
    let mut acc = [0u128; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x4, y4) in xc.zip(yc) {
        for l in 0..4 {
            acc[l] = acc[l].wrapping_add(x4[l] as u128 * y4[l] as u128);
        }
    }
    let tail = xr
        .iter()
        .zip(yr)
        .fold(0u128, |s, (x, y)| s.wrapping_add(*x as u128 * *y as u128));
    acc.iter().fold(tail, |s, v| s.wrapping_add(*v))
}

/// C = A B over Z_2^16 (row-major), the high parts of a product mod 2^80: sixteen lanes a vector.
pub fn matmul_u16(a: &[u16], b: &[u16], m: usize, k: usize, n: usize) -> Vec<u16> {
    assert_eq!(a.len(), m * k, "matmul_u16: A is not m x k");
    assert_eq!(b.len(), k * n, "matmul_u16: B is not k x n");
    let mut c = vec![0u16; m * n];
    c.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        for (p, x) in a[i * k..(i + 1) * k].iter().enumerate() {
            for (d, y) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *d = d.wrapping_add(x.wrapping_mul(*y));
            }
        }
    });
    c
}

/// One block of C: rows r0..r0+rows, columns c0..c0+cols, as a rows x cols buffer.
#[allow(clippy::too_many_arguments)]
fn block_product(
    kernel: Kernel,
    a: &[u64],
    b: &[u64],
    k: usize,
    n: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
) -> Vec<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let (shape, row_range, col_range) = ((k, n), (r0, rows), (c0, cols));
        match kernel {
            Kernel::Avx512Tile => {
                // SAFETY: Kernel::available lists this kernel only on CPUs with AVX-512F/DQ.
                let tile =
                    |a: &[&[u64]; avx512::MR], b: &[u64], kc| unsafe { avx512::tile(a, b, kc) };
                return packed_block_product(a, b, shape, row_range, col_range, avx512::NC, tile);
            }
            Kernel::Avx2Tile => {
                // SAFETY: Kernel::available lists this kernel only on CPUs with AVX2.
                let tile = |a: &[&[u64]; MR], b: &[u64], kc| unsafe { avx2::tile(a, b, kc) };
                return packed_block_product(a, b, shape, row_range, col_range, NC, tile);
            }
            Kernel::Rows => {}
        }
    }
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
            rows_kernel(c_rows, mr, cols, &a_rows, &b[k0 * n + c0..], n, kc);
        }
    }
    c
}

fn rows_kernel(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    kc: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has AVX-512F/DQ, checked just above.
            return unsafe { rows_kernel_avx512(c, mr, cols, a, b, n, kc) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { rows_kernel_avx2(c, mr, cols, a, b, n, kc) };
        }
    }
    rows_kernel_generic(c, mr, cols, a, b, n, kc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn rows_kernel_avx512(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    kc: usize,
) {
    rows_kernel_generic(c, mr, cols, a, b, n, kc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_kernel_avx2(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    kc: usize,
) {
    rows_kernel_generic(c, mr, cols, a, b, n, kc)
}

/// c[r][j] += sum_p a[r][p] * b[p][j] for r < mr: four rows share each loaded row of B.
#[inline(always)]
fn rows_kernel_generic(
    c: &mut [u64],
    mr: usize,
    cols: usize,
    a: &[&[u64]; MR],
    b: &[u64],
    n: usize,
    kc: usize,
) {
    let (c01, c23) = c.split_at_mut((2 * cols).min(c.len()));
    let (c0_row, c1_row) = c01.split_at_mut(cols.min(c01.len()));
    let (c2_row, c3_row) = c23.split_at_mut(cols.min(c23.len()));
    for p in 0..kc {
        let brow = &b[p * n..p * n + cols];
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

/// Zero row standing in for the missing rows of a short tile.
#[cfg(target_arch = "x86_64")]
static ZEROS: [u64; KC] = [0; KC];

/// One block of C (as [`block_product`]) for a register-tile kernel: B is packed `nc` columns at a
/// time into zero-padded panels of kc x NR, and every MR rows of A sweep each panel through
/// `tile(a_rows, panel, kc)`, which returns the MR x NR product.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
fn packed_block_product<const MR_T: usize, const NR: usize>(
    a: &[u64],
    b: &[u64],
    (k, n): (usize, usize),
    (r0, rows): (usize, usize),
    (c0, cols): (usize, usize),
    nc: usize,
    tile: impl Fn(&[&[u64]; MR_T], &[u64], usize) -> [[u64; NR]; MR_T],
) -> Vec<u64> {
    let mut c = vec![0u64; rows * cols];
    let mut packed = Vec::new();
    for jc in (0..cols).step_by(nc) {
        let w = nc.min(cols - jc);
        let groups = w.div_ceil(NR);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            packed.clear();
            packed.resize(groups * kc * NR, 0);
            for g in 0..groups {
                let cols_here = NR.min(w - NR * g);
                for p in 0..kc {
                    let src = (k0 + p) * n + c0 + jc + NR * g;
                    packed[(g * kc + p) * NR..(g * kc + p) * NR + cols_here]
                        .copy_from_slice(&b[src..src + cols_here]);
                }
            }
            for i0 in (0..rows).step_by(MR_T) {
                let mr = MR_T.min(rows - i0);
                let a_rows: [&[u64]; MR_T] = std::array::from_fn(|r| {
                    if r < mr {
                        let row = r0 + i0 + r;
                        &a[row * k + k0..row * k + k0 + kc]
                    } else {
                        &ZEROS[..kc]
                    }
                });
                for g in 0..groups {
                    let out = tile(&a_rows, &packed[g * kc * NR..(g + 1) * kc * NR], kc);
                    let cols_here = NR.min(w - NR * g);
                    for (r, tile_row) in out.iter().enumerate().take(mr) {
                        let at = (i0 + r) * cols + jc + NR * g;
                        for (d, t) in c[at..at + cols_here].iter_mut().zip(tile_row) {
                            *d = d.wrapping_add(*t);
                        }
                    }
                }
            }
        }
    }
    c
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::MR;

    /// A 4x4 tile of A[4 x kc] B[kc x 4] over Z_2^64, accumulated in registers.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile(a: &[&[u64]; MR], b: &[u64], kc: usize) -> [[u64; 4]; MR] {
        let mut lo = [_mm256_setzero_si256(); MR];
        let mut cross = [_mm256_setzero_si256(); MR];
        for p in 0..kc {
            // SAFETY: b holds kc rows of 4 values; each a[r] holds kc values.
            let bv = unsafe { _mm256_loadu_si256(b.as_ptr().add(p * 4) as *const __m256i) };
            let b_hi = _mm256_srli_epi64(bv, 32);
            for r in 0..MR {
                let va = _mm256_set1_epi64x(unsafe { *a[r].get_unchecked(p) } as i64);
                let a_hi = _mm256_srli_epi64(va, 32);
                lo[r] = _mm256_add_epi64(lo[r], _mm256_mul_epu32(va, bv));
                cross[r] = _mm256_add_epi64(
                    cross[r],
                    _mm256_add_epi64(_mm256_mul_epu32(a_hi, bv), _mm256_mul_epu32(va, b_hi)),
                );
            }
        }
        let mut out = [[0u64; 4]; MR];
        for r in 0..MR {
            let v = _mm256_add_epi64(lo[r], _mm256_slli_epi64(cross[r], 32));
            // SAFETY: out[r] is 4 u64 = 32 bytes.
            unsafe { _mm256_storeu_si256(out[r].as_mut_ptr() as *mut __m256i, v) };
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Rows and columns of one register tile: 16 accumulators of 8 lanes.
    pub(super) const MR: usize = 8;
    const NR: usize = 16;
    /// Columns of one packed panel.
    pub(super) const NC: usize = 512;

    /// An 8x16 tile of A[8 x kc] B[kc x 16] over Z_2^64, accumulated in registers.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn tile(a: &[&[u64]; MR], b: &[u64], kc: usize) -> [[u64; NR]; MR] {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        for p in 0..kc {
            // SAFETY: b holds kc rows of NR values; each a[r] holds kc values.
            let (b0, b1) = unsafe {
                let row = b.as_ptr().add(p * NR);
                (
                    _mm512_loadu_si512(row as *const __m512i),
                    _mm512_loadu_si512(row.add(8) as *const __m512i),
                )
            };
            for r in 0..MR {
                let va = _mm512_set1_epi64(unsafe { *a[r].get_unchecked(p) } as i64);
                acc[r][0] = _mm512_add_epi64(acc[r][0], _mm512_mullo_epi64(va, b0));
                acc[r][1] = _mm512_add_epi64(acc[r][1], _mm512_mullo_epi64(va, b1));
            }
        }
        let mut out = [[0u64; NR]; MR];
        for r in 0..MR {
            // SAFETY: out[r] is 16 u64 = two 64-byte vectors.
            unsafe {
                _mm512_storeu_si512(out[r].as_mut_ptr() as *mut __m512i, acc[r][0]);
                _mm512_storeu_si512(out[r].as_mut_ptr().add(8) as *mut __m512i, acc[r][1]);
            }
        }
        out
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
            (5, 600, 301),
            (40, 513, 700),
        ] {
            let a: Vec<u64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<u64> = (0..k * n).map(|_| next()).collect();
            let expected = naive(&a, &b, m, k, n);
            for &kernel in Kernel::available() {
                assert_eq!(
                    matmul_u64_with(kernel, &a, &b, m, k, n),
                    expected,
                    "{m}x{k}x{n}, {} kernel",
                    kernel.name()
                );
            }
        }
    }

    #[test]
    fn wide_products_equal_naive_over_z_2_128() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 130), (8, 40, 257)] {
            let a: Vec<u64> = (0..m * k).map(|_| next()).collect();
            let a_wide: Vec<u128> = a
                .iter()
                .map(|&v| (v as u128) << 64 | next() as u128)
                .collect();
            let b: Vec<u128> = (0..k * n)
                .map(|_| (next() as u128) << 64 | next() as u128)
                .collect();
            let naive = |a: &dyn Fn(usize) -> u128| -> Vec<u128> {
                (0..m * n)
                    .map(|ij| {
                        (0..k).fold(0u128, |acc, p| {
                            acc.wrapping_add(a(ij / n * k + p).wrapping_mul(b[p * n + ij % n]))
                        })
                    })
                    .collect()
            };
            assert_eq!(matmul_wide(&a, &b, m, k, n), naive(&|i| a[i] as u128));
            assert_eq!(matmul_wide(&a_wide, &b, m, k, n), naive(&|i| a_wide[i]));
            // The exact products of the low halves, and the high parts mod 2^16.
            let lows: Vec<u128> = b.iter().map(|&v| v as u64 as u128).collect();
            let bt: Vec<u64> = (0..n * k)
                .map(|jp| lows[jp % k * n + jp / k] as u64)
                .collect();
            let want: Vec<u128> = (0..m * n)
                .map(|ij| {
                    (0..k).fold(0u128, |acc, p| {
                        acc.wrapping_add((a[ij / n * k + p] as u128) * lows[p * n + ij % n])
                    })
                })
                .collect();
            assert_eq!(
                matmul_full_transposed(&a, &bt, m, k, n),
                want,
                "{m}x{k}x{n}"
            );
            let (a16, b16): (Vec<u16>, Vec<u16>) = (
                a.iter().map(|&v| v as u16).collect(),
                b.iter().map(|&v| (v >> 64) as u16).collect(),
            );
            let want16: Vec<u16> = (0..m * n)
                .map(|ij| {
                    (0..k).fold(0u16, |acc, p| {
                        acc.wrapping_add(a16[ij / n * k + p].wrapping_mul(b16[p * n + ij % n]))
                    })
                })
                .collect();
            assert_eq!(matmul_u16(&a16, &b16, m, k, n), want16);
        }
    }

    /// Time of the one-round matmul's products beside the Z_2^64 one, at 8 x 768 . 768 x 3072:
    /// `cargo test --release --lib matmul::tests::wide_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn wide_speed() {
        let (m, k, n) = (8, 768, 3072);
        let a: Vec<u64> = (0..(m * k) as u64)
            .map(|v| v.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let a_wide: Vec<u128> = a.iter().map(|&v| (v as u128) << 3 | 1).collect();
        let b: Vec<u64> = (0..(k * n) as u64)
            .map(|v| v.wrapping_mul(0xD6E8_FEB8_6659_FD93))
            .collect();
        let b_wide: Vec<u128> = b.iter().map(|&v| (v as u128) << 5 | 7).collect();
        let time = |f: &dyn Fn() -> usize| {
            let start = std::time::Instant::now();
            let mut sink = 0;
            for _ in 0..5 {
                sink += f();
            }
            (start.elapsed().as_secs_f64() / 5.0 * 1e3, sink)
        };
        let z64 = time(&|| matmul_u64(&a, &b, m, k, n).len());
        let w64 = time(&|| matmul_wide(&a, &b_wide, m, k, n).len());
        let w128 = time(&|| matmul_wide(&a_wide, &b_wide, m, k, n).len());
        let bt: Vec<u64> = (0..(k * n) as u64)
            .map(|v| v.wrapping_mul(0x94D0_49BB_1331_11EB))
            .collect();
        let a16: Vec<u16> = a.iter().map(|&v| v as u16).collect();
        let b16: Vec<u16> = b.iter().map(|&v| v as u16).collect();
        let full = time(&|| matmul_full_transposed(&a, &bt, m, k, n).len());
        let low = time(&|| matmul_u16(&a16, &b16, m, k, n).len());
        println!(
            "{m}x{k}x{n}: Z_2^64 {:.1} ms; Z_2^128 (B row-major) with a u64 / u128 left operand: \
             {:.1} / {:.1} ms; exact 64 x 64-bit products (B transposed) {:.1} ms; Z_2^16 {:.1} ms",
            z64.0, w64.0, w128.0, full.0, low.0
        );
    }
}
