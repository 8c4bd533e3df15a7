"""The methods the bench times: negmine's own rows and the peers' (faiss, numpy, torch,
hnswlib), which peers are installed, and which fit in memory beside the corpus."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from negmine.bench.faiss_core import faiss_core_method
from negmine.bench.machine import blas_label, blas_libraries, negmine_kernels, torch_blas
from negmine.bench.settings import (
    GIB,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    NUMPY_CHUNK,
    PEERS,
    TORCH_CHUNK,
    stderr_log,
)
from negmine.bench.timing import Method, Result


def import_peers(
    skip: set[str], threads: int, log: Callable[[str], None] = stderr_log
) -> dict[str, Any]:
    """The installed peers not in ``skip``, by import name, set to ``threads`` threads; a
    missing one is named to ``log`` with its pip package."""
    peers: dict[str, Any] = {}
    for name, package in PEERS.items():
        if name in skip:
            continue
        try:
            peers[name] = importlib.import_module(name)
        except ImportError:
            log(f"{name}: not installed, not run (pip install {package})")
    if "faiss" in peers:
        peers["faiss"].omp_set_num_threads(threads)
    if "torch" in peers:
        peers["torch"].set_num_threads(threads)
    return peers


def numpy_topk(xq: np.ndarray, xb: np.ndarray, k: int, chunk: int = NUMPY_CHUNK) -> Result:
    """Matmul per query chunk into one reused buffer, argpartition, then an exact sort."""
    q, n = xq.shape[0], xb.shape[0]
    scores = np.empty((q, k), dtype=np.float32)
    ids = np.empty((q, k), dtype=np.int64)
    # One buffer for every chunk: a fresh 800 MB array per chunk would add page faults that
    # are not numpy's compute cost.
    buf = np.empty((min(chunk, q), n), dtype=np.float32)
    for s in range(0, q, chunk):
        e = min(q, s + chunk)
        block = buf[: e - s]
        np.matmul(xq[s:e], xb.T, out=block)
        part = np.argpartition(block, n - k, axis=1)[:, n - k :]
        vals = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)  # score desc, then smaller id
        scores[s:e] = np.take_along_axis(vals, order, axis=1)
        ids[s:e] = np.take_along_axis(part, order, axis=1)
    return scores, ids


def make_torch_topk(
    torch: Any, xb: np.ndarray, chunk: int = TORCH_CHUNK
) -> Callable[[np.ndarray, int], Result]:
    """``torch.mm`` per query chunk into one reused buffer + ``torch.topk``."""
    tb = torch.from_numpy(xb)  # shares memory; mm reads it transposed without a copy

    def run(xq: np.ndarray, k: int) -> Result:
        q = xq.shape[0]
        tq = torch.from_numpy(xq)
        buf = torch.empty((min(chunk, q), xb.shape[0]), dtype=torch.float32)
        scores = np.empty((q, k), dtype=np.float32)
        ids = np.empty((q, k), dtype=np.int64)
        with torch.inference_mode():
            for s in range(0, q, chunk):
                e = min(q, s + chunk)
                block = buf[: e - s]
                torch.mm(tq[s:e], tb.T, out=block)
                v, i = torch.topk(block, k, dim=1, largest=True, sorted=True)
                scores[s:e], ids[s:e] = v.numpy(), i.numpy()
        return scores, ids

    return run


def faiss_sq8(faiss: Any, xb: np.ndarray, threads: int) -> Callable[[np.ndarray, int], Result]:
    """faiss' int8 flat index (``IndexScalarQuantizer`` QT_8bit): the same int8 pre-scores as
    negmine's, but approximate (no rescoring), so its recall is reported."""
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexScalarQuantizer(
        xb.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.train(xb)
    index.add(xb)

    def run(xq: np.ndarray, k: int) -> Result:
        scores, ids = index.search(xq, k)
        return scores.astype(np.float32), ids.astype(np.int64)

    return run


def build_hnsw(
    hnswlib: Any, xb: np.ndarray, m: int, ef_construction: int, threads: int
) -> tuple[Any, float]:
    """An hnswlib inner-product index of ``xb`` (seeded), with its build seconds."""
    n, d = xb.shape
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, M=m, ef_construction=ef_construction, random_seed=0)
    t0 = time.perf_counter()
    index.add_items(xb, np.arange(n), num_threads=threads)
    return index, time.perf_counter() - t0


def hnsw_ef(k: int) -> int:
    """hnswlib's search breadth for ``k`` neighbours: 2k, at least 64."""
    return max(2 * k, 64)


def negmine_methods(
    xq: np.ndarray,
    corpus: Any,
    threads: int,
    precisions: Sequence[str] = ("auto",),
    f16_copy: bool = False,
) -> list[Method]:
    """negmine's rows over ``corpus`` (an array or ``Embeddings``): the first precision (the
    reference the other rows are checked against), with ``f16_copy`` the same over an f16
    copy of an in-memory f32 corpus, then the other precisions. The note names the kernels
    and the path the precision took."""
    from negmine.search import search

    dtype = "f16" if np.dtype(corpus.dtype) == np.float16 else "f32"
    kernels = negmine_kernels()
    runs = [(corpus, dtype, precisions[0])]
    if f16_copy and dtype == "f32":
        runs.append((np.asarray(corpus).astype(np.float16), "f16", precisions[0]))
    runs += [(corpus, dtype, p) for p in precisions[1:]]
    out = []
    for data, name, precision in runs:
        path: dict[int, str] = {}

        def run(k: int, data: Any = data, precision: str = precision, path: Any = path) -> Result:
            scores, ids, stats = search(
                xq,
                data,
                k,
                threads=threads,
                precision=precision,  # type: ignore[arg-type]
                return_stats=True,
            )
            path[k] = stats.precision
            return scores, ids

        def note(k: int, path: dict[int, str] = path) -> str:
            return f"{kernels} kernels, {path.get(k, '?')} scoring"

        label = "negmine" if precision in ("auto", "f32") else f"negmine {precision}"
        out.append(Method(label, name, run, note=note))
    return out


def peer_methods(
    xq: np.ndarray,
    xb: np.ndarray,
    threads: int,
    peers: dict[str, Any],
    hnsw: tuple[Any, str] | None = None,
    numpy_chunk: int = NUMPY_CHUNK,
    torch_chunk: int = TORCH_CHUNK,
    log: Callable[[str], None] = lambda text: None,
    faiss_core: tuple[str, Path] | None = None,
) -> list[Method]:
    """The installed peers' rows over the in-memory f32 corpus ``xb``, each noting the BLAS
    kernels it ran. ``faiss_core``: ``(core, scratch directory)``, also faiss with
    ``OPENBLAS_CORETYPE`` set to that core, in a subprocess. ``hnsw`` is a prebuilt hnswlib
    index and the note on its build; without it one is built here (M = 16, ef_construction =
    100) and its build time noted."""
    out: list[Method] = []
    blas = blas_libraries()
    if "faiss" in peers:
        shipped = blas.get("faiss_cpu")
        out += _faiss_methods(peers["faiss"], xq, xb, threads, shipped, log, faiss_core)
    if "numpy" in peers:
        numpy_blas = blas_label(blas.get("numpy"))
        out.append(
            Method(
                "numpy",
                "f32",
                lambda k: numpy_topk(xq, xb, k, numpy_chunk),
                note=lambda k: numpy_blas,
            )
        )
    if "torch" in peers:
        torch_run = make_torch_topk(peers["torch"], xb, torch_chunk)
        torch_kernels = torch_blas(peers["torch"])
        out.append(Method("torch", "f32", lambda k: torch_run(xq, k), note=lambda k: torch_kernels))
    if "hnswlib" in peers:
        out.append(_hnsw_method(peers["hnswlib"], xq, xb, threads, hnsw, log))
    return out


def _faiss_methods(
    faiss: Any,
    xq: np.ndarray,
    xb: np.ndarray,
    threads: int,
    blas: dict[str, Any] | None,
    log: Callable[[str], None],
    faiss_core: tuple[str, Path] | None,
) -> list[Method]:
    """faiss' rows: ``faiss.knn`` as shipped (``blas``: the OpenBLAS it ships), with
    ``faiss_core`` the same in a subprocess at that core, and its int8 index."""
    shipped = blas_label(blas)
    out = [
        Method(
            "faiss",
            "f32",
            lambda k: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT),
            note=lambda k: f"as shipped: {shipped}",
        )
    ]
    if faiss_core:
        out.append(faiss_core_method(xq, xb, threads, *faiss_core))
    log("faiss SQ8: training and filling the int8 index ...")
    sq8 = faiss_sq8(faiss, xb, threads)
    out.append(
        Method(
            "faiss SQ8",
            "f32",
            lambda k: sq8(xq, k),
            approximate=True,
            note=lambda k: "int8 codes, approximate",
        )
    )
    return out


def _hnsw_method(
    hnswlib: Any,
    xq: np.ndarray,
    xb: np.ndarray,
    threads: int,
    hnsw: tuple[Any, str] | None,
    log: Callable[[str], None],
) -> Method:
    """hnswlib's row over the prebuilt ``hnsw`` (index, note on its build), or over an index
    built here with its build time noted."""
    if hnsw is None:
        log(f"hnswlib: building the index of {xb.shape[0]:,} rows ...")
        index, seconds = build_hnsw(hnswlib, xb, HNSW_M, HNSW_EF_CONSTRUCTION, threads)
        hnsw = (
            index,
            f"build {seconds:.1f} s, M={HNSW_M}, ef_construction={HNSW_EF_CONSTRUCTION}",
        )
    index, build_note = hnsw
    index.set_num_threads(threads)

    def hnsw_run(k: int) -> Result:
        index.set_ef(hnsw_ef(k))
        labels, dist = index.knn_query(xq, k=k, num_threads=threads)
        return (1.0 - dist).astype(np.float32), labels.astype(np.int64)

    return Method(
        "hnswlib",
        "f32",
        hnsw_run,
        approximate=True,
        note=lambda k: f"ANN, ef={hnsw_ef(k)}, {build_note}",
    )


def peer_memory(name: str, q: int, n: int, d: int) -> int:
    """Bytes a peer holds beyond the shared f32 corpus (estimates of its big buffers)."""
    chunk = min(q, NUMPY_CHUNK)
    return {
        "numpy": chunk * n * (4 + 8),  # the score block and argpartition's int64 indices
        "torch": chunk * n * 4,
        "faiss": n * d,  # the SQ8 index (knn itself scores in small blocks)
        "hnswlib": n * (4 * d + 8 * HNSW_M + 64),  # its own copy of the vectors + the graph
    }[name]


def fitting_peers(
    peers: dict[str, Any],
    q: int,
    n: int,
    d: int,
    available: int | None,
    log: Callable[[str], None],
    corpus_in_ram: bool = False,
) -> tuple[dict[str, Any], bool]:
    """The peers that fit in 90 % of ``available`` bytes next to the f32 copy of the corpus they
    all need (already counted in ``available`` when ``corpus_in_ram``), and whether that copy
    fits at all; each refused one is named with its need."""
    if available is None or not peers:
        return peers, bool(peers)
    base = n * d * 4
    load = 0 if corpus_in_ram else base
    budget = 0.9 * available
    if load > budget:
        log(
            f"the peers need the corpus in RAM as float32: {base / GIB:.1f} GiB, "
            f"{available / GIB:.1f} GiB available: not run ({', '.join(peers)})"
        )
        return {}, False
    kept = {}
    for name, module in peers.items():
        need = peer_memory(name, q, n, d)
        if load + need > budget:
            log(
                f"{name}: not run: needs {(load + need) / GIB:.1f} GiB (the f32 corpus "
                f"{load / GIB:.1f} GiB + {need / GIB:.1f} GiB of its own), "
                f"{available / GIB:.1f} GiB available"
            )
        else:
            kept[name] = module
    return kept, bool(kept)
