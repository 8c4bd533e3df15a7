//! `kmeans` and its `KMeansOptions`.

use negmine_core::kmeans::{self as core_kmeans, Init, KMeansMetric, KMeansOptions};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::inputs::Matrix;
use crate::options::Wrap;
use crate::runtime;

type KMeansOut<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<u32>>,
    f64,
    Bound<'py, PyArray1<f64>>,
);

/// `kmeans`' options.
#[pyclass(frozen, name = "KMeansOptions", module = "negmine._core")]
pub struct PyKMeansOptions(KMeansOptions);

#[pymethods]
impl PyKMeansOptions {
    #[new]
    #[pyo3(signature = (
        n_clusters, *, metric = Wrap(KMeansMetric::Cosine), iterations = 10, seed = 0,
        sample = None, init = Wrap(Init::PlusPlus)
    ))]
    fn new(
        n_clusters: usize,
        metric: Wrap<KMeansMetric>,
        iterations: usize,
        seed: u64,
        sample: Option<usize>,
        init: Wrap<Init>,
    ) -> Self {
        PyKMeansOptions(KMeansOptions {
            n_clusters,
            metric: metric.0,
            iterations,
            seed,
            sample,
            init: init.0,
        })
    }
}

#[pyfunction]
#[pyo3(signature = (embeddings, options, *, threads = None, progress = None))]
fn kmeans<'py>(
    py: Python<'py>,
    embeddings: Matrix<'py>,
    options: Bound<'py, PyKMeansOptions>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<KMeansOut<'py>> {
    let view = embeddings.view()?;
    let opts = &options.get().0;
    let r = runtime::run(py, threads, progress, embeddings.mapped(), |pool, hooks| {
        core_kmeans::kmeans(pool, &view, opts, hooks)
    })?;
    let centroids = PyArray1::from_vec(py, r.centroids).reshape([opts.n_clusters, view.dim()])?;
    Ok((
        centroids,
        r.assignments.into_pyarray(py),
        r.inertia,
        r.history.into_pyarray(py),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKMeansOptions>()?;
    m.add_function(wrap_pyfunction!(kmeans, m)?)?;
    Ok(())
}
