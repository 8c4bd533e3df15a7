//! Embeddings arguments: a C-contiguous 2-D numpy array of float32 or float16 (borrowed, not
//! copied) or a mapped `Embeddings` file. The Python layer converts everything else first.

use std::sync::Arc;

use half::f16;
use negmine_core::store::MappedMatrix;
use negmine_core::{Error, MatrixView};
use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::IntoPy;
use crate::store::Embeddings;

pub enum Matrix<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F16(PyReadonlyArray2<'py, f16>),
    Mapped(Arc<MappedMatrix>),
}

impl<'py> Matrix<'py> {
    pub fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(e) = obj.cast::<Embeddings>() {
            return Ok(Matrix::Mapped(e.get().inner.clone()));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
            return Ok(Matrix::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f16>>() {
            return Ok(Matrix::F16(a));
        }
        Err(Error::InvalidType(format!(
            "{what} must be a 2-D float32 or float16 numpy array or negmine.Embeddings, got {}",
            obj.get_type().name()?
        )))
        .py_err()
    }

    pub fn view(&self, what: &str) -> PyResult<MatrixView<'_>> {
        let not_contiguous =
            || crate::errors::to_pyerr(Error::InvalidType(format!("{what} must be C-contiguous")));
        let result = match self {
            Matrix::F32(a) => {
                let [rows, dim] = [a.shape()[0], a.shape()[1]];
                let data = a.as_slice().map_err(|_| not_contiguous())?;
                MatrixView::f32(data, rows, dim)
            }
            Matrix::F16(a) => {
                let [rows, dim] = [a.shape()[0], a.shape()[1]];
                let data = a.as_slice().map_err(|_| not_contiguous())?;
                MatrixView::f16(data, rows, dim)
            }
            Matrix::Mapped(m) => Ok(m.view()),
        };
        result.py_err()
    }

    pub fn mapped(&self) -> Option<&MappedMatrix> {
        match self {
            Matrix::Mapped(m) => Some(m),
            _ => None,
        }
    }
}
