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
            let got = nearest(pool(threads), Some(isa), &packed, start..n_rows, &corpus, &mut NoHooks)
                .unwrap();
            prop_assert_eq!(got.len(), n_rows - start);
            for (i, &(score, id)) in got.iter().enumerate() {
                let q = start + i;
                prop_assert_eq!(i64::from(id), want.ids[q], "{:?} row {}", isa, q);
                prop_assert_eq!(score.to_bits(), want.scores[q].to_bits(), "{:?} row {}", isa, q);
            }
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
