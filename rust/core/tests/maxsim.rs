//! MaxSim: every ISA's scorer against the scalar reference bit for bit, the reference against
//! a float64 oracle within the f32 rounding bound, and search / pair scoring identical for any
//! thread count, with the ranking of the oracle's order (score descending, smaller id on ties).

use half::f16;
use negmine_core::kernels::Isa;
use negmine_core::maxsim::{self, Ragged, Scorer};
use negmine_core::{IdLists, MatrixView, NoHooks};
use proptest::prelude::*;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Token values on a fine grid in [-2, 2), with exact small integers for ties.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        1 => (-2i32..=2).prop_map(|x| x as f32),
        4 => (-(1i32 << 20)..(1i32 << 20)).prop_map(|i| i as f32 / (1u32 << 19) as f32),
    ]
}

#[derive(Debug, Clone)]
struct Texts {
    values: Vec<f32>,
    offsets: Vec<i64>,
}

/// `n` texts of 1..=max_len tokens of dimension `dim`.
fn texts(n: std::ops::Range<usize>, max_len: usize, dim: usize) -> impl Strategy<Value = Texts> {
    prop::collection::vec(1..=max_len, n).prop_flat_map(move |lens| {
        let total: usize = lens.iter().sum();
        let mut offsets = vec![0i64];
        for l in &lens {
            offsets.push(offsets.last().unwrap() + *l as i64);
        }
        prop::collection::vec(value(), total * dim).prop_map(move |values| Texts {
            values,
            offsets: offsets.clone(),
        })
    })
}

fn problem() -> impl Strategy<Value = (usize, Texts, Texts)> {
    // Dimensions around the kernels' widths; lengths around the tile sizes (MR = 6, NR = 16:
    // queries of up to 40 tokens fill a pair of query panels and a single one).
    prop_oneof![Just(1usize), Just(3), Just(8), Just(17), Just(32)]
        .prop_flat_map(|dim| (Just(dim), texts(1..6, 40, dim), texts(1..12, 40, dim)))
}

fn view(t: &Texts, dim: usize) -> MatrixView<'_> {
    MatrixView::f32(&t.values, t.values.len() / dim, dim).unwrap()
}

/// The exact MaxSim in f64 and the bound on the f32 path's error: each f32 dot is within
/// `dim * u * sum |q_i c_i|` of the exact one (u = 2^-24, a chain of `dim` fused roundings), so
/// each maximum is too, and the f64 sum and final rounding add `u |score|` and a little.
fn oracle(q: &[f64], cs: &[f64], dim: usize, lq: usize, lc: usize) -> (f64, f64) {
    let u = f64::from(f32::EPSILON) / 2.0;
    let (mut score, mut slack) = (0.0, 0.0);
    for t in 0..lq {
        let qt = &q[t * dim..][..dim];
        let mut best = f64::NEG_INFINITY;
        let mut worst_abs: f64 = 0.0;
        for s in 0..lc {
            let ct = &cs[s * dim..][..dim];
            best = best.max(qt.iter().zip(ct).map(|(a, b)| a * b).sum());
            worst_abs = worst_abs.max(qt.iter().zip(ct).map(|(a, b)| (a * b).abs()).sum());
        }
        score += best;
        slack += dim as f64 * u * 1.01 * worst_abs;
    }
    (score, slack + 2.0 * u * score.abs() + 1e-30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_isa_equals_the_reference_and_the_oracle((dim, q, c) in problem()) {
        let (qv, cv) = (view(&q, dim), view(&c, dim));
        let queries = Ragged::new("queries", qv, &q.offsets).unwrap();
        let corpus = Ragged::new("corpus", cv, &c.offsets).unwrap();
        let qf: Vec<f64> = q.values.iter().map(|&x| f64::from(x)).collect();
        let cf: Vec<f64> = c.values.iter().map(|&x| f64::from(x)).collect();
        for isa in Isa::available() {
            let mut scorer = Scorer::new(isa, dim);
            for i in 0..queries.len() {
                scorer.set_query(&queries, i);
                for j in 0..corpus.len() {
                    let got = scorer.score(&corpus, j);
                    let want = maxsim::reference(&queries, i, &corpus, j);
                    prop_assert_eq!(got.to_bits(), want.to_bits(), "{} q{} c{}", isa.name(), i, j);
                    let (qr, cr) = (queries.range(i), corpus.range(j));
                    let (exact, bound) = oracle(
                        &qf[qr.start * dim..qr.end * dim],
                        &cf[cr.start * dim..cr.end * dim],
                        dim,
                        qr.len(),
                        cr.len(),
                    );
                    prop_assert!(
                        (f64::from(got) - exact).abs() <= bound,
                        "q{} c{}: {} vs f64 {} (bound {})", i, j, got, exact, bound
                    );
                }
            }
        }
    }

    #[test]
    fn search_ranks_like_the_reference_for_any_thread_count(
        (dim, q, c) in problem(),
        k in 1usize..8,
        keep in prop::collection::vec(any::<bool>(), 12),
        drop in prop::collection::vec(any::<bool>(), 12),
    ) {
        let (qv, cv) = (view(&q, dim), view(&c, dim));
        let queries = Ragged::new("queries", qv, &q.offsets).unwrap();
        let corpus = Ragged::new("corpus", cv, &c.offsets).unwrap();
        let (nq, nc) = (queries.len(), corpus.len());
        // Candidates: the texts `keep` marks (the same for every query, some query gets none
        // when `keep` is all false); exclusions: those `drop` marks, for odd queries.
        let mut cand = (vec![0i64], Vec::new());
        let mut excl = (vec![0i64], Vec::new());
        for i in 0..nq {
            cand.1.extend((0..nc as i64).filter(|&j| keep[j as usize]));
            cand.0.push(cand.1.len() as i64);
            if i % 2 == 1 {
                excl.1.extend((0..nc as i64).filter(|&j| drop[j as usize]));
            }
            excl.0.push(excl.1.len() as i64);
        }
        let candidates = IdLists::from_csr(&cand.0, &cand.1, nq, nc).unwrap();
        let exclude = IdLists::from_csr(&excl.0, &excl.1, nq, nc).unwrap();
        for lists in [None, Some(&candidates)] {
            let mut results = Vec::new();
            for threads in [1, 2, 3] {
                let p = pool(threads);
                results.push(maxsim::search(&p, &queries, &corpus, k, lists, Some(&exclude), &mut NoHooks).unwrap());
            }
            let (scores, ids) = &results[0];
            for r in &results[1..] {
                prop_assert_eq!(&r.1, ids);
                prop_assert_eq!(
                    r.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
            }
            for i in 0..nq {
                let mut want: Vec<(f32, i64)> = (0..nc)
                    .filter(|&j| lists.is_none_or(|l| l.of(i).contains(&(j as u32))))
                    .filter(|&j| !exclude.of(i).contains(&(j as u32)))
                    .map(|j| (maxsim::reference(&queries, i, &corpus, j), j as i64))
                    .collect();
                want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                want.resize(k.max(want.len()), (f32::NEG_INFINITY, -1));
                want.truncate(k);
                let got: Vec<(f32, i64)> = (0..k).map(|s| (scores[i * k + s], ids[i * k + s])).collect();
                prop_assert_eq!(got, want);
            }
        }
        // Pair scores: the same bits, in the order given.
        let pairs: Vec<(i64, i64)> = (0..nq as i64).flat_map(|i| (0..nc as i64).rev().map(move |j| (i, j))).collect();
        let (qi, ci): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        let got = maxsim::score_pairs(&pool(2), &queries, &corpus, &qi, &ci, &mut NoHooks).unwrap();
        for ((&i, &j), g) in qi.iter().zip(&ci).zip(&got) {
            prop_assert_eq!(g.to_bits(), maxsim::reference(&queries, i as usize, &corpus, j as usize).to_bits());
        }
    }
}

#[test]
fn f16_tokens_score_as_their_f32_widening() {
    let dim = 5;
    let values: Vec<f32> = (0..dim * 37)
        .map(|i| ((i * 7919) % 23) as f32 / 8.0 - 1.4)
        .collect();
    let halves: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
    let widened: Vec<f32> = halves.iter().map(|x| x.to_f32()).collect();
    let offsets = [0i64, 3, 20, 21, 37];
    let h = Ragged::new("c", MatrixView::f16(&halves, 37, dim).unwrap(), &offsets).unwrap();
    let w = Ragged::new("c", MatrixView::f32(&widened, 37, dim).unwrap(), &offsets).unwrap();
    let p = pool(2);
    let (a, ai) = maxsim::search(&p, &h, &h, 4, None, None, &mut NoHooks).unwrap();
    let (b, bi) = maxsim::search(&p, &w, &w, 4, None, None, &mut NoHooks).unwrap();
    assert_eq!(ai, bi);
    assert_eq!(a, b);
    let pooled = maxsim::pooled(&p, &h).unwrap();
    let first: Vec<f32> = (0..dim)
        .map(|d| ((0..3).map(|t| f64::from(widened[t * dim + d])).sum::<f64>() / 3.0) as f32)
        .collect();
    assert_eq!(&pooled[..dim], &first[..]);
}

#[test]
fn bad_offsets_and_tokens_are_refused_with_what_is_wrong() {
    let values = vec![0.5f32; 12];
    let m = MatrixView::f32(&values, 6, 2).unwrap();
    let err = |offsets: &[i64]| match Ragged::new("corpus", m, offsets) {
        Ok(_) => String::from("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err(&[]).contains("n_texts + 1"), "{}", err(&[]));
    assert!(err(&[1, 6]).contains("start at 0"));
    assert!(err(&[0, 3, 3, 6]).contains("text 1 has no tokens"));
    assert!(err(&[0, 4, 2, 6]).contains("negative token count"));
    assert!(err(&[0, 3, 5]).contains("end at 5 but the token matrix has 6 rows"));
    let ok = Ragged::new("corpus", m, &[0, 2, 6]).unwrap();
    let mut nan = values.clone();
    nan[9] = f32::NAN;
    let bad = Ragged::new("x", MatrixView::f32(&nan, 6, 2).unwrap(), &[0, 2, 6]).unwrap();
    let p = pool(1);
    let e = maxsim::search(&p, &bad, &ok, 1, None, None, &mut NoHooks).unwrap_err();
    assert!(
        e.to_string()
            .contains("query tokens token row 4 (text 1, token 2) contains NaN"),
        "{e}"
    );
    let huge = vec![3.0e19f32; 12];
    let big = Ragged::new("x", MatrixView::f32(&huge, 6, 2).unwrap(), &[0, 2, 6]).unwrap();
    let e = maxsim::search(&p, &big, &big, 1, None, None, &mut NoHooks).unwrap_err();
    assert!(e.to_string().contains("could overflow float32"), "{e}");
    let other = vec![0.5f32; 9];
    let three = Ragged::new("x", MatrixView::f32(&other, 3, 3).unwrap(), &[0, 3]).unwrap();
    let e = maxsim::search(&p, &three, &ok, 1, None, None, &mut NoHooks).unwrap_err();
    assert!(
        e.to_string()
            .contains("dimension 3 but corpus tokens have 2"),
        "{e}"
    );
    let e = maxsim::score_pairs(&p, &ok, &ok, &[0, 2], &[0, 0], &mut NoHooks).unwrap_err();
    assert!(
        e.to_string()
            .contains("query_ids[1] = 2 is out of range for 2 texts"),
        "{e}"
    );
    let e = maxsim::search(&p, &ok, &ok, 0, None, None, &mut NoHooks).unwrap_err();
    assert!(e.to_string().contains("k must be at least 1"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The stored-rows kernels are the packed tile kernel with the rows packed, bit for bit.
    #[test]
    fn stored_row_tiles_equal_packed_tiles(
        kc in 0usize..40,
        valid in 0usize..=6,
        seed in prop::collection::vec(value(), 6 * 40 + 2 * 16 * 40),
    ) {
        use negmine_core::kernels::{self, RowsOut, MR, NR, TILE};
        let (rows_flat, panels) = seed.split_at(MR * 40);
        let rows: Vec<&[f32]> = rows_flat.chunks_exact(40).map(|r| &r[..kc]).collect();
        let rows: [&[f32]; MR] = rows.try_into().unwrap();
        let b0 = &panels[..kc * NR];
        let b1 = &panels[NR * 40..][..kc * NR];
        let mut a = vec![0.0f32; kc * MR];
        for p in 0..kc {
            for i in 0..MR {
                a[p * MR + i] = rows[i][p];
            }
        }
        for isa in Isa::available() {
            let (mut want0, mut want1) = ([0.0f32; TILE], [0.0f32; TILE]);
            kernels::tile(isa, kc, &a, b0, &mut want0, false, None);
            kernels::tile(isa, kc, &a, b1, &mut want1, false, None);
            let (mut got0, mut got1) = ([1.0f32; TILE], [1.0f32; TILE]);
            kernels::tile_rows_pair(isa, kc, &rows, [b0, b1], [RowsOut::Tile(&mut got0), RowsOut::Tile(&mut got1)]);
            let bits = |t: &[f32; TILE]| t.map(f32::to_bits);
            prop_assert_eq!(bits(&got0), bits(&want0), "{}", isa.name());
            prop_assert_eq!(bits(&got1), bits(&want1), "{}", isa.name());
            let mut single = [1.0f32; TILE];
            kernels::tile_rows(isa, kc, &rows, b1, RowsOut::Tile(&mut single));
            prop_assert_eq!(bits(&single), bits(&want1), "{}", isa.name());
            // Folded into running maxima: the first `valid` rows, in order, ties keep the old.
            let start: [f32; NR] = std::array::from_fn(|j| if j % 3 == 0 { f32::NEG_INFINITY } else { want0[j] });
            let (mut m0, mut m1) = (start, start);
            kernels::tile_rows_pair(isa, kc, &rows, [b0, b1], [RowsOut::Maxima(&mut m0, valid), RowsOut::Maxima(&mut m1, valid)]);
            for (m, want) in [(m0, want0), (m1, want1)] {
                let mut expected = start;
                for row in want.chunks_exact(NR).take(valid) {
                    for (e, &v) in expected.iter_mut().zip(row) {
                        if v > *e {
                            *e = v;
                        }
                    }
                }
                prop_assert_eq!(m.map(f32::to_bits), expected.map(f32::to_bits), "{}", isa.name());
            }
        }
    }
}
