//! `mine`, `duplicate_groups` and `link_queries`.

use negmine_core::dedup;
use negmine_core::mine::{self as core_mine, Filter, MineOptions, Sampling};
use negmine_core::{Error, IdLists, Metric};
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::IntoPy;
use crate::inputs::Matrix;
use crate::runtime::{self, PyHooks};

fn sampling(name: &str, a: f32, b: f32) -> negmine_core::Result<Sampling> {
    match name {
        "top" => Ok(Sampling::Top),
        "random" => Ok(Sampling::Random),
        "simans" => Ok(Sampling::Simans { a, b }),
        other => Err(Error::invalid(format!(
            "sampling_strategy must be 'top', 'random' or 'simans', got {other:?}"
        ))),
    }
}

#[pyfunction]
#[pyo3(signature = (
    queries, corpus, positives_indptr, positives_indices, exclude_indptr, exclude_indices, *,
    num_negatives, metric = "cosine", range_min = 0, range_max = None, max_score = None,
    min_score = None, absolute_margin = None, relative_margin = None, dup_threshold = None,
    sampling_strategy = "top", simans_a = 1.0, simans_b = 0.0, seed = 0, groups = None,
    query_offset = 0, threads = None, block_rows = None, query_batch = None, progress = None,
    candidates_indptr = None, candidates_indices = None, max_depth = None, record_removed = None
))]
#[allow(clippy::too_many_arguments)]
fn mine<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    corpus: &Bound<'py, PyAny>,
    positives_indptr: PyReadonlyArray1<'py, i64>,
    positives_indices: PyReadonlyArray1<'py, i64>,
    exclude_indptr: PyReadonlyArray1<'py, i64>,
    exclude_indices: PyReadonlyArray1<'py, i64>,
    num_negatives: usize,
    metric: &str,
    range_min: usize,
    range_max: Option<usize>,
    max_score: Option<f32>,
    min_score: Option<f32>,
    absolute_margin: Option<f32>,
    relative_margin: Option<f32>,
    dup_threshold: Option<f32>,
    sampling_strategy: &str,
    simans_a: f32,
    simans_b: f32,
    seed: u64,
    groups: Option<PyReadonlyArray1<'py, u32>>,
    query_offset: u64,
    threads: Option<usize>,
    block_rows: Option<usize>,
    query_batch: Option<usize>,
    progress: Option<Py<PyAny>>,
    candidates_indptr: Option<PyReadonlyArray1<'py, i64>>,
    candidates_indices: Option<PyReadonlyArray1<'py, i64>>,
    max_depth: Option<usize>,
    record_removed: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let queries = Matrix::extract(queries, "queries")?;
    let corpus = Matrix::extract(corpus, "corpus")?;
    let (queries_view, corpus_view) = (queries.view("queries")?, corpus.view("corpus")?);
    let opts = MineOptions {
        metric: Metric::from_name(metric).py_err()?,
        num_negatives,
        range_min,
        range_max,
        max_score,
        min_score,
        absolute_margin,
        relative_margin,
        dup_threshold,
        sampling: sampling(sampling_strategy, simans_a, simans_b).py_err()?,
        seed,
        max_depth,
        record_removed: record_removed.unwrap_or(usize::MAX),
        block_rows,
        query_batch,
    };
    let csr = (
        positives_indptr.as_slice()?,
        positives_indices.as_slice()?,
        exclude_indptr.as_slice()?,
        exclude_indices.as_slice()?,
    );
    let groups = groups.as_ref().map(|g| g.as_slice()).transpose()?;
    let candidates = match (&candidates_indptr, &candidates_indices) {
        (None, None) => None,
        (Some(indptr), Some(indices)) => Some((indptr.as_slice()?, indices.as_slice()?)),
        _ => {
            return Err(Error::invalid(
                "candidates_indptr and candidates_indices must be given together",
            ))
            .py_err()
        }
    };
    let pool = runtime::pool(threads)?;
    let mut hooks = PyHooks::new(progress.as_ref(), corpus.mapped());
    let result = py.detach(|| {
        runtime::guarded(|| {
            let (nq, nc) = (queries_view.rows(), corpus_view.rows());
            let positives = IdLists::from_csr_named("positives", csr.0, csr.1, nq, nc)?;
            let exclude = IdLists::from_csr_named("exclude", csr.2, csr.3, nq, nc)?;
            match candidates {
                None => core_mine::mine(
                    &pool,
                    &queries_view,
                    &corpus_view,
                    &positives,
                    &exclude,
                    groups,
                    &opts,
                    query_offset,
                    &mut hooks,
                ),
                Some((indptr, indices)) => {
                    let candidates =
                        IdLists::from_csr_named("candidates", indptr, indices, nq, nc)?;
                    core_mine::mine_candidates(
                        &pool,
                        &queries_view,
                        &corpus_view,
                        &candidates,
                        &positives,
                        &exclude,
                        groups,
                        &opts,
                        query_offset,
                    )
                }
            }
        })
    });
    let mined = result.map_err(|e| hooks.into_pyerr(e))?;
    let n_queries = queries_view.rows();
    let shape = [n_queries, num_negatives];
    let out = PyDict::new(py);
    out.set_item(
        "negative_ids",
        PyArray1::from_vec(py, mined.negative_ids).reshape(shape)?,
    )?;
    out.set_item(
        "negative_scores",
        PyArray1::from_vec(py, mined.negative_scores).reshape(shape)?,
    )?;
    out.set_item("positive_scores", mined.positive_scores.into_pyarray(py))?;
    out.set_item("found", mined.found.into_pyarray(py))?;
    out.set_item("depth", mined.depth.into_pyarray(py))?;
    out.set_item("incomplete", mined.incomplete.into_pyarray(py))?;
    let removed = &mined.removed;
    let column =
        |f: &dyn Fn(&core_mine::Removed) -> i64| removed.iter().map(f).collect::<Vec<i64>>();
    out.set_item(
        "removed_query",
        column(&|r| i64::from(r.query)).into_pyarray(py),
    )?;
    out.set_item("removed_id", column(&|r| i64::from(r.id)).into_pyarray(py))?;
    out.set_item(
        "removed_filter",
        column(&|r| r.filter as i64).into_pyarray(py),
    )?;
    let scores: Vec<f32> = removed.iter().map(|r| r.score).collect();
    let counts: Vec<u64> = mined.removed_counts.iter().flatten().copied().collect();
    let counts = PyArray1::from_vec(py, counts).reshape([n_queries, Filter::ALL.len()])?;
    out.set_item("removed_counts", counts)?;
    out.set_item("removed_score", scores.into_pyarray(py))?;
    Ok(out)
}

/// The names of the filters, indexed by the codes in `removed_filter`.
#[pyfunction]
fn filter_names() -> Vec<&'static str> {
    Filter::ALL.iter().map(|f| f.name()).collect()
}

#[pyfunction]
#[pyo3(signature = (corpus, *, threads = None))]
fn duplicate_groups<'py>(
    py: Python<'py>,
    corpus: &Bound<'py, PyAny>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let corpus = Matrix::extract(corpus, "corpus")?;
    let view = corpus.view("corpus")?;
    let pool = runtime::pool(threads)?;
    let groups = py.detach(|| runtime::guarded(|| Ok(dedup::duplicate_groups(&pool, &view))));
    Ok(groups.py_err()?.into_pyarray(py))
}

#[pyfunction]
#[pyo3(signature = (queries, threshold, *, neighbors = 16, threads = None, progress = None))]
fn link_queries<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    threshold: f32,
    neighbors: usize,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let queries = Matrix::extract(queries, "queries")?;
    let view = queries.view("queries")?;
    let pool = runtime::pool(threads)?;
    let mut hooks = PyHooks::new(progress.as_ref(), None);
    let result = py.detach(|| {
        runtime::guarded(|| dedup::link_queries(&pool, &view, threshold, neighbors, &mut hooks))
    });
    let components = result.map_err(|e| hooks.into_pyerr(e))?;
    Ok(components.into_pyarray(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mine, m)?)?;
    m.add_function(wrap_pyfunction!(filter_names, m)?)?;
    m.add_function(wrap_pyfunction!(duplicate_groups, m)?)?;
    m.add_function(wrap_pyfunction!(link_queries, m)?)?;
    Ok(())
}
