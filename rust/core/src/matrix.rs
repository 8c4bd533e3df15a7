//! Borrowed row-major matrices of f32 or f16 elements: the one input type of every algorithm.

use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Element type of an embeddings matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
        }
    }
}

/// The elements of a matrix, row-major and contiguous.
#[derive(Clone, Copy, Debug)]
pub enum Elements<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// A borrowed, C-contiguous `rows x dim` matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    elements: Elements<'a>,
    rows: usize,
    dim: usize,
}

impl<'a> MatrixView<'a> {
    /// Checks that the slice holds exactly `rows * dim` elements.
    pub fn new(elements: Elements<'a>, rows: usize, dim: usize) -> Result<Self> {
        let len = match elements {
            Elements::F32(s) => s.len(),
            Elements::F16(s) => s.len(),
        };
        let expected = rows.checked_mul(dim).ok_or_else(|| {
            Error::invalid(format!("shape ({rows}, {dim}) overflows the address space"))
        })?;
        if len != expected {
            return Err(Error::invalid(format!(
                "a ({rows}, {dim}) matrix needs {expected} elements, got {len}"
            )));
        }
        Ok(MatrixView {
            elements,
            rows,
            dim,
        })
    }

    pub fn f32(data: &'a [f32], rows: usize, dim: usize) -> Result<Self> {
        Self::new(Elements::F32(data), rows, dim)
    }

    pub fn f16(data: &'a [f16], rows: usize, dim: usize) -> Result<Self> {
        Self::new(Elements::F16(data), rows, dim)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn elements(&self) -> Elements<'a> {
        self.elements
    }

    pub fn dtype(&self) -> DType {
        match self.elements {
            Elements::F32(_) => DType::F32,
            Elements::F16(_) => DType::F16,
        }
    }

    /// Copies row `i` into `out` (length `dim`) as f32; f16 widens exactly.
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        let range = i * self.dim..(i + 1) * self.dim;
        match self.elements {
            Elements::F32(s) => out.copy_from_slice(&s[range]),
            Elements::F16(s) => crate::kernels::f16_to_f32(&s[range], out),
        }
    }

    /// The sub-matrix of rows `start..end`.
    pub fn slice_rows(&self, start: usize, end: usize) -> MatrixView<'a> {
        assert!(start <= end && end <= self.rows, "row range out of bounds");
        let range = start * self.dim..end * self.dim;
        let elements = match self.elements {
            Elements::F32(s) => Elements::F32(&s[range]),
            Elements::F16(s) => Elements::F16(&s[range]),
        };
        MatrixView {
            elements,
            rows: end - start,
            dim: self.dim,
        }
    }

    /// Index of the first row holding a NaN or an infinity, if any.
    pub fn first_non_finite_row(&self) -> Option<usize> {
        if self.dim == 0 {
            return None;
        }
        // Exponent bits all set: infinity or NaN. Tested without early exit per row so that
        // the loop vectorises.
        match self.elements {
            Elements::F32(s) => s.chunks_exact(self.dim).position(|row| {
                row.iter().fold(false, |bad, x| {
                    bad | (x.to_bits() & 0x7f80_0000 == 0x7f80_0000)
                })
            }),
            Elements::F16(s) => s.chunks_exact(self.dim).position(|row| {
                row.iter()
                    .fold(false, |bad, x| bad | (x.to_bits() & 0x7c00 == 0x7c00))
            }),
        }
    }

    /// Squared L2 norm of row `i` in f64 ([`crate::pack::squared_norm`]); `scratch` holds
    /// `dim` floats for widening f16.
    pub fn row_squared_norm(&self, i: usize, scratch: &mut [f32]) -> f64 {
        match self.elements {
            Elements::F32(s) => crate::pack::squared_norm(&s[i * self.dim..(i + 1) * self.dim]),
            Elements::F16(_) => {
                self.row_into(i, scratch);
                crate::pack::squared_norm(scratch)
            }
        }
    }

    /// The row with the largest L2 norm (the first of equal ones) and its squared norm in f64,
    /// computed on the threads of `pool`; `Err` names the first row holding NaN or infinity.
    /// An empty matrix gives row 0 with norm 0.
    pub fn largest_row_norm_in(&self, pool: &rayon::ThreadPool) -> Result<(usize, f64), usize> {
        const BLOCK: usize = 4096;
        let blocks: Vec<Result<(usize, f64), usize>> = pool.install(|| {
            (0..self.rows.div_ceil(BLOCK))
                .into_par_iter()
                .map(|b| {
                    let mut scratch = vec![0.0f32; self.dim];
                    let mut largest = (b * BLOCK, 0.0f64);
                    for i in b * BLOCK..((b + 1) * BLOCK).min(self.rows) {
                        let squared = self.row_squared_norm(i, &mut scratch);
                        if !squared.is_finite() {
                            return Err(i);
                        }
                        if squared > largest.1 {
                            largest = (i, squared);
                        }
                    }
                    Ok(largest)
                })
                .collect()
        });
        let mut largest = (0, 0.0f64);
        for block in blocks {
            let (i, squared) = block?;
            if squared > largest.1 {
                largest = (i, squared);
            }
        }
        Ok(largest)
    }

    /// [`Self::first_non_finite_row`] on the threads of `pool`, blocks of rows at a time.
    pub fn first_non_finite_row_in(&self, pool: &rayon::ThreadPool) -> Option<usize> {
        const BLOCK: usize = 4096;
        pool.install(|| {
            (0..self.rows.div_ceil(BLOCK))
                .into_par_iter()
                .find_map_first(|b| {
                    let start = b * BLOCK;
                    self.slice_rows(start, (start + BLOCK).min(self.rows))
                        .first_non_finite_row()
                        .map(|r| start + r)
                })
        })
    }
}
