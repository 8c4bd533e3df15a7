//! `Bm25Index` (the lexical index of `backend="bm25"`) and `bm25_tokenize`.

use std::path::PathBuf;
use std::sync::Arc;

use negmine_core::lexical::{self, Bm25Index, Bm25Params, Pruning, KEY_LEN};
use negmine_core::{Error, IdLists};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use crate::errors::PyResultExt;
use crate::inputs::Csr;
use crate::runtime;
use crate::store::checked_path;

/// A content key given as bytes: exactly `KEY_LEN` of them (a SHA-256 digest).
fn key_of(key: Option<&[u8]>) -> PyResult<Option<[u8; KEY_LEN]>> {
    key.map(|k| {
        <[u8; KEY_LEN]>::try_from(k)
            .map_err(|_| Error::invalid(format!("key must be {KEY_LEN} bytes, got {}", k.len())))
    })
    .transpose()
    .py_err()
}

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

    /// Opens an index written by `save`: validated whole, then memory-mapped (read as searches
    /// need it). With `key`, the file must have been saved with that key, else it is stale.
    /// A corrupt, truncated or stale file raises `FormatError` naming the file.
    #[staticmethod]
    #[pyo3(signature = (path, *, key = None))]
    fn open(py: Python<'_>, path: PathBuf, key: Option<&[u8]>) -> PyResult<Self> {
        let path = checked_path(path)?;
        let key = key_of(key)?;
        let index = runtime::run_plain(py, || Bm25Index::open(&path, key.as_ref()))?;
        Ok(PyBm25Index(Arc::new(index)))
    }

    /// Writes the index to `path` atomically, with `key` (32 bytes, e.g. a SHA-256 digest of
    /// what it was built from) in its header for `open` to check.
    #[pyo3(signature = (path, *, key = None))]
    fn save(&self, py: Python<'_>, path: PathBuf, key: Option<&[u8]>) -> PyResult<()> {
        let path = checked_path(path)?;
        let key = key_of(key)?.unwrap_or([0; KEY_LEN]);
        let index = self.0.clone();
        runtime::run_plain(py, || index.save(&path, &key))
    }

    /// The key the index was saved with (`None` for an index built here, or saved without).
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, pyo3::types::PyBytes>> {
        let key = self.0.key();
        (key != [0; KEY_LEN]).then(|| pyo3::types::PyBytes::new(py, &key))
    }

    /// Whether the index is a mapped file (`open`) rather than built in memory.
    #[getter]
    fn mapped(&self) -> bool {
        self.0.is_mapped()
    }

    /// The index's size in bytes (its file's length).
    #[getter]
    fn nbytes(&self) -> usize {
        self.0.size_in_bytes()
    }

    /// Each query's best `k` documents (scores descending, ids ascending on ties) among those
    /// it does not `exclude` (a CSR pair, one list per query); rows padded with NaN / -1 where
    /// fewer documents share a term with the query. `exhaustive=True` scores every posting
    /// instead of pruning (the reference; the same result).
    #[pyo3(signature = (queries, k, *, exclude = None, exhaustive = false, threads = None, progress = None))]
    fn search<'py>(
        slf: &Bound<'py, Self>,
        queries: Vec<String>,
        k: usize,
        exclude: Option<Csr<'py>>,
        exhaustive: bool,
        threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(Scores<'py>, Ids<'py>)> {
        let py = slf.py();
        let exclude = exclude.as_ref().map(Csr::slices).transpose()?;
        let index = slf.get().0.clone();
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
            "Bm25Index(n_docs={}, n_terms={}, k1={}, b={}, mapped={})",
            self.0.n_docs(),
            self.0.n_terms(),
            self.0.params().k1,
            self.0.params().b,
            if self.0.is_mapped() { "True" } else { "False" }
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
