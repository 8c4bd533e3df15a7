//! Batch plans: `topic_plan`, `ngame_plan`, `separate_plan`, their counts, and
//! `margin_balanced`. Plans come back as `(indices, offsets, topical)`.

use negmine_core::batches::{self as core_batches, BatchPlan, Weighting};
use negmine_core::Error;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::PyResultExt;
use crate::inputs::Csr;
use crate::options::Wrap;
use crate::runtime;

type PlanArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, usize);

/// A positive count given as a Python int (negative values are a ValueError, not an
/// OverflowError).
fn positive(name: &str, value: i64) -> PyResult<usize> {
    if value <= 0 {
        return Err(Error::invalid(format!(
            "{name} must be positive, got {value}"
        )))
        .py_err();
    }
    usize::try_from(value)
        .map_err(|_| Error::invalid(format!("{name} is too large: {value}")))
        .py_err()
}

fn separated(
    plan: BatchPlan,
    n_rows: usize,
    conflicts: Option<(&[i64], &[i64])>,
) -> negmine_core::Result<BatchPlan> {
    match conflicts {
        None => Ok(plan),
        Some((indptr, keys)) => core_batches::separate(&plan, n_rows, indptr, keys),
    }
}

fn arrays(py: Python<'_>, plan: BatchPlan) -> PlanArrays<'_> {
    (
        plan.rows.into_pyarray(py),
        plan.offsets.into_pyarray(py),
        plan.topical,
    )
}

#[pyfunction]
#[pyo3(signature = (
    clusters, batch_size, *, seed, epoch, clusters_per_batch = 1, weighting = Wrap(Weighting::Uniform),
    drop_last = false, conflicts = None
))]
#[allow(clippy::too_many_arguments)]
fn topic_plan<'py>(
    py: Python<'py>,
    clusters: PyReadonlyArray1<'py, i64>,
    batch_size: i64,
    seed: u64,
    epoch: u64,
    clusters_per_batch: i64,
    weighting: Wrap<Weighting>,
    drop_last: bool,
    conflicts: Option<Csr<'py>>,
) -> PyResult<PlanArrays<'py>> {
    let batch_size = positive("batch_size", batch_size)?;
    let per_batch = positive("clusters_per_batch", clusters_per_batch)?;
    let clusters = clusters.as_slice()?;
    let keys = conflicts.as_ref().map(Csr::slices).transpose()?;
    let plan = runtime::run_plain(py, || {
        let plan = core_batches::topic(
            clusters,
            batch_size,
            seed,
            epoch,
            per_batch,
            weighting.0,
            drop_last,
        )?;
        separated(plan, clusters.len(), keys)
    })?;
    Ok(arrays(py, plan))
}

#[pyfunction]
#[pyo3(signature = (clusters, batch_size, *, clusters_per_batch = 1, drop_last = false))]
fn topic_count(
    py: Python<'_>,
    clusters: PyReadonlyArray1<'_, i64>,
    batch_size: i64,
    clusters_per_batch: i64,
    drop_last: bool,
) -> PyResult<(usize, usize)> {
    let batch_size = positive("batch_size", batch_size)?;
    let per_batch = positive("clusters_per_batch", clusters_per_batch)?;
    let clusters = clusters.as_slice()?;
    let layout = runtime::run_plain(py, || {
        core_batches::topic_count(clusters, batch_size, per_batch, drop_last)
    })?;
    Ok((layout.batches(), layout.topical))
}

#[pyfunction]
#[pyo3(signature = (
    clusters, batch_size, *, seed, epoch, drop_last = false, conflicts = None
))]
fn ngame_plan<'py>(
    py: Python<'py>,
    clusters: PyReadonlyArray1<'py, i64>,
    batch_size: i64,
    seed: u64,
    epoch: u64,
    drop_last: bool,
    conflicts: Option<Csr<'py>>,
) -> PyResult<PlanArrays<'py>> {
    let batch_size = positive("batch_size", batch_size)?;
    let clusters = clusters.as_slice()?;
    let keys = conflicts.as_ref().map(Csr::slices).transpose()?;
    let plan = runtime::run_plain(py, || {
        let plan = core_batches::ngame(clusters, batch_size, seed, epoch, drop_last)?;
        separated(plan, clusters.len(), keys)
    })?;
    Ok(arrays(py, plan))
}

#[pyfunction]
#[pyo3(signature = (n_rows, batch_size, *, drop_last = false))]
fn ngame_count(n_rows: i64, batch_size: i64, drop_last: bool) -> PyResult<usize> {
    let batch_size = positive("batch_size", batch_size)?;
    let n_rows = usize::try_from(n_rows)
        .map_err(|_| Error::invalid(format!("n_rows must be non-negative, got {n_rows}")))
        .py_err()?;
    core_batches::ngame_count(n_rows, batch_size, drop_last).py_err()
}

#[pyfunction]
#[pyo3(signature = (indices, offsets, n_rows, conflicts, *, topical = 0))]
fn separate_plan<'py>(
    py: Python<'py>,
    indices: PyReadonlyArray1<'py, i64>,
    offsets: PyReadonlyArray1<'py, i64>,
    n_rows: i64,
    conflicts: Csr<'py>,
    topical: usize,
) -> PyResult<PlanArrays<'py>> {
    let n_rows = usize::try_from(n_rows)
        .map_err(|_| Error::invalid(format!("n_rows must be non-negative, got {n_rows}")))
        .py_err()?;
    let (rows, offsets) = (indices.as_slice()?, offsets.as_slice()?);
    let (indptr, keys) = conflicts.slices()?;
    let plan = runtime::run_plain(py, || {
        let plan = BatchPlan {
            rows: rows.to_vec(),
            offsets: offsets.to_vec(),
            topical,
        };
        core_batches::separate(&plan, n_rows, indptr, keys)
    })?;
    Ok(arrays(py, plan))
}

#[pyfunction]
#[pyo3(signature = (margins_indptr, margins, bins = 10, *, seed, epoch))]
fn margin_balanced<'py>(
    py: Python<'py>,
    margins_indptr: PyReadonlyArray1<'py, i64>,
    margins: PyReadonlyArray1<'py, f64>,
    bins: i64,
    seed: u64,
    epoch: u64,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let bins = positive("bins", bins)?;
    let (indptr, margins) = (margins_indptr.as_slice()?, margins.as_slice()?);
    let picks = runtime::run_plain(py, || {
        core_batches::margin_balanced(indptr, margins, bins, seed, epoch)
    })?;
    Ok(picks.into_pyarray(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(topic_plan, m)?)?;
    m.add_function(wrap_pyfunction!(topic_count, m)?)?;
    m.add_function(wrap_pyfunction!(ngame_plan, m)?)?;
    m.add_function(wrap_pyfunction!(ngame_count, m)?)?;
    m.add_function(wrap_pyfunction!(separate_plan, m)?)?;
    m.add_function(wrap_pyfunction!(margin_balanced, m)?)?;
    Ok(())
}
