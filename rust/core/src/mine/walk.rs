//! The walk of one query's ranking: the filters in order, the window over what they keep, and
//! the seeded sampling from it (see the [module docs](super)).

use super::options::{MineOptions, Sampling};
use crate::idlists::IdLists;
use crate::matrix::MatrixView;
use crate::pack::{normalize, sum_in_lanes};
use crate::rng::Rng;
use crate::search::{AboveCap, ScoreCap, CAP_BOUNDS};

/// The purpose of mining's random streams (see [`Rng::stream`]).
pub(crate) const MINE_STREAM: u64 = 0x6d69_6e65;
/// Why a candidate was not taken as a negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Filter {
    MaxScore = 0,
    MinScore = 1,
    AbsoluteMargin = 2,
    RelativeMargin = 3,
    NearDuplicateOfPositive = 4,
    DuplicateGroup = 5,
    RangeMin = 6,
    NearDuplicateOfNegative = 7,
}

impl Filter {
    pub const ALL: [Filter; 8] = [
        Filter::MaxScore,
        Filter::MinScore,
        Filter::AbsoluteMargin,
        Filter::RelativeMargin,
        Filter::NearDuplicateOfPositive,
        Filter::DuplicateGroup,
        Filter::RangeMin,
        Filter::NearDuplicateOfNegative,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Filter::MaxScore => "max_score",
            Filter::MinScore => "min_score",
            Filter::AbsoluteMargin => "absolute_margin",
            Filter::RelativeMargin => "relative_margin",
            Filter::NearDuplicateOfPositive => "near_duplicate_of_positive",
            Filter::DuplicateGroup => "duplicate_group",
            Filter::RangeMin => "range_min",
            Filter::NearDuplicateOfNegative => "near_duplicate_of_negative",
        }
    }
}
/// A candidate a filter removed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Removed {
    pub query: u32,
    pub id: u32,
    pub score: f32,
    pub filter: Filter,
}

/// Removals per filter, indexed like [`Filter::ALL`].
pub type FilterCounts = [u64; Filter::ALL.len()];
/// Cosine of two unit rows, summed in 8 lanes (a filter threshold, not a ranking score).
fn unit_dot(a: &[f32], b: &[f32]) -> f32 {
    sum_in_lanes(a, b, |x, y| x * y)
}

fn unit_row(m: &MatrixView<'_>, i: usize) -> Vec<f32> {
    let mut row = vec![0.0; m.dim()];
    m.row_into(i, &mut row);
    normalize(&mut row);
    row
}

/// What one query's ranking yielded.
pub(super) struct Outcome {
    pub(super) chosen: Vec<(f32, u32)>,
    /// Of each of `chosen`, its rank in the query's ranking (see [`Mined::negative_ranks`]).
    ///
    /// [`Mined::negative_ranks`]: super::Mined::negative_ranks
    pub(super) ranks: Vec<u32>,
    pub(super) removed: Vec<Removed>,
    pub(super) counts: FilterCounts,
    /// The window is not complete and the corpus is not used up: fetch deeper.
    pub(super) need_more: bool,
    /// Rows of the ranking read when the window was complete (`None`: it was not).
    pub(super) complete_at: Option<usize>,
}

impl Outcome {
    pub(super) fn empty() -> Self {
        Outcome {
            chosen: Vec::new(),
            ranks: Vec::new(),
            removed: Vec::new(),
            counts: [0; Filter::ALL.len()],
            need_more: false,
            complete_at: None,
        }
    }
}

/// The largest f32 (in value order, `-inf` to `+inf`) that `removes` keeps, for a `removes`
/// that is monotone, false at `-inf` and true at `+inf`: a bisection over the f32 order.
fn last_kept(removes: impl Fn(f32) -> bool) -> f32 {
    // Order-preserving keys: negative floats reversed below the positive ones.
    let key = |x: f32| {
        let b = x.to_bits();
        if b >> 31 == 1 {
            !b
        } else {
            b | 1 << 31
        }
    };
    let value = |k: u32| f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k });
    let (mut kept, mut removed) = (key(f32::NEG_INFINITY), key(f32::INFINITY));
    while removed - kept > 1 {
        let mid = kept + (removed - kept) / 2;
        if removes(value(mid)) {
            removed = mid;
        } else {
            kept = mid;
        }
    }
    value(kept)
}

/// The score cap of a query whose lowest positive score is `reference`: the bounds
/// `[c_max, c_abs, c_rel]` such that the walk's first filter removing a row of score `s` is
/// `max_score` iff `s > c_max`, `absolute_margin` iff `c_abs < s <= c_max` and
/// `relative_margin` iff `c_rel < s <= c_abs`, and none of the three removes a row at most
/// `c_rel` (the cap). [`ScoreCap::NONE`] when the options cap nothing, or when a row above
/// the cap could score below `min_score` (that filter comes first: such a row would be
/// counted as removed by it).
///
/// Why: `s > max_score`, `s + m > p` (f32 addition is monotone) and `s > p - |p| m` (one f32
/// threshold, computed as the walk does) each remove an upper set of scores, `{s > c}` with
/// `c` the largest score kept ([`last_kept`] for the absolute margin). `c_abs = min(c_max,
/// c)` and `c_rel = min(c_abs, c')` nest them in the walk's order (`max_score`, `min_score`,
/// `absolute_margin`, `relative_margin`), and `min_score` never fires above the cap when
/// every f32 above it is at least `min_score`.
pub(super) fn score_cap(opts: &MineOptions, reference: Option<f32>) -> ScoreCap {
    let c_max = opts.max_score.unwrap_or(f32::INFINITY);
    let c_abs = match (opts.absolute_margin, reference) {
        (Some(m), Some(p)) => c_max.min(last_kept(|s| s + m > p)),
        _ => c_max,
    };
    let c_rel = match (opts.relative_margin, reference) {
        (Some(m), Some(p)) => c_abs.min(p - p.abs() * m),
        _ => c_abs,
    };
    if c_rel == f32::INFINITY || opts.min_score.is_some_and(|lo| c_rel.next_up() < lo) {
        return ScoreCap::NONE;
    }
    ScoreCap {
        bounds: [c_max, c_abs, c_rel],
    }
}

/// The removals per filter of the rows above a query's cap (see [`score_cap`]).
fn above_counts(above: &AboveCap) -> FilterCounts {
    let [n_max, n_abs, n_rel] = above.counts;
    let mut counts: FilterCounts = [0; Filter::ALL.len()];
    counts[Filter::MaxScore as usize] = n_max;
    counts[Filter::AbsoluteMargin as usize] = n_abs - n_max;
    counts[Filter::RelativeMargin as usize] = n_rel - n_abs;
    counts
}

const _: () = assert!(
    CAP_BOUNDS == 3,
    "bounds: max_score, absolute and relative margin"
);

/// A teacher's scores for one query's walk (see `teacher.rs`): of each row of the ranking, in
/// its order, and of the query's positives.
#[derive(Clone, Copy)]
pub(super) struct Judgement<'a> {
    pub(super) candidates: &'a [f32],
    pub(super) positives: &'a [f32],
}

pub(super) struct Context<'a> {
    pub(super) corpus: &'a MatrixView<'a>,
    pub(super) positives: &'a IdLists,
    pub(super) groups: Option<&'a [u32]>,
    pub(super) opts: &'a MineOptions,
    pub(super) query_offset: u64,
}

impl Context<'_> {
    /// The first of the score filters (`max_score`, `min_score`, the margins against
    /// `reference`) that removes a candidate of score `s`.
    fn score_filter(&self, s: f32, reference: Option<f32>) -> Option<Filter> {
        let opts = self.opts;
        if opts.max_score.is_some_and(|m| s > m) {
            return Some(Filter::MaxScore);
        }
        if opts.min_score.is_some_and(|m| s < m) {
            return Some(Filter::MinScore);
        }
        if let Some(p) = reference {
            if opts.absolute_margin.is_some_and(|m| s + m > p) {
                return Some(Filter::AbsoluteMargin);
            }
            if opts.relative_margin.is_some_and(|m| s > p - p.abs() * m) {
                return Some(Filter::RelativeMargin);
            }
        }
        None
    }

    /// Walks query `q`'s ranking (`exhausted`: it holds every eligible corpus row). With
    /// `above` (a capped search: `ranking` holds only rows at most the query's
    /// [`score_cap`]), the rows above the cap come first.
    ///
    /// Why that is the walk of the whole ranking: the rows above the cap are its prefix
    /// (scores descending) and the walk stops only after keeping a row, so it removes every
    /// one of them, by the filters [`score_cap`] names, before it reads any other row; it
    /// records the best-ranked of them first (`above.best` holds at least the best
    /// `record_removed`, in rank order: the same records; the others are counted by band), and
    /// enters the rest with nothing kept (no group, rank 0, nothing chosen), as here.
    /// `complete_at` then counts the rows of `ranking` only.
    ///
    /// With a `judgement`, the score filters read the teacher's scores (of the candidate and
    /// of the positives) instead of the retriever's; the rest of the walk is the retriever's.
    pub(super) fn evaluate(
        &self,
        q: usize,
        above: Option<&AboveCap>,
        ranking: &[(f32, u32)],
        pos_scores: &[f32],
        exhausted: bool,
        judgement: Option<Judgement<'_>>,
    ) -> Outcome {
        let opts = self.opts;
        let reference = pos_scores.iter().copied().reduce(f32::min);
        let filter_reference =
            judgement.map_or(reference, |j| j.positives.iter().copied().reduce(f32::min));
        let near_dup = opts.dup_threshold;
        let positive_units: Vec<Vec<f32>> = if near_dup.is_some() {
            self.positives
                .of(q)
                .iter()
                .map(|&p| unit_row(self.corpus, p as usize))
                .collect()
        } else {
            Vec::new()
        };
        let window_end = opts.window_end();
        let mut removed = Vec::new();
        let mut counts: FilterCounts = [0; Filter::ALL.len()];
        // The rows above the cap: all counted, the best recorded (and counted again below).
        let above_best: Vec<(f32, u32, Filter)> = above.map_or_else(Vec::new, |above| {
            counts = above_counts(above);
            above
                .best
                .iter()
                .map(|r| {
                    let filter = self
                        .score_filter(r.score, reference)
                        .expect("a row above the cap is removed by a score filter");
                    counts[filter as usize] -= 1;
                    (r.score, r.id, filter)
                })
                .collect()
        });
        let mut remove = |id: u32, score: f32, filter: Filter| {
            counts[filter as usize] += 1;
            if opts.record_removed.is_none_or(|cap| removed.len() < cap) {
                removed.push(Removed {
                    query: q as u32,
                    id,
                    score,
                    filter,
                })
            }
        };
        let mut kept_groups = std::collections::HashSet::new();
        let mut rank = 0usize;
        // The rank of `ranking[0]` in the whole ranking: the rows above the cap precede it.
        let first_rank = above.map_or(0, |a| a.counts[CAP_BOUNDS - 1]) as usize;
        let ranked = |read: usize| u32::try_from(first_rank + read).unwrap_or(u32::MAX);
        let mut window: Vec<(f32, u32, u32)> = Vec::new();
        let mut chosen: Vec<(f32, u32)> = Vec::new();
        let mut ranks: Vec<u32> = Vec::new();
        let mut chosen_units: Vec<Vec<f32>> = Vec::new();
        let top = opts.sampling_strategy == Sampling::Top;
        let mut complete_at = None;
        for (s, id, filter) in above_best {
            remove(id, s, filter);
        }
        for (read, &(s, id)) in ranking.iter().enumerate() {
            let judged = judgement.map_or(s, |j| j.candidates[read]);
            if let Some(filter) = self.score_filter(judged, filter_reference) {
                remove(id, s, filter);
                continue;
            }
            let unit = near_dup.map(|_| unit_row(self.corpus, id as usize));
            if let (Some(t), Some(u)) = (near_dup, &unit) {
                if positive_units.iter().any(|p| unit_dot(p, u) >= t) {
                    remove(id, s, Filter::NearDuplicateOfPositive);
                    continue;
                }
            }
            if let Some(groups) = self.groups {
                if !kept_groups.insert(groups[id as usize]) {
                    remove(id, s, Filter::DuplicateGroup);
                    continue;
                }
            }
            rank += 1;
            if rank <= opts.range_min {
                remove(id, s, Filter::RangeMin);
                continue;
            }
            if top {
                if let (Some(t), Some(u)) = (near_dup, &unit) {
                    if chosen_units.iter().any(|c| unit_dot(c, u) >= t) {
                        remove(id, s, Filter::NearDuplicateOfNegative);
                        continue;
                    }
                    chosen_units.push(unit.clone().unwrap_or_default());
                }
                chosen.push((s, id));
                ranks.push(ranked(read));
                if chosen.len() == opts.num_negatives || window_end.is_some_and(|e| rank >= e) {
                    complete_at = Some(read + 1);
                    break;
                }
            } else {
                window.push((s, id, ranked(read)));
                if window_end.is_some_and(|e| rank >= e) {
                    complete_at = Some(read + 1);
                    break;
                }
            }
        }
        if complete_at.is_none() && !exhausted {
            return Outcome {
                need_more: true,
                ..Outcome::empty()
            };
        }
        if !top {
            let order = self.sampling_order(q, &window, reference.unwrap_or(0.0));
            let mut picked: Vec<(f32, u32, u32)> = Vec::new();
            for i in order {
                if picked.len() == opts.num_negatives {
                    break;
                }
                let (s, id, r) = window[i];
                if let Some(t) = near_dup {
                    let u = unit_row(self.corpus, id as usize);
                    if chosen_units.iter().any(|c| unit_dot(c, &u) >= t) {
                        remove(id, s, Filter::NearDuplicateOfNegative);
                        continue;
                    }
                    chosen_units.push(u);
                }
                picked.push((s, id, r));
            }
            // The ranking's order (score descending, id ascending).
            picked.sort_by_key(|&(_, _, r)| r);
            (chosen, ranks) = picked.into_iter().map(|(s, id, r)| ((s, id), r)).unzip();
        }
        Outcome {
            chosen,
            ranks,
            removed,
            counts,
            need_more: false,
            complete_at,
        }
    }

    /// The order in which window entries are offered: a seeded permutation (uniform, or
    /// weighted by SimANS with Efraimidis-Spirakis keys `u^(1/w)`).
    fn sampling_order(&self, q: usize, window: &[(f32, u32, u32)], reference: f32) -> Vec<usize> {
        let mut rng = Rng::stream(self.opts.seed, 0, MINE_STREAM, self.query_offset + q as u64);
        let mut keyed: Vec<(f64, usize)> = window
            .iter()
            .enumerate()
            .map(|(i, &(s, _, _))| {
                let u = rng.unit();
                let key = match self.opts.sampling_strategy {
                    Sampling::Simans => {
                        let (a, b) = (self.opts.simans_a, self.opts.simans_b);
                        let x = f64::from(s) - f64::from(reference) - f64::from(b);
                        // log(u) / w with w = exp(-a x^2): larger is earlier; w never 0 in
                        // log space, so every entry stays orderable.
                        u.ln() * (f64::from(a) * x * x).exp()
                    }
                    _ => u,
                };
                (key, i)
            })
            .collect();
        keyed.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        keyed.into_iter().map(|(_, i)| i).collect()
    }
}
