//! The options of [`mine`](super::mine) and their validation.

use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::options::declare_options;

/// How negatives are picked from the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The best-ranked first.
    Top,
    /// Uniformly at random, without replacement.
    Random,
    /// SimANS: probability proportional to `exp(-a (score - p - b)^2)` (`simans_a`,
    /// `simans_b`).
    Simans,
}

impl Choice for Sampling {
    const ARGUMENT: &'static str = "sampling_strategy";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("top", Sampling::Top),
        ("random", Sampling::Random),
        ("simans", Sampling::Simans),
    ];
}

/// The largest `num_negatives`, `range_min` or `range_max` accepted.
pub const MAX_RANK: usize = 1 << 30;

declare_options! {
    /// Options of [`mine`](super::mine); see the [module docs](super) for their meaning. A
    /// binding sets them by name ([`MineOptions::set`]), offers them from
    /// [`MineOptions::table`] (each field's doc comment is its help) and checks them with
    /// [`MineOptions::validate`].
    #[derive(Clone, Debug)]
    pub struct MineOptions {
        /// Negatives per query.
        num_negatives: usize = 3,
        /// Similarity of a query and a corpus row.
        metric: Metric = Metric::Cosine,
        /// Start of the window [range_min, range_max) of the filtered ranking that negatives
        /// come from (sentence-transformers' name).
        range_min: usize = 0,
        /// End of that window (default: unbounded for top, range_min + 10 x num_negatives
        /// for random and simans).
        range_max: Option<usize> = None,
        /// Drop candidates scoring above this (default: no limit).
        max_score: Option<f32> = None,
        /// Drop candidates scoring below this (default: no limit).
        min_score: Option<f32> = None,
        /// Drop a candidate if its score + this > p, the query's lowest positive score
        /// (default: off).
        absolute_margin: Option<f32> = None,
        /// Drop a candidate if its score > p - |p| x this, e.g. 0.05 (NV-Retriever's 95%
        /// PercPos) (default: off).
        relative_margin: Option<f32> = None,
        /// Drop candidates whose cosine with a positive is at least this (near-duplicates),
        /// and skip one this close to a negative already chosen (default: off).
        dup_threshold: Option<f32> = None,
        /// Queries whose cosine is at least this share their positives (default: off); the
        /// positives are linked before mining, which does not read it.
        query_dup_threshold: Option<f32> = None,
        /// Which candidates become negatives: the hardest (top), random ones, or SimANS
        /// sampling.
        sampling_strategy: Sampling = Sampling::Top,
        /// SimANS weight exp(-a x (score - p - b)^2): a.
        simans_a: f32 = 1.0,
        /// SimANS weight: b.
        simans_b: f32 = 0.0,
        /// Seed of the random sampling.
        seed: u64 = 0,
        /// Never rank deeper than this many candidates per query (sentence-transformers looks
        /// at range_max + max_positives) (default: as deep as the filters need).
        max_depth: Option<usize> = None,
        /// Removed candidates recorded per query, the best-ranked ones (None in the API: all);
        /// the per-filter counts are exact either way.
        record_removed: Option<usize> = Some(64),
        ;
        /// Search knobs (they never change the result).
        block_rows: Option<usize> = None,
        query_batch: Option<usize> = None,
    }
}

impl MineOptions {
    pub fn new(num_negatives: usize, metric: Metric) -> Self {
        MineOptions {
            metric,
            num_negatives,
            ..MineOptions::default()
        }
    }

    pub(super) fn window_end(&self) -> Option<usize> {
        match (self.range_max, self.sampling_strategy) {
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
        for (name, value) in [
            ("dup_threshold", self.dup_threshold),
            ("query_dup_threshold", self.query_dup_threshold),
        ] {
            finite(name, value)?;
            if let Some(t) = value.filter(|t| !(-1.0..=1.0).contains(t)) {
                return Err(Error::invalid(format!(
                    "{name} is a cosine and must be in [-1, 1], got {t}"
                )));
            }
        }
        // Checked even when unused, so that a typo is not silently ignored.
        finite("simans_a", Some(self.simans_a))?;
        finite("simans_b", Some(self.simans_b))?;
        if self.sampling_strategy == Sampling::Simans && self.simans_a < 0.0 {
            return Err(Error::invalid(format!(
                "simans needs simans_a >= 0, got {}",
                self.simans_a
            )));
        }
        Ok(())
    }
}
