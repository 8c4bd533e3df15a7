"""Embeddings files: strict .npy validation, mapping, atomic saving (reliability.md 1-4, 12-14)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import negmine
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError, NegmineError
from negmine.store import open_embeddings, save_embeddings

F32_DICT = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"


def npy(header: str | bytes, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file with `header` as its dict text, padded like numpy to a 64-byte data start."""
    text = (
        header.encode("utf-8" if version[0] == 3 else "latin-1")
        if isinstance(header, str)
        else header
    )
    prefix = 10 if version[0] == 1 else 12
    text += b" " * ((64 - (prefix + len(text) + 1) % 64) % 64) + b"\n"
    fmt = "<H" if version[0] == 1 else "<I"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(text)) + text + data


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_entry(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# --- 1. magic, version, header length, header structure, code in headers -----------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"PK\x03\x04 a zip file", "magic"),
        (b"\x93NUMP", "magic"),
        (b"\x93NUMPY", "version"),
        (b"\x93NUMPY\x04\x00" + b"\x00" * 60, "version 4.0"),
        (b"\x93NUMPY\x01\x07" + b"\x00" * 60, "version 1.7"),
        (b"\x93NUMPY\x01\x00\xff\x00{'descr': '<f4'", "file ends"),
        (b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{", "10000"),
        (npy("['<f4', False, (3, 4)]"), "dict literal"),
        (npy("{'descr': '<f4', 'shape': (3, 4)}"), "lacks key 'fortran_order'"),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'x': 0}"), "key 'x'"),
        (npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (3, 4)}"), "True or False"),
        (
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)} junk"),
            "end of the header",
        ),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5, 4)}"), "decimal integer"),
    ],
)
def test_bad_prefix_and_header_structure(tmp_path: Path, content: bytes, needle: str) -> None:
    path = write(tmp_path / "bad.npy", content)
    with pytest.raises(FormatError, match=needle) as info:
        open_embeddings(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, NegmineError)


def test_header_with_code_is_parsed_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    header = (
        "{'descr': __import__('os').system('touch " + str(marker) + "'), "
        "'fortran_order': False, 'shape': (1, 1)}"
    )
    path = write(tmp_path / "evil.npy", npy(header, b"\0" * 4))
    with pytest.raises(FormatError, match="call expression"):
        open_embeddings(path)
    assert not marker.exists()


def test_header_size_cap_is_numpys(tmp_path: Path) -> None:
    long_ok = npy(F32_DICT + " " * 9000, b"\0" * 48, version=(2, 0))
    assert open_embeddings(write(tmp_path / "ok.npy", long_ok)).shape == (3, 4)
    too_long = npy(F32_DICT + " " * 10_100, b"\0" * 48, version=(2, 0))
    with pytest.raises(FormatError, match="more than the 10000 bytes"):
        open_embeddings(write(tmp_path / "long.npy", too_long))


# --- 2. dtypes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((2, 2), dtype=np.complex64), "complex64"),
        (np.zeros((2, 2), dtype=np.float64), "float64"),
        (np.zeros((2, 2), dtype=np.int32), "int32"),
        (np.zeros((2, 2), dtype=np.bool_), "bool"),
        (np.zeros((2, 2), dtype="U3"), "unicode string"),
        (np.zeros((2, 2), dtype="S3"), "bytes string"),
        (np.zeros((2, 2), dtype=[("a", "<f4"), ("b", "<f4")]), "structured dtype"),
        (np.zeros((2, 2), dtype="datetime64[s]"), "datetime64"),
    ],
)
def test_unsupported_dtypes_are_named(tmp_path: Path, array: np.ndarray, needle: str) -> None:
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(FormatError, match=needle):
        open_embeddings(path)


def test_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[object(), None]], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match=r"object dtype .*pickled"):
        open_embeddings(path)


@pytest.mark.parametrize("dtype", [">f4", ">f2"])
def test_big_endian_is_refused_with_a_conversion_hint(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "be.npy"
    np.save(path, np.ones((2, 3), dtype=dtype))
    little = "<" + dtype[1:]
    with pytest.raises(FormatError, match=rf"big-endian.*ascontiguousarray\(x, dtype='{little}'\)"):
        open_embeddings(path)


def test_fortran_order_is_refused_with_a_conversion_hint(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, np.asfortranarray(np.ones((2, 3), dtype=np.float32)))
    with pytest.raises(FormatError, match=r"fortran_order.*ascontiguousarray"):
        open_embeddings(path)


@pytest.mark.parametrize("descr", ["'=f4'", "'f4'", "'float32'", "'|f4'"])
def test_implicit_byte_order_is_refused(tmp_path: Path, descr: str) -> None:
    header = "{'descr': " + descr + ", 'fortran_order': False, 'shape': (3, 4)}"
    with pytest.raises(FormatError, match="descr"):
        open_embeddings(write(tmp_path / "x.npy", npy(header, b"\0" * 48)))


# --- 3. shapes and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        ("(12,)", r"2 dimensions.*reshape\(1, -1\)"),
        ("()", "2 dimensions"),
        ("(1, 3, 4)", "2 dimensions"),
        ("(-3, -4)", "negative"),
        ("[3, 4]", "must be a tuple"),
        ("(2**40, 4)", "only literals|',' or '\\)'"),
        ("(4611686018427387904, 4611686018427387904)", "overflows"),
        ("(1" + "0" * 40 + ", 1)", "too large"),
    ],
)
def test_bad_shapes(tmp_path: Path, shape: str, needle: str) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + "}"
    with pytest.raises(FormatError, match=needle):
        open_embeddings(write(tmp_path / "x.npy", npy(header, b"\0" * 48)))


@pytest.mark.parametrize("mmap", [True, False])
def test_short_data_is_refused_and_never_extended(tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "short.npy"
    np.save(path, np.ones((3, 4), dtype=np.float32))
    os.truncate(path, path.stat().st_size - 10)
    size = path.stat().st_size
    with pytest.raises(FormatError, match="missing 10 bytes"):
        open_embeddings(path, mmap=mmap)
    assert path.stat().st_size == size


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.npy"
    np.save(path, np.ones((3, 4), dtype=np.float32))
    with path.open("ab") as f:
        f.write(b"\0" * 7)
    with pytest.raises(FormatError, match="7 trailing bytes"):
        open_embeddings(path)


def test_misaligned_data_is_refused(tmp_path: Path) -> None:
    text = F32_DICT.encode() + b" " * 3 + b"\n"
    assert 10 + len(text) == 73  # data would start at byte 73, not a multiple of 4
    content = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 48
    with pytest.raises(FormatError, match="not a multiple of the 4-byte"):
        open_embeddings(write(tmp_path / "x.npy", content))


# --- 4. files that are not .npy files --------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="empty"):
        open_embeddings(write(tmp_path / "empty.npy", b""))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_embeddings(tmp_path / "missing.npy")
    with pytest.raises(IsADirectoryError):
        open_embeddings(tmp_path)


def test_fifo_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # In a subprocess, so that a regression hangs a child with a timeout, not the suite.
    result = run_python(
        """
        import sys
        from negmine.errors import FormatError
        from negmine.store import open_embeddings
        for path in sys.argv[1:]:
            for mmap in (True, False):
                try:
                    open_embeddings(path, mmap=mmap)
                except FormatError as e:
                    print(e)
        """,
        str(fifo),
        "/dev/zero",
        "/dev/null",
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert all("FIFO" in line for line in lines[:2])
    assert all("character device" in line for line in lines[2:])


# --- the Embeddings object -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mmap", [True, False])
def test_embeddings_object(tmp_path: Path, dtype: type, mmap: bool) -> None:
    data = np.arange(5 * 1000, dtype=dtype).reshape(5, 1000)
    path = tmp_path / "e.npy"
    np.save(path, data)
    emb = open_embeddings(path, mmap=mmap)
    assert isinstance(emb, negmine.Embeddings)
    assert emb.shape == (5, 1000)
    assert len(emb) == 5
    assert emb.dtype == np.dtype(dtype)
    assert emb.path == str(path)
    assert emb.mapped is mmap
    assert repr(emb) == (
        f"Embeddings({str(path)!r}, shape=(5, 1000), dtype={np.dtype(dtype).name}, mapped={mmap})"
    )
    view = np.asarray(emb)
    assert view.dtype == dtype and view.shape == (5, 1000)
    np.testing.assert_array_equal(view, data)
    assert np.shares_memory(view, emb.numpy())  # zero-copy
    assert not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1
    with pytest.raises(ValueError, match="WRITEABLE"):
        view.flags.writeable = True
    copied = np.array(emb, copy=True)
    assert copied.flags.writeable and not np.shares_memory(copied, view)
    assert np.asarray(emb, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="without a copy"):
        np.array(emb, dtype=np.float64, copy=False)
    # The view keeps the file open after the Embeddings object is gone.
    del emb
    np.testing.assert_array_equal(view, data)


@pytest.mark.parametrize("shape", [(0, 8), (4, 0), (0, 0)])
def test_empty_shapes(tmp_path: Path, shape: tuple[int, int]) -> None:
    path = tmp_path / "e.npy"
    save_embeddings(path, np.zeros(shape, dtype=np.float32))
    emb = open_embeddings(path)
    assert emb.shape == shape and not emb.mapped
    assert np.asarray(emb).shape == shape
    assert np.load(path).shape == shape


# --- differential checks against numpy -------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f4", "<f2"])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize(
    "template",
    [
        "{{'descr': '{d}', 'fortran_order': False, 'shape': ({r}, {c}), }}",
        '{{"shape": ({r},{c}),"fortran_order":False,"descr":"{d}"}}',
        "{{ 'fortran_order' : False ,\n 'descr' : '{d}' , 'shape' : ( {r} , {c} , ) , }}",
    ],
)
def test_numpy_and_negmine_read_the_same(
    tmp_path: Path, dtype: str, version: tuple[int, int], template: str
) -> None:
    rng = np.random.default_rng(sum(version) + len(template))
    data = rng.standard_normal((7, 5)).astype(dtype)
    header = template.format(d=dtype, r=7, c=5)
    path = write(tmp_path / "x.npy", npy(header, data.tobytes(), version))
    ours = np.asarray(open_embeddings(path))
    theirs = np.load(path)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, data)


@st.composite
def npy_headers(draw: st.DrawFn) -> tuple[str, tuple[int, ...], str, tuple[int, int]]:
    """Header dicts as numpy or a person might write them, valid for numpy or not."""
    descr = draw(st.sampled_from(["<f4", "<f2", ">f4", "<f8", "<i4", "=f4", "|u1"]))
    fortran = draw(st.sampled_from(["False", "True"]))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    comma = "," if len(shape) == 1 or (shape and draw(st.booleans())) else ""
    shape_text = "(" + ", ".join(map(str, shape)) + comma + ")"
    quote = draw(st.sampled_from(["'", '"']))
    space = draw(st.sampled_from(["", " ", "  ", "\n"]))
    items = [
        f"{quote}descr{quote}:{space}{quote}{descr}{quote}",
        f"{quote}fortran_order{quote}:{space}{fortran}",
        f"{quote}shape{quote}:{space}{shape_text}",
    ]
    order = draw(st.permutations(items))
    header = "{" + ("," + space).join(order) + ("," if draw(st.booleans()) else "") + "}"
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0)]))
    return header, shape, descr, version


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=npy_headers())
def test_differential_against_np_load(tmp_path: Path, case: tuple) -> None:
    """Whatever negmine accepts numpy reads identically; whatever numpy refuses negmine refuses."""
    header, shape, descr, version = case
    itemsize = int(descr[-1])
    data = bytes(range(256)) * (int(np.prod(shape)) * itemsize // 256 + 1)
    data = data[: int(np.prod(shape)) * itemsize]
    path = write(tmp_path / "h.npy", npy(header, data, version))
    try:
        theirs = np.load(path)
    except ValueError:
        theirs = None
    try:
        ours = np.asarray(open_embeddings(path))
    except FormatError:
        ours = None
    if ours is not None:
        assert theirs is not None, header
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)
    if theirs is None:
        assert ours is None, header


@pytest.mark.parametrize(
    "header",
    [
        "['<f4', False, (3, 4)]",
        "{'descr': '<f4', 'shape': (3, 4)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'extra': 1}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': [3, 4]}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': tuple([3, 4])}",
        "{'descr': '|O', 'fortran_order': False, 'shape': (3, 4)}",
    ],
)
def test_headers_numpy_refuses_are_refused(tmp_path: Path, header: str) -> None:
    path = write(tmp_path / "x.npy", npy(header, b"\0" * 48))
    with pytest.raises(ValueError):
        np.load(path)
    with pytest.raises(FormatError):
        open_embeddings(path)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(3, 4), (1, 1), (0, 5), (123, 7), (10**6 + 1, 1)])
def test_saved_files_are_what_np_save_writes(
    tmp_path: Path, dtype: type, shape: tuple[int, int]
) -> None:
    data = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    ours, theirs = tmp_path / "ours.npy", tmp_path / "theirs.npy"
    save_embeddings(ours, data)
    np.save(theirs, data)
    assert ours.read_bytes() == theirs.read_bytes()
    np.testing.assert_array_equal(np.load(ours), data)


# --- save_embeddings inputs ------------------------------------------------------------------


def test_save_converts_layouts_and_byte_order(tmp_path: Path) -> None:
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    path = tmp_path / "x.npy"
    for array in [base.T, base[::2, ::3], base[::-1], np.asfortranarray(base), base.astype(">f4")]:
        save_embeddings(path, array)
        np.testing.assert_array_equal(np.load(path), array)
        assert np.load(path).dtype == np.float32


def test_save_refuses_other_dtypes_unless_asked_to_cast(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    for array in [np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2), "U2")]:
        with pytest.raises(InvalidTypeError, match=str(array.dtype)):
            save_embeddings(path, array)
        with pytest.raises(TypeError):
            save_embeddings(path, array)
    save_embeddings(path, np.full((2, 2), 0.5), dtype="float16")
    assert np.load(path).dtype == np.float16
    save_embeddings(path, [[1, 2], [3, 4]], dtype=np.float32)
    np.testing.assert_array_equal(np.load(path), [[1, 2], [3, 4]])
    with pytest.raises(InvalidTypeError, match="float64"):
        save_embeddings(path, np.zeros((2, 2)), dtype=np.float64)
    with pytest.raises(InvalidTypeError, match="complex"):
        save_embeddings(path, np.zeros((2, 2), np.complex64), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"2-D.*reshape"):
        save_embeddings(path, np.zeros(4, np.float32))
    assert only_entry(tmp_path) == ["x.npy"]


def test_save_an_embeddings_object(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.npy", tmp_path / "b.npy"
    data = np.arange(12, dtype=np.float16).reshape(3, 4)
    np.save(src, data)
    save_embeddings(dst, open_embeddings(src))
    assert dst.read_bytes() == src.read_bytes()
    save_embeddings(dst, open_embeddings(src), dtype=np.float32)
    np.testing.assert_array_equal(np.load(dst), data.astype(np.float32))


# --- 12. input truncated while mapped --------------------------------------------------------


def test_truncate_while_mapped_is_sigbus_documented(tmp_path: Path) -> None:
    # Documented behaviour: a mapped file that shrinks under us kills the process with SIGBUS
    # when a vanished page is read (as with any memory map). Shown in a child process.
    path = tmp_path / "x.npy"
    np.save(path, np.ones((64, 1024), dtype=np.float32))
    result = run_python(
        """
        import os, sys
        import numpy as np
        from negmine.store import open_embeddings
        view = np.asarray(open_embeddings(sys.argv[1]))
        os.truncate(sys.argv[1], 128)
        print(float(view[-1].sum()))
        """,
        str(path),
    )
    assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr)


def test_truncate_after_read_into_memory_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    data = np.random.default_rng(1).standard_normal((64, 1024)).astype(np.float32)
    np.save(path, data)
    emb = open_embeddings(path, mmap=False)
    os.truncate(path, 128)
    np.testing.assert_array_equal(np.asarray(emb), data)
    with pytest.raises(FormatError, match="missing"):
        open_embeddings(path, mmap=False)


# --- 13. saving onto a mapped input, kill -9, file size limits -------------------------------


def test_save_onto_a_mapped_input(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    old = np.arange(4096, dtype=np.float32).reshape(1024, 4)
    np.save(path, old)
    emb = open_embeddings(path)
    view = np.asarray(emb)
    save_embeddings(path, emb)  # output path equal to the mapped input
    np.testing.assert_array_equal(np.load(path), old)
    new = -np.ones((3, 2), dtype=np.float32)
    save_embeddings(path, new)
    np.testing.assert_array_equal(view, old)  # the map still sees the old file
    np.testing.assert_array_equal(np.asarray(open_embeddings(path)), new)
    assert only_entry(tmp_path) == ["x.npy"]


def test_kill_9_mid_write_leaves_old_or_new_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    rows, dim = 16_384, 512  # 32 MiB per write
    save_embeddings(path, np.zeros((1, dim), dtype=np.float32))
    writer = textwrap.dedent(
        """
        import sys
        import numpy as np
        from negmine.store import save_embeddings
        rows, dim = int(sys.argv[2]), int(sys.argv[3])
        versions = [np.full((rows, dim), v, dtype=np.float32) for v in (1, 2)]
        print("ready", flush=True)
        i = 0
        while True:
            save_embeddings(sys.argv[1], versions[i % 2])
            i += 1
        """
    )
    rng = np.random.default_rng()
    for delay in [0.0, *rng.uniform(0.01, 0.3, size=3)]:
        child = subprocess.Popen(
            [sys.executable, "-c", writer, str(path), str(rows), str(dim)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        time.sleep(delay)
        child.kill()
        child.wait()
        child.stdout.close()
        data = np.load(path)
        assert data.shape in [(1, dim), (rows, dim)]
        assert len(np.unique(data)) == 1
        # A kill between linking the temp file and renaming it leaves it, under the temp name
        # that the next save sweeps.
        left = [n for n in only_entry(tmp_path) if n != "x.npy"]
        assert all(re.fullmatch(r"\.x\.npy\.[0-9a-f]{12}\.tmp", n) for n in left), left
        save_embeddings(path, data[:1])
        assert only_entry(tmp_path) == ["x.npy"]


def test_file_size_limit_leaves_destination_untouched(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    old = np.ones((4, 4), dtype=np.float32)
    np.save(path, old)
    before = path.read_bytes()
    result = run_python(
        """
        import resource, signal, sys
        import numpy as np
        from negmine.store import save_embeddings
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        try:
            save_embeddings(sys.argv[1], np.zeros((1024, 1024), dtype=np.float32))
        except OSError as e:
            print(type(e).__name__, e.errno)
        """,
        str(path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OSError", str(27)]  # EFBIG: File too large
    assert path.read_bytes() == before
    assert only_entry(tmp_path) == ["x.npy"]


# --- 14. missing or read-only output directory -----------------------------------------------


def test_missing_output_directory(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "x.npy"
    with pytest.raises(FileNotFoundError):
        save_embeddings(target, np.zeros((2, 2), dtype=np.float32))
    assert only_entry(tmp_path) == []


def test_output_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        save_embeddings(tmp_path / "d", np.zeros((2, 2), dtype=np.float32))
    assert only_entry(tmp_path / "d") == []


def test_read_only_output_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(PermissionError):
                save_embeddings(directory / "x.npy", np.zeros((2, 2), dtype=np.float32))
        else:
            # root ignores directory permissions; drop that capability in a child process.
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
            code = textwrap.dedent(
                """
                import sys
                import numpy as np
                from negmine.store import save_embeddings
                try:
                    save_embeddings(sys.argv[1], np.zeros((2, 2), dtype=np.float32))
                except PermissionError as e:
                    print("PermissionError", e.errno)
                """
            )
            result = subprocess.run(
                [
                    setpriv,
                    "--bounding-set=-dac_override,-dac_read_search",
                    sys.executable,
                    "-c",
                    code,
                    str(directory / "x.npy"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if "setpriv" in result.stderr:
                pytest.skip(f"setpriv cannot drop capabilities here: {result.stderr.strip()}")
            assert result.stdout.split() == ["PermissionError", "13"], result.stderr
        assert only_entry(directory) == []
    finally:
        directory.chmod(0o755)


def test_bad_paths_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="NUL"):
        open_embeddings(str(tmp_path / "a\0b.npy"))
    with pytest.raises(InvalidArgumentError, match="NUL"):
        save_embeddings(str(tmp_path / "a\0b.npy"), np.zeros((1, 1), dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="does not name a file"):
        save_embeddings("", np.zeros((1, 1), dtype=np.float32))
    assert only_entry(tmp_path) == []


@settings(max_examples=60, deadline=None)
@given(exponent=st.floats(-12, 4), seed=st.integers(0, 2**32 - 1))
def test_float16_cast_never_changes_a_row_silently(exponent: float, seed: int) -> None:
    """Rows at any magnitude, down to where float16 flushes them to zero: a float16 copy is
    written only where it keeps every row's norm to 1%; otherwise the row is named."""
    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((5, 8)) * 10.0**exponent).astype(np.float32)
    rows[rng.integers(5)] = 0.0  # a zero row is kept as it is, whatever the others
    wide = rows.astype(np.float64)
    change = np.linalg.norm(rows.astype(np.float16) - wide, axis=1)
    lossy = change > 1e-2 * np.linalg.norm(wide, axis=1)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"negmine-f16-{os.getpid()}.npy"
    try:
        if lossy.any():
            with pytest.raises(InvalidArgumentError, match="too small for float16"):
                save_embeddings(path, rows, dtype="float16")
            assert not path.exists()
        else:
            save_embeddings(path, rows, dtype="float16")
            np.testing.assert_array_equal(np.load(path), rows.astype(np.float16))
    finally:
        path.unlink(missing_ok=True)


def test_float16_flush_names_the_row(tmp_path: Path) -> None:
    rows = np.ones((3, 4), np.float32)
    rows[2] *= 1e-9
    with pytest.raises(InvalidArgumentError, match=r"embeddings row 2 has norm 2e-09.*100%"):
        save_embeddings(tmp_path / "x.npy", rows, dtype="float16")
    assert not (tmp_path / "x.npy").exists()
