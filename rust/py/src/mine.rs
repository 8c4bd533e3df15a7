//! `mine` (with its `MineOptions` and its result, `Mined`), `duplicate_groups` and
//! `link_queries`.

use negmine_core::dedup;
use negmine_core::mine::{self as core_mine, Filter, MineOptions, Sampling};
use negmine_core::{IdLists, Metric};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::choices::{Choice, Strategy, Wrap};
use crate::errors::PyResultExt;
use crate::inputs::{Csr, Matrix};
use crate::runtime;

/// `mine`'s options, checked by the core's own validation when they are built, then passed
/// whole to every call.
#[pyclass(frozen, name = "MineOptions", module = "negmine._core")]
pub struct PyMineOptions(MineOptions);

#[pymethods]
impl PyMineOptions {
    #[new]
    #[pyo3(signature = (
        *, num_negatives, metric = Wrap(Metric::Cosine), range_min = 0, range_max = None,
        max_score = None, min_score = None, absolute_margin = None, relative_margin = None,
        dup_threshold = None, sampling_strategy = Wrap(Strategy::Top), simans_a = 1.0,
        simans_b = 0.0, seed = 0, max_depth = None, record_removed = None, block_rows = None,
        query_batch = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        num_negatives: usize,
        metric: Wrap<Metric>,
        range_min: usize,
        range_max: Option<usize>,
        max_score: Option<f32>,
        min_score: Option<f32>,
        absolute_margin: Option<f32>,
        relative_margin: Option<f32>,
        dup_threshold: Option<f32>,
        sampling_strategy: Wrap<Strategy>,
        simans_a: f32,
        simans_b: f32,
        seed: u64,
        max_depth: Option<usize>,
        record_removed: Option<usize>,
        block_rows: Option<usize>,
        query_batch: Option<usize>,
    ) -> PyResult<Self> {
        let opts = MineOptions {
            metric: metric.0,
            num_negatives,
            range_min,
            range_max,
            max_score,
            min_score,
            absolute_margin,
            relative_margin,
            dup_threshold,
            sampling: match sampling_strategy.0 {
                Strategy::Top => Sampling::Top,
                Strategy::Random => Sampling::Random,
                Strategy::Simans => Sampling::Simans {
                    a: simans_a,
                    b: simans_b,
                },
            },
            seed,
            max_depth,
            record_removed: record_removed.unwrap_or(usize::MAX),
            block_rows,
            query_batch,
        };
        opts.validate().py_err()?;
        Ok(PyMineOptions(opts))
    }

    /// The metric's canonical name (an alias given is resolved).
    #[getter]
    fn metric(&self) -> &'static str {
        self.0.metric.name()
    }
}

/// Declares [`Mined`] from its list of arrays, so that each is named once: the class, its
/// keyword constructor (a checkpointed chunk read back) and `arrays()` (the chunk saved).
macro_rules! mined {
    ($($(#[doc = $doc:literal])* $field:ident: $array:ty,)*) => {
        /// The arrays of one `mine` call over `n` queries: per query, per negative and per
        /// removed candidate.
        #[pyclass(frozen, get_all, module = "negmine._core")]
        pub struct Mined {
            $($(#[doc = $doc])* $field: Py<$array>,)*
        }

        #[pymethods]
        impl Mined {
            #[new]
            #[pyo3(signature = (*, $($field),*))]
            #[allow(clippy::too_many_arguments)]
            fn new($($field: Py<$array>),*) -> Self {
                Mined { $($field),* }
            }

            /// Every array by its name.
            fn arrays<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                let out = PyDict::new(py);
                $(out.set_item(stringify!($field), &self.$field)?;)*
                Ok(out)
            }
        }
    };
}

mined! {
    /// `n x num_negatives`, -1 where a query got fewer.
    negative_ids: PyArray2<i64>,
    /// `n x num_negatives`, NaN where a query got fewer.
    negative_scores: PyArray2<f32>,
    /// Every positive's score, query by query.
    positive_scores: PyArray1<f32>,
    /// Negatives found per query.
    found: PyArray1<u32>,
    /// Candidates ranked per query.
    depth: PyArray1<u32>,
    /// Queries whose given candidates could not fill the window.
    incomplete: PyArray1<bool>,
    /// The recorded removals: query (of this call), corpus id, filter code and score.
    removed_query: PyArray1<i64>,
    removed_id: PyArray1<i64>,
    removed_filter: PyArray1<i64>,
    removed_score: PyArray1<f32>,
    /// `n x len(filter_names())`: exact removal counts.
    removed_counts: PyArray2<u64>,
}

impl Mined {
    fn from_core(py: Python<'_>, mined: core_mine::Mined, n: usize, k: usize) -> PyResult<Self> {
        let removed = &mined.removed;
        let column = |f: &dyn Fn(&core_mine::Removed) -> i64| {
            removed
                .iter()
                .map(f)
                .collect::<Vec<i64>>()
                .into_pyarray(py)
                .unbind()
        };
        let counts: Vec<u64> = mined.removed_counts.iter().flatten().copied().collect();
        let scores: Vec<f32> = removed.iter().map(|r| r.score).collect();
        Ok(Mined {
            negative_ids: PyArray1::from_vec(py, mined.negative_ids)
                .reshape([n, k])?
                .unbind(),
            negative_scores: PyArray1::from_vec(py, mined.negative_scores)
                .reshape([n, k])?
                .unbind(),
            positive_scores: mined.positive_scores.into_pyarray(py).unbind(),
            found: mined.found.into_pyarray(py).unbind(),
            depth: mined.depth.into_pyarray(py).unbind(),
            incomplete: mined.incomplete.into_pyarray(py).unbind(),
            removed_query: column(&|r| i64::from(r.query)),
            removed_id: column(&|r| i64::from(r.id)),
            removed_filter: column(&|r| r.filter as i64),
            removed_score: scores.into_pyarray(py).unbind(),
            removed_counts: PyArray1::from_vec(py, counts)
                .reshape([n, Filter::ALL.len()])?
                .unbind(),
        })
    }
}

#[pyfunction]
#[pyo3(signature = (
    queries, corpus, positives, exclude, options, *, groups = None, query_offset = 0,
    threads = None, progress = None, candidates = None
))]
#[allow(clippy::too_many_arguments)]
fn mine<'py>(
    py: Python<'py>,
    queries: Matrix<'py>,
    corpus: Matrix<'py>,
    positives: Csr<'py>,
    exclude: Csr<'py>,
    options: Bound<'py, PyMineOptions>,
    groups: Option<PyReadonlyArray1<'py, u32>>,
    query_offset: u64,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
    candidates: Option<Csr<'py>>,
) -> PyResult<Mined> {
    let (queries_view, corpus_view) = (queries.view()?, corpus.view()?);
    let opts = &options.get().0;
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
                opts,
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
                opts,
                query_offset,
            ),
        }
    })?;
    Mined::from_core(py, mined, queries_view.rows(), opts.num_negatives)
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
    m.add_class::<PyMineOptions>()?;
    m.add_class::<Mined>()?;
    m.add_function(wrap_pyfunction!(mine, m)?)?;
    m.add_function(wrap_pyfunction!(filter_names, m)?)?;
    m.add_function(wrap_pyfunction!(duplicate_groups, m)?)?;
    m.add_function(wrap_pyfunction!(link_queries, m)?)?;
    Ok(())
}
