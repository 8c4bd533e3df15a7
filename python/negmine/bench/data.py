"""The queries and corpus a bench runs on: seeded generated data (the same rows for every size
and every script), or the user's own ``.npy`` files."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from negmine import _core
from negmine._paths import regular_file
from negmine.bench.settings import DEFAULT_QUERIES, GIB
from negmine.errors import InvalidArgumentError

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
