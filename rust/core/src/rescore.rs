//! Exact scores of chosen corpus rows against one query: the candidates an approximate source
//! proposed (int8 pre-scores, an hnsw graph, later a GPU or a remote shard). Rows are gathered
//! 16 at a time, transposed into a panel of [`ROWS`] columns as the search packs them, and
//! scored by [`kernels::score_rows`]: each score is the f32 kernels' fused multiply-add chain,
//! so bit for bit the score the exact search gives the pair.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{self, Isa, NR, ROWS};
use crate::matrix::{Elements, MatrixView};
use crate::memory;
use crate::metric::{max_squared_norm, overflow_error, Metric};
use crate::pack::{self, normalize, squared_norm, AlignedBuf};

/// Scratch for rescoring one query at a time (one per thread).
pub struct Rescorer {
    isa: Isa,
    cosine: bool,
    panel: AlignedBuf,
    rows: Vec<f32>,
}

impl Rescorer {
    pub fn new(isa: Isa, dim: usize, cosine: bool) -> Self {
        let mut panel = AlignedBuf::new();
        panel.resize(dim * ROWS);
        Rescorer {
            isa,
            cosine,
            panel,
            rows: vec![0.0; (NR + 1) * dim],
        }
    }

    /// Scores `ids` against `query` (prepared as the search prepares it: normalised for
    /// cosine) and hands each `(id, score)` to `visit`, in the order of `ids` (`-0.0` as
    /// `+0.0`, as the search returns it). `check` sees each corpus row as stored (widened from
    /// f16, before normalisation) and may refuse it.
    pub fn score(
        &mut self,
        corpus: &MatrixView<'_>,
        query: &[f32],
        ids: &[u32],
        mut check: impl FnMut(u32, &[f32]) -> Result<()>,
        mut visit: impl FnMut(u32, f32),
    ) -> Result<()> {
        let dim = corpus.dim();
        debug_assert_eq!(query.len(), dim);
        let (rows, zeros) = self.rows.split_at_mut(NR * dim);
        let mut scores = [0.0f32; ROWS];
        for chunk in ids.chunks(ROWS) {
            for (part, group) in chunk.chunks(NR).enumerate() {
                let mut sources: [&[f32]; NR] = [&*zeros; NR];
                match corpus.elements() {
                    // Rows used as they are: no copy.
                    Elements::F32(data) if !self.cosine => {
                        for (source, &id) in sources.iter_mut().zip(group) {
                            let row = &data[id as usize * dim..][..dim];
                            check(id, row)?;
                            *source = row;
                        }
                    }
                    _ => {
                        for (row, &id) in rows.chunks_exact_mut(dim).zip(group) {
                            corpus.row_into(id as usize, row);
                            check(id, row)?;
                            if self.cosine {
                                pack::normalize(row);
                            }
                        }
                        let filled = rows.chunks_exact(dim).take(group.len());
                        for (source, row) in sources.iter_mut().zip(filled) {
                            *source = row;
                        }
                    }
                }
                pack::rows_to_columns(&sources, self.panel.as_mut_slice(), ROWS, part * NR);
            }
            kernels::score_rows(self.isa, query, self.panel.as_slice(), &mut scores);
            for (&id, &score) in chunk.iter().zip(&scores) {
                // The search's scores are canonical (`-0.0`, which a product that underflows
                // below zero gives, is `+0.0` there): so must these be, to rank alike.
                visit(id, score + 0.0);
            }
        }
        Ok(())
    }
}

/// Prepares a query row as the search does: normalised for cosine.
pub(crate) fn prepare_row(metric: Metric, row: &mut [f32]) {
    if metric == Metric::Cosine {
        normalize(row);
    }
}

/// Query row `q` of `queries` into `row`, and its squared norm; an error naming it `name` (its
/// index among the caller's queries: a chunk's rows are named globally) if it is not finite.
pub(crate) fn query_row(
    queries: &MatrixView<'_>,
    q: usize,
    name: usize,
    row: &mut [f32],
) -> Result<f64> {
    queries.row_into(q, row);
    let squared = squared_norm(row);
    if squared.is_finite() {
        Ok(squared)
    } else {
        Err(Error::invalid(format!(
            "queries row {name} contains NaN or infinity"
        )))
    }
}

/// Checks corpus row `c` (as stored) for query `q` (raw squared norm `q_squared`): finite,
/// and for dot products short enough that the score is finite (the search's rule,
/// [`crate::metric::score_limit`]).
pub(crate) fn check_corpus_row(
    metric: Metric,
    c: usize,
    row: &[f32],
    q: usize,
    q_squared: f64,
) -> Result<()> {
    let squared = squared_norm(row);
    if !squared.is_finite() {
        return Err(Error::invalid(format!(
            "corpus row {c} contains NaN or infinity"
        )));
    }
    // Unit rows (cosine) score at most 1 in magnitude.
    if metric == Metric::Dot && squared > max_squared_norm(row.len(), q_squared) {
        return Err(overflow_error(row.len(), q, q_squared, c, squared));
    }
    Ok(())
}

/// Exact top-`k` of given candidates: row `q` of `candidates` (`width` corpus ids per query,
/// row-major; an id below zero pads) rescored against query `q` exactly, bit for bit the
/// search's scores, duplicates dropped, ranked like the search (score descending, smaller id
/// on ties) and cut to `k`, padded with id `-1` and score `-inf`. So a candidate list that
/// holds a query's exact top-`k` gives exactly the search's row.
pub fn rank(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    metric: Metric,
    candidates: &[i64],
    width: usize,
    k: usize,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let (n_queries, n_corpus, dim) = (queries.rows(), corpus.rows(), corpus.dim());
    if queries.dim() != dim {
        return Err(Error::invalid(format!(
            "queries have dimension {} but the corpus has {dim}",
            queries.dim()
        )));
    }
    if k == 0 {
        return Err(Error::invalid("k must be at least 1"));
    }
    if Some(candidates.len()) != n_queries.checked_mul(width) {
        return Err(Error::invalid(format!(
            "{} candidate ids do not make {n_queries} rows of {width}",
            candidates.len()
        )));
    }
    // Each thread holds one query's candidates (ids, then scored) and a scratch row.
    let per_thread = (width as u64).saturating_mul(12)
        + dim as u64 * 4
        + (NR as u64 + 1 + ROWS as u64) * dim as u64 * 4;
    let held = per_thread.saturating_mul(pool.current_num_threads() as u64);
    let (mut scores, mut ids) = memory::topk_result(n_queries, k, held, || {
        format!("a rescored result of {n_queries} queries x k = {k}")
    })?;
    let cosine = metric == Metric::Cosine;
    pool.install(|| {
        scores
            .par_chunks_mut(k)
            .zip(ids.par_chunks_mut(k))
            .enumerate()
            .try_for_each_init(
                || (Rescorer::new(Isa::detect(), dim, cosine), vec![0.0; dim]),
                |(rescorer, qrow), (q, (row_scores, row_ids))| {
                    let mut unique = Vec::with_capacity(width);
                    for &id in &candidates[q * width..(q + 1) * width] {
                        if id >= n_corpus as i64 {
                            return Err(Error::invalid(format!(
                                "candidate {id} of query {q} is outside the corpus of \
                                 {n_corpus} rows"
                            )));
                        }
                        if id >= 0 {
                            unique.push(id as u32);
                        }
                    }
                    unique.sort_unstable();
                    unique.dedup();
                    let q_squared = query_row(queries, q, q, qrow)?;
                    prepare_row(metric, qrow);
                    let mut ranking = Vec::with_capacity(unique.len());
                    rescorer.score(
                        corpus,
                        qrow,
                        &unique,
                        |id, row| check_corpus_row(metric, id as usize, row, q, q_squared),
                        |id, score| ranking.push((score, id)),
                    )?;
                    ranking.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    for (slot, (score, id)) in ranking.into_iter().take(k).enumerate() {
                        row_scores[slot] = score;
                        row_ids[slot] = i64::from(id);
                    }
                    Ok(())
                },
            )
    })?;
    Ok((scores, ids))
}
