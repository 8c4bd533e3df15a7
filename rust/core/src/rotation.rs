//! A rotation of the embedding space onto the corpus' principal axes, and the bound that lets a
//! prefix of the rotated dimensions exclude rows exactly.
//!
//! `V` holds the eigenvectors of the uncentred second moment `C = X^T X` of (a sample of) the
//! corpus rows, by descending eigenvalue, computed in f64. Real embeddings keep most of their
//! energy in the first axes, so the partial dot on a prefix of the rotated dimensions plus the
//! product of the tails' norms bounds a score tightly. `V` is only nearly orthogonal (it is
//! computed in floating point), and rows are stored rotated in f32; the bound counts both.
//!
//! Let `q`, `x` be the rows as the f32 kernels read them (widened from f16, normalised for
//! cosine), `S` the f32 fused multiply-add chain over their `d` dimensions (the exact search's
//! score), `y_q = V^T q`, `y_x = V^T x` (exact), and for a cut `c` the stored prefixes
//! `a = f32(y_q[..c])`, `b = f32(y_x[..c])` (computed in f64, then rounded; values below the
//! normal range stored as 0). Then
//!
//! ```text
//! |S - <q,x>|                 <= gamma_d ||q|| ||x|| + U_d          (f32 chain, see `quant`)
//! |<q,x> - <y_q,y_x>|         <= delta ||q|| ||x||                   (q^T (V V^T - I) x)
//! |<y_q,y_x> - <y_q,y_x>[..c]| <= tau_q tau_x                         (Cauchy-Schwarz on the tails)
//! |<y_q,y_x>[..c] - <a,b>|    <= e_a ||b|| + ||a|| e_b + e_a e_b     (a = y_q[..c] + err_a, ...)
//! |P - <a,b>|                 <= gamma_c ||a|| ||b|| + U_c          (P: the kernel's chain on a, b)
//! ```
//!
//! where `delta >= ||V V^T - I||_2` (its Frobenius norm, computed in f64 plus the computation's
//! own error), `tau >= ||y[c..]||` (from `||y||^2 = x^T V V^T x <= (1 + delta) ||x||^2` minus a
//! lower bound of `||y[..c]||^2`), and `e >= ||b - y_x[..c]||` (the f32 rounding, measured
//! against the f64 product, plus that product's own error, `gamma64_d ||V||_2 ||x||` per entry).
//! So `S <= P + tau_q tau_x + E` with `E` the sum of the other terms: a row whose upper bound
//! is below the k-th best exact score cannot be in the top k.
//!
//! Underflow: the chains' `U` terms hold whatever the CPU's FTZ/DAZ modes (see `quant`); norms
//! computed from values that DAZ reads as zero miss at most `sqrt(d) 2^-126` per row, which a
//! second `U_d` covers. `V`'s entries below `2^-600` are set to zero before anything is
//! computed from it (so every f64 product of an f32 value and a `V` entry is normal), and the
//! stored prefixes hold no subnormals. A later stage extends the kernel's `P` in f64 with the
//! next dimensions; its sum errs by at most `(m + 2) 2^-52 ||a|| ||b||` for `m` terms.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{Error, Result};
use crate::quant::{chain_error, down, up, ChainError};

/// Stage cuts at most: the kernel's prefix, then one extension.
pub const MAX_STAGES: usize = 2;

/// Relative margin for the f64 arithmetic on norms and bounds (as in `quant`).
const MARGIN: f64 = 1.0 + 1.0 / (1u64 << 30) as f64;

/// Cuts are multiples of this (whole depth steps of the kernels' vector width).
const CUT_STEP: usize = 16;

/// What the bound needs to know of one rotated row; every value is an upper bound.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowBound {
    /// `||x||`.
    pub norm: f32,
    /// `||b||` over all stored dimensions.
    pub prefix: f32,
    /// `||b - y[..width]||`.
    pub err: f32,
    /// `||y[c..]||` at each cut.
    pub tails: [f32; MAX_STAGES],
}

impl RowBound {
    /// The largest of each field of `self` and `other`.
    pub fn max(self, other: RowBound) -> RowBound {
        RowBound {
            norm: self.norm.max(other.norm),
            prefix: self.prefix.max(other.prefix),
            err: self.err.max(other.err),
            tails: std::array::from_fn(|s| self.tails[s].max(other.tails[s])),
        }
    }
}

/// The rotation, the stage cuts and the constants of the bound.
#[derive(Clone, Debug)]
pub struct Rotation {
    dim: usize,
    cuts: Vec<usize>,
    /// The first `width` columns of `V`, row-major `dim x width`.
    v: Vec<f64>,
    /// `>= ||V V^T - I||_2`.
    delta: f64,
    /// `>= gamma64_dim ||V||_2`: the f64 product's error per entry, per unit of `||x||`.
    product: f64,
    chain: ChainError,
    stage_chains: Vec<ChainError>,
    /// The eigenvalues, descending.
    pub spectrum: Vec<f64>,
}

/// `gamma_n` of f64 arithmetic, with margin.
fn gamma64(n: usize) -> f64 {
    let nu = n as f64 * f64::EPSILON / 2.0;
    nu / (1.0 - nu) * MARGIN
}

/// A norm `x >= 0` rounded up to f32, at least `2^-126` when positive (DAZ, see `quant`).
fn norm_up(x: f64) -> f32 {
    if x > 0.0 {
        up(x).max(f32::MIN_POSITIVE)
    } else {
        0.0
    }
}

impl Rotation {
    /// The rotation of `sample` (`rows x dim`, row-major, the rows as the kernels read them).
    /// With `cuts`, those stage cuts (ascending, in `1..=dim`, at most [`MAX_STAGES`]);
    /// without, cuts chosen from the spectrum, or `None` where it is too flat for a prefix to
    /// bound scores tightly (isotropic data: the plain path is faster).
    pub fn new(sample: &[f64], dim: usize, cuts: Option<&[usize]>) -> Result<Option<Rotation>> {
        if let Some(cuts) = cuts {
            let ascending = cuts.windows(2).all(|w| w[0] < w[1]);
            if cuts.is_empty()
                || cuts.len() > MAX_STAGES
                || !ascending
                || cuts[0] == 0
                || cuts[cuts.len() - 1] > dim
            {
                return Err(Error::invalid(format!(
                    "stage_cuts must be 1 to {MAX_STAGES} ascending dimensions in 1..={dim}, \
                     got {cuts:?}"
                )));
            }
        }
        let rows = sample.len() / dim;
        let x = MatRef::from_row_major_slice(sample, rows, dim);
        let mut c = Mat::<f64>::zeros(dim, dim);
        matmul(c.as_mut(), Accum::Replace, x.transpose(), x, 1.0, Par::Seq);
        let Ok(eigen) = c.self_adjoint_eigen(Side::Lower) else {
            return Ok(None);
        };
        // Ascending in faer: reversed, so that column i is the i-th largest.
        let (values, vectors) = (eigen.S().column_vector(), eigen.U());
        let spectrum: Vec<f64> = (0..dim).rev().map(|i| values[i].max(0.0)).collect();
        let cuts = match cuts {
            Some(cuts) => cuts.to_vec(),
            None => match choose_cuts(&spectrum) {
                Some(cuts) => cuts,
                None => return Ok(None),
            },
        };
        let tiny = 2f64.powi(-600);
        let full = Mat::<f64>::from_fn(dim, dim, |j, i| {
            let v = vectors[(j, dim - 1 - i)];
            if v.abs() < tiny {
                0.0
            } else {
                v
            }
        });
        // delta: ||V V^T - I||_F as computed, plus the product's error (each entry errs by at
        // most gamma_dim times the product of two row norms).
        let mut vvt = Mat::<f64>::zeros(dim, dim);
        matmul(
            vvt.as_mut(),
            Accum::Replace,
            full.as_ref(),
            full.transpose(),
            1.0,
            Par::Seq,
        );
        let mut defect = 0.0f64;
        let mut row_norm_sq = 0.0f64;
        for i in 0..dim {
            let mut sq = 0.0;
            for j in 0..dim {
                let f = vvt[(i, j)] - if i == j { 1.0 } else { 0.0 };
                defect += f * f;
                sq += full[(i, j)] * full[(i, j)];
            }
            row_norm_sq = row_norm_sq.max(sq);
        }
        let delta = (defect.sqrt()
            + dim as f64 * gamma64(dim) * row_norm_sq * MARGIN
            + dim as f64 * f64::EPSILON)
            * MARGIN;
        let width = cuts[cuts.len() - 1];
        let mut v = vec![0.0; dim * width];
        for j in 0..dim {
            for i in 0..width {
                v[j * width + i] = full[(j, i)];
            }
        }
        Ok(Some(Rotation {
            dim,
            product: gamma64(dim) * (1.0 + delta).sqrt() * MARGIN,
            chain: chain_error(dim),
            stage_chains: cuts.iter().map(|&c| chain_error(c)).collect(),
            cuts,
            v,
            delta,
            spectrum,
        }))
    }

    /// The stage cuts, ascending: the kernel scores the first, later stages extend it.
    pub fn cuts(&self) -> &[usize] {
        &self.cuts
    }

    /// Rotated dimensions stored per row (the last cut).
    pub fn width(&self) -> usize {
        self.cuts[self.cuts.len() - 1]
    }

    /// Rotates `rows` (`r x dim`, row-major, f64 copies of the rows as the kernels read them;
    /// `squared[i]` their squared norms in f64) into `out` (`r x width` f32) and their bounds.
    pub fn rotate(&self, rows: &[f64], squared: &[f64], out: &mut [f32], bounds: &mut [RowBound]) {
        let (dim, width) = (self.dim, self.width());
        let r = squared.len();
        debug_assert!(rows.len() == r * dim && out.len() == r * width && bounds.len() == r);
        let mut product = Mat::<f64>::zeros(r, width);
        matmul(
            product.as_mut(),
            Accum::Replace,
            MatRef::from_row_major_slice(rows, r, dim),
            MatRef::from_row_major_slice(&self.v, dim, width),
            1.0,
            Par::Seq,
        );
        for (i, (out, bound)) in out.chunks_exact_mut(width).zip(bounds).enumerate() {
            let norm = squared[i].sqrt() * MARGIN;
            // Per entry, the f64 product errs by at most `product * norm`.
            let per_entry = self.product * norm;
            let (mut err_sq, mut prefix_sq, mut exact_sq) = (0.0f64, 0.0f64, 0.0f64);
            let mut tails = [0.0f32; MAX_STAGES];
            let mut stage = 0;
            for (p, o) in out.iter_mut().enumerate() {
                let y = product[(i, p)];
                let mut b = y as f32;
                if b.abs() < f32::MIN_POSITIVE {
                    b = 0.0;
                }
                *o = b;
                let e = f64::from(b) - y;
                err_sq += e * e;
                prefix_sq += f64::from(b) * f64::from(b);
                exact_sq += y * y;
                if p + 1 == self.cuts[stage] {
                    tails[stage] = self.tail(norm, exact_sq, p + 1, per_entry);
                    stage += 1;
                }
            }
            *bound = RowBound {
                norm: norm_up(norm),
                prefix: norm_up(prefix_sq.sqrt() * MARGIN),
                err: norm_up((err_sq.sqrt() + (width as f64).sqrt() * per_entry) * MARGIN * MARGIN),
                tails,
            };
        }
    }

    /// `>= ||y[c..]||` from `||y||^2 <= (1 + delta) norm^2` and `||y[..c]||`, whose computed
    /// square is `computed_sq` (each of its `c` entries off by at most `per_entry`).
    fn tail(&self, norm: f64, computed_sq: f64, c: usize, per_entry: f64) -> f32 {
        let low = (computed_sq.sqrt() * (1.0 - 1.0 / (1u64 << 40) as f64)
            - (c as f64).sqrt() * per_entry * MARGIN)
            .max(0.0);
        let whole = (1.0 + self.delta) * norm * norm * MARGIN;
        let tail_sq = whole - low * low * (1.0 - 1.0 / (1u64 << 40) as f64);
        norm_up(tail_sq.max(0.0).sqrt() * MARGIN)
    }

    /// `E` at stage `stage` (see the module docs) for a query and a row with these bounds,
    /// the tail product included, `tail_scale` times (1 but in the test that shows a too
    /// small bound fails).
    #[inline]
    pub fn slack(&self, q: &RowBound, x: &RowBound, stage: usize, tail_scale: f64) -> f64 {
        let (nq, nx) = (f64::from(q.norm), f64::from(x.norm));
        let (na, nb) = (f64::from(q.prefix), f64::from(x.prefix));
        let (ea, eb) = (f64::from(q.err), f64::from(x.err));
        let tail = f64::from(q.tails[stage]) * f64::from(x.tails[stage]) * tail_scale;
        let whole = self.chain.bound(nq, nx);
        let kernel = self.stage_chains[0].bound(na, nb);
        let extension = if stage > 0 {
            (self.cuts[stage] - self.cuts[0] + 2) as f64 * (2.0 * f64::EPSILON) * na * nb
                + f64::from(f32::MIN_POSITIVE)
        } else {
            0.0
        };
        (tail
            + whole
            + self.chain.underflow(nq, nx)
            + self.delta * nq * nx
            + ea * nb
            + na * eb
            + ea * eb
            + kernel
            + extension)
            * MARGIN
    }

    /// `P + slack` rounded up: no score of the pair is above it.
    #[inline]
    pub fn upper(p: f64, slack: f64) -> f64 {
        let u = p + slack;
        u + (p.abs() + slack) * (4.0 * f64::EPSILON)
    }

    /// The f32 threshold `theta` such that every partial `P` (f32) with `P + slack` reaching
    /// `t` passes the kernel's test `P > theta`; NaN (everything passes) while `t` is NaN.
    pub fn kernel_threshold(t: f32, slack: f64) -> f32 {
        if t.is_nan() {
            return f32::NAN;
        }
        let t = f64::from(t);
        down(t - slack - (t.abs() + slack) * (4.0 * f64::EPSILON)).next_down()
    }
}

/// Whether `sample` (`rows x dim`, row-major) looks isotropic, cheaply (no eigenvalues): its
/// participation ratio `tr(G)^2 / ||G||_F^2` (`G` the rows' Gram matrix; the effective number
/// of directions the energy spreads over) above half of what isotropic rows give,
/// `rows dim / (rows + dim)`. Real embeddings score far below (MiniLM: 34 of 153 for 256
/// rows of 384 dimensions). Only speed depends on it: a flat corpus is scored by the f32 path.
pub fn looks_flat(sample: &[f64], dim: usize) -> bool {
    let rows = sample.len() / dim;
    if rows < 2 {
        return false;
    }
    let x = MatRef::from_row_major_slice(sample, rows, dim);
    let mut gram = Mat::<f64>::zeros(rows, rows);
    matmul(
        gram.as_mut(),
        Accum::Replace,
        x,
        x.transpose(),
        1.0,
        Par::Seq,
    );
    let (mut trace, mut frobenius) = (0.0f64, 0.0f64);
    for i in 0..rows {
        trace += gram[(i, i)];
        for j in 0..rows {
            frobenius += gram[(i, j)] * gram[(i, j)];
        }
    }
    let isotropic = (rows * dim) as f64 / (rows + dim) as f64;
    frobenius > 0.0 && trace * trace / frobenius > 0.5 * isotropic
}

/// Cuts from the spectrum: the first kernel depth step by which 80% of the energy is in the
/// prefix, if that is at most half the dimensions, then (if before three quarters) the one by
/// which 95% is. `None` for a flat spectrum.
fn choose_cuts(spectrum: &[f64]) -> Option<Vec<usize>> {
    let dim = spectrum.len();
    let total: f64 = spectrum.iter().sum();
    // NaN or zero energy: nothing to rotate onto.
    if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let mut energy = 0.0;
    let reach = |fraction: f64, energy: &mut f64| -> usize {
        let mut c = 0;
        *energy = 0.0;
        while c < dim && *energy < fraction * total {
            *energy += spectrum[c];
            c += 1;
        }
        c.next_multiple_of(CUT_STEP).min(dim)
    };
    let first = reach(0.8, &mut energy);
    if first == 0 || 2 * first > dim {
        return None;
    }
    let second = reach(0.95, &mut energy);
    if second > first && 4 * second <= 3 * dim {
        Some(vec![first, second])
    } else {
        Some(vec![first])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(q: &[f32], x: &[f32]) -> f32 {
        q.iter().zip(x).fold(0.0f32, |c, (a, b)| a.mul_add(*b, c))
    }

    /// `S <= P + slack` on random rows of random spectra, every cut and stage.
    #[test]
    fn the_bound_holds() {
        let mut rng = crate::rng::Rng::stream(3, 0, 0, 0);
        for case in 0..200 {
            let dim = 1 + rng.below(70);
            let rows = 1 + rng.below(40);
            let decay = rng.unit() * 0.5;
            // Products from overflow-safe sizes down through the subnormals.
            let scale = 10f64.powi(rng.below(36) as i32 - 22);
            let gen = |rng: &mut crate::rng::Rng| -> Vec<f32> {
                (0..dim)
                    .map(|j| ((rng.unit() - 0.5) * (-decay * j as f64).exp() * scale) as f32)
                    .collect()
            };
            let data: Vec<Vec<f32>> = (0..rows).map(|_| gen(&mut rng)).collect();
            let sample: Vec<f64> = data.iter().flatten().map(|&x| f64::from(x)).collect();
            let c1 = 1 + rng.below(dim);
            let cuts = if c1 < dim && case % 2 == 0 {
                vec![c1, c1 + 1 + rng.below(dim - c1)]
            } else {
                vec![c1]
            };
            let rot = Rotation::new(&sample, dim, Some(&cuts)).unwrap().unwrap();
            let width = rot.width();
            let mut out = vec![0.0f32; rows * width];
            let mut bounds = vec![RowBound::default(); rows];
            let squared: Vec<f64> = data
                .iter()
                .map(|r| r.iter().map(|&x| f64::from(x) * f64::from(x)).sum())
                .collect();
            rot.rotate(&sample, &squared, &mut out, &mut bounds);
            for i in 0..rows {
                for j in 0..rows {
                    let s = f64::from(chain(&data[i], &data[j]));
                    let (a, b) = (&out[i * width..][..width], &out[j * width..][..width]);
                    let p1 = chain(&a[..cuts[0]], &b[..cuts[0]]);
                    let mut p = f64::from(p1);
                    for stage in 0..cuts.len() {
                        if stage > 0 {
                            p += (cuts[stage - 1]..cuts[stage])
                                .map(|t| f64::from(a[t]) * f64::from(b[t]))
                                .sum::<f64>();
                        }
                        let slack = rot.slack(&bounds[i], &bounds[j], stage, 1.0);
                        let u = Rotation::upper(p, slack);
                        assert!(s <= u, "case {case} stage {stage}: S {s} upper {u}");
                        if stage == 0 {
                            // `s` is an f32: every `P` whose upper bound reaches it passes.
                            let theta = Rotation::kernel_threshold(s as f32, slack);
                            assert!(p1 > theta, "case {case}: P {p1} theta {theta}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn isotropic_samples_look_flat() {
        let mut rng = crate::rng::Rng::stream(4, 0, 0, 0);
        for dim in [16, 64, 384] {
            let iso: Vec<f64> = (0..256 * dim).map(|_| rng.unit() - 0.5).collect();
            assert!(looks_flat(&iso, dim), "{dim}");
            let decaying: Vec<f64> = (0..256 * dim)
                .map(|i| (rng.unit() - 0.5) * (-((i % dim) as f64) / 6.0).exp())
                .collect();
            assert!(!looks_flat(&decaying, dim), "{dim}");
        }
    }

    #[test]
    fn flat_spectra_fall_back() {
        assert_eq!(choose_cuts(&[1.0; 384]), None);
        assert_eq!(choose_cuts(&[0.0; 384]), None);
        let decaying: Vec<f64> = (0..384).map(|i| (-(i as f64) / 30.0).exp()).collect();
        let cuts = choose_cuts(&decaying).unwrap();
        assert!(
            cuts[0] <= 192 && cuts[0].is_multiple_of(CUT_STEP),
            "{cuts:?}"
        );
    }
}
