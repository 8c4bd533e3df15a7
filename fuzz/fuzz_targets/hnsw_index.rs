//! The hnswlib index check on arbitrary bytes: it must return `Ok` or `Err`, never panic, and
//! a file it accepts must have the exact length its header and size words announce. The first
//! four bytes choose the layout (rows, dim, m) so that small valid files are reachable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use negmine_core::store::{check_hnsw_index, HnswLayout, HNSW_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let [rows, dim, m, ef, ref file @ ..] = *data else {
        return;
    };
    let layout = HnswLayout {
        rows: usize::from(rows % 8),
        dim: usize::from(dim % 4),
        m: usize::from(m % 6) + 2,
        ef_construction: usize::from(ef),
    };
    if check_hnsw_index(file, &layout).is_err() {
        return;
    }
    let record = 4 + 8 * layout.m + 4 * layout.dim + 8;
    let mut p = HNSW_HEADER_LEN + layout.rows * record;
    for _ in 0..layout.rows {
        let size = u32::from_ne_bytes(file[p..p + 4].try_into().unwrap()) as usize;
        assert_eq!(size % (4 + 4 * layout.m), 0, "accepted a partial upper-level list");
        p += 4 + size;
    }
    assert_eq!(p, file.len(), "accepted a file of the wrong length");
});
