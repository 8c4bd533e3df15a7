//! Per-row lists of corpus ids in CSR form (exclusions, positives).

use crate::error::{Error, Result};

/// Per-row lists of corpus ids (CSR, each list sorted and without duplicates): the ids a query
/// must never get back, or its positives.
#[derive(Debug, Clone, Default)]
pub struct IdLists {
    offsets: Vec<usize>,
    ids: Vec<u32>,
}

/// Checks a per-query CSR layout of `n_queries` rows over `n_indices` entries, naming it
/// `what`: `n_queries + 1` entries from 0 to `n_indices`, non-decreasing.
pub(crate) fn check_csr(
    what: &str,
    indptr: &[i64],
    n_indices: usize,
    n_queries: usize,
) -> Result<()> {
    if indptr.len() != n_queries + 1 {
        return Err(Error::invalid(format!(
            "{what} indptr must have n_queries + 1 = {} entries, got {}",
            n_queries + 1,
            indptr.len()
        )));
    }
    if indptr[0] != 0 || indptr[n_queries] as u64 != n_indices as u64 {
        return Err(Error::invalid(format!(
            "{what} indptr must start at 0 and end at len(indices) = {n_indices}, got {} .. {}",
            indptr[0], indptr[n_queries]
        )));
    }
    if let Some(q) = (0..n_queries).find(|&q| indptr[q + 1] < indptr[q]) {
        return Err(Error::invalid(format!(
            "{what} indptr must be non-decreasing, but indptr[{q}] = {} > indptr[{}] = {}",
            indptr[q],
            q + 1,
            indptr[q + 1]
        )));
    }
    Ok(())
}

impl IdLists {
    /// From CSR arrays: query `q` excludes `indices[indptr[q]..indptr[q + 1]]`.
    pub fn from_csr(
        indptr: &[i64],
        indices: &[i64],
        n_queries: usize,
        n_corpus: usize,
    ) -> Result<Self> {
        Self::from_csr_named("exclude", indptr, indices, n_queries, n_corpus)
    }

    /// As [`IdLists::from_csr`], naming the argument `what` in errors.
    pub fn from_csr_named(
        what: &str,
        indptr: &[i64],
        indices: &[i64],
        n_queries: usize,
        n_corpus: usize,
    ) -> Result<Self> {
        check_csr(what, indptr, indices.len(), n_queries)?;
        let mut offsets = Vec::with_capacity(n_queries + 1);
        let mut ids = Vec::with_capacity(indices.len());
        offsets.push(0);
        for q in 0..n_queries {
            let (lo, hi) = (indptr[q], indptr[q + 1]);
            let start = ids.len();
            for &id in &indices[lo as usize..hi as usize] {
                if id < 0 || id as u64 >= n_corpus as u64 {
                    return Err(Error::invalid(format!(
                        "{what} id {id} for query {q} is out of range for a corpus of {n_corpus} rows"
                    )));
                }
                ids.push(id as u32);
            }
            ids[start..].sort_unstable();
            let mut end = start;
            for i in start..ids.len() {
                if i == start || ids[i] != ids[end - 1] {
                    ids[end] = ids[i];
                    end += 1;
                }
            }
            ids.truncate(end);
            offsets.push(ids.len());
        }
        Ok(IdLists { offsets, ids })
    }

    pub fn n_queries(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The ids of query `q`, sorted.
    pub fn of(&self, q: usize) -> &[u32] {
        &self.ids[self.offsets[q]..self.offsets[q + 1]]
    }

    /// Lists for the given rows only, in that order.
    pub fn subset(&self, rows: &[usize]) -> IdLists {
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        let mut ids = Vec::new();
        offsets.push(0);
        for &q in rows {
            ids.extend_from_slice(self.of(q));
            offsets.push(ids.len());
        }
        IdLists { offsets, ids }
    }

    /// Total number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
