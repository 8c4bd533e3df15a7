//! AVX2 + FMA kernel: a 6 x 16 tile held in 12 ymm accumulators (BLIS's Haswell/Zen shape);
//! AVX-512 kernels: two or four such tiles in zmm registers. The top-k threshold test is fused
//! in so that most scores never leave the registers.

use std::arch::x86_64::*;

use super::{RowsOut, Select, GROUP, MR, NR, ROWS, TILE};

/// # Safety
/// The CPU must support AVX2 and FMA; `a` must hold `kc * MR` and `b` `kc * NR` elements;
/// `select` must hold `MR` thresholds.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32; TILE],
    accumulate: bool,
    select: Option<Select<'_>>,
) -> [u16; MR] {
    let a = a.as_ptr();
    let b = b.as_ptr();
    let cp = c.as_mut_ptr();
    // SAFETY (whole function): every pointer offset stays inside `a[..kc*MR]`, `b[..kc*NR]`,
    // `c[..TILE]` and the `select` slices, whose lengths the caller guarantees.
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    if accumulate {
        for (t, v) in acc.iter_mut().enumerate() {
            // SAFETY: t < 12, so t * 8 + 8 <= TILE.
            *v = unsafe { _mm256_loadu_ps(cp.add(t * 8)) };
        }
    }
    let [mut c00, mut c01, mut c10, mut c11, mut c20, mut c21, mut c30, mut c31, mut c40, mut c41, mut c50, mut c51] =
        acc;
    for p in 0..kc {
        // SAFETY: p < kc, so the 16 floats at b + 16p and the 6 at a + 6p are in bounds.
        unsafe {
            let bp = b.add(p * NR);
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            let ap = a.add(p * MR);
            let a0 = _mm256_broadcast_ss(&*ap);
            c00 = _mm256_fmadd_ps(a0, b0, c00);
            c01 = _mm256_fmadd_ps(a0, b1, c01);
            let a1 = _mm256_broadcast_ss(&*ap.add(1));
            c10 = _mm256_fmadd_ps(a1, b0, c10);
            c11 = _mm256_fmadd_ps(a1, b1, c11);
            let a2 = _mm256_broadcast_ss(&*ap.add(2));
            c20 = _mm256_fmadd_ps(a2, b0, c20);
            c21 = _mm256_fmadd_ps(a2, b1, c21);
            let a3 = _mm256_broadcast_ss(&*ap.add(3));
            c30 = _mm256_fmadd_ps(a3, b0, c30);
            c31 = _mm256_fmadd_ps(a3, b1, c31);
            let a4 = _mm256_broadcast_ss(&*ap.add(4));
            c40 = _mm256_fmadd_ps(a4, b0, c40);
            c41 = _mm256_fmadd_ps(a4, b1, c41);
            let a5 = _mm256_broadcast_ss(&*ap.add(5));
            c50 = _mm256_fmadd_ps(a5, b0, c50);
            c51 = _mm256_fmadd_ps(a5, b1, c51);
        }
    }
    let acc = [c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51];
    let mut masks = [0u16; MR];
    if let Some(select) = select {
        for (i, pair) in acc.chunks_exact(2).enumerate() {
            let t = _mm256_set1_ps(select.thresholds[i]);
            let lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(pair[0], t));
            let hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLE_UQ>(pair[1], t));
            masks[i] = (lo | (hi << 8)) as u16;
        }
    }
    for (t, v) in acc.iter().enumerate() {
        // SAFETY: t < 12, so t * 8 + 8 <= TILE.
        unsafe { _mm256_storeu_ps(cp.add(t * 8), *v) };
    }
    masks
}

/// [`tile_avx2`] with the `MR` rows broadcast straight from where they are stored (row `i` is
/// `rows[i][..kc]`) instead of from a packed panel: the same chains, bit for bit.
///
/// # Safety
/// The CPU must support AVX2 and FMA; each row must hold `kc` and `b` `kc * NR` elements.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_rows_avx2(kc: usize, rows: &[&[f32]; MR], b: &[f32], out: RowsOut<'_>) {
    let r = rows.map(|row| row.as_ptr());
    let b = b.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    for p in 0..kc {
        // SAFETY: p < kc, so the 16 floats at b + 16p and element p of every row are in bounds.
        unsafe {
            let bp = b.add(p * NR);
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for i in 0..MR {
                let x = _mm256_broadcast_ss(&*r[i].add(p));
                acc[2 * i] = _mm256_fmadd_ps(x, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm256_fmadd_ps(x, b1, acc[2 * i + 1]);
            }
        }
    }
    match out {
        RowsOut::Tile(c) => {
            for (t, v) in acc.iter().enumerate() {
                // SAFETY: t < 12, so t * 8 + 8 <= TILE.
                unsafe { _mm256_storeu_ps(c.as_mut_ptr().add(t * 8), *v) };
            }
        }
        RowsOut::Maxima(m, valid) => {
            let mp = m.as_mut_ptr();
            // SAFETY: `m` holds NR = 16 floats.
            let (mut lo, mut hi) = unsafe { (_mm256_loadu_ps(mp), _mm256_loadu_ps(mp.add(8))) };
            for i in 0..valid.min(MR) {
                // max_ps(v, m) is `v > m ? v : m`: the reference's fold, ties keep the first.
                lo = _mm256_max_ps(acc[2 * i], lo);
                hi = _mm256_max_ps(acc[2 * i + 1], hi);
            }
            // SAFETY: as for the loads.
            unsafe {
                _mm256_storeu_ps(mp, lo);
                _mm256_storeu_ps(mp.add(8), hi);
            }
        }
    }
}

/// The `MR` stored rows of [`tile_rows_avx2`] against two corpus-layout panels at once: 12 zmm
/// accumulators, two 16-wide loads and six broadcasts per depth step.
///
/// # Safety
/// The CPU must support AVX-512F; each row must hold `kc` and each `b` `kc * NR` elements.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn tile_rows_pair_avx512(
    kc: usize,
    rows: &[&[f32]; MR],
    b: [&[f32]; 2],
    out: [RowsOut<'_>; 2],
) {
    let r = rows.map(|row| row.as_ptr());
    let (b0, b1) = (b[0].as_ptr(), b[1].as_ptr());
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    for p in 0..kc {
        // SAFETY: p < kc, so 16 floats at b0/b1 + 16p and element p of every row are in bounds.
        unsafe {
            let u = _mm512_loadu_ps(b0.add(p * NR));
            let v = _mm512_loadu_ps(b1.add(p * NR));
            for i in 0..MR {
                let x = _mm512_set1_ps(*r[i].add(p));
                acc[i] = _mm512_fmadd_ps(x, u, acc[i]);
                acc[MR + i] = _mm512_fmadd_ps(x, v, acc[MR + i]);
            }
        }
    }
    for (t, out) in out.into_iter().enumerate() {
        let tile = &acc[t * MR..(t + 1) * MR];
        match out {
            RowsOut::Tile(c) => {
                for (i, v) in tile.iter().enumerate() {
                    // SAFETY: row i of a tile is c[i * 16..][..16], inside the TILE floats.
                    unsafe { _mm512_storeu_ps(c.as_mut_ptr().add(i * NR), *v) };
                }
            }
            RowsOut::Maxima(m, valid) => {
                // SAFETY: `m` holds NR = 16 floats.
                let mut mx = unsafe { _mm512_loadu_ps(m.as_ptr()) };
                for v in &tile[..valid.min(MR)] {
                    // max_ps(v, m) is `v > m ? v : m`: the reference's fold.
                    mx = _mm512_max_ps(*v, mx);
                }
                // SAFETY: as for the load.
                unsafe { _mm512_storeu_ps(m.as_mut_ptr(), mx) };
            }
        }
    }
}

/// Two 6 x 16 tiles sharing one corpus panel: 12 zmm accumulators, one 16-wide load of the
/// corpus panel and 12 broadcast FMAs per depth step.
///
/// # Safety
/// The CPU must support AVX-512F; each `a` must hold `kc * MR` and `b` `kc * NR` elements;
/// each `select` must hold `MR` thresholds.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn tile_pair_avx512(
    kc: usize,
    a: [&[f32]; 2],
    b: &[f32],
    c: [&mut [f32; TILE]; 2],
    accumulate: bool,
    select: Option<[Select<'_>; 2]>,
) -> [[u16; MR]; 2] {
    let (a0, a1, b) = (a[0].as_ptr(), a[1].as_ptr(), b.as_ptr());
    let [c0, c1] = c;
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    if accumulate {
        for i in 0..MR {
            // SAFETY: row i of a tile is c[i * 16..][..16], inside the TILE floats.
            unsafe {
                acc[i] = _mm512_loadu_ps(c0.as_ptr().add(i * NR));
                acc[MR + i] = _mm512_loadu_ps(c1.as_ptr().add(i * NR));
            }
        }
    }
    for p in 0..kc {
        // SAFETY: p < kc, so 16 floats at b + 16p and 6 at a0/a1 + 6p are in bounds.
        unsafe {
            let bv = _mm512_loadu_ps(b.add(p * NR));
            let (x, y) = (a0.add(p * MR), a1.add(p * MR));
            for i in 0..MR {
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(i)), bv, acc[i]);
                acc[MR + i] = _mm512_fmadd_ps(_mm512_set1_ps(*y.add(i)), bv, acc[MR + i]);
            }
        }
    }
    let mut masks = [[0u16; MR]; 2];
    if let Some(select) = select {
        for (t, s) in select.iter().enumerate() {
            let tile = &acc[t * MR..(t + 1) * MR];
            for (i, v) in tile.iter().enumerate() {
                let threshold = _mm512_set1_ps(s.thresholds[i]);
                masks[t][i] = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(*v, threshold);
            }
        }
    }
    for i in 0..MR {
        // SAFETY: as for the loads above.
        unsafe {
            _mm512_storeu_ps(c0.as_mut_ptr().add(i * NR), acc[i]);
            _mm512_storeu_ps(c1.as_mut_ptr().add(i * NR), acc[MR + i]);
        }
    }
    masks
}

/// Four 6 x 16 tiles: two query panels against two corpus panels, 24 zmm accumulators. Per
/// depth step: two 16-wide corpus loads and six broadcasts per query panel, each broadcast
/// feeding two FMAs, so 24 FMAs need 14 loads (the pair kernel needs 13 for 12). Cores with
/// two full-width FMA pipes (Zen 5, Intel server parts) are load-bound on the pair kernel.
///
/// # Safety
/// The CPU must support AVX-512F; each `a` must hold `kc * MR` and each `b` `kc * NR`
/// elements; each `select` must hold `MR` thresholds.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn tile_quad_avx512(
    kc: usize,
    a: [&[f32]; 2],
    b: [&[f32]; 2],
    c: [[&mut [f32; TILE]; 2]; 2],
    accumulate: bool,
    select: Option<[Select<'_>; 2]>,
) -> [[[u16; MR]; 2]; 2] {
    let (a0, a1) = (a[0].as_ptr(), a[1].as_ptr());
    let (b0, b1) = (b[0].as_ptr(), b[1].as_ptr());
    // acc[q][j][i]: query panel q, corpus panel j, tile row i.
    let mut acc = [[[_mm512_setzero_ps(); MR]; 2]; 2];
    if accumulate {
        for (acc_q, c_q) in acc.iter_mut().zip(&c) {
            for (acc_qj, c_qj) in acc_q.iter_mut().zip(c_q) {
                for (i, v) in acc_qj.iter_mut().enumerate() {
                    // SAFETY: row i of a tile is c[i * 16..][..16], inside the TILE floats.
                    *v = unsafe { _mm512_loadu_ps(c_qj.as_ptr().add(i * NR)) };
                }
            }
        }
    }
    for p in 0..kc {
        // SAFETY: p < kc, so 16 floats at b0/b1 + 16p and 6 at a0/a1 + 6p are in bounds.
        unsafe {
            let u = _mm512_loadu_ps(b0.add(p * NR));
            let v = _mm512_loadu_ps(b1.add(p * NR));
            let (x, y) = (a0.add(p * MR), a1.add(p * MR));
            // Row i of all four tiles: one broadcast per query panel feeds two FMAs.
            #[allow(clippy::needless_range_loop)]
            for i in 0..MR {
                let s = _mm512_set1_ps(*x.add(i));
                acc[0][0][i] = _mm512_fmadd_ps(s, u, acc[0][0][i]);
                acc[0][1][i] = _mm512_fmadd_ps(s, v, acc[0][1][i]);
                let t = _mm512_set1_ps(*y.add(i));
                acc[1][0][i] = _mm512_fmadd_ps(t, u, acc[1][0][i]);
                acc[1][1][i] = _mm512_fmadd_ps(t, v, acc[1][1][i]);
            }
        }
    }
    let mut masks = [[[0u16; MR]; 2]; 2];
    if let Some(select) = select {
        for (q, s) in select.iter().enumerate() {
            for j in 0..2 {
                for (i, v) in acc[q][j].iter().enumerate() {
                    let threshold = _mm512_set1_ps(s.thresholds[i]);
                    masks[q][j][i] = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(*v, threshold);
                }
            }
        }
    }
    for (acc_q, c_q) in acc.iter().zip(c) {
        for (acc_qj, c_qj) in acc_q.iter().zip(c_q) {
            for (i, v) in acc_qj.iter().enumerate() {
                // SAFETY: as for the loads above.
                unsafe { _mm512_storeu_ps(c_qj.as_mut_ptr().add(i * NR), *v) };
            }
        }
    }
    masks
}

/// The int8 tile: 12 ymm accumulators of i32 as in [`tile_avx2`], each step loading two
/// corpus registers (8 rows x 4 bytes each) and broadcasting 4 bytes per query row;
/// `vpmaddubsw` multiplies unsigned query bytes by signed corpus bytes and adds pairs into i16
/// (at most `2 * 127 * 127`: no saturation), `vpmaddwd` by ones adds those pairs into i32.
///
/// # Safety
/// The CPU must support AVX2; `a` must hold `groups * MR * GROUP` bytes, each at most 127, and
/// `b` `groups * NR * GROUP`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_i8_avx2(groups: usize, a: &[u8], b: &[i8], c: &mut [i32; TILE]) {
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 2 * MR];
    for g in 0..groups {
        // SAFETY: g < groups, so the 64 bytes at b + 64g and the 24 at a + 24g are in bounds.
        unsafe {
            let bp = b.add(g * NR * GROUP);
            let b0 = _mm256_loadu_si256(bp.cast::<__m256i>());
            let b1 = _mm256_loadu_si256(bp.add(32).cast::<__m256i>());
            let ap = a.add(g * MR * GROUP);
            for i in 0..MR {
                let q = _mm256_set1_epi32(ap.add(i * GROUP).cast::<i32>().read_unaligned());
                let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(q, b0), ones);
                let hi = _mm256_madd_epi16(_mm256_maddubs_epi16(q, b1), ones);
                acc[2 * i] = _mm256_add_epi32(acc[2 * i], lo);
                acc[2 * i + 1] = _mm256_add_epi32(acc[2 * i + 1], hi);
            }
        }
    }
    for (t, v) in acc.iter().enumerate() {
        // SAFETY: t < 12, so t * 8 + 8 <= TILE.
        unsafe { _mm256_storeu_si256(c.as_mut_ptr().add(t * 8).cast::<__m256i>(), *v) };
    }
}

/// The int8 tile with AVX-512 VNNI: one zmm holds a step of all 16 corpus rows (4 bytes
/// each), and `vpdpbusd` adds each row's four unsigned-by-signed byte products straight into
/// its i32 lane (no saturation). Even and odd steps go to separate accumulators (12 chains
/// against the instruction's latency), added at the end: integer sums, so the order does not
/// matter.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI; `a` must hold `groups * MR * GROUP` bytes
/// and `b` `groups * NR * GROUP`.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn tile_i8_vnni(groups: usize, a: &[u8], b: &[i8], c: &mut [i32; TILE]) {
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let mut even = [_mm512_setzero_si512(); MR];
    let mut odd = [_mm512_setzero_si512(); MR];
    let mut g = 0;
    while g + 1 < groups {
        // SAFETY: g + 1 < groups, as `vnni_step` requires.
        unsafe {
            vnni_step(&mut even, a, b, g);
            vnni_step(&mut odd, a, b, g + 1);
        }
        g += 2;
    }
    if g < groups {
        // SAFETY: g < groups.
        unsafe { vnni_step(&mut even, a, b, g) };
    }
    for i in 0..MR {
        let sum = _mm512_add_epi32(even[i], odd[i]);
        // SAFETY: row i of the tile is c[i * 16..][..16], inside the TILE values.
        unsafe { _mm512_storeu_si512(c.as_mut_ptr().add(i * NR).cast::<__m512i>(), sum) };
    }
}

/// One depth step `g` of [`tile_i8_vnni`] into `acc`.
///
/// # Safety
/// The CPU must support AVX-512F and VNNI; `g` must be below the panels' `groups`.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn vnni_step(acc: &mut [__m512i; MR], a: *const u8, b: *const i8, g: usize) {
    // SAFETY: g < groups, so the 64 bytes at b + 64g and the 24 at a + 24g are in bounds.
    unsafe {
        let bv = _mm512_loadu_si512(b.add(g * NR * GROUP).cast::<__m512i>());
        let ap = a.add(g * MR * GROUP);
        for (i, v) in acc.iter_mut().enumerate() {
            let q = _mm512_set1_epi32(ap.add(i * GROUP).cast::<i32>().read_unaligned());
            *v = _mm512_dpbusd_epi32(*v, q, bv);
        }
    }
}

/// One query against 64 rows: 8 ymm accumulators (independent chains against the FMA
/// latency), one broadcast and 8 loads per depth step.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `panel` must hold `query.len() * ROWS` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn score_rows_avx2(query: &[f32], panel: &[f32], out: &mut [f32; ROWS]) {
    let mut acc = [_mm256_setzero_ps(); ROWS / 8];
    for (p, &q) in query.iter().enumerate() {
        let q = _mm256_set1_ps(q);
        // SAFETY: p < query.len(), so the ROWS values at panel + p * ROWS are in bounds.
        unsafe {
            let base = panel.as_ptr().add(p * ROWS);
            for (r, v) in acc.iter_mut().enumerate() {
                *v = _mm256_fmadd_ps(q, _mm256_loadu_ps(base.add(r * 8)), *v);
            }
        }
    }
    for (r, v) in acc.iter().enumerate() {
        // SAFETY: r < 8, so r * 8 + 8 <= ROWS.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(r * 8), *v) };
    }
}

/// [`super::select_i8`] on 8 lanes at a time: `vcvtdq2ps` rounds to nearest like `as f32`,
/// and `_CMP_NLT_UQ` is `!(y < t)`.
///
/// # Safety
/// The CPU must support AVX2; `offsets` and `scales` must hold `NR` values, `thresholds` `MR`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn select_i8_avx2(
    tile: &[i32; TILE],
    offsets: &[i32],
    scales: &[f32],
    thresholds: &[f32],
) -> [u16; MR] {
    let mut masks = [0u16; MR];
    // SAFETY: every load reads inside `tile` (TILE values), `offsets` and `scales` (NR values
    // each), as the caller guarantees.
    unsafe {
        let o = [0, 8].map(|h| _mm256_loadu_si256(offsets.as_ptr().add(h).cast::<__m256i>()));
        let s = [0, 8].map(|h| _mm256_loadu_ps(scales.as_ptr().add(h)));
        for (i, mask) in masks.iter_mut().enumerate() {
            let t = _mm256_set1_ps(thresholds[i]);
            let mut bits = 0i32;
            for h in 0..2 {
                let dots = _mm256_loadu_si256(tile.as_ptr().add(i * NR + h * 8).cast::<__m256i>());
                let y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(dots, o[h])), s[h]);
                bits |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NLT_UQ>(y, t)) << (8 * h);
            }
            *mask = bits as u16;
        }
    }
    masks
}

/// [`super::select_i8_row`] on one zmm: `vcvtdq2ps` rounds to nearest like `as f32`, and
/// `_CMP_NLT_UQ` is `!(y < t)`.
///
/// # Safety
/// The CPU must support AVX-512F; `dots`, `offsets` and `scales` must hold `NR` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn select_i8_row_avx512(
    dots: &[i32],
    offsets: &[i32],
    scales: &[f32],
    threshold: f32,
) -> u16 {
    // SAFETY: each load reads NR = 16 values inside its slice, as the caller guarantees.
    unsafe {
        let d = _mm512_loadu_si512(dots.as_ptr().cast::<__m512i>());
        let o = _mm512_loadu_si512(offsets.as_ptr().cast::<__m512i>());
        let s = _mm512_loadu_ps(scales.as_ptr());
        let y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(d, o)), s);
        _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(y, _mm512_set1_ps(threshold))
    }
}

/// f16 -> f32, 8 at a time.
///
/// # Safety
/// The CPU must support AVX and F16C; `src` and `dst` must have the same length.
#[target_feature(enable = "avx,f16c")]
pub(super) unsafe fn f16_to_f32_f16c(src: &[half::f16], dst: &mut [f32]) {
    let full = src.len() / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= full <= len of both slices; unaligned load/store.
        unsafe {
            let halves = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(halves));
        }
    }
    super::f16_to_f32_scalar(&src[full..], &mut dst[full..]);
}
