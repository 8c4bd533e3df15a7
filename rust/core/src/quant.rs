//! int8 codes of f32 rows for exact pre-scoring, and the bound that makes them exact.
//!
//! A row `x` (as the f32 kernels read it: widened from f16, normalised for cosine) is stored as
//! a scale `s` and integer codes `c` with `x = s c + e`, `|c_j| <= levels`. For a query
//! `q = t d + f` (codes `d`, residual `f`) and a corpus row `x = s c + e`, the integer dot
//! `I = d . c` is exact, and
//!
//! ```text
//! q . x = t d . (s c + e) + f . x = t s I + (t d) . e + f . x
//! |q . x - t s I| <= ||t d|| ||e|| + ||f|| ||x||                        (Cauchy-Schwarz)
//! ```
//!
//! The exact search does not return `q . x` but `S`, the f32 fused multiply-add chain over the
//! `dim` coordinates, which is within `gamma_dim sum_j |q_j x_j| <= gamma_dim ||q|| ||x||` of it
//! (`gamma_n = n u / (1 - n u)`, `u = 2^-24`: one rounding per step). So with `P = t s I`
//! computed in f64,
//!
//! ```text
//! |S - P| <= B = ||t d|| ||e|| + ||f|| ||x|| + gamma_dim ||q|| ||x||  (+ P's own rounding)
//! ```
//!
//! That relative bound assumes no step underflows. A step whose result is below `2^-126` errs
//! absolutely instead: by `2^-150` with gradual underflow, by up to `2^-126` where the CPU
//! flushes it to zero (FTZ, set by some libraries for the whole process), and an input read
//! as zero (DAZ) changes a product by at most `2^-126 |q_j|` or `2^-126 |x_j|`. So the chain
//! also errs by `(1 + gamma_dim)(2 dim + sqrt(dim) (||q|| + ||x||)) 2^-126`, and the norms
//! and residuals above, computed from values read as zero under DAZ, by as much again:
//!
//! ```text
//! U = (dim + sqrt(dim) (||q|| + ||x||)) 2^-123                         (underflow, any mode)
//! ```
//!
//! is added to `B`. It is about `1e-35` for unit rows: it only matters for rows near the
//! subnormal range, which it sends to the f32 rescoring. Scales and stored norms are kept
//! normal (a scale below `2^-126` becomes 0: the whole row is residual; a positive norm is at
//! least `2^-126`), so that DAZ never reads them as zero.
//!
//! Every norm is stored rounded up and every f64 operation on them is covered by a relative
//! margin, so `[P - B, P + B]` always holds `S`: a row whose upper bound is below the k-th
//! best lower bound cannot be in the top k, and the rest are rescored with the f32 chain.

/// Corpus codes are in `[-CORPUS_LEVELS, CORPUS_LEVELS]` (i8).
pub const CORPUS_LEVELS: i32 = 127;
/// Query codes are in `[-levels, levels]` and travel as unsigned bytes `code + levels + 1`
/// (the kernels multiply unsigned query bytes by signed corpus bytes); the levels depend on the
/// kernel ([`crate::kernels::query_levels`]).
pub fn query_offset(levels: i32) -> i32 {
    levels + 1
}

/// Relative margin for the f64 arithmetic on norms and bounds: a sum of `n` squares errs by at
/// most `n 2^-53` relatively, so this covers rows of up to 2^23 dimensions, and a bound is a
/// handful of operations more.
const MARGIN: f64 = 1.0 + 1.0 / (1u64 << 30) as f64;

/// What the bound needs to know of a quantized row; every norm is an upper bound.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowCode {
    /// `s`: the row is `s * codes + residual`.
    pub scale: f32,
    /// `||x||`.
    pub norm: f32,
    /// `||s c||`.
    pub code_norm: f32,
    /// `||e||`, the rounding residual.
    pub residual: f32,
}

/// `x` rounded up to f32.
pub(crate) fn up(x: f64) -> f32 {
    -down(-x)
}

/// A norm `x >= 0` rounded up to f32, and to at least `2^-126` when positive: a subnormal
/// norm would read as zero where the CPU treats subnormal inputs as zero (DAZ).
fn norm_up(x: f64) -> f32 {
    if x > 0.0 {
        up(x).max(f32::MIN_POSITIVE)
    } else {
        0.0
    }
}

/// `x` rounded down to f32.
pub(crate) fn down(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) > x {
        f.next_down()
    } else {
        f
    }
}

/// Quantizes `row` into `codes` (`row.len()` values in `[-levels, levels]`), returning its
/// scale and norms. The scale maps the largest magnitude to `levels`; a zero row has scale 0.
pub fn quantize(row: &[f32], levels: i32, codes: &mut [i8]) -> RowCode {
    quantize_lanes::<1>(row, levels, codes)[0]
}

/// [`quantize`] of the `W` rows of a panel stored column by column (`panel[p * W + j]` is
/// element `p` of row `j`, the kernels' packed layout), codes written in the same layout.
/// Each row's codes and norms are those [`quantize`] gives it alone.
pub fn quantize_lanes<const W: usize>(
    panel: &[f32],
    levels: i32,
    codes: &mut [i8],
) -> [RowCode; W] {
    assert!(panel.len().is_multiple_of(W) && codes.len() == panel.len());
    assert!((1..=127).contains(&levels));
    #[cfg(target_arch = "x86_64")]
    if W == 16 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected at run time; the lengths were checked above.
        let rows = unsafe { x86::lanes16_avx512(panel, levels, codes) };
        return std::array::from_fn(|j| rows[j]);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        return unsafe { lanes_avx2::<W>(panel, levels, codes) };
    }
    lanes::<W>(panel, levels, codes)
}

/// The same arithmetic compiled for AVX2 (vector rounding instead of a libm call per value).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lanes_avx2<const W: usize>(panel: &[f32], levels: i32, codes: &mut [i8]) -> [RowCode; W] {
    lanes::<W>(panel, levels, codes)
}

/// The scale of a row whose largest magnitude is `m`: it maps `m` to `levels`; below the normal
/// range it becomes 0 (zero codes, the whole row as residual, which the bound covers), since
/// its inverse would overflow f32 and DAZ would read it as zero.
#[inline(always)]
fn scale_of(m: f32, levels: i32) -> f32 {
    let s = (f64::from(m) / f64::from(levels)) as f32;
    if s >= f32::MIN_POSITIVE {
        s
    } else {
        0.0
    }
}

/// `1 / scale` in f32, 0 for a zero scale.
#[inline(always)]
fn inverse_of(scale: f32) -> f32 {
    if scale > 0.0 {
        (1.0 / f64::from(scale)) as f32
    } else {
        0.0
    }
}

/// A row's code from its f64 sums of `x^2`, `code^2` and `(x - s code)^2`.
#[inline(always)]
fn row_code(scale: f32, norm: f64, codes_sq: f64, residual: f64) -> RowCode {
    RowCode {
        scale,
        norm: norm_up(norm.sqrt() * MARGIN),
        code_norm: norm_up(f64::from(scale) * codes_sq.sqrt() * MARGIN),
        residual: norm_up(residual.sqrt() * MARGIN),
    }
}

#[inline(always)]
fn lanes<const W: usize>(panel: &[f32], levels: i32, codes: &mut [i8]) -> [RowCode; W] {
    let mut largest = [0.0f32; W];
    for step in panel.chunks_exact(W) {
        for (m, x) in largest.iter_mut().zip(step) {
            *m = m.max(x.abs());
        }
    }
    let limit = levels as f32;
    let scale = largest.map(|m| scale_of(m, levels));
    let inverse = scale.map(inverse_of);
    let (mut norm, mut codes_sq, mut residual) = ([0.0f64; W], [0.0f64; W], [0.0f64; W]);
    for (step, out) in panel.chunks_exact(W).zip(codes.chunks_exact_mut(W)) {
        for j in 0..W {
            let x = step[j];
            // Any code within the levels is sound: the residual below is computed from it.
            let code = (x * inverse[j]).round_ties_even().clamp(-limit, limit);
            out[j] = code as i8;
            let (x, code) = (f64::from(x), f64::from(code));
            // `scale * code` is exact in f64 (24 + 7 bits), and so is the difference.
            let e = x - f64::from(scale[j]) * code;
            norm[j] += x * x;
            codes_sq[j] += code * code;
            residual[j] += e * e;
        }
    }
    std::array::from_fn(|j| row_code(scale[j], norm[j], codes_sq[j], residual[j]))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{inverse_of, row_code, scale_of, RowCode};

    /// [`super::lanes`] for a 16-row panel, one register per step: the same operations per
    /// lane in the same order (f32 multiply, round half to even, clamp; f64 products and sums,
    /// never fused), so the same codes and norms.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `panel` and `codes` must have the same length, a multiple
    /// of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lanes16_avx512(
        panel: &[f32],
        levels: i32,
        codes: &mut [i8],
    ) -> [RowCode; 16] {
        let steps = panel.len() / 16;
        let p = panel.as_ptr();
        // SAFETY: every load reads 16 floats at `16 * t` for `t < steps`, inside `panel`, and
        // every store writes 16 bytes at the same offset inside `codes` (same length).
        unsafe {
            let sign = _mm512_set1_ps(-0.0);
            let mut largest = _mm512_setzero_ps();
            for t in 0..steps {
                let x = _mm512_loadu_ps(p.add(16 * t));
                // max(|x|, m): a NaN |x| keeps m, as `f32::max` does.
                largest = _mm512_max_ps(_mm512_andnot_ps(sign, x), largest);
            }
            let mut m = [0.0f32; 16];
            _mm512_storeu_ps(m.as_mut_ptr(), largest);
            let scale = m.map(|m| scale_of(m, levels));
            let inverse = scale.map(inverse_of);
            let (inv, lim) = (_mm512_loadu_ps(inverse.as_ptr()), levels as f32);
            let (hi_lim, lo_lim) = (_mm512_set1_ps(lim), _mm512_set1_ps(-lim));
            let s_lo = _mm512_cvtps_pd(_mm256_loadu_ps(scale.as_ptr()));
            let s_hi = _mm512_cvtps_pd(_mm256_loadu_ps(scale.as_ptr().add(8)));
            let zero = _mm512_setzero_pd();
            let (mut norm, mut codes_sq, mut residual) = ([zero; 2], [zero; 2], [zero; 2]);
            for t in 0..steps {
                let x = _mm512_loadu_ps(p.add(16 * t));
                let rounded = _mm512_roundscale_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(_mm512_mul_ps(x, inv));
                let code = _mm512_min_ps(_mm512_max_ps(rounded, lo_lim), hi_lim);
                let bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(code));
                _mm_storeu_si128(codes.as_mut_ptr().add(16 * t).cast::<__m128i>(), bytes);
                let halves = |v: __m512| {
                    let lo = _mm512_castps512_ps256(v);
                    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                    [_mm512_cvtps_pd(lo), _mm512_cvtps_pd(hi)]
                };
                let (xd, cd) = (halves(x), halves(code));
                for (h, s) in [s_lo, s_hi].into_iter().enumerate() {
                    norm[h] = _mm512_add_pd(norm[h], _mm512_mul_pd(xd[h], xd[h]));
                    codes_sq[h] = _mm512_add_pd(codes_sq[h], _mm512_mul_pd(cd[h], cd[h]));
                    let e = _mm512_sub_pd(xd[h], _mm512_mul_pd(s, cd[h]));
                    residual[h] = _mm512_add_pd(residual[h], _mm512_mul_pd(e, e));
                }
            }
            let lanes = |v: [__m512d; 2]| {
                let mut out = [0.0f64; 16];
                _mm512_storeu_pd(out.as_mut_ptr(), v[0]);
                _mm512_storeu_pd(out.as_mut_ptr().add(8), v[1]);
                out
            };
            let (norm, codes_sq, residual) = (lanes(norm), lanes(codes_sq), lanes(residual));
            std::array::from_fn(|j| row_code(scale[j], norm[j], codes_sq[j], residual[j]))
        }
    }
}

/// The error bound of a `dim`-step f32 fused multiply-add chain (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChainError {
    /// `gamma_dim`, relative to `||q|| ||x||`.
    pub gamma: f64,
    /// `U`'s constant part, `dim 2^-123`.
    underflow: f64,
    /// `U`'s part per unit of `||q|| + ||x||`, `sqrt(dim) 2^-123`.
    underflow_per_norm: f64,
}

impl ChainError {
    /// `gamma ||q|| ||x|| + U`: the chain's error for rows with these norms (upper bounds).
    #[inline]
    pub fn bound(&self, q_norm: f64, x_norm: f64) -> f64 {
        self.gamma * q_norm * x_norm + self.underflow(q_norm, x_norm)
    }

    /// `U`, the underflow term alone.
    #[inline]
    pub fn underflow(&self, q_norm: f64, x_norm: f64) -> f64 {
        self.underflow + self.underflow_per_norm * (q_norm + x_norm)
    }
}

/// The error bound of a `dim`-step f32 fused multiply-add chain.
pub fn chain_error(dim: usize) -> ChainError {
    let nu = dim as f64 * f64::from(f32::EPSILON) / 2.0;
    assert!(
        nu < 0.5,
        "dimension {dim} is too large for the f32 error bound"
    );
    let unit = f64::from(f32::MIN_POSITIVE) / 8.0;
    ChainError {
        gamma: nu / (1.0 - nu) * MARGIN,
        underflow: dim as f64 * unit * MARGIN,
        underflow_per_norm: (dim as f64).sqrt() * unit * MARGIN,
    }
}

/// The pre-score `P = t s I` of a query and a corpus row with integer dot `dot`, and the
/// bound `B` with `|S - P| <= B` for the f32 chain's score `S` (see the module docs).
#[inline]
pub fn prescore(query: &RowCode, row: &RowCode, dot: i32, chain: &ChainError) -> (f64, f64) {
    let p = f64::from(query.scale) * f64::from(row.scale) * f64::from(dot);
    let (q_norm, x_norm) = (f64::from(query.norm), f64::from(row.norm));
    let bound = (f64::from(query.code_norm) * f64::from(row.residual)
        + f64::from(query.residual) * x_norm
        + chain.gamma * q_norm * x_norm
        + chain.underflow
        + chain.underflow_per_norm * (q_norm + x_norm))
        * MARGIN
        + p.abs() * (f64::EPSILON * 2.0);
    (p, bound)
}

/// The largest bound of `query` against any row whose norms are at most those of `worst`
/// (the per-block maxima), including the pre-score's rounding at its largest
/// (`|P| <= ||t d|| ||s c||`).
pub fn bound_for(query: &RowCode, worst: &RowCode, chain: &ChainError) -> f64 {
    let (_, bound) = prescore(query, worst, 0, chain);
    bound + f64::from(query.code_norm) * f64::from(worst.code_norm) * (f64::EPSILON * 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot_f32_chain(q: &[f32], x: &[f32]) -> f32 {
        q.iter().zip(x).fold(0.0f32, |c, (a, b)| a.mul_add(*b, c))
    }

    /// The SIMD builds of the quantizer give each lane the codes and norms of the plain one.
    #[test]
    fn every_quantizer_build_agrees_with_the_plain_one() {
        let mut rng = crate::rng::Rng::stream(12, 0, 0, 0);
        for case in 0..300 {
            let steps = 1 + rng.below(200);
            let tiny = 2.0f32.powi(-(rng.below(160) as i32));
            let panel: Vec<f32> = (0..steps * 16)
                .map(|i| match (case + i) % 7 {
                    0 => 0.0,
                    1 => (rng.unit() as f32 - 0.5) * tiny,
                    2 => (rng.below(255) as f32 - 127.0 + 0.5) / 127.0,
                    _ => (rng.unit() as f32 - 0.5) * 10f32.powi(rng.below(20) as i32 - 10),
                })
                .collect();
            let levels = [63, 127][case % 2];
            let mut want = vec![0i8; panel.len()];
            let rows = lanes::<16>(&panel, levels, &mut want);
            let mut got = vec![0i8; panel.len()];
            assert_eq!(quantize_lanes::<16>(&panel, levels, &mut got), rows);
            assert_eq!(got, want);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected at run time.
                assert_eq!(unsafe { lanes_avx2::<16>(&panel, levels, &mut got) }, rows);
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn the_bound_holds_on_random_and_adversarial_rows() {
        let mut rng = crate::rng::Rng::stream(11, 0, 0, 0);
        for case in 0..4000 {
            let dim = 1 + rng.below(300);
            let mut gen = |kind: usize| -> Vec<f32> {
                let tiny = 2.0f32.powi(-(rng.below(151) as i32));
                (0..dim)
                    .map(|j| match kind {
                        // Values at rounding boundaries: halves of a code step.
                        0 => (rng.below(255) as f32 - 127.0 + 0.5) / 127.0,
                        // Huge dynamic range within the row.
                        1 => (rng.unit() as f32 - 0.5) * 10f32.powi(rng.below(20) as i32 - 10),
                        2 if j == 0 => 1e-3,
                        2 => 0.0,
                        // Products from the normal range through the subnormals to zero,
                        // and scales below the normal range.
                        3 => (rng.unit() as f32 * 2.0 - 1.0) * tiny,
                        _ => rng.unit() as f32 * 2.0 - 1.0,
                    })
                    .collect()
            };
            let (q, x) = (gen(case % 5), gen((case / 5) % 5));
            let (mut qc, mut xc) = (vec![0i8; dim], vec![0i8; dim]);
            let qr = quantize(&q, 63, &mut qc);
            let xr = quantize(&x, CORPUS_LEVELS, &mut xc);
            let dot: i32 = qc
                .iter()
                .zip(&xc)
                .map(|(a, b)| i32::from(*a) * i32::from(*b))
                .sum();
            let (p, b) = prescore(&qr, &xr, dot, &chain_error(dim));
            let s = f64::from(dot_f32_chain(&q, &x));
            assert!((s - p).abs() <= b, "case {case}: S {s} P {p} B {b}");
            assert!(xc.iter().all(|c| i32::from(*c).abs() <= CORPUS_LEVELS));
            assert!(qc.iter().all(|c| i32::from(*c).abs() <= 63));
        }
    }

    #[test]
    fn zero_and_subnormal_rows() {
        let mut codes = [1i8; 3];
        assert_eq!(quantize(&[0.0; 3], 127, &mut codes), RowCode::default());
        assert_eq!(codes, [0; 3]);
        let tiny = [f32::from_bits(1), 0.0, -f32::from_bits(3)];
        let r = quantize(&tiny, 127, &mut codes);
        // A scale below the normal range is 0: the whole row is residual, and every norm
        // stays normal (DAZ would read a subnormal one as zero).
        assert_eq!(r.scale, 0.0);
        assert_eq!(codes, [0; 3]);
        assert!(r.residual >= f32::MIN_POSITIVE && r.norm >= f32::MIN_POSITIVE);
        let small = [1e-37f32, 3e-38, -2e-39];
        let r = quantize(&small, 127, &mut codes);
        assert!(r.scale == 0.0 && r.residual >= r.norm && r.norm >= f32::MIN_POSITIVE);
    }
}
