//! Hard-negative mining: exact candidates from [`search`], false-negative filters, a window over
//! the filtered ranking, seeded sampling, and a record of what every filter removed.
//!
//! For each query, candidates come in ranked order (score descending, id ascending) with its
//! positives and their duplicates already excluded by the search. Walking that ranking:
//! 1. `max_score` / `min_score` drop candidates above / below absolute cuts;
//! 2. `absolute_margin` drops `score + m > p`, `relative_margin` drops `score > p - |p| m`,
//!    where `p` is the query's lowest positive score (sentence-transformers' definition);
//! 3. a candidate whose cosine with one of the query's positives is `>= dup_threshold` is a
//!    near-duplicate of a positive and dropped;
//! 4. a candidate in the same duplicate group as a better candidate already kept is dropped;
//! 5. what is left is the filtered ranking; its ranks `[range_min, range_max)` are the window;
//! 6. `top` takes the window in order, `random` in a seeded uniform order and `simans` in a
//!    seeded order weighted by `exp(-a (s - p - b)^2)`; a candidate whose cosine with a negative
//!    already chosen is `>= dup_threshold` is skipped, until `num_negatives` are chosen.
//!
//! The search is re-run deeper for the queries whose window is not complete yet, so filters
//! never starve the window silently: a query ends with fewer negatives only when the whole
//! corpus is used up. Every score, the search's and the rescored ones alike, is refused when it
//! could overflow f32 ([`crate::search::score_limit`]). Results depend only on the inputs, the options and the seed (mixed with
//! the query's global index by a hash), never on threads, blocks or how queries are chunked.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::idlists::IdLists;
use crate::matrix::MatrixView;
use crate::pack::{normalize, squared_norm, sum_in_lanes};
use crate::rng::Rng;
use crate::search::{
    max_squared_norm, overflow_error, search, search_rows, Hooks, Metric, SearchOptions, Workspace,
};

/// Bytes held per candidate of a deep round: the search's score and id, its top-k buffer
/// (about twice k entries of 8 bytes) and the ranking copy.
const RESULT_BYTES_PER_CANDIDATE: usize = 12 + 16 + 8;
/// Memory a deepening round may hold at once.
const ROUND_BUDGET: usize = 512 << 20;

/// The purpose of mining's random streams (see [`Rng::stream`]).
const MINE_STREAM: u64 = 0x6d69_6e65;

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

/// The largest `num_negatives`, `range_min` or `range_max` accepted.
pub const MAX_RANK: usize = 1 << 30;

/// Options of [`mine`]; see the module docs for their meaning.
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

    fn window_end(&self) -> Option<usize> {
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

    fn validate(&self) -> Result<()> {
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

/// The result of [`mine`] for `n_queries` queries.
#[derive(Clone, Debug, PartialEq)]
pub struct Mined {
    pub num_negatives: usize,
    /// `n_queries x num_negatives`, ranked by score; -1 where fewer were found.
    pub negative_ids: Vec<i64>,
    /// Same shape; NaN where fewer were found.
    pub negative_scores: Vec<f32>,
    /// One score per id of `positives`, in its order.
    pub positive_scores: Vec<f32>,
    /// Negatives found per query.
    pub found: Vec<u32>,
    /// Candidates a filter removed while the ranking was walked, query by query (at most
    /// `record_removed` per query, the best-ranked first).
    pub removed: Vec<Removed>,
    /// Exact number of removals per query and filter.
    pub removed_counts: Vec<FilterCounts>,
    /// How deep each query's ranking was fetched.
    pub depth: Vec<u32>,
    /// Queries whose given candidates could not fill the window ([`mine_candidates`] only).
    pub incomplete: Vec<bool>,
}

/// Prepares a row for [`chain`]: normalised for cosine (the search's definition).
fn prepare_row(metric: Metric, row: &mut [f32]) {
    if metric == Metric::Cosine {
        normalize(row);
    }
}

/// Query row `q` of `queries` into `row`, and its squared norm; an error if it is not finite.
fn query_row(queries: &MatrixView<'_>, q: usize, row: &mut [f32]) -> Result<f64> {
    queries.row_into(q, row);
    let squared = squared_norm(row);
    if squared.is_finite() {
        Ok(squared)
    } else {
        Err(Error::invalid(format!(
            "queries row {q} contains NaN or infinity"
        )))
    }
}

/// Corpus row `c` into `row` after checking that its score against query `q` (raw squared
/// norm `q_squared`) is finite: the search's rule ([`crate::search::score_limit`]).
fn corpus_row_for(
    metric: Metric,
    corpus: &MatrixView<'_>,
    c: usize,
    row: &mut [f32],
    q: usize,
    q_squared: f64,
) -> Result<()> {
    corpus.row_into(c, row);
    let squared = squared_norm(row);
    if !squared.is_finite() {
        return Err(Error::invalid(format!(
            "corpus row {c} contains NaN or infinity"
        )));
    }
    // Unit rows (cosine) score at most 1 in magnitude.
    if metric == Metric::Dot && squared > max_squared_norm(corpus.dim(), q_squared) {
        return Err(overflow_error(corpus.dim(), q, q_squared, c, squared));
    }
    Ok(())
}

/// The fused multiply-add chain in dimension order: bit for bit the search's score of two
/// prepared rows.
fn chain(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f32, |acc, (&x, &y)| x.mul_add(y, acc))
}

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
struct Outcome {
    chosen: Vec<(f32, u32)>,
    removed: Vec<Removed>,
    counts: FilterCounts,
    /// The window is not complete and the corpus is not used up: fetch deeper.
    need_more: bool,
}

impl Outcome {
    fn empty() -> Self {
        Outcome {
            chosen: Vec::new(),
            removed: Vec::new(),
            counts: [0; Filter::ALL.len()],
            need_more: false,
        }
    }
}

struct Context<'a> {
    corpus: &'a MatrixView<'a>,
    positives: &'a IdLists,
    groups: Option<&'a [u32]>,
    opts: &'a MineOptions,
    query_offset: u64,
}

impl Context<'_> {
    /// Walks query `q`'s ranking (`exhausted`: it holds every eligible corpus row).
    fn evaluate(
        &self,
        q: usize,
        ranking: &[(f32, u32)],
        pos_scores: &[f32],
        exhausted: bool,
    ) -> Outcome {
        let opts = self.opts;
        let reference = pos_scores.iter().copied().reduce(f32::min);
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
        let mut remove = |id: u32, score: f32, filter: Filter| {
            counts[filter as usize] += 1;
            if removed.len() < opts.record_removed {
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
        let mut window: Vec<(f32, u32)> = Vec::new();
        let mut chosen: Vec<(f32, u32)> = Vec::new();
        let mut chosen_units: Vec<Vec<f32>> = Vec::new();
        let top = opts.sampling == Sampling::Top;
        let mut window_complete = false;
        for &(s, id) in ranking {
            if opts.max_score.is_some_and(|m| s > m) {
                remove(id, s, Filter::MaxScore);
                continue;
            }
            if opts.min_score.is_some_and(|m| s < m) {
                remove(id, s, Filter::MinScore);
                continue;
            }
            if let Some(p) = reference {
                if opts.absolute_margin.is_some_and(|m| s + m > p) {
                    remove(id, s, Filter::AbsoluteMargin);
                    continue;
                }
                if opts.relative_margin.is_some_and(|m| s > p - p.abs() * m) {
                    remove(id, s, Filter::RelativeMargin);
                    continue;
                }
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
                if chosen.len() == opts.num_negatives || window_end.is_some_and(|e| rank >= e) {
                    window_complete = true;
                    break;
                }
            } else {
                window.push((s, id));
                if window_end.is_some_and(|e| rank >= e) {
                    window_complete = true;
                    break;
                }
            }
        }
        if !window_complete && !exhausted {
            return Outcome {
                need_more: true,
                ..Outcome::empty()
            };
        }
        if !top {
            let order = self.sampling_order(q, &window, reference.unwrap_or(0.0));
            for i in order {
                if chosen.len() == opts.num_negatives {
                    break;
                }
                let (s, id) = window[i];
                if let Some(t) = near_dup {
                    let u = unit_row(self.corpus, id as usize);
                    if chosen_units.iter().any(|c| unit_dot(c, &u) >= t) {
                        remove(id, s, Filter::NearDuplicateOfNegative);
                        continue;
                    }
                    chosen_units.push(u);
                }
                chosen.push((s, id));
            }
            chosen.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        Outcome {
            chosen,
            removed,
            counts,
            need_more: false,
        }
    }

    /// The order in which window entries are offered: a seeded permutation (uniform, or
    /// weighted by SimANS with Efraimidis-Spirakis keys `u^(1/w)`).
    fn sampling_order(&self, q: usize, window: &[(f32, u32)], reference: f32) -> Vec<usize> {
        let mut rng = Rng::stream(self.opts.seed, 0, MINE_STREAM, self.query_offset + q as u64);
        let mut keyed: Vec<(f64, usize)> = window
            .iter()
            .enumerate()
            .map(|(i, &(s, _))| {
                let u = rng.unit();
                let key = match self.opts.sampling {
                    Sampling::Simans { a, b } => {
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

/// Rows `rows` of `m` as a new f32 matrix buffer.
fn gather_rows(m: &MatrixView<'_>, rows: &[usize]) -> Vec<f32> {
    let dim = m.dim();
    let mut out = vec![0.0f32; rows.len() * dim];
    for (chunk, &r) in out.chunks_exact_mut(dim).zip(rows) {
        m.row_into(r, chunk);
    }
    out
}

/// The inputs of one mining call, validated.
struct Job<'a> {
    queries: &'a MatrixView<'a>,
    corpus: &'a MatrixView<'a>,
    positives: &'a IdLists,
    exclude: &'a IdLists,
    groups: Option<&'a [u32]>,
    opts: &'a MineOptions,
    query_offset: u64,
}

impl<'a> Job<'a> {
    fn validate(&self) -> Result<()> {
        self.opts.validate()?;
        let (n_queries, n) = (self.queries.rows(), self.corpus.rows());
        let (positives, exclude) = (self.positives, self.exclude);
        if positives.n_queries() != n_queries || exclude.n_queries() != n_queries {
            return Err(Error::invalid(format!(
                "positives and exclude must have one list per query ({n_queries}), got {} and {}",
                positives.n_queries(),
                exclude.n_queries()
            )));
        }
        if let Some(g) = self.groups {
            if g.len() != n {
                return Err(Error::invalid(format!(
                    "groups must have one id per corpus row ({n}), got {}",
                    g.len()
                )));
            }
        }
        if n_queries
            .checked_mul(self.opts.num_negatives)
            .is_none_or(|cells| cells > isize::MAX as usize / 8)
        {
            return Err(Error::invalid(format!(
                "{n_queries} queries x {} negatives is too large to hold",
                self.opts.num_negatives
            )));
        }
        if self.queries.dim() != self.corpus.dim() {
            return Err(Error::invalid(format!(
                "queries have dimension {} but the corpus has dimension {}",
                self.queries.dim(),
                self.corpus.dim()
            )));
        }
        for q in 0..n_queries {
            let excluded = exclude.of(q);
            if let Some(&missing) = positives
                .of(q)
                .iter()
                .find(|p| excluded.binary_search(p).is_err())
            {
                return Err(Error::invalid(format!(
                    "positive {missing} of query {q} is not in its exclude list"
                )));
            }
        }
        Ok(())
    }

    fn context(&self) -> Context<'a> {
        Context {
            corpus: self.corpus,
            positives: self.positives,
            groups: self.groups,
            opts: self.opts,
            query_offset: self.query_offset,
        }
    }

    /// Every positive's score (the search's exact definition), and each query's offset into
    /// them; an error names the first query (and positive) whose score could not be finite.
    fn positive_scores(&self, pool: &rayon::ThreadPool) -> Result<(Vec<f32>, Vec<usize>)> {
        let (queries, corpus, positives) = (self.queries, self.corpus, self.positives);
        let n_queries = queries.rows();
        let dim = corpus.dim();
        let mut offsets = Vec::with_capacity(n_queries + 1);
        offsets.push(0usize);
        for q in 0..n_queries {
            offsets.push(offsets[q] + positives.of(q).len());
        }
        let mut scores = vec![0.0f32; positives.len()];
        let mut slices: Vec<&mut [f32]> = Vec::with_capacity(n_queries);
        let mut rest = scores.as_mut_slice();
        for q in 0..n_queries {
            let (head, tail) = rest.split_at_mut(positives.of(q).len());
            slices.push(head);
            rest = tail;
        }
        let metric = self.opts.metric;
        let checked: Vec<Result<()>> = pool.install(|| {
            slices
                .into_par_iter()
                .enumerate()
                .map(|(q, out)| {
                    let (mut qrow, mut prow) = (vec![0.0; dim], vec![0.0; dim]);
                    let q_squared = query_row(queries, q, &mut qrow)?;
                    prepare_row(metric, &mut qrow);
                    for (o, &p) in out.iter_mut().zip(positives.of(q)) {
                        corpus_row_for(metric, corpus, p as usize, &mut prow, q, q_squared)?;
                        prepare_row(metric, &mut prow);
                        *o = chain(&qrow, &prow);
                    }
                    Ok(())
                })
                .collect()
        });
        checked.into_iter().collect::<Result<()>>()?;
        Ok((scores, offsets))
    }

    fn finish(
        &self,
        outcomes: Vec<Outcome>,
        positive_scores: Vec<f32>,
        depth: Vec<u32>,
        incomplete: Vec<bool>,
    ) -> Result<Mined> {
        let n_queries = self.queries.rows();
        let n_neg = self.opts.num_negatives;
        let cells = n_queries * n_neg;
        let (mut negative_ids, mut negative_scores) = (Vec::new(), Vec::new());
        if negative_ids.try_reserve_exact(cells).is_err()
            || negative_scores.try_reserve_exact(cells).is_err()
        {
            return Err(Error::invalid(format!(
                "not enough memory for {n_queries} queries x {n_neg} negatives"
            )));
        }
        negative_ids.resize(cells, -1i64);
        negative_scores.resize(cells, f32::NAN);
        let mut found = vec![0u32; n_queries];
        let mut removed = Vec::new();
        let mut removed_counts = Vec::with_capacity(n_queries);
        for (q, outcome) in outcomes.into_iter().enumerate() {
            removed_counts.push(outcome.counts);
            found[q] = outcome.chosen.len() as u32;
            for (j, (s, id)) in outcome.chosen.into_iter().enumerate() {
                negative_ids[q * n_neg + j] = i64::from(id);
                negative_scores[q * n_neg + j] = s;
            }
            removed.extend(outcome.removed);
        }
        Ok(Mined {
            num_negatives: n_neg,
            negative_ids,
            negative_scores,
            positive_scores,
            found,
            removed,
            removed_counts,
            depth,
            incomplete,
        })
    }
}

/// Mines `opts.num_negatives` hard negatives for every query.
///
/// `positives`: each query's positives (scored, and the reference of the margins); `exclude`:
/// ids never returned (the positives and everything that must count as one, e.g. their
/// duplicates); `groups`: a duplicate-group id per corpus row; `query_offset`: the global index
/// of the first query (seeds are per global query, so chunked runs give the same result).
#[allow(clippy::too_many_arguments)]
pub fn mine(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    positives: &IdLists,
    exclude: &IdLists,
    groups: Option<&[u32]>,
    opts: &MineOptions,
    query_offset: u64,
    hooks: &mut dyn Hooks,
) -> Result<Mined> {
    let job = Job {
        queries,
        corpus,
        positives,
        exclude,
        groups,
        opts,
        query_offset,
    };
    job.validate()?;
    let ctx = job.context();
    let (n_queries, n, dim) = (queries.rows(), corpus.rows(), corpus.dim());
    let (positive_scores, pos_offsets) = job.positive_scores(pool)?;

    let caps: Vec<usize> = (0..n_queries)
        .map(|q| (n - exclude.of(q).len()).min(opts.max_depth.unwrap_or(usize::MAX)))
        .collect();
    // A deeper first round costs little (fused selection) and saves a rescan whenever filters
    // empty the top ranks.
    let first_depth = opts
        .window_end()
        .unwrap_or(opts.range_min + opts.num_negatives)
        .saturating_mul(2)
        .max(64);
    let mut outcomes: Vec<Option<Outcome>> = (0..n_queries).map(|_| None).collect();
    let mut depth = vec![0u32; n_queries];
    let mut pending: Vec<usize> = (0..n_queries).filter(|&q| caps[q] > 0).collect();
    for q in (0..n_queries).filter(|&q| caps[q] == 0) {
        outcomes[q] = Some(Outcome::empty());
    }
    let mut want = first_depth;
    let mut workspace = Workspace::default();
    while !pending.is_empty() {
        // Every pending query can take k: it grows until the window is complete or the query
        // with the fewest eligible rows has them all (then it leaves `pending`).
        let k = pending
            .iter()
            .map(|&q| caps[q])
            .min()
            .unwrap_or(1)
            .min(want);
        // Deep rounds hold k results per query: bound them by searching in slices.
        let per_query = k * RESULT_BYTES_PER_CANDIDATE + dim * std::mem::size_of::<f32>();
        let slice = (ROUND_BUDGET / per_query).max(1);
        let mut still = Vec::new();
        for part in pending.chunks(slice) {
            let rows = gather_rows(queries, part);
            let subset = MatrixView::f32(&rows, part.len(), dim)?;
            let sub_exclude = exclude.subset(part);
            let mut sopts = SearchOptions::new(k, opts.metric);
            sopts.block_rows = opts.block_rows;
            sopts.query_batch = opts.query_batch;
            let found = search_rows(
                &mut workspace,
                pool,
                &subset,
                Some(part),
                corpus,
                Some(&sub_exclude),
                &sopts,
                hooks,
            )?;
            let results: Vec<Outcome> = pool.install(|| {
                part.par_iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        let ranking: Vec<(f32, u32)> = found.scores[i * k..(i + 1) * k]
                            .iter()
                            .zip(&found.ids[i * k..(i + 1) * k])
                            .map(|(&s, &id)| (s, id as u32))
                            .collect();
                        let pos = &positive_scores[pos_offsets[q]..pos_offsets[q + 1]];
                        ctx.evaluate(q, &ranking, pos, k == caps[q])
                    })
                    .collect()
            });
            for (&q, outcome) in part.iter().zip(results) {
                depth[q] = k as u32;
                if outcome.need_more {
                    still.push(q);
                } else {
                    outcomes[q] = Some(outcome);
                }
            }
        }
        pending = still;
        // Each round rescans the corpus; k costs little (fused selection): grow fast.
        want = want.saturating_mul(4);
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.expect("every query is resolved"))
        .collect();
    job.finish(outcomes, positive_scores, depth, vec![false; n_queries])
}

/// Mines from given candidates (e.g. from an approximate index) instead of an exact search:
/// each query's `candidates` are rescored exactly, ranked, and walked like [`mine`]'s ranking.
/// A query whose window the candidates cannot fill is marked `incomplete` (and gets what they
/// hold): fetch it more candidates and mine it again.
#[allow(clippy::too_many_arguments)]
pub fn mine_candidates(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    candidates: &IdLists,
    positives: &IdLists,
    exclude: &IdLists,
    groups: Option<&[u32]>,
    opts: &MineOptions,
    query_offset: u64,
) -> Result<Mined> {
    let job = Job {
        queries,
        corpus,
        positives,
        exclude,
        groups,
        opts,
        query_offset,
    };
    job.validate()?;
    let n_queries = queries.rows();
    if candidates.n_queries() != n_queries {
        return Err(Error::invalid(format!(
            "candidates must have one list per query ({n_queries}), got {}",
            candidates.n_queries()
        )));
    }
    let ctx = job.context();
    let dim = corpus.dim();
    let (positive_scores, pos_offsets) = job.positive_scores(pool)?;
    let results: Vec<Result<(Outcome, u32, bool)>> = pool.install(|| {
        (0..n_queries)
            .into_par_iter()
            .map(|q| {
                let (mut qrow, mut crow) = (vec![0.0; dim], vec![0.0; dim]);
                let q_squared = query_row(queries, q, &mut qrow)?;
                prepare_row(opts.metric, &mut qrow);
                let excluded = exclude.of(q);
                let mut ranking: Vec<(f32, u32)> = candidates
                    .of(q)
                    .iter()
                    .filter(|id| excluded.binary_search(id).is_err())
                    .map(|&id| {
                        corpus_row_for(opts.metric, corpus, id as usize, &mut crow, q, q_squared)?;
                        prepare_row(opts.metric, &mut crow);
                        Ok((chain(&qrow, &crow), id))
                    })
                    .collect::<Result<_>>()?;
                ranking.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let pos = &positive_scores[pos_offsets[q]..pos_offsets[q + 1]];
                // At `max_depth` the ranking is as deep as it may get: the query is done.
                let at_max = opts.max_depth.is_some_and(|d| ranking.len() >= d);
                if let Some(d) = opts.max_depth {
                    ranking.truncate(d);
                }
                let depth = ranking.len() as u32;
                let outcome = ctx.evaluate(q, &ranking, pos, at_max);
                Ok(if outcome.need_more {
                    (ctx.evaluate(q, &ranking, pos, true), depth, true)
                } else {
                    (outcome, depth, false)
                })
            })
            .collect()
    });
    let mut outcomes = Vec::with_capacity(n_queries);
    let mut depth = Vec::with_capacity(n_queries);
    let mut incomplete = Vec::with_capacity(n_queries);
    // In query order: the first query that failed is the one named.
    for result in results {
        let (o, d, i) = result?;
        outcomes.push(o);
        depth.push(d);
        incomplete.push(i);
    }
    job.finish(outcomes, positive_scores, depth, incomplete)
}

/// Groups identical rows: each row gets the index of the first row with the same elements
/// (bit for bit, after widening f16).
pub fn duplicate_groups(pool: &rayon::ThreadPool, corpus: &MatrixView<'_>) -> Vec<u32> {
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    let (n, dim) = (corpus.rows(), corpus.dim());
    let row_bits = |i: usize| {
        let mut row = vec![0.0f32; dim];
        corpus.row_into(i, &mut row);
        // +0.0 and -0.0 are the same embedding.
        row.iter()
            .map(|x| (x + 0.0).to_bits())
            .collect::<Vec<u32>>()
    };
    let hashes: Vec<u64> = pool.install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut h = DefaultHasher::new();
                row_bits(i).hash(&mut h);
                h.finish()
            })
            .collect()
    });
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (hashes[i], i));
    let mut groups: Vec<u32> = (0..n as u32).collect();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && hashes[order[end]] == hashes[order[start]] {
            end += 1;
        }
        // Same hash: compare contents (rows in increasing index order within the run).
        let run = &order[start..end];
        for (a, &i) in run.iter().enumerate() {
            if groups[i] != i as u32 {
                continue;
            }
            let bits = row_bits(i);
            for &j in &run[a + 1..] {
                if groups[j] == j as u32 && row_bits(j) == bits {
                    groups[j] = i as u32;
                }
            }
        }
        start = end;
    }
    groups
}

/// Links near-identical queries: returns, per query, the smallest query index of its
/// component, where two queries are joined when their cosine is `>= threshold` and each is
/// among the other's `neighbors` nearest (or one is among the other's).
pub fn link_queries(
    pool: &rayon::ThreadPool,
    queries: &MatrixView<'_>,
    threshold: f32,
    neighbors: usize,
    hooks: &mut dyn Hooks,
) -> Result<Vec<u32>> {
    if !threshold.is_finite() || !(-1.0..=1.0).contains(&threshold) {
        return Err(Error::invalid(format!(
            "query_dup_threshold is a cosine and must be in [-1, 1], got {threshold}"
        )));
    }
    let n = queries.rows();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    if n < 2 {
        return Ok(parent);
    }
    let k = neighbors.clamp(1, n);
    let found = search(
        pool,
        queries,
        queries,
        None,
        &SearchOptions::new(k, Metric::Cosine),
        hooks,
    )?;
    fn root(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            parent[x as usize] = parent[parent[x as usize] as usize];
            x = parent[x as usize];
        }
        x
    }
    for q in 0..n {
        for j in 0..k {
            let (s, other) = (found.scores[q * k + j], found.ids[q * k + j]);
            if s < threshold {
                break;
            }
            let (a, b) = (root(&mut parent, q as u32), root(&mut parent, other as u32));
            // The smaller index becomes the root, so component ids do not depend on order.
            let (lo, hi) = (a.min(b), a.max(b));
            parent[hi as usize] = lo;
        }
    }
    for q in 0..n as u32 {
        parent[q as usize] = root(&mut parent, q);
    }
    Ok(parent)
}
