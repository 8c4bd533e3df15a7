//! `maxsim_scores`, `maxsim_search` and `maxsim_pooled`: late-interaction scores over ragged
//! token embeddings (see `negmine_core::maxsim`). Each text set travels as a token matrix
//! (array or mapped `Embeddings`) and its int64 offsets.

use negmine_core::maxsim::{self, Ragged};
use negmine_core::IdLists;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::errors::{InvalidTypeError, PyResultExt};
use crate::inputs::{Csr, Matrix};
use crate::runtime;

type Scores<'py> = Bound<'py, PyArray2<f32>>;
type Ids<'py> = Bound<'py, PyArray2<i64>>;

fn offsets<'a>(array: &'a PyReadonlyArray1<'_, i64>, what: &str) -> PyResult<&'a [i64]> {
    array.as_slice().map_err(|_| {
        InvalidTypeError::new_err(format!("{what} offsets must be a C-contiguous int64 array"))
    })
}

fn ragged<'a>(
    what: &str,
    tokens: &'a Matrix<'_>,
    offsets_array: &'a PyReadonlyArray1<'_, i64>,
) -> PyResult<Ragged<'a>> {
    Ragged::new(what, tokens.view()?, offsets(offsets_array, what)?).py_err()
}

/// The MaxSim of each pair `(query_ids[i], corpus_ids[i])`, float32, in the order given.
#[pyfunction]
#[pyo3(signature = (
    query_tokens, query_offsets, corpus_tokens, corpus_offsets, query_ids, corpus_ids, *,
    threads = None, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn maxsim_scores<'py>(
    py: Python<'py>,
    query_tokens: Matrix<'py>,
    query_offsets: PyReadonlyArray1<'py, i64>,
    corpus_tokens: Matrix<'py>,
    corpus_offsets: PyReadonlyArray1<'py, i64>,
    query_ids: PyReadonlyArray1<'py, i64>,
    corpus_ids: PyReadonlyArray1<'py, i64>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let queries = ragged("query tokens", &query_tokens, &query_offsets)?;
    let corpus = ragged("corpus tokens", &corpus_tokens, &corpus_offsets)?;
    let (qi, ci) = (
        offsets(&query_ids, "query_ids")?,
        offsets(&corpus_ids, "corpus_ids")?,
    );
    let scores = runtime::run(
        py,
        threads,
        progress,
        corpus_tokens.mapped(),
        |pool, hooks| maxsim::score_pairs(pool, &queries, &corpus, qi, ci, hooks),
    )?;
    Ok(PyArray1::from_vec(py, scores))
}

/// Each query's `k` best corpus texts by MaxSim (score descending, smaller id on ties) among
/// its `candidates` (a CSR pair; all texts without it), leaving out `exclude`; padded with
/// `-inf` / `-1`.
#[pyfunction]
#[pyo3(signature = (
    query_tokens, query_offsets, corpus_tokens, corpus_offsets, k, *, candidates = None,
    exclude = None, threads = None, progress = None
))]
#[allow(clippy::too_many_arguments)]
fn maxsim_search<'py>(
    py: Python<'py>,
    query_tokens: Matrix<'py>,
    query_offsets: PyReadonlyArray1<'py, i64>,
    corpus_tokens: Matrix<'py>,
    corpus_offsets: PyReadonlyArray1<'py, i64>,
    k: usize,
    candidates: Option<Csr<'py>>,
    exclude: Option<Csr<'py>>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Scores<'py>, Ids<'py>)> {
    let queries = ragged("query tokens", &query_tokens, &query_offsets)?;
    let corpus = ragged("corpus tokens", &corpus_tokens, &corpus_offsets)?;
    let candidates = candidates.as_ref().map(Csr::slices).transpose()?;
    let exclude = exclude.as_ref().map(Csr::slices).transpose()?;
    let (nq, nc) = (queries.len(), corpus.len());
    let (scores, ids) = runtime::run(
        py,
        threads,
        progress,
        corpus_tokens.mapped(),
        |pool, hooks| {
            let lists = |what: &str, csr: Option<(&[i64], &[i64])>| {
                csr.map(|(indptr, indices)| IdLists::from_csr_named(what, indptr, indices, nq, nc))
                    .transpose()
            };
            let candidates = lists("candidates", candidates)?;
            let exclude = lists("exclude", exclude)?;
            maxsim::search(
                pool,
                &queries,
                &corpus,
                k,
                candidates.as_ref(),
                exclude.as_ref(),
                hooks,
            )
        },
    )?;
    Ok((
        PyArray1::from_vec(py, scores).reshape([nq, k])?,
        PyArray1::from_vec(py, ids).reshape([nq, k])?,
    ))
}

/// The mean of each text's token vectors (float32, `texts x dim`), unnormalised.
#[pyfunction]
#[pyo3(signature = (tokens, offsets, *, threads = None))]
fn maxsim_pooled<'py>(
    py: Python<'py>,
    tokens: Matrix<'py>,
    offsets: PyReadonlyArray1<'py, i64>,
    threads: Option<usize>,
) -> PyResult<Scores<'py>> {
    let texts = ragged("tokens", &tokens, &offsets)?;
    let (n, dim) = (texts.len(), texts.dim());
    let pooled = runtime::run(py, threads, None, tokens.mapped(), |pool, _| {
        maxsim::pooled(pool, &texts)
    })?;
    PyArray1::from_vec(py, pooled).reshape([n, dim])
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(maxsim_scores, m)?)?;
    m.add_function(wrap_pyfunction!(maxsim_search, m)?)?;
    m.add_function(wrap_pyfunction!(maxsim_pooled, m)?)?;
    Ok(())
}
