//! `search::nearest` (k-means' assignment) against `search` with `k = 1`, bit for bit: every
//! ISA, thread count, range of packed rows, exact ties (smaller row first) and `-0.0` scores.

use negmine_core::kernels::{Isa, MR};
use negmine_core::search::{nearest, PackedRows, Precision};
use negmine_core::{search, MatrixView, Metric, NoHooks, SearchOptions};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

fn rows(rng: &mut Rng, n: usize, dim: usize, ints: bool) -> Vec<f32> {
    (0..n * dim)
        .map(|_| {
            if ints {
                // Small integers: exact sums, many ties (and zero rows: `-0.0` and `+0.0`).
                rng.below(3) as f32 - 1.0
            } else {
                rng.unit() * 2.0 - 1.0
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn nearest_is_the_top_1_of_search(
        seed in any::<u64>(),
        n_rows in 1usize..300,
        n_corpus in 1usize..70,
        dim in 1usize..300,
        ints in any::<bool>(),
        threads in 1usize..=3,
        start_panel in 0usize..4,
    ) {
        let mut rng = Rng(seed);
        let q = rows(&mut rng, n_rows, dim, ints);
        let c = rows(&mut rng, n_corpus, dim, ints);
        let queries = MatrixView::f32(&q, n_rows, dim).unwrap();
        let corpus = MatrixView::f32(&c, n_corpus, dim).unwrap();
        let mut opts = SearchOptions::new(1, Metric::Dot);
        opts.precision = Precision::F32;
        let want = search(pool(1), &queries, &corpus, None, &opts, &mut NoHooks).unwrap();
        let start = (start_panel * MR).min(n_rows / MR * MR);
        let packed = PackedRows::new(pool(threads), &queries).unwrap();
        for isa in Isa::available() {
            // From the f32 rows, then from their int8 codes (bounds, then the few rows left
            // scored in f32).
            let mut coded = PackedRows::new(pool(threads), &queries).unwrap();
            coded.code(pool(threads), isa);
            for (how, rows) in [("f32", &packed), ("int8", &coded)] {
                let got = nearest(pool(threads), Some(isa), rows, start..n_rows, &corpus, &mut NoHooks)
                    .unwrap();
                prop_assert_eq!(got.len(), n_rows - start);
                for (i, &(score, id)) in got.iter().enumerate() {
                    let q = start + i;
                    prop_assert_eq!(i64::from(id), want.ids[q], "{:?} {} row {}", isa, how, q);
                    prop_assert_eq!(
                        score.to_bits(), want.scores[q].to_bits(), "{:?} {} row {}", isa, how, q
                    );
                }
            }
        }
    }
}

/// Rows coded for one ISA are scored in f32 by another: the codes are only read by the kernel
/// they were made for.
#[test]
fn codes_of_another_isa_are_not_used() {
    let mut rng = Rng(7);
    let (n, m, dim) = (50, 40, 33);
    let q = rows(&mut rng, n, dim, false);
    let c = rows(&mut rng, m, dim, false);
    let queries = MatrixView::f32(&q, n, dim).unwrap();
    let corpus = MatrixView::f32(&c, m, dim).unwrap();
    let plain = PackedRows::new(pool(1), &queries).unwrap();
    let isas = Isa::available();
    for &coded_for in &isas {
        let mut coded = PackedRows::new(pool(1), &queries).unwrap();
        coded.code(pool(1), coded_for);
        for &isa in &isas {
            let want = nearest(pool(1), Some(isa), &plain, 0..n, &corpus, &mut NoHooks).unwrap();
            let got = nearest(pool(1), Some(isa), &coded, 0..n, &corpus, &mut NoHooks).unwrap();
            assert_eq!(got, want, "coded for {coded_for:?}, run with {isa:?}");
        }
    }
}

#[test]
fn bad_rows_are_errors() {
    let good = vec![1.0f32; 8];
    let mut bad = good.clone();
    bad[5] = f32::NAN;
    let rows = MatrixView::f32(&bad, 2, 4).unwrap();
    let err = PackedRows::new(pool(1), &rows).err().unwrap();
    assert!(err.to_string().contains("row 1 contains NaN"), "{err}");
    let packed = PackedRows::new(pool(1), &MatrixView::f32(&good, 2, 4).unwrap()).unwrap();
    let corpus = MatrixView::f32(&bad, 2, 4).unwrap();
    let err = nearest(pool(1), None, &packed, 0..2, &corpus, &mut NoHooks)
        .err()
        .unwrap();
    assert!(err.to_string().contains("row 1 contains NaN"), "{err}");
    let empty = MatrixView::f32(&[], 0, 4).unwrap();
    assert!(nearest(pool(1), None, &packed, 0..2, &empty, &mut NoHooks).is_err());
}
