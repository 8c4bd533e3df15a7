//! Hostile inputs (issue 8): finite rows whose dot products would overflow f32 are refused by
//! every path that scores (naming the rows), k-means' L2 geometry says when squared norms
//! overflow, and a `.npy` shape written as `-0` means 0 as in Python.

use negmine_core::kmeans::{kmeans, Init, KMeansMetric, KMeansOptions};
use negmine_core::metric::score_limit;
use negmine_core::mine::{mine, mine_with, Candidates, FnSource, MineJob, MineOptions};
use negmine_core::store::parse_header;
use negmine_core::{search, Error, IdLists, MatrixView, Metric, NoHooks, SearchOptions};

mod common;
use common::{pool, Rng};

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::InvalidArgument(message)) => message,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn search_refuses_scores_that_could_overflow_and_names_the_rows() {
    // True dot of row 0 is 0, but the f32 chain overflows to +inf and ranked it first.
    let queries = [1e20f32, 1e20];
    let corpus = [1e20f32, -1e20, 1.0, 1.0];
    let q = MatrixView::f32(&queries, 1, 2).unwrap();
    let c = MatrixView::f32(&corpus, 2, 2).unwrap();
    let opts = SearchOptions::new(2, Metric::Dot);
    let m = message(search(pool(1), &q, &c, None, &opts, &mut NoHooks));
    assert!(
        m.contains("queries row 0") && m.contains("corpus row 0") && m.contains("overflow"),
        "{m}"
    );
    // Cosine scores are bounded by 1: the same rows are fine.
    let cos = search(
        pool(1),
        &q,
        &c,
        None,
        &SearchOptions::new(2, Metric::Cosine),
        &mut NoHooks,
    )
    .unwrap();
    assert!(cos.scores.iter().all(|s| s.is_finite()), "{:?}", cos.scores);
}

/// The named pair is the largest query and the first corpus row past the limit, for every
/// thread count, block size and query batch.
#[test]
fn the_first_offending_corpus_row_is_named_whatever_the_blocking() {
    let dim = 16;
    let mut rng = Rng(5);
    let mut corpus: Vec<f32> = (0..300 * dim).map(|_| rng.unit()).collect();
    let mut queries: Vec<f32> = (0..20 * dim).map(|_| rng.unit()).collect();
    // Query 7 has norm 4e19, rows 211 and 250 norm 1e19: their product passes the limit.
    for x in &mut queries[7 * dim..8 * dim] {
        *x = 1e19;
    }
    for row in [250, 211] {
        for x in &mut corpus[row * dim..(row + 1) * dim] {
            *x = 2.5e18;
        }
    }
    let q = MatrixView::f32(&queries, 20, dim).unwrap();
    let c = MatrixView::f32(&corpus, 300, dim).unwrap();
    for threads in 1..=3 {
        for block_rows in [None, Some(16), Some(100)] {
            for query_batch in [None, Some(3)] {
                let mut opts = SearchOptions::new(5, Metric::Dot);
                opts.block_rows = block_rows;
                opts.query_batch = query_batch;
                let m = message(search(pool(threads), &q, &c, None, &opts, &mut NoHooks));
                assert!(
                    m.starts_with(
                        "queries row 7 (norm 4.000e19) and corpus row 211 (norm 1.000e19)"
                    ),
                    "{m}"
                );
            }
        }
    }
}

/// Just below the limit every score is finite; just above it, an error.
#[test]
fn the_limit_is_sharp_and_scores_below_it_are_finite() {
    let dim = 4;
    let limit = score_limit(dim);
    // Rows (a, a, a, a) and (b, b, b, b): norms 2a and 2b, dot 4ab = product of the norms.
    let a = 1e19f32;
    for (factor, ok) in [(0.999, true), (1.001, false)] {
        let b = (limit * factor / (4.0 * f64::from(a))) as f32;
        let queries = [a; 4];
        let corpus = [b, b, b, b, -b, -b, -b, -b];
        let q = MatrixView::f32(&queries, 1, dim).unwrap();
        let c = MatrixView::f32(&corpus, 2, dim).unwrap();
        let got = search(
            pool(2),
            &q,
            &c,
            None,
            &SearchOptions::new(2, Metric::Dot),
            &mut NoHooks,
        );
        if ok {
            let got = got.unwrap();
            assert!(got.scores.iter().all(|s| s.is_finite()), "{:?}", got.scores);
            assert_eq!(got.ids, vec![0, 1]);
        } else {
            assert!(message(got).contains("could overflow float32"));
        }
    }
}

#[test]
fn mining_refuses_overflowing_scores_in_search_and_rescoring() {
    let queries = [1.0f32, 1.0, 1e20, 1e20];
    let corpus = [1.0f32, 0.0, 1e20, -1e20, 1.0, 1.0, 0.0, 1.0];
    let q = MatrixView::f32(&queries, 2, 2).unwrap();
    let c = MatrixView::f32(&corpus, 4, 2).unwrap();
    let positives = IdLists::from_csr(&[0, 1, 2], &[0, 2], 2, 4).unwrap();
    let opts = MineOptions::new(1, Metric::Dot);
    let m = message(mine(
        pool(2),
        &MineJob::new(&q, &c, &positives, &opts),
        &mut NoHooks,
    ));
    assert!(
        m.contains("queries row 1") && m.contains("corpus row 1"),
        "{m}"
    );
    // Rescoring given candidates: query 1 against its candidate 1.
    let mut source = FnSource::new(|queries: &[usize], _depth| {
        let ids = queries.iter().flat_map(|_| [1, 3]).collect();
        Candidates::dense(2, ids)
    });
    let m = message(mine_with(
        &mut source,
        pool(2),
        &MineJob::new(&q, &c, &positives, &opts),
        &mut NoHooks,
    ));
    assert!(
        m.contains("queries row 1") && m.contains("corpus row 1"),
        "{m}"
    );
    // A positive's own score is checked too, even when nothing else would be searched.
    let alone = IdLists::from_csr(&[0, 1], &[1], 1, 4).unwrap();
    let all = IdLists::from_csr(&[0, 4], &[0, 1, 2, 3], 1, 4).unwrap();
    let q1 = MatrixView::f32(&queries[2..], 1, 2).unwrap();
    let m = message(mine(
        pool(1),
        &MineJob {
            queries: &q1,
            corpus: &c,
            positives: &alone,
            exclude: &all,
            groups: None,
            opts: &opts,
            query_offset: 0,
        },
        &mut NoHooks,
    ));
    assert!(
        m.contains("queries row 0") && m.contains("corpus row 1"),
        "{m}"
    );
}

fn l2_options(k: usize) -> KMeansOptions {
    KMeansOptions {
        n_clusters: k,
        metric: KMeansMetric::L2,
        iterations: 8,
        seed: 3,
        sample: None,
        init: Init::PlusPlus,
    }
}

fn normal_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..n * dim).map(|_| rng.unit() * 3.0).collect()
}

#[test]
fn kmeans_l2_says_when_squared_norms_overflow() {
    let (n, dim) = (60, 8);
    let data: Vec<f32> = normal_rows(n, dim, 1).iter().map(|x| x * 1e19).collect();
    let view = MatrixView::f32(&data, n, dim).unwrap();
    let m = message(kmeans(pool(2), &view, &l2_options(4), &mut NoHooks));
    assert!(
        m.starts_with("row 0 has squared norm") && m.contains("overflow float32"),
        "{m}"
    );
    // The first row past the limit is named, not the largest.
    let mut data = normal_rows(n, dim, 1);
    data[5 * dim] = 1e18;
    data[9 * dim] = 3e19;
    let view = MatrixView::f32(&data, n, dim).unwrap();
    let m = message(kmeans(pool(2), &view, &l2_options(4), &mut NoHooks));
    assert!(m.starts_with("row 9 has squared norm 9.000e38"), "{m}");
}

/// Rows of norm ~1e17 fit float32 squared; their clustering is that of the unscaled rows
/// (scaling by a power of two is exact), though `[x, 1] . [2c, -||c||^2]` alone would pass
/// the search's overflow bound.
#[test]
fn kmeans_l2_of_large_rows_equals_the_unscaled_clustering() {
    let (n, dim) = (200, 6);
    let data = normal_rows(n, dim, 9);
    let scale = 2f32.powi(56);
    let large: Vec<f32> = data.iter().map(|x| x * scale).collect();
    let small = kmeans(
        pool(2),
        &MatrixView::f32(&data, n, dim).unwrap(),
        &l2_options(5),
        &mut NoHooks,
    )
    .unwrap();
    let big = kmeans(
        pool(2),
        &MatrixView::f32(&large, n, dim).unwrap(),
        &l2_options(5),
        &mut NoHooks,
    )
    .unwrap();
    assert_eq!(small.assignments, big.assignments);
    let rescaled: Vec<f32> = small.centroids.iter().map(|x| x * scale).collect();
    assert_eq!(rescaled, big.centroids);
    assert!(big.inertia.is_finite());
}

fn header(shape: &str) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let mut text = dict.into_bytes();
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&text);
    bytes
}

#[test]
fn a_shape_written_as_minus_zero_is_zero_rows_as_in_python() {
    let h = parse_header(&header("(-0, 3)")).unwrap();
    assert_eq!((h.rows, h.dim, h.data_len), (0, 3, 0));
    let h = parse_header(&header("(2, -0)")).unwrap();
    assert_eq!((h.rows, h.dim), (2, 0));
    for negative in [
        "(-1, 3)",
        "(3, -2)",
        "(-99999999999999999999999999999999999999999, 3)",
    ] {
        match parse_header(&header(negative)) {
            Err(e) => assert!(
                e.to_string().contains("negative dimension"),
                "{negative}: {e}"
            ),
            Ok(h) => panic!("{negative} accepted as {h:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results larger than the machine (issue 20 item 9): every call that allocates a k- or
// n-sized result checks it against the memory available, before any work, and allocates it
// fallibly: an error naming the result, never an abort.

#[test]
fn top_k_results_the_machine_cannot_hold_are_refused_by_name() {
    use negmine_core::rescore::rank;
    use negmine_core::search::Precision;
    use negmine_core::topk::{merge, Part};

    let (scores, ids) = ([0.5f32; 6], [0i64, 1, 2, 3, 4, 5]);
    let part = Part {
        scores: &scores,
        ids: &ids,
        width: 3,
    };
    let m = message(merge(pool(2), &[part], 2, 1 << 40));
    assert!(
        m.contains("merged result of 2 rows x k = 1099511627776"),
        "{m}"
    );
    let corpus = [1.0f32; 40];
    let c = MatrixView::f32(&corpus, 10, 4).unwrap();
    let q = c.slice_rows(0, 2);
    let m = message(rank(pool(2), &q, &c, Metric::Dot, &ids, 3, 1 << 40));
    assert!(
        m.contains("rescored result of 2 queries x k = 1099511627776"),
        "{m}"
    );
    // A million queries x k = 65536 (786 GB): refused at once, before the scan (which would
    // take hours) on either path.
    let (n_queries, n) = (1 << 20, 1 << 16);
    let queries = vec![1.0f32; n_queries];
    let corpus = vec![1.0f32; n];
    let q = MatrixView::f32(&queries, n_queries, 1).unwrap();
    let c = MatrixView::f32(&corpus, n, 1).unwrap();
    for precision in [Precision::F32, Precision::Int8] {
        let mut opts = SearchOptions::new(n, Metric::Dot);
        opts.precision = precision;
        let m = message(search(pool(2), &q, &c, None, &opts, &mut NoHooks));
        assert!(
            m.contains("search result of 1048576 queries x k = 65536"),
            "{m}"
        );
    }
}
