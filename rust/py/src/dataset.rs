//! The seeded draws of `negmine.torch.HardNegativeDataset`: `draw_example`.

use negmine_core::dataset;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use crate::runtime;

/// Example `index`'s draws in `epoch`, in one call per item: which of its `positives`
/// positives (None when it has none) and which `k` of its `present` negatives (increasing
/// positions; all when `present <= k`).
#[pyfunction]
#[pyo3(signature = (index, positives, present, k, *, seed, epoch))]
fn draw_example(
    py: Python<'_>,
    index: u64,
    positives: usize,
    present: usize,
    k: usize,
    seed: u64,
    epoch: u64,
) -> PyResult<(Option<usize>, Bound<'_, PyArray1<i64>>)> {
    let (positive, negatives) = runtime::run_plain(py, || {
        let negatives = dataset::negatives(seed, epoch, index, present, k);
        Ok((
            dataset::positive(seed, epoch, index, positives),
            negatives.into_iter().map(|i| i as i64).collect::<Vec<_>>(),
        ))
    })?;
    Ok((positive, negatives.into_pyarray(py)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(draw_example, m)?)?;
    Ok(())
}
