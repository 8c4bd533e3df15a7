//! `Bm25Index` (the lexical index of `backend="bm25"`) and `bm25_tokenize`.

use std::sync::Arc;

use negmine_core::lexical::{self, Bm25Index, Bm25Params, Pruning};
use negmine_core::IdLists;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::errors::PyResultExt;
use crate::inputs::Csr;
use crate::runtime;

type Scores<'py> = Bound<'py, PyArray2<f64>>;
type Ids<'py> = Bound<'py, PyArray2<i64>>;

/// A BM25 inverted index over a corpus of texts (see `negmine_core::lexical`).
#[pyclass(frozen, name = "Bm25Index", module = "negmine._core")]
pub struct PyBm25Index(Arc<Bm25Index>);

#[pymethods]
impl PyBm25Index {
    #[new]
    #[pyo3(signature = (texts, *, k1 = 1.5, b = 0.75, threads = None, progress = None))]
    fn new(
        py: Python<'_>,
        texts: Vec<String>,
        k1: f64,
        b: f64,
        threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let params = Bm25Params { k1, b };
        params.validate().py_err()?;
        let index = runtime::run(py, threads, progress, None, |pool, hooks| {
            Bm25Index::build(pool, &texts, params, hooks)
        })?;
        Ok(PyBm25Index(Arc::new(index)))
    }

    /// Each query's best `k` documents (scores descending, ids ascending on ties) among those
    /// it does not `exclude` (a CSR pair, one list per query); rows padded with NaN / -1 where
    /// fewer documents share a term with the query. `exhaustive=True` scores every posting
    /// instead of pruning (the reference; the same result).
    #[pyo3(signature = (queries, k, *, exclude = None, exhaustive = false, threads = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<String>,
        k: usize,
        exclude: Option<Csr<'py>>,
        exhaustive: bool,
        threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(Scores<'py>, Ids<'py>)> {
        let exclude = exclude.as_ref().map(Csr::slices).transpose()?;
        let index = self.0.clone();
        let pruning = if exhaustive {
            Pruning::Exhaustive
        } else {
            Pruning::MaxScore
        };
        let n_queries = queries.len();
        let hits = runtime::run(py, threads, progress, None, |pool, hooks| {
            let exclude = exclude
                .map(|(indptr, indices)| {
                    IdLists::from_csr_named("exclude", indptr, indices, n_queries, index.n_docs())
                })
                .transpose()?;
            index.search(pool, &queries, k, exclude.as_ref(), pruning, hooks)
        })?;
        let shape = [n_queries, hits.width];
        Ok((
            PyArray1::from_vec(py, hits.scores).reshape(shape)?,
            PyArray1::from_vec(py, hits.ids).reshape(shape)?,
        ))
    }

    /// The idf of `term` (a token as `bm25_tokenize` gives it), or None if no document has it.
    fn idf(&self, term: &str) -> Option<f64> {
        self.0.idf(term)
    }

    #[getter]
    fn n_docs(&self) -> usize {
        self.0.n_docs()
    }

    #[getter]
    fn n_terms(&self) -> usize {
        self.0.n_terms()
    }

    #[getter]
    fn n_postings(&self) -> usize {
        self.0.n_postings()
    }

    #[getter]
    fn avgdl(&self) -> f64 {
        self.0.avgdl()
    }

    #[getter]
    fn k1(&self) -> f64 {
        self.0.params().k1
    }

    #[getter]
    fn b(&self) -> f64 {
        self.0.params().b
    }

    fn __repr__(&self) -> String {
        format!(
            "Bm25Index(n_docs={}, n_terms={}, k1={}, b={})",
            self.0.n_docs(),
            self.0.n_terms(),
            self.0.params().k1,
            self.0.params().b
        )
    }
}

/// The tokens the BM25 index sees in `text`: runs of Unicode alphanumerics, lowercased.
#[pyfunction]
fn bm25_tokenize(text: &str) -> Vec<String> {
    lexical::tokens(text).collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBm25Index>()?;
    m.add_function(wrap_pyfunction!(bm25_tokenize, m)?)?;
    Ok(())
}
