//! How a query and a corpus row are scored ([`Metric`]), and when that score is certain to be
//! finite in f32 ([`score_limit`]): the rule every scored pair obeys, in the search and in
//! mining's exact rescoring alike.

use crate::choice::Choice;
use crate::error::Error;

/// Similarity between a query and a corpus row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Inner product; refused when it could overflow f32 (see [`score_limit`]).
    Dot,
    /// Inner product of the L2-normalised rows; a zero row scores 0 against everything.
    Cosine,
}

impl Choice for Metric {
    const ARGUMENT: &'static str = "metric";
    const NAMES: &'static [(&'static str, Self)] =
        &[("dot", Metric::Dot), ("cosine", Metric::Cosine)];
    // faiss' `ip`, the short `cos`.
    const ALIASES: &'static [(&'static str, Self)] = &[
        ("ip", Metric::Dot),
        ("inner_product", Metric::Dot),
        ("cos", Metric::Cosine),
    ];
}

/// The largest product of two rows' L2 norms for which their score, the fused multiply-add
/// chain of `dim` terms in f32, is certain to be finite.
///
/// Every partial sum of `q . c` is at most `sum_j |q_j c_j| <= ||q|| ||c||` (Cauchy-Schwarz),
/// and each of the at most `dim` roundings on the way raises that bound by a factor `1 + 2^-24`
/// at most, less than `exp(dim * 2^-23)` in all. Half of `f32::MAX` leaves room for the f64
/// norms' own rounding. So a score is produced only when the product of the norms is below
/// this limit (about 1.7e38); otherwise the call fails, never returning an infinite score.
pub fn score_limit(dim: usize) -> f64 {
    f64::from(f32::MAX) / 2.0 / (dim as f64 * f64::from(f32::EPSILON)).exp()
}

/// The largest squared norm a row may have to be scored against a row whose squared norm is
/// `other` (see [`score_limit`]).
pub fn max_squared_norm(dim: usize, other: f64) -> f64 {
    let limit = score_limit(dim);
    if other > 0.0 {
        limit * limit / other
    } else {
        f64::INFINITY
    }
}

/// The error for a query and a corpus row whose score could overflow f32.
pub(crate) fn overflow_error(
    dim: usize,
    query: usize,
    query_squared: f64,
    corpus_row: usize,
    corpus_squared: f64,
) -> Error {
    let (qn, cn) = (query_squared.sqrt(), corpus_squared.sqrt());
    Error::invalid(format!(
        "queries row {query} (norm {qn:.3e}) and corpus row {corpus_row} (norm {cn:.3e}): \
         their score could overflow float32 (the product of their norms, {:.3e}, must be \
         below {:.3e}); scale the embeddings down, e.g. normalise them",
        qn * cn,
        score_limit(dim)
    ))
}
