//! Batch plans: partitions with exact, announced counts; determinism per (seed, epoch); topic
//! purity; no in-batch conflicts after `separate`; uniform margin-bin picks; bad input.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use negmine_core::batches::{
    margin_balanced, ngame, ngame_count, separate, topic, topic_count, BatchPlan, Weighting,
};
use negmine_core::choice::Choice;
use negmine_core::rng::Rng;
use negmine_core::Error;
use proptest::prelude::*;

fn invalid<T: std::fmt::Debug>(result: Result<T, Error>, needle: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected InvalidArgument({needle:?}), got {other:?}"),
    }
}

/// Checks the plan is a valid partition of `kept` of the rows with the documented sizes.
fn check_partition(plan: &BatchPlan, n: usize, batch_size: usize, drop_last: bool) {
    assert_eq!(plan.offsets[0], 0);
    assert_eq!(*plan.offsets.last().unwrap() as usize, plan.rows.len());
    let sizes: Vec<usize> = (0..plan.len()).map(|b| plan.batch(b).len()).collect();
    for (b, &s) in sizes.iter().enumerate() {
        if b + 1 < sizes.len() || drop_last {
            assert_eq!(s, batch_size, "batch {b} of {}", sizes.len());
        } else {
            assert!(s >= 1 && s <= batch_size, "last batch has {s} rows");
        }
    }
    let mut seen = vec![false; n];
    for &r in &plan.rows {
        assert!(!seen[r as usize], "row {r} twice");
        seen[r as usize] = true;
    }
    let kept = if drop_last {
        n / batch_size * batch_size
    } else {
        n
    };
    if !drop_last {
        assert_eq!(plan.rows.len(), n, "every row exactly once");
    } else {
        assert!(plan.rows.len() >= kept.saturating_sub(batch_size));
        assert!(n - plan.rows.len() < batch_size, "dropped a whole batch");
    }
}

fn clusters_strategy() -> impl Strategy<Value = Vec<i64>> {
    (1usize..12).prop_flat_map(|k| proptest::collection::vec(0..k as i64, 0..300))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn topic_partitions_with_announced_count(
        clusters in clusters_strategy(),
        chunk in 1usize..9,
        cpb in 1usize..4,
        drop_last: bool,
        uniform: bool,
        seed in 0u64..4,
        epoch in 0u64..4,
    ) {
        let batch_size = chunk * cpb;
        let weighting = if uniform { Weighting::Uniform } else { Weighting::Size };
        let layout = topic_count(&clusters, batch_size, cpb, drop_last).unwrap();
        let plan = topic(&clusters, batch_size, seed, epoch, cpb, weighting, drop_last).unwrap();
        prop_assert_eq!(plan.len(), layout.batches());
        prop_assert_eq!(plan.rows.len(), layout.rows);
        prop_assert_eq!(plan.topical, layout.topical);
        check_partition(&plan, clusters.len(), batch_size, drop_last);
        // Topical batches: exactly `chunk` rows from each of at most `cpb` clusters.
        for b in 0..plan.topical {
            let mut per: HashMap<i64, usize> = HashMap::new();
            for &r in plan.batch(b) {
                *per.entry(clusters[r as usize]).or_default() += 1;
            }
            prop_assert!(per.len() <= cpb);
            prop_assert!(per.values().all(|&c| c % chunk == 0));
        }
        // The same (seed, epoch) gives the same plan.
        let again = topic(&clusters, batch_size, seed, epoch, cpb, weighting, drop_last).unwrap();
        prop_assert_eq!(plan, again);
    }

    #[test]
    fn ngame_partitions_with_announced_count(
        clusters in clusters_strategy(),
        batch_size in 1usize..20,
        drop_last: bool,
        seed in 0u64..4,
    ) {
        let plan = ngame(&clusters, batch_size, seed, 3, drop_last).unwrap();
        prop_assert_eq!(plan.len(), ngame_count(clusters.len(), batch_size, drop_last).unwrap());
        check_partition(&plan, clusters.len(), batch_size, drop_last);
        // Clusters are contiguous runs: the cluster sequence changes at most (#clusters - 1)
        // times.
        let distinct: HashSet<i64> = plan.rows.iter().map(|&r| clusters[r as usize]).collect();
        let changes = plan
            .rows
            .windows(2)
            .filter(|w| clusters[w[0] as usize] != clusters[w[1] as usize])
            .count();
        prop_assert!(changes < distinct.len().max(1));
    }

    #[test]
    fn separate_keeps_conflicting_rows_apart(
        n in 1usize..300,
        batch_size in 1usize..12,
        n_keys in 1i64..200,
        keys_per_row in 0usize..4,
        drop_last: bool,
        seed in 0u64..1000,
    ) {
        let mut rng = Rng::stream(seed, 0, 99, 0);
        let clusters: Vec<i64> = (0..n).map(|_| rng.below(5) as i64).collect();
        let mut indptr = vec![0i64];
        let mut keys = Vec::new();
        for _ in 0..n {
            for _ in 0..rng.below(keys_per_row + 1) {
                keys.push(rng.below(n_keys as usize) as i64 * 7 + 3);
            }
            indptr.push(keys.len() as i64);
        }
        let plan = topic(&clusters, batch_size, seed, 1, 1, Weighting::Uniform, drop_last)
            .unwrap();
        match separate(&plan, n, &indptr, &keys) {
            Ok(sep) => {
                prop_assert_eq!(&sep.offsets, &plan.offsets);
                let mut a = sep.rows.clone();
                let mut b = plan.rows.clone();
                a.sort_unstable();
                b.sort_unstable();
                prop_assert_eq!(a, b);
                for bi in 0..sep.len() {
                    let mut used = HashSet::new();
                    for &r in sep.batch(bi) {
                        let row_keys: HashSet<i64> = keys
                            [indptr[r as usize] as usize..indptr[r as usize + 1] as usize]
                            .iter()
                            .copied()
                            .collect();
                        for k in row_keys {
                            prop_assert!(used.insert(k), "key {} twice in batch {}", k, bi);
                        }
                    }
                }
                // Deterministic.
                prop_assert_eq!(sep, separate(&plan, n, &indptr, &keys).unwrap());
            }
            Err(Error::InvalidArgument(m)) => {
                prop_assert!(m.contains("conflict key") || m.contains("cannot keep"), "{}", m);
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }

    #[test]
    fn margin_picks_are_in_range(
        lens in proptest::collection::vec(0usize..12, 0..40),
        bins in 1usize..12,
        seed: u64,
    ) {
        let mut indptr = vec![0i64];
        let mut margins = Vec::new();
        let mut rng = Rng::stream(seed, 0, 7, 0);
        for &l in &lens {
            for _ in 0..l {
                margins.push(rng.below(1000) as f64 / 100.0 - 5.0);
            }
            indptr.push(margins.len() as i64);
        }
        let picks = margin_balanced(&indptr, &margins, bins, seed, 0).unwrap();
        prop_assert_eq!(picks.len(), lens.len());
        for (q, (&p, &l)) in picks.iter().zip(&lens).enumerate() {
            if l == 0 {
                prop_assert_eq!(p, -1, "query {}", q);
            } else {
                prop_assert!(p >= 0 && (p as usize) < l);
            }
        }
    }
}

#[test]
fn epochs_and_seeds_are_mixed_not_added() {
    let clusters: Vec<i64> = (0..1000).map(|i| i % 7).collect();
    let plan = |seed, epoch| topic(&clusters, 10, seed, epoch, 1, Weighting::Uniform, false);
    let p00 = plan(0, 0).unwrap();
    assert_ne!(p00, plan(0, 1).unwrap(), "new epoch, new plan");
    assert_ne!(
        plan(1, 0).unwrap(),
        plan(0, 1).unwrap(),
        "seed + epoch is not the key"
    );
    assert_ne!(plan(2, 0).unwrap(), plan(1, 1).unwrap());
    assert_eq!(p00, plan(0, 0).unwrap());
    let ng = |seed, epoch| ngame(&clusters, 10, seed, epoch, false).unwrap();
    assert_ne!(ng(1, 0), ng(0, 1));
    assert_ne!(ng(0, 0), ng(0, 1));
    let indptr: Vec<i64> = (0..=200).map(|q| q * 10).collect();
    let margins: Vec<f64> = (0..2000).map(|i| f64::from(i % 37)).collect();
    let mb = |seed, epoch| margin_balanced(&indptr, &margins, 10, seed, epoch).unwrap();
    assert_ne!(mb(1, 0), mb(0, 1));
    assert_ne!(mb(0, 0), mb(0, 1));
    assert_eq!(mb(3, 4), mb(3, 4));
}

#[test]
fn large_cluster_ids_give_the_same_plan_as_small_ones() {
    let small: Vec<i64> = (0..500).map(|i| (i * 7919) % 13).collect();
    // Same order of ids, huge values: the sorted-ids path.
    let large: Vec<i64> = small.iter().map(|&c| c * 1_000_000_000_000 + 5).collect();
    for w in [Weighting::Uniform, Weighting::Size] {
        assert_eq!(
            topic(&small, 8, 1, 2, 2, w, false).unwrap(),
            topic(&large, 8, 1, 2, 2, w, false).unwrap()
        );
    }
    assert_eq!(
        ngame(&small, 8, 1, 2, true).unwrap(),
        ngame(&large, 8, 1, 2, true).unwrap()
    );
}

#[test]
fn topic_counts_by_hand() {
    // Sizes 10, 3, 7 with batch 4: whole chunks 2 + 0 + 1 = 3 topical batches, leftovers
    // 2 + 3 + 3 = 8 rows: 2 more batches.
    let clusters: Vec<i64> = [vec![0; 10], vec![1; 3], vec![2; 7]].concat();
    let layout = topic_count(&clusters, 4, 1, false).unwrap();
    assert_eq!((layout.topical, layout.leftover, layout.rows), (3, 2, 20));
    let layout = topic_count(&clusters, 4, 2, true).unwrap();
    // Chunks of 2: 5 + 1 + 3 = 9 chunks -> 4 topical batches, 4 leftover rows -> 1 batch.
    assert_eq!((layout.topical, layout.leftover, layout.rows), (4, 1, 20));
    let layout = topic_count(&clusters, 6, 1, true).unwrap();
    // 1 + 0 + 1 topical, 20 - 12 = 8 leftovers -> 1 batch, 2 rows dropped.
    assert_eq!((layout.topical, layout.leftover, layout.rows), (2, 1, 18));
    assert_eq!(topic_count(&[], 4, 1, false).unwrap().batches(), 0);
    assert!(topic(&[], 4, 0, 0, 1, Weighting::Size, false)
        .unwrap()
        .is_empty());
    assert_eq!(ngame_count(10, 3, false).unwrap(), 4);
    assert_eq!(ngame_count(10, 3, true).unwrap(), 3);
}

#[test]
fn uniform_weighting_picks_clusters_uniformly() {
    // Cluster 0 has 90 chunks, cluster 1 has 10: uniform weighting picks each with
    // probability 1/2 for the first batch; size weighting 0.9 / 0.1.
    let clusters: Vec<i64> = [vec![0; 90], vec![1; 10]].concat();
    let first = |w| {
        (0..4000u64)
            .filter(|&seed| {
                let p = topic(&clusters, 1, seed, 0, 1, w, false).unwrap();
                clusters[p.rows[0] as usize] == 1
            })
            .count() as f64
            / 4000.0
    };
    let u = first(Weighting::Uniform);
    let s = first(Weighting::Size);
    assert!((u - 0.5).abs() < 0.04, "uniform: {u}");
    assert!((s - 0.1).abs() < 0.03, "size: {s}");
}

#[test]
fn margin_bins_are_picked_uniformly() {
    // One query pattern repeated: margins over [0, 10) in 10 bins; pairs in bins 0 (x5),
    // 3 (x1), 9 (x3): each non-empty bin 1/3, pairs uniform inside a bin.
    let pattern = [0.1, 0.2, 0.3, 0.4, 0.5, 3.5, 9.1, 9.5, 10.0];
    let n_queries = 30_000;
    let mut indptr = vec![0i64];
    let mut margins = Vec::new();
    for _ in 0..n_queries {
        margins.extend_from_slice(&pattern);
        indptr.push(margins.len() as i64);
    }
    let picks = margin_balanced(&indptr, &margins, 10, 5, 2).unwrap();
    let mut per_pair = [0usize; 9];
    for &p in &picks {
        per_pair[p as usize] += 1;
    }
    let bins = [
        per_pair[..5].iter().sum::<usize>(),
        per_pair[5],
        per_pair[6..].iter().sum(),
    ];
    let expected = n_queries as f64 / 3.0;
    let chi2: f64 = bins
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    // 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
    assert!(chi2 < 13.8, "bins {bins:?}, chi2 {chi2}");
    let inside = |range: std::ops::Range<usize>, total: usize| {
        let e = total as f64 / range.len() as f64;
        range
            .map(|i| (per_pair[i] as f64 - e).powi(2) / e)
            .sum::<f64>()
    };
    assert!(inside(0..5, bins[0]) < 18.5, "{per_pair:?}"); // 4 dof, p = 0.001
    assert!(inside(6..9, bins[2]) < 13.8, "{per_pair:?}");
}

#[test]
fn margin_edge_cases() {
    // All margins equal: one bin, uniform pick among all pairs.
    let picks = margin_balanced(&[0, 3, 3, 4], &[1.0, 1.0, 1.0, 1.0], 10, 0, 0).unwrap();
    assert_eq!(picks[1], -1);
    assert_eq!(picks[2], 0);
    assert!((0..3).contains(&picks[0]));
    // Extreme finite margins do not overflow the bin arithmetic.
    let picks = margin_balanced(&[0, 2], &[f64::MAX, -f64::MAX], 10, 0, 0).unwrap();
    assert!((0..2).contains(&picks[0]));
    assert!(margin_balanced(&[0], &[], 3, 0, 0).unwrap().is_empty());
}

#[test]
fn bad_input_is_a_clear_error() {
    let c = [0i64, 1, 1];
    invalid(
        topic(&c, 0, 0, 0, 1, Weighting::Uniform, false),
        "batch_size",
    );
    invalid(ngame(&c, 0, 0, 0, false), "batch_size");
    invalid(ngame_count(3, 0, false), "batch_size");
    invalid(
        topic(&[0, -2], 2, 0, 0, 1, Weighting::Uniform, false),
        "clusters[1] = -2",
    );
    invalid(ngame(&[-1], 2, 0, 0, false), "non-negative");
    invalid(topic(&c, 3, 0, 0, 2, Weighting::Size, false), "multiple");
    invalid(
        topic(&c, 3, 0, 0, 0, Weighting::Size, false),
        "clusters_per_batch",
    );
    invalid(Weighting::parse("big", "'big'"), "weighting");
    invalid(margin_balanced(&[0, 1], &[0.5], 0, 0, 0), "bins");
    invalid(margin_balanced(&[0, 2], &[0.5], 3, 0, 0), "end at");
    invalid(margin_balanced(&[], &[], 3, 0, 0), "at least one");
    invalid(margin_balanced(&[1, 1], &[0.5], 3, 0, 0), "start at 0");
    invalid(
        margin_balanced(&[0, 1, 0, 1], &[0.5], 3, 0, 0),
        "non-decreasing",
    );
    invalid(margin_balanced(&[0, 1], &[f64::NAN], 3, 0, 0), "finite");
    let plan = ngame(&c, 2, 0, 0, false).unwrap();
    invalid(separate(&plan, 3, &[0, 1], &[4]), "one entry per row");
    invalid(separate(&plan, 3, &[0, 1, 1, 1], &[-4]), "non-negative");
    invalid(separate(&plan, 3, &[0, 1, 1, 2], &[4]), "end at");
    let mut broken = plan.clone();
    broken.rows[0] = 7;
    invalid(separate(&broken, 3, &[0, 0, 0, 0], &[]), "0..3");
    // A key on 3 rows with 2 batches cannot be separated.
    invalid(
        separate(&plan, 3, &[0, 1, 2, 3], &[9, 9, 9]),
        "conflict key 9 is shared by 3 rows",
    );
}

#[test]
fn separate_fills_the_tail_by_swapping() {
    // 4 batches of 2; rows 6 and 7 (last batch) share key 1 with each other: the greedy puts
    // row 7 nowhere at the end and must swap it with an earlier row.
    let clusters = [0i64; 8];
    let plan = BatchPlan {
        rows: (0..8).collect(),
        offsets: vec![0, 2, 4, 6, 8],
        topical: 0,
    };
    let indptr = [0i64, 0, 0, 0, 0, 0, 0, 1, 2];
    let sep = separate(&plan, clusters.len(), &indptr, &[1, 1]).unwrap();
    assert_eq!(sep.offsets, plan.offsets);
    let b6 = (0..4).find(|&b| sep.batch(b).contains(&6)).unwrap();
    let b7 = (0..4).find(|&b| sep.batch(b).contains(&7)).unwrap();
    assert_ne!(b6, b7);
    // A key on as many rows as batches is still possible.
    let indptr: Vec<i64> = (0..=8).map(|r| (r + 1) / 2).collect();
    let sep = separate(&plan, 8, &indptr, &[5, 5, 5, 5]).unwrap();
    for b in 0..4 {
        let with_key = sep
            .batch(b)
            .iter()
            .filter(|&&r| r % 2 == 0 && r < 8)
            .count();
        assert_eq!(with_key, 1, "{sep:?}");
    }
}

/// Throughput of plan generation (printed, not asserted): run with `--nocapture`.
#[test]
fn throughput() {
    let n = 1_000_000usize;
    let mut rng = Rng::stream(1, 2, 3, 4);
    let clusters: Vec<i64> = (0..n).map(|_| rng.below(1000) as i64).collect();
    let mut indptr = vec![0i64];
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(rng.below(n / 2) as i64);
        keys.push(n as i64 + rng.below(n) as i64);
        indptr.push(keys.len() as i64);
    }
    let time = |what: &str, f: &mut dyn FnMut() -> usize| {
        let t = Instant::now();
        let rows = f();
        let s = t.elapsed().as_secs_f64();
        eprintln!("{what:>28}: {:>7.1} M indices/s", rows as f64 / s / 1e6);
    };
    time("topic uniform (B=64)", &mut || {
        topic(&clusters, 64, 0, 1, 1, Weighting::Uniform, false)
            .unwrap()
            .rows
            .len()
    });
    time("topic size, 4 per batch", &mut || {
        topic(&clusters, 64, 0, 1, 4, Weighting::Size, true)
            .unwrap()
            .rows
            .len()
    });
    time("ngame (B=64)", &mut || {
        ngame(&clusters, 64, 0, 1, false).unwrap().rows.len()
    });
    let plan = topic(&clusters, 64, 0, 1, 1, Weighting::Uniform, false).unwrap();
    time("separate, 2 keys/row", &mut || {
        separate(&plan, n, &indptr, &keys).unwrap().rows.len()
    });
    let m_indptr: Vec<i64> = (0..=n as i64).map(|q| q * 16).collect();
    let margins: Vec<f64> = (0..n * 16).map(|_| rng.below(10_000) as f64).collect();
    time("margin_balanced (pairs)", &mut || {
        margin_balanced(&m_indptr, &margins, 10, 0, 1).unwrap();
        margins.len()
    });
}

#[test]
fn separate_succeeds_with_heavy_but_feasible_keys() {
    // 2000 rows in 125 batches of 16; 30 heavy keys on up to 100 rows each, plus pair keys
    // (two rows sharing a positive): always feasible, the greedy must find it.
    let n = 2000usize;
    let mut failures = 0;
    for seed in 0..40u64 {
        let mut rng = Rng::stream(seed, 7, 7, 7);
        let clusters: Vec<i64> = (0..n).map(|_| rng.below(20) as i64).collect();
        let mut indptr = vec![0i64];
        let mut keys = Vec::new();
        for _ in 0..n {
            if rng.below(2) == 0 {
                keys.push(rng.below(30) as i64);
            }
            keys.push(1000 + rng.below(n / 2) as i64);
            indptr.push(keys.len() as i64);
        }
        let plan = topic(&clusters, 16, seed, 0, 1, Weighting::Uniform, false).unwrap();
        match separate(&plan, n, &indptr, &keys) {
            Ok(sep) => assert_eq!(sep.len(), plan.len()),
            Err(e) => {
                eprintln!("seed {seed}: {e}");
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 0);
}
