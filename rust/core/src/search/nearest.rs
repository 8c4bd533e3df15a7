//! The nearest corpus row of every query, for callers that search the same rows again and
//! again against a small corpus that changes (k-means' assignment steps: the rows stay, the
//! centroids move). The rows are packed once ([`PackedRows`]); each call packs the small corpus
//! whole and keeps one best row per query instead of a top-k buffer. The scores are the f32
//! path's (same kernels, same depth chunks), so the result is its top 1 bit for bit.
//!
//! Rows coded once as int8 ([`PackedRows::code`]) are scored from their codes instead: the
//! int8 kernel's pre-scores and their proven bounds ([`crate::quant`]) leave a few corpus rows
//! per query that can hold its best score, and only those are scored in f32 (with the f32
//! kernel, on the packed corpus panels), so the result is the same bit for bit. Top 1 prunes
//! hardest: on real embeddings one to three rows of a few hundred are left.

use std::ops::Range;

use rayon::prelude::*;

use super::prescored::{bounded_best, CodedBlock, CodedRows};
use super::{depth_chunks, pack_block, run_tiles, stream, PackedBlock, Sink, Tiling, MC};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::kernels::{self, Isa, RowsOut, MR, NR, TILE};
use crate::matrix::MatrixView;
use crate::pack::AlignedBuf;

/// Rows packed as the f32 path packs queries, as they are (not normalised).
pub struct PackedRows {
    panels: AlignedBuf,
    rows: usize,
    dim: usize,
    /// The rows' int8 codes, for one ISA's kernel.
    coded: Option<CodedRows>,
}

impl PackedRows {
    /// Packs `rows`; a row with NaN or infinity is refused.
    pub fn new(pool: &rayon::ThreadPool, rows: &MatrixView<'_>) -> Result<Self> {
        let mut panels = AlignedBuf::new();
        stream::pack_queries(pool, rows, &mut panels, false, None, 0)?;
        Ok(PackedRows {
            panels,
            rows: rows.rows(),
            dim: rows.dim(),
            coded: None,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Codes the rows as int8 queries of `isa`'s kernel (about a quarter of the packed bytes
    /// more): [`nearest`] with that ISA then scores from the codes and rescores the few rows
    /// their bounds leave. Pays where int8 multiplies faster than f32
    /// ([`int8_is_fast`](crate::search::int8_is_fast)) and the corpus has more than a few
    /// dozen rows (k-means codes its rows from 64 centroids on).
    pub fn code(&mut self, pool: &rayon::ThreadPool, isa: Isa) {
        let packed = self.panels.as_slice();
        self.coded = Some(CodedRows::new(pool, isa, packed, self.dim, self.rows));
    }

    /// The query row `q` as stored (unpacked from its panel).
    fn row_into(&self, q: usize, out: &mut [f32]) {
        let panel = &self.panels.as_slice()[(q / MR) * self.dim * MR..][..self.dim * MR];
        for (p, x) in out.iter_mut().enumerate() {
            *x = panel[p * MR + q % MR];
        }
    }
}

/// One task's rows: the best score and corpus row of each so far.
struct Best<'a> {
    /// The kernel test's thresholds (the best scores; NaN before any, `+inf` for padding).
    thresholds: [f32; MC],
    best: &'a mut [(f32, u32)],
    corpus_rows: usize,
}

impl Sink for Best<'_> {
    fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    fn collect(&mut self, jr: usize, ir: usize, masks: &[u16; MR], tile: &[f32; TILE]) {
        for (i, &mask) in masks.iter().enumerate() {
            let q = ir * MR + i;
            if q >= self.best.len() {
                break;
            }
            let mut mask = mask;
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let id = jr * NR + j;
                if id >= self.corpus_rows {
                    // The last panel's zero padding.
                    break;
                }
                // Rows arrive in id order and the kernel passes only scores above the best
                // (`-0.0` is `+0.0`, as the search returns it): a tie keeps the smaller id.
                let score = tile[i * NR + j] + 0.0;
                let (best, _) = self.best[q];
                if best.is_nan() || score > best {
                    self.best[q] = (score, id as u32);
                    self.thresholds[q] = score;
                }
            }
        }
    }
}

/// The best row of `corpus` for each packed row in `range` (its start a multiple of the
/// panel height, [`MR`]): `(score, corpus row)` by dot product, the f32 search's top 1 bit
/// for bit (ties to the smaller row). The corpus is packed whole, so it should be small (a few
/// thousand rows); its rows must be finite, and no score may overflow: the caller bounds the
/// norms (the search's overflow and exclusion checks are not made here). `isa`: `None` picks
/// the fastest this CPU runs. `hooks` see progress (and Ctrl-C) between query groups.
pub fn nearest(
    pool: &rayon::ThreadPool,
    isa: Option<Isa>,
    rows: &PackedRows,
    range: Range<usize>,
    corpus: &MatrixView<'_>,
    hooks: &mut dyn Hooks,
) -> Result<Vec<(f32, u32)>> {
    let dim = rows.dim;
    assert!(
        range.start.is_multiple_of(MR) && range.end <= rows.rows && corpus.dim() == dim,
        "a range of packed rows starting at a panel, against a corpus of their width"
    );
    let n = corpus.rows();
    if n == 0 {
        return Err(Error::invalid("the corpus has no rows"));
    }
    let isa = isa.unwrap_or_else(Isa::detect);
    let mut block = PackedBlock::default();
    pool.install(|| pack_block(corpus, 0..n, &mut block, false, f64::INFINITY))
        .map_err(|bad| Error::invalid(format!("row {} contains NaN or infinity", bad.row())))?;
    if let Some(coded) = rows.coded.as_ref().filter(|c| c.isa() == isa) {
        let block = coded.code_block(pool, block);
        return nearest_coded(pool, rows, coded, range, &block, hooks);
    }
    let depth = depth_chunks(dim);
    let n_b = n.div_ceil(NR);
    let mut best = vec![(f32::NAN, u32::MAX); range.len()];
    // Groups of query groups between progress calls: about 16k rows.
    let step = MC * 112;
    let panels = rows.panels.as_slice();
    for (s, part) in best.chunks_mut(step).enumerate() {
        let first = range.start + s * step;
        pool.install(|| {
            part.par_chunks_mut(MC).enumerate().for_each(|(g, best)| {
                let first_row = first + g * MC;
                let mut thresholds = [f32::INFINITY; MC];
                thresholds[..best.len()].fill(f32::NAN);
                let mut sink = Best {
                    thresholds,
                    best,
                    corpus_rows: n,
                };
                let a_group = &panels[(first_row / MR) * dim * MR..];
                let n_a = sink.best.len().div_ceil(MR);
                let tiling = Tiling {
                    isa,
                    dim,
                    depth: &depth,
                };
                run_tiles(
                    tiling,
                    a_group,
                    n_a,
                    block.panels.as_slice(),
                    n_b,
                    &mut sink,
                );
            })
        });
        let done = (first - range.start + part.len()) as u64;
        hooks.progress(done, range.len() as u64)?;
    }
    Ok(best)
}

/// [`nearest`] from the rows' int8 codes: per group of rows, the corpus rows their bounds
/// leave, then those scored in f32 by the tile kernel (up to [`MR`] rows against each corpus
/// panel that holds one of theirs), the best kept with ties to the smaller id.
fn nearest_coded(
    pool: &rayon::ThreadPool,
    rows: &PackedRows,
    coded: &CodedRows,
    range: Range<usize>,
    block: &CodedBlock,
    hooks: &mut dyn Hooks,
) -> Result<Vec<(f32, u32)>> {
    let mut best = vec![(f32::NAN, u32::MAX); range.len()];
    let step = MC * 112;
    for (s, part) in best.chunks_mut(step).enumerate() {
        let first = range.start + s * step;
        pool.install(|| {
            part.par_chunks_mut(MC).enumerate().for_each_init(
                || vec![0.0f32; MC * rows.dim],
                |scratch, (g, best)| {
                    let first_row = first + g * MC;
                    let left = bounded_best(coded, block, first_row / MR, best.len());
                    rescore_best(coded.isa(), rows, first_row, block, &left, best, scratch);
                },
            )
        });
        let done = (first - range.start + part.len()) as u64;
        hooks.progress(done, range.len() as u64)?;
    }
    Ok(best)
}

/// Scores each row's candidates (`left[i]` for row `first_row + i`, ascending) exactly and
/// keeps the best: the panels of `block` are visited in order, each against the rows with a
/// candidate in it, [`MR`] rows per tile.
fn rescore_best(
    isa: Isa,
    rows: &PackedRows,
    first_row: usize,
    block: &CodedBlock,
    left: &[Vec<u32>],
    best: &mut [(f32, u32)],
    scratch: &mut [f32],
) {
    let dim = rows.dim;
    let panels = block.f32.panels.as_slice();
    let n_panels = panels.len() / (dim * NR).max(1);
    // The rows with a candidate in each panel (each row once per panel, in row order).
    let mut wanted: Vec<Vec<usize>> = vec![Vec::new(); n_panels];
    for (i, ids) in left.iter().enumerate() {
        rows.row_into(first_row + i, &mut scratch[i * dim..(i + 1) * dim]);
        let mut last = usize::MAX;
        for &id in ids {
            let panel = id as usize / NR;
            if panel != last {
                wanted[panel].push(i);
                last = panel;
            }
        }
    }
    let mut tile = [0.0f32; TILE];
    for (jr, queries) in wanted.iter().enumerate() {
        let b = &panels[jr * dim * NR..][..dim * NR];
        for chunk in queries.chunks(MR) {
            // Short chunks repeat their first row: its tile rows are not read.
            let mut tile_rows: [&[f32]; MR] = [&scratch[chunk[0] * dim..][..dim]; MR];
            for (slot, &i) in tile_rows.iter_mut().zip(chunk) {
                *slot = &scratch[i * dim..][..dim];
            }
            kernels::tile_rows(isa, dim, &tile_rows, b, RowsOut::Tile(&mut tile));
            for (r, &i) in chunk.iter().enumerate() {
                let panel_ids = left[i].iter().filter(|&&id| id as usize / NR == jr);
                for &id in panel_ids {
                    // `-0.0` as `+0.0`, as the search returns it.
                    let score = tile[r * NR + id as usize % NR] + 0.0;
                    let (held, held_id) = best[i];
                    if held.is_nan() || score > held || (score == held && id < held_id) {
                        best[i] = (score, id);
                    }
                }
            }
        }
    }
}
