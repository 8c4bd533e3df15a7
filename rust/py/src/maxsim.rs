//! `maxsim_scores`, `maxsim_search` and `maxsim_pooled`: late-interaction scores over ragged
//! token embeddings (see `negmine_core::maxsim`). Each text set travels as a token matrix
//! (array or mapped `Embeddings`) and its int64 offsets: to the scoring functions as one pair
//! `(tokens, offsets)`, [`Texts`].

use negmine_core::maxsim::{self, Ragged};
use negmine_core::store::MappedMatrix;
use negmine_core::IdLists;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{InvalidArgumentError, InvalidTypeError, PyResultExt};
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

/// One set of texts as a pair `(tokens, offsets)`: the token matrix (array or mapped
/// `Embeddings`) and its int64 offsets, text `t` owning rows `offsets[t]..offsets[t + 1]`.
struct Texts<'py> {
    tokens: Matrix<'py>,
    offsets: PyReadonlyArray1<'py, i64>,
}

impl<'py> FromPyObject<'_, 'py> for Texts<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let Ok(pair) = obj.cast::<PyTuple>() else {
            return Err(InvalidTypeError::new_err(format!(
                "expected a pair (tokens, offsets), got {}",
                obj.get_type().name()?
            )));
        };
        if pair.len() != 2 {
            return Err(InvalidArgumentError::new_err(format!(
                "expected tokens and offsets given together, as a pair; got a tuple of {}",
                pair.len()
            )));
        }
        let tokens = pair.get_item(0)?.extract()?;
        let offsets = pair.get_item(1)?;
        let offsets = offsets.extract().or_else(|_| {
            Err(InvalidTypeError::new_err(format!(
                "expected a 1-D int64 numpy array as offsets, got {}",
                offsets.get_type().name()?
            )))
        })?;
        Ok(Texts { tokens, offsets })
    }
}

impl<'py> Texts<'py> {
    /// The texts as the core reads them (`what` names them in errors).
    fn ragged(&self, what: &str) -> PyResult<Ragged<'_>> {
        ragged(what, &self.tokens, &self.offsets)
    }

    /// The mapped file behind the tokens, whose pages the work may advise the kernel about.
    fn mapped(&self) -> Option<&MappedMatrix> {
        self.tokens.mapped()
    }

    fn py(&self) -> Python<'py> {
        self.offsets.py()
    }
}

/// The MaxSim of each pair `(query_ids[i], corpus_ids[i])`, float32, in the order given.
#[pyfunction]
#[pyo3(signature = (queries, corpus, query_ids, corpus_ids, *, threads = None, progress = None))]
fn maxsim_scores<'py>(
    queries: Texts<'py>,
    corpus: Texts<'py>,
    query_ids: PyReadonlyArray1<'py, i64>,
    corpus_ids: PyReadonlyArray1<'py, i64>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let py = queries.py();
    let (query_texts, corpus_texts) = (
        queries.ragged("query tokens")?,
        corpus.ragged("corpus tokens")?,
    );
    let (qi, ci) = (
        offsets(&query_ids, "query_ids")?,
        offsets(&corpus_ids, "corpus_ids")?,
    );
    let scores = runtime::run(py, threads, progress, corpus.mapped(), |pool, hooks| {
        maxsim::score_pairs(pool, &query_texts, &corpus_texts, qi, ci, hooks)
    })?;
    Ok(PyArray1::from_vec(py, scores))
}

/// Each query's `k` best corpus texts by MaxSim (score descending, smaller id on ties) among
/// its `candidates` (a CSR pair; all texts without it), leaving out `exclude`; padded with
/// `-inf` / `-1`.
#[pyfunction]
#[pyo3(signature = (
    queries, corpus, k, *, candidates = None, exclude = None, threads = None, progress = None
))]
fn maxsim_search<'py>(
    queries: Texts<'py>,
    corpus: Texts<'py>,
    k: usize,
    candidates: Option<Csr<'py>>,
    exclude: Option<Csr<'py>>,
    threads: Option<usize>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Scores<'py>, Ids<'py>)> {
    let py = queries.py();
    let (query_texts, corpus_texts) = (
        queries.ragged("query tokens")?,
        corpus.ragged("corpus tokens")?,
    );
    let candidates = candidates.as_ref().map(Csr::slices).transpose()?;
    let exclude = exclude.as_ref().map(Csr::slices).transpose()?;
    let (nq, nc) = (query_texts.len(), corpus_texts.len());
    let (scores, ids) = runtime::run(py, threads, progress, corpus.mapped(), |pool, hooks| {
        let lists = |what: &str, csr: Option<(&[i64], &[i64])>| {
            csr.map(|(indptr, indices)| IdLists::from_csr_named(what, indptr, indices, nq, nc))
                .transpose()
        };
        let candidates = lists("candidates", candidates)?;
        let exclude = lists("exclude", exclude)?;
        maxsim::search(
            pool,
            &query_texts,
            &corpus_texts,
            k,
            candidates.as_ref(),
            exclude.as_ref(),
            hooks,
        )
    })?;
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
