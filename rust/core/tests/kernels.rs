//! Every kernel against the scalar reference, and the scalar reference against the definition:
//! each score is one fused multiply-add chain over the depth in increasing order, optionally
//! continued from partial sums, then (with `select`) compared with `!(score <= threshold)`. All comparisons are bit-for-bit.

use std::cmp::Ordering;

use half::f16;
use negmine_core::kernels::{self, Isa, Select, MR, NR, TILE};
use proptest::prelude::*;

/// Finite f32 values of every kind the kernels can meet: small integers (exact sums, ties),
/// ordinary values, signed zeros, subnormals, and magnitudes whose products overflow.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => (-4i32..=4).prop_map(|x| x as f32),
        // Ordinary values in [-2, 2) on a 2^-22 grid (integers scaled: no float sampler).
        4 => (-(1i32 << 23)..(1i32 << 23)).prop_map(|i| i as f32 / (1u32 << 22) as f32),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (1u32..0x0080_0000, any::<bool>())
            .prop_map(|(bits, neg)| f32::from_bits(bits | (u32::from(neg) << 31))),
        // Large magnitudes drawn as bits (monotonic for positive floats): proptest's uniform
        // f32 sampler trips its own assertion on wide ranges (a flaky
        // `self.low - result < initial.step` panic, seen on 1e15..1e20 too).
        1 => (1.0e15f32.to_bits()..1.0e20f32.to_bits(), any::<bool>())
            .prop_map(|(bits, neg)| f32::from_bits(bits | (u32::from(neg) << 31))),
        1 => (1.0e36f32.to_bits()..=f32::MAX.to_bits(), any::<bool>())
            .prop_map(|(bits, neg)| f32::from_bits(bits | (u32::from(neg) << 31))),
    ]
}

/// Thresholds, including the special values whose semantics are documented.
fn threshold() -> impl Strategy<Value = ThresholdKind> {
    prop_oneof![
        Just(ThresholdKind::Fixed(f32::NAN)),
        Just(ThresholdKind::Fixed(f32::INFINITY)),
        Just(ThresholdKind::Fixed(f32::NEG_INFINITY)),
        (-(50i32 << 20)..(50i32 << 20))
            .prop_map(|i| ThresholdKind::Fixed(i as f32 / (1u32 << 20) as f32)),
        // A score of the tile itself: tests the `<=` boundary exactly.
        (0..NR).prop_map(ThresholdKind::ScoreOfColumn),
    ]
}

#[derive(Clone, Copy, Debug)]
enum ThresholdKind {
    Fixed(f32),
    ScoreOfColumn(usize),
}

#[derive(Debug, Clone)]
struct TileCase {
    kc: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c0: Vec<f32>,
    accumulate: bool,
    select: Option<Vec<ThresholdKind>>,
}

fn tile_case_with_kc(kc: usize) -> impl Strategy<Value = TileCase> {
    (
        prop::collection::vec(value(), kc * MR),
        prop::collection::vec(value(), kc * NR),
        prop::collection::vec(value(), TILE),
        any::<bool>(),
        prop::option::weighted(0.8, prop::collection::vec(threshold(), MR)),
    )
        .prop_map(move |(a, b, c0, accumulate, select)| TileCase {
            kc,
            a,
            b,
            c0,
            accumulate,
            select,
        })
}

fn tile_case(max_kc: usize) -> impl Strategy<Value = TileCase> {
    (1..=max_kc).prop_flat_map(tile_case_with_kc)
}

/// Two tiles for `tile_pair`: their own query panels, partial sums and thresholds, one
/// shared corpus panel and `accumulate` flag, and `select` on both or neither.
fn pair_case(max_kc: usize) -> impl Strategy<Value = (TileCase, TileCase)> {
    (1..=max_kc)
        .prop_flat_map(|kc| (tile_case_with_kc(kc), tile_case_with_kc(kc)))
        .prop_map(|(first, mut second)| {
            second.b = first.b.clone();
            second.accumulate = first.accumulate;
            match (&first.select, &second.select) {
                (None, Some(_)) => second.select = None,
                (Some(s), None) => second.select = Some(s.clone()),
                _ => {}
            }
            (first, second)
        })
}

/// The definition, one score at a time.
fn reference_scores(case: &TileCase) -> [f32; TILE] {
    let mut out = [0.0f32; TILE];
    for i in 0..MR {
        for j in 0..NR {
            let mut acc = if case.accumulate {
                case.c0[i * NR + j]
            } else {
                0.0
            };
            for p in 0..case.kc {
                acc = case.a[p * MR + i].mul_add(case.b[p * NR + j], acc);
            }
            out[i * NR + j] = acc;
        }
    }
    out
}

fn thresholds_of(kinds: &[ThresholdKind], scores: &[f32; TILE]) -> Vec<f32> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| match *kind {
            ThresholdKind::Fixed(t) => t,
            ThresholdKind::ScoreOfColumn(j) => scores[i * NR + j],
        })
        .collect()
}

fn reference(case: &TileCase, thresholds: &[f32]) -> ([f32; TILE], [u16; MR]) {
    let scores = reference_scores(case);
    let mut masks = [0u16; MR];
    if case.select.is_some() {
        for i in 0..MR {
            for j in 0..NR {
                let s = scores[i * NR + j];
                // `!(score <= threshold)`: NaN on either side passes.
                if !matches!(
                    s.partial_cmp(&thresholds[i]),
                    Some(Ordering::Less | Ordering::Equal)
                ) {
                    masks[i] |= 1 << j;
                }
            }
        }
    }
    (scores, masks)
}

fn run_tile(isa: Isa, case: &TileCase, thresholds: &[f32]) -> ([f32; TILE], [u16; MR]) {
    let mut c: [f32; TILE] = case.c0.clone().try_into().unwrap();
    let select = case.select.as_ref().map(|_| Select { thresholds });
    let masks = kernels::tile(
        isa,
        case.kc,
        &case.a,
        &case.b,
        &mut c,
        case.accumulate,
        select,
    );
    (c, masks)
}

fn bits(scores: &[f32]) -> Vec<u32> {
    scores.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(isa: Isa, got: &([f32; TILE], [u16; MR]), want: &([f32; TILE], [u16; MR])) {
    assert_eq!(
        bits(&got.0),
        bits(&want.0),
        "{}: scores differ from the reference",
        isa.name()
    );
    assert_eq!(
        got.1,
        want.1,
        "{}: masks differ from the reference",
        isa.name()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_isa_matches_the_definition_bit_for_bit(case in tile_case(600)) {
        let thresholds = thresholds_for(&case);
        let want = reference(&case, &thresholds);
        for isa in Isa::available() {
            let got = run_tile(isa, &case, &thresholds);
            assert_same(isa, &got, &want);
        }
    }

    /// Splitting the depth into chunks (the search does it above 384 dimensions) continues the
    /// same chain, so it never changes a score.
    #[test]
    fn depth_chunks_continue_the_same_chain(
        case in tile_case(300),
        split in 0.0f64..1.0,
    ) {
        let kc1 = ((case.kc as f64) * split) as usize;
        let thresholds = thresholds_for(&case);
        for isa in Isa::available() {
            let whole = run_tile(isa, &case, &thresholds);
            let mut c: [f32; TILE] = case.c0.clone().try_into().unwrap();
            kernels::tile(isa, kc1, &case.a, &case.b, &mut c, case.accumulate, None);
            let select = case.select.as_ref().map(|_| Select { thresholds: &thresholds });
            let masks = kernels::tile(
                isa,
                case.kc - kc1,
                &case.a[kc1 * MR..],
                &case.b[kc1 * NR..],
                &mut c,
                case.accumulate || kc1 > 0,
                select,
            );
            assert_same(isa, &(c, masks), &whole);
        }
    }
}

fn thresholds_for(case: &TileCase) -> Vec<f32> {
    match &case.select {
        Some(kinds) => thresholds_of(kinds, &reference_scores(case)),
        None => vec![f32::NAN; MR],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// `tile_pair` (the AVX-512 kernel scores two query panels at once) is two `tile` calls.
    #[test]
    fn tile_pair_matches_the_definition_bit_for_bit(cases in pair_case(400)) {
        let (first, second) = &cases;
        let thresholds = [thresholds_for(first), thresholds_for(second)];
        let want = [reference(first, &thresholds[0]), reference(second, &thresholds[1])];
        for isa in Isa::available() {
            let mut c0: [f32; TILE] = first.c0.clone().try_into().unwrap();
            let mut c1: [f32; TILE] = second.c0.clone().try_into().unwrap();
            let select = first.select.as_ref().zip(second.select.as_ref()).map(|_| {
                [Select { thresholds: &thresholds[0] }, Select { thresholds: &thresholds[1] }]
            });
            let masks = kernels::tile_pair(
                isa,
                first.kc,
                [&first.a, &second.a],
                &first.b,
                [&mut c0, &mut c1],
                first.accumulate,
                select,
            );
            assert_same(isa, &(c0, masks[0]), &want[0]);
            assert_same(isa, &(c1, masks[1]), &want[1]);
        }
    }
}

/// Four tiles for `tile_quad`: `cases[q][j]` has query panel `q`'s rows and thresholds and
/// corpus panel `j`'s columns, its own partial sums, one `accumulate` flag and `select` on all
/// or none.
fn quad_case(max_kc: usize) -> impl Strategy<Value = [[TileCase; 2]; 2]> {
    (1..=max_kc)
        .prop_flat_map(|kc| {
            (
                pair_case_with_kc(kc),
                prop::collection::vec(value(), kc * NR),
                prop::collection::vec(value(), TILE),
                prop::collection::vec(value(), TILE),
            )
        })
        .prop_map(|((first, second), b1, c01, c11)| {
            let other = |case: &TileCase, c0: Vec<f32>| TileCase {
                b: b1.clone(),
                c0,
                ..case.clone()
            };
            let (q0j1, q1j1) = (other(&first, c01), other(&second, c11));
            [[first, q0j1], [second, q1j1]]
        })
}

fn pair_case_with_kc(kc: usize) -> impl Strategy<Value = (TileCase, TileCase)> {
    (tile_case_with_kc(kc), tile_case_with_kc(kc)).prop_map(|(first, mut second)| {
        second.b = first.b.clone();
        second.accumulate = first.accumulate;
        second.select = first.select.clone().map(|_| {
            second
                .select
                .clone()
                .unwrap_or_else(|| vec![ThresholdKind::Fixed(f32::NAN); MR])
        });
        (first, second)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// `tile_quad` (two query panels x two corpus panels) is four `tile` calls; a query
    /// panel's thresholds apply to both corpus panels.
    #[test]
    fn tile_quad_matches_the_definition_bit_for_bit(cases in quad_case(400)) {
        let thresholds = [thresholds_for(&cases[0][0]), thresholds_for(&cases[1][0])];
        let want: Vec<Vec<_>> = (0..2)
            .map(|q| (0..2).map(|j| reference(&cases[q][j], &thresholds[q])).collect())
            .collect();
        for isa in Isa::available() {
            let mut c: Vec<[f32; TILE]> = cases
                .iter()
                .flatten()
                .map(|case| case.c0.clone().try_into().unwrap())
                .collect();
            let select = cases[0][0].select.as_ref().map(|_| {
                [Select { thresholds: &thresholds[0] }, Select { thresholds: &thresholds[1] }]
            });
            let [c00, c01, c10, c11] = &mut c[..] else { unreachable!() };
            let masks = kernels::tile_quad(
                isa,
                cases[0][0].kc,
                [&cases[0][0].a, &cases[1][0].a],
                [&cases[0][0].b, &cases[0][1].b],
                [[c00, c01], [c10, c11]],
                cases[0][0].accumulate,
                select,
            );
            for q in 0..2 {
                for j in 0..2 {
                    assert_same(isa, &(c[q * 2 + j], masks[q][j]), &want[q][j]);
                }
            }
        }
    }
}

#[test]
fn zero_depth_leaves_partial_sums_or_zeros() {
    for isa in Isa::available() {
        let mut c = [7.5f32; TILE];
        let masks = kernels::tile(isa, 0, &[], &[], &mut c, true, None);
        assert_eq!(c, [7.5f32; TILE], "{}", isa.name());
        assert_eq!(masks, [0; MR]);
        let masks = kernels::tile(isa, 0, &[], &[], &mut c, false, None);
        assert_eq!(c, [0.0f32; TILE], "{}", isa.name());
        assert_eq!(masks, [0; MR]);
    }
}

#[test]
fn threshold_semantics_nan_passes_everything_and_inf_nothing() {
    let kc = 3;
    let a: Vec<f32> = (0..kc * MR).map(|x| (x % 5) as f32 - 2.0).collect();
    let b: Vec<f32> = (0..kc * NR).map(|x| (x % 7) as f32 - 3.0).collect();
    let thresholds = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        f32::NAN,
        f32::INFINITY,
    ];
    for isa in Isa::available() {
        let mut c = [0.0f32; TILE];
        let select = Select {
            thresholds: &thresholds,
        };
        let masks = kernels::tile(isa, kc, &a, &b, &mut c, false, Some(select));
        assert_eq!(
            masks[0],
            u16::MAX,
            "{}: NaN threshold lets all pass",
            isa.name()
        );
        assert_eq!(
            masks[1],
            0,
            "{}: +inf threshold lets nothing pass",
            isa.name()
        );
        assert_eq!(masks[2], u16::MAX, "{}: all scores are finite", isa.name());
        let strictly_positive = (0..NR)
            .filter(|&j| c[3 * NR + j] > 0.0)
            .fold(0u16, |m, j| m | 1 << j);
        assert_eq!(
            masks[3],
            strictly_positive,
            "{}: ties with the threshold fail",
            isa.name()
        );
    }
}

#[test]
fn isa_list_is_consistent() {
    let available = Isa::available();
    assert_eq!(
        available[0],
        Isa::Scalar,
        "scalar is always available and slowest"
    );
    assert_eq!(Isa::detect(), *available.last().unwrap());
    for isa in &available {
        assert_eq!(Isa::from_name(isa.name()), Some(*isa));
    }
    assert_eq!(Isa::from_name("no-such-isa"), None);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(available.contains(&Isa::Avx2Fma));
    }
}

#[test]
fn f16_widening_is_exact_for_every_value() {
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let mut out = vec![0.0f32; all.len()];
    kernels::f16_to_f32(&all, &mut out);
    for (h, &w) in all.iter().zip(&out) {
        let want = h.to_f32();
        if want.is_nan() {
            assert!(w.is_nan(), "{:#06x} must widen to NaN", h.to_bits());
        } else {
            assert_eq!(w.to_bits(), want.to_bits(), "{:#06x}", h.to_bits());
        }
    }
    // Odd lengths exercise the vector loop's remainder.
    for len in [1usize, 3, 7, 9, 15, 17] {
        let src = &all[1000..1000 + len];
        let mut dst = vec![0.0f32; len];
        kernels::f16_to_f32(src, &mut dst);
        assert_eq!(dst, src.iter().map(|h| h.to_f32()).collect::<Vec<_>>());
    }
}

/// The int8 kernel's definition: exact integer dots over the packed groups.
fn int8_reference(groups: usize, a: &[u8], b: &[i8]) -> [i32; TILE] {
    let g = kernels::GROUP;
    let mut c = [0i32; TILE];
    for i in 0..MR {
        for j in 0..NR {
            c[i * NR + j] = (0..groups * g)
                .map(|p| {
                    let (step, byte) = (p / g, p % g);
                    i32::from(a[(step * MR + i) * g + byte])
                        * i32::from(b[(step * NR + j) * g + byte])
                })
                .sum();
        }
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every ISA's int8 tile equals the definition, including the extremes that would
    /// saturate a careless pair sum (the largest query byte against corpus bytes -128, 127).
    #[test]
    fn int8_tiles_are_exact_on_every_isa(
        groups in 0usize..80,
        seed in any::<u64>(),
        extremes in any::<bool>(),
    ) {
        let g = kernels::GROUP;
        for isa in Isa::available() {
            // Query bytes up to what the ISA's kernel takes (AVX2: 127, else 255).
            let top = (2 * kernels::query_levels(isa) + 1) as usize;
            let mut rng = negmine_core::rng::Rng::stream(seed, 0, 0, 0);
            let a: Vec<u8> = (0..groups * MR * g)
                .map(|_| if extremes { top as u8 } else { rng.below(top + 1) as u8 })
                .collect();
            let b: Vec<i8> = (0..groups * NR * g)
                .map(|_| {
                    if extremes {
                        [-128i8, 127][rng.below(2)]
                    } else {
                        (rng.below(256) as i32 - 128) as i8
                    }
                })
                .collect();
            let want = int8_reference(groups, &a, &b);
            let mut c = [7i32; TILE];
            kernels::tile_i8(isa, groups, &a, &b, &mut c);
            prop_assert_eq!(c.to_vec(), want.to_vec(), "{:?}", isa);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// The AMX-INT8 dots (the scalar reference where the CPU has no AMX) equal the definition,
    /// for any row stride and every byte value, including the extremes (255 against -128).
    #[test]
    fn amx_dots_are_exact(
        chunks in 1usize..8,
        pairs in 0usize..4,
        extra_stride in 0usize..70,
        seed in any::<u64>(),
        extremes in any::<bool>(),
    ) {
        let g = kernels::GROUP;
        let groups = chunks * kernels::AMX_DEPTH / g;
        let (depth, rows) = (groups * g, pairs * kernels::AMX_QUERY_ROWS);
        let stride = depth + extra_stride;
        let mut rng = negmine_core::rng::Rng::stream(seed, 0, 0, 0);
        let queries: Vec<u8> = (0..rows * stride)
            .map(|_| if extremes { 255 } else { rng.below(256) as u8 })
            .collect();
        let mut panel = || -> Vec<i8> {
            (0..groups * NR * g)
                .map(|_| if extremes { -128 } else { (rng.below(256) as i32 - 128) as i8 })
                .collect()
        };
        let panels = [panel(), panel()];
        let mut out = vec![7i32; rows * 2 * NR];
        kernels::dots_i8_amx(groups, &queries, stride, pairs, [&panels[0], &panels[1]], &mut out);
        for r in 0..rows {
            for (p, panel) in panels.iter().enumerate() {
                for j in 0..NR {
                    let want: i32 = (0..depth)
                        .map(|d| {
                            i32::from(queries[r * stride + d])
                                * i32::from(panel[((d / g) * NR + j) * g + d % g])
                        })
                        .sum();
                    prop_assert_eq!(out[r * 2 * NR + p * NR + j], want, "row {} panel {} col {}", r, p, j);
                }
            }
        }
    }

    /// One row's kernel test is the tile test's row, on every ISA.
    #[test]
    fn int8_row_select_is_the_tile_select(seed in any::<u64>()) {
        let mut rng = negmine_core::rng::Rng::stream(seed, 1, 0, 0);
        let tile: [i32; TILE] = std::array::from_fn(|_| rng.below(2001) as i32 - 1000);
        let offsets: Vec<i32> = (0..NR).map(|_| rng.below(201) as i32 - 100).collect();
        let scales: Vec<f32> = (0..NR).map(|_| rng.unit() as f32 * 0.01).collect();
        let thresholds: Vec<f32> = (0..MR)
            .map(|i| match i {
                0 => f32::NAN,
                1 => f32::INFINITY,
                _ => (rng.unit() as f32 - 0.5) * 10.0,
            })
            .collect();
        let want = kernels::select_i8(Isa::Scalar, &tile, &offsets, &scales, &thresholds);
        for isa in Isa::available() {
            for i in 0..MR {
                let row = &tile[i * NR..][..NR];
                let got = kernels::select_i8_row(isa, row, &offsets, &scales, thresholds[i]);
                prop_assert_eq!(got, want[i], "{:?} row {}", isa, i);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// The one-query kernel that rescores candidates gives each pair the bits the tile kernels
    /// give it (the same chain), on every ISA.
    #[test]
    fn score_rows_equals_the_tile_kernel_bit_for_bit(
        dim in 1usize..300,
        values in prop::collection::vec(value(), 1..64),
        seed in any::<u64>(),
    ) {
        let mut rng = negmine_core::rng::Rng::stream(seed, 0, 0, 0);
        let mut pick = || values[rng.below(values.len())];
        let query: Vec<f32> = (0..dim).map(|_| pick()).collect();
        let rows = kernels::ROWS;
        let panel: Vec<f32> = (0..dim * rows).map(|_| pick()).collect();
        // The same pairs through the tile kernel: the query in row 0 of a query panel, the
        // rows 16 at a time.
        let mut a = vec![0.0f32; dim * MR];
        for (p, &q) in query.iter().enumerate() {
            a[p * MR] = q;
        }
        let mut want = vec![0.0f32; rows];
        for block in 0..rows / NR {
            let b: Vec<f32> = (0..dim)
                .flat_map(|p| (0..NR).map(move |j| (p, j)))
                .map(|(p, j)| panel[p * rows + block * NR + j])
                .collect();
            let mut c = [0.0f32; TILE];
            kernels::tile(Isa::Scalar, dim, &a, &b, &mut c, false, None);
            want[block * NR..][..NR].copy_from_slice(&c[..NR]);
        }
        for isa in Isa::available() {
            let mut out = [1.0f32; 64];
            kernels::score_rows(isa, &query, &panel, &mut out);
            prop_assert_eq!(bits(&out), bits(&want), "{:?}", isa);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The int8 kernel test picks the same columns on every ISA, thresholds NaN (everything
    /// passes) and infinite included, and dots whose f32 conversion rounds.
    #[test]
    fn int8_select_is_the_same_on_every_isa(seed in any::<u64>()) {
        let mut rng = negmine_core::rng::Rng::stream(seed, 0, 0, 0);
        let mut tile = [0i32; TILE];
        // Dots and offsets within what int8 panels produce (|dot| < 2^29): their difference
        // never overflows, as in the search.
        for t in tile.iter_mut() {
            *t = (rng.next_u64() as i32) >> (2 + rng.below(24));
        }
        let offsets: Vec<i32> = (0..NR).map(|_| (rng.next_u64() as i32) >> 12).collect();
        let scales: Vec<f32> = (0..NR).map(|_| rng.unit() as f32 * 1e-3).collect();
        let thresholds: Vec<f32> = (0..MR)
            .map(|i| match rng.below(5) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                // Exactly one of the row's values: the comparison's edge.
                3 => ((tile[i * NR] - offsets[0]) as f32) * scales[0],
                _ => (rng.unit() as f32 - 0.5) * 1e3,
            })
            .collect();
        let want = kernels::select_i8(Isa::Scalar, &tile, &offsets, &scales, &thresholds);
        for isa in Isa::available() {
            let got = kernels::select_i8(isa, &tile, &offsets, &scales, &thresholds);
            prop_assert_eq!(got, want, "{:?}", isa);
        }
    }
}
