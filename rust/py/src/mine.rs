//! `mine` (with its `MineOptions` and its result, `Mined`), `duplicate_groups` and
//! `link_queries`.

use negmine_core::choice::Choice;
use negmine_core::dedup;
use negmine_core::mine::{
    self as core_mine, CandidateSource, Candidates, ExactSource, Filter, FnSource, FnTeacher,
    Judging, MineJob, MineOptions,
};
use negmine_core::IdLists;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::PyResultExt;
use crate::inputs::{Csr, Matrix};
use crate::options::{given, table_to_py};
use crate::runtime;

/// `mine`'s options, checked by the core's own validation when they are built, then passed
/// whole to every call.
#[pyclass(frozen, name = "MineOptions", module = "negmine._core")]
pub struct PyMineOptions(MineOptions);

#[pymethods]
impl PyMineOptions {
    /// Takes the core's option names as keywords (`NAMES`); an option not given keeps the
    /// core's default.
    #[new]
    #[pyo3(signature = (**options))]
    fn new(options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut opts = MineOptions::default();
        for (name, value) in options.into_iter().flatten() {
            opts.set(&name.extract::<String>()?, &given(&value)?)
                .py_err()?;
        }
        opts.validate().py_err()?;
        Ok(PyMineOptions(opts))
    }

    /// The options' names, as the core declares them.
    #[classattr]
    #[allow(non_snake_case)]
    fn NAMES() -> Vec<&'static str> {
        MineOptions::NAMES.to_vec()
    }

    /// Every option's `name`, `type` (`int`, `float`, `str`), `optional`, `choices`,
    /// `default` and `help`, as the core declares them: what the Python API, the command
    /// line and the refresher offer.
    #[classattr]
    #[allow(non_snake_case)]
    fn OPTIONS(py: Python<'_>) -> PyResult<Py<PyTuple>> {
        Ok(table_to_py(py, &MineOptions::table())?.unbind())
    }

    /// The metric's canonical name (an alias given is resolved).
    #[getter]
    fn metric(&self) -> &'static str {
        self.0.metric.name()
    }
}

/// Declares [`Mined`] from its list of arrays, so that each is named once: the class, its
/// keyword constructor (a checkpointed chunk read back) and `arrays()` (the chunk saved). The
/// arrays after `per query of` are per-query statistics of how the candidates were fetched;
/// a chunk saved without them (by an older version) reads back with their default, a function
/// of the number of queries. The names after `dropped` are arrays older versions saved: read
/// back and ignored.
macro_rules! mined {
    (
        $($(#[doc = $doc:literal])* $field:ident: $array:ty,)*
        ; per query of $count:ident:
        $($(#[doc = $sdoc:literal])* $stat:ident: $stype:ty = $default:path,)*
        ; dropped: $($gone:ident),*
    ) => {
        /// The arrays of one `mine` call over `n` queries: per query, per negative and per
        /// removed candidate.
        #[pyclass(frozen, get_all, module = "negmine._core")]
        pub struct Mined {
            $($(#[doc = $doc])* $field: Py<$array>,)*
            $($(#[doc = $sdoc])* $stat: Py<$stype>,)*
        }

        #[pymethods]
        impl Mined {
            #[new]
            #[pyo3(signature = (*, $($field,)* $($stat = None,)* $($gone = None),*))]
            #[allow(clippy::too_many_arguments)]
            fn new(
                py: Python<'_>,
                $($field: Py<$array>,)*
                $($stat: Option<Py<$stype>>,)*
                $($gone: Option<Py<PyAny>>,)*
            ) -> Self {
                $(let _ = $gone;)*
                let n = $count.bind(py).len();
                Mined {
                    $($field,)*
                    $($stat: $stat.unwrap_or_else(|| $default(py, n)),)*
                }
            }

            /// Every array by its name.
            fn arrays<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                let out = PyDict::new(py);
                $(out.set_item(stringify!($field), &self.$field)?;)*
                $(out.set_item(stringify!($stat), &self.$stat)?;)*
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
    /// Candidates ranked per query on the depth schedule (`first_depth`, then 4 times
    /// deeper): the depth where the whole ranking holds the query's window. With a score cap
    /// (`max_score`, the margins) the search skips the rows above the cap in one pass; the
    /// depth still counts them.
    depth: PyArray1<u32>,
    /// The recorded removals: query (of this call), corpus id, filter code and score.
    removed_query: PyArray1<i64>,
    removed_id: PyArray1<i64>,
    removed_filter: PyArray1<i64>,
    removed_score: PyArray1<f32>,
    /// `n x len(filter_names())`: exact removal counts.
    removed_counts: PyArray2<u64>,
    ; per query of found:
    /// How many times each query's candidates were fetched on the depth schedule (more than
    /// once: the filters emptied its window and it was fetched again, deeper; with a score
    /// cap, the rounds the schedule takes, while the search may have passed once).
    fetches: PyArray1<u32> = fetched_once,
    /// Queries finished by the exact search instead of the given `fetch`.
    exact_finish: PyArray1<bool> = none_finished_exactly,
    /// `n x num_negatives`: the teacher's scores of the negatives (NaN where a query got
    /// fewer); `n x 0` without a teacher.
    teacher_scores: PyArray2<f32> = no_teacher,
    /// Per query, the candidates the teacher scored (each once); zeros without a teacher.
    judged: PyArray1<u32> = none_judged,
    /// `n x num_negatives`: each negative's rank in its query's ranking before any filter
    /// (0: the best candidate; `2**32 - 1` where a query got fewer); `n x 0` in a chunk saved
    /// by a version that did not record them.
    negative_ranks: PyArray2<u32> = no_ranks,
    /// `n x num_negatives`: which candidate sources found each negative, a bitmask (bit 0:
    /// the lexical ranking, bit 1: the dense one; 0 where a query got fewer), set by the
    /// Python layer for the sources that mix rankings (`backend="bm25"`, `"hybrid"`); `n x 0`
    /// otherwise.
    negative_sources: PyArray2<u8> = no_sources,
    // Queries whose given candidates could not fill the window, when the Python side
    // deepened the hnsw path itself.
    ; dropped: incomplete
}

fn fetched_once(py: Python<'_>, n: usize) -> Py<PyArray1<u32>> {
    PyArray1::from_vec(py, vec![1; n]).unbind()
}

fn none_judged(py: Python<'_>, n: usize) -> Py<PyArray1<u32>> {
    PyArray1::from_vec(py, vec![0; n]).unbind()
}

fn no_teacher(py: Python<'_>, n: usize) -> Py<PyArray2<f32>> {
    PyArray2::zeros(py, [n, 0], false).unbind()
}

fn no_ranks(py: Python<'_>, n: usize) -> Py<PyArray2<u32>> {
    PyArray2::zeros(py, [n, 0], false).unbind()
}

fn no_sources(py: Python<'_>, n: usize) -> Py<PyArray2<u8>> {
    PyArray2::zeros(py, [n, 0], false).unbind()
}

fn none_finished_exactly(py: Python<'_>, n: usize) -> Py<PyArray1<bool>> {
    PyArray1::from_vec(py, vec![false; n]).unbind()
}

impl Mined {
    /// `teacher`: the call had one (the teacher scores are `n x k`, else `n x 0`).
    fn from_core(
        py: Python<'_>,
        mined: core_mine::Mined,
        n: usize,
        k: usize,
        teacher: bool,
    ) -> PyResult<Self> {
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
            removed_query: column(&|r| i64::from(r.query)),
            removed_id: column(&|r| i64::from(r.id)),
            removed_filter: column(&|r| r.filter as i64),
            removed_score: scores.into_pyarray(py).unbind(),
            removed_counts: PyArray1::from_vec(py, counts)
                .reshape([n, Filter::ALL.len()])?
                .unbind(),
            fetches: mined.fetches.into_pyarray(py).unbind(),
            exact_finish: mined.exact_finish.into_pyarray(py).unbind(),
            teacher_scores: PyArray1::from_vec(py, mined.teacher_scores)
                .reshape([n, if teacher { k } else { 0 }])?
                .unbind(),
            judged: mined.judged.into_pyarray(py).unbind(),
            negative_ranks: PyArray1::from_vec(py, mined.negative_ranks)
                .reshape([n, k])?
                .unbind(),
            negative_sources: no_sources(py, n),
        })
    }
}

/// Mines `queries`, from the exact search or, given `fetch`, from the candidates it proposes:
/// `fetch(rows, depth)` gets the rows of `queries` to serve (a 1-D int64 array) and the depth
/// asked for, and returns their candidates as a CSR pair `(indptr, indices)` of int64 arrays
/// (see the core's `CandidateSource`). Queries that need more than `max_depth` candidates, or
/// that `fetch` left short, are finished by the exact search. An exception raised by `fetch`
/// stops the mining and is re-raised as is. `fetch_ranked`: each list `fetch` returns is the
/// ranking itself, best first (the core rescores it for the filters but keeps the order).
///
/// `teacher(query_ids, corpus_ids) -> float32 scores` (global query indices, one score per
/// pair) judges the candidates, with `teacher_positive_scores` its scores of `positives`: the
/// score filters then read the teacher's scores (the core's `mine_judged`). Its exceptions are
/// re-raised as is.
#[pyfunction]
#[pyo3(signature = (
    queries, corpus, positives, exclude, options, *, groups = None, query_offset = 0,
    threads = None, progress = None, fetch = None, max_depth = None, teacher = None,
    teacher_positive_scores = None, fetch_ranked = false
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
    fetch: Option<Py<PyAny>>,
    max_depth: Option<usize>,
    teacher: Option<Py<PyAny>>,
    teacher_positive_scores: Option<PyReadonlyArray1<'py, f32>>,
    fetch_ranked: bool,
) -> PyResult<Mined> {
    let (queries_view, corpus_view) = (queries.view()?, corpus.view()?);
    let opts = &options.get().0;
    let (positives, exclude) = (positives.slices()?, exclude.slices()?);
    let groups = groups.as_ref().map(|g| g.as_slice()).transpose()?;
    let teacher_positives = match (&teacher, &teacher_positive_scores) {
        (None, None) => None,
        (Some(_), Some(scores)) => Some(scores.as_slice()?),
        _ => {
            return Err(negmine_core::Error::invalid(
                "teacher and teacher_positive_scores go together",
            ))
            .py_err()
        }
    };
    let judged = teacher.is_some();
    let mined = runtime::run_raising(
        py,
        threads,
        progress,
        corpus.mapped(),
        |pool, hooks, raised| {
            let (nq, nc) = (queries_view.rows(), corpus_view.rows());
            let lists =
                |what, (indptr, indices)| IdLists::from_csr_named(what, indptr, indices, nq, nc);
            let positives = lists("positives", positives)?;
            let exclude = lists("exclude", exclude)?;
            let job = MineJob {
                queries: &queries_view,
                corpus: &corpus_view,
                positives: &positives,
                exclude: &exclude,
                groups,
                opts,
                query_offset,
            };
            let mut exact;
            let mut python;
            let source: &mut dyn CandidateSource = match fetch {
                // The exact search: one pass for score-capped windows (`core_mine::mine`),
                // unless a teacher judges the candidates (its scores are not the search's).
                None if teacher.is_none() => return core_mine::mine(pool, &job, hooks),
                None => {
                    exact = ExactSource::new(
                        pool,
                        &queries_view,
                        &corpus_view,
                        &exclude,
                        opts,
                        query_offset,
                    );
                    &mut exact
                }
                Some(fetch) => {
                    // The exception `fetch` raised (or the Ctrl-C seen before calling it) is
                    // re-raised as is.
                    let source = FnSource::new(move |rows: &[usize], depth: usize| {
                        python_fetch(&fetch, rows, depth, fetch_ranked).map_err(|e| raised.stop(e))
                    });
                    python = match max_depth {
                        Some(d) => source.with_max_depth(d),
                        None => source,
                    };
                    &mut python
                }
            };
            let mut judge;
            let judging = match (teacher, teacher_positives) {
                (Some(teacher), Some(positive_scores)) => {
                    judge = FnTeacher(move |queries: &[u64], ids: &[u32]| {
                        python_teacher(&teacher, queries, ids).map_err(|e| raised.stop(e))
                    });
                    Some(Judging {
                        teacher: &mut judge,
                        positive_scores,
                    })
                }
                _ => None,
            };
            core_mine::mine_judged(source, judging, pool, &job, hooks)
        },
    )?;
    Mined::from_core(py, mined, queries_view.rows(), opts.num_negatives, judged)
}

/// One call of a Python candidate source, with the GIL taken back (Ctrl-C checked first).
fn python_fetch(
    fetch: &Py<PyAny>,
    rows: &[usize],
    depth: usize,
    ranked: bool,
) -> PyResult<Candidates> {
    Python::attach(|py| {
        py.check_signals()?;
        let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let answer = fetch.call1(py, (rows.into_pyarray(py), depth))?;
        let csr: Csr<'_> = answer.bind(py).extract()?;
        let (indptr, indices) = csr.slices()?;
        let candidates = Candidates::from_csr(indptr, indices.to_vec()).py_err()?;
        Ok(if ranked {
            candidates.in_source_order()
        } else {
            candidates
        })
    })
}

/// One call of a Python teacher, with the GIL taken back (Ctrl-C checked first).
fn python_teacher(teacher: &Py<PyAny>, queries: &[u64], ids: &[u32]) -> PyResult<Vec<f32>> {
    Python::attach(|py| {
        py.check_signals()?;
        let queries: Vec<i64> = queries.iter().map(|&q| q as i64).collect();
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let answer = teacher.call1(py, (queries.into_pyarray(py), ids.into_pyarray(py)))?;
        let scores: PyReadonlyArray1<'_, f32> = answer.bind(py).extract()?;
        Ok(scores.as_slice()?.to_vec())
    })
}

/// The depth mining first fetches each query's candidates at (the start of the core's one
/// deepening schedule), e.g. to measure an approximate source's recall where it matters.
#[pyfunction]
fn first_depth(options: Bound<'_, PyMineOptions>) -> usize {
    core_mine::depth_schedule(&options.get().0)
        .next()
        .expect("the schedule never ends")
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
    m.add_function(wrap_pyfunction!(first_depth, m)?)?;
    m.add_function(wrap_pyfunction!(filter_names, m)?)?;
    m.add_function(wrap_pyfunction!(duplicate_groups, m)?)?;
    m.add_function(wrap_pyfunction!(link_queries, m)?)?;
    Ok(())
}
