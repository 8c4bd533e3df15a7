//! `search` (exact top-k) and its `SearchOptions`.

use negmine_core::choice::Choice;
use negmine_core::kernels::Isa;
use negmine_core::rescore::rank;
use negmine_core::search::Precision;
use negmine_core::topk::{self, Part};
use negmine_core::{Error, IdLists, Metric, SearchOptions};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::PyResultExt;
use crate::inputs::{Csr, Matrix};
use crate::options::Wrap;
use crate::runtime;

type Scores<'py> = Bound<'py, PyArray2<f32>>;
type Ids<'py> = Bound<'py, PyArray2<i64>>;

/// `search`'s options: `k`, the metric and the knobs that never change the result.
#[pyclass(frozen, name = "SearchOptions", module = "negmine._core")]
pub struct PySearchOptions(SearchOptions);

#[pymethods]
impl PySearchOptions {
    #[new]
    #[pyo3(signature = (
        k, *, metric = Wrap(Metric::Dot), block_rows = None, query_batch = None, isa = None,
        precision = Wrap(Precision::Auto), stage_cuts = None
    ))]
    fn new(
        k: usize,
        metric: Wrap<Metric>,
        block_rows: Option<usize>,
        query_batch: Option<usize>,
        isa: Option<&str>,
        precision: Wrap<Precision>,
        stage_cuts: Option<Vec<usize>>,
    ) -> PyResult<Self> {
        let isa = isa
            .map(|name| {
                Isa::from_name(name).ok_or_else(|| {
                    let names: Vec<_> = Isa::available().iter().map(|i| i.name()).collect();
                    Error::invalid(format!(
                        "isa {name:?} is not available on this CPU; available: {names:?}"
                    ))
                })
            })
            .transpose()
            .py_err()?;
        Ok(PySearchOptions(SearchOptions {
            k,
            metric: metric.0,
            block_rows,
            query_batch,
            isa,
            precision: precision.0,
            stage_cuts,
        }))
    }
}

#[pyfunction]
#[pyo3(signature = (queries, corpus, options, *, exclude = None, threads = None, progress = None))]
fn search<'py>(
    py: Python<'py>,
    queries: Matrix<'py>,
    corpus: Matrix<'py>,
    options: Bound<'py, PySearchOptions>,
    exclude: Option<Csr<'py>>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Scores<'py>, Ids<'py>, Bound<'py, PyDict>)> {
    let (queries_view, corpus_view) = (queries.view()?, corpus.view()?);
    let opts = &options.get().0;
    let exclude = exclude.as_ref().map(Csr::slices).transpose()?;
    let (neighbors, stats) =
        runtime::run(py, threads, progress, corpus.mapped(), |pool, hooks| {
            let (nq, nc) = (queries_view.rows(), corpus_view.rows());
            let exclude = exclude
                .map(|(indptr, indices)| {
                    IdLists::from_csr_named("exclude", indptr, indices, nq, nc)
                })
                .transpose()?;
            negmine_core::search_with_stats(
                pool,
                &queries_view,
                &corpus_view,
                exclude.as_ref(),
                opts,
                hooks,
            )
        })?;
    let shape = [queries_view.rows(), opts.k];
    let scores = PyArray1::from_vec(py, neighbors.scores).reshape(shape)?;
    let ids = PyArray1::from_vec(py, neighbors.ids).reshape(shape)?;
    let report = PyDict::new(py);
    report.set_item("precision", stats.precision.name())?;
    report.set_item("rescored", PyArray1::from_vec(py, stats.rescored))?;
    report.set_item("scan_seconds", stats.scan_seconds)?;
    report.set_item("rescore_seconds", stats.rescore_seconds)?;
    report.set_item("stage_cuts", stats.stage_cuts)?;
    report.set_item("stage_rows", stats.stage_rows)?;
    report.set_item("companion_seconds", stats.companion_seconds)?;
    report.set_item("probe_rescored", stats.probe_rescored)?;
    Ok((scores, ids, report))
}

/// The exact merge of per-part top-k lists (see `negmine_core::topk::merge`). The Python
/// wrapper (`negmine.merge_topk`) has already checked the types and shapes.
#[pyfunction]
#[pyo3(signature = (parts, k, *, threads = None))]
fn merge_topk<'py>(
    py: Python<'py>,
    parts: Vec<(PyReadonlyArray2<'py, f32>, PyReadonlyArray2<'py, i64>)>,
    k: usize,
    threads: Option<usize>,
) -> PyResult<(Scores<'py>, Ids<'py>)> {
    let rows = parts.first().map_or(0, |(scores, _)| scores.shape()[0]);
    let slices = parts
        .iter()
        .map(|(scores, ids)| {
            Ok(Part {
                scores: scores.as_slice()?,
                ids: ids.as_slice()?,
                width: scores.shape()[1],
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let (scores, ids) = runtime::run(py, threads, None, None, |pool, _| {
        topk::merge(pool, &slices, rows, k)
    })?;
    let shape = [rows, k];
    Ok((
        PyArray1::from_vec(py, scores).reshape(shape)?,
        PyArray1::from_vec(py, ids).reshape(shape)?,
    ))
}

/// The exact top-`k` of given candidates (see `negmine_core::rescore::rank`).
#[pyfunction]
#[pyo3(signature = (queries, corpus, candidates, k, *, metric = Wrap(Metric::Dot), threads = None))]
fn rescore<'py>(
    py: Python<'py>,
    queries: Matrix<'py>,
    corpus: Matrix<'py>,
    candidates: PyReadonlyArray2<'py, i64>,
    k: usize,
    metric: Wrap<Metric>,
    threads: Option<usize>,
) -> PyResult<(Scores<'py>, Ids<'py>)> {
    let (queries_view, corpus_view) = (queries.view()?, corpus.view()?);
    let (rows, width) = (candidates.shape()[0], candidates.shape()[1]);
    if rows != queries_view.rows() {
        return Err(Error::invalid(format!(
            "{rows} rows of candidates for {} queries",
            queries_view.rows()
        )))
        .py_err();
    }
    let ids = candidates.as_slice()?;
    let (scores, ids) = runtime::run(py, threads, None, corpus.mapped(), |pool, _| {
        rank(pool, &queries_view, &corpus_view, metric.0, ids, width, k)
    })?;
    let shape = [rows, k];
    Ok((
        PyArray1::from_vec(py, scores).reshape(shape)?,
        PyArray1::from_vec(py, ids).reshape(shape)?,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySearchOptions>()?;
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add_function(wrap_pyfunction!(merge_topk, m)?)?;
    m.add_function(wrap_pyfunction!(rescore, m)?)?;
    Ok(())
}
