//! AVX2 + FMA kernel: a 6 x 16 tile held in 12 ymm accumulators (BLIS's Haswell/Zen shape),
//! with the top-k threshold test fused in so that most scores never leave the registers.

use std::arch::x86_64::*;

use super::{Select, MR, NR, TILE};

/// # Safety
/// The CPU must support AVX2 and FMA; `a` must hold `kc * MR` and `b` `kc * NR` elements;
/// `select`'s slices must hold `MR` thresholds and `NR` scales.
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
    let mut acc = [c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51];
    let mut masks = [0u16; MR];
    if let Some(select) = select {
        if let Some(scale) = select.column_scale {
            // SAFETY: `scale` holds NR = 16 floats.
            let (s0, s1) = unsafe {
                (
                    _mm256_loadu_ps(scale.as_ptr()),
                    _mm256_loadu_ps(scale.as_ptr().add(8)),
                )
            };
            for pair in acc.chunks_exact_mut(2) {
                pair[0] = _mm256_mul_ps(pair[0], s0);
                pair[1] = _mm256_mul_ps(pair[1], s1);
            }
        }
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
