//! `.npy` header parsing, mapping and atomic saving.

use std::io::Write;
use std::path::Path;

use half::f16;
use negmine_core::store::{npy_header, parse_header, save, MappedMatrix, MAX_HEADER_LEN};
use negmine_core::{DType, Elements, Error, MatrixView};
use proptest::prelude::*;

/// A file prefix with `dict` as its header, padded like numpy for `version`.
fn with_header(version: u8, dict: &str) -> Vec<u8> {
    let prefix_len = if version == 1 { 10 } else { 12 };
    let mut text = dict.as_bytes().to_vec();
    let total = prefix_len + text.len() + 1;
    text.resize(text.len() + (64 - total % 64) % 64, b' ');
    text.push(b'\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&text);
    out
}

fn dict(descr: &str, fortran: &str, shape: &str) -> String {
    format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}")
}

fn refused(bytes: &[u8], needle: &str) {
    match parse_header(bytes) {
        Ok(h) => panic!("accepted {h:?}, expected an error containing {needle:?}"),
        Err(e) => assert!(
            e.message().contains(needle),
            "error {:?} does not contain {needle:?}",
            e.message()
        ),
    }
}

#[test]
fn parses_what_numpy_writes() {
    for version in [1, 2, 3] {
        let bytes = with_header(version, &dict("'<f4'", "False", "(3, 5)"));
        let h = parse_header(&bytes).unwrap();
        assert_eq!(h.version, (version, 0));
        assert_eq!((h.dtype, h.rows, h.dim), (DType::F32, 3, 5));
        assert_eq!(h.data_offset, bytes.len());
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(h.data_len, 60);
    }
    let h = parse_header(&with_header(1, &dict("'<f2'", "False", "(0, 7)"))).unwrap();
    assert_eq!((h.dtype, h.rows, h.dim, h.data_len), (DType::F16, 0, 7, 0));
    // Key order, quotes, whitespace and trailing commas are free, as in Python.
    let h = parse_header(&with_header(
        1,
        "{ \"shape\" : ( 2 , 3 , ) ,'fortran_order':False,\n'descr':\"<f4\"}",
    ))
    .unwrap();
    assert_eq!((h.rows, h.dim), (2, 3));
    // Python 2 longs, which numpy still reads in 1.0/2.0 files.
    let h = parse_header(&with_header(1, &dict("'<f4'", "False", "(2L, 3L)"))).unwrap();
    assert_eq!((h.rows, h.dim), (2, 3));
}

#[test]
fn our_header_matches_numpys_layout() {
    let bytes = npy_header(DType::F32, 3, 4);
    assert_eq!(bytes.len() % 64, 0);
    let text = std::str::from_utf8(&bytes[10..]).unwrap();
    assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
    assert!(text.ends_with(" \n"));
    let h = parse_header(&bytes).unwrap();
    assert_eq!(
        (h.version, h.rows, h.dim, h.data_offset),
        ((1, 0), 3, 4, bytes.len())
    );
    let h = parse_header(&npy_header(DType::F16, usize::MAX / 8, 2)).unwrap();
    assert_eq!((h.dtype, h.rows), (DType::F16, usize::MAX / 8));
}

#[test]
fn bad_magic_and_versions() {
    refused(b"", "magic");
    refused(b"\x93NUMP", "magic");
    refused(b"PK\x03\x04 zip file", "magic");
    refused(b"\x93NUMPY", "version");
    refused(b"\x93NUMPY\x04\x00\x10\x00", "version 4.0");
    refused(b"\x93NUMPY\x01\x01\x10\x00", "version 1.1");
    refused(b"\x93NUMPY\x01\x00\x10", "header length");
    refused(b"\x93NUMPY\x01\x00\x40\x00{'descr'", "file ends");
}

#[test]
fn header_length_is_capped() {
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&(MAX_HEADER_LEN as u32 + 1).to_le_bytes());
    refused(&bytes, "10000");
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    refused(&bytes, "10000");
    // A long but legal header: 9 000 spaces of padding.
    let padded = format!("{}{}", dict("'<f4'", "False", "(1, 1)"), " ".repeat(9000));
    assert!(parse_header(&with_header(2, &padded)).is_ok());
}

#[test]
fn header_must_be_a_dict_with_exactly_three_keys() {
    refused(&with_header(1, "['<f4', False, (1, 2)]"), "dict literal");
    refused(
        &with_header(1, "{'descr': '<f4', 'shape': (1, 2)}"),
        "lacks key 'fortran_order'",
    );
    refused(
        &with_header(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), 'x': 1}",
        ),
        "unexpected key 'x'",
    );
    refused(
        &with_header(
            1,
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)}",
        ),
        "twice",
    );
    refused(&with_header(1, "{1: '<f4'}"), "keys must be strings");
    refused(
        &with_header(1, &dict("'<f4'", "0", "(1, 2)")),
        "True or False",
    );
    refused(&with_header(1, "{'descr': '<f4'"), "expected");
    refused(
        &with_header(1, &format!("{} x", dict("'<f4'", "False", "(1, 2)"))),
        "end of the header",
    );
}

#[test]
fn code_is_never_evaluated() {
    refused(
        &with_header(
            1,
            &dict(
                "__import__('os').system('touch /tmp/pwned')",
                "False",
                "(1, 2)",
            ),
        ),
        "call expression",
    );
    refused(
        &with_header(1, &dict("'<f4'", "False", "tuple([1, 2])")),
        "call expression",
    );
    refused(
        &with_header(1, &dict("'<f4'", "False", "(1, 2) + (3,)")),
        "',' or '}'",
    );
    refused(
        &with_header(1, &dict("'<f4'", "false", "(1, 2)")),
        "a name `false`",
    );
    refused(
        &with_header(1, &dict("'<\\x66\\x34'", "False", "(1, 2)")),
        "backslash",
    );
    refused(
        &with_header(1, &dict("'<f4'", "False", "(1.0, 2)")),
        "decimal integer",
    );
    refused(
        &with_header(1, &dict("'<f4'", "False", "(0x10, 2)")),
        "decimal integer",
    );
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    refused(
        &with_header(1, &dict("'<f4'", "False", &deep)),
        "levels deep",
    );
}

#[test]
fn refused_dtypes_are_named() {
    let case = |descr: &str, needle: &str| {
        refused(&with_header(1, &dict(descr, "False", "(1, 2)")), needle);
    };
    case("'|O'", "object dtype (pickled");
    case("'<c8'", "complex64");
    case("'<c16'", "complex128");
    case("'<f8'", "float64");
    case("'<i4'", "int32");
    case("'|u1'", "uint8");
    case("'|b1'", "bool");
    case("'|S10'", "bytes string");
    case("'<U8'", "unicode string");
    case("'|V8'", "void/structured");
    case("'<M8[ns]'", "datetime64");
    case("[('a', '<f4'), ('b', '<f4')]", "structured dtype");
    case("'float32'", "not a dtype negmine knows");
    case("'=f4'", "byte order");
    case("'f4'", "byte order");
    case("('<f4', (2,))", "dtype string");
}

#[test]
fn big_endian_and_fortran_order_say_how_to_convert() {
    refused(
        &with_header(1, &dict("'>f4'", "False", "(1, 2)")),
        "np.ascontiguousarray(x, dtype='<f4')",
    );
    refused(
        &with_header(1, &dict("'>f2'", "False", "(1, 2)")),
        "dtype='<f2'",
    );
    refused(
        &with_header(1, &dict("'<f4'", "True", "(1, 2)")),
        "np.ascontiguousarray(x, dtype='<f4')",
    );
}

#[test]
fn shapes_must_be_2d_non_negative_and_not_overflow() {
    let case = |shape: &str, needle: &str| {
        refused(&with_header(1, &dict("'<f4'", "False", shape)), needle);
    };
    case("(3,)", "2 dimensions");
    case("(3,)", "reshape(1, -1)");
    case("()", "2 dimensions");
    case("(1, 2, 3)", "2 dimensions");
    case("[1, 2]", "must be a tuple");
    case("(3)", "must be a tuple"); // (3) is the int 3 in Python
    case("(-1, 4)", "negative");
    case("(True, 4)", "must hold ints");
    case("('1', 4)", "must hold ints");
    case("(18446744073709551615, 2)", "too large");
    case("(4611686018427387904, 4611686018427387904)", "overflows");
    case(
        "(99999999999999999999999999999999999999999999, 1)",
        "too large",
    );
    case("(01, 2)", "leading zeros");
}

#[test]
fn misaligned_data_offset_is_refused() {
    // A hand-made 1.0 header whose length makes the data start at byte 10 + 63 = 73.
    let mut text = dict("'<f4'", "False", "(1, 1)").into_bytes();
    text.resize(62, b' ');
    text.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&text);
    refused(&bytes, "not a multiple of the 4-byte");
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn format_message(result: Result<MappedMatrix, Error>) -> String {
    match result {
        Err(Error::Format { message, .. }) => message,
        Err(e) => panic!("expected a format error, got {e:?}"),
        Ok(_) => panic!("expected a format error, got a matrix"),
    }
}

#[test]
fn open_checks_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let mut bytes = with_header(1, &dict("'<f4'", "False", "(2, 3)"));
    bytes.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));

    write_file(&path, &bytes[..bytes.len() - 8]);
    let message = format_message(MappedMatrix::open(&path));
    assert!(message.contains("missing 8 bytes"), "{message}");
    let message = format_message(MappedMatrix::read(&path));
    assert!(message.contains("missing 8 bytes"), "{message}");

    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    write_file(&path, &longer);
    let message = format_message(MappedMatrix::open(&path));
    assert!(message.contains("4 trailing bytes"), "{message}");

    write_file(&path, b"");
    let message = format_message(MappedMatrix::open(&path));
    assert!(message.contains("empty"), "{message}");

    write_file(&path, &bytes);
    for m in [
        MappedMatrix::open(&path).unwrap(),
        MappedMatrix::read(&path).unwrap(),
    ] {
        assert_eq!((m.rows(), m.dim(), m.dtype()), (2, 3, DType::F32));
        match m.view().elements() {
            Elements::F32(s) => assert_eq!(s, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            Elements::F16(_) => panic!("wrong dtype"),
        }
        m.will_need(0..2);
        m.dont_need(0..1);
        m.dont_need(1..100);
        m.will_need(std::ops::Range { start: 5, end: 3 });
    }
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        MappedMatrix::open(dir.path()),
        Err(Error::Io { .. })
    ));
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(format_message(MappedMatrix::open(&fifo)).contains("FIFO"));
    assert!(format_message(MappedMatrix::read(&fifo)).contains("FIFO"));
    assert!(format_message(MappedMatrix::open(Path::new("/dev/zero"))).contains("character device"));
    assert!(matches!(
        MappedMatrix::open(&dir.path().join("missing.npy")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn empty_shapes_round_trip_without_mapping() {
    let dir = tempfile::tempdir().unwrap();
    for (rows, dim) in [(0, 4), (5, 0), (0, 0)] {
        let path = dir.path().join(format!("e{rows}x{dim}.npy"));
        save(&path, &MatrixView::f32(&[], rows, dim).unwrap()).unwrap();
        let m = MappedMatrix::open(&path).unwrap();
        assert_eq!((m.rows(), m.dim()), (rows, dim));
        assert!(!m.is_mapped());
        assert_eq!(m.view().rows(), rows);
        m.will_need(0..rows);
        m.dont_need(0..rows);
    }
}

#[test]
fn save_replaces_a_mapped_file_without_disturbing_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let old: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    save(&path, &MatrixView::f32(&old, 1024, 4).unwrap()).unwrap();
    let mapped = MappedMatrix::open(&path).unwrap();
    assert!(mapped.is_mapped());
    // Saving the mapped matrix onto its own file.
    save(&path, &mapped.view()).unwrap();
    let new: Vec<f32> = (0..6).map(|i| -(i as f32)).collect();
    save(&path, &MatrixView::f32(&new, 3, 2).unwrap()).unwrap();
    match mapped.view().elements() {
        Elements::F32(s) => assert_eq!(s, &old[..]),
        Elements::F16(_) => panic!("wrong dtype"),
    }
    let reopened = MappedMatrix::open(&path).unwrap();
    assert_eq!((reopened.rows(), reopened.dim()), (3, 2));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "a temp file was left behind");
}

#[test]
fn save_errors_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let view = MatrixView::f32(&[1.0, 2.0], 1, 2).unwrap();
    let missing = dir.path().join("no/such/dir/x.npy");
    match save(&missing, &view) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(matches!(save(&sub, &view), Err(Error::Io { .. })));
    assert!(matches!(
        save(Path::new("/"), &view),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
}

#[test]
fn save_sweeps_the_temp_files_of_killed_writers_only() {
    use std::os::unix::io::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let view = MatrixView::f32(&[1.0, 2.0], 1, 2).unwrap();
    let name = |n: &str| dir.path().join(n);
    // What a writer killed between naming its temp file and the rename leaves.
    let stale = [".x.npy.0123456789ab.tmp", ".x.npy.ffffffffffff.tmp"];
    // Not temp names of x.npy: other destinations, other patterns.
    let others = [
        ".x.npy.0123456789AB.tmp",
        ".x.npy.0123456789a.tmp",
        ".x.npy.0123456789ab.tmp.keep",
        ".y.npy.0123456789ab.tmp",
        "x.npy.0123456789ab.tmp",
    ];
    for n in stale.iter().chain(&others) {
        std::fs::write(name(n), b"partial").unwrap();
    }
    // A live writer's temp file: locked by its descriptor.
    let live = name(".x.npy.00000000000a.tmp");
    let held = std::fs::File::create(&live).unwrap();
    // SAFETY: flock on a descriptor `held` owns for the whole test.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    // A directory under a temp name is no file of save's.
    std::fs::create_dir(name(".x.npy.0000000000bb.tmp")).unwrap();
    save(&path, &view).unwrap();
    for n in stale {
        assert!(!name(n).exists(), "{n} was not swept");
    }
    for n in others {
        assert!(name(n).exists(), "{n} was removed");
    }
    assert!(live.exists() && name(".x.npy.0000000000bb.tmp").is_dir());
    drop(held);
    save(&path, &view).unwrap();
    assert!(
        !live.exists(),
        "an abandoned temp file outlived the next save"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1 + others.len() + 1, "{left:?}");
}

fn tmpdir_shapes() -> impl Strategy<Value = (usize, usize, bool)> {
    (0usize..40, 0usize..40, any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip((rows, dim, half) in tmpdir_shapes(), seed in any::<u32>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.npy");
        let values: Vec<f32> = (0..rows * dim)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / 1e6 - 2000.0)
            .collect();
        let halves: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
        let view = if half {
            MatrixView::f16(&halves, rows, dim).unwrap()
        } else {
            MatrixView::f32(&values, rows, dim).unwrap()
        };
        save(&path, &view).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = parse_header(&bytes).unwrap();
        prop_assert_eq!(header.data_offset % 64, 0);
        prop_assert_eq!(bytes.len(), header.data_offset + header.data_len);
        for m in [MappedMatrix::open(&path).unwrap(), MappedMatrix::read(&path).unwrap()] {
            prop_assert_eq!((m.rows(), m.dim()), (rows, dim));
            match (m.view().elements(), half) {
                (Elements::F32(s), false) => prop_assert_eq!(s, &values[..]),
                (Elements::F16(s), true) => {
                    prop_assert!(s.iter().zip(&halves).all(|(a, b)| a.to_bits() == b.to_bits()))
                }
                _ => prop_assert!(false, "wrong dtype"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_header(&bytes);
        let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = parse_header(&with_magic);
    }

    #[test]
    fn parse_header_never_panics_on_mutated_headers(
        version in prop_oneof![Just(1u8), Just(2u8), Just(3u8)],
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = with_header(version, &dict("'<f4'", "False", "(12, 34)"));
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        if let Ok(h) = parse_header(&bytes) {
            prop_assert!(h.data_offset <= bytes.len());
            prop_assert_eq!(h.data_len, h.rows * h.dim * h.dtype.size());
        }
    }

    #[test]
    fn parse_header_never_panics_on_token_soup(
        tokens in proptest::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("("), Just(")"), Just("["), Just("]"), Just(","),
                Just(":"), Just("'descr'"), Just("'shape'"), Just("'fortran_order'"),
                Just("'<f4'"), Just("True"), Just("False"), Just("None"), Just("-"), Just("7"),
                Just("99999999999999999999999999999999999999999"), Just(" "), Just("'"),
                Just("\""), Just("\\"), Just("L"), Just("x("), Just("\n"),
            ],
            0..40,
        ),
    ) {
        let _ = parse_header(&with_header(1, &tokens.concat()));
    }
}
