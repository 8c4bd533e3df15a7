//! `topk_result`: the result arrays of a search run in Python (the torch and hnswlib backends,
//! Ray's merge), checked against the memory available and allocated fallibly as the core's
//! own results are, so an absurd `k` or row count is an error naming it, not an abort or a
//! process killed when the pages are touched.

use negmine_core::memory;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::errors::PyResultExt;

type Result2<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

/// `rows x k` scores (`-inf`) and ids (`-1`), refused with `InvalidArgumentError` naming
/// `what` where the memory available cannot hold them.
#[pyfunction]
#[pyo3(signature = (rows, k, what))]
fn topk_result<'py>(py: Python<'py>, rows: usize, k: usize, what: &str) -> PyResult<Result2<'py>> {
    let (scores, ids) =
        memory::topk_result(rows, k, 0, || format!("{what} ({rows} x {k})")).py_err()?;
    Ok((
        PyArray1::from_vec(py, scores).reshape([rows, k])?,
        PyArray1::from_vec(py, ids).reshape([rows, k])?,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(topk_result, m)?)?;
    Ok(())
}
