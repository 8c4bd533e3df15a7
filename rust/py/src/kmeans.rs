//! `kmeans`.

use negmine_core::kmeans::{self as core_kmeans, Init, KMeansMetric, KMeansOptions};
use negmine_core::Error;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::errors::PyResultExt;
use crate::inputs::Matrix;
use crate::runtime;

type KMeansOut<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<u32>>,
    f64,
    Bound<'py, PyArray1<f64>>,
);

#[pyfunction]
#[pyo3(signature = (
    embeddings, n_clusters, *, metric = "cosine", iterations = 10, seed = 0, sample = None,
    init = "k-means++", threads = None, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn kmeans<'py>(
    py: Python<'py>,
    embeddings: Matrix<'py>,
    n_clusters: usize,
    metric: &str,
    iterations: usize,
    seed: u64,
    sample: Option<usize>,
    init: &str,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<KMeansOut<'py>> {
    let metric = match metric {
        "cosine" => KMeansMetric::Cosine,
        "l2" => KMeansMetric::L2,
        other => {
            return Err(Error::invalid(format!(
                "metric must be 'cosine' or 'l2', got {other:?}"
            )))
            .py_err()
        }
    };
    let init = match init {
        "k-means++" => Init::PlusPlus,
        "random" => Init::Random,
        other => {
            return Err(Error::invalid(format!(
                "init must be 'k-means++' or 'random', got {other:?}"
            )))
            .py_err()
        }
    };
    let view = embeddings.view()?;
    let opts = KMeansOptions {
        n_clusters,
        metric,
        iterations,
        seed,
        sample,
        init,
    };
    let r = runtime::run(py, threads, progress, embeddings.mapped(), |pool, hooks| {
        core_kmeans::kmeans(pool, &view, &opts, hooks)
    })?;
    let centroids = PyArray1::from_vec(py, r.centroids).reshape([n_clusters, view.dim()])?;
    Ok((
        centroids,
        r.assignments.into_pyarray(py),
        r.inertia,
        r.history.into_pyarray(py),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kmeans, m)?)?;
    Ok(())
}
