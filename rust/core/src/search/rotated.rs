//! Exact search through a rotated prefix ([`crate::rotation`]): the corpus is rotated onto its
//! principal axes once per call (its companion), and each block is scored by the f32 kernels on
//! the first rotated dimensions only. Each partial score `P` comes with a slack such that the
//! f32 path's score is at most `P + slack`; a row is kept while that reaches its query's k-th
//! best exact score so far, a later stage adds dimensions in f64 for the rows kept, and the
//! rows still kept are rescored with the f32 kernel on the original rows, best bound first,
//! while the block is being scored. So the result is the f32 path's, bit for bit (scores, ids,
//! ties), for any thread count, block size and ISA; a flat spectrum takes the f32 path itself.

use std::ops::Range;

use rayon::prelude::*;

use super::{
    depth_chunks, run_tiles, search_f32, stream, Env, SearchInputs, SearchOptions, Sink, Tiling,
    Workspace, MC,
};
use crate::error::Result;
use crate::idlists::IdLists;
use crate::kernels::{Isa, MR, NR, ROWS, TILE};
use crate::matrix::MatrixView;
use crate::memory;
use crate::pack::{self, AlignedBuf, BadRow};
use crate::rescore::Rescorer;
use crate::rotation::{Rotation, RowBound, MAX_STAGES};
use crate::search::{Neighbors, Precision, SearchStats};
use crate::topk::Candidates;

/// Corpus rows whose second moment gives the axes (evenly spread over the corpus). The axes
/// only decide how tight the bound is, never whether it holds.
const SAMPLE_ROWS: usize = 2048;
/// Rows of the cheap flatness check made first (see [`crate::rotation::looks_flat`]).
const FLATNESS_ROWS: usize = 256;
/// Corpus rows rotated at a time (a multiple of the panel width).
const BUILD_ROWS: usize = 256;

/// Row `index` of `corpus` as the kernels read it (widened, normalised for cosine) into `row`,
/// refused as the f32 path refuses it.
fn read_row(
    corpus: &MatrixView<'_>,
    index: usize,
    row: &mut [f32],
    cosine: bool,
    max_squared: f64,
) -> Result<(), BadRow> {
    corpus.row_into(index, row);
    if cosine {
        // A finite f32 row has a finite f64 squared norm: this is the finiteness check.
        pack::check_row(row, index, f64::INFINITY)?;
        pack::normalize(row);
        Ok(())
    } else {
        pack::check_row(row, index, max_squared)
    }
}

/// The rotated rows of the corpus.
struct Companion {
    rotation: Rotation,
    /// Stage 1's prefixes for the kernels, `[panel][cut][NR]`, zero padded.
    panels: AlignedBuf,
    /// All stored rotated dimensions, row-major `n x width` (later stages read them).
    rows: Vec<f32>,
    bounds: Vec<RowBound>,
}

impl Companion {
    fn build(
        pool: &rayon::ThreadPool,
        corpus: &MatrixView<'_>,
        rotation: Rotation,
        cosine: bool,
        max_squared: f64,
        bad_row: impl Fn(BadRow) -> crate::Error,
    ) -> Result<Companion> {
        let (n, dim) = (corpus.rows(), corpus.dim());
        let (cut, width) = (rotation.cuts()[0], rotation.width());
        let n_panels = n.div_ceil(NR);
        let what = || format!("the rotated companion of {n} corpus rows x {width} dimensions");
        let bytes = (n_panels * NR * cut * 4 + n * width * 4) as u64
            + (n * std::mem::size_of::<RowBound>()) as u64;
        memory::ensure_fits(Some(bytes), what)?;
        let mut rows = memory::filled(n * width, 0.0f32, what)?;
        let mut bounds = memory::filled(n, RowBound::default(), what)?;
        let mut panels = AlignedBuf::new();
        panels.resize(n_panels * cut * NR);
        let built: Result<(), BadRow> = pool.install(|| {
            panels
                .as_mut_slice()
                .par_chunks_mut(BUILD_ROWS / NR * cut * NR)
                .zip(rows.par_chunks_mut(BUILD_ROWS * width))
                .zip(bounds.par_chunks_mut(BUILD_ROWS))
                .enumerate()
                .map_init(
                    || (vec![0.0f32; dim], Vec::new(), Vec::new()),
                    |(row, block, squared), (c, ((panels, out), bounds))| {
                        let start = c * BUILD_ROWS;
                        let count = bounds.len();
                        block.clear();
                        squared.clear();
                        for i in start..start + count {
                            read_row(corpus, i, row, cosine, max_squared)?;
                            squared.push(pack::squared_norm(row));
                            block.extend(row.iter().map(|&x| f64::from(x)));
                        }
                        rotation.rotate(block, squared, out, bounds);
                        panels.fill(0.0);
                        for (i, rotated) in out.chunks_exact(width).enumerate() {
                            let panel = &mut panels[(i / NR) * cut * NR..][..cut * NR];
                            for (t, &v) in rotated[..cut].iter().enumerate() {
                                panel[t * NR + i % NR] = v;
                            }
                        }
                        Ok(())
                    },
                )
                .min_by_key(|r| r.err().map_or(usize::MAX, BadRow::row))
                .unwrap_or(Ok(()))
        });
        built.map_err(bad_row)?;
        Ok(Companion {
            rotation,
            panels,
            rows,
            bounds,
        })
    }
}

/// The rotation of `corpus`, from a sample of its rows; `None` where the spectrum is flat or a
/// sampled row is refused (the f32 path then names the first bad row).
fn rotation_of(
    corpus: &MatrixView<'_>,
    cosine: bool,
    max_squared: f64,
    cuts: Option<&[usize]>,
) -> Result<Option<Rotation>> {
    let (n, dim) = (corpus.rows(), corpus.dim());
    let mut row = vec![0.0f32; dim];
    let mut sample = |m: usize| -> Option<Vec<f64>> {
        let mut sample = Vec::with_capacity(m * dim);
        for i in 0..m {
            read_row(corpus, i * n / m, &mut row, cosine, max_squared).ok()?;
            sample.extend(row.iter().map(|&x| f64::from(x)));
        }
        Some(sample)
    };
    // The eigenvectors cost milliseconds: a flat corpus is recognised before.
    if cuts.is_none()
        && sample(n.min(FLATNESS_ROWS)).is_none_or(|s| crate::rotation::looks_flat(&s, dim))
    {
        return Ok(None);
    }
    match sample(n.min(SAMPLE_ROWS)) {
        Some(sample) => Rotation::new(&sample, dim, cuts),
        None => Ok(None),
    }
}

/// A row that passed stage 1: its upper bound and partial score.
#[derive(Clone, Copy)]
struct Pending {
    upper: f64,
    partial: f64,
    id: u32,
}

/// `!(x < t)`: `x` reaches `t`, which a NaN `t` (fewer than `k` rows scored) lets all do.
#[inline]
fn reaches(x: f64, t: f32) -> bool {
    x.partial_cmp(&f64::from(t)) != Some(std::cmp::Ordering::Less)
}

/// `sum a_i b_i` in f64 (8 lanes).
#[inline]
fn dot64(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (a, b) in ac.zip(bc) {
        for j in 0..8 {
            lanes[j] += f64::from(a[j]) * f64::from(b[j]);
        }
    }
    let tail: f64 = ar
        .iter()
        .zip(br)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// A query group's share of one shard's state.
struct Task<'a> {
    shard: usize,
    first_panel: usize,
    candidates: &'a mut [Candidates],
    /// Per query, the k-th best exact score so far (NaN before `k`).
    exact: &'a mut [f32],
    /// Per query, the kernel test's threshold (padded to whole panels).
    kernel: &'a mut [f32],
    /// Per query, the rows that passed each stage.
    counts: &'a mut [[u32; MAX_STAGES]],
}

struct Scorer<'a> {
    isa: Isa,
    dim: usize,
    cosine: bool,
    corpus: &'a MatrixView<'a>,
    companion: &'a Companion,
    depth: &'a [(usize, usize)],
    /// The batch's rotated queries: stage 1's panels `[cut][MR]`, all stored dimensions
    /// row-major, and their bounds.
    query_panels: &'a [f32],
    query_rows: &'a [f32],
    query_bounds: &'a [RowBound],
    /// The batch's queries as the f32 path scores them, row-major.
    queries: &'a [f32],
    query_offset: usize,
    exclude: Option<&'a IdLists>,
    /// 1 except in the test that shows a too-small bound gives wrong results.
    tail_scale: f64,
}

/// Stage 1's sink: the rows of one block whose bound reaches their query's threshold.
struct PrefixSink<'s> {
    scorer: &'s Scorer<'s>,
    /// The block's rows, and its first panel.
    rows: Range<usize>,
    first_panel: usize,
    /// The task's first query in the batch.
    first: usize,
    kernel: &'s [f32],
    exact: &'s [f32],
    pending: Vec<Vec<Pending>>,
}

impl Sink for PrefixSink<'_> {
    fn thresholds(&self) -> &[f32] {
        self.kernel
    }

    fn collect(&mut self, jr: usize, ir: usize, masks: &[u16; MR], tile: &[f32; TILE]) {
        let s = self.scorer;
        let rotation = &s.companion.rotation;
        for (i, &mask) in masks.iter().enumerate() {
            let q = ir * MR + i;
            if mask == 0 || q >= self.pending.len() {
                continue;
            }
            let query = &s.query_bounds[self.first + q];
            let excluded = s.exclude.map(|ex| ex.of(s.query_offset + self.first + q));
            let mut mask = mask;
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let id = (self.first_panel + jr) * NR + j;
                // Panels straddle blocks (shards start anywhere): each block takes its rows.
                if !self.rows.contains(&id) {
                    continue;
                }
                let id = id as u32;
                if excluded.is_some_and(|ex| ex.binary_search(&id).is_ok()) {
                    continue;
                }
                let partial = f64::from(tile[i * NR + j]);
                let slack =
                    rotation.slack(query, &s.companion.bounds[id as usize], 0, s.tail_scale);
                let upper = Rotation::upper(partial, slack);
                if reaches(upper, self.exact[q]) {
                    self.pending[q].push(Pending { upper, partial, id });
                }
            }
        }
    }
}

impl Scorer<'_> {
    fn run(&self, task: Task<'_>, rows: &Range<usize>) {
        let c = self.companion;
        let rotation = &c.rotation;
        let cut = rotation.cuts()[0];
        let n_queries = task.candidates.len();
        let first = task.first_panel * MR;
        let worst = c.bounds[rows.clone()]
            .iter()
            .fold(RowBound::default(), |w, b| w.max(*b));
        for (q, kernel) in task.kernel.iter_mut().enumerate().take(n_queries) {
            let slack = rotation.slack(&self.query_bounds[first + q], &worst, 0, self.tail_scale);
            *kernel = Rotation::kernel_threshold(task.exact[q], slack);
        }
        let first_panel = rows.start / NR;
        let n_b = rows.end.div_ceil(NR) - first_panel;
        let mut sink = PrefixSink {
            scorer: self,
            rows: rows.clone(),
            first_panel,
            first,
            kernel: &*task.kernel,
            exact: &*task.exact,
            pending: vec![Vec::new(); n_queries],
        };
        let tiling = Tiling {
            isa: self.isa,
            dim: cut,
            depth: self.depth,
        };
        run_tiles(
            tiling,
            &self.query_panels[task.first_panel * cut * MR..],
            n_queries.div_ceil(MR),
            &c.panels.as_slice()[first_panel * cut * NR..],
            n_b,
            &mut sink,
        );
        let pending = sink.pending;
        let mut rescorer = Rescorer::new(self.isa, self.dim, self.cosine);
        for (q, mut pending) in pending.into_iter().enumerate() {
            if pending.is_empty() {
                continue;
            }
            self.finish(
                &mut rescorer,
                first + q,
                &mut pending,
                &mut task.candidates[q],
                &mut task.exact[q],
                &mut task.counts[q],
            );
            let slack = rotation.slack(&self.query_bounds[first + q], &worst, 0, self.tail_scale);
            task.kernel[q] = Rotation::kernel_threshold(task.exact[q], slack);
        }
    }

    /// The later stages and the exact rescoring of one query's rows that passed stage 1, best
    /// upper bound first, so that its threshold rises as early as it can.
    fn finish(
        &self,
        rescorer: &mut Rescorer,
        q: usize,
        pending: &mut [Pending],
        candidates: &mut Candidates,
        exact: &mut f32,
        counts: &mut [u32; MAX_STAGES],
    ) {
        let c = self.companion;
        let rotation = &c.rotation;
        let cuts = rotation.cuts();
        let width = rotation.width();
        let query = &self.query_bounds[q];
        let rotated = &self.query_rows[q * width..][..width];
        let original = &self.queries[q * self.dim..][..self.dim];
        pending.sort_unstable_by(|a, b| b.upper.total_cmp(&a.upper));
        let mut chunk: Vec<u32> = Vec::with_capacity(ROWS);
        let mut rescore = |chunk: &mut Vec<u32>, exact: &mut f32| {
            let scored = rescorer.score(
                self.corpus,
                original,
                chunk,
                |_, _| Ok(()),
                |id, score| {
                    if let Some(t) = candidates.push(score, id) {
                        *exact = t;
                    }
                },
            );
            debug_assert!(scored.is_ok(), "no row is refused here");
            chunk.clear();
        };
        for p in pending.iter() {
            // Sorted by upper bound: once one falls below the threshold, all the rest do.
            if !reaches(p.upper, *exact) {
                break;
            }
            counts[0] += 1;
            let row = &c.rows[p.id as usize * width..][..width];
            let mut partial = p.partial;
            let mut kept = true;
            for stage in 1..cuts.len() {
                let dims = cuts[stage - 1]..cuts[stage];
                partial += dot64(&rotated[dims.clone()], &row[dims]);
                let bound = &c.bounds[p.id as usize];
                let slack = rotation.slack(query, bound, stage, self.tail_scale);
                if !reaches(Rotation::upper(partial, slack), *exact) {
                    kept = false;
                    break;
                }
                counts[stage] += 1;
            }
            if kept {
                chunk.push(p.id);
                if chunk.len() == ROWS {
                    rescore(&mut chunk, exact);
                }
            }
        }
        if !chunk.is_empty() {
            rescore(&mut chunk, exact);
        }
    }
}

/// [`super::search_rows`] through the rotated prefix (same arguments, same result);
/// `workspace.stats` gets what it did.
pub(super) fn search_rows(
    workspace: &mut Workspace,
    env: &mut Env<'_>,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
) -> Result<Neighbors> {
    search_scaled(workspace, env, inputs, opts, 1.0)
}

/// [`search_rows`] with every tail product multiplied by `tail_scale`.
fn search_scaled(
    workspace: &mut Workspace,
    env: &mut Env<'_>,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
    tail_scale: f64,
) -> Result<Neighbors> {
    let (pool, isa) = (env.pool, env.isa);
    let k = opts.k;
    let corpus = inputs.corpus;
    let dim = corpus.dim();
    // A query in flight holds its rows (original and rotated), its candidates and the rows
    // that passed stage 1 in a block (`k <= n` once valid).
    let per_query_bytes = || (4 * k + 128) * 16 + dim * 12;
    let (scan, (mut scores, mut ids, mut rescored)) =
        stream::Scan::bounded(pool, inputs, opts, per_query_bytes, (16, 12))?;
    let (cosine, max_corpus_squared) = (scan.cosine, scan.max_corpus_squared);
    let started = std::time::Instant::now();
    let rotation = rotation_of(
        corpus,
        cosine,
        max_corpus_squared,
        opts.stage_cuts.as_deref(),
    )?;
    let Some(rotation) = rotation else {
        let companion_seconds = started.elapsed().as_secs_f64();
        let (found, _) = search_f32(workspace, env, inputs, opts, None)?;
        workspace.stats.companion_seconds = companion_seconds;
        return Ok(found);
    };
    let companion = Companion::build(pool, corpus, rotation, cosine, max_corpus_squared, |bad| {
        scan.corpus_error(bad)
    })?;
    let companion_seconds = started.elapsed().as_secs_f64();
    let scan_started = std::time::Instant::now();
    let rotation = &companion.rotation;
    let (cut, width) = (rotation.cuts()[0], rotation.width());
    let depth = depth_chunks(cut);
    let mut done = 0u64;
    let mut stage_rows = vec![0u64; rotation.cuts().len()];

    let mut packed = AlignedBuf::new();
    for batch_start in scan.batch_starts() {
        let batch = scan.batch(pool, batch_start, &mut packed)?;
        let batch_len = batch.len;
        let n_panels = batch_len.div_ceil(MR);
        // The queries as the f32 path scores them, row by row, and rotated.
        let packed = packed.as_slice();
        let mut originals = vec![0.0f32; batch_len * dim];
        for (q, row) in originals.chunks_exact_mut(dim).enumerate() {
            let panel = &packed[(q / MR) * dim * MR..][..dim * MR];
            for (p, x) in row.iter_mut().enumerate() {
                *x = panel[p * MR + q % MR];
            }
        }
        let wide: Vec<f64> = originals.iter().map(|&x| f64::from(x)).collect();
        let squared: Vec<f64> = originals
            .chunks_exact(dim)
            .map(pack::squared_norm)
            .collect();
        let mut query_rows = vec![0.0f32; batch_len * width];
        let mut query_bounds = vec![RowBound::default(); batch_len];
        rotation.rotate(&wide, &squared, &mut query_rows, &mut query_bounds);
        let mut query_panels = AlignedBuf::new();
        query_panels.resize(n_panels * cut * MR);
        query_panels.as_mut_slice().fill(0.0);
        for (q, row) in query_rows.chunks_exact(width).enumerate() {
            let panel = &mut query_panels.as_mut_slice()[(q / MR) * cut * MR..][..cut * MR];
            for (t, &v) in row[..cut].iter().enumerate() {
                panel[t * MR + q % MR] = v;
            }
        }

        let shards = batch.plan.shards();
        let mut candidates: Vec<Vec<Candidates>> = (0..shards)
            .map(|_| vec![Candidates::new(k); batch_len])
            .collect();
        let mut exact: Vec<Vec<f32>> = (0..shards).map(|_| vec![f32::NAN; batch_len]).collect();
        let mut kernel: Vec<Vec<f32>> = (0..shards)
            .map(|_| {
                let mut t = vec![f32::NAN; n_panels * MR];
                t[batch_len..].fill(f32::INFINITY);
                t
            })
            .collect();
        let mut counts: Vec<Vec<[u32; MAX_STAGES]>> = (0..shards)
            .map(|_| vec![[0; MAX_STAGES]; batch_len])
            .collect();
        let mut blocks: Vec<Range<usize>> = vec![0..0; shards];
        let scorer = Scorer {
            isa,
            dim,
            cosine,
            corpus,
            companion: &companion,
            depth: &depth,
            query_panels: query_panels.as_slice(),
            query_rows: &query_rows,
            query_bounds: &query_bounds,
            queries: &originals,
            query_offset: batch_start,
            exclude: inputs.exclude,
            tail_scale,
        };
        scan.stream(
            env,
            &batch,
            &mut done,
            &mut blocks,
            |rows, block| {
                *block = rows;
                Ok(())
            },
            |blocks| {
                let mut tasks = Vec::new();
                let states = candidates
                    .iter_mut()
                    .zip(&mut exact)
                    .zip(&mut kernel)
                    .zip(&mut counts);
                for (shard, (((cands, exact), kernel), counts)) in states.enumerate() {
                    if blocks[shard].is_empty() {
                        continue;
                    }
                    let groups = cands
                        .chunks_mut(MC)
                        .zip(exact.chunks_mut(MC))
                        .zip(kernel.chunks_mut(MC))
                        .zip(counts.chunks_mut(MC));
                    for (g, (((c, e), t), n)) in groups.enumerate() {
                        tasks.push(Task {
                            shard,
                            first_panel: g * MC / MR,
                            candidates: c,
                            exact: e,
                            kernel: t,
                            counts: n,
                        });
                    }
                }
                pool.install(|| {
                    tasks.into_par_iter().for_each(|task| {
                        let rows = &blocks[task.shard];
                        scorer.run(task, rows)
                    })
                });
            },
        )?;
        let merged = stream::merge_shards(pool, candidates, Candidates::absorb);
        stream::write_batch(pool, merged, &mut scores, &mut ids, batch_start, k);
        let last = rotation.cuts().len() - 1;
        for shard in &counts {
            for (q, c) in shard.iter().enumerate() {
                rescored[batch_start + q] += c[last];
                for (total, &passed) in stage_rows.iter_mut().zip(c) {
                    *total += u64::from(passed);
                }
            }
        }
    }
    workspace.stats = SearchStats {
        precision: Precision::Rotated,
        rescored,
        scan_seconds: scan_started.elapsed().as_secs_f64(),
        rescore_seconds: 0.0,
        stage_cuts: rotation.cuts().to_vec(),
        stage_rows,
        companion_seconds,
        probe_rescored: None,
    };
    Ok(Neighbors { k, scores, ids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::NoHooks;
    use crate::metric::Metric;

    /// The property tests compare this path with the f32 one bit for bit; this shows they can
    /// fail: with the tails' product shrunk to a tenth, rows of the true top k are dropped.
    #[test]
    fn a_too_small_bound_gives_a_different_result() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (n_queries, n, dim, k) = (20, 600, 32, 10);
        let mut rng = crate::rng::Rng::stream(9, 0, 0, 0);
        // Most of the energy in the first dimensions, but enough in the rest to rank rows.
        let mut gen = |rows: usize| -> Vec<f32> {
            (0..rows * dim)
                .map(|i| ((rng.unit() - 0.5) * (-((i % dim) as f64) / 16.0).exp()) as f32)
                .collect()
        };
        let (q, c) = (gen(n_queries), gen(n));
        let queries = MatrixView::f32(&q, n_queries, dim).unwrap();
        let corpus = MatrixView::f32(&c, n, dim).unwrap();
        let mut opts = SearchOptions::new(k, Metric::Cosine);
        opts.precision = Precision::F32;
        let exact =
            super::super::search(&pool, &queries, &corpus, None, &opts, &mut NoHooks).unwrap();
        opts.precision = Precision::Rotated;
        opts.stage_cuts = Some(vec![4]);
        let inputs = SearchInputs {
            queries: &queries,
            query_ids: None,
            corpus: &corpus,
            exclude: None,
        };
        let run = |scale: f64| {
            let mut workspace = Workspace::default();
            let mut env = Env {
                pool: &pool,
                isa: Isa::Scalar,
                hooks: &mut NoHooks,
            };
            search_scaled(&mut workspace, &mut env, inputs, &opts, scale).unwrap()
        };
        assert_eq!(run(1.0), exact);
        assert_ne!(run(0.1).ids, exact.ids);
    }
}
