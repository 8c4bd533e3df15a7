//! `rrf_fuse`: the reciprocal-rank fusion of `backend="hybrid"` (see `negmine_core::fusion`).

use negmine_core::fusion::{self, Rankings};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::inputs::Csr;
use crate::runtime;

type Fused<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<u8>>,
);

/// The reciprocal-rank fusion of two rankings per query (`first`, `second`: CSR pairs, each
/// list best first): a document at 1-based rank `r` gets `1 / (k + r)` from each ranking that
/// holds it; the union is ordered by the sum (compared exactly), ties by the smaller id.
/// Returns the fused rankings as CSR `(indptr, ids)` and each id's sources (bit 0: `first`
/// holds it, bit 1: `second`).
#[pyfunction]
#[pyo3(signature = (first, second, *, k = 60, threads = None))]
fn rrf_fuse<'py>(
    py: Python<'py>,
    first: Csr<'py>,
    second: Csr<'py>,
    k: u32,
    threads: Option<usize>,
) -> PyResult<Fused<'py>> {
    let (first, second) = (first.slices()?, second.slices()?);
    let n_queries = first.0.len().saturating_sub(1);
    let fused = runtime::run(py, threads, None, None, |pool, _| {
        fusion::reciprocal_rank_fusion(
            pool,
            Rankings {
                indptr: first.0,
                indices: first.1,
            },
            Rankings {
                indptr: second.0,
                indices: second.1,
            },
            n_queries,
            k,
        )
    })?;
    let indptr: Vec<i64> = fused.offsets.iter().map(|&o| o as i64).collect();
    let ids: Vec<i64> = fused.ids.iter().map(|&id| i64::from(id)).collect();
    Ok((
        indptr.into_pyarray(py),
        ids.into_pyarray(py),
        fused.sources.into_pyarray(py),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(rrf_fuse, m)?)?;
    Ok(())
}
