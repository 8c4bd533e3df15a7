//! `search`: exact top-k.

use negmine_core::kernels::Isa;
use negmine_core::{Error, IdLists, Metric, SearchOptions};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::IntoPy;
use crate::inputs::Matrix;
use crate::runtime::{self, PyHooks};

type Scores<'py> = Bound<'py, PyArray2<f32>>;
type Ids<'py> = Bound<'py, PyArray2<i64>>;

#[pyfunction]
#[pyo3(signature = (
    queries, corpus, k, *, metric = "dot", exclude_indptr = None, exclude_indices = None,
    threads = None, block_rows = None, query_batch = None, isa = None, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn search<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    corpus: &Bound<'py, PyAny>,
    k: i64,
    metric: &str,
    exclude_indptr: Option<PyReadonlyArray1<'py, i64>>,
    exclude_indices: Option<PyReadonlyArray1<'py, i64>>,
    threads: Option<usize>,
    block_rows: Option<usize>,
    query_batch: Option<usize>,
    isa: Option<&str>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Scores<'py>, Ids<'py>)> {
    let queries = Matrix::extract(queries, "queries")?;
    let corpus = Matrix::extract(corpus, "corpus")?;
    let (queries_view, corpus_view) = (queries.view("queries")?, corpus.view("corpus")?);
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
    let exclude = match (&exclude_indptr, &exclude_indices) {
        (None, None) => None,
        (Some(indptr), Some(indices)) => Some((indptr.as_slice()?, indices.as_slice()?)),
        _ => {
            return Err(Error::invalid(
                "exclude_indptr and exclude_indices must be given together",
            ))
            .py_err()
        }
    };
    let opts = SearchOptions {
        k,
        metric,
        block_rows,
        query_batch,
        isa,
    };
    let pool = runtime::pool(threads)?;
    let mut hooks = PyHooks::new(progress.as_ref(), corpus.mapped());
    let result = py.detach(|| {
        runtime::guarded(|| {
            let exclude = exclude
                .map(|(indptr, indices)| {
                    IdLists::from_csr(indptr, indices, queries_view.rows(), corpus_view.rows())
                })
                .transpose()?;
            negmine_core::search(
                &pool,
                &queries_view,
                &corpus_view,
                exclude.as_ref(),
                &opts,
                &mut hooks,
            )
        })
    });
    let neighbors = result.map_err(|e| hooks.into_pyerr(e))?;
    let shape = [queries_view.rows(), k];
    let scores = PyArray1::from_vec(py, neighbors.scores).reshape(shape)?;
    let ids = PyArray1::from_vec(py, neighbors.ids).reshape(shape)?;
    Ok((scores, ids))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search, m)?)?;
    Ok(())
}
