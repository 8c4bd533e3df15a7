//! The skeleton both search paths share: query batches packed into panels, the corpus split
//! into shards (threads own query groups when there are enough of them, else corpus shards
//! merged exactly) and streamed through in blocks, with read-ahead, progress and Ctrl-C
//! between blocks. The paths differ only in how a block is prepared and scored.

use std::ops::Range;

use rayon::prelude::*;

use super::{query_name, SearchOptions, DEFAULT_BLOCK_ROWS, MC, STATE_BUDGET};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::kernels::{MR, NR};
use crate::matrix::MatrixView;
use crate::memory;
use crate::pack::{self, AlignedBuf, BadRow};
use crate::topk::Candidates;

/// Corpus rows per block (`opts.block_rows` clamped to the corpus first: larger blocks change
/// nothing and could overflow), a multiple of the panel width.
pub(super) fn block_rows(opts: &SearchOptions, n: usize) -> usize {
    opts.block_rows
        .unwrap_or(DEFAULT_BLOCK_ROWS)
        .clamp(1, n)
        .next_multiple_of(NR)
}

/// Queries per batch: `opts.query_batch`, or as many as the state budget holds.
pub(super) fn query_batch(opts: &SearchOptions, per_query_bytes: usize) -> usize {
    opts.query_batch
        .unwrap_or((STATE_BUDGET / per_query_bytes).max(MC))
        .max(1)
}

/// The result of a bounded scan (int8 pre-scores, rotated prefixes): scores, ids and the rows
/// rescored per query, of `shape = (n_queries, n, dim)`, reserved with room for one query
/// batch of the scan's state. A query in flight holds `per_query_bytes` in each corpus shard
/// (at most one per thread), but no more than a shard's rows can hold: `entry_bytes` per row
/// (twice, as the kept rows grow) plus `dim_bytes` per dimension.
pub(super) fn bounded_result(
    opts: &SearchOptions,
    (n_queries, n, dim): (usize, usize, usize),
    threads: usize,
    per_query_bytes: usize,
    entry_bytes: usize,
    dim_bytes: usize,
) -> Result<(Vec<f32>, Vec<i64>, Vec<u32>)> {
    let k = opts.k;
    let batch = query_batch(opts, per_query_bytes).min(n_queries);
    let per_query = (threads.saturating_mul(per_query_bytes))
        .min((2 * n + threads * 128) * entry_bytes + dim * dim_bytes) as u64;
    let held =
        per_query.saturating_mul(batch as u64) + (n_queries * std::mem::size_of::<u32>()) as u64;
    let what = || format!("a search result of {n_queries} queries x k = {k}");
    let (scores, ids) = memory::topk_result(n_queries, k, held, what)?;
    Ok((scores, ids, memory::filled(n_queries, 0u32, what)?))
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
    pub(super) fn new(batch_len: usize, threads: usize, n: usize, block_rows: usize) -> Self {
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
    /// the prepared blocks. `done` counts the rows read, towards `total`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stream<B: Send>(
        &self,
        pool: &rayon::ThreadPool,
        blocks: &mut [B],
        hooks: &mut dyn Hooks,
        done: &mut u64,
        total: u64,
        prepare: impl Fn(Range<usize>, &mut B) -> Result<(), BadRow> + Sync,
        bad_row: impl Fn(BadRow) -> Error,
        mut score: impl FnMut(&[B]),
    ) -> Result<()> {
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
