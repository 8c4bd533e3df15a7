//! The BM25 index file: a saved index opens (mapped) to the same index, bit for bit and search
//! for search; a stale key, a truncated or corrupted file is an error naming the file, and no
//! bytes at all make the reader panic.

use negmine_core::lexical::{check_index, reseal_index, Bm25Index, Bm25Params, Pruning, KEY_LEN};
use negmine_core::{Error, NoHooks};
use proptest::prelude::*;

mod common;
use common::{pool, Rng};

fn corpus(rng: &mut Rng, n: usize, vocab: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let len = rng.below(9);
            (0..len)
                .map(|_| {
                    let r = rng.below(vocab);
                    format!("w{} É{}", r * r / vocab, rng.below(3))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn built(seed: u64, n: usize) -> (Bm25Index, Vec<String>) {
    let mut rng = Rng(seed);
    let docs = corpus(&mut rng, n, 30);
    let queries = corpus(&mut rng, 20, 40);
    let index =
        Bm25Index::build(pool(1), &docs, Bm25Params { k1: 1.2, b: 0.6 }, &mut NoHooks).unwrap();
    (index, queries)
}

fn format_message(err: Error) -> String {
    match err {
        Error::Format { path, message } => format!("{}: {message}", path.display()),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn saved_index_opens_mapped_to_the_same_index() {
    let (index, queries) = built(3, 400);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bm25.idx");
    let key = [7u8; KEY_LEN];
    index.save(&path, &key).unwrap();
    let opened = Bm25Index::open(&path, Some(&key)).unwrap();
    assert!(opened.is_mapped() && !index.is_mapped());
    assert_eq!(opened.key(), key);
    assert_eq!(
        (opened.n_docs(), opened.n_terms(), opened.n_postings()),
        (index.n_docs(), index.n_terms(), index.n_postings())
    );
    assert_eq!(opened.avgdl().to_bits(), index.avgdl().to_bits());
    assert_eq!(opened.params(), index.params());
    assert_eq!(&opened.as_bytes()[128..], &index.as_bytes()[128..]);
    for pruning in [Pruning::MaxScore, Pruning::Exhaustive] {
        let a = index
            .search(pool(2), &queries, 15, None, pruning, &mut NoHooks)
            .unwrap();
        let b = opened
            .search(pool(2), &queries, 15, None, pruning, &mut NoHooks)
            .unwrap();
        assert_eq!(a.ids, b.ids);
        let bits = |s: &[f64]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.scores), bits(&b.scores));
    }
    // Saving over the open (mapped) file replaces it; the mapping keeps the old inode.
    index.save(&path, &[0; KEY_LEN]).unwrap();
    assert_eq!(opened.n_docs(), index.n_docs());
    let stale = format_message(Bm25Index::open(&path, Some(&key)).unwrap_err());
    assert!(
        stale.contains("bm25.idx") && stale.contains("stale"),
        "{stale}"
    );
    Bm25Index::open(&path, None).unwrap();
}

#[test]
fn truncated_extended_and_corrupted_files_are_refused_by_name() {
    let (index, _) = built(5, 200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx.bin");
    let good = index.as_bytes().to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "truncated"),
        (good[..100].to_vec(), "truncated"),
        (good[..good.len() - 8].to_vec(), "missing 8 bytes"),
        ([&good[..], &[0u8; 8]].concat(), "8 trailing bytes"),
        (
            [b"NOTBM25!", &good[8..]].concat(),
            "not a negmine BM25 index",
        ),
        (
            {
                let mut bad = good.clone();
                bad[good.len() / 2] ^= 0x10;
                bad
            },
            "checksum",
        ),
        (
            {
                let mut bad = good.clone();
                bad[20] ^= 1;
                bad
            },
            "header is corrupt",
        ),
        (
            {
                let mut bad = good.clone();
                bad[8] = 9;
                reseal_index(&mut bad);
                bad
            },
            "format version 9",
        ),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let message = format_message(Bm25Index::open(&path, None).unwrap_err());
        assert!(
            message.contains("idx.bin") && message.contains(expected),
            "expected {expected:?}, got {message:?}"
        );
    }
    assert!(matches!(
        Bm25Index::open(dir.path(), None),
        Err(Error::Format { .. } | Error::Io { .. } | Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Bm25Index::open(&dir.path().join("missing"), None),
        Err(Error::Io { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any truncation or any changed byte is refused: the checksums cover every byte.
    #[test]
    fn every_truncation_and_changed_byte_is_refused(
        seed in 0u64..8, at in any::<prop::sample::Index>(), flip in 1u8..=255,
    ) {
        let (index, _) = built(seed, 60);
        let good = index.as_bytes();
        prop_assert!(check_index(good).is_ok());
        let i = at.index(good.len());
        prop_assert!(check_index(&good[..i]).is_err());
        let mut bad = good.to_vec();
        bad[i] ^= flip;
        prop_assert!(check_index(&bad).is_err());
    }

    /// Changed words with the checksums rewritten (so the structural checks are what stands
    /// between the bytes and the search): refused, or accepted and searched without a panic.
    #[test]
    fn resealed_corruptions_never_panic(
        seed in 0u64..8,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let (index, queries) = built(seed, 60);
        let mut bad = index.as_bytes().to_vec();
        for (at, word) in &edits {
            let i = at.index(bad.len() / 8) * 8;
            bad[i..i + 8].copy_from_slice(&word.to_le_bytes());
        }
        if let Some(cut) = cut {
            bad.truncate(cut.index(bad.len()));
        }
        reseal_index(&mut bad);
        if let Ok(opened) = Bm25Index::from_bytes(&bad) {
            for pruning in [Pruning::MaxScore, Pruning::Exhaustive] {
                opened.search(pool(1), &queries, 7, None, pruning, &mut NoHooks).unwrap();
            }
        }
    }
}
