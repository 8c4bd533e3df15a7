//! The inverted index: postings per term (document ids ascending, with their term counts),
//! each document's length norm and each term's idf and largest per-document factor (the
//! bound MaxScore prunes with).

use std::collections::HashMap;

use rayon::prelude::*;

use super::tokenize::tokens;
use crate::error::{Error, Result};
use crate::hooks::Hooks;

/// Documents tokenised at once while building: bounds the token lists held.
const BUILD_BLOCK: usize = 16_384;

/// BM25's free parameters (bm25s' defaults: `k1 = 1.5`, `b = 0.75`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bm25Params {
    pub k1: f64,
    pub b: f64,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.5, b: 0.75 }
    }
}

impl Bm25Params {
    pub fn validate(&self) -> Result<()> {
        if !(self.k1.is_finite() && self.k1 >= 0.0) {
            return Err(Error::invalid(format!(
                "k1 must be a finite number >= 0, got {}",
                self.k1
            )));
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(Error::invalid(format!(
                "b must be in [0, 1], got {}",
                self.b
            )));
        }
        Ok(())
    }
}

/// A BM25 index over a corpus of texts (see the [module docs](super) for the formula).
#[derive(Clone, Debug)]
pub struct Bm25Index {
    pub(super) params: Bm25Params,
    pub(super) vocabulary: HashMap<String, u32>,
    /// Per term: `ln(1 + (N - df + 0.5) / (df + 0.5))`.
    pub(super) idf: Vec<f64>,
    /// Per term: the largest `tf / (tf + norm(d))` over its postings.
    pub(super) max_factor: Vec<f64>,
    /// Term `t`'s postings are `docs[offsets[t]..offsets[t + 1]]` (ascending) and `tfs` alike.
    pub(super) offsets: Vec<usize>,
    pub(super) docs: Vec<u32>,
    pub(super) tfs: Vec<u32>,
    /// Per document: `k1 * (1 - b + b * dl / avgdl)`.
    pub(super) norms: Vec<f64>,
    pub(super) avgdl: f64,
}

impl Bm25Index {
    /// Indexes `texts` (document `i` is `texts[i]`), tokenising them on `pool`. Term ids are
    /// given in order of first occurrence, so the index is the same for any thread count.
    pub fn build<S: AsRef<str> + Sync>(
        pool: &rayon::ThreadPool,
        texts: &[S],
        params: Bm25Params,
        hooks: &mut dyn Hooks,
    ) -> Result<Self> {
        params.validate()?;
        let n_docs = texts.len();
        if u32::try_from(n_docs).is_err() {
            return Err(Error::invalid(format!(
                "a BM25 index holds at most {} documents, got {n_docs}",
                u32::MAX
            )));
        }
        let mut vocabulary: HashMap<String, u32> = HashMap::new();
        // Each document's distinct terms with their counts, term ascending, one after another.
        let mut doc_terms: Vec<(u32, u32)> = Vec::new();
        let mut doc_offsets: Vec<usize> = Vec::with_capacity(n_docs + 1);
        doc_offsets.push(0);
        let mut lengths: Vec<u64> = Vec::with_capacity(n_docs);
        for (block, chunk) in texts.chunks(BUILD_BLOCK).enumerate() {
            hooks.progress((block * BUILD_BLOCK) as u64, n_docs as u64)?;
            let tokenised: Vec<Vec<String>> = pool.install(|| {
                chunk
                    .par_iter()
                    .map(|text| tokens(text.as_ref()).collect())
                    .collect()
            });
            for words in tokenised {
                lengths.push(words.len() as u64);
                let mut ids: Vec<u32> = Vec::with_capacity(words.len());
                for word in words {
                    let next = vocabulary.len() as u32;
                    ids.push(*vocabulary.entry(word).or_insert(next));
                }
                ids.sort_unstable();
                for run in ids.chunk_by(|a, b| a == b) {
                    doc_terms.push((run[0], run.len() as u32));
                }
                doc_offsets.push(doc_terms.len());
            }
        }
        hooks.progress(n_docs as u64, n_docs as u64)?;
        let n_terms = vocabulary.len();
        let total: u64 = lengths.iter().sum();
        let avgdl = if n_docs == 0 {
            0.0
        } else {
            total as f64 / n_docs as f64
        };
        let Bm25Params { k1, b } = params;
        // With no token anywhere there are no postings, and no norm is ever read.
        let norms: Vec<f64> = lengths
            .iter()
            .map(|&dl| {
                if avgdl > 0.0 {
                    k1 * (1.0 - b + b * dl as f64 / avgdl)
                } else {
                    k1
                }
            })
            .collect();
        // Postings by counting sort: documents are visited in order, so each list ascends.
        let mut offsets = vec![0usize; n_terms + 1];
        for &(t, _) in &doc_terms {
            offsets[t as usize + 1] += 1;
        }
        for t in 0..n_terms {
            offsets[t + 1] += offsets[t];
        }
        let mut fill = offsets.clone();
        let mut docs = vec![0u32; doc_terms.len()];
        let mut tfs = vec![0u32; doc_terms.len()];
        let mut max_factor = vec![0.0f64; n_terms];
        for d in 0..n_docs {
            for &(t, tf) in &doc_terms[doc_offsets[d]..doc_offsets[d + 1]] {
                let slot = &mut fill[t as usize];
                docs[*slot] = d as u32;
                tfs[*slot] = tf;
                *slot += 1;
                let factor = factor(tf, norms[d]);
                let best = &mut max_factor[t as usize];
                *best = best.max(factor);
            }
        }
        let n = n_docs as f64;
        let idf = (0..n_terms)
            .map(|t| {
                let df = (offsets[t + 1] - offsets[t]) as f64;
                (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
            })
            .collect();
        Ok(Bm25Index {
            params,
            vocabulary,
            idf,
            max_factor,
            offsets,
            docs,
            tfs,
            norms,
            avgdl,
        })
    }

    pub fn params(&self) -> Bm25Params {
        self.params
    }

    /// Number of documents indexed.
    pub fn n_docs(&self) -> usize {
        self.norms.len()
    }

    /// Number of distinct terms.
    pub fn n_terms(&self) -> usize {
        self.idf.len()
    }

    /// Number of (term, document) postings.
    pub fn n_postings(&self) -> usize {
        self.docs.len()
    }

    /// The mean document length in tokens.
    pub fn avgdl(&self) -> f64 {
        self.avgdl
    }

    /// The idf of `term` (a token as [`tokens`] gives it), if it occurs in the corpus.
    pub fn idf(&self, term: &str) -> Option<f64> {
        self.vocabulary.get(term).map(|&t| self.idf[t as usize])
    }

    pub(super) fn postings(&self, term: u32) -> (&[u32], &[u32]) {
        let range = self.offsets[term as usize]..self.offsets[term as usize + 1];
        (&self.docs[range.clone()], &self.tfs[range])
    }
}

/// A posting's term-frequency factor, `tf / (tf + norm)`.
#[inline]
pub(super) fn factor(tf: u32, norm: f64) -> f64 {
    let tf = f64::from(tf);
    tf / (tf + norm)
}
