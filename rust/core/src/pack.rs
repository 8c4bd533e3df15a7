//! Packing rows into the panel layouts the kernels read: `[dim][MR]` for query panels and
//! `[dim][NR]` for corpus panels, padded with zero rows, in 64-byte aligned memory.
//! Packing is where f16 widens to f32, where cosine takes its norms and where non-finite
//! values and rows whose dot products could overflow are caught, so each input element is
//! read exactly once per pass.

use crate::kernels::{MR, NR};
use crate::matrix::{Elements, MatrixView};

/// A cache line of floats: the unit of [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A zero-initialised f32 buffer whose start is 64-byte aligned.
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub fn new() -> Self {
        AlignedBuf {
            lines: Vec::new(),
            len: 0,
        }
    }

    /// Makes the buffer `len` floats long; contents are unspecified until written.
    pub fn resize(&mut self, len: usize) {
        self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        self.len = len;
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]`, so `lines` is `16 * lines.len()`
        // contiguous initialised floats, and `len <= 16 * lines.len()`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ByteLine([u8; 64]);

/// A zero-initialised byte buffer whose start is 64-byte aligned, viewed as bytes, signed
/// bytes or i32: AMX tile loads and stores run several times slower on rows that straddle
/// cache lines.
#[derive(Default)]
pub struct AlignedBytes {
    lines: Vec<ByteLine>,
    len: usize,
}

impl AlignedBytes {
    /// Makes the buffer `len` bytes long, every byte `fill`.
    pub fn filled(&mut self, len: usize, fill: u8) {
        self.lines.clear();
        self.resize(len, fill);
    }

    /// Makes the buffer `len` bytes long, keeping what it held; new bytes are `fill`.
    pub fn resize(&mut self, len: usize, fill: u8) {
        self.lines.resize(len.div_ceil(64), ByteLine([fill; 64]));
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ByteLine` is `repr(C)` over `[u8; 64]`, so `lines` is `64 * lines.len()`
        // contiguous initialised bytes, and `len <= 64 * lines.len()`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_i8(&self) -> &[i8] {
        // SAFETY: i8 has u8's size and alignment, and every bit pattern is valid.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<i8>(), self.len) }
    }

    pub fn as_i8_mut(&mut self) -> &mut [i8] {
        // SAFETY: as in `as_i8`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<i8>(), self.len) }
    }

    /// The buffer as i32 values (`len / 4` of them).
    pub fn as_i32_mut(&mut self) -> &mut [i32] {
        // SAFETY: the start is 64-byte aligned (more than i32's 4), the `len / 4` values lie
        // inside the initialised bytes, every bit pattern is a valid i32, and `&mut self`
        // makes the borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<i32>(), self.len / 4)
        }
    }
}

/// `sum_j f(a[j], b[j])` in f32, accumulated in 8 lanes (element `j` into lane `j % 8`, the
/// tail separately) and then added in order: a fixed order, so the same value for every CPU,
/// and a loop the compiler vectorises.
#[inline(always)]
pub fn sum_in_lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += f(x[i], y[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `sum_j row[j]^2` in f64, in 8 lanes added in a fixed order: the same value on every CPU.
/// Finite f32 rows never overflow or underflow it (`f32::MAX^2 * 2^64` and the square of the
/// smallest subnormal are normal f64), so it is finite exactly when the row is.
pub fn squared_norm(row: &[f32]) -> f64 {
    #[inline(always)]
    fn portable(row: &[f32]) -> f64 {
        let mut lanes = [0.0f64; 8];
        let mut chunks = row.chunks_exact(8);
        for chunk in &mut chunks {
            for (lane, &x) in lanes.iter_mut().zip(chunk) {
                *lane += f64::from(x) * f64::from(x);
            }
        }
        for (lane, &x) in lanes.iter_mut().zip(chunks.remainder()) {
            *lane += f64::from(x) * f64::from(x);
        }
        lanes.iter().sum()
    }
    // The same arithmetic in the same order (no FMA contraction), in 256-bit registers: it
    // runs on every corpus row a dot-product search packs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn avx2(row: &[f32]) -> f64 {
        portable(row)
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { avx2(row) };
    }
    portable(row)
}

/// Scales `row` to unit norm in place (a zero row stays zero). The norm is summed in f64 in a
/// fixed order and each element is scaled in f64 before rounding to f32, so the result is the
/// same on every CPU and for every blocking, and tiny (subnormal) or huge rows neither
/// overflow nor lose their direction.
pub fn normalize(row: &mut [f32]) {
    let sum = squared_norm(row);
    let inv = if sum > 0.0 { 1.0 / sum.sqrt() } else { 0.0 };
    for x in row.iter_mut() {
        *x = (f64::from(*x) * inv) as f32;
    }
}

/// Why a panel could not be packed: the first bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRow {
    /// The row holds NaN or an infinity.
    NonFinite(usize),
    /// The row's squared norm passes the bound the caller set (its scores could overflow).
    TooLong(usize),
}

impl BadRow {
    pub fn row(self) -> usize {
        match self {
            BadRow::NonFinite(row) | BadRow::TooLong(row) => row,
        }
    }
}

fn check_finite(row: &[f32], index: usize) -> Result<(), BadRow> {
    // Branch-free over the row so that it vectorises; the data are almost always finite.
    let bad = row.iter().fold(false, |bad, x| {
        bad | (x.to_bits() & 0x7f80_0000 == 0x7f80_0000)
    });
    if bad {
        Err(BadRow::NonFinite(index))
    } else {
        Ok(())
    }
}

/// Row `index` is finite and its squared norm at most `max_squared_norm`.
pub fn check_row(row: &[f32], index: usize, max_squared_norm: f64) -> Result<(), BadRow> {
    let squared = squared_norm(row);
    if !squared.is_finite() {
        Err(BadRow::NonFinite(index))
    } else if squared > max_squared_norm {
        Err(BadRow::TooLong(index))
    } else {
        Ok(())
    }
}

/// Packs up to `MR` query rows from `start` into `out` (`dim * MR` floats, `[dim][MR]`),
/// normalised for cosine; missing rows are zero. `row` is scratch of `dim` floats.
pub fn pack_queries(
    m: &MatrixView<'_>,
    start: usize,
    out: &mut [f32],
    row: &mut [f32],
    normalize: bool,
) -> Result<(), BadRow> {
    let dim = m.dim();
    debug_assert_eq!(out.len(), dim * MR);
    let width = MR.min(m.rows() - start);
    out.fill(0.0);
    for j in 0..width {
        m.row_into(start + j, row);
        check_finite(row, start + j)?;
        if normalize {
            self::normalize(row);
        }
        for (p, &x) in row.iter().enumerate() {
            out[p * MR + j] = x;
        }
    }
    Ok(())
}

/// Scratch memory for [`pack_corpus`]: rows widened from f16 or normalised, and a zero row
/// for padding.
pub struct CorpusScratch {
    rows: Vec<f32>,
    zeros: Vec<f32>,
}

impl CorpusScratch {
    pub fn new(dim: usize) -> Self {
        CorpusScratch {
            rows: vec![0.0; NR * dim],
            zeros: vec![0.0; dim],
        }
    }
}

/// Packs up to `NR` corpus rows from `start` into `out` (`dim * NR` floats, `[dim][NR]`),
/// normalised for cosine; missing rows are zero. Without normalisation every row's squared
/// norm must be at most `max_squared_norm` (the bound that keeps its scores finite).
pub fn pack_corpus(
    m: &MatrixView<'_>,
    start: usize,
    out: &mut [f32],
    scratch: &mut CorpusScratch,
    normalize: bool,
    max_squared_norm: f64,
) -> Result<(), BadRow> {
    let dim = m.dim();
    debug_assert_eq!(out.len(), dim * NR);
    let width = NR.min(m.rows() - start);
    let rows = start * dim..(start + width) * dim;
    let buf = &mut scratch.rows[..width * dim];
    let data: &[f32] = match m.elements() {
        // Rows used as they are: no copy.
        Elements::F32(s) if !normalize => {
            for (j, row) in s[rows.clone()].chunks_exact(dim).enumerate() {
                check_row(row, start + j, max_squared_norm)?;
            }
            &s[rows]
        }
        elements => {
            match elements {
                Elements::F32(s) => buf.copy_from_slice(&s[rows]),
                Elements::F16(s) => crate::kernels::f16_to_f32(&s[rows], buf),
            }
            for (j, row) in buf.chunks_exact_mut(dim).enumerate() {
                if normalize {
                    check_finite(row, start + j)?;
                    self::normalize(row);
                } else {
                    check_row(row, start + j, max_squared_norm)?;
                }
            }
            buf
        }
    };
    let mut sources: [&[f32]; NR] = [&scratch.zeros; NR];
    for (j, row) in data.chunks_exact(dim).enumerate() {
        sources[j] = row;
    }
    transpose::rows_to_panel(&sources, out, NR, 0);
    Ok(())
}

/// Writes `NR` rows of `dim` values into columns `column..column + NR` of a panel whose steps
/// are `width` values long (`out[p * width + column + j] = rows[j][p]`).
pub fn rows_to_columns(rows: &[&[f32]; NR], out: &mut [f32], width: usize, column: usize) {
    transpose::rows_to_panel(rows, out, width, column);
}

mod transpose {
    //! `out[p * width + column + j] = rows[j][p]`: the corpus panel layout (`width = NR`,
    //! `column = 0`), or `NR` columns of a wider panel.

    use crate::kernels::NR;

    pub fn rows_to_panel(rows: &[&[f32]; NR], out: &mut [f32], width: usize, column: usize) {
        let dim = rows[0].len();
        assert!(column + NR <= width && rows.iter().all(|r| r.len() == dim));
        assert!(dim == 0 || out.len() >= (dim - 1) * width + column + NR);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX was detected at run time; the lengths were checked above.
            unsafe { x86::rows_to_panel(rows, out, width, column) };
            return;
        }
        scalar(rows, out, width, column, 0);
    }

    /// The reference, also used for the columns past the last multiple of 8.
    pub fn scalar(rows: &[&[f32]; NR], out: &mut [f32], width: usize, column: usize, from: usize) {
        let dim = rows[0].len();
        for p in from..dim {
            for (j, row) in rows.iter().enumerate() {
                out[p * width + column + j] = row[p];
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        use crate::kernels::NR;

        /// Transposes 8 x 8 blocks in registers.
        ///
        /// # Safety
        /// The CPU must support AVX; every row must be `dim` long and `out` hold
        /// `(dim - 1) * width + column + NR` values.
        #[target_feature(enable = "avx")]
        pub unsafe fn rows_to_panel(
            rows: &[&[f32]; NR],
            out: &mut [f32],
            width: usize,
            column: usize,
        ) {
            let dim = rows[0].len();
            let full = dim / 8 * 8;
            for half in 0..NR / 8 {
                let r = &rows[half * 8..half * 8 + 8];
                for p in (0..full).step_by(8) {
                    // SAFETY: p + 8 <= dim for every row, and the stores write
                    // out[(p + i) * width + column + half * 8..][..8], inside the
                    // (dim - 1) * width + column + NR values the caller guarantees.
                    unsafe {
                        let l = |i: usize| _mm256_loadu_ps(r[i].as_ptr().add(p));
                        let (r0, r1, r2, r3, r4, r5, r6, r7) =
                            (l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7));
                        let t0 = _mm256_unpacklo_ps(r0, r1);
                        let t1 = _mm256_unpackhi_ps(r0, r1);
                        let t2 = _mm256_unpacklo_ps(r2, r3);
                        let t3 = _mm256_unpackhi_ps(r2, r3);
                        let t4 = _mm256_unpacklo_ps(r4, r5);
                        let t5 = _mm256_unpackhi_ps(r4, r5);
                        let t6 = _mm256_unpacklo_ps(r6, r7);
                        let t7 = _mm256_unpackhi_ps(r6, r7);
                        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                        let columns = [
                            _mm256_permute2f128_ps::<0x20>(u0, u4),
                            _mm256_permute2f128_ps::<0x20>(u1, u5),
                            _mm256_permute2f128_ps::<0x20>(u2, u6),
                            _mm256_permute2f128_ps::<0x20>(u3, u7),
                            _mm256_permute2f128_ps::<0x31>(u0, u4),
                            _mm256_permute2f128_ps::<0x31>(u1, u5),
                            _mm256_permute2f128_ps::<0x31>(u2, u6),
                            _mm256_permute2f128_ps::<0x31>(u3, u7),
                        ];
                        for (i, column_values) in columns.into_iter().enumerate() {
                            let at = (p + i) * width + column + half * 8;
                            _mm256_storeu_ps(out.as_mut_ptr().add(at), column_values);
                        }
                    }
                }
            }
            super::scalar(rows, out, width, column, full);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn simd_transpose_matches_scalar() {
            for dim in [1, 7, 8, 9, 31, 64, 100] {
                let data: Vec<Vec<f32>> = (0..NR)
                    .map(|j| (0..dim).map(|p| (j * 1000 + p) as f32).collect())
                    .collect();
                let rows: [&[f32]; NR] = std::array::from_fn(|j| data[j].as_slice());
                for (width, column) in [(NR, 0), (4 * NR, 2 * NR), (NR + 5, 3)] {
                    let mut expected = vec![0.0; dim * width];
                    scalar(&rows, &mut expected, width, column, 0);
                    let mut got = vec![0.0; dim * width];
                    rows_to_panel(&rows, &mut got, width, column);
                    assert_eq!(got, expected, "dim {dim} width {width} column {column}");
                }
            }
        }
    }
}
