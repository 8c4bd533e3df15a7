//! `Embeddings` (a validated `.npy` file, mapped or read into memory), `open_embeddings` and
//! `save_embeddings`.

use std::path::PathBuf;
use std::sync::Arc;

use negmine_core::store::{self, HnswLayout, MappedMatrix};
use negmine_core::{DType, Elements, Error};
use numpy::ndarray::ArrayView2;
use numpy::{PyArray2, PyArrayDescr};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::{FormatError, PyResultExt};
use crate::inputs::Matrix;
use crate::runtime;

/// A validated `.npy` embeddings file, mapped read-only (or read into memory).
///
/// `np.asarray(embeddings)` and `embeddings.numpy()` return a zero-copy, read-only view. A
/// mapped file must not be truncated or rewritten in place while open: reading a page past its
/// new end kills the process with SIGBUS. Open with `mmap=False` when that might happen.
#[pyclass(frozen, module = "negmine._core")]
pub struct Embeddings {
    pub(crate) inner: Arc<MappedMatrix>,
}

impl Embeddings {
    fn dtype_descr<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        match self.inner.dtype() {
            DType::F32 => numpy::dtype::<f32>(py),
            DType::F16 => numpy::dtype::<half::f16>(py),
        }
    }
}

#[pymethods]
impl Embeddings {
    /// `(rows, dim)`.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.inner.rows(), self.inner.dim())
    }

    /// `numpy.dtype('float32')` or `numpy.dtype('float16')`.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, PyArrayDescr> {
        self.dtype_descr(py)
    }

    /// The path the file was opened from, as given.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let os = py.import("os")?;
        os.call_method1("fspath", (self.inner.path(),))
    }

    /// Whether the data are mapped from the file (False: read into memory, or empty).
    #[getter]
    fn mapped(&self) -> bool {
        self.inner.is_mapped()
    }

    fn __len__(&self) -> usize {
        self.inner.rows()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.get();
        let path = Self::path(this, slf.py())?.repr()?;
        Ok(format!(
            "Embeddings({path}, shape=({}, {}), dtype={}, mapped={})",
            this.inner.rows(),
            this.inner.dim(),
            this.inner.dtype().name(),
            if this.inner.is_mapped() {
                "True"
            } else {
                "False"
            },
        ))
    }

    /// A zero-copy, read-only numpy view of the data; it keeps the file open.
    fn numpy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let view = slf.get().inner.view();
        let shape = (view.rows(), view.dim());
        let container = slf.clone().into_any();
        let array = match view.elements() {
            Elements::F32(data) => {
                let data = ArrayView2::from_shape(shape, data)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                // SAFETY: the array borrows memory owned by `slf` (its `Arc<MappedMatrix>`,
                // never mutated and never moved), and numpy keeps `slf` alive as the array's
                // base for as long as the array lives. It is made read-only below, and numpy
                // refuses to make it writeable again because its base exposes no buffer.
                unsafe { PyArray2::borrow_from_array(&data, container) }.into_any()
            }
            Elements::F16(data) => {
                let data = ArrayView2::from_shape(shape, data)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                // SAFETY: as above.
                unsafe { PyArray2::borrow_from_array(&data, container) }.into_any()
            }
        };
        array.getattr("flags")?.setattr("writeable", false)?;
        Ok(array)
    }

    /// numpy's array protocol: `np.asarray(embeddings)` is the zero-copy view; a `dtype`
    /// other than the file's, or `copy=True`, returns a new array.
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let array = Self::numpy(slf)?;
        if let Some(dtype) = dtype.filter(|d| !d.is_none()) {
            let wanted = py.import("numpy")?.getattr("dtype")?.call1((dtype,))?;
            if !wanted.eq(slf.get().dtype_descr(py))? {
                if copy == Some(false) {
                    return Err(PyValueError::new_err(format!(
                        "cannot return {} embeddings as {} without a copy",
                        slf.get().inner.dtype().name(),
                        wanted.str()?
                    )));
                }
                return array.call_method1("astype", (wanted,));
            }
        }
        if copy == Some(true) {
            return array.call_method0("copy");
        }
        Ok(array)
    }
}

/// Refuses a path with a NUL byte as a bad argument (ValueError), as Python's `open` does,
/// rather than as an OS error.
pub(crate) fn checked_path(path: PathBuf) -> PyResult<PathBuf> {
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::invalid(format!("path {path:?} contains a NUL byte"))).py_err();
    }
    Ok(path)
}

/// Opens and validates a `.npy` file of float32 or float16 embeddings.
#[pyfunction]
#[pyo3(signature = (path, *, mmap = true))]
fn open_embeddings(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<Embeddings> {
    let path = checked_path(path)?;
    let inner = runtime::run_plain(py, || {
        if mmap {
            MappedMatrix::open(&path)
        } else {
            MappedMatrix::read(&path)
        }
    })?;
    Ok(Embeddings {
        inner: Arc::new(inner),
    })
}

/// Writes a C-contiguous 2-D float32/float16 array (or `Embeddings`) to `path` as `.npy`,
/// atomically. The Python wrapper `negmine.save_embeddings` converts other inputs first.
#[pyfunction]
fn save_embeddings(py: Python<'_>, path: PathBuf, embeddings: Matrix<'_>) -> PyResult<()> {
    let path = checked_path(path)?;
    let view = embeddings.view()?;
    runtime::run_plain(py, || store::save(&path, &view))
}

/// Checks that `path` is an hnswlib index of `rows` elements of dimension `dim` built with
/// `m` and `ef_construction` that hnswlib can load and search without reading out of bounds
/// (see the core's `store::check_hnsw_index`). Raises `FormatError` with the reason alone:
/// the caller names the file.
#[pyfunction]
#[pyo3(signature = (path, *, rows, dim, m, ef_construction))]
fn check_hnsw_index(
    py: Python<'_>,
    path: PathBuf,
    rows: usize,
    dim: usize,
    m: usize,
    ef_construction: usize,
) -> PyResult<()> {
    let path = checked_path(path)?;
    let layout = HnswLayout {
        rows,
        dim,
        m,
        ef_construction,
    };
    let reason = runtime::run_plain(py, || match store::check_hnsw_file(&path, &layout) {
        Err(Error::Format { message, .. }) => Ok(Some(message)),
        other => other.map(|()| None),
    })?;
    reason.map_or(Ok(()), |message| Err(FormatError::new_err(message)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Embeddings>()?;
    m.add_function(wrap_pyfunction!(check_hnsw_index, m)?)?;
    m.add_function(wrap_pyfunction!(open_embeddings, m)?)?;
    m.add_function(wrap_pyfunction!(save_embeddings, m)?)?;
    Ok(())
}
