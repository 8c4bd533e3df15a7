//! Array arguments, checked as PyO3 extracts them: an embeddings [`Matrix`] and a [`Csr`] pair
//! of per-row id lists. Both borrow numpy's memory, never copy it. The Python layer converts
//! everything else first, so these errors only reach callers of `negmine._core` itself; PyO3
//! adds the argument's name to them as a note ("while processing 'queries'").

use std::sync::Arc;

use half::f16;
use negmine_core::store::MappedMatrix;
use negmine_core::MatrixView;
use numpy::ndarray::Dimension;
use numpy::{Element, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{InvalidArgumentError, InvalidTypeError, PyResultExt};
use crate::store::Embeddings;

/// A C-contiguous 2-D numpy array of float32 or float16, or a mapped `Embeddings` file.
pub enum Matrix<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F16(PyReadonlyArray2<'py, f16>),
    Mapped(Arc<MappedMatrix>),
}

impl<'py> FromPyObject<'_, 'py> for Matrix<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let matrix = if let Ok(e) = obj.cast::<Embeddings>() {
            Matrix::Mapped(e.get().inner.clone())
        } else if let Ok(a) = obj.extract() {
            Matrix::F32(a)
        } else if let Ok(a) = obj.extract() {
            Matrix::F16(a)
        } else {
            return Err(InvalidTypeError::new_err(format!(
                "expected a 2-D float32 or float16 numpy array or negmine.Embeddings, got {}",
                obj.get_type().name()?
            )));
        };
        matrix.view()?;
        Ok(matrix)
    }
}

impl Matrix<'_> {
    /// The matrix as the core reads it.
    pub fn view(&self) -> PyResult<MatrixView<'_>> {
        let result = match self {
            Matrix::F32(a) => MatrixView::f32(contiguous(a)?, a.shape()[0], a.shape()[1]),
            Matrix::F16(a) => MatrixView::f16(contiguous(a)?, a.shape()[0], a.shape()[1]),
            Matrix::Mapped(m) => Ok(m.view()),
        };
        result.py_err()
    }

    /// The mapped file behind the matrix, whose pages the work may advise the kernel about.
    pub fn mapped(&self) -> Option<&MappedMatrix> {
        match self {
            Matrix::Mapped(m) => Some(m),
            _ => None,
        }
    }
}

/// Per-row lists of ids (or keys) as one CSR pair `(indptr, indices)` of 1-D int64 arrays:
/// row `r` holds `indices[indptr[r]..indptr[r + 1]]`. The core checks the values.
pub struct Csr<'py> {
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i64>,
}

impl<'py> FromPyObject<'_, 'py> for Csr<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let Ok(pair) = obj.cast::<PyTuple>() else {
            return Err(InvalidTypeError::new_err(format!(
                "expected a pair (indptr, indices) of int64 numpy arrays, got {}",
                obj.get_type().name()?
            )));
        };
        if pair.len() != 2 {
            return Err(InvalidArgumentError::new_err(format!(
                "expected indptr and indices given together, as a pair; got a tuple of {}",
                pair.len()
            )));
        }
        let array = |i: usize, name: &str| {
            let item = pair.get_item(i)?;
            item.extract().or_else(|_| {
                Err(InvalidTypeError::new_err(format!(
                    "expected a 1-D int64 numpy array as {name}, got {}",
                    item.get_type().name()?
                )))
            })
        };
        let csr = Csr {
            indptr: array(0, "indptr")?,
            indices: array(1, "indices")?,
        };
        csr.slices()?;
        Ok(csr)
    }
}

impl Csr<'_> {
    /// `(indptr, indices)`.
    pub fn slices(&self) -> PyResult<(&[i64], &[i64])> {
        Ok((contiguous(&self.indptr)?, contiguous(&self.indices)?))
    }
}

fn contiguous<'a, T: Element, D: Dimension>(
    array: &'a PyReadonlyArray<'_, T, D>,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| InvalidTypeError::new_err("expected a C-contiguous array"))
}
