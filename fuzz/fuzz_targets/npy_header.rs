//! The `.npy` header parser on arbitrary bytes: it must return `Ok` or `Err`, never panic,
//! and every header it accepts must be self-consistent and survive a round trip through the
//! writer's header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use negmine_core::store::{npy_header, parse_header};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse_header(data) else {
        return;
    };
    let size = header.dtype.size();
    assert_eq!(header.data_offset % size, 0, "misaligned data offset");
    assert!(
        header.data_offset <= data.len(),
        "header claims bytes it was not given"
    );
    assert_eq!(
        header
            .rows
            .checked_mul(header.dim)
            .and_then(|n| n.checked_mul(size)),
        Some(header.data_len),
        "data_len is not rows * dim * element size"
    );
    let written = npy_header(header.dtype, header.rows, header.dim);
    let again = parse_header(&written).expect("the writer's header parses");
    assert_eq!(
        (again.dtype, again.rows, again.dim),
        (header.dtype, header.rows, header.dim)
    );
});
