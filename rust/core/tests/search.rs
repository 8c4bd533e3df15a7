//! `search` against an exact brute-force oracle, bit for bit, for every blocking, batching,
//! thread count and instruction set; and its argument validation.
//!
//! The oracle follows the documented definition: a score is the fused multiply-add chain over
//! the dimensions in increasing order; for cosine both rows are first scaled to unit norm
//! (`pack::normalize`: f64 norm, f64 scaling, rounded to f32);
//! NaN ranks as -inf, -0.0 as +0.0; rows rank by score descending, then id ascending.

use std::collections::HashSet;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use half::f16;
use negmine_core::kernels::Isa;
use negmine_core::metric::score_limit;
use negmine_core::pack::normalize;
use negmine_core::search::Precision;
use negmine_core::{
    search, Error, Hooks, IdLists, MatrixView, Metric, Neighbors, NoHooks, SearchOptions,
};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Clone, Copy, Debug)]
enum Data {
    /// Small integers: every sum is exact, so scores tie a lot.
    Ints,
    /// Uniform floats: rounding matters, so only the same FMA chain gives the same bits.
    Floats,
    /// Floats with zeros, zero rows, subnormals and values whose products overflow (an error
    /// for dot products, see `score_limit`).
    Wild,
    /// Floats scaled so that the norms' product falls on either side of `score_limit`.
    Large,
    /// Halfway between two int8 codes of a row whose largest value is 1 (the pre-score's
    /// rounding boundaries), with some rows repeated and some one ulp apart from a repeat:
    /// exact and near ties around the k-th score.
    NearTies,
    /// Floats times `2^-e`, `e` drawn per row up to 150: products and sums of a pair fall
    /// anywhere from the normal range through the subnormals to zero, and int8 scales below
    /// the normal range.
    Tiny,
}

fn fill(rng: &mut Rng, data: Data, rows: usize, dim: usize) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        if matches!(data, Data::NearTies) && r > 0 && rng.below(3) == 0 {
            let from = rng.below(r) * dim;
            let copy: Vec<f32> = out[from..from + dim].to_vec();
            let nudge = rng.below(2) == 0;
            for (j, x) in copy.into_iter().enumerate() {
                out.push(if nudge && j == 0 { x.next_up() } else { x });
            }
            continue;
        }
        let zero_row = matches!(data, Data::Wild) && rng.below(8) == 0;
        let tiny = if matches!(data, Data::Tiny) {
            2.0f32.powi(-(rng.below(151) as i32))
        } else {
            1.0
        };
        for _ in 0..dim {
            let x = match data {
                _ if zero_row => 0.0,
                Data::Ints => (rng.below(9) as i32 - 4) as f32,
                Data::Floats => rng.unit(),
                Data::Large => rng.unit() * 2.0e18,
                Data::NearTies if rng.below(dim) == 0 => 1.0,
                Data::NearTies => (rng.below(254) as f32 - 127.0 + 0.5) / 127.0,
                Data::Tiny => rng.unit() * tiny,
                Data::Wild => match rng.below(10) {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f32::from_bits(1 + rng.below(0x007f_ffff) as u32),
                    3 => rng.unit() * 1.0e20,
                    _ => rng.unit(),
                },
            };
            out.push(x);
        }
    }
    out
}

/// Nearest f16 values, clamped to the finite f16 range.
fn to_f16(values: &[f32]) -> Vec<f16> {
    values
        .iter()
        .map(|&x| f16::from_f32(x.clamp(-65504.0, 65504.0)))
        .collect()
}

fn widen(values: &[f16]) -> Vec<f32> {
    values.iter().map(|x| x.to_f32()).collect()
}

fn canonical(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score + 0.0
    }
}

/// The brute-force oracle (see the module docs).
fn oracle(
    queries: &[f32],
    corpus: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    exclude: Option<&[Vec<u32>]>,
) -> Neighbors {
    let n = corpus.len() / dim;
    let unit = |row: &[f32]| {
        let mut row = row.to_vec();
        if metric == Metric::Cosine {
            normalize(&mut row);
        }
        row
    };
    let corpus: Vec<f32> = corpus.chunks_exact(dim).flat_map(unit).collect();
    let mut scores = Vec::new();
    let mut ids = Vec::new();
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        let q = unit(q);
        let excluded: HashSet<u32> = exclude
            .map(|ex| ex[qi].iter().copied().collect())
            .unwrap_or_default();
        let mut ranked: Vec<(f32, u32)> = (0..n as u32)
            .filter(|id| !excluded.contains(id))
            .map(|id| {
                let row = &corpus[id as usize * dim..][..dim];
                let mut acc = 0.0f32;
                for (&a, &b) in q.iter().zip(row) {
                    acc = a.mul_add(b, acc);
                }
                (canonical(acc), id)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        assert!(ranked.len() >= k, "test bug: k too large");
        for &(s, id) in &ranked[..k] {
            scores.push(s);
            ids.push(i64::from(id));
        }
    }
    Neighbors { k, scores, ids }
}

fn csr(exclude: &[Vec<u32>]) -> (Vec<i64>, Vec<i64>) {
    let mut indptr = vec![0i64];
    let mut indices = Vec::new();
    for row in exclude {
        indices.extend(row.iter().map(|&id| i64::from(id)));
        indptr.push(indices.len() as i64);
    }
    (indptr, indices)
}

fn exclusions(exclude: &[Vec<u32>], n_corpus: usize) -> IdLists {
    let (indptr, indices) = csr(exclude);
    IdLists::from_csr(&indptr, &indices, exclude.len(), n_corpus).unwrap()
}

#[derive(Clone, Debug)]
struct Knobs {
    block_rows: Option<usize>,
    query_batch: Option<usize>,
    threads: usize,
    isa: Option<Isa>,
    precision: Precision,
}

impl Knobs {
    fn default_with(threads: usize, isa: Isa, precision: Precision) -> Self {
        Knobs {
            block_rows: None,
            query_batch: None,
            threads,
            isa: Some(isa),
            precision,
        }
    }
}

fn run(
    queries: &MatrixView<'_>,
    corpus: &MatrixView<'_>,
    exclude: Option<&IdLists>,
    k: usize,
    metric: Metric,
    knobs: &Knobs,
) -> negmine_core::Result<Neighbors> {
    let opts = SearchOptions {
        k,
        metric,
        block_rows: knobs.block_rows,
        query_batch: knobs.query_batch,
        isa: knobs.isa,
        precision: knobs.precision,
        stage_cuts: None,
    };
    search(
        pool(knobs.threads),
        queries,
        corpus,
        exclude,
        &opts,
        &mut NoHooks,
    )
}

fn score_bits(n: &Neighbors) -> Vec<u32> {
    n.scores.iter().map(|s| s.to_bits()).collect()
}

#[track_caller]
fn assert_identical(got: &Neighbors, want: &Neighbors, what: &str) {
    assert_eq!(got.k, want.k, "{what}: k");
    assert_eq!(got.ids, want.ids, "{what}: ids differ from the oracle");
    assert_eq!(
        score_bits(got),
        score_bits(want),
        "{what}: scores differ from the oracle"
    );
}

fn invalid_message(result: negmine_core::Result<Neighbors>) -> String {
    match result {
        Err(Error::InvalidArgument(message)) => message,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn simple(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    fill(&mut Rng(seed), Data::Floats, rows, dim)
}

// ---------------------------------------------------------------------------------------------
// The oracle property

#[derive(Clone, Debug)]
struct Case {
    n_queries: usize,
    n: usize,
    dim: usize,
    data: Data,
    metric: Metric,
    half: bool,
    /// Per query, the ids to exclude (duplicates allowed: they count once).
    exclude: Option<Vec<Vec<u32>>>,
    k: usize,
    seed: u64,
    knobs: Knobs,
}

fn case() -> impl Strategy<Value = Case> {
    let sizes = prop_oneof![
        4 => (1usize..=20, 1usize..=90, 1usize..=40),
        // Above 384 dimensions the depth is split into chunks.
        1 => (1usize..=14, 1usize..=40, 380usize..=800),
    ];
    let data = prop_oneof![
        Just(Data::Ints),
        Just(Data::Floats),
        Just(Data::Wild),
        Just(Data::Large),
        Just(Data::NearTies),
        Just(Data::Tiny)
    ];
    let metric = prop_oneof![Just(Metric::Dot), Just(Metric::Cosine)];
    let isas = Isa::available();
    let knobs = (
        prop::option::of(1usize..=120),
        prop::option::of(1usize..=25),
        1usize..=3,
        prop::option::of(0..isas.len()),
        prop_oneof![
            Just(Precision::Auto),
            Just(Precision::F32),
            Just(Precision::Int8),
            Just(Precision::Rotated)
        ],
    )
        .prop_map(
            move |(block_rows, query_batch, threads, isa, precision)| Knobs {
                block_rows,
                query_batch,
                threads,
                isa: isa.map(|i| isas[i]),
                precision,
            },
        );
    (
        sizes,
        data,
        metric,
        any::<bool>(),
        any::<bool>(),
        0.0f64..=1.0,
        any::<u64>(),
        knobs,
    )
        .prop_map(
            |((n_queries, n, dim), data, metric, half, with_exclude, k_frac, seed, knobs)| {
                let mut rng = Rng(seed ^ 0xA5A5);
                let exclude = with_exclude.then(|| {
                    (0..n_queries)
                        .map(|_| {
                            let len = rng.below(n);
                            (0..len).map(|_| rng.below(n) as u32).collect()
                        })
                        .collect::<Vec<Vec<u32>>>()
                });
                let most_excluded = exclude.as_ref().map_or(0, |ex| {
                    ex.iter()
                        .map(|row| row.iter().collect::<HashSet<_>>().len())
                        .max()
                        .unwrap_or(0)
                });
                let max_k = n - most_excluded;
                // Bias towards the extremes k = 1 and k = max_k.
                let k = ((max_k as f64 * k_frac * 1.2).ceil() as usize).clamp(1, max_k);
                Case {
                    n_queries,
                    n,
                    dim,
                    data,
                    metric,
                    half,
                    exclude,
                    k,
                    seed,
                    knobs,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn search_equals_the_oracle_bit_for_bit(case in case()) {
        let mut rng = Rng(case.seed);
        let mut queries = fill(&mut rng, case.data, case.n_queries, case.dim);
        let mut corpus = fill(&mut rng, case.data, case.n, case.dim);
        let (queries16, corpus16) = (to_f16(&queries), to_f16(&corpus));
        if case.half {
            // f16 inputs must behave exactly like f32 inputs holding the widened values.
            queries = widen(&queries16);
            corpus = widen(&corpus16);
        }
        let want = oracle(
            &queries,
            &corpus,
            case.dim,
            case.k,
            case.metric,
            case.exclude.as_deref(),
        );
        let ex = case.exclude.as_ref().map(|e| exclusions(e, case.n));
        let (q32, c32) = (
            MatrixView::f32(&queries, case.n_queries, case.dim).unwrap(),
            MatrixView::f32(&corpus, case.n, case.dim).unwrap(),
        );
        let (q16, c16) = (
            MatrixView::f16(&queries16, case.n_queries, case.dim).unwrap(),
            MatrixView::f16(&corpus16, case.n, case.dim).unwrap(),
        );
        let mut runs: Vec<(String, MatrixView<'_>, MatrixView<'_>, Knobs)> =
            vec![("generated knobs".into(), q32, c32, case.knobs.clone())];
        if case.half {
            runs.push(("f16 corpus".into(), q32, c16, case.knobs.clone()));
            runs.push(("f16 queries and corpus".into(), q16, c16, case.knobs.clone()));
        }
        for isa in Isa::available() {
            for precision in [Precision::F32, Precision::Int8] {
                let knobs = Knobs::default_with(2, isa, precision);
                runs.push((format!("{} {precision:?} defaults", isa.name()), q32, c32, knobs));
            }
        }
        let overflows = case.metric == Metric::Dot
            && largest_squared_norm(&queries, case.dim) * largest_squared_norm(&corpus, case.dim)
                > score_limit(case.dim).powi(2);
        for (what, q, c, knobs) in runs {
            let got = run(&q, &c, ex.as_ref(), case.k, case.metric, &knobs);
            if overflows {
                let message = invalid_message(got);
                prop_assert!(message.contains("could overflow float32"), "{what}: {message}");
            } else {
                assert_identical(&got.unwrap(), &want, &format!("{what} {knobs:?}"));
            }
        }
    }
}

fn largest_squared_norm(rows: &[f32], dim: usize) -> f64 {
    rows.chunks_exact(dim)
        .map(|row| row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>())
        .fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Blocking, batching, threads and instruction sets on one larger problem

/// Many queries (several 144-query groups, so threads split queries) and few queries (threads
/// split the corpus into shards that are merged): every combination equals the oracle.
#[test]
fn knobs_never_change_the_result() {
    let dim = 24;
    let mut rng = Rng(7);
    let corpus = fill(&mut rng, Data::Ints, 300, dim);
    let queries = fill(&mut rng, Data::Floats, 700, dim);
    let c = MatrixView::f32(&corpus, 300, dim).unwrap();
    for (n_queries, k) in [(700usize, 10usize), (5, 300), (1, 1)] {
        let q = MatrixView::f32(&queries[..n_queries * dim], n_queries, dim).unwrap();
        for metric in [Metric::Dot, Metric::Cosine] {
            let want = oracle(&queries[..n_queries * dim], &corpus, dim, k, metric, None);
            for isa in Isa::available() {
                for threads in 1..=3 {
                    for query_batch in [None, Some(1), Some(7), Some(145), Some(usize::MAX)] {
                        for block_rows in [None, Some(1), Some(17), Some(1 << 20)] {
                            for precision in [Precision::F32, Precision::Int8] {
                                let knobs = Knobs {
                                    block_rows,
                                    query_batch,
                                    threads,
                                    isa: Some(isa),
                                    precision,
                                };
                                let got = run(&q, &c, None, k, metric, &knobs).unwrap();
                                let what = format!("Q={n_queries} {knobs:?}");
                                assert_identical(&got, &want, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn all_scores_tied_ranks_by_id() {
    let dim = 3;
    let n = 500;
    let corpus = vec![1.0f32; n * dim];
    let queries = vec![1.0f32; 4 * dim];
    let q = MatrixView::f32(&queries, 4, dim).unwrap();
    let c = MatrixView::f32(&corpus, n, dim).unwrap();
    let excluded = vec![vec![0u32, 5, 499], vec![], vec![1, 2, 3, 4], vec![250]];
    let ex = exclusions(&excluded, n);
    for threads in 1..=3 {
        for block_rows in [Some(16), Some(33), None] {
            let knobs = Knobs {
                block_rows,
                query_batch: Some(2),
                threads,
                isa: None,
                // Threads 1 and 3 (shards) pre-score in int8, 2 in f32: the same result.
                precision: if threads == 2 {
                    Precision::F32
                } else {
                    Precision::Int8
                },
            };
            let got = run(&q, &c, Some(&ex), 100, Metric::Dot, &knobs).unwrap();
            for (qi, row) in got.ids.chunks(100).enumerate() {
                let want: Vec<i64> = (0..n as i64)
                    .filter(|id| !excluded[qi].contains(&(*id as u32)))
                    .take(100)
                    .collect();
                assert_eq!(row, want.as_slice(), "query {qi}, {knobs:?}");
            }
            assert!(got.scores.iter().all(|&s| s == 3.0));
        }
    }
}

/// k = N - |excluded| (every remaining row) with k in the thousands.
#[test]
fn k_up_to_the_whole_corpus() {
    let (n, dim, n_queries) = (3000, 5, 7);
    let mut rng = Rng(11);
    let corpus = fill(&mut rng, Data::Ints, n, dim);
    let queries = fill(&mut rng, Data::Ints, n_queries, dim);
    let excluded: Vec<Vec<u32>> = (0..n_queries)
        .map(|q| (0..10).map(|i| (q * 97 + i * 31) as u32).collect())
        .collect();
    let ex = exclusions(&excluded, n);
    let q = MatrixView::f32(&queries, n_queries, dim).unwrap();
    let c = MatrixView::f32(&corpus, n, dim).unwrap();
    let k = n - 10;
    let want = oracle(&queries, &corpus, dim, k, Metric::Dot, Some(&excluded));
    for threads in 1..=3 {
        let knobs = Knobs {
            block_rows: Some(256),
            query_batch: None,
            threads,
            isa: None,
            // Threads 1 and 3 (shards) pre-score in int8, 2 in f32: the same result.
            precision: if threads == 2 {
                Precision::F32
            } else {
                Precision::Int8
            },
        };
        let got = run(&q, &c, Some(&ex), k, Metric::Dot, &knobs).unwrap();
        assert_identical(&got, &want, &format!("{knobs:?}"));
    }
    let want = oracle(&queries, &corpus, dim, n, Metric::Cosine, None);
    let got = run(
        &q,
        &c,
        None,
        n,
        Metric::Cosine,
        &Knobs::default_with(2, Isa::detect(), Precision::Auto),
    )
    .unwrap();
    assert_identical(&got, &want, "k = N");
}

#[test]
fn no_queries_gives_an_empty_result() {
    let corpus = simple(10, 4, 1);
    let c = MatrixView::f32(&corpus, 10, 4).unwrap();
    let q = MatrixView::f32(&[], 0, 4).unwrap();
    let got = run(
        &q,
        &c,
        None,
        3,
        Metric::Dot,
        &Knobs::default_with(2, Isa::Scalar, Precision::Auto),
    )
    .unwrap();
    assert_eq!(got.k, 3);
    assert!(got.scores.is_empty() && got.ids.is_empty());
}

#[test]
fn cosine_zero_rows_score_zero() {
    let dim = 4;
    let corpus = [
        0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0f32,
    ];
    let queries = [0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0f32];
    let q = MatrixView::f32(&queries, 2, dim).unwrap();
    let c = MatrixView::f32(&corpus, 3, dim).unwrap();
    let got = run(
        &q,
        &c,
        None,
        3,
        Metric::Cosine,
        &Knobs::default_with(1, Isa::detect(), Precision::Auto),
    )
    .unwrap();
    assert_eq!(got.scores, vec![0.0, 0.0, 0.0, 1.0, 0.0, -1.0]);
    assert_eq!(got.ids, vec![0, 1, 2, 1, 0, 2]);
}

/// Cosine is scale invariant and bounded by 1 in magnitude. A row whose norm is below
/// 1 / f32::MAX (all elements subnormal) has an inverse norm that overflows f32 to +inf.
#[test]
fn cosine_of_subnormal_rows_is_bounded() {
    let dim = 4;
    let tiny = 1.0e-39f32; // subnormal
    let corpus = [tiny, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0];
    let queries = [1.0, 0.0, 0.0, 0.0, tiny, 0.0, 0.0, 0.0];
    let q = MatrixView::f32(&queries, 2, dim).unwrap();
    let c = MatrixView::f32(&corpus, 2, dim).unwrap();
    for isa in Isa::available() {
        let got = run(
            &q,
            &c,
            None,
            2,
            Metric::Cosine,
            &Knobs::default_with(1, isa, Precision::Auto),
        )
        .unwrap();
        for s in &got.scores {
            assert!(
                s.is_finite() && s.abs() <= 1.0 + 1e-6,
                "{}: cosine scores must lie in [-1, 1], got {:?} (ids {:?})",
                isa.name(),
                got.scores,
                got.ids
            );
        }
        // Row 0 is parallel to query 0: cosine 1.
        assert_eq!(got.ids[0], 0, "{}", isa.name());
    }
}

/// Large but finite rows: the unit query dotted with the raw corpus row overflows f32 before
/// the corpus norm is applied.
#[test]
fn cosine_of_huge_rows_is_bounded() {
    let dim = 2;
    let big = 3.0e38f32;
    let corpus = [big, big, big, -big];
    let queries = [1.0f32, 1.0];
    let q = MatrixView::f32(&queries, 1, dim).unwrap();
    let c = MatrixView::f32(&corpus, 2, dim).unwrap();
    let got = run(
        &q,
        &c,
        None,
        2,
        Metric::Cosine,
        &Knobs::default_with(1, Isa::detect(), Precision::Auto),
    )
    .unwrap();
    assert!(
        got.scores
            .iter()
            .all(|s| s.is_finite() && s.abs() <= 1.0 + 1e-6),
        "cosine scores must lie in [-1, 1], got {:?}",
        got.scores
    );
    assert_eq!(got.ids, vec![0, 1]);
}

#[test]
fn normalize_scales_to_unit_norm_without_overflow() {
    let mut rng = Rng(3);
    for len in [1usize, 2, 7, 8, 9, 31, 384, 1000] {
        let mut row = fill(&mut rng, Data::Floats, 1, len);
        normalize(&mut row);
        let norm = row
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() <= 1e-6, "len {len}: norm {norm}");
    }
    let mut zeros = [0.0f32, -0.0, 0.0];
    normalize(&mut zeros);
    assert!(zeros.iter().all(|&x| x == 0.0));
    let mut pythagoras = [3.0f32, 4.0];
    normalize(&mut pythagoras);
    assert_eq!(pythagoras, [0.6, 0.8]);
    // Subnormal and huge rows keep their direction instead of overflowing.
    for scale in [1e-40f32, 3e38] {
        let mut row = [scale, scale];
        normalize(&mut row);
        assert!(
            (row[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{scale}: {row:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks

#[derive(Default)]
struct Recorder {
    progress: Vec<(u64, u64)>,
    will_read: Vec<Range<usize>>,
    done_reading: Vec<Range<usize>>,
    fail_at: Option<usize>,
}

impl Hooks for Recorder {
    fn progress(&mut self, done: u64, total: u64) -> negmine_core::Result<()> {
        self.progress.push((done, total));
        if self.fail_at == Some(self.progress.len()) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    fn will_read(&mut self, rows: Range<usize>) {
        self.will_read.push(rows);
    }

    fn done_reading(&mut self, rows: Range<usize>) {
        self.done_reading.push(rows);
    }
}

#[test]
fn progress_is_monotonic_and_ends_at_total() {
    let (n, dim, n_queries) = (1000, 8, 20);
    let corpus = simple(n, dim, 1);
    let queries = simple(n_queries, dim, 2);
    let q = MatrixView::f32(&queries, n_queries, dim).unwrap();
    let c = MatrixView::f32(&corpus, n, dim).unwrap();
    for threads in 1..=3 {
        for query_batch in [None, Some(7)] {
            let opts = SearchOptions {
                block_rows: Some(100),
                query_batch,
                ..SearchOptions::new(5, Metric::Dot)
            };
            let mut rec = Recorder::default();
            search(pool(threads), &q, &c, None, &opts, &mut rec).unwrap();
            let batches = query_batch.map_or(1, |b| n_queries.div_ceil(b)) as u64;
            let total = batches * n as u64;
            assert!(rec.progress.len() >= 2, "{:?}", rec.progress);
            assert!(
                rec.progress.iter().all(|&(_, t)| t == total),
                "{:?}",
                rec.progress
            );
            assert!(
                rec.progress.windows(2).all(|w| w[0].0 < w[1].0),
                "{:?}",
                rec.progress
            );
            assert_eq!(rec.progress.last().unwrap().0, total);
            // Every corpus row is announced and released once per query batch.
            for ranges in [&rec.will_read, &rec.done_reading] {
                let mut count = vec![0u64; n];
                for r in ranges.iter() {
                    for i in r.clone() {
                        count[i] += 1;
                    }
                }
                assert!(count.iter().all(|&c| c == batches), "threads {threads}");
            }
        }
    }
}

#[test]
fn a_failing_progress_hook_stops_the_search() {
    let corpus = simple(1000, 8, 1);
    let queries = simple(3, 8, 2);
    let q = MatrixView::f32(&queries, 3, 8).unwrap();
    let c = MatrixView::f32(&corpus, 1000, 8).unwrap();
    let opts = SearchOptions {
        block_rows: Some(64),
        ..SearchOptions::new(5, Metric::Dot)
    };
    let mut rec = Recorder {
        fail_at: Some(2),
        ..Recorder::default()
    };
    let result = search(pool(2), &q, &c, None, &opts, &mut rec);
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert_eq!(rec.progress.len(), 2, "no progress after the hook failed");
}

// ---------------------------------------------------------------------------------------------
// Validation

fn check(
    queries: &[f32],
    corpus: &[f32],
    shapes: [(usize, usize); 2],
    k: usize,
    exclude: Option<&IdLists>,
    threads: usize,
) -> negmine_core::Result<Neighbors> {
    let [(n_queries, query_dim), (n, corpus_dim)] = shapes;
    let q = MatrixView::f32(queries, n_queries, query_dim).unwrap();
    let c = MatrixView::f32(corpus, n, corpus_dim).unwrap();
    let opts = SearchOptions {
        block_rows: Some(16),
        ..SearchOptions::new(k, Metric::Dot)
    };
    search(pool(threads), &q, &c, exclude, &opts, &mut NoHooks)
}

#[test]
fn dimension_mismatch_names_both_dimensions() {
    let message = invalid_message(check(
        &simple(2, 5, 1),
        &simple(3, 7, 2),
        [(2, 5), (3, 7)],
        1,
        None,
        1,
    ));
    assert!(message.contains('5') && message.contains('7'), "{message}");
}

#[test]
fn zero_dimension_empty_corpus_and_bad_k_are_refused() {
    let message = invalid_message(check(&[], &[], [(2, 0), (3, 0)], 1, None, 1));
    assert!(message.contains("dimension 0"), "{message}");
    let message = invalid_message(check(&simple(2, 4, 1), &[], [(2, 4), (0, 4)], 1, None, 1));
    assert!(message.contains("empty"), "{message}");
    let (queries, corpus) = (simple(2, 4, 1), simple(10, 4, 2));
    let message = invalid_message(check(&queries, &corpus, [(2, 4), (10, 4)], 0, None, 1));
    assert!(message.contains("k must be positive"), "{message}");
    let message = invalid_message(check(&queries, &corpus, [(2, 4), (10, 4)], 11, None, 1));
    assert!(
        message.contains("11") && message.contains("10"),
        "{message}"
    );
    // k = N is fine.
    check(&queries, &corpus, [(2, 4), (10, 4)], 10, None, 1).unwrap();
}

#[test]
fn k_larger_than_the_rows_left_after_exclusion_is_refused() {
    let (queries, corpus) = (simple(3, 4, 1), simple(10, 4, 2));
    // Duplicates count once: query 1 excludes 3 distinct rows, leaving 7.
    let ex = exclusions(&[vec![], vec![1, 2, 2, 9, 1], vec![0]], 10);
    assert_eq!(ex.of(1), &[1, 2, 9]);
    check(&queries, &corpus, [(3, 4), (10, 4)], 7, Some(&ex), 1).unwrap();
    let message = invalid_message(check(&queries, &corpus, [(3, 4), (10, 4)], 8, Some(&ex), 1));
    assert!(message.contains("query 1"), "{message}");
    // Exclusions for the wrong number of queries.
    let ex = exclusions(&[vec![], vec![1]], 10);
    invalid_message(check(&queries, &corpus, [(3, 4), (10, 4)], 1, Some(&ex), 1));
}

#[test]
fn non_finite_query_rows_are_named() {
    let corpus = simple(10, 4, 2);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut queries = simple(5, 4, 1);
        queries[3 * 4 + 2] = bad;
        queries[4 * 4] = bad;
        let message = invalid_message(check(&queries, &corpus, [(5, 4), (10, 4)], 2, None, 2));
        assert!(message.contains("queries row 3"), "{message}");
    }
    let mut queries16 = to_f16(&simple(5, 4, 1));
    queries16[9] = f16::INFINITY;
    let corpus16 = to_f16(&corpus);
    let q = MatrixView::f16(&queries16, 5, 4).unwrap();
    let c = MatrixView::f16(&corpus16, 10, 4).unwrap();
    let message = invalid_message(run(
        &q,
        &c,
        None,
        2,
        Metric::Dot,
        &Knobs::default_with(1, Isa::Scalar, Precision::Auto),
    ));
    assert!(message.contains("queries row 2"), "{message}");
}

#[test]
fn non_finite_corpus_rows_are_named() {
    let queries = simple(200, 4, 1);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut corpus = simple(100, 4, 2);
        corpus[37 * 4 + 1] = bad;
        corpus[90 * 4 + 3] = bad;
        for threads in 1..=3 {
            let message = invalid_message(check(
                &queries,
                &corpus,
                [(200, 4), (100, 4)],
                2,
                None,
                threads,
            ));
            assert!(
                message.contains("corpus row 37"),
                "threads {threads}: {message}"
            );
        }
    }
    let mut corpus16 = to_f16(&simple(100, 4, 2));
    corpus16[50 * 4] = f16::NAN;
    let q = MatrixView::f32(&queries, 200, 4).unwrap();
    let c = MatrixView::f16(&corpus16, 100, 4).unwrap();
    let message = invalid_message(run(
        &q,
        &c,
        None,
        2,
        Metric::Cosine,
        &Knobs::default_with(2, Isa::Scalar, Precision::Auto),
    ));
    assert!(message.contains("corpus row 50"), "{message}");
}

/// With few queries the corpus is split into one shard per thread, scanned concurrently: the
/// error must still name the first bad row, whatever the thread count.
#[test]
fn the_first_non_finite_corpus_row_is_named_for_any_thread_count() {
    let queries = simple(1, 8, 1);
    let mut corpus = simple(1000, 8, 2);
    corpus[400 * 8] = f32::NAN;
    corpus[510 * 8] = f32::INFINITY;
    for threads in 1..=3 {
        let message = invalid_message(check(
            &queries,
            &corpus,
            [(1, 8), (1000, 8)],
            3,
            None,
            threads,
        ));
        assert!(
            message.contains("corpus row 400"),
            "threads {threads}: {message}"
        );
    }
}

#[test]
fn bad_exclusions_are_refused() {
    let cases: [(&[i64], &[i64], &str); 8] = [
        (&[0, 1], &[3], "n_queries + 1"),
        (&[0, 1, 1, 1, 1], &[3], "n_queries + 1"),
        (&[1, 1, 1, 1], &[3], "start at 0"),
        (&[0, 1, 1, 1], &[3, 4], "end at len(indices)"),
        (&[0, 2, 1, 3], &[3, 4, 5], "non-decreasing"),
        (&[0, 1, 1, 1], &[10], "out of range"),
        (&[0, 0, 1, 1], &[-1], "out of range"),
        (&[0, -1, 0, 0], &[], "non-decreasing"),
    ];
    for (indptr, indices, needle) in cases {
        match IdLists::from_csr(indptr, indices, 3, 10) {
            Err(Error::InvalidArgument(message)) => {
                assert!(
                    message.contains(needle),
                    "{indptr:?} {indices:?}: {message}"
                )
            }
            other => panic!("{indptr:?} {indices:?}: expected an error, got {other:?}"),
        }
    }
}

/// An inner `indptr` entry beyond `len(indices)` (the order check only sees it one query later).
#[test]
fn csr_indptr_beyond_the_indices_is_an_error_not_a_panic() {
    let outcome = catch_unwind(|| IdLists::from_csr(&[0, 5, 2], &[1, 2], 2, 10));
    match outcome {
        Ok(Err(Error::InvalidArgument(_))) => {}
        Ok(other) => panic!("expected InvalidArgument, got {other:?}"),
        Err(_) => panic!("IdLists::from_csr(&[0, 5, 2], &[1, 2], 2, 10) panicked"),
    }
}

/// `block_rows` is a tuning knob: any value, however large, must give the same result.
#[test]
fn huge_block_rows_do_not_panic_or_change_the_result() {
    let dim = 4;
    let corpus = simple(100, dim, 2);
    let queries = simple(1, dim, 1);
    let want = oracle(&queries, &corpus, dim, 5, Metric::Dot, None);
    let q = MatrixView::f32(&queries, 1, dim).unwrap();
    let c = MatrixView::f32(&corpus, 100, dim).unwrap();
    for block_rows in [usize::MAX / 2, usize::MAX - 16, usize::MAX] {
        for threads in 1..=3 {
            let knobs = Knobs {
                block_rows: Some(block_rows),
                query_batch: None,
                threads,
                isa: None,
                // Threads 1 and 3 (shards) pre-score in int8, 2 in f32: the same result.
                precision: if threads == 2 {
                    Precision::F32
                } else {
                    Precision::Int8
                },
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                run(&q, &c, None, 5, Metric::Dot, &knobs)
            }));
            match outcome {
                Ok(Ok(got)) => assert_identical(&got, &want, &format!("{knobs:?}")),
                Ok(Err(e)) => panic!("{knobs:?}: unexpected error {e}"),
                Err(_) => panic!("search panicked with {knobs:?}"),
            }
        }
    }
}

#[test]
fn matrix_views_check_their_length() {
    assert!(MatrixView::f32(&[0.0; 6], 2, 3).is_ok());
    assert!(matches!(
        MatrixView::f32(&[0.0; 5], 2, 3),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        MatrixView::f32(&[], usize::MAX, 2),
        Err(Error::InvalidArgument(_))
    ));
    assert!(MatrixView::f16(&[f16::ZERO; 4], 1, 4).is_ok());
}
