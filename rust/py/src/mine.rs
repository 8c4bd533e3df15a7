//! `mine`, `duplicate_groups` and `link_queries`.

use negmine_core::dedup;
use negmine_core::mine::{self as core_mine, Filter, MineOptions, Sampling};
use negmine_core::{Error, IdLists, Metric};
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::PyResultExt;
use crate::inputs::{Csr, Matrix};
use crate::runtime;

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
    queries, corpus, positives, exclude, *,
    num_negatives, metric = "cosine", range_min = 0, range_max = None, max_score = None,
    min_score = None, absolute_margin = None, relative_margin = None, dup_threshold = None,
    sampling_strategy = "top", simans_a = 1.0, simans_b = 0.0, seed = 0, groups = None,
    query_offset = 0, threads = None, block_rows = None, query_batch = None, progress = None,
    candidates = None, max_depth = None, record_removed = None
))]
#[allow(clippy::too_many_arguments)]
fn mine<'py>(
    py: Python<'py>,
    queries: Matrix<'py>,
    corpus: Matrix<'py>,
    positives: Csr<'py>,
    exclude: Csr<'py>,
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
    candidates: Option<Csr<'py>>,
    max_depth: Option<usize>,
    record_removed: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let (queries_view, corpus_view) = (queries.view()?, corpus.view()?);
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
    let (positives, exclude) = (positives.slices()?, exclude.slices()?);
    let candidates = candidates.as_ref().map(Csr::slices).transpose()?;
    let groups = groups.as_ref().map(|g| g.as_slice()).transpose()?;
    let mined = runtime::run(py, threads, progress, corpus.mapped(), |pool, hooks| {
        let (nq, nc) = (queries_view.rows(), corpus_view.rows());
        let lists =
            |what, (indptr, indices)| IdLists::from_csr_named(what, indptr, indices, nq, nc);
        let positives = lists("positives", positives)?;
        let exclude = lists("exclude", exclude)?;
        match candidates {
            None => core_mine::mine(
                pool,
                &queries_view,
                &corpus_view,
                &positives,
                &exclude,
                groups,
                &opts,
                query_offset,
                hooks,
            ),
            Some(candidates) => core_mine::mine_candidates(
                pool,
                &queries_view,
                &corpus_view,
                &lists("candidates", candidates)?,
                &positives,
                &exclude,
                groups,
                &opts,
                query_offset,
            ),
        }
    })?;
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
    corpus: Matrix<'py>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let view = corpus.view()?;
    let groups = runtime::run(py, threads, None, None, |pool, _| {
        Ok(dedup::duplicate_groups(pool, &view))
    })?;
    Ok(groups.into_pyarray(py))
}

#[pyfunction]
#[pyo3(signature = (queries, threshold, *, neighbors = 16, threads = None, progress = None))]
fn link_queries<'py>(
    py: Python<'py>,
    queries: Matrix<'py>,
    threshold: f32,
    neighbors: usize,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let view = queries.view()?;
    let components = runtime::run(py, threads, progress, None, |pool, hooks| {
        dedup::link_queries(pool, &view, threshold, neighbors, hooks)
    })?;
    Ok(components.into_pyarray(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mine, m)?)?;
    m.add_function(wrap_pyfunction!(filter_names, m)?)?;
    m.add_function(wrap_pyfunction!(duplicate_groups, m)?)?;
    m.add_function(wrap_pyfunction!(link_queries, m)?)?;
    Ok(())
}
