//! Exact BM25 top-k per query: MaxScore dynamic pruning (document at a time), or the
//! exhaustive scorer it is tested against; rayon over queries.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use super::index::{factor, Bm25Index};
use super::tokenize::tokens;
use crate::error::Result;
use crate::hooks::Hooks;
use crate::idlists::IdLists;

/// Queries scored between two progress / Ctrl-C checks.
const QUERY_BLOCK: usize = 4096;

/// A pruning bound must exceed the threshold by more than this relative slack before a
/// document is skipped: the bound sums the terms in another order than the score, and `n`
/// f64 additions of positive terms in any two orders differ by less than `n * 2^-52`
/// relative.
const BOUND_SLACK: f64 = 1e-9;

/// How [`Bm25Index::search`] finds each query's top k; both give the same result, bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pruning {
    /// MaxScore: documents are visited in id order from the lists of the "essential" terms
    /// (those whose bounds sum above the k-th score so far); the others are only probed, and
    /// only while they can still lift the document above that score.
    #[default]
    MaxScore,
    /// Every posting of every query term scored (the reference).
    Exhaustive,
}

/// The result of a search: `n_queries x width` scores and ids, row-major, each row ranked
/// (score descending, id ascending) and padded with NaN / -1 where fewer than `width`
/// documents share a term with the query.
#[derive(Clone, Debug, PartialEq)]
pub struct Hits {
    pub width: usize,
    pub scores: Vec<f64>,
    pub ids: Vec<i64>,
}

/// A query's distinct terms (those in the index), in order of first occurrence, each with its
/// weight `qtf * idf`.
struct Query {
    terms: Vec<(u32, f64)>,
}

/// One entry of a top-k heap: its `Ord` makes the worst hit (lowest score, then highest id)
/// the greatest, so a max-heap pops it first.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Hit {
    score: f64,
    id: u32,
}

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A query term's position in its postings during MaxScore.
struct Cursor<'a> {
    postings: &'a [[u32; 2]],
    at: usize,
    weight: f64,
    /// The term's largest contribution, `weight * max_factor`.
    bound: f64,
    /// Its index in the query's term order (the order scores are summed in).
    slot: usize,
}

impl Cursor<'_> {
    fn doc(&self) -> Option<u32> {
        self.postings.get(self.at).map(|p| p[0])
    }

    /// Moves to the first posting at or after `target`: galloping from the current position
    /// (probes are usually near it: a long list has a posting every few documents), then a
    /// binary search within the last step.
    fn seek(&mut self, target: u32) {
        let rest = &self.postings[self.at..];
        if rest.first().is_none_or(|p| p[0] >= target) {
            return;
        }
        // rest[low] < target throughout.
        let (mut low, mut step) = (0usize, 1usize);
        while low + step < rest.len() && rest[low + step][0] < target {
            low += step;
            step *= 2;
        }
        let high = (low + step).min(rest.len());
        self.at += low + 1 + rest[low + 1..high].partition_point(|p| p[0] < target);
    }
}

impl Bm25Index {
    fn query(&self, text: &str) -> Query {
        let mut terms: Vec<(u32, f64)> = Vec::new();
        for word in tokens(text) {
            let Some(t) = self.term_id(&word) else {
                continue;
            };
            match terms.iter_mut().find(|(u, _)| *u == t) {
                Some((_, count)) => *count += 1.0,
                None => terms.push((t, 1.0)),
            }
        }
        for (t, weight) in &mut terms {
            *weight *= self.idf_of(*t);
        }
        Query { terms }
    }

    /// Each query's best `k` documents among those it does not exclude (`exclude`: one
    /// ascending id list per query), scored and ranked as the [module docs](super) say. The
    /// result has `min(k, n_docs)` columns; it is the same for any thread count and either
    /// [`Pruning`].
    pub fn search<S: AsRef<str> + Sync>(
        &self,
        pool: &rayon::ThreadPool,
        queries: &[S],
        k: usize,
        exclude: Option<&IdLists>,
        pruning: Pruning,
        hooks: &mut dyn Hooks,
    ) -> Result<Hits> {
        if let Some(exclude) = exclude {
            if exclude.n_queries() != queries.len() {
                return Err(crate::Error::invalid(format!(
                    "exclude must have one list per query ({}), got {}",
                    queries.len(),
                    exclude.n_queries()
                )));
            }
        }
        let width = k.min(self.n_docs());
        let cells = queries.len().checked_mul(width);
        crate::memory::ensure_fits(
            cells.and_then(|c| c.checked_mul(16)).map(|b| b as u64),
            || format!("{} queries x k = {width} BM25 hits", queries.len()),
        )?;
        let cells = cells.unwrap_or(usize::MAX);
        let mut scores = vec![f64::NAN; cells];
        let mut ids = vec![-1i64; cells];
        let empty: &[u32] = &[];
        for start in (0..queries.len()).step_by(QUERY_BLOCK) {
            hooks.progress(start as u64, queries.len() as u64)?;
            let stop = (start + QUERY_BLOCK).min(queries.len());
            let rows = start * width..stop * width;
            let (score_rows, id_rows) = (&mut scores[rows.clone()], &mut ids[rows]);
            pool.install(|| {
                score_rows
                    .par_chunks_mut(width.max(1))
                    .zip(id_rows.par_chunks_mut(width.max(1)))
                    .enumerate()
                    .for_each_init(
                        // The exhaustive scorer's accumulators, allocated on its first use.
                        Vec::new,
                        |scratch, (i, (score_row, id_row))| {
                            let q = start + i;
                            let query = self.query(queries[q].as_ref());
                            let excluded = exclude.map_or(empty, |e| e.of(q));
                            let hits = match pruning {
                                Pruning::MaxScore => self.max_score(&query, width, excluded),
                                Pruning::Exhaustive => {
                                    scratch.resize(self.n_docs(), 0.0);
                                    self.exhaustive(&query, width, excluded, scratch)
                                }
                            };
                            for (j, hit) in hits.into_iter().enumerate() {
                                score_row[j] = hit.score;
                                id_row[j] = i64::from(hit.id);
                            }
                        },
                    )
            });
        }
        hooks.progress(queries.len() as u64, queries.len() as u64)?;
        Ok(Hits { width, scores, ids })
    }

    /// Every document sharing a term with the query, scored term by term in the query's order
    /// (`scratch`: one zeroed accumulator per document, left zeroed), best `k` kept.
    fn exhaustive(
        &self,
        query: &Query,
        k: usize,
        excluded: &[u32],
        scratch: &mut [f64],
    ) -> Vec<Hit> {
        let norms = self.norms();
        let mut touched: Vec<u32> = Vec::new();
        for &(t, weight) in &query.terms {
            for &[d, tf] in self.postings(t) {
                let acc = &mut scratch[d as usize];
                if *acc == 0.0 {
                    touched.push(d);
                }
                *acc += weight * factor(tf, norms[d as usize]);
            }
        }
        let mut hits: Vec<Hit> = touched
            .into_iter()
            .filter_map(|d| {
                let score = std::mem::take(&mut scratch[d as usize]);
                excluded
                    .binary_search(&d)
                    .is_err()
                    .then_some(Hit { score, id: d })
            })
            .collect();
        hits.sort_unstable();
        hits.truncate(k);
        hits
    }

    /// MaxScore (Turtle and Flood 1995, document at a time): exact top `k`, in two passes
    /// over the same state. The first scores the documents of the terms with the largest
    /// bounds (the fewest: enough to fill the heap, see [`SEED_SHARE`]), so that the second,
    /// the plain walk over every document, starts from a k-th score near the final one and
    /// makes most terms non-essential at once, instead of raising it over the first
    /// thousands of documents in id order. The second skips what the first scored.
    fn max_score(&self, query: &Query, k: usize, excluded: &[u32]) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let mut cursors: Vec<Cursor<'_>> = query
            .terms
            .iter()
            .enumerate()
            .map(|(slot, &(t, weight))| Cursor {
                postings: self.postings(t),
                at: 0,
                weight,
                bound: weight * self.max_factor_of(t),
                slot,
            })
            .collect();
        // Bounds ascending: the non-essential terms are a prefix.
        cursors.sort_by(|a, b| a.bound.total_cmp(&b.bound).then(a.slot.cmp(&b.slot)));
        let mut walk = Walk::new(cursors, k, self.norms());
        // The seed: the fewest lists, from the largest bound down, holding k postings.
        let mut seeds = 0usize;
        let mut postings = 0usize;
        for c in walk.cursors.iter().rev() {
            if postings >= k {
                break;
            }
            postings += c.postings.len();
            seeds += 1;
        }
        let n = walk.cursors.len();
        if seeds < n && postings >= k && postings <= self.n_docs() / SEED_SHARE {
            walk.run(n - seeds, excluded, &[]);
            let mut seen: Vec<u32> = walk.cursors[n - seeds..]
                .iter()
                .flat_map(|c| c.postings.iter().map(|p| p[0]))
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for c in &mut walk.cursors {
                c.at = 0;
            }
            walk.run(0, excluded, &seen);
        } else {
            walk.run(0, excluded, &[]);
        }
        let mut hits = walk.heap.into_vec();
        hits.sort_unstable();
        hits
    }
}

/// The seed pass of [`Bm25Index::max_score`] runs only when its lists hold at most this
/// fraction (`1 / SEED_SHARE`) of the documents: beyond, it would cost about as much as the
/// walk it shortens.
const SEED_SHARE: usize = 8;

/// The state of a MaxScore walk: the query's cursors (bounds ascending), the best hits so
/// far and the k-th score they set.
struct Walk<'a> {
    cursors: Vec<Cursor<'a>>,
    /// `upto[i]`: the bound of a document matching only terms `0..i`.
    upto: Vec<f64>,
    contributions: Vec<Option<f64>>,
    heap: BinaryHeap<Hit>,
    k: usize,
    /// The k-th best score once the heap is full (every document can enter until then).
    threshold: f64,
    norms: &'a [f64],
}

/// Whether a document whose score is at most `bound` cannot reach `threshold`: compared with
/// a relative slack (the bound sums its terms in another order than the score), so that a
/// pruned document scores strictly below the k-th score and never ties it.
fn below(bound: f64, threshold: f64) -> bool {
    bound * (1.0 + BOUND_SLACK) <= threshold
}

impl<'a> Walk<'a> {
    fn new(cursors: Vec<Cursor<'a>>, k: usize, norms: &'a [f64]) -> Self {
        let mut upto = vec![0.0f64; cursors.len() + 1];
        for (i, c) in cursors.iter().enumerate() {
            upto[i + 1] = upto[i] + c.bound;
        }
        Walk {
            contributions: vec![None; cursors.len()],
            cursors,
            upto,
            heap: BinaryHeap::with_capacity(k + 1),
            k,
            threshold: f64::NEG_INFINITY,
            norms,
        }
    }

    /// The first term that is essential now: those before it cannot lift a document to the
    /// k-th score on their own.
    fn essential(&self, from: usize) -> usize {
        let mut essential = from;
        while essential < self.cursors.len() && below(self.upto[essential + 1], self.threshold) {
            essential += 1;
        }
        essential
    }

    /// Visits, in id order, the documents of the essential lists (never fewer than the
    /// lists from `first` on), skipping `excluded` and `seen` (ascending: documents already
    /// scored), and keeps the best `k`.
    fn run(&mut self, first: usize, excluded: &[u32], seen: &[u32]) {
        let norms = self.norms;
        let mut essential = self.essential(first);
        let mut excluded = excluded.iter().peekable();
        let mut seen = seen.iter().peekable();
        while let Some(doc) = self.cursors[essential..]
            .iter()
            .filter_map(Cursor::doc)
            .min()
        {
            while excluded.next_if(|&&e| e < doc).is_some() {}
            while seen.next_if(|&&e| e < doc).is_some() {}
            if excluded.peek().is_some_and(|&&e| e == doc)
                || seen.peek().is_some_and(|&&e| e == doc)
            {
                for c in &mut self.cursors[essential..] {
                    if c.doc() == Some(doc) {
                        c.at += 1;
                    }
                }
                continue;
            }
            let mut partial = 0.0f64;
            for c in &mut self.cursors[essential..] {
                if c.doc() == Some(doc) {
                    let part = c.weight * factor(c.postings[c.at][1], norms[doc as usize]);
                    self.contributions[c.slot] = Some(part);
                    partial += part;
                    c.at += 1;
                }
            }
            let mut pruned = false;
            for i in (0..essential).rev() {
                if below(partial + self.upto[i + 1], self.threshold) {
                    pruned = true;
                    break;
                }
                let c = &mut self.cursors[i];
                c.seek(doc);
                if c.doc() == Some(doc) {
                    let part = c.weight * factor(c.postings[c.at][1], norms[doc as usize]);
                    self.contributions[c.slot] = Some(part);
                    partial += part;
                }
            }
            // The score proper: summed in the query's term order, like every scorer's.
            let mut score = 0.0f64;
            for part in &mut self.contributions {
                if let Some(p) = part.take() {
                    score += p;
                }
            }
            let hit = Hit { score, id: doc };
            // A pass may visit ids below the heap's (after the seed): compare as the ranking
            // does, score then id.
            if pruned || (self.heap.len() == self.k && self.heap.peek().is_some_and(|w| hit >= *w))
            {
                continue;
            }
            self.heap.push(hit);
            if self.heap.len() > self.k {
                self.heap.pop();
            }
            if self.heap.len() == self.k {
                self.threshold = self.heap.peek().map_or(f64::NEG_INFINITY, |h| h.score);
                essential = self.essential(essential);
            }
        }
    }
}
