//! TAS-Balanced margin sampling: one pair per query, from a uniformly picked margin bin.

use super::{check_indptr, MARGINS};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// TAS-Balanced: query `q`'s pairs are `margins[indptr[q]..indptr[q + 1]]` (margin = teacher
/// score of the positive minus that of the pair's negative). The global margin range
/// `[lo, hi]` over all pairs is cut into `bins` equal-width bins (the last one closed; all
/// pairs in bin 0 when `lo == hi`); for each query a non-empty bin is picked uniformly, then a
/// pair uniformly inside it.
///
/// Returns, per query, the index of the chosen pair *within the query's list*
/// (`0..indptr[q + 1] - indptr[q]`), or -1 for a query without pairs.
pub fn margin_balanced(
    margins_indptr: &[i64],
    margins: &[f64],
    bins: usize,
    seed: u64,
    epoch: u64,
) -> Result<Vec<i64>> {
    if bins == 0 {
        return Err(Error::invalid("bins must be positive, got 0"));
    }
    let n_queries = check_indptr("margins_indptr", "margins", margins_indptr, margins.len())?;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, &m) in margins.iter().enumerate() {
        if !m.is_finite() {
            return Err(Error::invalid(format!(
                "margins must be finite, got margins[{i}] = {m}"
            )));
        }
        lo = lo.min(m);
        hi = hi.max(m);
    }
    // Halves keep `hi - lo` finite for any finite margins.
    let span = hi * 0.5 - lo * 0.5;
    let bin_of = |m: f64| -> u64 {
        if span > 0.0 {
            let t = (m * 0.5 - lo * 0.5) / span * bins as f64;
            (t as u64).min(bins as u64 - 1)
        } else {
            0
        }
    };
    let mut picks = Vec::with_capacity(n_queries);
    let mut scratch: Vec<u64> = Vec::new();
    for q in 0..n_queries {
        let (a, b) = (margins_indptr[q] as usize, margins_indptr[q + 1] as usize);
        if a == b {
            picks.push(-1);
            continue;
        }
        let pair_bins = margins[a..b].iter().map(|&m| bin_of(m));
        scratch.clear();
        scratch.extend(pair_bins.clone());
        scratch.sort_unstable();
        scratch.dedup();
        let mut rng = Rng::stream(seed, epoch, MARGINS, q as u64);
        let bin = scratch[rng.below(scratch.len())];
        let in_bin = pair_bins.clone().filter(|&x| x == bin).count();
        let nth = rng.below(in_bin);
        let local = pair_bins
            .enumerate()
            .filter(|&(_, x)| x == bin)
            .nth(nth)
            .map_or(0, |(i, _)| i);
        picks.push(local as i64);
    }
    Ok(picks)
}
