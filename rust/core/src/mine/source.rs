//! Where mining's candidates come from: the [`CandidateSource`] trait, the exact search
//! ([`ExactSource`]) and a closure-backed source ([`FnSource`], what a binding wraps around an
//! approximate index such as hnswlib's `knn_query`).
//!
//! A source only proposes *which* corpus rows a query should look at. Unless it hands over
//! exact scores ([`Candidates::with_exact_scores`], which only an exact search may do), the
//! driver ([`mine_with`](super::mine_with)) checks every id, drops duplicates and excluded
//! ids, rescores the rest exactly and ranks them itself, so an approximate source changes at
//! most which rows are seen, never a score or an order.

use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::idlists::IdLists;
use crate::matrix::MatrixView;
use crate::search::{
    search_capped, search_rows, AboveCap, Caps, Neighbors, ScoreCap, SearchInputs, SearchOptions,
    Workspace,
};

use super::options::MineOptions;

/// The candidates of a batch of queries, in CSR form: query `i` of the batch (the `i`-th of
/// the `queries` given to [`CandidateSource::fetch`]) proposes `ids[offsets[i]..offsets[i + 1]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidates {
    offsets: Vec<usize>,
    ids: Vec<i64>,
    exact_scores: Option<Vec<f32>>,
    ranked: bool,
}

impl Candidates {
    /// From CSR arrays (e.g. numpy `indptr` / `indices`). The ids of a query may come in any
    /// order, hold duplicates or excluded ids and be fewer or more than asked for; an id
    /// outside the corpus is refused by the driver, naming the query.
    pub fn from_csr(indptr: &[i64], ids: Vec<i64>) -> Result<Self> {
        let well_formed = indptr.first() == Some(&0)
            && indptr
                .last()
                .is_some_and(|&end| end as u64 == ids.len() as u64)
            && indptr.windows(2).all(|w| w[0] <= w[1]);
        if !well_formed {
            return Err(Error::invalid(format!(
                "candidate indptr must be non-decreasing from 0 to the number of ids ({})",
                ids.len()
            )));
        }
        Ok(Candidates {
            offsets: indptr.iter().map(|&o| o as usize).collect(),
            ids,
            exact_scores: None,
            ranked: false,
        })
    }

    /// `ids.len() / width` queries with `width` candidates each, row-major (a `knn_query`
    /// result as it comes).
    pub fn dense(width: usize, ids: Vec<i64>) -> Result<Self> {
        // Width 0 holds only an empty batch.
        if !ids.len().is_multiple_of(width) {
            return Err(Error::invalid(format!(
                "{} candidate ids do not make rows of {width}",
                ids.len()
            )));
        }
        let rows = ids.len().checked_div(width).unwrap_or(0);
        Ok(Candidates {
            offsets: (0..=rows).map(|i| i * width).collect(),
            ids,
            exact_scores: None,
            ranked: false,
        })
    }

    /// Declares `scores` the exact scores of the ids, bit for bit the search's, and each
    /// query's list its exact ranking (score descending, id ascending on ties) with no
    /// duplicates and no excluded id: the driver then takes the lists as they are. Only an
    /// exact search may say so; anything else must leave the scores out.
    pub fn with_exact_scores(mut self, scores: Vec<f32>) -> Result<Self> {
        if scores.len() != self.ids.len() {
            return Err(Error::invalid(format!(
                "{} exact scores for {} candidate ids",
                scores.len(),
                self.ids.len()
            )));
        }
        self.exact_scores = Some(scores);
        Ok(self)
    }

    /// Declares each query's list the ranking itself, best first (a lexical source's order):
    /// the driver still checks the ids, drops repeats (keeping the first) and excluded ids, and
    /// rescores the rest exactly for the filters, but walks them in this order instead of by
    /// score. The negatives' ranks are then ranks in the source's ranking.
    pub fn in_source_order(mut self) -> Self {
        self.ranked = true;
        self
    }

    /// Whether the lists are the source's ranking ([`Self::in_source_order`]).
    pub fn is_ranked(&self) -> bool {
        self.ranked
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids proposed for the `i`-th query of the batch.
    pub fn ids(&self, i: usize) -> &[i64] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Their exact scores, if the source declared them.
    pub fn exact_scores(&self, i: usize) -> Option<&[f32]> {
        self.exact_scores
            .as_ref()
            .map(|s| &s[self.offsets[i]..self.offsets[i + 1]])
    }
}

/// Proposes candidates for mining's queries.
pub trait CandidateSource {
    /// Candidates for `queries` (rows of the mining call's `queries`, ascending; add its
    /// `query_offset` for the global index), about `depth` per query: the `depth` best it finds
    /// *among the rows the query does not exclude*. A source that cannot leave excluded ids out
    /// should ask its index for `depth` plus the query's number of excluded ids. It may return
    /// fewer (the driver then finishes the query with the exact search if the filters need
    /// more) and ids in any order. Called on the thread that called the driver, never from
    /// its thread pool, with at most a memory budget's worth of queries at a time.
    fn fetch(
        &mut self,
        queries: &[usize],
        depth: usize,
        hooks: &mut dyn Hooks,
    ) -> Result<Candidates>;

    /// The deepest `depth` this source is worth asking for (`None`: any). Queries that need
    /// more are finished by the exact search, on the same schedule.
    fn max_depth(&self) -> Option<usize> {
        None
    }
}

/// The exact search (excluded ids left out, exact scores, ranked).
pub struct ExactSource<'a> {
    pool: &'a rayon::ThreadPool,
    queries: &'a MatrixView<'a>,
    corpus: &'a MatrixView<'a>,
    exclude: &'a IdLists,
    opts: &'a MineOptions,
    /// The global index of `queries`' first row (the mining call's `query_offset`): errors
    /// name query rows by it.
    first_query: usize,
    workspace: Workspace,
}

impl<'a> ExactSource<'a> {
    /// The search `mine` would run with these inputs and options (metric and search knobs).
    pub fn new(
        pool: &'a rayon::ThreadPool,
        queries: &'a MatrixView<'a>,
        corpus: &'a MatrixView<'a>,
        exclude: &'a IdLists,
        opts: &'a MineOptions,
        query_offset: u64,
    ) -> Self {
        ExactSource {
            pool,
            queries,
            corpus,
            exclude,
            opts,
            first_query: query_offset as usize,
            workspace: Workspace::default(),
        }
    }

    /// The global indices of the rows `queries`, which the search's errors name.
    fn names(&self, queries: &[usize]) -> Vec<usize> {
        queries.iter().map(|&q| self.first_query + q).collect()
    }

    /// The rows `queries` of the mining call's queries, as a matrix of their own.
    fn rows(&self, queries: &[usize]) -> Vec<f32> {
        let dim = self.corpus.dim();
        let mut rows = vec![0.0f32; queries.len() * dim];
        for (chunk, &q) in rows.chunks_exact_mut(dim).zip(queries) {
            self.queries.row_into(q, chunk);
        }
        rows
    }

    fn search_options(&self, depth: usize) -> SearchOptions {
        let mut sopts = SearchOptions::new(depth, self.opts.metric);
        sopts.block_rows = self.opts.block_rows;
        sopts.query_batch = self.opts.query_batch;
        sopts
    }

    /// [`CandidateSource::fetch`] under a score cap per query (`caps`, in the order of
    /// `queries`): each query's best `depth` among its rows at most its cap (`-1` pads a row
    /// with fewer), and the rows above the cap (the best `record_removed` of them kept).
    pub(super) fn fetch_capped(
        &mut self,
        queries: &[usize],
        depth: usize,
        caps: &[ScoreCap],
        hooks: &mut dyn Hooks,
    ) -> Result<(Neighbors, Vec<AboveCap>)> {
        let rows = self.rows(queries);
        let subset = MatrixView::f32(&rows, queries.len(), self.corpus.dim())?;
        let exclude = self.exclude.subset(queries);
        let sopts = self.search_options(depth);
        let caps = Caps {
            caps,
            keep: self.opts.record_removed,
        };
        let names = self.names(queries);
        let inputs = SearchInputs {
            queries: &subset,
            query_ids: Some(&names),
            corpus: self.corpus,
            exclude: Some(&exclude),
        };
        search_capped(&mut self.workspace, self.pool, inputs, &sopts, caps, hooks)
    }
}

impl CandidateSource for ExactSource<'_> {
    fn fetch(
        &mut self,
        queries: &[usize],
        depth: usize,
        hooks: &mut dyn Hooks,
    ) -> Result<Candidates> {
        let rows = self.rows(queries);
        let subset = MatrixView::f32(&rows, queries.len(), self.corpus.dim())?;
        let exclude = self.exclude.subset(queries);
        let sopts = self.search_options(depth);
        let names = self.names(queries);
        let inputs = SearchInputs {
            queries: &subset,
            query_ids: Some(&names),
            corpus: self.corpus,
            exclude: Some(&exclude),
        };
        let found = search_rows(&mut self.workspace, self.pool, inputs, &sopts, hooks)?;
        Candidates::dense(depth, found.ids)?.with_exact_scores(found.scores)
    }
}

/// A source backed by a closure `fetch(queries, depth)` with [`CandidateSource::fetch`]'s
/// contract (the hooks are not passed on).
pub struct FnSource<F> {
    fetch: F,
    max_depth: Option<usize>,
}

impl<F> FnSource<F>
where
    F: FnMut(&[usize], usize) -> Result<Candidates>,
{
    pub fn new(fetch: F) -> Self {
        FnSource {
            fetch,
            max_depth: None,
        }
    }

    /// Finishes queries that need more than `depth` candidates with the exact search.
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = Some(depth);
        self
    }
}

impl<F> CandidateSource for FnSource<F>
where
    F: FnMut(&[usize], usize) -> Result<Candidates>,
{
    fn fetch(
        &mut self,
        queries: &[usize],
        depth: usize,
        _hooks: &mut dyn Hooks,
    ) -> Result<Candidates> {
        (self.fetch)(queries, depth)
    }

    fn max_depth(&self) -> Option<usize> {
        self.max_depth
    }
}
