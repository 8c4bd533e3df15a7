//! The options of [`mine`](super::mine) and their validation.

use crate::error::{Error, Result};
use crate::metric::Metric;

/// How negatives are picked from the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The best-ranked first.
    Top,
    /// Uniformly at random, without replacement.
    Random,
    /// SimANS: probability proportional to `exp(-a (score - p - b)^2)`.
    Simans { a: f32, b: f32 },
}

/// The largest `num_negatives`, `range_min` or `range_max` accepted.
pub const MAX_RANK: usize = 1 << 30;

/// Options of [`mine`](super::mine); see the [module docs](super) for their meaning.
#[derive(Clone, Debug)]
pub struct MineOptions {
    pub metric: Metric,
    pub num_negatives: usize,
    pub range_min: usize,
    /// End of the window; `None`: unbounded for `top`, `range_min + 10 * num_negatives` for
    /// the samplers.
    pub range_max: Option<usize>,
    pub max_score: Option<f32>,
    pub min_score: Option<f32>,
    pub absolute_margin: Option<f32>,
    pub relative_margin: Option<f32>,
    pub dup_threshold: Option<f32>,
    pub sampling: Sampling,
    pub seed: u64,
    /// Never rank deeper than this many candidates per query (sentence-transformers looks at
    /// `range_max + max_positives`); `None`: as deep as the filters need.
    pub max_depth: Option<usize>,
    /// Removed candidates recorded per query (the best-ranked ones); counts are always exact.
    pub record_removed: usize,
    /// Search knobs (they never change the result).
    pub block_rows: Option<usize>,
    pub query_batch: Option<usize>,
}

impl MineOptions {
    pub fn new(num_negatives: usize, metric: Metric) -> Self {
        MineOptions {
            metric,
            num_negatives,
            range_min: 0,
            range_max: None,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            dup_threshold: None,
            sampling: Sampling::Top,
            seed: 0,
            max_depth: None,
            record_removed: usize::MAX,
            block_rows: None,
            query_batch: None,
        }
    }

    pub(super) fn window_end(&self) -> Option<usize> {
        match (self.range_max, self.sampling) {
            (Some(end), _) => Some(end),
            (None, Sampling::Top) => None,
            // Saturates instead of overflowing; `validate` refuses such sizes anyway.
            (None, _) => Some(
                self.range_min
                    .saturating_add(self.num_negatives.saturating_mul(10)),
            ),
        }
    }

    /// Checks the options on their own (the inputs are checked by [`mine`](super::mine)).
    pub fn validate(&self) -> Result<()> {
        let finite = |name: &str, v: Option<f32>| match v {
            Some(x) if !x.is_finite() => Err(Error::invalid(format!(
                "{name} must be a finite number, got {x}"
            ))),
            _ => Ok(()),
        };
        if self.num_negatives == 0 {
            return Err(Error::invalid("num_negatives must be positive, got 0"));
        }
        if self.max_depth == Some(0) {
            return Err(Error::invalid("max_depth must be positive, got 0"));
        }
        // Ranks are u32 inside; anything near that is a mistake, not a configuration.
        for (name, value) in [
            ("num_negatives", Some(self.num_negatives)),
            ("range_min", Some(self.range_min)),
            ("range_max", self.range_max),
        ] {
            if value.is_some_and(|v| v > MAX_RANK) {
                return Err(Error::invalid(format!(
                    "{name} must be at most {MAX_RANK}, got {}",
                    value.unwrap_or_default()
                )));
            }
        }
        if let Some(end) = self.range_max {
            if end <= self.range_min {
                return Err(Error::invalid(format!(
                    "range_max ({end}) must be larger than range_min ({})",
                    self.range_min
                )));
            }
            if self.num_negatives > end - self.range_min {
                return Err(Error::invalid(format!(
                    "the window [range_min, range_max) = [{}, {end}) holds {} candidates, fewer \
                     than num_negatives = {}",
                    self.range_min,
                    end - self.range_min,
                    self.num_negatives
                )));
            }
        }
        finite("max_score", self.max_score)?;
        finite("min_score", self.min_score)?;
        finite("absolute_margin", self.absolute_margin)?;
        finite("relative_margin", self.relative_margin)?;
        finite("dup_threshold", self.dup_threshold)?;
        if let (Some(lo), Some(hi)) = (self.min_score, self.max_score) {
            if lo > hi {
                return Err(Error::invalid(format!(
                    "min_score ({lo}) is larger than max_score ({hi}): nothing could be kept"
                )));
            }
        }
        if let Some(m) = self.relative_margin {
            if !(0.0..1.0).contains(&m) {
                return Err(Error::invalid(format!(
                    "relative_margin must be in [0, 1), got {m}"
                )));
            }
        }
        if let Some(t) = self.dup_threshold {
            if !(-1.0..=1.0).contains(&t) {
                return Err(Error::invalid(format!(
                    "dup_threshold is a cosine and must be in [-1, 1], got {t}"
                )));
            }
        }
        if let Sampling::Simans { a, b } = self.sampling {
            if !(a.is_finite() && a >= 0.0 && b.is_finite()) {
                return Err(Error::invalid(format!(
                    "simans needs a finite a >= 0 and a finite b, got a = {a}, b = {b}"
                )));
            }
        }
        Ok(())
    }
}
