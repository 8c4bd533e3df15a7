"""`negmine bench`: negmine against the search libraries installed beside it, on this machine.

Every method runs on the same data with the same thread count (numpy's and faiss' BLAS pools
capped with threadpoolctl when it is installed), the best and the median of ``--repeats`` timed
runs after one warm-up with their spread, and its result is checked against negmine's exact
one (recall@k, same order, largest difference of the k-th score). The peers are the ones
installed: faiss (``faiss.knn`` as shipped, the same in a subprocess with ``OPENBLAS_CORETYPE``
set to this CPU's best OpenBLAS core, since faiss-cpu's bundled OpenBLAS takes some CPUs for
a "Prescott", and its int8 ``IndexScalarQuantizer``), numpy (matmul + argpartition), torch
(mm + topk) and hnswlib (an approximate graph index); each row names the BLAS library and
kernels it ran. With sentence-transformers installed, a second table times mining: negmine's
``mine`` against its ``mine_hard_negatives`` (faiss path) on the same embeddings, injected
through its embedding cache. The report names the CPU and negmine's kernels, and warns when
``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` make OpenBLAS run other kernels than users get.

The same functions run the project's official comparison (``benches/compare.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from negmine import _core
from negmine._atomic import atomic_write
from negmine._paths import regular_file
from negmine.errors import InvalidArgumentError

Result = tuple[np.ndarray, np.ndarray]  # (scores f32[Q,k], ids i64[Q,k])

PEERS = {"faiss": "faiss-cpu", "numpy": "numpy", "torch": "torch", "hnswlib": "hnswlib"}
"""The peers, by import name, with the pip package that provides each."""
SKIPPABLE = (*PEERS, "faiss-core", "st")
"""What ``--skip`` takes: a peer, faiss with ``OPENBLAS_CORETYPE`` set (``faiss-core``), the
mining table against sentence-transformers (``st``)."""
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GIB = 1 << 30

# Generated data at a size where the search decides (79 GFLOP: 0.6-1.3 s per exact run on two
# cores), not the fixed costs of a call (at 1,000 x 20,000 they decided: 0.1 s runs), and that
# takes about a minute of two cores with every peer installed.
DEFAULT_QUERIES, DEFAULT_CORPUS, DEFAULT_DIM, DEFAULT_K = 2_048, 50_000, 384, 100
DEFAULT_REPEATS = 5
MIN_RUNS = 3  # `negmine bench`'s timed runs of a cell before its budget may stop it
NUMPY_CHUNK = TORCH_CHUNK = 1024  # queries per matmul: one Q x N score block would not fit
# ef_construction 100, not hnswlib's usual 200: at the default size the build took 25 s of the
# minute; the note under the row says which.
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100
CELL_BUDGET = 45.0  # seconds of timed runs after which a cell stops repeating
BENCH_CELL_BUDGET = 5.0  # the same for `negmine bench`, which must stay near a minute
MINE_NEGATIVES, MINE_RELATIVE_MARGIN = 5, 0.05  # the mining table's setting (NV-Retriever's)
ST_MODEL_NAME = "negmine-bench/injected"


# --------------------------------------------------------------------------- data

GEN_CHUNK = 65536
"""Rows per generator chunk. Each chunk has its own seeded stream, so row i of the corpus is
the same whatever N is: a smaller corpus is a prefix of a larger one of the same seed."""


def generate_rows(seed: int, start: int, stop: int, dim: int) -> np.ndarray:
    """Unit-norm Gaussian rows ``start..stop`` of the corpus for ``seed`` (float32)."""
    out = np.empty((stop - start, dim), dtype=np.float32)
    for chunk in range(start // GEN_CHUNK, math.ceil(stop / GEN_CHUNK)):
        lo, hi = chunk * GEN_CHUNK, (chunk + 1) * GEN_CHUNK
        rng = np.random.default_rng([seed, 0, chunk])
        block = rng.standard_normal((GEN_CHUNK, dim), dtype=np.float32)
        a, b = max(lo, start), min(hi, stop)
        out[a - start : b - start] = block[a - lo : b - lo]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def generate_queries(seed: int, rows: int, dim: int) -> np.ndarray:
    """Unit-norm Gaussian queries for ``seed`` (float32), independent of the corpus rows."""
    rng = np.random.default_rng([seed, 1])
    out = rng.standard_normal((rows, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


# --------------------------------------------------------------------------- environment


def blas_env_warning(rerun: str) -> list[str]:
    """The ``OPENBLAS_*`` settings that make numpy/faiss run other kernels than OpenBLAS picks
    for this CPU, with a warning on stderr: the numbers would not describe them as shipped."""
    found = [f"{v}={os.environ[v]}" for v in BLAS_ENV if v in os.environ]
    if found:
        print(
            f"WARNING: {', '.join(found)} is set: numpy/faiss BLAS is not benchmarked as "
            f"shipped. Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE {rerun}",
            file=sys.stderr,
        )
    return found


def limit_threads(threads: int) -> Any:
    """Caps every BLAS/OpenMP pool in the process (numpy's and faiss' OpenBLAS, libgomp); the
    limiter to restore, or None without threadpoolctl (with a warning)."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        print(
            "WARNING: threadpoolctl missing (pip install threadpoolctl): numpy's BLAS runs with "
            "its default thread count",
            file=sys.stderr,
        )
        return None
    return threadpool_limits(limits=threads)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def import_peers(
    skip: set[str], threads: int, log: Callable[[str], None] = _stderr
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


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def negmine_kernels() -> str:
    """The instruction set negmine's kernels run on here: the fastest of ``cpu_features()``
    (``avx512vnni`` is not one: it marks the int8 pre-scoring path)."""
    return [f for f in _core.cpu_features() if f != "avx512vnni"][-1]


def machine_info(peers: dict[str, Any], env_warnings: list[str]) -> dict[str, Any]:
    """What the numbers depend on: CPU model and flags, cores, RAM, versions, kernels, BLAS."""
    cpu, flags = "unknown", set[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        cpu = platform.processor() or "unknown"
    versions = {"numpy": np.__version__, "negmine": _core.__version__}
    for name, module in peers.items():
        versions[name] = _version(PEERS[name], module)
    return {
        "cpu": cpu,
        "flags": [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni") if f in flags],
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "ram_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
        "python": platform.python_version(),
        "versions": versions,
        "cpu_features": _core.cpu_features(),
        "kernels": negmine_kernels(),
        "blas": blas_info(),
        "env_warnings": env_warnings,
    }


def machine_lines(info: dict[str, Any]) -> list[str]:
    """``machine_info`` as the markdown bullet list both reports print."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"- CPU: {info['cpu']}, {info['cores']} logical cores ({info['usable_cores']} usable), "
        f"{info['ram_gib']:.0f} GiB RAM; flags: {' '.join(info['flags']) or 'n/a'}",
        f"- Python {info['python']}; {versions}",
        f"- negmine.cpu_features(): {', '.join(info['cpu_features'])} (kernels: {info['kernels']})",
    ]
    if info["blas"]:
        lines.append(f"- BLAS: {'; '.join(info['blas'])}")
    if info["env_warnings"]:
        lines.append(f"- **WARNING: {', '.join(info['env_warnings'])} was set during this run**")
    return lines


def _version(package: str, module: Any) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "?"))


def blas_libraries() -> dict[str, dict[str, Any]]:
    """threadpoolctl's record of each BLAS library loaded in the process, by the package that
    ships it (``numpy``, ``faiss_cpu``, ``scipy``...); empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {
        Path(lib["filepath"]).parent.name.replace(".libs", ""): lib
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    }


def blas_label(lib: dict[str, Any] | None) -> str:
    """``"openblas 0.3.15, SkylakeX kernels"``: a BLAS library and the kernels it runs."""
    if lib is None:
        return "BLAS unknown (pip install threadpoolctl)"
    return f"{lib['internal_api']} {lib.get('version')}, {lib.get('architecture')} kernels"


def torch_blas(torch: Any) -> str:
    """The BLAS torch was built with and the CPU capability its kernels dispatch to
    (threadpoolctl does not see torch's statically linked MKL)."""
    shown = torch.__config__.show()
    found = next(
        (p.split("=", 1)[1] for p in shown.replace(",", " ").split() if "BLAS_INFO=" in p), "?"
    )
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "?")()
    return f"{found}, {capability} kernels"


def openblas_core(flags: set[str] | None = None) -> str | None:
    """The ``OPENBLAS_CORETYPE`` whose kernels suit this CPU: ``SkylakeX`` with AVX-512,
    ``Haswell`` with AVX2 and FMA, ``None`` otherwise (or off x86)."""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def blas_info() -> list[str]:
    """Each BLAS library loaded in the process, with the kernels OpenBLAS chose (threadpoolctl's
    ``architecture``) and its thread count; empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    out = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        owner = Path(lib["filepath"]).parent.name.replace(".libs", "")
        out.append(
            f"{owner}: {lib['internal_api']} {lib.get('version')} "
            f"({lib.get('architecture')} kernels, {lib['num_threads']} threads)"
        )
    return out


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    best: float
    runs: list[float]
    result: Any

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """The slowest run over the fastest, less 1: how much the runs disagreed."""
        return max(self.runs) / self.best - 1.0 if self.best > 0 else 0.0


def time_best(
    fn: Callable[[], Any], repeats: int, warmup: bool, budget: float, min_runs: int = 1
) -> Timing:
    """``repeats`` timed runs (after one untimed warm-up when asked), the best kept as the one
    least disturbed by other work on a shared machine, the median and spread beside it. Stops
    early once at least ``min_runs`` timed runs add up to ``budget`` seconds: a 30 s run is not
    noisy enough to need five of them."""
    if warmup:
        fn()
    runs: list[float] = []
    result = None
    wanted = max(1, repeats)
    while len(runs) < wanted and (len(runs) < min(min_runs, wanted) or sum(runs) < budget):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return Timing(min(runs), runs, result)


# --------------------------------------------------------------------------- methods


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


@dataclass
class Method:
    """One row source of the tables: ``run(k)`` returns ``(scores, ids)`` for all queries."""

    name: str
    corpus: str  # dtype of the corpus it searches: "f32" or "f16"
    run: Callable[[int], Result]
    approximate: bool = False
    note: Callable[[int], str] = lambda k: ""
    timed: Callable[[int, int, float, int], Timing] | None = None
    """Times itself elsewhere (a subprocess): ``timed(k, repeats, budget, min_runs)`` warms up,
    runs and returns the timing with the result."""


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
    out = []
    blas = blas_libraries()
    if "faiss" in peers:
        faiss = peers["faiss"]
        shipped = blas_label(blas.get("faiss_cpu"))
        out.append(
            Method(
                "faiss",
                "f32",
                lambda k: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT),
                note=lambda k: f"as shipped: {shipped}",
            )
        )
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
        if hnsw is None:
            log(f"hnswlib: building the index of {xb.shape[0]:,} rows ...")
            index, seconds = build_hnsw(peers["hnswlib"], xb, HNSW_M, HNSW_EF_CONSTRUCTION, threads)
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

        out.append(
            Method(
                "hnswlib",
                "f32",
                hnsw_run,
                approximate=True,
                note=lambda k: f"ANN, ef={hnsw_ef(k)}, {build_note}",
            )
        )
    return out


def faiss_core_method(
    xq: np.ndarray, xb: np.ndarray, threads: int, core: str, directory: Path
) -> Method:
    """``faiss.knn`` with ``OPENBLAS_CORETYPE=core``: OpenBLAS reads it when it loads, so it
    runs in a subprocess (``python -m negmine.bench faiss-child``) on copies of the data in
    ``directory`` (the caller's scratch, removed by it); the note names the kernels that
    subprocess's OpenBLAS reports."""
    np.save(directory / "xq.npy", xq)
    np.save(directory / "xb.npy", xb)
    ran: dict[str, str] = {}

    def timed(k: int, repeats: int, budget: float, min_runs: int) -> Timing:
        env = {**os.environ, "OPENBLAS_CORETYPE": core}
        argv = [str(x) for x in (directory, k, repeats, budget, min_runs, threads)]
        proc = subprocess.run(
            [sys.executable, "-m", "negmine.bench", "faiss-child", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"faiss with OPENBLAS_CORETYPE={core} failed in its subprocess: "
                f"{proc.stderr.strip()[-2000:]}"
            )
        record = json.loads((directory / "timing.json").read_text())
        ran["blas"] = record["blas"]
        result = (np.load(directory / "scores.npy"), np.load(directory / "ids.npy"))
        return Timing(min(record["runs"]), record["runs"], result)

    def run(k: int) -> Result:
        raise RuntimeError("timed in its subprocess")

    return Method(
        f"faiss {core}",
        "f32",
        run,
        note=lambda k: f"OPENBLAS_CORETYPE={core}: {ran.get('blas', '?')}",
        timed=timed,
    )


def _faiss_child(argv: Sequence[str]) -> int:
    """The subprocess of :func:`faiss_core_method`: times ``faiss.knn`` on the saved data and
    writes the result, the runs and the kernels OpenBLAS chose."""
    directory = Path(argv[0])
    k, repeats, budget, min_runs, threads = (
        int(argv[1]),
        int(argv[2]),
        float(argv[3]),
        int(argv[4]),
        int(argv[5]),
    )
    import faiss

    faiss.omp_set_num_threads(threads)
    limiter = limit_threads(threads)
    xq, xb = np.load(directory / "xq.npy"), np.load(directory / "xb.npy")
    timing = time_best(
        lambda: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT),
        repeats,
        True,
        budget,
        min_runs,
    )
    if limiter is not None:
        limiter.restore_original_limits()
    scores, ids = timing.result
    np.save(directory / "scores.npy", np.asarray(scores, np.float32))
    np.save(directory / "ids.npy", np.asarray(ids, np.int64))
    record = {"runs": timing.runs, "blas": blas_label(blas_libraries().get("faiss_cpu"))}
    (directory / "timing.json").write_text(json.dumps(record))
    return 0


# --------------------------------------------------------------------------- mining


def st_cache_hash(model_name: str, texts: Sequence[str]) -> str:
    """The name sentence-transformers 6.x gives a list's cached embeddings in
    ``mine_hard_negatives(cache_folder=...)``: ``sha256(repr((model, prompt, prompt_name,
    texts)))`` with no prompt."""
    return hashlib.sha256(repr((model_name, None, None, list(texts))).encode()).hexdigest()


class InjectedModel:
    """What ``mine_hard_negatives`` reads of a model when both embedding files come from its
    cache (cosine similarity, like all-MiniLM-L6-v2); asked to encode, it raises: encoding is
    not what is timed."""

    def __init__(self, dim: int, name: str = ST_MODEL_NAME) -> None:
        import torch
        from sentence_transformers import util

        self.device = torch.device("cpu")
        self.model_card_data = type("Card", (), {"base_model": name})()
        self.similarity = util.cos_sim
        self.similarity_pairwise = util.pairwise_cos_sim
        self._dim = dim

    def get_embedding_dimension(self) -> int:
        return self._dim

    def _encode(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mine_hard_negatives missed the injected embedding cache")

    encode = encode_query = encode_document = _encode


@dataclass
class MiningRow:
    """One row of the mining table."""

    name: str
    timing: Timing
    rows: int
    """Queries that got every negative (sentence-transformers drops the others)."""
    same: float | None
    """Of the rows both returned, the share whose negatives equal the first row's."""
    note: str


def mining_rows(
    xq: np.ndarray,
    xb: np.ndarray,
    threads: int,
    repeats: int,
    budget: float,
    min_runs: int,
    log: Callable[[str], None],
    scratch: Path,
) -> list[MiningRow]:
    """negmine's ``mine_hard_negatives`` (its sentence-transformers drop-in), sentence-
    transformers' own (faiss path) and ``negmine.mine`` on the same embeddings: each query's
    positive is its nearest corpus row, the embeddings are injected into sentence-transformers'
    cache (files named by its hash), ``MINE_NEGATIVES`` negatives, ``MINE_RELATIVE_MARGIN``,
    ``"top"``. Times include building the output ``Dataset``: the call a user makes. The cache
    files go under ``scratch`` (the caller's, removed by it)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as st_mine

    import negmine
    from negmine.search import search

    q, (n, d) = len(xq), xb.shape
    positives = search(xq, xb, 1, threads=threads)[1][:, 0]
    queries = [f"q{i}" for i in range(q)]
    corpus = [f"p{j}" for j in range(n)]
    cache = scratch / "st-cache"
    cache.mkdir()
    np.save(cache / f"query_embeddings_{st_cache_hash(ST_MODEL_NAME, queries)}.npy", xq)
    np.save(cache / f"corpus_embeddings_{st_cache_hash(ST_MODEL_NAME, corpus)}.npy", xb)
    dataset = Dataset.from_dict({"query": queries, "answer": [corpus[p] for p in positives]})
    model = InjectedModel(d)
    c_index = {t: j for j, t in enumerate(corpus)}
    q_index = {t: i for i, t in enumerate(queries)}
    options: dict[str, Any] = {
        "num_negatives": MINE_NEGATIVES,
        "relative_margin": MINE_RELATIVE_MARGIN,
        "sampling_strategy": "top",
    }

    def drop_in(fn: Callable[..., Any]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            # sentence-transformers draws faiss' query batches with tqdm even when not verbose.
            with contextlib.redirect_stderr(io.StringIO()):
                ds = fn(
                    dataset,
                    model,
                    corpus=corpus,
                    output_format="n-tuple",
                    use_faiss=True,
                    cache_folder=str(cache),
                    verbose=False,
                    **options,
                )
            ids = np.full((q, MINE_NEGATIVES), -1, np.int64)
            cols = [ds[f"negative_{j}"] for j in range(1, MINE_NEGATIVES + 1)]
            for r, anchor in enumerate(ds["query"]):
                ids[q_index[anchor]] = [c_index[col[r]] for col in cols]
            return ids

        return run

    def native() -> np.ndarray:
        return negmine.mine(
            xq, xb, positives, duplicates=None, threads=threads, **options
        ).negative_ids

    runs = [
        ("negmine mine_hard_negatives", drop_in(negmine.mine_hard_negatives), "its drop-in"),
        (
            "sentence-transformers",
            drop_in(st_mine),
            "mine_hard_negatives(use_faiss=True), faiss as shipped",
        ),
        ("negmine.mine", native, "fills every row from the whole ranking"),
    ]
    out: list[MiningRow] = []
    reference: np.ndarray | None = None
    for name, fn, note in runs:
        log(f"mining: {name} ...")
        timing = time_best(fn, repeats, True, budget, min_runs)
        ids = np.asarray(timing.result)
        timing.result = None
        full = (ids >= 0).all(axis=1)
        same = None
        if reference is not None:
            both = full & (reference >= 0).all(axis=1)
            same = float((ids[both] == reference[both]).all(axis=1).mean()) if both.any() else None
        else:
            reference = ids
        out.append(MiningRow(name, timing, int(full.sum()), same, note))
    return out


def render_mining(rows: Sequence[MiningRow], q: int, repeats: int) -> list[str]:
    """The mining table's lines."""
    if not rows:
        return []
    head = ("method", "best s", "median s", "spread", "negmine speed-up", "rows", "same")
    ref = rows[0].timing.best
    cells = [
        (
            r.name,
            f"{r.timing.best:.3f}",
            f"{r.timing.median:.3f}",
            f"{r.timing.spread:.0%}",
            f"{r.timing.best / ref:.2f}x",
            f"{r.rows:,}",
            "-" if r.same is None else f"{r.same:.4f}",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = [
        "",
        f"Mining {MINE_NEGATIVES} hard negatives for {q:,} queries (relative_margin="
        f"{MINE_RELATIVE_MARGIN}, top; each positive is the query's nearest row) on the same "
        "embeddings, injected into sentence-transformers' cache (encoding excluded); best and "
        f"median of up to {repeats} runs. 'rows': queries with every negative; 'same': rows "
        "whose negatives equal the first row's.",
        "",
        _aligned(head, widths, names=1),
    ]
    lines += [(_aligned(c[:-1], widths, names=1) + "  " + c[-1]).rstrip() for c in cells]
    return lines


# --------------------------------------------------------------------------- agreement


def recall(ids: np.ndarray, ref: np.ndarray, n: int) -> float:
    """Mean |ids ∩ ref| / k per row, in one vectorised set test (row-offset keys)."""
    offsets = np.arange(ids.shape[0], dtype=np.int64)[:, None] * n
    return float(np.isin(ids + offsets, ref + offsets).mean())


def agreement(res: Result, ref: Result, n: int) -> dict[str, float]:
    scores, ids = res
    return {
        "recall": recall(ids, ref[1], n),
        "same_order": float((ids == ref[1]).all(axis=1).mean()),
        # If sets differ only at near-ties, the k-th scores still agree to rounding error.
        "kth_score_diff": float(np.abs(scores[:, -1] - ref[0][:, -1]).max()),
    }


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    method: Method
    k: int
    timing: Timing
    agreement: dict[str, float]
    note: str
    reference_seconds: float  # the reference method's best time for this k

    @property
    def seconds(self) -> float:
        return self.timing.best


def measure(
    methods: Sequence[Method],
    ks: Sequence[int],
    repeats: int,
    n: int,
    budget: float = CELL_BUDGET,
    min_runs: int = 1,
) -> Iterator[Measurement]:
    """Times every method for every k (one warm-up per method, not per k: page-in, thread
    pools and lazy set-up happen once) and checks it against the first method's result."""
    warmed: set[int] = set()
    for k in ks:
        ref: Result | None = None
        ref_seconds = 0.0
        for i, method in enumerate(methods):
            if method.timed is not None:
                timing = method.timed(k, repeats, budget, min_runs)
            else:
                timing = time_best(
                    functools.partial(method.run, k), repeats, i not in warmed, budget, min_runs
                )
            warmed.add(i)
            res: Result = (np.asarray(timing.result[0]), np.asarray(timing.result[1]))
            timing.result = None  # the Q x k result is not kept past its check
            if ref is None:
                ref, ref_seconds = res, timing.best
            yield Measurement(
                method, k, timing, agreement(res, ref, n), method.note(k), ref_seconds
            )


# --------------------------------------------------------------------------- pytest-benchmark


def quartiles(data: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 of sorted ``data`` as pytest-benchmark computes them: the medians of the lower
    and upper halves for an even count, Tukey's hinges interpolated (Wikipedia's "method 3")
    for an odd one."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2 == 0:
        return statistics.median(data[: n // 2]), statistics.median(data[n // 2 :])
    m = n // 4
    if n % 4 == 1:
        return 0.25 * data[m - 1] + 0.75 * data[m], 0.75 * data[3 * m] + 0.25 * data[3 * m + 1]
    return 0.75 * data[m] + 0.25 * data[m + 1], 0.25 * data[3 * m + 1] + 0.75 * data[3 * m + 2]


def run_stats(runs: Sequence[float]) -> dict[str, Any]:
    """The ``stats`` of one pytest-benchmark entry from the timed runs (one iteration each),
    with that format's field meanings: quartiles, Tukey (1.5 IQR) and 1-stddev outliers."""
    data = sorted(runs)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if len(data) > 1 else 0.0
    q1, q3 = quartiles(data)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    tukey = sum(1 for x in data if x < low or x > high)
    spread = sum(1 for x in data if x < mean - stddev or x > mean + stddev)
    total = sum(data)
    return {
        "min": data[0],
        "max": data[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": len(data),
        "median": statistics.median(data),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": tukey,
        "stddev_outliers": spread,
        "outliers": f"{spread};{tukey}",
        "ld15iqr": min(x for x in data if x >= low),
        "hd15iqr": max(x for x in data if x <= high),
        "ops": len(data) / total if total else 0.0,
        "total": total,
        "data": list(runs),
        "iterations": 1,
    }


def pytest_benchmark_document(
    measurements: Sequence[Measurement],
    info: dict[str, Any],
    shape: tuple[int, int, int],
    threads: int,
    repeats: int,
    options: dict[str, Any],
    mining: Sequence[MiningRow] = (),
) -> dict[str, Any]:
    """The run in pytest-benchmark's JSON layout, so ``pytest-benchmark compare`` can show it
    and compare it with other runs (one benchmark per method and k, grouped by k; the mining
    table's rows in a group of their own)."""
    q, n, d = shape
    uname = platform.uname()
    benchmarks = []
    for m in measurements:
        name = f"{m.method.name}[{m.method.corpus}-k{m.k}]".replace(" ", "_")
        benchmarks.append(
            {
                "group": f"top-{m.k} {q}x{n}x{d}",
                "name": name,
                "fullname": f"negmine bench::{name}",
                "params": {"corpus": m.method.corpus, "k": m.k},
                "param": f"{m.method.corpus}-k{m.k}",
                "extra_info": {
                    "method": m.method.name,
                    "corpus_dtype": m.method.corpus,
                    "k": m.k,
                    "queries": q,
                    "corpus_rows": n,
                    "dim": d,
                    "threads": threads,
                    "queries_per_second": q / m.seconds,
                    "gflops": 2.0 * q * n * d / m.seconds / 1e9,
                    "negmine_speedup": m.seconds / m.reference_seconds,
                    "approximate": m.method.approximate,
                    "note": m.note,
                    **m.agreement,
                },
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter",
                    "min_rounds": repeats,
                    "max_time": CELL_BUDGET,
                    "min_time": 0,
                    "warmup": True,
                },
                "stats": run_stats(m.timing.runs),
            }
        )
    for row in mining:
        name = f"mining[{row.name}]".replace(" ", "_")
        benchmarks.append(
            {
                "group": f"mining {q}x{n}x{d}",
                "name": name,
                "fullname": f"negmine bench::{name}",
                "params": {"method": row.name},
                "param": row.name,
                "extra_info": {
                    "method": row.name,
                    "queries": q,
                    "corpus_rows": n,
                    "dim": d,
                    "threads": threads,
                    "rows_filled": row.rows,
                    "same_negatives": row.same,
                    "note": row.note,
                },
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter",
                    "min_rounds": repeats,
                    "max_time": BENCH_CELL_BUDGET,
                    "min_time": 0,
                    "warmup": True,
                },
                "stats": run_stats(row.timing.runs),
            }
        )
    return {
        "machine_info": {
            "node": uname.node,
            "processor": uname.processor,
            "machine": uname.machine,
            "python_compiler": platform.python_compiler(),
            "python_implementation": platform.python_implementation(),
            "python_implementation_version": platform.python_version(),
            "python_version": platform.python_version(),
            "python_build": list(platform.python_build()),
            "release": uname.release,
            "system": uname.system,
            "cpu": {
                "brand_raw": info["cpu"],
                "arch": uname.machine,
                "count": info["cores"],
                "flags": info["flags"],
            },
            "negmine": info,
        },
        # No source checkout to name: the installed negmine's version is what was measured.
        "commit_info": {
            "id": None,
            "time": None,
            "author_time": None,
            "dirty": False,
            "project": "negmine",
            "branch": None,
            "negmine_version": _core.__version__,
        },
        "benchmarks": benchmarks,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": _core.__version__,
        "options": options,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(document, indent=1).encode())


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    queries: np.ndarray  # f32, in memory (every method reads all of them)
    corpus: Any  # what negmine searches: an in-memory array or the mapped Embeddings
    description: str


def mem_available() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes; None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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


def open_inputs(args: argparse.Namespace) -> Inputs:
    """The queries and corpus of the run: the user's files, or seeded generated data."""
    if args.corpus is None:
        q, n, d = args.queries or DEFAULT_QUERIES, args.corpus_size, args.dim
        if max(args.k) > n:
            raise InvalidArgumentError(f"--k {max(args.k)} exceeds --corpus-size {n}")
        need, available = (q + n * 1.5) * d * 4, mem_available()  # corpus, f16 copy, queries
        if available is not None and need > 0.9 * available:
            raise InvalidArgumentError(
                f"generating {q:,} queries and {n:,} corpus rows of d = {d} needs "
                f"{need / GIB:.1f} GiB, {available / GIB:.1f} GiB available"
            )
        return Inputs(
            generate_queries(args.seed, q, d),
            generate_rows(args.seed, 0, n, d),
            f"generated unit-norm Gaussian data, seed {args.seed}",
        )
    queries = _core.open_embeddings(regular_file(args.queries_file, "queries file"))
    corpus = _core.open_embeddings(regular_file(args.corpus, "corpus file"))
    (nq, dq), (n, d) = queries.shape, corpus.shape
    if dq != d:
        raise InvalidArgumentError(
            f"dimension mismatch: the queries file {args.queries_file} has d = {dq}, "
            f"the corpus file {args.corpus} has d = {d}"
        )
    if max(args.k) > n:
        raise InvalidArgumentError(f"--k {max(args.k)} exceeds the corpus' {n:,} rows")
    used = min(nq, args.max_queries or DEFAULT_QUERIES)
    xq = np.array(queries.numpy()[:used], dtype=np.float32)
    return Inputs(
        xq,
        corpus,
        f"{args.corpus} ({corpus.dtype}, mapped), first {used:,} of {nq:,} queries "
        f"of {args.queries_file}",
    )


# --------------------------------------------------------------------------- command


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _k_list(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be k or a comma list like 10,100: {text}") from None
    if not ks or min(ks) <= 0:
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text}")
    return ks


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Adds ``negmine bench`` through the ``negmine`` command's subcommand factory
    (``command(name, help, description)``: its help format, exit codes and ``-q``)."""
    p = command(
        "bench",
        "time negmine against faiss, numpy, torch and hnswlib (those installed) here",
        "Time exact top-k search with negmine and with the peers installed "
        "(faiss, numpy, torch, hnswlib) in this process, on the same data and threads; check "
        "every result against negmine's exact one. Generated data by default "
        f"({DEFAULT_QUERIES:,} x {DEFAULT_CORPUS:,} x {DEFAULT_DIM}, about a minute on two "
        "cores), or your own with --corpus FILE.npy --queries FILE.npy.",
    )
    p.add_argument(
        "--queries",
        metavar="N|FILE",
        default=None,
        help=f"number of generated queries (default {DEFAULT_QUERIES:,}), or with --corpus a "
        "Q x d .npy queries file (write ./N for a file named by a number)",
    )
    p.add_argument(
        "--corpus",
        metavar="FILE",
        default=None,
        help="N x d .npy corpus file (float32/float16), searched by negmine as a mapped file",
    )
    p.add_argument(
        "--corpus-size",
        type=_positive_int,
        default=DEFAULT_CORPUS,
        help=f"generated corpus rows (default {DEFAULT_CORPUS:,})",
    )
    p.add_argument(
        "--dim", type=_positive_int, default=DEFAULT_DIM, help=f"generated d ({DEFAULT_DIM})"
    )
    p.add_argument(
        "--k", type=_k_list, default=[DEFAULT_K], help=f"k, or a comma list (default {DEFAULT_K})"
    )
    p.add_argument(
        "--max-queries",
        type=_positive_int,
        default=None,
        help=f"with --queries FILE: use its first rows only (default {DEFAULT_QUERIES:,})",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for every method (default: the usable cores)",
    )
    p.add_argument(
        "--repeats",
        type=_positive_int,
        default=DEFAULT_REPEATS,
        help=f"timed runs per cell, best and median kept (default {DEFAULT_REPEATS}; at least "
        f"{MIN_RUNS}, fewer than asked once a cell's runs pass {BENCH_CELL_BUDGET:g} s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help="do not run a peer (repeatable, or a comma list): "
        f"{', '.join(PEERS)}; faiss-core: faiss with OPENBLAS_CORETYPE set; st: the mining "
        "table against sentence-transformers",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write the timings as pytest-benchmark JSON (pytest-benchmark compare FILE)",
    )
    p.set_defaults(run=run)
    parser: argparse.ArgumentParser = p
    return parser


def _installed(*names: str) -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in names)
    except ValueError:  # a module set to None in sys.modules: not importable
        return False


def _usage(text: str) -> int:
    print(f"negmine bench: error: {text}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    skip = {s.strip() for item in args.skip for s in item.split(",") if s.strip()}
    if skip - set(SKIPPABLE):
        return _usage(
            f"--skip: unknown {sorted(skip - set(SKIPPABLE))}; choose from {list(SKIPPABLE)}"
        )
    args.queries_file = None
    if args.corpus is not None:
        if args.queries is None:
            return _usage("--corpus FILE needs --queries FILE")
        args.queries_file, args.queries = args.queries, None
    elif args.queries is not None:
        if not args.queries.isdigit() or int(args.queries) <= 0:
            return _usage(f"--queries {args.queries}: a file needs --corpus FILE too")
        args.queries = int(args.queries)
    if args.max_queries is not None and args.corpus is None:
        return _usage("--max-queries goes with --queries FILE; use --queries N")
    if args.json is not None and not args.json.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "--json: output directory does not exist", str(args.json.parent)
        )
    threads = args.threads or usable_cores()
    log: Callable[[str], None] = (lambda text: None) if args.quiet else _stderr
    not_run: list[str] = []  # peers missing or refused: printed under the table too

    def refuse(text: str) -> None:
        not_run.append(text)
        log(text)

    env_warnings = blas_env_warning("negmine bench ...")

    inputs = open_inputs(args)
    xq, corpus = inputs.queries, inputs.corpus
    q, (n, d) = xq.shape[0], corpus.shape
    peers = import_peers(skip, threads, refuse)
    in_ram = isinstance(corpus, np.ndarray)
    peers, load = fitting_peers(peers, q, n, d, mem_available(), refuse, in_ram)
    limiter = limit_threads(threads)  # after the imports: they may have started their pools
    # Copies for the subprocesses and sentence-transformers' cache, in the system's temp
    # directory (never beside an output), removed at the end.
    scratch = tempfile.TemporaryDirectory(prefix="negmine-bench-")
    scratch_dir = Path(scratch.name)
    try:
        methods = negmine_methods(xq, corpus, threads, f16_copy=args.corpus is None)
        xb = None
        if load:
            if in_ram:
                xb = corpus
            else:
                log(f"loading the corpus as float32 for the peers: {n * d * 4 / GIB:.2f} GiB ...")
                xb = np.array(corpus, dtype=np.float32)
            core = None if "faiss-core" in skip else openblas_core()
            methods += peer_methods(
                xq,
                xb,
                threads,
                peers,
                log=log,
                faiss_core=None if core is None else (core, scratch_dir),
            )
        cells = measure(methods, args.k, args.repeats, n, BENCH_CELL_BUDGET, MIN_RUNS)
        measurements = list(_progress(cells, methods, args))
        mining: list[MiningRow] = []
        if "st" not in skip and xb is not None:
            if _installed("sentence_transformers", "datasets", "faiss"):
                mining = mining_rows(
                    xq, xb, threads, args.repeats, BENCH_CELL_BUDGET, MIN_RUNS, log, scratch_dir
                )
            else:
                refuse(
                    "mining against sentence-transformers: not run (pip install "
                    "sentence-transformers datasets faiss-cpu)"
                )
    finally:
        scratch.cleanup()
        if limiter is not None:
            limiter.restore_original_limits()

    info = machine_info(peers, env_warnings)
    shape = (q, n, d)
    print(
        render(
            measurements, info, inputs.description, shape, threads, args.repeats, not_run, mining
        )
    )
    if args.json is not None:
        write_json(
            args.json,
            pytest_benchmark_document(
                measurements,
                info,
                (q, n, d),
                threads,
                args.repeats,
                {
                    "k": args.k,
                    "repeats": args.repeats,
                    "seed": args.seed if args.corpus is None else None,
                    "corpus_file": args.corpus,
                    "queries_file": args.queries_file,
                },
                mining,
            ),
        )
        log(f"wrote {args.json} (pytest-benchmark compare {args.json})")
    return 0


def _progress(
    cells: Iterator[Measurement], methods: Sequence[Method], args: argparse.Namespace
) -> Iterator[Measurement]:
    if args.quiet:
        yield from cells
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(methods) * len(args.k), desc="bench", unit="cell", file=sys.stderr) as bar:
        for m in cells:
            bar.write(
                f"{m.method.name} ({m.method.corpus}) k={m.k}: {m.seconds:.3f} s "
                f"(runs: {', '.join(f'{x:.3f}' for x in m.timing.runs)})",
                file=sys.stderr,
            )
            bar.update()
            yield m


def _aligned(cells: Sequence[str], widths: Sequence[int], names: int = 2) -> str:
    """Names left-aligned (the first ``names`` columns), numbers right-aligned."""
    return "  ".join(
        c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )


def render(
    measurements: Sequence[Measurement],
    info: dict[str, Any],
    description: str,
    shape: tuple[int, int, int],
    threads: int,
    repeats: int,
    not_run: Sequence[str] = (),
    mining: Sequence[MiningRow] = (),
) -> str:
    """The table of ``negmine bench``, the peers not run and why, the mining table, the
    machine it ran on."""
    q, n, d = shape
    head = (
        "method",
        "corpus",
        "k",
        "best s",
        "median s",
        "spread",
        "queries/s",
        "negmine speed-up",
        "recall@k",
    )
    rows = [
        (
            m.method.name,
            m.method.corpus,
            str(m.k),
            f"{m.seconds:.3f}",
            f"{m.timing.median:.3f}",
            f"{m.timing.spread:.0%}",
            f"{q / m.seconds:,.0f}",
            f"{m.seconds / m.reference_seconds:.2f}x",
            f"{m.agreement['recall']:.4f}",
            m.note,
        )
        for m in measurements
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [
        f"Exact top-k, {q:,} queries x {n:,} corpus rows x d = {d} ({description}), "
        f"{threads} threads for every method; the best and the median of up to {repeats} timed "
        "runs after a warm-up (at least 3; fewer past a few seconds), 'spread' = slowest / "
        "fastest - 1.",
        "'negmine speed-up' = the method's best / negmine's (2.00x: negmine takes half the "
        "time); recall@k against negmine's exact ids. Each peer's note names the BLAS kernels "
        "it ran."
        + (
            " faiss runs as shipped and, in a subprocess, with OPENBLAS_CORETYPE set for this "
            "CPU (its bundled OpenBLAS takes some CPUs for an older core)."
            if any(m.method.name.startswith("faiss ") for m in measurements)
            else ""
        ),
        "",
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))
        ),
    ]
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    lines += [f"- {text}" for text in not_run]
    lines += render_mining(mining, q, repeats)
    return "\n".join([*lines, "", *machine_lines(info)]) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["faiss-child"]:
        sys.exit(_faiss_child(sys.argv[2:]))
    sys.exit("usage: python -m negmine.bench faiss-child DIR K REPEATS BUDGET MIN_RUNS THREADS")
