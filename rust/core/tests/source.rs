//! Mining from candidate sources (`mine::mine_with`): a source whose candidates hold the exact
//! window gives exactly `mine`'s outputs however it returns them (shuffled, duplicated, with
//! excluded or extra ids, fewer than asked), a source with a small depth limit is finished by
//! the exact search, bad ids are refused naming the query, and every source follows the one
//! deepening schedule.

use std::cell::RefCell;

use negmine_core::dedup::duplicate_groups;
use negmine_core::mine::{
    depth_schedule, mine, mine_with, Candidates, FnSource, MineJob, MineOptions, Mined, Sampling,
};
use negmine_core::{search, Error, IdLists, MatrixView, Metric, NoHooks, SearchOptions};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

/// Random small inputs: integer-valued rows (many ties), 1-2 positives per query, the
/// positives plus sometimes one more row excluded.
struct Data {
    n_q: usize,
    n_c: usize,
    dim: usize,
    queries: Vec<f32>,
    corpus: Vec<f32>,
    positives: IdLists,
    exclude: IdLists,
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

impl Data {
    fn new(rng: &mut Rng, n_q: usize, n_c: usize, dim: usize) -> Data {
        let queries = (0..n_q * dim).map(|_| rng.int()).collect();
        let corpus = (0..n_c * dim).map(|_| rng.int()).collect();
        let positives: Vec<Vec<i64>> = (0..n_q)
            .map(|_| {
                (0..1 + rng.below(2))
                    .map(|_| rng.below(n_c) as i64)
                    .collect()
            })
            .collect();
        let exclude: Vec<Vec<i64>> = positives
            .iter()
            .map(|p| {
                let mut e = p.clone();
                if rng.below(2) == 0 {
                    e.push(rng.below(n_c) as i64);
                }
                e
            })
            .collect();
        Data {
            n_q,
            n_c,
            dim,
            queries,
            corpus,
            positives: lists(&positives, n_c),
            exclude: lists(&exclude, n_c),
        }
    }

    fn views(&self) -> (MatrixView<'_>, MatrixView<'_>) {
        (
            MatrixView::f32(&self.queries, self.n_q, self.dim).unwrap(),
            MatrixView::f32(&self.corpus, self.n_c, self.dim).unwrap(),
        )
    }

    /// Each query of `part`'s exact top `depth` among the rows it does not exclude (the
    /// search's ids only: the driver has to rescore them).
    fn exact_top(&self, part: &[usize], depth: usize, metric: Metric) -> Vec<Vec<i64>> {
        let dim = self.dim;
        let rows: Vec<f32> = part
            .iter()
            .flat_map(|&q| self.queries[q * dim..(q + 1) * dim].iter().copied())
            .collect();
        let sub = MatrixView::f32(&rows, part.len(), dim).unwrap();
        let (_, corpus) = self.views();
        let found = search(
            pool(2),
            &sub,
            &corpus,
            Some(&self.exclude.subset(part)),
            &SearchOptions::new(depth, metric),
            &mut NoHooks,
        )
        .unwrap();
        found.ids.chunks(depth).map(<[i64]>::to_vec).collect()
    }

    fn mine(&self, opts: &MineOptions, groups: Option<&[u32]>) -> Mined {
        let (q, c) = self.views();
        mine(
            pool(2),
            &MineJob {
                queries: &q,
                corpus: &c,
                positives: &self.positives,
                exclude: &self.exclude,
                groups,
                opts,
                query_offset: 5,
            },
            &mut NoHooks,
        )
        .unwrap()
    }

    fn mine_with<F>(
        &self,
        source: FnSource<F>,
        opts: &MineOptions,
        groups: Option<&[u32]>,
    ) -> Result<Mined, Error>
    where
        F: FnMut(&[usize], usize) -> Result<Candidates, Error>,
    {
        let mut source = source;
        let (q, c) = self.views();
        mine_with(
            &mut source,
            pool(2),
            &MineJob {
                queries: &q,
                corpus: &c,
                positives: &self.positives,
                exclude: &self.exclude,
                groups,
                opts,
                query_offset: 5,
            },
            &mut NoHooks,
        )
    }
}

fn csr(lists: Vec<Vec<i64>>) -> Candidates {
    let mut indptr = vec![0i64];
    let mut ids = Vec::new();
    for list in lists {
        ids.extend(list);
        indptr.push(ids.len() as i64);
    }
    Candidates::from_csr(&indptr, ids).unwrap()
}

/// Everything `mine` returns, bitwise (NaN scores of missing slots compare equal).
fn assert_same(a: &Mined, b: &Mined, what: &str) {
    let bits = |m: &Mined| {
        m.negative_scores
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(a.negative_ids, b.negative_ids, "{what}");
    assert_eq!(bits(a), bits(b), "{what}");
    assert_eq!(a.positive_scores, b.positive_scores, "{what}");
    assert_eq!(a.found, b.found, "{what}");
    assert_eq!(a.removed, b.removed, "{what}");
    assert_eq!(a.removed_counts, b.removed_counts, "{what}");
    assert_eq!(a.depth, b.depth, "{what}");
}

/// Options that make filters empty windows, so queries are fetched again deeper.
fn options(rng: &mut Rng) -> MineOptions {
    let metric = [Metric::Dot, Metric::Cosine][rng.below(2)];
    let mut opts = MineOptions::new(1 + rng.below(4), metric);
    opts.sampling_strategy = [Sampling::Top, Sampling::Random, Sampling::Simans][rng.below(3)];
    (opts.simans_a, opts.simans_b) = (0.5, -1.0);
    opts.range_min = rng.below(20);
    if rng.below(2) == 0 {
        opts.range_max = Some(opts.range_min + opts.num_negatives + rng.below(30));
    }
    if rng.below(2) == 0 {
        opts.relative_margin = Some(0.05 * rng.below(10) as f32);
    }
    if rng.below(3) == 0 {
        opts.max_score = Some(rng.int());
    }
    if rng.below(3) == 0 {
        opts.dup_threshold = Some(0.9);
    }
    if rng.below(3) == 0 {
        opts.max_depth = Some(1 + rng.below(150));
    }
    opts.record_removed = Some(rng.below(40));
    opts.seed = rng.next();
    opts
}

/// How a test source hands over its exact top-`depth` candidates.
#[derive(Clone, Copy, Debug)]
enum Style {
    /// Shuffled, some ids twice, with the query's excluded ids and random extra rows.
    Messy,
    /// Only the best half (at least 1), shuffled: fewer than asked for.
    Fewer,
    /// Nothing at all.
    Empty,
}

fn messy(rng: &mut Rng, mut ids: Vec<i64>, excluded: &[u32], n_c: usize, style: Style) -> Vec<i64> {
    match style {
        Style::Messy => {
            let extra = ids.len() / 2 + 1;
            for _ in 0..extra {
                let copy = ids[rng.below(ids.len())];
                ids.push(copy);
                ids.push(rng.below(n_c) as i64);
            }
            ids.extend(excluded.iter().map(|&e| i64::from(e)));
        }
        Style::Fewer => ids.truncate(ids.len().div_ceil(2)),
        Style::Empty => ids.clear(),
    }
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    ids
}

#[test]
fn brute_force_source_gives_minings_outputs() {
    let mut rng = Rng(3);
    let mut deepened = 0;
    for case in 0..12 {
        let (n_q, n_c) = (1 + rng.below(12), 20 + rng.below(250));
        let data = Data::new(&mut rng, n_q, n_c, 4);
        let (_, corpus) = data.views();
        let groups = duplicate_groups(pool(1), &corpus);
        let opts = options(&mut rng);
        let exact = data.mine(&opts, Some(&groups));
        let asked = RefCell::new(Vec::new());
        let source = FnSource::new(|part: &[usize], depth: usize| {
            asked.borrow_mut().push(depth);
            Ok(csr(data.exact_top(part, depth, opts.metric)))
        });
        let mined = data.mine_with(source, &opts, Some(&groups)).unwrap();
        assert_same(&exact, &mined, &format!("case {case} {opts:?}"));
        assert_eq!(mined.fetches, exact.fetches, "case {case}");
        deepened += mined.fetches.iter().filter(|&&f| f > 1).count();
        assert!(mined.exact_finish.iter().all(|&e| !e), "case {case}");
        // The source was asked the schedule's depths in order (clipped to what the pending
        // queries can still get), each deeper than the last.
        let asked = asked.into_inner();
        assert!(
            asked.windows(2).all(|w| w[0] <= w[1]),
            "case {case} {asked:?}"
        );
        let mut schedule = depth_schedule(&opts);
        let mut rounds = asked.clone();
        rounds.dedup();
        for depth in rounds {
            let want = schedule.next().unwrap();
            assert!(depth <= want, "case {case}: asked {depth}, schedule {want}");
        }
    }
    assert!(
        deepened > 0,
        "no query was fetched again: the cases test too little"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any source whose candidates hold the exact top of the depth asked gives `mine`'s
    /// outputs, however it hands them over; one that comes back short is finished exactly.
    #[test]
    fn sources_holding_the_exact_window_give_exact_negatives(seed in any::<u64>(), style in 0usize..3) {
        let style = [Style::Messy, Style::Fewer, Style::Empty][style];
        let mut rng = Rng(seed);
        let (n_q, n_c) = (1 + rng.below(8), 10 + rng.below(200));
        let data = Data::new(&mut rng, n_q, n_c, 3);
        let (_, corpus) = data.views();
        let groups = duplicate_groups(pool(1), &corpus);
        let use_groups = rng.below(2) == 0;
        let groups = use_groups.then_some(groups.as_slice());
        let opts = options(&mut rng);
        let exact = data.mine(&opts, groups);
        let shuffle = RefCell::new(Rng(seed ^ 0x5eed));
        let source = FnSource::new(|part: &[usize], depth: usize| {
            let mut rng = shuffle.borrow_mut();
            let tops = data.exact_top(part, depth, opts.metric);
            Ok(csr(
                part.iter()
                    .zip(tops)
                    .map(|(&q, top)| messy(&mut rng, top, data.exclude.of(q), data.n_c, style))
                    .collect(),
            ))
        });
        let mined = data.mine_with(source, &opts, groups).unwrap();
        assert_same(&exact, &mined, &format!("{style:?} {opts:?}"));
        if let Style::Messy = style {
            prop_assert!(mined.exact_finish.iter().all(|&e| !e));
        }
    }

    /// A source that serves only shallow depths is finished by the exact search: the same
    /// outputs, and it is never asked deeper than its limit.
    #[test]
    fn a_shallow_source_is_finished_exactly(seed in any::<u64>(), limit in 1usize..300) {
        let mut rng = Rng(seed);
        let (n_q, n_c) = (1 + rng.below(8), 10 + rng.below(300));
        let data = Data::new(&mut rng, n_q, n_c, 3);
        let opts = options(&mut rng);
        let exact = data.mine(&opts, None);
        let source = FnSource::new(|part: &[usize], depth: usize| {
            assert!(depth <= limit, "asked {depth} past the limit {limit}");
            Ok(csr(data.exact_top(part, depth, opts.metric)))
        })
        .with_max_depth(limit);
        let mined = data.mine_with(source, &opts, None).unwrap();
        assert_same(&exact, &mined, &format!("limit {limit} {opts:?}"));
        for q in 0..data.n_q {
            // Exactly the queries that needed a depth past the limit went to the exact search.
            prop_assert_eq!(mined.exact_finish[q], mined.depth[q] as usize > limit);
        }
    }
}

#[test]
fn bad_candidates_are_refused_naming_the_query() {
    let mut rng = Rng(11);
    let data = Data::new(&mut rng, 4, 30, 3);
    let opts = MineOptions::new(2, Metric::Dot);
    let message = |bad: i64| {
        let source = FnSource::new(|part: &[usize], depth: usize| {
            let mut lists = data.exact_top(part, depth, opts.metric);
            if let Some(i) = part.iter().position(|&q| q == 2) {
                lists[i].push(bad);
            }
            Ok(csr(lists))
        });
        match data.mine_with(source, &opts, None) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    };
    for bad in [30, -1, i64::MAX, i64::MIN] {
        let m = message(bad);
        // Named globally: row 2 of a call whose queries start at query_offset = 5.
        assert!(
            m.contains("queries row 7") && m.contains(&bad.to_string()),
            "{m}"
        );
    }
    // One list too few.
    let source = FnSource::new(|part: &[usize], depth: usize| {
        let mut lists = data.exact_top(part, depth, opts.metric);
        lists.pop();
        Ok(csr(lists))
    });
    match data.mine_with(source, &opts, None) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("lists for 3 queries"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // The source's own error is returned as it is.
    let source = FnSource::new(|_: &[usize], _: usize| Err(Error::Interrupted));
    assert!(matches!(
        data.mine_with(source, &opts, None),
        Err(Error::Interrupted)
    ));
    // Malformed CSR and dense shapes are refused when they are built.
    assert!(Candidates::from_csr(&[0, 2, 1], vec![1, 2]).is_err());
    assert!(Candidates::from_csr(&[0, 3], vec![1, 2]).is_err());
    assert!(Candidates::from_csr(&[], vec![]).is_err());
    assert!(Candidates::dense(3, vec![1, 2]).is_err());
    assert!(Candidates::dense(0, vec![1]).is_err());
    assert_eq!(Candidates::dense(2, vec![1, 2, 3, 4]).unwrap().len(), 2);
    assert!(csr(vec![vec![1]]).with_exact_scores(vec![]).is_err());
}

#[test]
fn the_deepening_schedule() {
    let first = |opts: &MineOptions| depth_schedule(opts).take(4).collect::<Vec<_>>();
    // Twice the window end, at least 64, then 4 times deeper per round.
    let mut opts = MineOptions::new(5, Metric::Dot);
    assert_eq!(first(&opts), [64, 256, 1024, 4096]);
    opts.range_min = 40;
    assert_eq!(first(&opts), [90, 360, 1440, 5760]);
    opts.range_max = Some(100);
    assert_eq!(first(&opts), [200, 800, 3200, 12800]);
    // The samplers' default window end: range_min + 10 * num_negatives.
    opts.range_max = None;
    opts.sampling_strategy = Sampling::Random;
    assert_eq!(first(&opts), [180, 720, 2880, 11520]);
    // It saturates instead of overflowing.
    opts.range_max = Some(usize::MAX / 2);
    let deep: Vec<usize> = depth_schedule(&opts).take(3).collect();
    assert_eq!(deep, [usize::MAX - 1, usize::MAX, usize::MAX]);
}
