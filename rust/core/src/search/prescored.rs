//! Exact search through int8 pre-scoring: the corpus streams through in blocks as in the f32
//! path, but each block is scored from int8 codes ([`crate::quant`]) by integer kernels. Every
//! pre-score `P` comes with a bound `B` such that the f32 path's score lies in `[P - B, P + B]`;
//! a row is kept while its upper bound reaches the k-th best lower bound of its query, and the
//! rows kept at the end are rescored with the f32 kernel itself. So the result is the f32
//! path's, bit for bit (scores, ids, ties), for any thread count, block size and ISA.

use rayon::prelude::*;

use super::{stream, Env, PackedBlock, SearchInputs, SearchOptions, MC};
use crate::choice::Choice;
use crate::error::Result;
use crate::hooks::Hooks;
use crate::idlists::IdLists;
use crate::kernels::{self, Isa, AMX_DEPTH, AMX_QUERY_ROWS, GROUP, MR, NR, TILE};
use crate::pack::{AlignedBuf, AlignedBytes};
use crate::quant::{self, down, up, ChainError, RowCode, CORPUS_LEVELS};
use crate::rescore::Rescorer;
use crate::search::{Neighbors, SearchStats};
use crate::topk::Candidates;

/// How candidates are scored before their exact f32 scores. The result is the same for each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// The fastest exact path for the CPU and the shapes.
    #[default]
    Auto,
    /// Every score in f32.
    F32,
    /// int8 pre-scores with a proven error bound, then the survivors in f32.
    Int8,
    /// Partial scores on the corpus' principal axes with a proven bound on the rest, then the
    /// survivors in f32 (the f32 path where the corpus' spectrum is flat).
    Rotated,
}

impl Choice for Precision {
    const ARGUMENT: &'static str = "precision";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", Precision::Auto),
        ("f32", Precision::F32),
        ("int8", Precision::Int8),
        ("rotated", Precision::Rotated),
    ];
}

impl Precision {
    /// The path `Auto` takes, or `Auto` itself where a probe must decide ([`probe_pays`]):
    /// int8 only where its integer kernel multiplies faster than the f32 one (AVX-512 VNNI or
    /// AMX-INT8; AVX2's byte multiplies run at the f32 rate) and the corpus is large enough
    /// for the rescoring to be a small share. Up to `k = 32` int8 always won where measured
    /// (1.2-7x the f32 path on real and isotropic data); above, each row whose bound reaches
    /// the running k-th lower bound is bounded and kept one by one, and whether that pays
    /// depends on the data (1.6x the f32 path on MiniLM embeddings at `k = 100`, 0.5x on
    /// isotropic data): a probe of a few queries decides where there are enough queries for
    /// it to be cheap, f32 where there are not.
    pub fn resolve(self, isa: Isa, k: usize, corpus_rows: usize, n_queries: usize) -> Precision {
        let int8_fast = int8_is_fast(isa);
        match self {
            Precision::Auto if !int8_fast || corpus_rows < 64 * k.max(16) => Precision::F32,
            Precision::Auto if k <= AUTO_INT8_MAX_K => Precision::Int8,
            Precision::Auto if n_queries >= PROBE_MIN_QUERIES => Precision::Auto,
            Precision::Auto => Precision::F32,
            other => other,
        }
    }
}

/// Whether `isa`'s int8 kernel multiplies faster than its f32 one: AVX-512 VNNI and AMX-INT8
/// do (2-4x the f32 rate where measured); AVX2's byte multiplies run at the f32 rate.
pub fn int8_is_fast(isa: Isa) -> bool {
    matches!(isa, Isa::Avx512 | Isa::Amx) && kernels::has_vnni()
}

/// The largest `k` for which `Auto` pre-scores in int8 without a probe.
pub const AUTO_INT8_MAX_K: usize = 32;
/// Queries the probe searches, and corpus rows it searches them in (the first ones).
const PROBE_QUERIES: usize = 64;
const PROBE_ROWS: usize = 1 << 16;
/// Below this many queries the probe would cost a noticeable share of the search: f32.
pub const PROBE_MIN_QUERIES: usize = 16 * PROBE_QUERIES;
/// int8 pays while the rows rescored per query stay below the corpus rows over this: at 283
/// (MiniLM, `k = 100`) int8 took 0.63x the f32 path's time (AMX; 0.76x with VNNI), at 96
/// (isotropic, `k = 100`) 1.8-2x, at 32 (MiniLM, `k = 1000`) 2.8x.
const PROBE_ROWS_PER_RESCORED: f64 = 200.0;

/// Hooks for the probe: it reads ahead like the search, but reports no progress and keeps the
/// pages it read (the search reads them again at once).
struct ProbeHooks<'a>(&'a mut dyn Hooks);

impl Hooks for ProbeHooks<'_> {
    fn will_read(&mut self, rows: std::ops::Range<usize>) {
        self.0.will_read(rows);
    }
}

/// The probe `Auto` runs above [`AUTO_INT8_MAX_K`]: the first [`PROBE_QUERIES`] queries
/// pre-scored in int8 against the first [`PROBE_ROWS`] corpus rows (without exclusions: they
/// change a few rows). Returns whether int8 pays, and the rows the probe rescored per query.
/// Counts, not timings: the choice is the same on every run, and the result the same either
/// way.
pub(super) fn probe_pays(
    env: &mut Env<'_>,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
) -> Result<(bool, f64)> {
    let rows = inputs.corpus.rows().min(PROBE_ROWS);
    let n = inputs.queries.rows().min(PROBE_QUERIES);
    let head = inputs.queries.slice_rows(0, n);
    let sample = inputs.corpus.slice_rows(0, rows);
    let probe_inputs = SearchInputs {
        queries: &head,
        query_ids: inputs.query_ids.map(|ids| &ids[..n]),
        corpus: &sample,
        exclude: None,
    };
    let mut stats = SearchStats::default();
    let mut probe_hooks = ProbeHooks(&mut *env.hooks);
    let mut probe_env = Env {
        pool: env.pool,
        isa: env.isa,
        hooks: &mut probe_hooks,
    };
    let mut popts = opts.clone();
    popts.k = opts.k.min(rows);
    search_rows(&mut probe_env, probe_inputs, &popts, &mut stats)?;
    let mean = stats.rescored.iter().map(|&r| f64::from(r)).sum::<f64>() / n.max(1) as f64;
    Ok((rows as f64 >= PROBE_ROWS_PER_RESCORED * mean, mean))
}

/// A query's candidates under bounds: the best `k` lower bounds give the threshold `T`, and
/// every row whose upper bound reaches `T` is kept for rescoring. Rows are offered in id order
/// within a shard, and `T` only grows, so dropping a row whose upper bound is below the
/// current `T` never drops a row of the final top k.
#[derive(Clone)]
struct Bounded {
    lower: Candidates,
    /// The k-th best lower bound so far (NaN until `k` rows were seen: everything passes).
    threshold: f32,
    /// `(upper bound, id)` of the rows kept.
    kept: Vec<(f32, u32)>,
    capacity: usize,
}

impl Bounded {
    fn new(k: usize) -> Self {
        Bounded {
            lower: Candidates::new(k),
            threshold: f32::NAN,
            kept: Vec::new(),
            capacity: 4 * k + 64,
        }
    }

    /// Offers a row; returns whether the threshold moved.
    #[inline]
    fn push(&mut self, lower: f32, upper: f32, id: u32) -> bool {
        let moved = match self.lower.push(lower, id) {
            Some(t) => {
                self.threshold = t;
                true
            }
            None => false,
        };
        if reaches(upper, self.threshold) {
            self.kept.push((upper, id));
            if self.kept.len() >= self.capacity {
                let t = self.threshold;
                self.kept.retain(|&(u, _)| reaches(u, t));
                // Wide bounds keep many rows: grow rather than compact over and over.
                if 2 * self.kept.len() >= self.capacity {
                    self.capacity *= 2;
                }
            }
        }
        moved
    }

    /// Merges the same query's state from another corpus shard.
    fn absorb(&mut self, other: Bounded) {
        self.kept.extend(other.kept);
        self.lower.absorb(other.lower);
    }

    /// The ids that can still be in the top `k`, ascending.
    fn survivors(self, k: usize) -> Vec<u32> {
        let lowers = self.lower.into_sorted();
        let t = if lowers.len() >= k {
            lowers[k - 1].score
        } else {
            f32::NEG_INFINITY
        };
        let mut ids: Vec<u32> = self
            .kept
            .into_iter()
            .filter(|&(u, _)| u >= t)
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// `!(x < t)`: `x` reaches the threshold `t`, which a NaN threshold (none yet) lets all do.
#[inline]
fn reaches(x: f32, t: f32) -> bool {
    x.partial_cmp(&t) != Some(std::cmp::Ordering::Less)
}

/// The threshold the kernel test `!(y < theta)` uses on `y = f32(I) * s_x` (computed in f32),
/// so that every row whose upper bound can reach `t` passes: `t - B_max` over the query's
/// scale, lowered by the f32 rounding of `y` (two roundings) and of this computation.
fn kernel_threshold(
    t: f32,
    query: &RowCode,
    worst: &RowCode,
    chain: &ChainError,
    scale: f64,
) -> f32 {
    if t.is_nan() || query.scale == 0.0 {
        return f32::NAN;
    }
    let bound = quant::bound_for(query, worst, chain) * scale;
    let scale = f64::from(query.scale);
    let theta = (f64::from(t) - bound) / scale;
    let cancel = (f64::from(t).abs() + bound) / scale * (4.0 * f64::EPSILON);
    let rounding = theta.abs() * (4.0 * f64::from(f32::EPSILON)) + f64::from(f32::from_bits(2));
    down(theta - cancel - rounding)
}

/// One corpus block as int8 codes: `[panel][group][NR][GROUP]`, with each row's codes.
#[derive(Default)]
pub(super) struct CodedBlock {
    /// The block as the f32 path packs it (the exact scores are taken from these panels).
    pub(super) f32: PackedBlock,
    codes: AlignedBytes,
    rows: Vec<RowCode>,
    /// Each row's scale, for the kernel test.
    scales: Vec<f32>,
    /// `offset * sum(codes)` per row: what the query bytes' offset adds to each dot.
    offsets: Vec<i32>,
    /// The block's largest norms, for the kernel test.
    worst: RowCode,
}

/// Codes of one f32 corpus panel (`[dim][NR]`) into `out` (`[group][NR][GROUP]`).
fn code_corpus_panel(
    panel: &[f32],
    query_offset: i32,
    out: &mut [i8],
    rows: &mut [RowCode],
    offsets: &mut [i32],
    codes: &mut [i8],
) {
    rows.copy_from_slice(&quant::quantize_lanes::<NR>(panel, CORPUS_LEVELS, codes));
    let mut sums = [0i32; NR];
    out.fill(0);
    // Up to GROUP steps of NR codes make one group of the packed panel.
    for (steps, group) in codes
        .chunks(NR * GROUP)
        .zip(out.chunks_exact_mut(NR * GROUP))
    {
        for (byte, step) in steps.chunks_exact(NR).enumerate() {
            for (j, &c) in step.iter().enumerate() {
                group[j * GROUP + byte] = c;
                sums[j] += i32::from(c);
            }
        }
    }
    for (o, s) in offsets.iter_mut().zip(sums) {
        *o = query_offset * s;
    }
}

impl CodedBlock {
    /// Codes the block's rows into `groups` depth groups (at least `dim / GROUP`; the rest are
    /// zero bytes, which add nothing to any dot).
    fn code(&mut self, dim: usize, groups: usize, query_offset: i32) {
        let n_panels = self.f32.rows.len().div_ceil(NR);
        // Every panel's bytes are written below (padding included): no fill needed.
        self.codes.resize(n_panels * groups * NR * GROUP, 0);
        self.rows.resize(n_panels * NR, RowCode::default());
        self.offsets.resize(n_panels * NR, 0);
        self.f32
            .panels
            .as_slice()
            .par_chunks(dim * NR)
            .zip(self.codes.as_i8_mut().par_chunks_mut(groups * NR * GROUP))
            .zip(self.rows.par_chunks_mut(NR))
            .zip(self.offsets.par_chunks_mut(NR))
            .for_each_init(
                || vec![0i8; dim * NR],
                |codes, (((panel, out), rows), offsets)| {
                    code_corpus_panel(panel, query_offset, out, rows, offsets, codes)
                },
            );
        self.scales.clear();
        self.scales.extend(self.rows.iter().map(|r| r.scale));
        self.worst = self.rows.iter().fold(RowCode::default(), |w, r| RowCode {
            scale: w.scale.max(r.scale),
            norm: w.norm.max(r.norm),
            code_norm: w.code_norm.max(r.code_norm),
            residual: w.residual.max(r.residual),
        });
    }
}

/// Query code bytes the AMX path keeps in L1 at once (half of a 48 KiB L1).
const AMX_L1_QUERY_BYTES: usize = 24 << 10;

/// How many depth groups the int8 kernels of `isa` run over `dim` dimensions: AMX tiles take
/// whole 64-byte chunks.
fn depth_groups(isa: Isa, dim: usize) -> usize {
    if isa.amx_tiles() {
        dim.div_ceil(AMX_DEPTH) * AMX_DEPTH / GROUP
    } else {
        dim.div_ceil(GROUP)
    }
}

/// A query group's share of one shard's state.
struct Task<'a> {
    shard: usize,
    first_panel: usize,
    bounded: &'a mut [Bounded],
    thresholds: &'a mut [f32],
}

struct Scorer<'a> {
    isa: Isa,
    groups: usize,
    chain: ChainError,
    /// 1 except in the test that shows a too-small bound gives wrong results.
    bound_scale: f64,
    /// Query codes (offset bytes): `[panel][group][MR][GROUP]`, or with AMX tiles one row of
    /// `groups * GROUP` bytes per query, `AMX_QUERY_ROWS` rows of padding past the last.
    query_codes: &'a [u8],
    queries: &'a [RowCode],
    query_offset: usize,
    exclude: Option<&'a IdLists>,
}

impl Scorer<'_> {
    fn run(&self, mut task: Task<'_>, block: &CodedBlock) {
        let n_queries = task.bounded.len();
        let n_a = n_queries.div_ceil(MR);
        let n_b = block.f32.rows.len().div_ceil(NR);
        let panel_bytes = self.groups * GROUP;
        let first = task.first_panel * MR;
        for (q, t) in task.thresholds.iter_mut().enumerate() {
            let bounded = &task.bounded[q];
            *t = kernel_threshold(
                bounded.threshold,
                &self.queries[first + q],
                &block.worst,
                &self.chain,
                self.bound_scale,
            );
        }
        if self.isa.amx_tiles() {
            self.run_amx(&mut task, block);
            return;
        }
        let mut tile = [0i32; TILE];
        for jr in 0..n_b {
            let b = &block.codes.as_i8()[jr * panel_bytes * NR..][..panel_bytes * NR];
            let cols = NR.min(block.f32.rows.len() - jr * NR);
            for ir in 0..n_a {
                let a = &self.query_codes[(task.first_panel + ir) * panel_bytes * MR..]
                    [..panel_bytes * MR];
                kernels::tile_i8(self.isa, self.groups, a, b, &mut tile);
                self.collect(&mut task, block, jr, ir, cols, &tile);
            }
        }
    }

    /// [`Self::run`] through AMX tiles: the task's queries against two corpus panels at a
    /// time, then the kernel test row by row.
    fn run_amx(&self, task: &mut Task<'_>, block: &CodedBlock) {
        let n_queries = task.bounded.len();
        let n_rows = block.f32.rows.len();
        let n_b = n_rows.div_ceil(NR);
        let depth = self.groups * GROUP;
        // Each query tile is loaded once per corpus panel pair: as many queries as fill half
        // of L1 stay there while the block's panels stream past them.
        let step = (AMX_L1_QUERY_BYTES / depth / AMX_QUERY_ROWS).max(1) * AMX_QUERY_ROWS;
        let mut dots = AlignedBytes::default();
        dots.filled(step * 2 * NR * 4, 0);
        let dots = dots.as_i32_mut();
        let panel = |jr: usize| &block.codes.as_i8()[jr * depth * NR..][..depth * NR];
        for first in (0..n_queries).step_by(step) {
            let len = step.min(n_queries - first);
            let pairs = len.div_ceil(AMX_QUERY_ROWS);
            let queries = &self.query_codes[(task.first_panel * MR + first) * depth..];
            for jr in (0..n_b).step_by(2) {
                // An odd last panel goes twice; its second copy is not read.
                let second = if jr + 1 < n_b { jr + 1 } else { jr };
                kernels::dots_i8_amx(
                    self.groups,
                    queries,
                    depth,
                    pairs,
                    [panel(jr), panel(second)],
                    dots,
                );
                for p in 0..(n_b - jr).min(2) {
                    let jp = jr + p;
                    let cols = NR.min(n_rows - jp * NR);
                    let offsets = &block.offsets[jp * NR..][..NR];
                    let scales = &block.scales[jp * NR..][..NR];
                    let valid = (1u32 << cols) - 1;
                    for i in 0..len {
                        let q = first + i;
                        let row = &dots[i * 2 * NR + p * NR..][..NR];
                        let threshold = task.thresholds[q];
                        let mask =
                            kernels::select_i8_row(self.isa, row, offsets, scales, threshold);
                        // Most rows fail the test: skip the call for them.
                        let mask = u32::from(mask) & valid;
                        if mask != 0 {
                            self.offer(task, block, jp, q, row, mask);
                        }
                    }
                }
            }
        }
    }

    /// Applies the kernel test to a tile and offers the rows that pass to their queries.
    fn collect(
        &self,
        task: &mut Task<'_>,
        block: &CodedBlock,
        jr: usize,
        ir: usize,
        cols: usize,
        tile: &[i32; TILE],
    ) {
        let offsets = &block.offsets[jr * NR..][..NR];
        let thresholds = &task.thresholds[ir * MR..];
        let masks = if thresholds.len() >= MR {
            kernels::select_i8(
                self.isa,
                tile,
                offsets,
                &block.scales[jr * NR..],
                thresholds,
            )
        } else {
            // The group's last panel is short: pad its missing queries' thresholds.
            let mut padded = [f32::INFINITY; MR];
            padded[..thresholds.len()].copy_from_slice(thresholds);
            kernels::select_i8(self.isa, tile, offsets, &block.scales[jr * NR..], &padded)
        };
        let valid = (1u32 << cols) - 1;
        for (i, &mask) in masks.iter().enumerate() {
            let q = ir * MR + i;
            if q >= task.bounded.len() {
                break;
            }
            let mask = u32::from(mask) & valid;
            if mask != 0 {
                self.offer(task, block, jr, q, &tile[i * NR..][..NR], mask);
            }
        }
    }

    /// Offers the rows of corpus panel `jr` that passed the kernel test (`mask`, over the
    /// panel's valid columns; `dots` their int8 dots) to the task's query `q`, largest scaled
    /// dot first: the first offers raise the threshold, and a row whose scaled dot fails the
    /// raised kernel test (the test the kernel applies, so it drops only rows whose upper
    /// bound cannot reach the threshold) is not offered. Which rows survive does not depend
    /// on the order (see [`Bounded`]); how many are offered does, most where few rows hold
    /// the threshold (top 1 against a few hundred centroids).
    fn offer(
        &self,
        task: &mut Task<'_>,
        block: &CodedBlock,
        jr: usize,
        q: usize,
        dots: &[i32],
        mut mask: u32,
    ) {
        let rows = &block.rows[jr * NR..][..NR];
        let offsets = &block.offsets[jr * NR..][..NR];
        let scales = &block.scales[jr * NR..][..NR];
        let global = self.query_offset + task.first_panel * MR + q;
        let query = &self.queries[task.first_panel * MR + q];
        let excluded = self.exclude.map(|ex| ex.of(global));
        // The kernel test's `y` (see `select_i8_row`) of column `j`.
        let scaled = |j: usize| (dots[j] - offsets[j]) as f32 * scales[j];
        // The largest `y` first, then the others in column order.
        let first = if mask & (mask - 1) == 0 {
            mask.trailing_zeros() as usize
        } else {
            let mut bits = mask;
            let mut best = (f32::NEG_INFINITY, mask.trailing_zeros() as usize);
            while bits != 0 {
                let j = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if scaled(j) > best.0 {
                    best = (scaled(j), j);
                }
            }
            best.1
        };
        mask &= !(1 << first);
        let rest = std::iter::from_fn(|| {
            (mask != 0).then(|| {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                j
            })
        });
        for j in std::iter::once(first).chain(rest) {
            if !reaches(scaled(j), task.thresholds[q]) {
                continue;
            }
            let id = (block.f32.rows.start + jr * NR + j) as u32;
            if excluded.is_some_and(|ex| ex.binary_search(&id).is_ok()) {
                continue;
            }
            let (p, b) = quant::prescore(query, &rows[j], dots[j] - offsets[j], &self.chain);
            let b = b * self.bound_scale;
            let bounded = &mut task.bounded[q];
            if bounded.push(down(p - b), up(p + b), id) {
                task.thresholds[q] = kernel_threshold(
                    bounded.threshold,
                    query,
                    &block.worst,
                    &self.chain,
                    self.bound_scale,
                );
            }
        }
    }
}

/// Rows packed as the f32 path packs queries, coded once as int8 queries for one ISA's
/// kernel: what [`bounded_best`] scores them from (k-means' assignment codes its training
/// rows once for all iterations).
pub(super) struct CodedRows {
    isa: Isa,
    dim: usize,
    groups: usize,
    levels: i32,
    chain: ChainError,
    codes: AlignedBytes,
    rows: Vec<RowCode>,
}

impl CodedRows {
    /// Codes `n_rows` rows packed `[panel][dim][MR]` for `isa`'s int8 kernel.
    pub(super) fn new(
        pool: &rayon::ThreadPool,
        isa: Isa,
        packed: &[f32],
        dim: usize,
        n_rows: usize,
    ) -> Self {
        let groups = depth_groups(isa, dim);
        let levels = kernels::query_levels(isa);
        let (codes, rows) =
            pool.install(|| code_queries(packed, dim, groups, n_rows, levels, isa.amx_tiles()));
        CodedRows {
            isa,
            dim,
            groups,
            levels,
            chain: quant::chain_error(dim),
            codes,
            rows,
        }
    }

    pub(super) fn isa(&self) -> Isa {
        self.isa
    }

    /// A packed corpus block coded to be scored against these rows.
    pub(super) fn code_block(&self, pool: &rayon::ThreadPool, block: PackedBlock) -> CodedBlock {
        let dim = self.dim;
        let mut coded = CodedBlock {
            f32: block,
            ..CodedBlock::default()
        };
        pool.install(|| coded.code(dim, self.groups, quant::query_offset(self.levels)));
        coded
    }
}

/// For the `n` coded rows from panel `first_panel` on, the rows of `block` that can hold each
/// one's best f32 score, ascending: those whose upper bound reaches the row's best lower
/// bound. Scoring them in f32 and keeping the best (ties to the smaller id) gives the f32
/// search's top 1.
pub(super) fn bounded_best(
    coded: &CodedRows,
    block: &CodedBlock,
    first_panel: usize,
    n: usize,
) -> Vec<Vec<u32>> {
    let scorer = Scorer {
        isa: coded.isa,
        groups: coded.groups,
        chain: coded.chain,
        bound_scale: 1.0,
        query_codes: coded.codes.as_slice(),
        queries: &coded.rows,
        query_offset: 0,
        exclude: None,
    };
    let mut bounded = vec![Bounded::new(1); n];
    let mut thresholds = vec![f32::NAN; n];
    let task = Task {
        shard: 0,
        first_panel,
        bounded: &mut bounded,
        thresholds: &mut thresholds,
    };
    scorer.run(task, block);
    bounded.into_iter().map(|b| b.survivors(1)).collect()
}

/// Quantizes the packed f32 query panels (`[dim][MR]`) into offset int8 codes over `groups`
/// depth groups: panels `[panel][group][MR][GROUP]`, or with `rows` one row per query (the
/// AMX layout, `AMX_QUERY_ROWS` rows of padding past the last). Padding bytes hold the offset
/// (a zero code); corpus padding bytes are zero, so they add nothing.
fn code_queries(
    packed: &[f32],
    dim: usize,
    groups: usize,
    n_queries: usize,
    levels: i32,
    rows_layout: bool,
) -> (AlignedBytes, Vec<RowCode>) {
    let offset = quant::query_offset(levels);
    let n_panels = n_queries.div_ceil(MR);
    let depth = groups * GROUP;
    let len = if rows_layout {
        (n_panels * MR + AMX_QUERY_ROWS) * depth
    } else {
        n_panels * MR * depth
    };
    let mut codes = AlignedBytes::default();
    codes.filled(len, offset as u8);
    let mut rows = vec![RowCode::default(); n_panels * MR];
    // Either layout gives each panel's MR queries `MR * depth` consecutive bytes.
    codes
        .as_mut_slice()
        .par_chunks_mut(MR * depth)
        .zip(rows.par_chunks_mut(MR))
        .zip(packed.par_chunks(dim * MR))
        .for_each_init(
            || vec![0i8; dim * MR],
            |code, ((out, rows), panel)| {
                rows.copy_from_slice(&quant::quantize_lanes::<MR>(panel, levels, code));
                for (p, step) in code.chunks_exact(MR).enumerate() {
                    for (i, &c) in step.iter().enumerate() {
                        let at = if rows_layout {
                            i * depth + p
                        } else {
                            (p / GROUP) * MR * GROUP + i * GROUP + p % GROUP
                        };
                        out[at] = (i32::from(c) + offset) as u8;
                    }
                }
            },
        );
    (codes, rows)
}

/// [`super::search_rows`] through int8 pre-scoring (same arguments, same result); `stats`
/// gets what it did.
pub(super) fn search_rows(
    env: &mut Env<'_>,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
    stats: &mut SearchStats,
) -> Result<Neighbors> {
    search_bounded(env, inputs, opts, stats, 1.0)
}

/// [`search_rows`] with every bound multiplied by `bound_scale`.
fn search_bounded(
    env: &mut Env<'_>,
    inputs: SearchInputs<'_>,
    opts: &SearchOptions,
    stats: &mut SearchStats,
    bound_scale: f64,
) -> Result<Neighbors> {
    let (mut scan_seconds, mut rescore_seconds) = (0.0, 0.0);
    let (pool, isa) = (env.pool, env.isa);
    let k = opts.k;
    let corpus = inputs.corpus;
    let dim = corpus.dim();
    // A query in flight holds its codes, norms and bounded candidates (about 6k entries;
    // `k <= n` once valid); each corpus shard about `6k` bounded entries of 8 bytes.
    let per_query_bytes = || (6 * k + 128) * 8 + dim * 5;
    let (scan, (mut scores, mut ids, mut rescored)) =
        stream::Scan::bounded(pool, inputs, opts, per_query_bytes, (8, 5))?;
    let cosine = scan.cosine;
    let groups = depth_groups(isa, dim);
    let chain = quant::chain_error(dim);
    let levels = kernels::query_levels(isa);
    let mut done = 0u64;

    let mut packed_queries = AlignedBuf::new();
    let mut blocks: Vec<CodedBlock> = Vec::new();
    for batch_start in scan.batch_starts() {
        let scan_started = std::time::Instant::now();
        let batch = scan.batch(pool, batch_start, &mut packed_queries)?;
        let batch_len = batch.len;
        let shards = batch.plan.shards();
        let (query_codes, query_rows) = pool.install(|| {
            let packed = packed_queries.as_slice();
            code_queries(packed, dim, groups, batch_len, levels, isa.amx_tiles())
        });

        let mut bounded: Vec<Vec<Bounded>> = (0..shards)
            .map(|_| vec![Bounded::new(k); batch_len])
            .collect();
        let mut thresholds: Vec<Vec<f32>> =
            (0..shards).map(|_| vec![f32::NAN; batch_len]).collect();
        if blocks.len() < shards {
            blocks.resize_with(shards, CodedBlock::default);
        }
        let scorer = Scorer {
            isa,
            groups,
            chain,
            bound_scale,
            query_codes: query_codes.as_slice(),
            queries: &query_rows,
            query_offset: batch_start,
            exclude: inputs.exclude,
        };
        let offset = quant::query_offset(levels);
        scan.stream(
            env,
            &batch,
            &mut done,
            &mut blocks[..shards],
            |rows, block| {
                scan.pack_block(rows, &mut block.f32)?;
                block.code(dim, groups, offset);
                Ok(())
            },
            |blocks| {
                let mut tasks = Vec::new();
                for (shard, (b, t)) in bounded.iter_mut().zip(&mut thresholds).enumerate() {
                    if blocks[shard].f32.rows.is_empty() {
                        continue;
                    }
                    for (g, (b, t)) in b.chunks_mut(MC).zip(t.chunks_mut(MC)).enumerate() {
                        tasks.push(Task {
                            shard,
                            first_panel: g * MC / MR,
                            bounded: b,
                            thresholds: t,
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
        scan_seconds += scan_started.elapsed().as_secs_f64();
        let rescore_started = std::time::Instant::now();
        let merged = stream::merge_shards(pool, bounded, Bounded::absorb);
        let packed = packed_queries.as_slice();
        let out_scores = &mut scores[batch_start * k..(batch_start + batch_len) * k];
        let out_ids = &mut ids[batch_start * k..(batch_start + batch_len) * k];
        let out_rescored = &mut rescored[batch_start..batch_start + batch_len];
        pool.install(|| {
            merged
                .into_par_iter()
                .zip(out_scores.par_chunks_mut(k).zip(out_ids.par_chunks_mut(k)))
                .zip(out_rescored.par_iter_mut())
                .enumerate()
                .for_each_init(
                    || (Rescorer::new(isa, dim, cosine), vec![0.0f32; dim]),
                    |(rescorer, query), (q, ((bounded, (s_row, i_row)), count))| {
                        let survivors = bounded.survivors(k);
                        *count = survivors.len() as u32;
                        let panel = &packed[(q / MR) * dim * MR..][..dim * MR];
                        for (p, x) in query.iter_mut().enumerate() {
                            *x = panel[p * MR + q % MR];
                        }
                        let mut best = Candidates::new(k);
                        let rescored = rescorer.score(
                            corpus,
                            query,
                            &survivors,
                            |_, _| Ok(()),
                            |id, score| {
                                best.push(score, id);
                            },
                        );
                        debug_assert!(rescored.is_ok(), "no row is refused here");
                        for (j, c) in best.into_sorted().into_iter().enumerate() {
                            s_row[j] = c.score;
                            i_row[j] = i64::from(c.id);
                        }
                    },
                )
        });
        rescore_seconds += rescore_started.elapsed().as_secs_f64();
    }
    *stats = SearchStats {
        precision: Precision::Int8,
        rescored,
        scan_seconds,
        rescore_seconds,
        ..SearchStats::default()
    };
    Ok(Neighbors { k, scores, ids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::NoHooks;
    use crate::matrix::MatrixView;
    use crate::metric::Metric;

    #[test]
    fn auto_takes_int8_for_small_k_probes_above_and_keeps_f32_where_int8_is_slow() {
        let fast = Isa::available()
            .into_iter()
            .filter(|&i| matches!(i, Isa::Avx512 | Isa::Amx) && kernels::has_vnni());
        for isa in fast {
            let resolve = |k, n, q| Precision::Auto.resolve(isa, k, n, q);
            assert_eq!(resolve(10, 100_000, 10), Precision::Int8);
            assert_eq!(resolve(AUTO_INT8_MAX_K, 100_000, 10), Precision::Int8);
            assert_eq!(resolve(100, 100_000, PROBE_MIN_QUERIES), Precision::Auto);
            assert_eq!(resolve(100, 100_000, PROBE_MIN_QUERIES - 1), Precision::F32);
            // Too small a corpus for the rescoring to be a small share.
            assert_eq!(resolve(10, 1000, 10), Precision::F32);
            assert_eq!(resolve(1000, 60_000, 10_000), Precision::F32);
        }
        for isa in [Isa::Scalar, Isa::Avx2Fma] {
            assert_eq!(
                Precision::Auto.resolve(isa, 10, 1 << 20, 1 << 20),
                Precision::F32
            );
        }
        for p in [Precision::F32, Precision::Int8, Precision::Rotated] {
            assert_eq!(p.resolve(Isa::Scalar, 100, 10, 10), p);
        }
    }

    /// The property tests compare this path with the f32 one bit for bit; this shows they can
    /// fail: with its bound shrunk to a tenth, the int8 path drops rows of the true top k.
    #[test]
    fn a_too_small_bound_gives_a_different_result() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (n_queries, n, dim, k) = (20, 400, 48, 10);
        let mut rng = crate::rng::Rng::stream(5, 0, 0, 0);
        // Rows that differ below the int8 resolution: their pre-scores order them by
        // rounding, not by their scores, so only the bound keeps the right ones.
        let base: Vec<f32> = (0..dim).map(|_| rng.unit() as f32 - 0.5).collect();
        let mut near = |rows: usize, spread: f32| -> Vec<f32> {
            (0..rows * dim)
                .map(|i| base[i % dim] + spread * (rng.unit() as f32 - 0.5))
                .collect()
        };
        let (q, c) = (near(n_queries, 0.2), near(n, 1e-3));
        let queries = MatrixView::f32(&q, n_queries, dim).unwrap();
        let corpus = MatrixView::f32(&c, n, dim).unwrap();
        let mut opts = SearchOptions::new(k, Metric::Cosine);
        opts.precision = Precision::F32;
        let exact =
            super::super::search(&pool, &queries, &corpus, None, &opts, &mut NoHooks).unwrap();
        opts.precision = Precision::Int8;
        // Every int8 kernel the CPU has with full-byte queries (AMX tiles pad the depth:
        // another code path); AVX2's half-resolution queries have bounds wide enough that a
        // tenth of them still keeps these rows.
        let full_bytes = Isa::available()
            .into_iter()
            .filter(|&i| kernels::query_levels(i) == 127);
        for isa in full_bytes {
            let inputs = SearchInputs {
                queries: &queries,
                query_ids: None,
                corpus: &corpus,
                exclude: None,
            };
            let run = |scale: f64| {
                let mut env = Env {
                    pool: &pool,
                    isa,
                    hooks: &mut NoHooks,
                };
                let mut stats = SearchStats::default();
                search_bounded(&mut env, inputs, &opts, &mut stats, scale).unwrap()
            };
            assert_eq!(run(1.0), exact, "{isa:?}");
            assert_ne!(run(0.1).ids, exact.ids, "{isa:?}");
        }
    }
}
