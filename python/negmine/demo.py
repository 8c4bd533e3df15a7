"""`negmine demo`: a self-contained run on generated embeddings that shows what negmine finds
and how fast, next to a numpy brute-force check."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from negmine import _core
from negmine.search import search


@dataclass(frozen=True)
class DemoConfig:
    corpus_size: int = 100_000
    queries: int = 2_000
    dim: int = 384
    clusters: int = 200
    k: int = 10
    seed: int = 0
    threads: int | None = None


def clustered_embeddings(cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors around ``clusters`` topics; each query is a noisy copy of one corpus row
    (its positive), so the right answer is known."""
    rng = np.random.default_rng(cfg.seed)
    centers = rng.standard_normal((cfg.clusters, cfg.dim), dtype=np.float32)
    topic = rng.integers(0, cfg.clusters, cfg.corpus_size)
    noise = rng.standard_normal((cfg.corpus_size, cfg.dim), dtype=np.float32)
    corpus = centers[topic] + 0.9 * noise
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives = rng.choice(cfg.corpus_size, cfg.queries, replace=False)
    queries = corpus[positives] + 0.06 * rng.standard_normal(
        (cfg.queries, cfg.dim), dtype=np.float32
    )
    return queries.astype(np.float32), corpus.astype(np.float32), positives


def numpy_top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ corpus.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def run(cfg: DemoConfig) -> None:
    print(f"negmine {_core.__version__} demo  (kernels: {', '.join(_core.cpu_features())})")
    print(
        f"generating {cfg.corpus_size:,} corpus x {cfg.queries:,} queries x d={cfg.dim} "
        f"in {cfg.clusters} topics (seed {cfg.seed})"
    )
    queries, corpus, positives = clustered_embeddings(cfg)

    start = time.perf_counter()
    scores, ids = search(
        queries, corpus, cfg.k, metric="cosine", threads=cfg.threads, progress=True
    )
    negmine_s = time.perf_counter() - start
    flop = 2.0 * cfg.queries * cfg.corpus_size * cfg.dim

    start = time.perf_counter()
    reference = numpy_top_k(queries, corpus, cfg.k)
    numpy_s = time.perf_counter() - start

    found = (ids[:, 0] == positives).mean()
    agree = np.mean([len(set(a) & set(b)) / cfg.k for a, b in zip(ids, reference)])
    print()
    gflops = flop / negmine_s / 1e9
    print(f"exact top-{cfg.k} cosine search: {negmine_s:.2f} s ({gflops:.0f} GFLOP/s)")
    print(f"numpy matmul + argpartition:    {numpy_s:.2f} s -> negmine {numpy_s / negmine_s:.1f}x")
    print(f"agreement with numpy: {agree:.4f}   positive ranked first: {found:.1%}")
    print()
    print("query 0: its positive and the hardest candidates after it (future hard negatives):")
    for rank, (doc, score) in enumerate(zip(ids[0], scores[0])):
        tag = "  <- positive" if doc == positives[0] else ""
        print(f"  #{rank + 1:<2} corpus[{doc:>6}]  cosine {score:.4f}{tag}")
