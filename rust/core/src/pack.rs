//! Packing rows into the panel layouts the kernels read: `[dim][MR]` for query panels and
//! `[dim][NR]` for corpus panels, padded with zero rows, in 64-byte aligned memory.
//! Packing is where f16 widens to f32, where cosine takes its norms and where non-finite
//! values are caught, so each input element is read exactly once per pass.

use crate::kernels::{MR, NR};
use crate::matrix::MatrixView;

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

/// `1 / ||row||` as f32, 0 for a zero row. Summed in f64 in a fixed order, so that it is the
/// same on every CPU and for every blocking.
pub fn inv_norm(row: &[f32]) -> f32 {
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
    let sum: f64 = lanes.iter().sum();
    if sum > 0.0 {
        (1.0 / sum.sqrt()) as f32
    } else {
        0.0
    }
}

/// Why a panel could not be packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFiniteRow(pub usize);

/// Packs rows `start..start + width` (width <= `W`) of `m` into `out` (`dim * W` floats, layout
/// `[dim][W]`), zero-padding missing rows. `row` is scratch of `dim` floats. With `normalize`,
/// rows are scaled to unit norm; with `norms`, each row's inverse norm is written there instead.
fn pack_panel<const W: usize>(
    m: &MatrixView<'_>,
    start: usize,
    out: &mut [f32],
    row: &mut [f32],
    normalize: bool,
    mut norms: Option<&mut [f32]>,
) -> Result<(), NonFiniteRow> {
    let dim = m.dim();
    debug_assert_eq!(out.len(), dim * W);
    let width = W.min(m.rows() - start);
    for j in 0..W {
        if j >= width {
            for p in 0..dim {
                out[p * W + j] = 0.0;
            }
            if let Some(norms) = norms.as_deref_mut() {
                norms[j] = 0.0;
            }
            continue;
        }
        m.row_into(start + j, row);
        if row.iter().any(|x| !x.is_finite()) {
            return Err(NonFiniteRow(start + j));
        }
        let scale = if normalize || norms.is_some() {
            inv_norm(row)
        } else {
            1.0
        };
        if let Some(norms) = norms.as_deref_mut() {
            norms[j] = scale;
        }
        if normalize {
            for (p, &x) in row.iter().enumerate() {
                out[p * W + j] = x * scale;
            }
        } else {
            for (p, &x) in row.iter().enumerate() {
                out[p * W + j] = x;
            }
        }
    }
    Ok(())
}

/// Packs up to `MR` query rows from `start`, normalised for cosine.
pub fn pack_queries(
    m: &MatrixView<'_>,
    start: usize,
    out: &mut [f32],
    row: &mut [f32],
    normalize: bool,
) -> Result<(), NonFiniteRow> {
    pack_panel::<MR>(m, start, out, row, normalize, None)
}

/// Packs up to `NR` corpus rows from `start`; with `inv_norms`, their inverse norms go there.
pub fn pack_corpus(
    m: &MatrixView<'_>,
    start: usize,
    out: &mut [f32],
    row: &mut [f32],
    inv_norms: Option<&mut [f32]>,
) -> Result<(), NonFiniteRow> {
    pack_panel::<NR>(m, start, out, row, false, inv_norms)
}
