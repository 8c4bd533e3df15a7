"""Streaming search over an on-disk ``.npy`` corpus, with peak-memory sampling.

Run as a script it measures ONE search in this (fresh) process, so the memory baseline holds
only the interpreter, numpy, negmine and the queries; ``compare.py`` starts it once per corpus
size for exactly that reason. The module also writes the data files the other bench scripts
share, from the seeded generator of ``negmine.bench`` (the one ``negmine bench`` uses), so every
script sees bit-identical data for the same seed.

    python benches/streaming.py --corpus bench-data/corpus-s0-2000000x768-f16.npy \\
        --queries bench-data/queries-s0-4096x768-f32.npy --query-rows 1024 --k 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from negmine.bench import GEN_CHUNK, generate_queries, generate_rows

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO / "bench-data"

STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile")


# --------------------------------------------------------------------------- data


def _write_npy_atomic(path: Path, rows: int, dim: int, dtype: type, fill: Any) -> None:
    """Writes ``rows x dim`` through a memmap in chunks (a 6 GB file needs no 6 GB of RAM); the
    temp name + rename means an interrupted run never leaves a truncated file to be reused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(rows, dim))
    for start in range(0, rows, GEN_CHUNK):
        stop = min(rows, start + GEN_CHUNK)
        out[start:stop] = fill(start, stop)
    out.flush()
    del out
    os.replace(tmp, path)


def queries_file(data_dir: Path, seed: int, rows: int, dim: int) -> Path:
    path = data_dir / f"queries-s{seed}-{rows}x{dim}-f32.npy"
    if not path.exists():
        q = generate_queries(seed, rows, dim)
        _write_npy_atomic(path, rows, dim, np.float32, lambda a, b: q[a:b])
    return path


def corpus_file(data_dir: Path, seed: int, rows: int, dim: int, dtype: str) -> Path:
    """Path of the cached corpus file (``dtype`` "f32" or "f16"), generated on first use."""
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]
    path = data_dir / f"corpus-s{seed}-{rows}x{dim}-{dtype}.npy"
    if not path.exists():
        _write_npy_atomic(
            path, rows, dim, np_dtype, lambda a, b: generate_rows(seed, a, b, dim).astype(np_dtype)
        )
    return path


# --------------------------------------------------------------------------- memory


def read_status() -> dict[str, int]:
    """``VmRSS``/``RssAnon``/``RssFile`` of this process in bytes (Linux only)."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in STATUS_FIELDS:
                out[name] = int(value.split()[0]) * 1024
    return out


class RssSampler:
    """Polls ``/proc/self/status`` from a thread and keeps the peaks.

    The search releases the GIL, so a Python thread can sample while it runs; 5 ms is short
    enough to see per-block buffers, whose lifetime is that of a corpus block.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = read_status()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._update()
            self._stop.wait(self.interval)

    def _update(self) -> None:
        for name, value in read_status().items():
            self.peak[name] = max(self.peak.get(name, 0), value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()


# --------------------------------------------------------------------------- measurement


def open_corpus(path: Path) -> tuple[Any, str]:
    """``negmine.open_embeddings(path)``, or a read-only ``np.memmap`` while it is unavailable.

    Returns the corpus and how it was opened, so the report can mark the fallback as pending.
    """
    import negmine

    try:
        return negmine.open_embeddings(path), "open_embeddings"
    except (AttributeError, NotImplementedError, negmine.NegmineError) as exc:
        # negmine still streams a memmap (it does not copy a C-contiguous f16 array), so the
        # numbers mean something; only the open_embeddings path itself is untested.
        print(f"open_embeddings unavailable ({exc}); using np.memmap", file=sys.stderr)
        return np.load(path, mmap_mode="r"), "np.memmap (open_embeddings pending)"


def measure(
    corpus_path: Path,
    queries_path: Path,
    query_rows: int,
    k: int,
    threads: int,
    save_ids: Path | None = None,
) -> dict[str, Any]:
    """One streaming search with memory sampling; returns the numbers as a JSON-able dict."""
    import negmine

    queries = np.ascontiguousarray(np.load(queries_path)[:query_rows])
    # Shape from the .npy header, so nothing here depends on the Embeddings object's API.
    n, dim = (int(x) for x in np.load(corpus_path, mmap_mode="r").shape)
    corpus, opened_with = open_corpus(corpus_path)
    base = read_status()
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        scores, ids = negmine.search(queries, corpus, k, threads=threads)
        seconds = time.perf_counter() - t0
    if save_ids is not None:
        np.save(save_ids, ids)
    # Inputs held anyway + outputs: the part of anonymous memory that must grow with Q and k.
    floor = queries.nbytes + scores.nbytes + ids.nbytes
    return {
        "corpus": str(corpus_path),
        "file_bytes": corpus_path.stat().st_size,
        "opened_with": opened_with,
        "queries": int(queries.shape[0]),
        "n": n,
        "dim": dim,
        "k": k,
        "threads": threads,
        "seconds": seconds,
        "gflops": 2.0 * queries.shape[0] * n * dim / seconds / 1e9,
        "baseline": base,
        "peak": sampler.peak,
        "delta": {f: sampler.peak[f] - base[f] for f in STATUS_FIELDS},
        "queries_plus_results_bytes": floor,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help=".npy corpus file (f16 or f32)")
    p.add_argument("--queries", type=Path, required=True, help=".npy f32 queries file")
    p.add_argument("--query-rows", type=int, default=1024, help="first rows of --queries to use")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-ids", type=Path, help="write the result ids here (.npy)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args(argv)
    if not Path("/proc/self/status").exists():
        sys.exit("streaming.py needs Linux /proc/self/status")
    result = measure(
        args.corpus, args.queries, args.query_rows, args.k, args.threads, args.save_ids
    )
    if args.json:
        print(json.dumps(result))
        return
    mib = 1 << 20
    print(
        f"{result['n']} x {result['dim']} ({result['opened_with']}), {result['queries']} queries, "
        f"k={result['k']}: {result['seconds']:.2f} s, {result['gflops']:.1f} GFLOP/s"
    )
    for field in STATUS_FIELDS:
        print(
            f"  {field}: peak {result['peak'][field] / mib:8.1f} MiB, "
            f"+{result['delta'][field] / mib:8.1f} MiB over baseline"
        )


if __name__ == "__main__":
    main()
