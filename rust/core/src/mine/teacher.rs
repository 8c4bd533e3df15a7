//! A teacher's judgement in mining: a second scorer (a cross-encoder, a larger embedding
//! model; RocketQA's denoising, NV-Retriever's teacher) whose scores the score filters read in
//! place of the retriever's.
//!
//! The retriever still ranks: the candidates, their order, the window and the sampling are
//! its. The teacher scores every candidate of a query's ranking before the walk reads it (the
//! rows the filters and the window may look at, fetched round by round; a deeper round asks
//! only for the rows not judged yet), and `max_score`, `min_score`, `absolute_margin` and
//! `relative_margin` then compare the teacher's score of the candidate with the teacher's
//! scores of the query's positives, which the caller supplies (so that a threshold derived
//! from all positives, e.g. a percentile, does not depend on how queries are chunked).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Scores pairs of (global query index, corpus id).
pub trait Teacher {
    /// The scores of the pairs `(queries[i], ids[i])`, one per pair, in their order;
    /// `queries` are global query indices (the mining call's `query_offset` plus the row).
    fn judge(&mut self, queries: &[u64], ids: &[u32]) -> Result<Vec<f32>>;
}

/// A [`Teacher`] backed by a closure (what a binding wraps around a Python callable).
pub struct FnTeacher<F>(pub F);

impl<F: FnMut(&[u64], &[u32]) -> Result<Vec<f32>>> Teacher for FnTeacher<F> {
    fn judge(&mut self, queries: &[u64], ids: &[u32]) -> Result<Vec<f32>> {
        (self.0)(queries, ids)
    }
}

/// A teacher and its scores of the call's positives (one per id of `positives`, in order).
pub struct Judging<'a> {
    pub teacher: &'a mut dyn Teacher,
    pub positive_scores: &'a [f32],
}

/// The teacher's scores of each query's candidates seen so far, by id.
pub(super) struct Judged {
    scores: Vec<HashMap<u32, f32>>,
}

impl Judged {
    pub(super) fn new(n_queries: usize) -> Self {
        Judged {
            scores: (0..n_queries).map(|_| HashMap::new()).collect(),
        }
    }

    /// Judges the rows of `rankings` (of the queries `part`) not judged yet, in one call.
    pub(super) fn judge(
        &mut self,
        teacher: &mut dyn Teacher,
        query_offset: u64,
        part: &[usize],
        rankings: &[Vec<(f32, u32)>],
    ) -> Result<()> {
        let (mut queries, mut ids) = (Vec::new(), Vec::new());
        for (&q, ranking) in part.iter().zip(rankings) {
            for &(_, id) in ranking {
                if !self.scores[q].contains_key(&id) {
                    queries.push(q);
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let global: Vec<u64> = queries.iter().map(|&q| query_offset + q as u64).collect();
        let scores = teacher.judge(&global, &ids)?;
        if scores.len() != ids.len() {
            return Err(Error::invalid(format!(
                "the teacher returned {} scores for {} pairs",
                scores.len(),
                ids.len()
            )));
        }
        for ((&q, &id), &score) in queries.iter().zip(&ids).zip(&scores) {
            if !score.is_finite() {
                return Err(Error::invalid(format!(
                    "the teacher scored corpus row {id} for query {} as {score}",
                    query_offset + q as u64
                )));
            }
            self.scores[q].insert(id, score);
        }
        Ok(())
    }

    /// How many of query `q`'s candidates were judged.
    pub(super) fn count(&self, q: usize) -> u32 {
        self.scores[q].len() as u32
    }

    /// The teacher's scores of `ranking` (query `q`'s, all judged).
    pub(super) fn of(&self, q: usize, ranking: &[(f32, u32)]) -> Vec<f32> {
        ranking.iter().map(|(_, id)| self.scores[q][id]).collect()
    }
}
