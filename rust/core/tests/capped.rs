//! Mining with score caps (`max_score`, `absolute_margin`, `relative_margin`) pushed into the
//! search: one pass keeps each query's best rows at most its cap and counts the rows above it.
//! Every output (negatives, scores, removals and their counts, depth, fetches) must equal the
//! multi-pass walk's (`mine_with` and the exact search as its source, which never caps), bit
//! for bit, over random data, options, groups, samplers, `record_removed`, threads and blocks.

use std::ops::Range;

use negmine_core::dedup::duplicate_groups;
use negmine_core::mine::{
    mine, mine_with, ExactSource, Filter, MineJob, MineOptions, Mined, Sampling,
};
use negmine_core::{search, Hooks, IdLists, MatrixView, Metric, NoHooks, SearchOptions};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

/// Counts the corpus rows the searches read.
#[derive(Default)]
struct Reads(u64);

impl Hooks for Reads {
    fn done_reading(&mut self, rows: Range<usize>) {
        self.0 += rows.len() as u64;
    }
}

fn lists(rows: &[Vec<i64>], n_corpus: usize) -> IdLists {
    let mut indptr = vec![0i64];
    let mut ids = Vec::new();
    for row in rows {
        ids.extend_from_slice(row);
        indptr.push(ids.len() as i64);
    }
    IdLists::from_csr(&indptr, &ids, rows.len(), n_corpus).unwrap()
}

/// A value of `x`'s magnitude: a random multiple, sometimes exactly a score-like integer (a
/// cut on a tie).
fn cut(rng: &mut Rng, scale: f32) -> f32 {
    if rng.below(3) == 0 {
        (rng.int() * scale / 3.0).round()
    } else {
        rng.unit() * scale
    }
}

fn options(rng: &mut Rng, metric: Metric, scale: f32) -> MineOptions {
    let mut opts = MineOptions::new(1 + rng.below(4), metric);
    opts.sampling_strategy = [Sampling::Top, Sampling::Random, Sampling::Simans][rng.below(3)];
    (opts.simans_a, opts.simans_b) = (0.5, -0.1);
    opts.range_min = rng.below(6);
    if rng.below(2) == 0 {
        opts.range_max = Some(opts.range_min + opts.num_negatives + rng.below(20));
    }
    if rng.below(2) == 0 {
        opts.relative_margin = Some(match rng.below(3) {
            0 => 0.0,
            1 => 0.05 * rng.below(20) as f32,
            _ => rng.unit().abs() * 0.999,
        });
    }
    if rng.below(2) == 0 {
        opts.absolute_margin = Some(cut(rng, scale) / 2.0);
    }
    if rng.below(3) == 0 {
        opts.max_score = Some(cut(rng, scale));
    }
    if rng.below(4) == 0 {
        let lo = cut(rng, scale);
        opts.min_score = Some(opts.max_score.map_or(lo, |hi| lo.min(hi)));
    }
    // At least one cap, so that the capped path runs.
    if opts.max_score.is_none() && opts.absolute_margin.is_none() {
        opts.relative_margin.get_or_insert(0.05);
    }
    if rng.below(3) == 0 {
        opts.dup_threshold = Some([0.9, 0.99, 0.5][rng.below(3)]);
    }
    opts.record_removed = match rng.below(4) {
        0 => None,
        _ => Some(rng.below(12)),
    };
    if rng.below(2) == 0 {
        opts.block_rows = Some(1 + rng.below(100));
    }
    if rng.below(2) == 0 {
        opts.query_batch = Some(1 + rng.below(6));
    }
    opts.seed = rng.next();
    opts
}

fn bits(m: &Mined) -> Vec<(u32, u32, u32, u8)> {
    m.removed
        .iter()
        .map(|r| (r.query, r.id, r.score.to_bits(), r.filter as u8))
        .collect()
}

fn assert_same(a: &Mined, b: &Mined, what: &str) {
    let scores = |m: &Mined| {
        m.negative_scores
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    let positives = |m: &Mined| {
        m.positive_scores
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(a.negative_ids, b.negative_ids, "ids {what}");
    assert_eq!(scores(a), scores(b), "scores {what}");
    assert_eq!(a.negative_ranks, b.negative_ranks, "ranks {what}");
    assert_eq!(positives(a), positives(b), "positive scores {what}");
    assert_eq!(a.found, b.found, "found {what}");
    assert_eq!(a.removed_counts, b.removed_counts, "counts {what}");
    assert_eq!(bits(a), bits(b), "removed {what}");
    assert_eq!(a.depth, b.depth, "depth {what}");
    assert_eq!(a.fetches, b.fetches, "fetches {what}");
    assert_eq!(a.exact_finish, b.exact_finish, "exact_finish {what}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The capped one-pass mining equals the multi-pass walk bit for bit, and reads the corpus
    /// at most as often.
    #[test]
    fn capped_mining_equals_the_multi_pass_walk(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (n_q, n_c, dim) = (1 + rng.below(10), 5 + rng.below(300), 1 + rng.below(6));
        let integers = rng.below(2) == 0;
        let value = |rng: &mut Rng| if integers { rng.int() } else { rng.unit() };
        let queries: Vec<f32> = (0..n_q * dim).map(|_| value(&mut rng)).collect();
        let mut corpus: Vec<f32> = (0..n_c * dim).map(|_| value(&mut rng)).collect();
        // Some exact copies: ties, duplicate groups and near-duplicates.
        for _ in 0..rng.below(n_c / 3 + 1) {
            let (a, b) = (rng.below(n_c), rng.below(n_c));
            let row = corpus[a * dim..(a + 1) * dim].to_vec();
            corpus[b * dim..(b + 1) * dim].copy_from_slice(&row);
        }
        // 0 to 2 positives (no positive: only max_score caps), excluded with maybe one more.
        let positives: Vec<Vec<i64>> = (0..n_q)
            .map(|_| (0..rng.below(3)).map(|_| rng.below(n_c) as i64).collect())
            .collect();
        let exclude: Vec<Vec<i64>> = positives
            .iter()
            .map(|p| {
                let mut e = p.clone();
                for _ in 0..rng.below(3) {
                    e.push(rng.below(n_c) as i64);
                }
                e
            })
            .collect();
        let excluded_rows = exclude.clone();
        let (positives, exclude) = (lists(&positives, n_c), lists(&exclude, n_c));
        let metric = [Metric::Dot, Metric::Cosine][rng.below(2)];
        let scale = match (metric, integers) {
            (Metric::Cosine, _) => 1.0,
            (Metric::Dot, true) => 9.0 * dim as f32,
            (Metric::Dot, false) => dim as f32 / 3.0,
        };
        let opts = options(&mut rng, metric, scale);
        let q = MatrixView::f32(&queries, n_q, dim).unwrap();
        let c = MatrixView::f32(&corpus, n_c, dim).unwrap();
        let groups: Option<Vec<u32>> = match rng.below(3) {
            0 => None,
            1 => Some(duplicate_groups(pool(1), &c)),
            _ => {
                let n_groups = 1 + rng.below(n_c);
                Some((0..n_c).map(|_| rng.below(n_groups) as u32).collect())
            }
        };
        let groups = groups.as_deref();
        let threads = (1 + rng.below(3), 1 + rng.below(3));
        let offset = rng.below(1000) as u64;

        let job = MineJob {
            queries: &q,
            corpus: &c,
            positives: &positives,
            exclude: &exclude,
            groups,
            opts: &opts,
            query_offset: offset,
        };
        let mut old_reads = Reads::default();
        let mut exact = ExactSource::new(pool(threads.0), &q, &c, &exclude, &opts, 0);
        let old = mine_with(&mut exact, pool(threads.0), &job, &mut old_reads).unwrap();
        let mut new_reads = Reads::default();
        let new = mine(pool(threads.1), &job, &mut new_reads).unwrap();
        assert_same(&old, &new, &format!("{threads:?} {opts:?}"));
        prop_assert!(new_reads.0 <= old_reads.0, "{} > {}", new_reads.0, old_reads.0);
        // Each negative's rank is its position in the query's whole ranking of the eligible
        // rows (the exact search of every row, less the excluded ones).
        let every =
            search(pool(1), &q, &c, None, &SearchOptions::new(n_c, metric), &mut NoHooks).unwrap();
        let k = opts.num_negatives;
        for (qi, excluded) in excluded_rows.iter().enumerate() {
            let ranking: Vec<i64> = every.ids[qi * n_c..(qi + 1) * n_c]
                .iter()
                .copied()
                .filter(|id| !excluded.contains(id))
                .collect();
            for j in 0..k {
                let (id, rank) = (new.negative_ids[qi * k + j], new.negative_ranks[qi * k + j]);
                let expected = ranking.iter().position(|&r| r == id).map_or(u32::MAX, |p| p as u32);
                prop_assert_eq!(rank, if id < 0 { u32::MAX } else { expected });
            }
        }
    }
}

/// Weak positives with a relative margin: the multi-pass walk rescans the corpus deeper, the
/// capped search does not (and gives the same outputs), whatever it records of the ~1,800
/// rows above each query's cap (a buffer of the best, all of them, or all cut to the best).
#[test]
fn weak_positives_take_one_pass() {
    let mut rng = Rng(7);
    let (n_q, n_c, dim) = (6, 2000, 8);
    // Queries and most rows lean the same way (cosine ~0.75); every tenth row does not, and
    // the positives (the last rows) alternate in sign: cosine about 0.
    let queries: Vec<f32> = (0..n_q * dim).map(|_| rng.unit() + 1.0).collect();
    let mut corpus: Vec<f32> = (0..n_c * dim)
        .map(|i| rng.unit() + if (i / dim) % 10 == 0 { 0.0 } else { 1.0 })
        .collect();
    for row in corpus.chunks_exact_mut(dim).skip(n_c - n_q) {
        for (j, x) in row.iter_mut().enumerate() {
            *x = if j % 2 == 0 { 1.0 } else { -1.0 } + rng.unit() * 0.1;
        }
    }
    let positives = lists(
        &(0..n_q)
            .map(|i| vec![(n_c - n_q + i) as i64])
            .collect::<Vec<_>>(),
        n_c,
    );
    let q = MatrixView::f32(&queries, n_q, dim).unwrap();
    let c = MatrixView::f32(&corpus, n_c, dim).unwrap();
    for record_removed in [Some(64), None, Some(1500)] {
        let mut opts = MineOptions::new(3, Metric::Cosine);
        opts.relative_margin = Some(0.05);
        opts.record_removed = record_removed;
        let mut old_reads = Reads::default();
        let mut exact = ExactSource::new(pool(2), &q, &c, &positives, &opts, 0);
        let old = mine_with(
            &mut exact,
            pool(2),
            &MineJob::new(&q, &c, &positives, &opts),
            &mut old_reads,
        )
        .unwrap();
        let mut new_reads = Reads::default();
        let new = mine(
            pool(2),
            &MineJob::new(&q, &c, &positives, &opts),
            &mut new_reads,
        )
        .unwrap();
        assert_same(&old, &new, &format!("weak positives {record_removed:?}"));
        assert!(
            old.fetches.iter().any(|&f| f > 1),
            "the walk did not deepen"
        );
        assert_eq!(new_reads.0, n_c as u64, "one pass");
        let above = new.removed_counts[0][Filter::RelativeMargin as usize];
        assert!(above > 1500, "{above} rows above the cap");
    }
}
