"""Results larger than the machine (issue 20 item 9): every call that returns a k- or n-sized
array checks it against the memory available before any work and allocates it fallibly, so an
absurd ``k`` or row count is an ``InvalidArgumentError`` naming the result, never an abort
(SIGABRT) or the OOM killer. Each case runs in a subprocess under an address-space limit
(``RLIMIT_AS``): a regression kills the child, not the test session or the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and sparse files")

_PRELUDE = """
import os, resource
import numpy as np
import negmine

def limit(gib):
    resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))

def sparse(rows, dim):
    # A mapped .npy of zeros whose data takes no disk: the file is a hole.
    path = os.path.join(os.environ["SPARSE_DIR"], f"{rows}x{dim}.npy")
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + rows * dim * 4)
    return negmine.open_embeddings(path)

def refused(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except negmine.InvalidArgumentError as e:
        print(str(e).replace(chr(10), " "))
    else:
        print("no error")
"""


def run(script: str, tmp_path: Path, timeout: float = 120) -> list[str]:
    """Runs ``script`` after the prelude in a child (its files in ``tmp_path``); its output
    lines (one per case)."""
    child = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RUST_BACKTRACE": "0", "SPARSE_DIR": str(tmp_path)},
    )
    assert child.returncode == 0, f"rc {child.returncode}: {child.stderr[-3000:]}"
    return child.stdout.splitlines()


def test_merge_topk_and_rescore_with_an_absurd_k(tmp_path: Path) -> None:
    lines = run(
        """
        limit(8)
        scores = np.zeros((2, 3), np.float32)
        ids = np.arange(6).reshape(2, 3)
        corpus = np.ones((10, 4), np.float32)
        refused(negmine.merge_topk, [(scores, ids)], 2**40)
        refused(negmine.rescore, corpus[:2], corpus, ids, k=2**40)
        """,
        tmp_path,
    )
    assert "merged result of 2 rows x k = 1099511627776" in lines[0], lines
    assert "rescored result of 2 queries x k = 1099511627776" in lines[1], lines


def test_a_search_of_20m_mapped_queries_is_refused_before_the_scan(tmp_path: Path) -> None:
    # 20M queries x k = 2^20 (about 250 TB): refused at once on every path, not after hours
    # of scanning (f32) or by an abort (int8 allocated it unchecked).
    lines = run(
        """
        limit(4)
        queries, corpus = sparse(20_000_000, 4), sparse(1 << 20, 4)
        for precision in ("f32", "int8", "auto"):
            refused(negmine.search, queries, corpus, 1 << 20, precision=precision)
        """,
        tmp_path,
    )
    assert len(lines) == 3, lines
    for line in lines:
        assert "search result of 20000000 queries x k = 1048576" in line, lines


def test_a_result_beyond_the_address_space_limit_is_an_error(tmp_path: Path) -> None:
    # 4M queries x k = 100 (4.8 GB) under a 2 GiB address-space limit: the memory available
    # may hold it, the allocation cannot (an error either way, naming the result).
    lines = run(
        """
        limit(2)
        queries = sparse(4_000_000, 4)
        corpus = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32)
        for precision in ("f32", "int8"):
            refused(negmine.search, queries, corpus, 100, precision=precision)
        """,
        tmp_path,
    )
    assert len(lines) == 2, lines
    for line in lines:
        assert "search result of 4000000 queries x k = 100" in line, lines


def test_kmeans_into_more_clusters_than_memory_holds(tmp_path: Path) -> None:
    # 2^31 - 1 mapped rows of dimension 1024 (8 TiB, all a hole) into 2^30 clusters (about
    # 17 TB of centroids): refused before the rows are read.
    lines = run(
        """
        data = sparse(2**31 - 1, 1024)
        refused(negmine.kmeans, data, 2**30, iterations=1)
        """,
        tmp_path,
        timeout=60,
    )
    assert "k-means of 2147483647 rows of dimension 1024 into 1073741824 clusters" in lines[0]


@pytest.mark.parametrize("backend", ["torch", "hnsw"])
def test_the_python_backends_check_their_result_too(tmp_path: Path, backend: str) -> None:
    # As above, for the backends whose result arrays Python allocates (torch, hnswlib; Ray's
    # merge uses the same allocator): 4M queries x k = 100 (4.8 GB) with 3 GiB of address
    # space to spare is refused naming the result (before: a bare MemoryError, or, without
    # the limit, pages the OOM killer would find).
    pytest.importorskip("torch" if backend == "torch" else "hnswlib")
    lines = run(
        f"""
        import resource
        import negmine.ann, negmine.torch.candidates  # their libraries mapped before the limit
        rng = np.random.default_rng(0)
        queries = rng.standard_normal((4_000_000, 4)).astype(np.float32)
        corpus = rng.standard_normal((1000, 4)).astype(np.float32)
        if {backend!r} == "hnsw":
            index = negmine.ann.build_index(corpus, negmine.ann.HnswParams(metric="cosine"))
            call = lambda: negmine.ann.knn(index, queries, 100, ef=100)
        else:
            call = lambda: negmine.search(queries, corpus, 100, backend="torch")
        with open("/proc/self/status") as f:
            size = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) << 10
        resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 30), size + (3 << 30)))
        refused(call)
        """,
        tmp_path,
    )
    assert len(lines) == 1 and "the search result (4000000 x 100)" in lines[0], lines
