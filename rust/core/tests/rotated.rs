//! `precision = Rotated` against `precision = F32`, bit for bit (scores, ids, tie order, and
//! the same error where the f32 path refuses the inputs), on random shapes and spectra, with
//! the stage cuts chosen from the spectrum or forced (so that the rotated path runs on flat
//! spectra too), for every metric, dtype, exclusion, k, thread count, block size and ISA.
//! (`search.rs` shows the f32 path equals the brute-force oracle.)

use half::f16;
use negmine_core::kernels::Isa;
use negmine_core::search::{search_with_stats, Precision};
use negmine_core::{IdLists, MatrixView, Metric, NoHooks, SearchOptions};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

#[derive(Clone, Copy, Debug)]
enum Spectrum {
    /// Uniform values: a flat spectrum.
    Isotropic,
    /// Rows in the span of a few random directions (plus, sometimes, a whisper of noise).
    LowRank,
    /// Coordinate `j` scaled by `exp(-j / 4)`: real embeddings' decay, steeper.
    Decaying,
    /// Coordinate `j` scaled by `exp(j / 4)`: the energy in the last original coordinates.
    Rising,
    /// Rows scaled by `10^e`, `e` in `-25..15`: from near overflow down to the subnormals.
    HugeRange,
    /// Small integers with many exact duplicates and zero rows: ties at the k-th score.
    Ties,
}

fn fill(rng: &mut Rng, spectrum: Spectrum, rows: usize, dim: usize) -> Vec<f32> {
    let basis: Vec<Vec<f32>> = (0..1 + rng.below(3))
        .map(|_| (0..dim).map(|_| rng.unit()).collect())
        .collect();
    let noise = if rng.below(2) == 0 { 0.0 } else { 1e-3 };
    let mut out: Vec<f32> = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        if matches!(spectrum, Spectrum::Ties) && r > 0 && rng.below(3) == 0 {
            let from = rng.below(r) * dim;
            let copy = out[from..from + dim].to_vec();
            out.extend(copy);
            continue;
        }
        if rng.below(12) == 0 {
            out.extend(std::iter::repeat_n(0.0, dim));
            continue;
        }
        let scale = 10f32.powi(rng.below(40) as i32 - 25);
        let weights: Vec<f32> = basis.iter().map(|_| rng.unit()).collect();
        for j in 0..dim {
            let x = match spectrum {
                Spectrum::Isotropic => rng.unit(),
                Spectrum::LowRank => {
                    basis
                        .iter()
                        .zip(&weights)
                        .map(|(b, w)| b[j] * w)
                        .sum::<f32>()
                        + noise * rng.unit()
                }
                Spectrum::Decaying => rng.unit() * (-(j as f32) / 4.0).exp(),
                Spectrum::Rising => rng.unit() * ((j as f32 - dim as f32) / 4.0).exp(),
                Spectrum::HugeRange => rng.unit() * scale,
                Spectrum::Ties => rng.int(),
            };
            out.push(x);
        }
    }
    out
}

#[derive(Clone, Debug)]
struct Case {
    n_queries: usize,
    n: usize,
    dim: usize,
    spectrum: Spectrum,
    metric: Metric,
    half: bool,
    exclude: Option<Vec<Vec<u32>>>,
    k: usize,
    /// Forced stage cuts, or `None`: from the spectrum.
    cuts: Option<Vec<usize>>,
    block_rows: Option<usize>,
    query_batch: Option<usize>,
    threads: usize,
    isa: Isa,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let sizes = prop_oneof![
        6 => (1usize..=30, 1usize..=300, 1usize..=64),
        // A cut past 256 dimensions splits the kernel's depth into chunks.
        1 => (1usize..=8, 1usize..=60, 260usize..=420),
    ];
    let spectrum = prop_oneof![
        Just(Spectrum::Isotropic),
        Just(Spectrum::LowRank),
        Just(Spectrum::Decaying),
        Just(Spectrum::Rising),
        Just(Spectrum::HugeRange),
        Just(Spectrum::Ties),
    ];
    let metric = prop_oneof![Just(Metric::Dot), Just(Metric::Cosine)];
    let isas = Isa::available();
    let knobs = (
        prop::option::of(1usize..=200),
        prop::option::of(1usize..=40),
        1usize..=3,
        0..isas.len(),
    );
    (
        sizes,
        spectrum,
        metric,
        any::<bool>(),
        any::<bool>(),
        0.0f64..=1.0,
        0usize..4,
        any::<u64>(),
        knobs,
    )
        .prop_map(
            move |(
                (n_queries, n, dim),
                spectrum,
                metric,
                half,
                with_exclude,
                k_frac,
                cut_kind,
                seed,
                (block_rows, query_batch, threads, isa),
            )| {
                let mut rng = Rng(seed ^ 0x5A5A);
                let exclude = with_exclude.then(|| {
                    (0..n_queries)
                        .map(|_| (0..rng.below(n)).map(|_| rng.below(n) as u32).collect())
                        .collect::<Vec<Vec<u32>>>()
                });
                let most_excluded = exclude.as_ref().map_or(0, |ex| {
                    ex.iter()
                        .map(|row| {
                            let mut row = row.clone();
                            row.sort_unstable();
                            row.dedup();
                            row.len()
                        })
                        .max()
                        .unwrap_or(0)
                });
                let max_k = n - most_excluded;
                // Bias towards the extremes k = 1 and k = max_k.
                let k = ((max_k as f64 * k_frac * 1.2).ceil() as usize).clamp(1, max_k);
                let first = 1 + rng.below(dim);
                let cuts = match cut_kind {
                    0 => None,
                    1 if first < dim => Some(vec![first, first + 1 + rng.below(dim - first)]),
                    // A single small cut: most of the energy in the tail.
                    2 => Some(vec![1 + rng.below(dim.min(3))]),
                    _ => Some(vec![first]),
                };
                Case {
                    n_queries,
                    n,
                    dim,
                    spectrum,
                    metric,
                    half,
                    exclude,
                    k,
                    cuts,
                    block_rows,
                    query_batch,
                    threads,
                    isa: isas[isa],
                    seed,
                }
            },
        )
}

fn exclusions(exclude: &[Vec<u32>], n: usize) -> IdLists {
    let mut indptr = vec![0i64];
    let mut indices = Vec::new();
    for row in exclude {
        indices.extend(row.iter().map(|&id| i64::from(id)));
        indptr.push(indices.len() as i64);
    }
    IdLists::from_csr(&indptr, &indices, exclude.len(), n).unwrap()
}

fn check(case: &Case) {
    let mut rng = Rng(case.seed);
    let queries = fill(&mut rng, case.spectrum, case.n_queries, case.dim);
    let corpus = fill(&mut rng, case.spectrum, case.n, case.dim);
    let corpus16: Vec<f16> = corpus.iter().map(|&x| f16::from_f32(x)).collect();
    let q = MatrixView::f32(&queries, case.n_queries, case.dim).unwrap();
    let c = if case.half {
        MatrixView::f16(&corpus16, case.n, case.dim).unwrap()
    } else {
        MatrixView::f32(&corpus, case.n, case.dim).unwrap()
    };
    let ex = case.exclude.as_ref().map(|e| exclusions(e, case.n));
    let run = |precision: Precision, cuts: Option<Vec<usize>>| {
        let opts = SearchOptions {
            block_rows: case.block_rows,
            query_batch: case.query_batch,
            isa: Some(case.isa),
            precision,
            stage_cuts: cuts,
            ..SearchOptions::new(case.k, case.metric)
        };
        search_with_stats(pool(case.threads), &q, &c, ex.as_ref(), &opts, &mut NoHooks)
    };
    let want = run(Precision::F32, None);
    let got = run(Precision::Rotated, case.cuts.clone());
    match (got, want) {
        (Ok((got, stats)), Ok((want, _))) => {
            assert_eq!(got.ids, want.ids, "ids differ");
            let bits = |s: &[f32]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.scores), bits(&want.scores), "scores differ");
            if case.cuts.is_some() {
                assert_eq!(stats.precision, Precision::Rotated);
                assert_eq!(Some(stats.stage_cuts), case.cuts);
                // Every row of the result was rescored.
                let rescored: u64 = stats.rescored.iter().map(|&r| u64::from(r)).sum();
                assert!(rescored >= (case.n_queries * case.k) as u64);
            }
        }
        (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
        (got, want) => panic!(
            "rotated {:?} but f32 {:?}",
            got.map(|g| g.0),
            want.map(|w| w.0)
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn rotated_equals_f32_bit_for_bit(case in case()) {
        check(&case);
    }
}

/// One larger decaying corpus whose cuts come from its spectrum: the rotated path runs (no
/// fallback), prunes, and equals the f32 path for every knob.
#[test]
fn a_decaying_spectrum_prunes_and_stays_exact() {
    let (n_queries, n, dim) = (300, 3000, 64);
    for metric in [Metric::Dot, Metric::Cosine] {
        for (k, threads, block_rows) in [(1, 1, None), (10, 2, Some(500)), (100, 3, Some(77))] {
            let case = Case {
                n_queries,
                n,
                dim,
                spectrum: Spectrum::Decaying,
                metric,
                half: false,
                exclude: None,
                k,
                cuts: None,
                block_rows,
                query_batch: None,
                threads,
                isa: Isa::detect(),
                seed: 3,
            };
            check(&case);
        }
    }
    let mut rng = Rng(3);
    let corpus = fill(&mut rng, Spectrum::Decaying, n, dim);
    let c = MatrixView::f32(&corpus, n, dim).unwrap();
    let q = MatrixView::f32(&corpus[..n_queries * dim], n_queries, dim).unwrap();
    let opts = SearchOptions {
        precision: Precision::Rotated,
        ..SearchOptions::new(10, Metric::Cosine)
    };
    let (_, stats) = search_with_stats(pool(2), &q, &c, None, &opts, &mut NoHooks).unwrap();
    assert_eq!(stats.precision, Precision::Rotated, "{stats:?}");
    let rescored: u64 = stats.rescored.iter().map(|&r| u64::from(r)).sum();
    assert!(
        rescored < (n_queries * n / 4) as u64,
        "pruned too little: {stats:?}"
    );
}

/// A flat spectrum takes the f32 path.
#[test]
fn isotropic_data_falls_back() {
    let (n, dim) = (2000, 64);
    let mut rng = Rng(5);
    let corpus = fill(&mut rng, Spectrum::Isotropic, n, dim);
    let c = MatrixView::f32(&corpus, n, dim).unwrap();
    let q = MatrixView::f32(&corpus[..10 * dim], 10, dim).unwrap();
    let opts = SearchOptions {
        precision: Precision::Rotated,
        ..SearchOptions::new(10, Metric::Dot)
    };
    let (_, stats) = search_with_stats(pool(1), &q, &c, None, &opts, &mut NoHooks).unwrap();
    assert_eq!(stats.precision, Precision::F32);
    assert!(stats.stage_cuts.is_empty());
}

#[test]
fn bad_cuts_are_refused() {
    let corpus = vec![1.0f32; 40];
    let c = MatrixView::f32(&corpus, 5, 8).unwrap();
    for cuts in [
        vec![],
        vec![0],
        vec![9],
        vec![4, 4],
        vec![5, 3],
        vec![1, 2, 3],
    ] {
        let opts = SearchOptions {
            precision: Precision::Rotated,
            stage_cuts: Some(cuts.clone()),
            ..SearchOptions::new(2, Metric::Dot)
        };
        let err = search_with_stats(pool(1), &c, &c, None, &opts, &mut NoHooks).unwrap_err();
        assert!(err.to_string().contains("stage_cuts"), "{cuts:?}: {err}");
    }
}
