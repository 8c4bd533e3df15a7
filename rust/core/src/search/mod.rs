//! Exact top-k search: the corpus streams through in blocks, each block is packed once and
//! scored against all queries of the batch with the fused kernels; the threads own disjoint
//! query groups (many queries) or disjoint corpus shards that are merged exactly (few queries).
//!
//! Every score is the same fused multiply-add chain whatever the blocking, so results are
//! identical for any thread count, block size and query batching.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::idlists::IdLists;
use crate::kernels::{self, Isa, Select, MR, NR, TILE};
use crate::matrix::MatrixView;
use crate::metric::{overflow_error, Metric};
use crate::pack::{self, AlignedBuf, BadRow, CorpusScratch};
use crate::topk::{Candidates, Scored};

mod nearest;
mod prescored;
mod rotated;
mod stream;

pub use nearest::{nearest, PackedRows};
pub use prescored::{int8_is_fast, Precision};

/// Knobs of [`search`]; `None` picks a tuned default. None of them changes the result.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub k: usize,
    pub metric: Metric,
    /// Corpus rows packed and scored at a time.
    pub block_rows: Option<usize>,
    /// Queries whose top-k buffers are held at once; the corpus is streamed once per batch.
    pub query_batch: Option<usize>,
    /// Kernel to use; `None` picks the fastest this CPU supports.
    pub isa: Option<Isa>,
    /// How candidates are pre-scored before the exact f32 scores (see [`Precision`]); every
    /// choice returns the same result.
    pub precision: Precision,
    /// The stage cuts of [`Precision::Rotated`] (ascending rotated dimensions, at most
    /// [`crate::rotation::MAX_STAGES`]); `None` picks them from the corpus' spectrum, or the
    /// f32 path where the spectrum is flat. Given, they are used whatever the spectrum.
    pub stage_cuts: Option<Vec<usize>>,
}

impl SearchOptions {
    pub fn new(k: usize, metric: Metric) -> Self {
        SearchOptions {
            k,
            metric,
            block_rows: None,
            query_batch: None,
            isa: None,
            precision: Precision::Auto,
            stage_cuts: None,
        }
    }
}

/// The result: `n_queries x k` row-major arrays, each row ranked (score descending, id
/// ascending on ties).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbors {
    pub k: usize,
    pub scores: Vec<f32>,
    pub ids: Vec<i64>,
}

/// Bounds of a [`ScoreCap`].
pub const CAP_BOUNDS: usize = 3;

/// A query's score cap in a [capped search](search_capped): rows scoring above the last bound
/// are not candidates; they are counted above each bound and the best-ranked of them kept
/// apart ([`AboveCap`]). The bounds are descending; `+inf` everywhere caps nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreCap {
    pub bounds: [f32; CAP_BOUNDS],
}

impl ScoreCap {
    pub const NONE: ScoreCap = ScoreCap {
        bounds: [f32::INFINITY; CAP_BOUNDS],
    };
}

/// What a capped search saw above a query's cap (its excluded rows left out).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AboveCap {
    /// `counts[j]`: rows scoring above `bounds[j]`.
    pub counts: [u64; CAP_BOUNDS],
    /// The best-ranked rows above the cap, ranked: at least the best `keep` (all of them when
    /// there are fewer).
    pub best: Vec<Scored>,
}

/// A query's rows above its cap while the corpus streams through.
#[derive(Clone)]
struct Above {
    bounds: [f32; CAP_BOUNDS],
    counts: [u64; CAP_BOUNDS],
    kept: Kept,
}

#[derive(Clone)]
enum Kept {
    Nothing,
    /// The best `k`, and the score a later row must beat (NaN until `k` were seen): rows
    /// come in id order, so an equal score ranks after the ones kept.
    Best(Candidates, f32),
    /// Every row above the cap.
    All(Vec<Scored>),
}

/// Up to this many rows above a cap are kept in a top-k buffer (it reserves about twice
/// that); past it, all of them, in a vector that grows with the rows seen (the caller then
/// records about all of them, or reads only its best ones).
const KEPT_BUFFER_MAX: usize = 1024;

impl Above {
    fn new(cap: &ScoreCap, keep: Option<usize>) -> Self {
        let kept = match keep {
            Some(0) => Kept::Nothing,
            Some(k) if k <= KEPT_BUFFER_MAX => Kept::Best(Candidates::new(k), f32::NAN),
            _ => Kept::All(Vec::new()),
        };
        Above {
            bounds: cap.bounds,
            counts: [0; CAP_BOUNDS],
            kept,
        }
    }

    #[inline]
    fn offer(&mut self, score: f32, id: u32) {
        for (count, &bound) in self.counts.iter_mut().zip(&self.bounds) {
            *count += u64::from(score > bound);
        }
        match &mut self.kept {
            Kept::Nothing => {}
            Kept::Best(best, threshold) => {
                // Scores are finite: `!(score <= threshold)`, NaN letting everything in.
                if threshold.is_nan() || score > *threshold {
                    if let Some(t) = best.push(score, id) {
                        *threshold = t;
                    }
                }
            }
            // Scores are finite here (the search refuses overflow) and canonical in the
            // result: `-0.0` is `+0.0` there too.
            Kept::All(all) => all.push(Scored {
                score: score + 0.0,
                id,
            }),
        }
    }

    /// Merges another shard's rows above the same query's cap.
    fn absorb(&mut self, other: Above) {
        for (count, o) in self.counts.iter_mut().zip(other.counts) {
            *count += o;
        }
        match (&mut self.kept, other.kept) {
            (Kept::Best(best, _), Kept::Best(o, _)) => best.absorb(o),
            (Kept::All(all), Kept::All(o)) => all.extend(o),
            _ => {}
        }
    }

    fn finish(self) -> AboveCap {
        let best = match self.kept {
            Kept::Nothing => Vec::new(),
            Kept::Best(best, _) => best.into_sorted(),
            Kept::All(mut all) => {
                all.sort_unstable_by(crate::topk::rank);
                all
            }
        };
        AboveCap {
            counts: self.counts,
            best,
        }
    }
}

/// The caps of a [capped search](search_capped): one per query, and how many of the rows
/// above each query's cap to keep (`None`: all).
#[derive(Clone, Copy)]
pub(crate) struct Caps<'a> {
    pub(crate) caps: &'a [ScoreCap],
    pub(crate) keep: Option<usize>,
}

/// What a search reads: its queries (rows `query_ids` of the caller's queries, which errors
/// name; `None`: the caller's own), the corpus, and each query's excluded rows.
#[derive(Clone, Copy)]
pub(crate) struct SearchInputs<'a> {
    pub(crate) queries: &'a MatrixView<'a>,
    pub(crate) query_ids: Option<&'a [usize]>,
    pub(crate) corpus: &'a MatrixView<'a>,
    pub(crate) exclude: Option<&'a IdLists>,
}

/// Where a search runs: its threads, its kernels and the caller's hooks.
pub(super) struct Env<'a> {
    pub(super) pool: &'a rayon::ThreadPool,
    pub(super) isa: Isa,
    pub(super) hooks: &'a mut dyn Hooks,
}

/// Queries per task: `MC / MR` query panels share each packed corpus micro-panel.
const MC: usize = 144;
/// Depth chunk: the corpus micro-panels of a step (`KC x NR`, two of them for the quad
/// kernel: 32 KiB at KC = 256) stay in L1 while the query panels stream.
const KC_MAX: usize = 256;
const DEFAULT_BLOCK_ROWS: usize = 2048;
/// Bytes of packed queries and top-k buffers per query batch.
const STATE_BUDGET: usize = 256 << 20;

fn depth_chunks(dim: usize) -> Vec<(usize, usize)> {
    let n = dim.div_ceil(KC_MAX).max(1);
    let base = dim.div_ceil(n);
    (0..n)
        .map(|i| (i * base, base.min(dim - i * base)))
        .filter(|&(_, kc)| kc > 0)
        .collect()
}

/// Checks the arguments, then calls `reserve` (which takes the result's memory) before the
/// queries are read; for `Metric::Dot` returns the query with the largest norm (global
/// index) and its squared norm, which bound the corpus rows' norms, and `reserve`'s value.
fn validate<R>(
    pool: &rayon::ThreadPool,
    inputs: &SearchInputs<'_>,
    opts: &SearchOptions,
    reserve: impl FnOnce() -> Result<R>,
) -> Result<(Option<(usize, f64)>, R)> {
    let SearchInputs {
        queries,
        query_ids,
        corpus,
        exclude,
    } = *inputs;
    let k = opts.k;
    if queries.dim() != corpus.dim() {
        return Err(Error::invalid(format!(
            "queries have dimension {} but the corpus has dimension {}",
            queries.dim(),
            corpus.dim()
        )));
    }
    if corpus.dim() == 0 {
        return Err(Error::invalid("embeddings have dimension 0"));
    }
    let n = corpus.rows();
    if n == 0 {
        return Err(Error::invalid("the corpus is empty"));
    }
    if n > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "the corpus has {n} rows; at most {} are supported",
            u32::MAX
        )));
    }
    if k == 0 {
        return Err(Error::invalid("k must be positive, got 0"));
    }
    match exclude {
        None if k > n => Err(Error::invalid(format!(
            "k = {k} is larger than the corpus ({n} rows)"
        ))),
        None => Ok(()),
        Some(ex) => {
            if ex.n_queries() != queries.rows() {
                return Err(Error::invalid(format!(
                    "exclude has {} queries but there are {} queries",
                    ex.n_queries(),
                    queries.rows()
                )));
            }
            match (0..ex.n_queries()).find(|&q| k > n - ex.of(q).len()) {
                Some(q) => Err(Error::invalid(format!(
                    "k = {k} is larger than the {} corpus rows left for query {q} after excluding {}",
                    n - ex.of(q).len(),
                    ex.of(q).len()
                ))),
                None => Ok(()),
            }
        }
    }?;
    let reserved = reserve()?;
    let non_finite = |row: usize| {
        Error::invalid(format!(
            "queries row {} contains NaN or infinity",
            query_name(query_ids, row)
        ))
    };
    let largest = match opts.metric {
        // Unit rows: every score is at most 1 in magnitude.
        Metric::Cosine => match queries.first_non_finite_row_in(pool) {
            Some(row) => Err(non_finite(row)),
            None => Ok(None),
        },
        Metric::Dot => match queries.largest_row_norm_in(pool) {
            Err(row) => Err(non_finite(row)),
            Ok((row, squared)) => Ok(Some((query_name(query_ids, row), squared))),
        },
    }?;
    Ok((largest, reserved))
}

/// The caller's index of query `row` of the matrix searched.
fn query_name(query_ids: Option<&[usize]>, row: usize) -> usize {
    query_ids.map_or(row, |ids| ids[row])
}

thread_local! {
    /// Partial sums of a task's tiles between depth chunks; reused to avoid page faults.
    static PARTIALS: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::new());
}

/// One corpus block as packed for the kernels.
#[derive(Default)]
struct PackedBlock {
    rows: Range<usize>,
    panels: AlignedBuf,
}

/// The packing buffers of [`search_in`], kept between calls: a caller that searches many times
/// (k-means' assignment steps) reuses them instead of faulting in and zeroing fresh pages on
/// every call. It holds the packed queries of one batch and a block per corpus shard.
#[derive(Default)]
pub struct Workspace {
    packed_queries: AlignedBuf,
    blocks: Vec<PackedBlock>,
    /// What the last call did.
    pub stats: SearchStats,
}

/// How a search went: the path taken and where the time went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchStats {
    /// The path taken (`Auto` resolved).
    pub precision: Precision,
    /// Per query, the rows rescored in f32 after int8 pre-scoring (empty on the f32 path).
    pub rescored: Vec<u32>,
    /// Seconds streaming the corpus through the kernels (all the scores on the f32 path, the
    /// pre-scores on the int8 path), and rescoring the rows kept.
    pub scan_seconds: f64,
    pub rescore_seconds: f64,
    /// The rotated path's stage cuts (empty on the other paths).
    pub stage_cuts: Vec<usize>,
    /// Per stage, the (query, row) pairs that passed it, summed over the queries: the last
    /// stage's are the rows rescored.
    pub stage_rows: Vec<u64>,
    /// Seconds building the rotated companion of the corpus (its principal axes and rotated
    /// rows), also when the spectrum turned out flat and the f32 path was taken.
    pub companion_seconds: f64,
    /// Where `Auto` probed whether int8 pays (large `k`): the rows the probe's queries
    /// rescored, on average ([`prescored::probe_pays`]).
    pub probe_rescored: Option<f64>,
}

/// A query group's share of one shard's state.
struct Task<'a> {
    shard: usize,
    /// First query panel of the group.
    first_panel: usize,
    candidates: &'a mut [Candidates],
    thresholds: &'a mut [f32],
    /// The rows above the queries' caps, in a capped search.
    above: Option<&'a mut [Above]>,
}

struct Scorer<'a> {
    tiling: Tiling<'a>,
    packed_queries: &'a [f32],
    /// Global index of the batch's first query (for exclusions).
    query_offset: usize,
    exclude: Option<&'a IdLists>,
}

/// What receives the tiles of [`run_tiles`]: the per-query thresholds of the kernel test, and
/// each tile (query panel `ir`, corpus panel `jr`) with its masks once its depth is complete.
pub(super) trait Sink {
    fn thresholds(&self) -> &[f32];
    fn collect(&mut self, jr: usize, ir: usize, masks: &[u16; MR], tile: &[f32; TILE]);
}

/// How the fused kernels walk the panels: the kernel, the dimensions of a panel and the chunks
/// their depth is cut into ([`depth_chunks`]).
#[derive(Clone, Copy)]
pub(super) struct Tiling<'a> {
    pub(super) isa: Isa,
    pub(super) dim: usize,
    pub(super) depth: &'a [(usize, usize)],
}

/// The fused kernels over `n_a` query panels (`a_group`, `[dim][MR]` each) against `n_b` corpus
/// panels (`b_block`, `[dim][NR]` each).
pub(super) fn run_tiles(
    tiling: Tiling<'_>,
    a_group: &[f32],
    n_a: usize,
    b_block: &[f32],
    n_b: usize,
    sink: &mut impl Sink,
) {
    let Tiling { isa, dim, depth } = tiling;
    let multi = depth.len() > 1;
    let mut singles = [[0.0f32; TILE]; 4];
    PARTIALS.with(|partials| {
        let mut partials = partials.borrow_mut();
        if multi {
            partials.resize(n_a * 2 * TILE);
        }
        let partials = partials.as_mut_slice();
        // Corpus panels one or two at a time (two: the quad kernel); for each, every depth
        // chunk against the task's query panels, one or two at a time. The partial sums
        // between chunks are then those of one or two corpus panels (a few KiB, in L1),
        // and a query's candidates arrive in id order.
        let mut jr = 0;
        while jr < n_b {
            let two_b = isa.quads_tiles() && jr + 1 < n_b;
            let cols = 1 + usize::from(two_b);
            for (ci, &(p0, kc)) in depth.iter().enumerate() {
                let accumulate = ci > 0;
                let last = ci + 1 == depth.len();
                let b = |j: usize| &b_block[((jr + j) * dim + p0) * NR..][..kc * NR];
                let a = |ir: usize| &a_group[(ir * dim + p0) * MR..][..kc * MR];
                let mut ir = 0;
                while ir < n_a {
                    let two_a = isa.pairs_tiles() && ir + 1 < n_a;
                    if two_a && two_b {
                        let at = [(ir, 0), (ir, 1), (ir + 1, 0), (ir + 1, 1)];
                        let [c00, c01, c10, c11] = tiles(partials, &mut singles, at, multi);
                        let masks = kernels::tile_quad(
                            isa,
                            kc,
                            [a(ir), a(ir + 1)],
                            [b(0), b(1)],
                            [[c00, c01], [c10, c11]],
                            accumulate,
                            last.then(|| {
                                let t = sink.thresholds();
                                [select(t, ir), select(t, ir + 1)]
                            }),
                        );
                        if last {
                            let tiles = [[&*c00, &*c01], [&*c10, &*c11]];
                            for (q, (m, t)) in masks.iter().zip(tiles).enumerate() {
                                for (j, (m, t)) in m.iter().zip(t).enumerate() {
                                    sink.collect(jr + j, ir + q, m, t);
                                }
                            }
                        }
                    } else if two_a {
                        for j in 0..cols {
                            let at = [(ir, j), (ir + 1, j)];
                            let [c0, c1] = tiles(partials, &mut singles, at, multi);
                            let masks = kernels::tile_pair(
                                isa,
                                kc,
                                [a(ir), a(ir + 1)],
                                b(j),
                                [c0, c1],
                                accumulate,
                                last.then(|| {
                                    let t = sink.thresholds();
                                    [select(t, ir), select(t, ir + 1)]
                                }),
                            );
                            if last {
                                sink.collect(jr + j, ir, &masks[0], c0);
                                sink.collect(jr + j, ir + 1, &masks[1], c1);
                            }
                        }
                    } else {
                        for j in 0..cols {
                            let [c0] = tiles(partials, &mut singles, [(ir, j)], multi);
                            let s = last.then(|| select(sink.thresholds(), ir));
                            let masks = kernels::tile(isa, kc, a(ir), b(j), c0, accumulate, s);
                            if last {
                                sink.collect(jr + j, ir, &masks, c0);
                            }
                        }
                    }
                    ir += 1 + usize::from(two_a);
                }
            }
            jr += cols;
        }
    });
}

/// The f32 path's sink: a task's candidates.
struct ExactSink<'s, 't> {
    scorer: &'s Scorer<'s>,
    task: Task<'t>,
    block: &'s PackedBlock,
}

impl Sink for ExactSink<'_, '_> {
    fn thresholds(&self) -> &[f32] {
        self.task.thresholds
    }

    fn collect(&mut self, jr: usize, ir: usize, masks: &[u16; MR], tile: &[f32; TILE]) {
        self.scorer
            .collect(&mut self.task, self.block, jr, ir, masks, tile);
    }
}

impl Scorer<'_> {
    fn run(&self, task: Task<'_>, block: &PackedBlock) {
        let n_a = task.candidates.len().div_ceil(MR);
        let n_b = block.rows.len().div_ceil(NR);
        let a_group = &self.packed_queries[task.first_panel * self.tiling.dim * MR..];
        let mut sink = ExactSink {
            scorer: self,
            task,
            block,
        };
        let b_block = block.panels.as_slice();
        run_tiles(self.tiling, a_group, n_a, b_block, n_b, &mut sink);
    }

    /// Offers the scores of tile (query panel `ir`, corpus panel `jr`) that passed their
    /// query's threshold to the query's candidates.
    fn collect(
        &self,
        task: &mut Task<'_>,
        block: &PackedBlock,
        jr: usize,
        ir: usize,
        masks: &[u16; MR],
        tile: &[f32; TILE],
    ) {
        if *masks == [0; MR] {
            return;
        }
        let cols = NR.min(block.rows.len() - jr * NR);
        let col_mask = if cols == NR {
            u16::MAX
        } else {
            (1u16 << cols) - 1
        };
        for (i, &mask) in masks.iter().enumerate() {
            let mut mask = mask & col_mask;
            let q = ir * MR + i;
            if mask == 0 || q >= task.candidates.len() {
                continue;
            }
            let excluded = self
                .exclude
                .map(|ex| ex.of(self.query_offset + task.first_panel * MR + q));
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let id = (block.rows.start + jr * NR + j) as u32;
                if excluded.is_some_and(|ex| ex.binary_search(&id).is_ok()) {
                    continue;
                }
                let score = tile[i * NR + j];
                // Rows above the cap pass every threshold (a threshold is a score kept, at
                // most the cap), so each one is seen here.
                if let Some(above) = task.above.as_deref_mut().map(|a| &mut a[q]) {
                    if score > above.bounds[CAP_BOUNDS - 1] {
                        above.offer(score, id);
                        continue;
                    }
                }
                if let Some(t) = task.candidates[q].push(score, id) {
                    task.thresholds[q] = t;
                }
            }
        }
    }
}

/// The thresholds of query panel `ir`.
fn select(thresholds: &[f32], ir: usize) -> Select<'_> {
    Select {
        thresholds: &thresholds[ir * MR..][..MR],
    }
}

/// The tiles at `at` (query panel, corpus panel 0 or 1 of the current pair) of a task: in
/// `partials` when the depth is cut into chunks (they carry partial sums from one chunk to the
/// next), else in `singles`.
fn tiles<'t, const N: usize>(
    partials: &'t mut [f32],
    singles: &'t mut [[f32; TILE]; 4],
    at: [(usize, usize); N],
    multi: bool,
) -> [&'t mut [f32; TILE]; N] {
    if multi {
        let ranges = at.map(|(ir, j)| {
            let start = (ir * 2 + j) * TILE;
            start..start + TILE
        });
        partials
            .get_disjoint_mut(ranges)
            .expect("distinct tiles inside the task's partial sums")
            .map(|t| t.try_into().expect("a tile"))
    } else {
        let mut free = singles.iter_mut();
        std::array::from_fn(|_| free.next().expect("at most four tiles"))
    }
}

fn pack_block(
    corpus: &MatrixView<'_>,
    rows: Range<usize>,
    block: &mut PackedBlock,
    cosine: bool,
    max_squared_norm: f64,
) -> Result<(), BadRow> {
    let dim = corpus.dim();
    let n_panels = rows.len().div_ceil(NR);
    block.panels.resize(n_panels * dim * NR);
    let start = rows.start;
    // Ending the view at the block's end makes the last panel's missing rows zero padding.
    let view = corpus.slice_rows(0, rows.end);
    block.rows = rows;
    block
        .panels
        .as_mut_slice()
        .par_chunks_mut(dim * NR)
        .enumerate()
        .map_init(
            || CorpusScratch::new(dim),
            |scratch, (p, out)| {
                pack::pack_corpus(
                    &view,
                    start + p * NR,
                    out,
                    scratch,
                    cosine,
                    max_squared_norm,
                )
            },
        )
        .min_by_key(|r| r.err().map_or(usize::MAX, BadRow::row))
        .unwrap_or(Ok(()))
}

/// The error for the first bad corpus row. Shards scan the corpus out of order, so the rows
/// before `bad` are checked again: the first one is named, whatever the thread count.
fn corpus_error(
    corpus: &MatrixView<'_>,
    bad: BadRow,
    largest_query: Option<(usize, f64)>,
    max_squared: f64,
) -> Error {
    let mut scratch = vec![0.0f32; corpus.dim()];
    let first = (0..bad.row())
        .find_map(|i| {
            let squared = corpus.row_squared_norm(i, &mut scratch);
            if !squared.is_finite() {
                Some(BadRow::NonFinite(i))
            } else if largest_query.is_some() && squared > max_squared {
                Some(BadRow::TooLong(i))
            } else {
                None
            }
        })
        .unwrap_or(bad);
    match (first, largest_query) {
        (BadRow::TooLong(row), Some((query, query_squared))) => overflow_error(
            corpus.dim(),
            query,
            query_squared,
            row,
            corpus.row_squared_norm(row, &mut scratch),
        ),
        (bad, _) => Error::invalid(format!("corpus row {} contains NaN or infinity", bad.row())),
    }
}

/// Exact top-k of every query against the corpus.
pub fn search(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    exclude: Option<&IdLists>,
    opts: &SearchOptions,
    hooks: &mut dyn Hooks,
) -> Result<Neighbors> {
    let mut workspace = Workspace::default();
    search_in(&mut workspace, pool, queries, corpus, exclude, opts, hooks)
}

/// [`search`], with what the search did.
pub fn search_with_stats(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    exclude: Option<&IdLists>,
    opts: &SearchOptions,
    hooks: &mut dyn Hooks,
) -> Result<(Neighbors, SearchStats)> {
    let mut workspace = Workspace::default();
    let found = search_in(&mut workspace, pool, queries, corpus, exclude, opts, hooks)?;
    Ok((found, workspace.stats))
}

/// [`search`] with the packing buffers of `workspace` (same results); `workspace.stats` says
/// what the call did.
pub fn search_in(
    workspace: &mut Workspace,
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    exclude: Option<&IdLists>,
    opts: &SearchOptions,
    hooks: &mut dyn Hooks,
) -> Result<Neighbors> {
    let inputs = SearchInputs {
        queries,
        query_ids: None,
        corpus,
        exclude,
    };
    search_rows(workspace, pool, inputs, opts, hooks)
}

/// [`search_in`] of `inputs`.
pub(crate) fn search_rows(
    workspace: &mut Workspace,
    pool: &rayon::ThreadPool,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
    hooks: &mut dyn Hooks,
) -> Result<Neighbors> {
    let isa = opts.isa.unwrap_or_else(Isa::detect);
    let mut env = Env { pool, isa, hooks };
    let (queries, corpus) = (inputs.queries, inputs.corpus);
    let (mut precision, mut probe) = (
        opts.precision
            .resolve(isa, opts.k, corpus.rows(), queries.rows()),
        None,
    );
    if precision == Precision::Auto {
        let (pays, rescored) = prescored::probe_pays(&mut env, inputs, opts)?;
        precision = if pays {
            Precision::Int8
        } else {
            Precision::F32
        };
        probe = Some(rescored);
    }
    let found = match precision {
        Precision::Int8 => prescored::search_rows(&mut env, inputs, opts, &mut workspace.stats)?,
        Precision::Rotated => {
            return rotated::search_rows(workspace, &mut env, inputs, opts);
        }
        Precision::Auto | Precision::F32 => search_f32(workspace, &mut env, inputs, opts, None)?.0,
    };
    workspace.stats.probe_rescored = probe;
    Ok(found)
}

/// [`search_rows`] under a score cap per query: each query's best `k` among the rows scoring
/// at most its cap (`-1` ids and `-inf` scores pad a row when fewer are left), and what it saw
/// above the cap. Always the f32 path (`opts.precision` is not read): the int8 pre-scoring
/// keeps no rows above the cap.
pub(crate) fn search_capped(
    workspace: &mut Workspace,
    pool: &rayon::ThreadPool,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
    caps: Caps<'_>,
    hooks: &mut dyn Hooks,
) -> Result<(Neighbors, Vec<AboveCap>)> {
    assert_eq!(caps.caps.len(), inputs.queries.rows(), "one cap per query");
    let isa = opts.isa.unwrap_or_else(Isa::detect);
    let mut env = Env { pool, isa, hooks };
    search_f32(workspace, &mut env, inputs, opts, Some(caps))
}

/// The f32 search, capped or not.
fn search_f32(
    workspace: &mut Workspace,
    env: &mut Env<'_>,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
    caps: Option<Caps<'_>>,
) -> Result<(Neighbors, Vec<AboveCap>)> {
    let started = std::time::Instant::now();
    let pool = env.pool;
    let k = opts.k;
    let (n_queries, n, dim) = (
        inputs.queries.rows(),
        inputs.corpus.rows(),
        inputs.corpus.dim(),
    );
    let threads = pool.current_num_threads().max(1);
    // A query in flight holds its packed row and its candidate buffer (`k <= n` once valid).
    let per_query_bytes =
        || (2 * k + 64) * std::mem::size_of::<Scored>() + dim * std::mem::size_of::<f32>();
    let (scan, (mut scores, mut ids)) =
        stream::Scan::new(pool, inputs, opts, per_query_bytes, |batch, _| {
            // The result, and a batch's candidates: each of its corpus shards (at most one
            // per thread) holds a buffer per query, of at most its rows.
            let batch = batch.min(n_queries);
            let per_query = (threads * Candidates::most_held(k)).min(n + threads * 64) as u64
                * std::mem::size_of::<Scored>() as u64
                + (dim * std::mem::size_of::<f32>()) as u64;
            crate::memory::topk_result(n_queries, k, per_query.saturating_mul(batch as u64), || {
                format!("a search result of {n_queries} queries x k = {k}")
            })
        })?;
    let depth = depth_chunks(dim);
    let mut done = 0u64;

    let mut above_out: Vec<AboveCap> = Vec::new();
    for batch_start in scan.batch_starts() {
        let packed_queries = &mut workspace.packed_queries;
        let batch = scan.batch(pool, batch_start, packed_queries)?;
        let batch_len = batch.len;
        let n_panels = batch_len.div_ceil(MR);
        let shards = batch.plan.shards();

        let mut candidates: Vec<Vec<Candidates>> = (0..shards)
            .map(|_| vec![Candidates::new(k); batch_len])
            .collect();
        let mut thresholds: Vec<Vec<f32>> = (0..shards)
            .map(|_| {
                let mut t = vec![f32::NAN; n_panels * MR];
                t[batch_len..].fill(f32::INFINITY);
                t
            })
            .collect();
        let mut above: Vec<Vec<Above>> = match caps {
            Some(caps) => (0..shards)
                .map(|_| {
                    caps.caps[batch_start..batch_start + batch_len]
                        .iter()
                        .map(|cap| Above::new(cap, caps.keep))
                        .collect()
                })
                .collect(),
            None => Vec::new(),
        };
        if workspace.blocks.len() < shards {
            workspace.blocks.resize_with(shards, PackedBlock::default);
        }
        let scorer = Scorer {
            tiling: Tiling {
                isa: env.isa,
                dim,
                depth: &depth,
            },
            packed_queries: packed_queries.as_slice(),
            query_offset: batch_start,
            exclude: inputs.exclude,
        };
        scan.stream(
            env,
            &batch,
            &mut done,
            &mut workspace.blocks[..shards],
            |rows, block| scan.pack_block(rows, block),
            |blocks| {
                let mut tasks = Vec::new();
                let mut above_shards = above.iter_mut();
                for (shard, (cands, thrs)) in candidates.iter_mut().zip(&mut thresholds).enumerate()
                {
                    let mut above_groups = above_shards.next().map(|a| a.chunks_mut(MC));
                    if blocks[shard].rows.is_empty() {
                        continue;
                    }
                    for (g, (c, t)) in cands.chunks_mut(MC).zip(thrs.chunks_mut(MC)).enumerate() {
                        tasks.push(Task {
                            shard,
                            first_panel: g * MC / MR,
                            candidates: c,
                            thresholds: t,
                            above: above_groups.as_mut().and_then(Iterator::next),
                        });
                    }
                }
                pool.install(|| {
                    tasks.into_par_iter().for_each(|task| {
                        let block = &blocks[task.shard];
                        scorer.run(task, block)
                    })
                });
            },
        )?;
        let merged = stream::merge_shards(pool, candidates, Candidates::absorb);
        stream::write_batch(pool, merged, &mut scores, &mut ids, batch_start, k);
        if !above.is_empty() {
            let merged = stream::merge_shards(pool, above, Above::absorb);
            above_out.extend(merged.into_iter().map(Above::finish));
        }
    }

    workspace.stats = SearchStats {
        precision: Precision::F32,
        rescored: Vec::new(),
        scan_seconds: started.elapsed().as_secs_f64(),
        rescore_seconds: 0.0,
        ..SearchStats::default()
    };
    Ok((Neighbors { k, scores, ids }, above_out))
}
