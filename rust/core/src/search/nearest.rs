//! The nearest corpus row of every query, for callers that search the same rows again and
//! again against a small corpus that changes (k-means' assignment steps: the rows stay, the
//! centroids move). The rows are packed once ([`PackedRows`]); each call packs the small corpus
//! whole and keeps one best row per query instead of a top-k buffer. The scores are the f32
//! path's (same kernels, same depth chunks), so the result is its top 1 bit for bit.

use std::ops::Range;

use rayon::prelude::*;

use super::{depth_chunks, pack_block, run_tiles, stream, PackedBlock, Sink, Tiling, MC};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::kernels::{Isa, MR, NR, TILE};
use crate::matrix::MatrixView;
use crate::pack::AlignedBuf;

/// Rows packed as the f32 path packs queries, as they are (not normalised).
pub struct PackedRows {
    panels: AlignedBuf,
    rows: usize,
    dim: usize,
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
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
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
