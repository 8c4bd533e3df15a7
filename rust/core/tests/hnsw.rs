//! hnswlib's index file check (`store::check_hnsw_index`): a well-formed file passes, and
//! every truncation, every corrupted word and each kind of damage is refused with a reason
//! (or, where the damage is harmless to hnswlib, such as a vector's bytes, passes), never a
//! panic.

use negmine_core::store::{check_hnsw_file, check_hnsw_index, HnswLayout, HNSW_HEADER_LEN};
use negmine_core::Error;
use proptest::prelude::*;

/// A well-formed index in hnswlib 0.8's layout: element `i` on level `levels[i]`, level-0
/// lists to the next two elements, each upper list to the other elements on that level (at
/// most `m`), labels the rows reversed, the entry point the first element on the top level.
fn index(layout: &HnswLayout, levels: &[usize]) -> Vec<u8> {
    let (n, m, dim) = (layout.rows, layout.m, layout.dim);
    let links0 = 4 + 8 * m;
    let record = links0 + 4 * dim + 8;
    let top = levels.iter().copied().max();
    let entry = top.map_or(u32::MAX, |t| {
        levels.iter().position(|&l| l == t).unwrap() as u32
    });
    let mut out = Vec::new();
    for word in [
        0,
        n as u64,
        n as u64,
        record as u64,
        (links0 + 4 * dim) as u64,
    ] {
        out.extend(word.to_ne_bytes());
    }
    out.extend((links0 as u64).to_ne_bytes());
    out.extend(top.map_or(-1, |t| t as i32).to_ne_bytes());
    out.extend(entry.to_ne_bytes());
    for word in [m, 2 * m, m] {
        out.extend((word as u64).to_ne_bytes());
    }
    out.extend((1.0 / (m as f64).ln()).to_ne_bytes());
    out.extend((layout.ef_construction.max(m) as u64).to_ne_bytes());
    assert_eq!(out.len(), HNSW_HEADER_LEN);
    let list = |out: &mut Vec<u8>, ids: &[usize], slots: usize| {
        out.extend((ids.len() as u32).to_ne_bytes());
        for slot in 0..slots {
            out.extend((ids.get(slot).copied().unwrap_or(0) as u32).to_ne_bytes());
        }
    };
    for i in 0..n {
        let ids: Vec<usize> = (1..=2.min(n - 1)).map(|d| (i + d) % n).collect();
        list(&mut out, &ids, 2 * m);
        for j in 0..dim {
            out.extend(((i * dim + j) as f32).to_ne_bytes());
        }
        out.extend(((n - 1 - i) as u64).to_ne_bytes());
    }
    for (i, &level) in levels.iter().enumerate() {
        out.extend(((level * (4 + 4 * m)) as u32).to_ne_bytes());
        for l in 1..=level {
            let ids: Vec<usize> = (0..n)
                .filter(|&j| j != i && levels[j] >= l)
                .take(m)
                .collect();
            list(&mut out, &ids, m);
        }
    }
    out
}

fn small(rows: usize) -> HnswLayout {
    HnswLayout {
        rows,
        dim: 3,
        m: 4,
        ef_construction: 20,
    }
}

const LEVELS: [usize; 7] = [0, 2, 0, 1, 0, 1, 0];

fn refused(bytes: &[u8], layout: &HnswLayout, needle: &str) {
    match check_hnsw_index(bytes, layout) {
        Err(e) => assert!(e.message().contains(needle), "{needle:?} not in {e}"),
        Ok(()) => panic!("accepted, expected a refusal naming {needle:?}"),
    }
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// Byte offset of element `i`'s level-0 record.
fn record(layout: &HnswLayout, i: usize) -> usize {
    HNSW_HEADER_LEN + i * (4 + 8 * layout.m + 4 * layout.dim + 8)
}

/// Byte offset of the first upper-level list of element `i` (which must have one).
fn first_upper_list(bytes: &[u8], layout: &HnswLayout, i: usize) -> usize {
    let mut p = record(layout, layout.rows);
    for _ in 0..i {
        p += 4 + u32::from_ne_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
    }
    p + 4
}

#[test]
fn well_formed_indexes_pass() {
    for levels in [&LEVELS[..], &[0], &[1, 0], &[]] {
        let layout = small(levels.len());
        check_hnsw_index(&index(&layout, levels), &layout).unwrap();
    }
}

#[test]
fn each_damage_is_named() {
    let layout = small(LEVELS.len());
    let good = index(&layout, &LEVELS);
    let damaged = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        f(&mut bytes);
        bytes
    };
    refused(&good[..50], &layout, "shorter than hnswlib's header");
    let other = HnswLayout { rows: 8, ..layout };
    refused(&good, &other, "cur_element_count 7 (expected 8)");
    let other = HnswLayout { m: 5, ..layout };
    refused(&good, &other, "max_m 4 (expected 5)");
    refused(
        &damaged(&|b| b[80..88].copy_from_slice(&f64::NAN.to_ne_bytes())),
        &layout,
        "level multiplier",
    );
    let at = record(&layout, 4);
    refused(
        &damaged(&|b| put_u32(b, at, 9)),
        &layout,
        "element 4's level-0 list holds 9 neighbours, at most 8 fit",
    );
    refused(
        &damaged(&|b| put_u32(b, at + 4, 7)),
        &layout,
        "element 4's level-0 list has neighbour id 7, but there are 7 elements",
    );
    let label = record(&layout, 2) + 4 + 32 + 12;
    refused(
        &damaged(&|b| b[label..label + 8].copy_from_slice(&7u64.to_ne_bytes())),
        &layout,
        "element 2 has label 7",
    );
    refused(
        &damaged(&|b| b[label..label + 8].copy_from_slice(&6u64.to_ne_bytes())),
        &layout,
        "same label",
    );
    let list = first_upper_list(&good, &layout, 3);
    refused(
        &damaged(&|b| put_u32(b, list, 5)),
        &layout,
        "element 3's upper-level list holds 5",
    );
    refused(
        &damaged(&|b| put_u32(b, list + 4, 70)),
        &layout,
        "upper-level list has neighbour id 70",
    );
    refused(
        &damaged(&|b| put_u32(b, list + 4, 0)),
        &layout,
        "element 3 links to 0 on level 1, above that element's level 0",
    );
    refused(
        &damaged(&|b| put_u32(b, 52, 3)),
        &layout,
        "entry point 3 is not an element on the top level 2",
    );
    refused(
        &damaged(&|b| put_u32(b, 48, 1)),
        &layout,
        "not a whole number of levels up to the top level 1",
    );
    refused(
        &damaged(&|b| b.extend([0; 4])),
        &layout,
        "4 bytes after the last list",
    );
    refused(&damaged(&|b| b.extend([0; 2])), &layout, "misaligned");
    refused(
        &good[..good.len() - 4],
        &layout,
        "the file ends before the upper-level lists of element 6",
    );
    let two = small(2);
    let tail_list = index(&two, &[0, 1]);
    refused(&tail_list[..tail_list.len() - 4], &two, "4 bytes missing");
    let empty = small(0);
    let mut bytes = index(&empty, &[]);
    put_u32(&mut bytes, 52, 0);
    refused(&bytes, &empty, "an empty index with an entry point");
}

#[test]
fn a_file_is_checked_and_named() {
    let layout = small(LEVELS.len());
    let dir = std::env::temp_dir().join(format!("negmine-hnsw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("graph.bin");
    let good = index(&layout, &LEVELS);
    std::fs::write(&path, &good).unwrap();
    check_hnsw_file(&path, &layout).unwrap();
    std::fs::write(&path, &good[..good.len() - 4]).unwrap();
    match check_hnsw_file(&path, &layout) {
        Err(Error::Format { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("ends before"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        check_hnsw_file(&path, &layout),
        Err(Error::Format { .. })
    ));
    // A directory is refused without being read (as for `.npy` files).
    assert!(check_hnsw_file(&dir, &layout).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn levels() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![6 => Just(0usize), 3 => Just(1), 1 => Just(2)],
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_truncation_is_refused(levels in levels(), cut in any::<prop::sample::Index>()) {
        let layout = small(levels.len());
        let good = index(&layout, &levels);
        prop_assert!(check_hnsw_index(&good, &layout).is_ok());
        let len = cut.index(good.len());
        prop_assert!(check_hnsw_index(&good[..len], &layout).is_err());
    }

    #[test]
    fn a_corrupted_word_never_panics_and_only_vectors_may_change_freely(
        levels in levels(),
        at in any::<prop::sample::Index>(),
        value in any::<u32>(),
    ) {
        let layout = small(levels.len());
        let mut bytes = index(&layout, &levels);
        let at = at.index(bytes.len() / 4) * 4;
        put_u32(&mut bytes, at, value);
        let verdict = check_hnsw_index(&bytes, &layout);
        // A vector's bytes are data, not structure: any value passes.
        let vectors = (0..layout.rows).any(|i| {
            let start = record(&layout, i) + 4 + 8 * layout.m;
            (start..start + 4 * layout.dim).contains(&at)
        });
        if vectors {
            prop_assert!(verdict.is_ok());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        rows in 0usize..6,
    ) {
        let _ = check_hnsw_index(&bytes, &small(rows));
    }
}
