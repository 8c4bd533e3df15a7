//! Exact scores of chosen corpus rows against one query: the candidates an approximate source
//! proposed (int8 pre-scores, an hnsw graph, later a GPU or a remote shard). Rows are gathered
//! 16 at a time, transposed into a panel of [`ROWS`] columns as the search packs them, and
//! scored by [`kernels::score_rows`]: each score is the f32 kernels' fused multiply-add chain,
//! so bit for bit the score the exact search gives the pair.

use crate::error::Result;
use crate::kernels::{self, Isa, NR, ROWS};
use crate::matrix::{Elements, MatrixView};
use crate::pack::{self, AlignedBuf};

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
    /// cosine) and hands each `(id, score)` to `visit`, in the order of `ids`. `check` sees
    /// each corpus row as stored (widened from f16, before normalisation) and may refuse it.
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
                visit(id, score);
            }
        }
        Ok(())
    }
}
