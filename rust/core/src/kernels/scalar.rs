//! The reference kernel: plain Rust, one fused multiply-add chain per score.

use super::{RowsOut, Select, MR, NR, TILE};

pub(super) fn tile(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32; TILE],
    accumulate: bool,
    select: Option<Select<'_>>,
) -> [u16; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            row.copy_from_slice(&c[i * NR..(i + 1) * NR]);
        }
    }
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (cij, &bj) in row.iter_mut().zip(bp) {
                *cij = ai.mul_add(bj, *cij);
            }
        }
    }
    let mut masks = [0u16; MR];
    if let Some(select) = select {
        for (i, row) in acc.iter().enumerate() {
            let threshold = select.thresholds[i];
            for (j, &score) in row.iter().enumerate() {
                // Unordered (NaN) passes, like the SIMD kernels' _CMP_NLE_UQ.
                if score.partial_cmp(&threshold) == Some(std::cmp::Ordering::Greater)
                    || score.is_nan()
                    || threshold.is_nan()
                {
                    masks[i] |= 1 << j;
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        c[i * NR..(i + 1) * NR].copy_from_slice(row);
    }
    masks
}

/// The reference of [`super::tile_rows`]: row `i` of the tile is `rows[i]` against each column
/// of the panel, one fused multiply-add chain per score.
pub(super) fn tile_rows(kc: usize, rows: &[&[f32]; MR], b: &[f32], out: RowsOut<'_>) {
    let mut c = [0.0f32; TILE];
    for (p, bp) in b.chunks_exact(NR).take(kc).enumerate() {
        for (i, row) in rows.iter().enumerate() {
            let x = row[p];
            for (cij, &bj) in c[i * NR..(i + 1) * NR].iter_mut().zip(bp) {
                *cij = x.mul_add(bj, *cij);
            }
        }
    }
    match out {
        RowsOut::Tile(tile) => *tile = c,
        RowsOut::Maxima(maxima, valid) => {
            for row in c.chunks_exact(NR).take(valid) {
                for (m, &v) in maxima.iter_mut().zip(row) {
                    // Ties (and +0 / -0) keep the value already there, as `max_ps(v, m)` does.
                    if v > *m {
                        *m = v;
                    }
                }
            }
        }
    }
}

/// The reference int8 kernel: `c[i][j] = sum_p a[p][i] * b[p][j]` over the packed groups of
/// [`GROUP`](super::GROUP) bytes, exactly, in i32.
pub(super) fn tile_i8(groups: usize, a: &[u8], b: &[i8], c: &mut [i32; TILE]) {
    use super::GROUP;
    c.fill(0);
    for (ag, bg) in a
        .chunks_exact(MR * GROUP)
        .zip(b.chunks_exact(NR * GROUP))
        .take(groups)
    {
        for i in 0..MR {
            let ai = &ag[i * GROUP..][..GROUP];
            for j in 0..NR {
                let bj = &bg[j * GROUP..][..GROUP];
                let dot: i32 = ai
                    .iter()
                    .zip(bj)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
                c[i * NR + j] += dot;
            }
        }
    }
}

/// The reference of [`super::score_rows`]: one chain per row.
pub(super) fn score_rows(query: &[f32], panel: &[f32], out: &mut [f32; super::ROWS]) {
    out.fill(0.0);
    for (&q, step) in query.iter().zip(panel.chunks_exact(super::ROWS)) {
        for (o, &x) in out.iter_mut().zip(step) {
            *o = q.mul_add(x, *o);
        }
    }
}

/// The reference of [`super::select_i8`].
pub(super) fn select_i8(
    tile: &[i32; TILE],
    offsets: &[i32],
    scales: &[f32],
    thresholds: &[f32],
) -> [u16; MR] {
    let mut masks = [0u16; MR];
    for (i, mask) in masks.iter_mut().enumerate() {
        *mask = select_i8_row(&tile[i * NR..][..NR], offsets, scales, thresholds[i]);
    }
    masks
}

pub(super) fn select_i8_row(dots: &[i32], offsets: &[i32], scales: &[f32], threshold: f32) -> u16 {
    let mut mask = 0u16;
    for j in 0..NR {
        let y = (dots[j] - offsets[j]) as f32 * scales[j];
        let below = y.partial_cmp(&threshold) == Some(std::cmp::Ordering::Less);
        mask |= u16::from(!below) << j;
    }
    mask
}

/// The reference of [`super::dots_i8_amx`]: `rows` query rows at `stride` against two panels.
pub(super) fn dots_i8_rows(
    groups: usize,
    queries: &[u8],
    stride: usize,
    rows: usize,
    panels: [&[i8]; 2],
    out: &mut [i32],
) {
    use super::GROUP;
    for r in 0..rows {
        let query = &queries[r * stride..][..groups * GROUP];
        for (p, panel) in panels.iter().enumerate() {
            for j in 0..NR {
                let mut dot = 0i32;
                for (g, bytes) in query.chunks_exact(GROUP).enumerate() {
                    let row = &panel[(g * NR + j) * GROUP..][..GROUP];
                    for (&x, &y) in bytes.iter().zip(row) {
                        dot += i32::from(x) * i32::from(y);
                    }
                }
                out[r * 2 * NR + p * NR + j] = dot;
            }
        }
    }
}
