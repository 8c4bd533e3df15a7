//! `search`: exact top-k.

use negmine_core::kernels::Isa;
use negmine_core::{Error, IdLists, Metric, SearchOptions};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::errors::PyResultExt;
use crate::inputs::{Csr, Matrix};
use crate::runtime;

type Scores<'py> = Bound<'py, PyArray2<f32>>;
type Ids<'py> = Bound<'py, PyArray2<i64>>;

#[pyfunction]
#[pyo3(signature = (
    queries, corpus, k, *, metric = "dot", exclude = None, threads = None, block_rows = None,
    query_batch = None, isa = None, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn search<'py>(
    py: Python<'py>,
    queries: Matrix<'py>,
    corpus: Matrix<'py>,
    k: i64,
    metric: &str,
    exclude: Option<Csr<'py>>,
    threads: Option<usize>,
    block_rows: Option<usize>,
    query_batch: Option<usize>,
    isa: Option<&str>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Scores<'py>, Ids<'py>)> {
    let (queries_view, corpus_view) = (queries.view()?, corpus.view()?);
    let metric = Metric::from_name(metric).py_err()?;
    if k <= 0 {
        return Err(Error::invalid(format!("k must be positive, got {k}"))).py_err();
    }
    let k = k as usize;
    let isa = match isa {
        None => None,
        Some(name) => Some(Isa::from_name(name).ok_or_else(|| {
            let names: Vec<_> = Isa::available().iter().map(|i| i.name()).collect();
            Error::invalid(format!(
                "isa {name:?} is not available on this CPU; available: {names:?}"
            ))
        }))
        .transpose()
        .py_err()?,
    };
    let exclude = exclude.as_ref().map(Csr::slices).transpose()?;
    let opts = SearchOptions {
        k,
        metric,
        block_rows,
        query_batch,
        isa,
    };
    let neighbors = runtime::run(py, threads, progress, corpus.mapped(), |pool, hooks| {
        let (nq, nc) = (queries_view.rows(), corpus_view.rows());
        let exclude = exclude
            .map(|(indptr, indices)| IdLists::from_csr_named("exclude", indptr, indices, nq, nc))
            .transpose()?;
        negmine_core::search(
            pool,
            &queries_view,
            &corpus_view,
            exclude.as_ref(),
            &opts,
            hooks,
        )
    })?;
    let shape = [queries_view.rows(), k];
    let scores = PyArray1::from_vec(py, neighbors.scores).reshape(shape)?;
    let ids = PyArray1::from_vec(py, neighbors.ids).reshape(shape)?;
    Ok((scores, ids))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search, m)?)?;
    Ok(())
}
