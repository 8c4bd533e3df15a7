//! `Embeddings` (a mapped `.npy` file), `open_embeddings` and `save_embeddings`.
//! (Stub: being written.)

use std::path::PathBuf;
use std::sync::Arc;

use negmine_core::store::MappedMatrix;
use pyo3::prelude::*;

use crate::errors::IntoPy;

/// A read-only memory-mapped `.npy` embeddings file.
#[pyclass(frozen, module = "negmine._core")]
pub struct Embeddings {
    pub(crate) inner: Arc<MappedMatrix>,
}

#[pyfunction]
fn open_embeddings(path: PathBuf) -> PyResult<Embeddings> {
    let inner = MappedMatrix::open(&path).py_err()?;
    Ok(Embeddings {
        inner: Arc::new(inner),
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Embeddings>()?;
    m.add_function(wrap_pyfunction!(open_embeddings, m)?)?;
    Ok(())
}
