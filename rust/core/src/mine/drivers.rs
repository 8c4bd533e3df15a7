//! The mining entry points: [`mine_with`] fetches each query's candidates from a
//! [`CandidateSource`], rescores them exactly and deepens them on one schedule
//! ([`depth_schedule`]) until the walk is complete; [`mine`] is it with the exact search as the
//! source, or, when the options give each query a score cap (`max_score`, the margins), the
//! capped search: one pass keeps each query's best rows at most its cap and counts the rows
//! above it, so only the filters no score expresses deepen.

use rayon::prelude::*;

use super::options::MineOptions;
use super::source::{CandidateSource, Candidates, ExactSource};
use super::teacher::{Judged, Judging};
use super::walk::{score_cap, Context, FilterCounts, Judgement, Outcome, Removed};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::idlists::IdLists;
use crate::kernels::Isa;
use crate::matrix::MatrixView;
use crate::memory;
use crate::metric::Metric;
use crate::rescore::{check_corpus_row, prepare_row, query_row, Rescorer};
use crate::search::{ScoreCap, CAP_BOUNDS};

/// Bytes held per candidate of a deep round: the search's score and id, its top-k buffer
/// (about twice k entries of 8 bytes) and the ranking copy.
const RESULT_BYTES_PER_CANDIDATE: usize = 12 + 16 + 8;
/// Memory a deepening round may hold at once.
const ROUND_BUDGET: usize = 512 << 20;
/// The result of [`mine`] for `n_queries` queries.
#[derive(Clone, Debug, PartialEq)]
pub struct Mined {
    pub num_negatives: usize,
    /// `n_queries x num_negatives`, ranked by score; -1 where fewer were found.
    pub negative_ids: Vec<i64>,
    /// Same shape; NaN where fewer were found.
    pub negative_scores: Vec<f32>,
    /// Same shape: each negative's rank in its query's ranking, the candidates the walk read
    /// (every corpus row less the query's excluded ones, score descending, id ascending; for a
    /// [`CandidateSource`] other than the exact search, its candidates rescored, or in its own
    /// order where it declared one, [`Candidates::in_source_order`]) before any filter: 0 is the best candidate, and `range_max` counts the filtered ranking, so a
    /// negative ranks at `range_max` or deeper only when filters removed candidates above it.
    /// `u32::MAX` where fewer were found.
    pub negative_ranks: Vec<u32>,
    /// One score per id of `positives`, in its order.
    pub positive_scores: Vec<f32>,
    /// Negatives found per query.
    pub found: Vec<u32>,
    /// Candidates a filter removed while the ranking was walked, query by query (at most
    /// `record_removed` per query, the best-ranked first).
    pub removed: Vec<Removed>,
    /// Exact number of removals per query and filter.
    pub removed_counts: Vec<FilterCounts>,
    /// How deep each query's ranking was fetched on the [schedule](depth_schedule).
    pub depth: Vec<u32>,
    /// How many times each query's candidates were fetched on the schedule (more than once:
    /// the filters emptied its window and it was fetched again, deeper). A capped [`mine`]
    /// reports, for both, the rounds the schedule takes to reach the depth of the whole
    /// ranking where the window completes, whatever it ran: the same numbers as any source.
    pub fetches: Vec<u32>,
    /// Queries finished by the exact search instead of the source ([`mine_with`]: they needed
    /// more than the source's `max_depth`, or it came back short).
    pub exact_finish: Vec<bool>,
    /// With a teacher ([`mine_judged`]): its scores of the negatives, shaped like
    /// `negative_scores` (NaN where fewer were found); empty without one.
    pub teacher_scores: Vec<f32>,
    /// Per query, the candidates the teacher scored (each once); zeros without one.
    pub judged: Vec<u32>,
}

/// What one mining call mines ([`mine`], [`mine_with`], [`mine_judged`]; checked there).
#[derive(Clone, Copy)]
pub struct MineJob<'a> {
    pub queries: &'a MatrixView<'a>,
    pub corpus: &'a MatrixView<'a>,
    /// Each query's positives (scored, and the reference of the margins).
    pub positives: &'a IdLists,
    /// Each query's ids never returned: its positives and everything that must count as one
    /// (e.g. their duplicates).
    pub exclude: &'a IdLists,
    /// A duplicate-group id per corpus row.
    pub groups: Option<&'a [u32]>,
    pub opts: &'a MineOptions,
    /// The global index of the first query: seeds are per global query, so chunked runs give
    /// the same result.
    pub query_offset: u64,
}

impl<'a> MineJob<'a> {
    /// A run from query 0 whose only exclusions are the positives, without duplicate groups.
    pub fn new(
        queries: &'a MatrixView<'a>,
        corpus: &'a MatrixView<'a>,
        positives: &'a IdLists,
        opts: &'a MineOptions,
    ) -> Self {
        MineJob {
            queries,
            corpus,
            positives,
            exclude: positives,
            groups: None,
            opts,
            query_offset: 0,
        }
    }

    /// `judging`: a teacher rescores the negatives, so the result holds its scores too.
    fn validate(&self, judging: bool) -> Result<()> {
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
        // The result is padded to num_negatives per query whatever the corpus holds: refuse a
        // width the machine cannot hold before any work (ids, scores, teacher scores), with
        // room for as much again (the report's statistics, the caller's conversions).
        let per_cell: u64 = 2 * if judging { 8 + 4 + 4 + 4 } else { 8 + 4 + 4 };
        let n_neg = self.opts.num_negatives;
        memory::ensure_fits(
            (n_queries as u64)
                .checked_mul(n_neg as u64)
                .and_then(|cells| cells.checked_mul(per_cell)),
            || {
                format!(
                    "a result of {n_queries} queries x num_negatives = {n_neg} (padded; the \
                     corpus has {n} rows)"
                )
            },
        )?;
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
                    "positive {missing} of query {} is not in its exclude list",
                    self.query_offset + q as u64
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
        let (metric, offset) = (self.opts.metric, self.query_offset as usize);
        let cosine = metric == Metric::Cosine;
        let checked: Vec<Result<()>> = pool.install(|| {
            slices
                .into_par_iter()
                .enumerate()
                .map_init(
                    || (Rescorer::new(Isa::detect(), dim, cosine), vec![0.0; dim]),
                    |(rescorer, qrow), (q, out)| {
                        let name = offset + q;
                        let q_squared = query_row(queries, q, name, qrow)?;
                        prepare_row(metric, qrow);
                        let mut scores = out.iter_mut();
                        rescorer.score(
                            corpus,
                            qrow,
                            positives.of(q),
                            |p, row| check_corpus_row(metric, p as usize, row, name, q_squared),
                            |_, score| *scores.next().expect("one score per positive") = score,
                        )
                    },
                )
                .collect()
        });
        checked.into_iter().collect::<Result<()>>()?;
        Ok((scores, offsets))
    }

    /// Query `q`'s candidate `ids` (in the corpus, no duplicates) less its excluded ones,
    /// rescored exactly (bit for bit the search's scores, by the shared [`Rescorer`]) and
    /// ranked like the search.
    fn rescored(&self, rescorer: &mut Rescorer, q: usize, ids: &[u32]) -> Result<Vec<(f32, u32)>> {
        let mut ranking = self.rescored_in_order(rescorer, q, ids)?;
        ranking.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(ranking)
    }

    /// [`Self::rescored`] in the order of `ids` (a source's own ranking).
    fn rescored_in_order(
        &self,
        rescorer: &mut Rescorer,
        q: usize,
        ids: &[u32],
    ) -> Result<Vec<(f32, u32)>> {
        let (metric, corpus, dim) = (self.opts.metric, self.corpus, self.corpus.dim());
        let mut qrow = vec![0.0; dim];
        let name = self.query_offset as usize + q;
        let q_squared = query_row(self.queries, q, name, &mut qrow)?;
        prepare_row(metric, &mut qrow);
        let excluded = self.exclude.of(q);
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| excluded.binary_search(id).is_err())
            .collect();
        let mut ranking = Vec::with_capacity(kept.len());
        rescorer.score(
            corpus,
            &qrow,
            &kept,
            |id, row| check_corpus_row(metric, id as usize, row, name, q_squared),
            |id, score| ranking.push((score, id)),
        )?;
        Ok(ranking)
    }

    /// The ranking of query `q` (the `i`-th of a fetch) at depth `k`: the source's own when it
    /// declared exact scores, else its ids checked, deduplicated and [rescored](Self::rescored);
    /// at most the best `k`.
    fn ranking(
        &self,
        rescorer: &mut Rescorer,
        q: usize,
        fetched: &Candidates,
        i: usize,
        k: usize,
    ) -> Result<Vec<(f32, u32)>> {
        let ids = fetched.ids(i);
        let exact = fetched.exact_scores(i);
        // An exact ranking is used up to k only; anything else is read whole.
        let used = &ids[..exact.map_or(ids.len(), |_| k.min(ids.len()))];
        let n = self.corpus.rows();
        // Checked first, so the rankings below are collected at their exact size.
        if let Some(bad) = used.iter().find(|&&id| !(0..n as i64).contains(&id)) {
            return Err(Error::invalid(format!(
                "the candidate source returned id {bad} for queries row {}, outside the \
                 corpus of {n} rows",
                self.query_offset + q as u64
            )));
        }
        if let Some(scores) = exact {
            return Ok(scores
                .iter()
                .zip(used)
                .map(|(&s, &id)| (s, id as u32))
                .collect());
        }
        let mut ranking = if fetched.is_ranked() {
            let mut seen = std::collections::HashSet::with_capacity(used.len());
            let first: Vec<u32> = used
                .iter()
                .map(|&id| id as u32)
                .filter(|&id| seen.insert(id))
                .collect();
            self.rescored_in_order(rescorer, q, &first)?
        } else {
            let mut unique: Vec<u32> = used.iter().map(|&id| id as u32).collect();
            unique.sort_unstable();
            unique.dedup();
            self.rescored(rescorer, q, &unique)?
        };
        ranking.truncate(k);
        Ok(ranking)
    }

    fn finish(
        &self,
        outcomes: Vec<Outcome>,
        positive_scores: Vec<f32>,
        depth: Vec<u32>,
        fetches: Vec<u32>,
        exact_finish: Vec<bool>,
        judged: Option<&Judged>,
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
        let mut negative_ranks = Vec::new();
        if negative_ranks.try_reserve_exact(cells).is_err() {
            return Err(Error::invalid(format!(
                "not enough memory for the ranks of {n_queries} queries x {n_neg} negatives"
            )));
        }
        negative_ranks.resize(cells, u32::MAX);
        let mut found = vec![0u32; n_queries];
        let mut removed = Vec::new();
        let mut removed_counts = Vec::with_capacity(n_queries);
        let mut teacher_scores = Vec::new();
        if judged.is_some() {
            teacher_scores.resize(cells, f32::NAN);
        }
        let judged_counts = (0..n_queries)
            .map(|q| judged.map_or(0, |j| j.count(q)))
            .collect();
        for (q, outcome) in outcomes.into_iter().enumerate() {
            removed_counts.push(outcome.counts);
            if let Some(judged) = judged {
                for (j, score) in judged.of(q, &outcome.chosen).into_iter().enumerate() {
                    teacher_scores[q * n_neg + j] = score;
                }
            }
            found[q] = outcome.chosen.len() as u32;
            for (j, ((s, id), rank)) in outcome.chosen.into_iter().zip(outcome.ranks).enumerate() {
                negative_ids[q * n_neg + j] = i64::from(id);
                negative_scores[q * n_neg + j] = s;
                negative_ranks[q * n_neg + j] = rank;
            }
            removed.extend(outcome.removed);
        }
        Ok(Mined {
            num_negatives: n_neg,
            negative_ids,
            negative_scores,
            negative_ranks,
            positive_scores,
            found,
            removed,
            removed_counts,
            depth,
            fetches,
            exact_finish,
            teacher_scores,
            judged: judged_counts,
        })
    }
}

/// The depths a query's ranking is fetched at, round after round, for every source: first
/// twice the window end (`range_min + num_negatives` when `top` has no `range_max`), at least
/// 64, then 4 times deeper each round (a round rescans the corpus, while a deeper top-k costs
/// little with fused selection: grow fast). A round fetches its depth clipped to the rows the
/// pending queries can still get (their eligible rows, and `max_depth`).
pub fn depth_schedule(opts: &MineOptions) -> impl Iterator<Item = usize> {
    // A deeper first round costs little and saves a rescan whenever filters empty the top
    // ranks.
    let first = opts
        .window_end()
        .unwrap_or(opts.range_min + opts.num_negatives)
        .saturating_mul(2)
        .max(64);
    std::iter::successors(Some(first), |&depth| Some(depth.saturating_mul(4)))
}

/// Mines `job.opts.num_negatives` hard negatives for every query, from the exact search.
pub fn mine(pool: &rayon::ThreadPool, job: &MineJob<'_>, hooks: &mut dyn Hooks) -> Result<Mined> {
    let opts = job.opts;
    let capped = opts.max_score.is_some()
        || opts.absolute_margin.is_some()
        || opts.relative_margin.is_some();
    // `max_depth` cuts the ranking with the rows above the cap in it: the multi-pass walk.
    if capped && opts.max_depth.is_none() {
        return mine_capped(job, pool, hooks);
    }
    let (queries, corpus, exclude) = (job.queries, job.corpus, job.exclude);
    let mut exact = ExactSource::new(pool, queries, corpus, exclude, opts, job.query_offset);
    mine_with(&mut exact, pool, job, hooks)
}

/// [`mine`] with each query's [`score_cap`] pushed into the search: each round fetches the
/// pending queries' best rows at most their cap and what lies above it, and walks them with
/// the rows above the cap first (see [`Context::evaluate`]), so the result is the walk of the
/// whole ranking, as with [`mine_with`]. Only a window that other filters (near duplicates,
/// duplicate groups, `range_min`) empty needs a deeper round; with `min_score` above a
/// query's cap the query is not capped. `depth` and `fetches` are the schedule's
/// ([`scheduled`]).
fn mine_capped(
    job: &MineJob<'_>,
    pool: &rayon::ThreadPool,
    hooks: &mut dyn Hooks,
) -> Result<Mined> {
    job.validate(false)?;
    let (opts, exclude) = (job.opts, job.exclude);
    let (n_queries, n, dim) = (job.queries.rows(), job.corpus.rows(), job.corpus.dim());
    let (positive_scores, pos_offsets) = job.positive_scores(pool)?;
    let positives_of = |q: usize| &positive_scores[pos_offsets[q]..pos_offsets[q + 1]];
    let eligible: Vec<usize> = (0..n_queries).map(|q| n - exclude.of(q).len()).collect();
    let caps: Vec<ScoreCap> = (0..n_queries)
        .map(|q| score_cap(opts, positives_of(q).iter().copied().reduce(f32::min)))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = (0..n_queries).map(|_| None).collect();
    // The depth of the whole ranking at which each query's window completes (`usize::MAX`:
    // it does not).
    let mut needed = vec![usize::MAX; n_queries];
    let mut pending: Vec<usize> = (0..n_queries).filter(|&q| eligible[q] > 0).collect();
    for q in (0..n_queries).filter(|&q| eligible[q] == 0) {
        outcomes[q] = Some(Outcome::empty());
    }
    let mut exact = ExactSource::new(
        pool,
        job.queries,
        job.corpus,
        exclude,
        opts,
        job.query_offset,
    );
    let mut schedule = depth_schedule(opts);
    let ctx = job.context();
    while !pending.is_empty() {
        let want = schedule.next().unwrap_or(usize::MAX);
        let k = pending
            .iter()
            .map(|&q| eligible[q])
            .min()
            .unwrap_or(1)
            .min(want);
        // The rows above a cap that are kept count like the ranking's, up to its depth: more
        // are recorded (the result holds them anyway) and cannot be foreseen.
        let kept_above = opts.record_removed.unwrap_or(usize::MAX).min(k);
        let per_query =
            (k + kept_above) * RESULT_BYTES_PER_CANDIDATE + dim * std::mem::size_of::<f32>();
        let slice = (ROUND_BUDGET / per_query).max(1);
        let mut still = Vec::new();
        for part in pending.chunks(slice) {
            let part_caps: Vec<ScoreCap> = part.iter().map(|&q| caps[q]).collect();
            let (found, above) = exact.fetch_capped(part, k, &part_caps, hooks)?;
            let walked: Vec<Option<(Outcome, usize)>> = pool.install(|| {
                part.par_iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        let ranking: Vec<(f32, u32)> = found.ids[i * k..][..k]
                            .iter()
                            .zip(&found.scores[i * k..][..k])
                            .take_while(|(&id, _)| id >= 0)
                            .map(|(&id, &s)| (s, id as u32))
                            .collect();
                        // Fewer than k: every row at most the cap is in.
                        let exhausted = ranking.len() < k || k == eligible[q];
                        let outcome = ctx.evaluate(
                            q,
                            Some(&above[i]),
                            &ranking,
                            positives_of(q),
                            exhausted,
                            None,
                        );
                        let above_cap = above[i].counts[CAP_BOUNDS - 1] as usize;
                        (!outcome.need_more).then(|| {
                            let depth = outcome.complete_at.map_or(usize::MAX, |r| above_cap + r);
                            (outcome, depth)
                        })
                    })
                    .collect()
            });
            for (&q, walked) in part.iter().zip(walked) {
                match walked {
                    Some((outcome, depth)) => {
                        outcomes[q] = Some(outcome);
                        needed[q] = depth;
                    }
                    None => still.push(q),
                }
            }
        }
        pending = still;
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.expect("every query is resolved"))
        .collect();
    let (depth, fetches) = scheduled(opts, &eligible, &needed);
    job.finish(
        outcomes,
        positive_scores,
        depth,
        fetches,
        vec![false; n_queries],
        None,
    )
}

/// Each query's depth and fetch count on the [schedule](depth_schedule), as [`mine_with`]'s
/// rounds give them to queries that all have `eligible[q]` rows and whose window completes
/// at depth `needed[q]` of the whole ranking (`usize::MAX`: never): a round's depth is the
/// schedule's clipped to the fewest eligible rows pending, and a query leaves when its window
/// completes at that depth or the depth holds all its rows.
fn scheduled(opts: &MineOptions, eligible: &[usize], needed: &[usize]) -> (Vec<u32>, Vec<u32>) {
    let mut depth = vec![0u32; eligible.len()];
    let mut fetches = vec![0u32; eligible.len()];
    let mut pending: Vec<usize> = (0..eligible.len()).filter(|&q| eligible[q] > 0).collect();
    let mut schedule = depth_schedule(opts);
    while !pending.is_empty() {
        let want = schedule.next().unwrap_or(usize::MAX);
        let k = pending
            .iter()
            .map(|&q| eligible[q])
            .min()
            .unwrap_or(1)
            .min(want);
        pending.retain(|&q| {
            fetches[q] += 1;
            depth[q] = k as u32;
            needed[q] > k && k != eligible[q]
        });
    }
    (depth, fetches)
}

/// How one fetch of one query ended.
enum Walked {
    Done(Outcome),
    /// The window is not complete yet: fetch deeper next round.
    Deeper,
    /// The window is not complete and the source gave fewer candidates than asked for: the
    /// exact search takes the query over, at the same depth.
    Short,
}

/// [`mine`] with candidates from `source`: each round (depths from [`depth_schedule`]) fetches
/// the pending queries' candidates, rescores them exactly (unless the source declared exact
/// scores), walks them and keeps pending only the queries whose window the filters emptied.
/// Queries deeper than `source.max_depth()`, or for which it came back short, are finished by
/// the exact search; so a query ends with fewer negatives only when the corpus is used up,
/// whatever the source, and a source whose candidates hold each query's exact window gives
/// exactly [`mine`]'s negatives.
pub fn mine_with(
    source: &mut dyn CandidateSource,
    pool: &rayon::ThreadPool,
    job: &MineJob<'_>,
    hooks: &mut dyn Hooks,
) -> Result<Mined> {
    mine_judged(source, None, pool, job, hooks)
}

/// [`mine_with`] with a teacher judging the candidates (see `teacher.rs`): the score filters
/// read its scores, and [`Mined::teacher_scores`] holds its scores of the negatives. Without
/// one (`None`), [`mine_with`].
pub fn mine_judged(
    source: &mut dyn CandidateSource,
    judging: Option<Judging<'_>>,
    pool: &rayon::ThreadPool,
    job: &MineJob<'_>,
    hooks: &mut dyn Hooks,
) -> Result<Mined> {
    if let Some(judging) = &judging {
        let positives = job.positives;
        if judging.positive_scores.len() != positives.len() {
            return Err(Error::invalid(format!(
                "{} teacher scores for {} positives",
                judging.positive_scores.len(),
                positives.len()
            )));
        }
        if let Some(bad) = judging.positive_scores.iter().find(|s| !s.is_finite()) {
            return Err(Error::invalid(format!(
                "the teacher's positive scores must be finite, got {bad}"
            )));
        }
    }
    rounds(job, source, judging, pool, hooks)
}

/// The rounds of [`mine_with`] / [`mine_judged`].
fn rounds(
    job: &MineJob<'_>,
    source: &mut dyn CandidateSource,
    mut judging: Option<Judging<'_>>,
    pool: &rayon::ThreadPool,
    hooks: &mut dyn Hooks,
) -> Result<Mined> {
    let (queries, corpus, exclude, opts) = (job.queries, job.corpus, job.exclude, job.opts);
    job.validate(judging.is_some())?;
    let (n_queries, n, dim) = (queries.rows(), corpus.rows(), corpus.dim());
    let (positive_scores, pos_offsets) = job.positive_scores(pool)?;
    let mut judged = judging.as_ref().map(|_| Judged::new(n_queries));

    let caps: Vec<usize> = (0..n_queries)
        .map(|q| (n - exclude.of(q).len()).min(opts.max_depth.unwrap_or(usize::MAX)))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = (0..n_queries).map(|_| None).collect();
    let mut depth = vec![0u32; n_queries];
    let mut fetches = vec![0u32; n_queries];
    let mut exact_finish = vec![false; n_queries];
    let mut pending: Vec<usize> = (0..n_queries).filter(|&q| caps[q] > 0).collect();
    for q in (0..n_queries).filter(|&q| caps[q] == 0) {
        outcomes[q] = Some(Outcome::empty());
    }
    let source_limit = source.max_depth().unwrap_or(usize::MAX);
    let mut exact = ExactSource::new(pool, queries, corpus, exclude, opts, job.query_offset);
    let mut schedule = depth_schedule(opts);
    let ctx = job.context();
    // Ranks and walks the candidates `fetched` for the queries `part` at depth `k`; a teacher
    // judges the rankings (on this thread) between the two.
    let mut walk = |part: &[usize], fetched: &Candidates, k: usize| -> Result<Vec<Walked>> {
        if fetched.len() != part.len() {
            return Err(Error::invalid(format!(
                "the candidate source returned lists for {} queries, asked for {}",
                fetched.len(),
                part.len()
            )));
        }
        let rankings: Vec<Result<Vec<(f32, u32)>>> = pool.install(|| {
            let cosine = opts.metric == Metric::Cosine;
            part.par_iter()
                .enumerate()
                .map_init(
                    || Rescorer::new(Isa::detect(), dim, cosine),
                    |rescorer, (i, &q)| job.ranking(rescorer, q, fetched, i, k),
                )
                .collect()
        });
        // In query order: the first query that failed is the one named.
        let rankings = rankings.into_iter().collect::<Result<Vec<_>>>()?;
        if let (Some(judging), Some(judged)) = (judging.as_mut(), judged.as_mut()) {
            judged.judge(judging.teacher, job.query_offset, part, &rankings)?;
        }
        let (judged, teacher_positives) =
            (judged.as_ref(), judging.as_ref().map(|j| j.positive_scores));
        Ok(pool.install(|| {
            part.par_iter()
                .zip(&rankings)
                .map(|(&q, ranking)| {
                    let pos = pos_offsets[q]..pos_offsets[q + 1];
                    let candidates = judged.map(|j| j.of(q, ranking));
                    let judgement =
                        teacher_positives
                            .zip(candidates.as_deref())
                            .map(|(p, c)| Judgement {
                                candidates: c,
                                positives: &p[pos.clone()],
                            });
                    let exhausted = k == caps[q] && ranking.len() == k;
                    let outcome = ctx.evaluate(
                        q,
                        None,
                        ranking,
                        &positive_scores[pos],
                        exhausted,
                        judgement,
                    );
                    if !outcome.need_more {
                        Walked::Done(outcome)
                    } else if ranking.len() < k {
                        Walked::Short
                    } else {
                        Walked::Deeper
                    }
                })
                .collect()
        }))
    };
    while !pending.is_empty() {
        let want = schedule.next().unwrap_or(usize::MAX);
        // Every pending query can take k: it grows until the window is complete or the query
        // with the fewest eligible rows has them all (then it leaves `pending`).
        let k = pending
            .iter()
            .map(|&q| caps[q])
            .min()
            .unwrap_or(1)
            .min(want);
        // Deep rounds hold k results per query: bound them by fetching in slices.
        let per_query = k * RESULT_BYTES_PER_CANDIDATE + dim * std::mem::size_of::<f32>();
        let slice = (ROUND_BUDGET / per_query).max(1);
        // The source's queries first; then the exact search's: those deeper than the source
        // goes, those it came back short for (at the same depth) and those it already took.
        let (mut to_exact, to_source): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&q| exact_finish[q] || k > source_limit);
        let mut still = Vec::new();
        for part in to_source.chunks(slice) {
            let fetched = source.fetch(part, k, hooks)?;
            for (&q, walked) in part.iter().zip(walk(part, &fetched, k)?) {
                fetches[q] += 1;
                depth[q] = k as u32;
                match walked {
                    Walked::Done(outcome) => outcomes[q] = Some(outcome),
                    Walked::Deeper => still.push(q),
                    Walked::Short => to_exact.push(q),
                }
            }
        }
        to_exact.sort_unstable();
        for part in to_exact.chunks(slice) {
            let fetched = exact.fetch(part, k, hooks)?;
            for (&q, walked) in part.iter().zip(walk(part, &fetched, k)?) {
                fetches[q] += 1;
                depth[q] = k as u32;
                exact_finish[q] = true;
                match walked {
                    Walked::Done(outcome) => outcomes[q] = Some(outcome),
                    Walked::Deeper | Walked::Short => still.push(q),
                }
            }
        }
        still.sort_unstable();
        pending = still;
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.expect("every query is resolved"))
        .collect();
    job.finish(
        outcomes,
        positive_scores,
        depth,
        fetches,
        exact_finish,
        judged.as_ref(),
    )
}
