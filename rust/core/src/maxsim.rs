//! Late-interaction (ColBERT-style) scores over ragged token embeddings:
//! `maxsim(q, d) = sum over q's tokens t of max over d's tokens u of t . u`.
//!
//! Each token dot product is the f32 kernels' fused multiply-add chain over the dimensions in
//! increasing order ([`kernels::tile`], so bit for bit the same on every ISA); the maxima are
//! exact, and they are summed in f64 in query-token order and rounded once to f32. Every score
//! is computed by one thread from start to end, so results never depend on the thread count,
//! the batch size or the CPU, and [`reference`] (plain loops) gives the same bits.

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::idlists::IdLists;
use crate::kernels::{self, Isa, RowsOut, MR, NR};
use crate::matrix::{Elements, MatrixView};
use crate::memory;
use crate::metric::score_limit;
use crate::pack::{self, AlignedBuf};

/// Token embeddings of many texts: one matrix of token rows, text `i` owning rows
/// `offsets[i]..offsets[i + 1]`.
#[derive(Clone, Copy)]
pub struct Ragged<'a> {
    tokens: MatrixView<'a>,
    offsets: &'a [i64],
}

impl<'a> Ragged<'a> {
    /// Checks `offsets` against `tokens`: `offsets[0] == 0`, every text has at least one token
    /// (offsets strictly increasing: an empty text has no MaxSim), the last offset is the
    /// number of token rows. `what` names the argument in errors.
    pub fn new(what: &str, tokens: MatrixView<'a>, offsets: &'a [i64]) -> Result<Self> {
        let rows = tokens.rows();
        let Some((&first, _)) = offsets.split_first() else {
            return Err(Error::invalid(format!(
                "{what} offsets must hold n_texts + 1 entries, got an empty array"
            )));
        };
        if first != 0 {
            return Err(Error::invalid(format!(
                "{what} offsets must start at 0, got {first}"
            )));
        }
        for (i, pair) in offsets.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                let problem = if pair[1] == pair[0] {
                    "has no tokens".to_string()
                } else {
                    "has a negative token count".to_string()
                };
                return Err(Error::invalid(format!(
                    "{what} text {i} {problem}: offsets[{i}] = {}, offsets[{}] = {} (offsets \
                     must increase strictly)",
                    pair[0],
                    i + 1,
                    pair[1]
                )));
            }
        }
        let last = *offsets.last().expect("offsets is not empty");
        if last as u64 != rows as u64 {
            return Err(Error::invalid(format!(
                "{what} offsets end at {last} but the token matrix has {rows} rows"
            )));
        }
        Ok(Ragged { tokens, offsets })
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.tokens.dim()
    }

    pub fn tokens(&self) -> &MatrixView<'a> {
        &self.tokens
    }

    /// The token rows of text `i`.
    pub fn range(&self, i: usize) -> Range<usize> {
        self.offsets[i] as usize..self.offsets[i + 1] as usize
    }

    /// The text holding token row `row`.
    fn text_of(&self, row: usize) -> usize {
        self.offsets.partition_point(|&o| o as u64 <= row as u64) - 1
    }

    /// The largest squared token norm; an error naming the first token that is not finite.
    fn largest_squared_norm(&self, what: &str, pool: &rayon::ThreadPool) -> Result<f64> {
        self.tokens
            .largest_row_norm_in(pool)
            .map(|(_, squared)| squared)
            .map_err(|row| {
                let text = self.text_of(row);
                Error::invalid(format!(
                    "{what} token row {row} (text {text}, token {}) contains NaN or infinity",
                    row - self.offsets[text] as usize
                ))
            })
    }
}

/// Checks that `queries` and `corpus` can be scored: same dimension, finite tokens, and norms
/// small enough that no token dot product can overflow f32 (the rule of
/// [`crate::metric::score_limit`], applied to the largest norms of each side).
fn check_pair(pool: &rayon::ThreadPool, queries: &Ragged<'_>, corpus: &Ragged<'_>) -> Result<()> {
    if queries.dim() != corpus.dim() {
        return Err(Error::invalid(format!(
            "query tokens have dimension {} but corpus tokens have {}",
            queries.dim(),
            corpus.dim()
        )));
    }
    let q = queries.largest_squared_norm("query tokens", pool)?;
    let c = corpus.largest_squared_norm("corpus tokens", pool)?;
    let limit = score_limit(queries.dim());
    if q.sqrt() * c.sqrt() >= limit {
        return Err(Error::invalid(format!(
            "token vectors too large: the largest query token norm {:e} times the largest \
             corpus token norm {:e} could overflow float32 (limit {limit:e})",
            q.sqrt(),
            c.sqrt()
        )));
    }
    Ok(())
}

/// Scratch for scoring one query's tokens against texts (one per thread). The query is packed
/// once into the kernels' corpus-layout panels (`[dim][NR]`, [`NR`] query tokens each); a
/// text's tokens go to [`kernels::tile_rows`] straight from storage, [`MR`] at a time, so
/// nothing is packed per pair. Each tile holds `MR` text tokens x `NR` query tokens, and its
/// rows fold into the query tokens' running maxima.
pub struct Scorer {
    isa: Isa,
    dim: usize,
    query_tokens: usize,
    query: AlignedBuf,
    rows: Vec<f32>,
    zeros: Vec<f32>,
    maxima: Vec<f32>,
}

impl Scorer {
    pub fn new(isa: Isa, dim: usize) -> Self {
        Scorer {
            isa,
            dim,
            query_tokens: 0,
            query: AlignedBuf::new(),
            rows: vec![0.0; NR.max(MR) * dim],
            zeros: vec![0.0; dim],
            maxima: Vec::new(),
        }
    }

    /// Packs text `q` of `queries` as the query scored by [`Scorer::score`].
    pub fn set_query(&mut self, queries: &Ragged<'_>, q: usize) {
        let (dim, range) = (self.dim, queries.range(q));
        let tokens = range.len();
        let panels = tokens.div_ceil(NR);
        self.query.resize(panels * dim * NR);
        for (panel, start) in range.clone().step_by(NR).enumerate() {
            let valid = NR.min(range.end - start);
            for (j, row) in self
                .rows
                .chunks_exact_mut(dim.max(1))
                .take(valid)
                .enumerate()
            {
                queries.tokens.row_into(start + j, &mut row[..dim]);
            }
            // Padding columns are zero tokens: their maxima are computed but never summed.
            let mut sources: [&[f32]; NR] = [&self.zeros; NR];
            for (j, source) in sources.iter_mut().enumerate().take(valid) {
                *source = &self.rows[j * dim..][..dim];
            }
            let out = &mut self.query.as_mut_slice()[panel * dim * NR..][..dim * NR];
            pack::rows_to_columns(&sources, out, NR, 0);
        }
        self.query_tokens = tokens;
        self.maxima.resize(panels * NR, f32::NEG_INFINITY);
    }

    /// The MaxSim of the packed query with text `c` of `corpus`.
    pub fn score(&mut self, corpus: &Ragged<'_>, c: usize) -> f32 {
        let dim = self.dim;
        let range = corpus.range(c);
        self.maxima.fill(f32::NEG_INFINITY);
        let panels = self.query_tokens.div_ceil(NR);
        let query = self.query.as_slice();
        for start in range.clone().step_by(MR) {
            let valid = MR.min(range.end - start);
            let mut rows: [&[f32]; MR] = [&self.zeros; MR];
            match corpus.tokens.elements() {
                // Rows used as they are: no copy.
                Elements::F32(data) => {
                    for (j, row) in rows.iter_mut().enumerate().take(valid) {
                        *row = &data[(start + j) * dim..][..dim];
                    }
                }
                Elements::F16(_) => {
                    for (j, row) in self
                        .rows
                        .chunks_exact_mut(dim.max(1))
                        .take(valid)
                        .enumerate()
                    {
                        corpus.tokens.row_into(start + j, &mut row[..dim]);
                    }
                    for (j, row) in rows.iter_mut().enumerate().take(valid) {
                        *row = &self.rows[j * dim..][..dim];
                    }
                }
            }
            let mut p = 0;
            let mut maxima = self.maxima.chunks_exact_mut(NR);
            while p < panels {
                let a = &query[p * dim * NR..][..dim * NR];
                let m0: &mut [f32; NR] = maxima
                    .next()
                    .expect("a panel's maxima")
                    .try_into()
                    .expect("NR");
                if self.isa.pairs_tiles() && p + 1 < panels {
                    let b = &query[(p + 1) * dim * NR..][..dim * NR];
                    let m1: &mut [f32; NR] = maxima
                        .next()
                        .expect("a panel's maxima")
                        .try_into()
                        .expect("NR");
                    kernels::tile_rows_pair(
                        self.isa,
                        dim,
                        &rows,
                        [a, b],
                        [RowsOut::Maxima(m0, valid), RowsOut::Maxima(m1, valid)],
                    );
                    p += 2;
                } else {
                    kernels::tile_rows(self.isa, dim, &rows, a, RowsOut::Maxima(m0, valid));
                    p += 1;
                }
            }
        }
        sum_of_maxima(&self.maxima[..self.query_tokens])
    }
}

/// The score from the per-query-token maxima: summed in f64 in token order, rounded once.
fn sum_of_maxima(maxima: &[f32]) -> f32 {
    let sum: f64 = maxima.iter().map(|&m| f64::from(m)).sum();
    // `+ 0.0`: a sum of zeros of either sign is +0, as everywhere in negmine.
    sum as f32 + 0.0
}

fn overflow(q: usize, c: usize) -> Error {
    Error::invalid(format!(
        "the MaxSim of query {q} and corpus text {c} overflows float32 (too many large token \
         scores)"
    ))
}

/// Queries per progress report (and Ctrl-C check) per thread.
const QUERY_BATCH: usize = 16;

/// The MaxSim of each pair `(query_ids[i], corpus_ids[i])`, in the order given. Pairs of the
/// same query next to each other share its packing.
pub fn score_pairs(
    pool: &rayon::ThreadPool,
    queries: &Ragged<'_>,
    corpus: &Ragged<'_>,
    query_ids: &[i64],
    corpus_ids: &[i64],
    hooks: &mut dyn Hooks,
) -> Result<Vec<f32>> {
    if query_ids.len() != corpus_ids.len() {
        return Err(Error::invalid(format!(
            "query_ids has {} pairs but corpus_ids has {}",
            query_ids.len(),
            corpus_ids.len()
        )));
    }
    for (name, ids, n) in [
        ("query_ids", query_ids, queries.len()),
        ("corpus_ids", corpus_ids, corpus.len()),
    ] {
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id < 0 || id as u64 >= n as u64)
        {
            return Err(Error::invalid(format!(
                "{name}[{i}] = {id} is out of range for {n} texts"
            )));
        }
    }
    check_pair(pool, queries, corpus)?;
    let mut out = memory::filled(query_ids.len(), 0.0f32, || {
        format!("{} MaxSim scores", query_ids.len())
    })?;
    const CHUNK: usize = 256;
    let step = CHUNK * QUERY_BATCH * pool.current_num_threads();
    let isa = Isa::detect();
    for start in (0..query_ids.len()).step_by(step) {
        let end = (start + step).min(query_ids.len());
        pool.install(|| {
            out[start..end]
                .par_chunks_mut(CHUNK)
                .enumerate()
                .try_for_each_init(
                    || Scorer::new(isa, queries.dim()),
                    |scorer, (chunk, scores)| {
                        let first = start + chunk * CHUNK;
                        let mut packed = None;
                        for (i, score) in scores.iter_mut().enumerate() {
                            let (q, c) = (
                                query_ids[first + i] as usize,
                                corpus_ids[first + i] as usize,
                            );
                            if packed != Some(q) {
                                scorer.set_query(queries, q);
                                packed = Some(q);
                            }
                            *score = scorer.score(corpus, c);
                            if !score.is_finite() {
                                return Err(overflow(q, c));
                            }
                        }
                        Ok(())
                    },
                )
        })?;
        hooks.progress(end as u64, query_ids.len() as u64)?;
    }
    Ok(out)
}

/// Each query's `k` best texts by MaxSim (score descending, smaller id on ties) among its
/// `candidates` (all texts without them), leaving out its `exclude`d ones; rows padded with
/// score `-inf` and id `-1`. With all texts as candidates this is the brute-force MaxSim
/// search that a candidate stage is measured against; with a cheaper stage's candidates it is
/// their exact rescoring.
pub fn search(
    pool: &rayon::ThreadPool,
    queries: &Ragged<'_>,
    corpus: &Ragged<'_>,
    k: usize,
    candidates: Option<&IdLists>,
    exclude: Option<&IdLists>,
    hooks: &mut dyn Hooks,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let n_queries = queries.len();
    if k == 0 {
        return Err(Error::invalid("k must be at least 1"));
    }
    for (name, lists) in [("candidates", candidates), ("exclude", exclude)] {
        if let Some(lists) = lists {
            if lists.n_queries() != n_queries {
                return Err(Error::invalid(format!(
                    "{name} has lists for {} queries, not {n_queries}",
                    lists.n_queries()
                )));
            }
        }
    }
    check_pair(pool, queries, corpus)?;
    let width = candidates.map_or(corpus.len(), |c| {
        (0..n_queries).map(|q| c.of(q).len()).max().unwrap_or(0)
    });
    let held = (width as u64 * 8 + queries.dim() as u64 * 4 * (3 * NR) as u64)
        .saturating_mul(pool.current_num_threads() as u64);
    let (mut scores, mut ids) = memory::topk_result(n_queries, k, held, || {
        format!("a MaxSim result of {n_queries} queries x k = {k}")
    })?;
    let isa = Isa::detect();
    let all: Vec<u32>;
    let everything = if candidates.is_none() {
        all = (0..corpus.len() as u32).collect();
        Some(&all[..])
    } else {
        None
    };
    let step = QUERY_BATCH * pool.current_num_threads();
    for start in (0..n_queries).step_by(step) {
        let end = (start + step).min(n_queries);
        pool.install(|| {
            scores[start * k..end * k]
                .par_chunks_mut(k)
                .zip(ids[start * k..end * k].par_chunks_mut(k))
                .enumerate()
                .try_for_each_init(
                    || (Scorer::new(isa, queries.dim()), Vec::new()),
                    |(scorer, ranking), (i, (row_scores, row_ids))| {
                        let q = start + i;
                        let pool_ids = everything
                            .unwrap_or_else(|| candidates.expect("candidates or everything").of(q));
                        let excluded = exclude.map_or(&[][..], |e| e.of(q));
                        scorer.set_query(queries, q);
                        ranking.clear();
                        let mut skip = excluded.iter().peekable();
                        for &c in pool_ids {
                            // Both lists are sorted: a merge walk drops the excluded ids.
                            while skip.next_if(|&&e| e < c).is_some() {}
                            if skip.peek() == Some(&&c) {
                                continue;
                            }
                            let score = scorer.score(corpus, c as usize);
                            if !score.is_finite() {
                                return Err(overflow(q, c as usize));
                            }
                            ranking.push((score, c));
                        }
                        let rank = |a: &(f32, u32), b: &(f32, u32)| {
                            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
                        };
                        if ranking.len() > k {
                            ranking.select_nth_unstable_by(k - 1, rank);
                            ranking.truncate(k);
                        }
                        ranking.sort_unstable_by(rank);
                        for (slot, &(score, id)) in ranking.iter().enumerate() {
                            row_scores[slot] = score;
                            row_ids[slot] = i64::from(id);
                        }
                        Ok::<(), Error>(())
                    },
                )
        })?;
        hooks.progress(end as u64, n_queries as u64)?;
    }
    Ok((scores, ids))
}

/// The mean of each text's token vectors, in f64, rounded once to f32 (`texts x dim`,
/// row-major): the one-vector summary a cheaper candidate stage searches with. Unnormalised:
/// the caller's metric decides (cosine normalises it).
pub fn pooled(pool: &rayon::ThreadPool, texts: &Ragged<'_>) -> Result<Vec<f32>> {
    let dim = texts.dim();
    let mut out = memory::filled(texts.len().saturating_mul(dim), 0.0f32, || {
        format!("{} pooled vectors of dimension {dim}", texts.len())
    })?;
    if dim == 0 {
        return Ok(out);
    }
    pool.install(|| {
        out.par_chunks_mut(dim).enumerate().for_each_init(
            || (vec![0.0f32; dim], vec![0.0f64; dim]),
            |(row, sum), (i, pooled)| {
                sum.fill(0.0);
                let range = texts.range(i);
                let n = range.len() as f64;
                for t in range {
                    texts.tokens.row_into(t, row);
                    for (s, &x) in sum.iter_mut().zip(row.iter()) {
                        *s += f64::from(x);
                    }
                }
                for (p, &s) in pooled.iter_mut().zip(sum.iter()) {
                    *p = (s / n) as f32;
                }
            },
        );
    });
    Ok(out)
}

/// The reference MaxSim of one pair: plain loops, the same fused multiply-add chain per dot,
/// the same f64 sum; what every [`Scorer`] result is tested against bit for bit.
pub fn reference(queries: &Ragged<'_>, q: usize, corpus: &Ragged<'_>, c: usize) -> f32 {
    let dim = queries.dim();
    let (mut qt, mut ct) = (vec![0.0f32; dim], vec![0.0f32; dim]);
    let mut maxima = Vec::new();
    for t in queries.range(q) {
        queries.tokens.row_into(t, &mut qt);
        let mut best = f32::NEG_INFINITY;
        for u in corpus.range(c) {
            corpus.tokens.row_into(u, &mut ct);
            let dot = qt
                .iter()
                .zip(&ct)
                .fold(0.0f32, |acc, (&x, &y)| x.mul_add(y, acc));
            if dot > best {
                best = dot;
            }
        }
        maxima.push(best);
    }
    sum_of_maxima(&maxima)
}
