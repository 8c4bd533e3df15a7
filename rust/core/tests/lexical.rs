//! The BM25 index: MaxScore returns exactly the exhaustive result (bit for bit, ties by id,
//! with exclusions), both equal a scorer written straight from the formula, and the result is
//! the same for any thread count.

use negmine_core::lexical::{tokens, Bm25Index, Bm25Params, Hits, Pruning};
use negmine_core::{IdLists, NoHooks};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

/// Texts over a small skewed vocabulary (so terms range from rare to in every document, and
/// many documents tie), some empty, with punctuation and case to tokenise away.
fn texts(rng: &mut Rng, n: usize, max_len: usize, vocab: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let len = rng.below(max_len + 1);
            (0..len)
                .map(|_| {
                    // Squaring a uniform draw favours small word numbers.
                    let r = rng.below(vocab);
                    let w = r * r / vocab.max(1);
                    if rng.below(5) == 0 {
                        format!("W{w},")
                    } else {
                        format!("w{w}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Every document's score computed from the formula, per query, term by term in the
/// query's order of first occurrence; ranked score descending, id ascending.
fn reference(
    docs: &[String],
    query: &str,
    params: Bm25Params,
    k: usize,
    excluded: &[u32],
) -> Vec<(f64, i64)> {
    let tokenised: Vec<Vec<String>> = docs.iter().map(|d| tokens(d).collect()).collect();
    let n = docs.len() as f64;
    let total: usize = tokenised.iter().map(Vec::len).sum();
    let avgdl = total as f64 / n;
    let mut terms: Vec<(String, f64)> = Vec::new();
    for t in tokens(query) {
        match terms.iter_mut().find(|(u, _)| *u == t) {
            Some((_, c)) => *c += 1.0,
            None => terms.push((t, 1.0)),
        }
    }
    let mut ranked = Vec::new();
    for (d, words) in tokenised.iter().enumerate() {
        if excluded.contains(&(d as u32)) {
            continue;
        }
        let norm = params.k1 * (1.0 - params.b + params.b * words.len() as f64 / avgdl);
        let mut score = 0.0f64;
        let mut any = false;
        for (t, qtf) in &terms {
            let df = tokenised.iter().filter(|w| w.contains(t)).count() as f64;
            if df == 0.0 {
                continue;
            }
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let tf = words.iter().filter(|w| *w == t).count() as f64;
            if tf > 0.0 {
                score += (qtf * idf) * (tf / (tf + norm));
                any = true;
            }
        }
        if any {
            ranked.push((score, d as i64));
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.truncate(k);
    ranked
}

fn rows(hits: &Hits, q: usize) -> Vec<(f64, i64)> {
    let w = hits.width;
    hits.scores[q * w..][..w]
        .iter()
        .zip(&hits.ids[q * w..][..w])
        .take_while(|(_, &id)| id >= 0)
        .map(|(&s, &id)| (s, id))
        .collect()
}

/// Random exclusions: each query excludes about a tenth of the corpus.
fn exclusions(rng: &mut Rng, n_q: usize, n: usize) -> IdLists {
    let mut indptr = vec![0i64];
    let mut ids = Vec::new();
    for _ in 0..n_q {
        for d in 0..n {
            if rng.below(10) == 0 {
                ids.push(d as i64);
            }
        }
        indptr.push(ids.len() as i64);
    }
    IdLists::from_csr(&indptr, &ids, n_q, n).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn max_score_is_the_exhaustive_result(
        seed in any::<u64>(),
        n in 1usize..300,
        vocab in 1usize..40,
        k in 0usize..40,
        exclude in any::<bool>(),
        k1 in prop_oneof![Just(1.5f64), 0.0f64..3.0],
        b in prop_oneof![Just(0.75f64), 0.0f64..=1.0],
    ) {
        let mut rng = Rng(seed);
        let docs = texts(&mut rng, n, 12, vocab);
        let queries = texts(&mut rng, 17, 6, vocab + 3);
        let params = Bm25Params { k1, b };
        let index = Bm25Index::build(pool(1), &docs, params, &mut NoHooks).unwrap();
        let excluded = exclude.then(|| exclusions(&mut rng, queries.len(), n));
        let search = |threads, pruning| {
            index
                .search(pool(threads), &queries, k, excluded.as_ref(), pruning, &mut NoHooks)
                .unwrap()
        };
        let pruned = search(1, Pruning::MaxScore);
        let exhaustive = search(1, Pruning::Exhaustive);
        // Bit for bit (NaN padding included): compare the bits.
        let bits = |h: &Hits| h.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(&pruned.ids, &exhaustive.ids);
        prop_assert_eq!(bits(&pruned), bits(&exhaustive));
        let threaded = search(3, Pruning::MaxScore);
        prop_assert_eq!(&threaded.ids, &pruned.ids);
        prop_assert_eq!(bits(&threaded), bits(&pruned));
        for (q, query) in queries.iter().enumerate() {
            let skip = excluded.as_ref().map_or(&[][..], |e| e.of(q));
            let expected = reference(&docs, query, params, k, skip);
            prop_assert_eq!(rows(&pruned, q), expected, "query {:?}", query);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Larger vocabularies: queries whose rarest terms hold few postings, so MaxScore's seed
    /// pass runs (and its second pass revisits ids below the heap's).
    #[test]
    fn seeded_max_score_is_the_exhaustive_result(
        seed in any::<u64>(),
        n in 200usize..2000,
        vocab in 50usize..400,
        k in 1usize..30,
        exclude in any::<bool>(),
    ) {
        let mut rng = Rng(seed);
        let docs = texts(&mut rng, n, 10, vocab);
        let queries = texts(&mut rng, 40, 6, vocab);
        let index = Bm25Index::build(pool(1), &docs, Bm25Params::default(), &mut NoHooks).unwrap();
        let excluded = exclude.then(|| exclusions(&mut rng, queries.len(), n));
        let search = |pruning| {
            index
                .search(pool(2), &queries, k, excluded.as_ref(), pruning, &mut NoHooks)
                .unwrap()
        };
        let pruned = search(Pruning::MaxScore);
        let exhaustive = search(Pruning::Exhaustive);
        let bits = |h: &Hits| h.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(&pruned.ids, &exhaustive.ids);
        prop_assert_eq!(bits(&pruned), bits(&exhaustive));
    }
}

#[test]
fn index_is_the_same_for_any_thread_count() {
    let mut rng = Rng(7);
    let docs = texts(&mut rng, 40_000, 20, 500);
    let queries = texts(&mut rng, 300, 5, 600);
    let params = Bm25Params::default();
    let one = Bm25Index::build(pool(1), &docs, params, &mut NoHooks).unwrap();
    let three = Bm25Index::build(pool(3), &docs, params, &mut NoHooks).unwrap();
    let a = one
        .search(pool(1), &queries, 50, None, Pruning::MaxScore, &mut NoHooks)
        .unwrap();
    let b = three
        .search(pool(3), &queries, 50, None, Pruning::MaxScore, &mut NoHooks)
        .unwrap();
    assert_eq!(a.ids, b.ids);
    let c = one
        .search(
            pool(2),
            &queries,
            50,
            None,
            Pruning::Exhaustive,
            &mut NoHooks,
        )
        .unwrap();
    assert_eq!(a.ids, c.ids);
    assert_eq!(a.width, 50);
}

#[test]
fn bad_parameters_are_refused() {
    for (k1, b) in [
        (-1.0, 0.75),
        (f64::NAN, 0.75),
        (1.2, 1.5),
        (1.2, -0.1),
        (f64::INFINITY, 0.5),
    ] {
        let err = Bm25Index::build(pool(1), &["a"], Bm25Params { k1, b }, &mut NoHooks);
        assert!(err.is_err(), "k1 {k1} b {b}");
    }
}

#[test]
fn empty_corpus_and_empty_texts() {
    let none: [&str; 0] = [];
    let index = Bm25Index::build(pool(1), &none, Bm25Params::default(), &mut NoHooks).unwrap();
    let hits = index
        .search(pool(1), &["a"], 5, None, Pruning::MaxScore, &mut NoHooks)
        .unwrap();
    assert_eq!((hits.width, hits.ids.len()), (0, 0));
    let index =
        Bm25Index::build(pool(1), &["", " ,"], Bm25Params::default(), &mut NoHooks).unwrap();
    let hits = index
        .search(
            pool(1),
            &["a", ""],
            5,
            None,
            Pruning::MaxScore,
            &mut NoHooks,
        )
        .unwrap();
    assert_eq!(hits.ids, vec![-1; 4]);
}
