//! The BM25 index reader on arbitrary bytes: it must return `Ok` or `Err`, never panic, and an
//! index it accepts must search without a panic. The first byte chooses whether the checksums
//! are rewritten first (`reseal_index`), so that the structural checks behind them are reached;
//! seeds are small valid indexes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use negmine_core::lexical::{reseal_index, Bm25Index, Pruning};
use negmine_core::NoHooks;

fuzz_target!(|data: &[u8]| {
    let [mode, ref file @ ..] = *data else {
        return;
    };
    let mut image = file.to_vec();
    if mode & 1 == 1 {
        reseal_index(&mut image);
    }
    let Ok(index) = Bm25Index::from_bytes(&image) else {
        return;
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let queries = ["a b c", "w1 w2 w1", ""];
    for pruning in [Pruning::MaxScore, Pruning::Exhaustive] {
        index
            .search(&pool, &queries, 3, None, pruning, &mut NoHooks)
            .unwrap();
    }
});
