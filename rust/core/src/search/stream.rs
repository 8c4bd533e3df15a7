//! The skeleton every search path shares: the arguments checked and the scan set up once
//! ([`Scan`]), query batches packed into panels, the corpus split into shards (threads own
//! query groups when there are enough of them, else corpus shards merged exactly) and
//! streamed through in blocks, with read-ahead, progress and Ctrl-C between blocks. The paths
//! differ only in how a block is prepared and scored.

use std::ops::Range;

use rayon::prelude::*;

use super::{
    corpus_error, pack_block, query_name, validate, Env, PackedBlock, SearchInputs, SearchOptions,
    DEFAULT_BLOCK_ROWS, MC, STATE_BUDGET,
};
use crate::error::{Error, Result};
use crate::kernels::{MR, NR};
use crate::matrix::MatrixView;
use crate::memory;
use crate::metric::{max_squared_norm, Metric};
use crate::pack::{self, AlignedBuf, BadRow};
use crate::topk::Candidates;

/// Corpus rows per block (`opts.block_rows` clamped to the corpus first: larger blocks change
/// nothing and could overflow), a multiple of the panel width.
fn block_rows(opts: &SearchOptions, n: usize) -> usize {
    opts.block_rows
        .unwrap_or(DEFAULT_BLOCK_ROWS)
        .clamp(1, n)
        .next_multiple_of(NR)
}

/// Queries per batch: `opts.query_batch`, or as many as the state budget holds.
fn query_batch(opts: &SearchOptions, per_query_bytes: usize) -> usize {
    opts.query_batch
        .unwrap_or((STATE_BUDGET / per_query_bytes).max(MC))
        .max(1)
}

/// The result of a bounded scan (int8 pre-scores, rotated prefixes): scores, ids and the rows
/// rescored per query.
pub(super) type BoundedResult = (Vec<f32>, Vec<i64>, Vec<u32>);

/// The set-up every path's corpus scan shares, made once its arguments are checked: the bound
/// the corpus rows are checked against as they are packed, the query batches and the corpus
/// blocks.
pub(super) struct Scan<'a> {
    inputs: SearchInputs<'a>,
    pub(super) cosine: bool,
    threads: usize,
    /// For `Metric::Dot`, the query with the largest norm (its caller's index) and its squared
    /// norm.
    largest_query: Option<(usize, f64)>,
    /// By Cauchy-Schwarz no score of a corpus row within this squared norm can overflow.
    pub(super) max_corpus_squared: f64,
    block_rows: usize,
    query_batch: usize,
    /// Corpus rows read over all the batches, for progress.
    total: u64,
}

/// A query batch of a [`Scan`] (its queries packed by [`Scan::batch`]): how many queries, and
/// how they meet the corpus.
pub(super) struct Batch {
    pub(super) len: usize,
    pub(super) plan: Plan,
}

impl<'a> Scan<'a> {
    /// Checks the arguments ([`validate`]), then calls `reserve` (which takes the result's
    /// memory) before the queries are read, with the query batch and `per_query_bytes`: what a
    /// query in flight holds, read only once the arguments are valid (`k <= n`).
    pub(super) fn new<R>(
        pool: &rayon::ThreadPool,
        inputs: SearchInputs<'a>,
        opts: &SearchOptions,
        per_query_bytes: impl FnOnce() -> usize,
        reserve: impl FnOnce(usize, usize) -> Result<R>,
    ) -> Result<(Self, R)> {
        let mut batch = 0;
        let (largest_query, reserved) = validate(pool, &inputs, opts, || {
            let per_query_bytes = per_query_bytes();
            batch = query_batch(opts, per_query_bytes);
            reserve(batch, per_query_bytes)
        })?;
        let (n_queries, n) = (inputs.queries.rows(), inputs.corpus.rows());
        let max_corpus_squared = largest_query.map_or(f64::INFINITY, |(_, squared)| {
            max_squared_norm(inputs.corpus.dim(), squared)
        });
        let scan = Scan {
            inputs,
            cosine: opts.metric == Metric::Cosine,
            threads: pool.current_num_threads().max(1),
            largest_query,
            max_corpus_squared,
            block_rows: block_rows(opts, n),
            query_batch: batch,
            total: n_queries.div_ceil(batch) as u64 * n as u64,
        };
        Ok((scan, reserved))
    }

    /// [`Scan::new`] for a bounded scan, its result reserved with room for one query batch of
    /// the scan's state. A query in flight holds `per_query_bytes` in each corpus shard (at
    /// most one per thread), but no more than a shard's rows can hold: `entry_bytes` per row
    /// (twice, as the kept rows grow) plus `dim_bytes` per dimension.
    pub(super) fn bounded(
        pool: &rayon::ThreadPool,
        inputs: SearchInputs<'a>,
        opts: &SearchOptions,
        per_query_bytes: impl FnOnce() -> usize,
        (entry_bytes, dim_bytes): (usize, usize),
    ) -> Result<(Self, BoundedResult)> {
        let (n_queries, n) = (inputs.queries.rows(), inputs.corpus.rows());
        let dim = inputs.corpus.dim();
        let k = opts.k;
        let threads = pool.current_num_threads().max(1);
        Scan::new(
            pool,
            inputs,
            opts,
            per_query_bytes,
            |batch, per_query_bytes| {
                let per_query = (threads.saturating_mul(per_query_bytes))
                    .min((2 * n + threads * 128) * entry_bytes + dim * dim_bytes)
                    as u64;
                let held = per_query.saturating_mul(batch.min(n_queries) as u64)
                    + (n_queries * std::mem::size_of::<u32>()) as u64;
                let what = || format!("a search result of {n_queries} queries x k = {k}");
                let (scores, ids) = memory::topk_result(n_queries, k, held, what)?;
                Ok((scores, ids, memory::filled(n_queries, 0u32, what)?))
            },
        )
    }

    /// The first query of each batch.
    pub(super) fn batch_starts(&self) -> std::iter::StepBy<Range<usize>> {
        (0..self.inputs.queries.rows()).step_by(self.query_batch)
    }

    /// The batch starting at query `start`, its queries packed into `packed`
    /// ([`pack_queries`]).
    pub(super) fn batch(
        &self,
        pool: &rayon::ThreadPool,
        start: usize,
        packed: &mut AlignedBuf,
    ) -> Result<Batch> {
        let SearchInputs {
            queries, query_ids, ..
        } = self.inputs;
        let len = self.query_batch.min(queries.rows() - start);
        let rows = queries.slice_rows(start, start + len);
        pack_queries(pool, &rows, packed, self.cosine, query_ids, start)?;
        let n = self.inputs.corpus.rows();
        let plan = Plan::new(len, self.threads, n, self.block_rows);
        Ok(Batch { len, plan })
    }

    /// Packs corpus `rows` for the f32 kernels, each row checked against the bound.
    pub(super) fn pack_block(
        &self,
        rows: Range<usize>,
        block: &mut PackedBlock,
    ) -> Result<(), BadRow> {
        let corpus = self.inputs.corpus;
        pack_block(corpus, rows, block, self.cosine, self.max_corpus_squared)
    }

    /// The error for the first bad corpus row, `bad` or before it.
    pub(super) fn corpus_error(&self, bad: BadRow) -> Error {
        let corpus = self.inputs.corpus;
        corpus_error(corpus, bad, self.largest_query, self.max_corpus_squared)
    }

    /// Streams the corpus through `batch` ([`Plan::stream`]), counting the rows read in `done`.
    pub(super) fn stream<B: Send>(
        &self,
        env: &mut Env<'_>,
        batch: &Batch,
        done: &mut u64,
        blocks: &mut [B],
        prepare: impl Fn(Range<usize>, &mut B) -> Result<(), BadRow> + Sync,
        score: impl FnMut(&[B]),
    ) -> Result<()> {
        let progress = Progress {
            done,
            total: self.total,
        };
        let bad_row = |bad| self.corpus_error(bad);
        batch
            .plan
            .stream(env, progress, blocks, prepare, bad_row, score)
    }
}

/// Corpus rows read so far, out of the scan's total.
struct Progress<'a> {
    done: &'a mut u64,
    total: u64,
}

/// Writes each query's merged candidates of a batch (best first) into its row of the result
/// (`k` scores and ids per query, the batch's first query at `batch_start`).
pub(super) fn write_batch(
    pool: &rayon::ThreadPool,
    merged: Vec<Candidates>,
    scores: &mut [f32],
    ids: &mut [i64],
    batch_start: usize,
    k: usize,
) {
    let rows = batch_start * k..(batch_start + merged.len()) * k;
    pool.install(|| {
        merged
            .into_par_iter()
            .zip(scores[rows.clone()].par_chunks_mut(k))
            .zip(ids[rows].par_chunks_mut(k))
            .for_each(|((cands, s_row), i_row)| {
                for (j, c) in cands.into_sorted().into_iter().enumerate() {
                    s_row[j] = c.score;
                    i_row[j] = i64::from(c.id);
                }
            })
    });
}

/// How one query batch meets the corpus: its shards and their blocks.
pub(super) struct Plan {
    shards: Vec<Range<usize>>,
    block_rows: usize,
}

impl Plan {
    fn new(batch_len: usize, threads: usize, n: usize, block_rows: usize) -> Self {
        // Few query groups cannot keep every thread busy: split the corpus instead.
        let count = if batch_len.div_ceil(MC) >= 2 * threads {
            1
        } else {
            threads.min(n.div_ceil(NR)).max(1)
        };
        Plan {
            shards: (0..count)
                .map(|s| s * n / count..(s + 1) * n / count)
                .collect(),
            block_rows,
        }
    }

    pub(super) fn shards(&self) -> usize {
        self.shards.len()
    }

    fn rounds(&self) -> usize {
        let most = self.shards.iter().map(Range::len).max().unwrap_or(0);
        most.div_ceil(self.block_rows)
    }

    /// The rows of shard `s` in block round `round` (empty past its end).
    fn block(&self, round: usize, s: usize) -> Range<usize> {
        let r = &self.shards[s];
        let start = (r.start + round * self.block_rows).min(r.end);
        start..(start + self.block_rows).min(r.end)
    }

    /// Streams every shard's blocks: `prepare` packs the rows of a block (in parallel across
    /// shards; the first bad row, in row order, becomes `bad_row`'s error), then `score` scores
    /// the prepared blocks, with progress after each round.
    fn stream<B: Send>(
        &self,
        env: &mut Env<'_>,
        progress: Progress<'_>,
        blocks: &mut [B],
        prepare: impl Fn(Range<usize>, &mut B) -> Result<(), BadRow> + Sync,
        bad_row: impl Fn(BadRow) -> Error,
        mut score: impl FnMut(&[B]),
    ) -> Result<()> {
        let Env { pool, hooks, .. } = env;
        let Progress { done, total } = progress;
        let shards = self.shards();
        for s in 0..shards {
            hooks.will_read(self.block(0, s));
        }
        for round in 0..self.rounds() {
            let prepared: Result<(), BadRow> = pool.install(|| {
                blocks[..shards]
                    .par_iter_mut()
                    .enumerate()
                    .map(|(s, block)| prepare(self.block(round, s), block))
                    .min_by_key(|r| r.err().map_or(usize::MAX, BadRow::row))
                    .unwrap_or(Ok(()))
            });
            prepared.map_err(&bad_row)?;
            // Read-ahead of the next blocks overlaps the scoring of these ones.
            for s in 0..shards {
                hooks.will_read(self.block(round + 1, s));
            }
            score(&blocks[..shards]);
            for s in 0..shards {
                let rows = self.block(round, s);
                *done += rows.len() as u64;
                hooks.done_reading(rows);
            }
            hooks.progress(*done, total)?;
        }
        Ok(())
    }
}

/// Packs a batch of queries into `[dim][MR]` panels (normalised for cosine); a non-finite row
/// is named by its index among the caller's queries (`query_ids`, offset by `batch_start`).
pub(super) fn pack_queries(
    pool: &rayon::ThreadPool,
    batch: &MatrixView<'_>,
    packed: &mut AlignedBuf,
    cosine: bool,
    query_ids: Option<&[usize]>,
    batch_start: usize,
) -> Result<()> {
    let dim = batch.dim();
    packed.resize(batch.rows().div_ceil(MR) * dim * MR);
    let result = pool.install(|| {
        packed
            .as_mut_slice()
            .par_chunks_mut(dim * MR)
            .enumerate()
            .map_init(
                || vec![0.0f32; dim],
                |row, (p, out)| pack::pack_queries(batch, p * MR, out, row, cosine),
            )
            .min_by_key(|r| r.err().map_or(usize::MAX, BadRow::row))
            .unwrap_or(Ok(()))
    });
    // Checked before, but the caller's array may have changed since (another thread).
    result.map_err(|bad| {
        Error::invalid(format!(
            "queries row {} contains NaN or infinity",
            query_name(query_ids, batch_start + bad.row())
        ))
    })
}

/// Merges per-shard states of the same queries into the first: `absorb` adds one query's
/// state from another shard.
pub(super) fn merge_shards<T: Send>(
    pool: &rayon::ThreadPool,
    mut shards: Vec<Vec<T>>,
    absorb: impl Fn(&mut T, T) + Sync,
) -> Vec<T> {
    let mut merged = shards.swap_remove(0);
    for other in shards {
        pool.install(|| {
            merged
                .par_iter_mut()
                .zip(other)
                .for_each(|(m, o)| absorb(m, o))
        });
    }
    merged
}
