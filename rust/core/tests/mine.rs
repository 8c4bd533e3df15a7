//! Direct tests of `mine::mine` and `dedup::{duplicate_groups, link_queries}`: argument
//! validation, a small hand-checked walk, duplicate groups of identical rows (f16, -0.0),
//! linked-query components, and determinism across thread pools and query chunks.

use half::f16;
use negmine_core::dedup::{duplicate_groups, link_queries};
use negmine_core::mine::{mine, Filter, MineJob, MineOptions, Mined, Sampling};
use negmine_core::{Error, IdLists, MatrixView, Metric, NoHooks};

mod common;
use common::{pool, Rng};

fn lists(rows: &[Vec<i64>], n_corpus: usize) -> IdLists {
    let mut indptr = vec![0i64];
    let mut ids = Vec::new();
    for row in rows {
        ids.extend_from_slice(row);
        indptr.push(ids.len() as i64);
    }
    IdLists::from_csr(&indptr, &ids, rows.len(), n_corpus).unwrap()
}

/// Runs `mine` with `positives` as both positives and exclusions.
fn run(
    threads: usize,
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    positives: &[Vec<i64>],
    groups: Option<&[u32]>,
    opts: &MineOptions,
    offset: u64,
) -> Result<Mined, Error> {
    let pos = lists(positives, corpus.rows());
    mine(
        pool(threads),
        &MineJob {
            queries,
            corpus,
            positives: &pos,
            exclude: &pos,
            groups,
            opts,
            query_offset: offset,
        },
        &mut NoHooks,
    )
}

fn invalid(result: Result<Mined, Error>, needle: &str) {
    match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(
                message.contains(needle),
                "{message:?} does not mention {needle:?}"
            )
        }
        other => panic!("expected an InvalidArgument error about {needle}, got {other:?}"),
    }
}

/// Bitwise comparison (NaN scores of missing slots compare equal).
fn assert_same(a: &Mined, b: &Mined, what: &str) {
    assert_eq!(a.negative_ids, b.negative_ids, "{what}");
    let bits = |m: &Mined| {
        m.negative_scores
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(a), bits(b), "{what}");
    assert_eq!(a.positive_scores, b.positive_scores, "{what}");
    assert_eq!(a.found, b.found, "{what}");
    assert_eq!(a.removed, b.removed, "{what}");
}

#[test]
fn invalid_options_and_arguments_are_errors() {
    let q = [1.0f32, 0.0, 0.0, 1.0];
    let c = [1.0f32, 0.0, 0.5, 0.5, 0.0, 1.0, -1.0, 0.0];
    let (qv, cv) = (
        MatrixView::f32(&q, 2, 2).unwrap(),
        MatrixView::f32(&c, 4, 2).unwrap(),
    );
    let pos = vec![vec![0], vec![2]];
    let base = MineOptions::new(2, Metric::Dot);
    let with = |f: &dyn Fn(&mut MineOptions)| {
        let mut o = base.clone();
        f(&mut o);
        run(1, &qv, &cv, &pos, None, &o, 0)
    };
    invalid(with(&|o| o.num_negatives = 0), "num_negatives");
    invalid(with(&|o| o.range_max = Some(0)), "range_max");
    invalid(
        with(&|o| {
            o.range_min = 3;
            o.range_max = Some(3)
        }),
        "range_max",
    );
    invalid(
        with(&|o| {
            o.range_min = 1;
            o.range_max = Some(2)
        }),
        "num_negatives",
    );
    invalid(with(&|o| o.max_score = Some(f32::NAN)), "max_score");
    invalid(
        with(&|o| o.min_score = Some(f32::NEG_INFINITY)),
        "min_score",
    );
    invalid(
        with(&|o| o.absolute_margin = Some(f32::INFINITY)),
        "absolute_margin",
    );
    invalid(with(&|o| o.relative_margin = Some(1.0)), "relative_margin");
    invalid(with(&|o| o.relative_margin = Some(-0.5)), "relative_margin");
    invalid(
        with(&|o| o.relative_margin = Some(f32::NAN)),
        "relative_margin",
    );
    invalid(with(&|o| o.dup_threshold = Some(1.5)), "dup_threshold");
    invalid(with(&|o| o.dup_threshold = Some(f32::NAN)), "dup_threshold");
    invalid(
        with(&|o| {
            o.min_score = Some(1.0);
            o.max_score = Some(0.0)
        }),
        "min_score",
    );
    invalid(
        with(&|o| {
            o.sampling_strategy = Sampling::Simans;
            o.simans_a = -1.0;
        }),
        "simans",
    );
    invalid(
        with(&|o| {
            o.sampling_strategy = Sampling::Simans;
            o.simans_b = f32::NAN;
        }),
        "simans_b",
    );

    // Lists, groups and shapes.
    invalid(
        run(1, &qv, &cv, &[vec![0]], None, &base, 0),
        "one list per query",
    );
    invalid(run(1, &qv, &cv, &pos, Some(&[0, 1, 2]), &base, 0), "groups");
    let c3 = [0.0f32; 12];
    let cv3 = MatrixView::f32(&c3, 4, 3).unwrap();
    invalid(run(1, &qv, &cv3, &pos, None, &base, 0), "dimension");
    let positives = lists(&pos, 4);
    let exclude = lists(&[vec![0], vec![]], 4);
    invalid(
        mine(
            pool(1),
            &MineJob {
                queries: &qv,
                corpus: &cv,
                positives: &positives,
                exclude: &exclude,
                groups: None,
                opts: &base,
                query_offset: 0,
            },
            &mut NoHooks,
        ),
        "exclude",
    );
    assert!(IdLists::from_csr(&[0, 1], &[4], 1, 4).is_err());
}

#[test]
fn small_walk_by_hand() {
    // Dot scores of query 0 against the corpus: [3 (positive), 2.5, 2, 2, 1, 0, -1].
    let q = [1.0f32, 0.0];
    let c = [
        3.0f32, 0.0, 2.5, 1.0, 2.0, 0.0, 2.0, 5.0, 1.0, 0.0, 0.0, 1.0, -1.0, 0.0,
    ];
    let (qv, cv) = (
        MatrixView::f32(&q, 1, 2).unwrap(),
        MatrixView::f32(&c, 7, 2).unwrap(),
    );
    let pos = vec![vec![0]];
    let mut opts = MineOptions::new(3, Metric::Dot);
    opts.absolute_margin = Some(0.75); // drops 2.5 (2.5 + 0.75 > 3)
    opts.range_min = 1; // drops the best remaining (2 with id 2)
    let groups = [0u32, 1, 2, 2, 4, 5, 6]; // ids 2 and 3 are one group
    let m = run(1, &qv, &cv, &pos, Some(&groups), &opts, 0).unwrap();
    assert_eq!(m.negative_ids, vec![4, 5, 6]);
    assert_eq!(m.negative_scores, vec![1.0, 0.0, -1.0]);
    // Ranks in the ranking less the positive: 1, 2, 3 (0-2: removed), 4, 5, 6.
    assert_eq!(m.negative_ranks, vec![3, 4, 5]);
    assert_eq!(m.positive_scores, vec![3.0]);
    assert_eq!(m.found, vec![3]);
    let removed: Vec<(u32, Filter)> = m.removed.iter().map(|r| (r.id, r.filter)).collect();
    assert_eq!(
        removed,
        vec![
            (1, Filter::AbsoluteMargin),
            (2, Filter::RangeMin),
            (3, Filter::DuplicateGroup),
        ]
    );
    // Every row but the positive is needed: the walk reaches the end, nothing is missing.
    opts.num_negatives = 4;
    let m = run(1, &qv, &cv, &pos, Some(&groups), &opts, 0).unwrap();
    assert_eq!(m.negative_ids, vec![4, 5, 6, -1]);
    assert!(m.negative_scores[3].is_nan());
    assert_eq!(m.negative_ranks, vec![3, 4, 5, u32::MAX]);
    assert_eq!(m.found, vec![3]);
    // Rows 2 and 4 point the positive's way (cosine 1): near-duplicates of it. Row 2 is dropped
    // before its group is kept, so row 3 is the first of the filtered ranking (range_min).
    opts.num_negatives = 2;
    opts.dup_threshold = Some(0.99);
    let m = run(1, &qv, &cv, &pos, Some(&groups), &opts, 0).unwrap();
    assert_eq!(m.negative_ids, vec![5, 6]);
    let removed: Vec<(u32, Filter)> = m.removed.iter().map(|r| (r.id, r.filter)).collect();
    assert_eq!(
        removed,
        vec![
            (1, Filter::AbsoluteMargin),
            (2, Filter::NearDuplicateOfPositive),
            (3, Filter::RangeMin),
            (4, Filter::NearDuplicateOfPositive),
        ]
    );
}

#[test]
fn duplicate_groups_of_identical_rows() {
    let rows = [
        [1.0f32, 2.0, 0.0],
        [1.0, 2.0, -0.0], // -0.0 == 0.0: same embedding as row 0
        [1.0, 2.0, 1e-30],
        [0.5, 0.5, 0.5],
        [1.0, 2.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.0, 0.0, 0.0],
        [-0.0, -0.0, -0.0],
    ];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let view = MatrixView::f32(&flat, rows.len(), 3).unwrap();
    let want = vec![0, 0, 2, 3, 0, 3, 6, 6];
    for threads in 1..=3 {
        assert_eq!(
            duplicate_groups(pool(threads), &view),
            want,
            "{threads} threads"
        );
    }
    // f16: rows equal after widening, -0.0 included; values that differ in f32 but round to the
    // same f16 are the same stored row.
    let halves: Vec<f16> = flat.iter().map(|&x| f16::from_f32(x)).collect();
    let hv = MatrixView::f16(&halves, rows.len(), 3).unwrap();
    // 1e-30 underflows to +0 in f16: row 2 joins row 0.
    assert_eq!(duplicate_groups(pool(2), &hv), vec![0, 0, 0, 3, 0, 3, 6, 6]);
    let empty = MatrixView::f32(&[], 0, 3).unwrap();
    assert!(duplicate_groups(pool(1), &empty).is_empty());
    // Many rows: groups point at the first occurrence, for any pool.
    let mut rng = Rng(5);
    let big: Vec<f32> = (0..500 * 4).map(|_| rng.below(2) as f32).collect();
    let bv = MatrixView::f32(&big, 500, 4).unwrap();
    let g = duplicate_groups(pool(3), &bv);
    for i in 0..500 {
        let first = (0..=i)
            .find(|&j| big[j * 4..j * 4 + 4] == big[i * 4..i * 4 + 4])
            .unwrap();
        assert_eq!(g[i] as usize, first, "row {i}");
    }
    assert_eq!(g, duplicate_groups(pool(1), &bv));
}

#[test]
fn link_queries_components() {
    let q = [
        1.0f32, 0.0, 0.0, // 0
        0.0, 1.0, 0.0, // 1
        2.0, 0.01, 0.0, // 2: ~ query 0
        0.0, 0.0, 1.0, // 3
        0.0, 3.0, 0.001, // 4: ~ query 1
        1.0, 0.02, 0.0, // 5: ~ query 0 and 2
    ];
    let view = MatrixView::f32(&q, 6, 3).unwrap();
    for threads in 1..=3 {
        let c = link_queries(pool(threads), &view, 0.99, 16, &mut NoHooks).unwrap();
        assert_eq!(c, vec![0, 1, 0, 3, 1, 0], "{threads} threads");
    }
    // Threshold -1 links everything; 1.0 only exact directions (row 2 is not exact).
    assert_eq!(
        link_queries(pool(2), &view, -1.0, 16, &mut NoHooks).unwrap(),
        vec![0; 6]
    );
    let exact = link_queries(pool(2), &view, 1.0, 16, &mut NoHooks).unwrap();
    assert_eq!(exact[1], 1);
    assert_eq!(exact[3], 3);
    for bad in [f32::NAN, 1.5, -1.01, f32::INFINITY] {
        match link_queries(pool(1), &view, bad, 16, &mut NoHooks) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("query_dup_threshold"), "{m}"),
            other => panic!("threshold {bad}: {other:?}"),
        }
    }
    // One query, or none: each its own component.
    let one = MatrixView::f32(&q[..3], 1, 3).unwrap();
    assert_eq!(
        link_queries(pool(1), &one, 0.5, 16, &mut NoHooks).unwrap(),
        vec![0]
    );
    // 40 identical queries with only 4 neighbours each still form one component.
    let same: Vec<f32> = (0..40).flat_map(|_| [0.3f32, 0.4, 0.5]).collect();
    let sv = MatrixView::f32(&same, 40, 3).unwrap();
    assert_eq!(
        link_queries(pool(3), &sv, 0.999, 4, &mut NoHooks).unwrap(),
        vec![0; 40]
    );
}

#[test]
fn deterministic_across_pools_and_query_chunks() {
    let (n_q, n_c, dim) = (23, 300, 6);
    let mut rng = Rng(17);
    let q: Vec<f32> = (0..n_q * dim).map(|_| rng.int()).collect();
    let c: Vec<f32> = (0..n_c * dim).map(|_| rng.int()).collect();
    let (qv, cv) = (
        MatrixView::f32(&q, n_q, dim).unwrap(),
        MatrixView::f32(&c, n_c, dim).unwrap(),
    );
    let positives: Vec<Vec<i64>> = (0..n_q)
        .map(|_| (0..rng.below(3)).map(|_| rng.below(n_c) as i64).collect())
        .collect();
    let groups = duplicate_groups(pool(2), &cv);
    let samplings = [Sampling::Top, Sampling::Random, Sampling::Simans];
    for sampling in samplings {
        for metric in [Metric::Dot, Metric::Cosine] {
            let mut opts = MineOptions::new(4, metric);
            opts.sampling_strategy = sampling;
            (opts.simans_a, opts.simans_b) = (0.5, -2.0);
            opts.range_min = 2;
            opts.relative_margin = Some(0.1);
            opts.dup_threshold = Some(0.9);
            opts.seed = 99;
            let one = run(1, &qv, &cv, &positives, Some(&groups), &opts, 0).unwrap();
            for threads in 2..=3 {
                for block_rows in [None, Some(7)] {
                    let mut o = opts.clone();
                    o.block_rows = block_rows;
                    o.query_batch = block_rows.map(|_| 3);
                    let other = run(threads, &qv, &cv, &positives, Some(&groups), &o, 0).unwrap();
                    assert_same(&one, &other, &format!("{sampling:?} {metric:?} {threads}"));
                }
            }
            // Chunks with their global offset give the same negatives.
            let mut ids = Vec::new();
            for (a, b) in [(0, 5), (5, 6), (6, 23)] {
                let part = run(
                    2,
                    &qv.slice_rows(a, b),
                    &cv,
                    &positives[a..b],
                    Some(&groups),
                    &opts,
                    a as u64,
                )
                .unwrap();
                ids.extend(part.negative_ids);
            }
            assert_eq!(ids, one.negative_ids, "{sampling:?} {metric:?} chunked");
            if sampling != Sampling::Top {
                // Another seed, another draw (somewhere among 23 queries).
                let mut o = opts.clone();
                o.seed = 100;
                let other = run(1, &qv, &cv, &positives, Some(&groups), &o, 0).unwrap();
                assert_ne!(
                    other.negative_ids, one.negative_ids,
                    "{sampling:?} {metric:?}"
                );
                // Without an offset, chunks reuse the seeds of queries 0..: not the same draw.
                let shifted = run(
                    1,
                    &qv.slice_rows(5, 23),
                    &cv,
                    &positives[5..],
                    Some(&groups),
                    &opts,
                    0,
                )
                .unwrap();
                assert_ne!(
                    shifted.negative_ids,
                    one.negative_ids[5 * 4..],
                    "{sampling:?}"
                );
            }
            // Never a positive nor a member of a positive's group.
            for (qi, pos) in positives.iter().enumerate() {
                for &id in &one.negative_ids[qi * 4..qi * 4 + 4] {
                    if id >= 0 {
                        assert!(!pos.contains(&id));
                        assert!(pos
                            .iter()
                            .all(|&p| groups[p as usize] != groups[id as usize]));
                    }
                }
            }
        }
    }
}
