"""``negmine.mine(relative_margin=...)`` against one ``negmine.search(k=100)`` on clustered data
with weak positives (a random row of the corpus per query): the margin removes thousands of
candidates per query, which the one-pass capped search counts without re-searching.

    python benches/capped_mine.py [N_CORPUS]     # default 100 000 x 2 000 queries x 128

Prints both times, their ratio and a digest of every output array and the report (equal
digests: equal results across versions).
"""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np

import negmine


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = np.random.default_rng(0)
    n_queries, dim, topics = 2_000, 128, 50
    centers = rng.standard_normal((topics, dim)).astype(np.float32)
    corpus = (centers[rng.integers(0, topics, n)] + 0.9 * rng.standard_normal((n, dim))).astype(
        np.float32
    )
    queries = (
        centers[rng.integers(0, topics, n_queries)] + 0.9 * rng.standard_normal((n_queries, dim))
    ).astype(np.float32)
    positives = [[int(p)] for p in rng.integers(0, n, n_queries)]  # weak: unrelated rows
    start = time.perf_counter()
    negmine.search(queries, corpus, 100, metric="cosine")
    searched = time.perf_counter() - start
    start = time.perf_counter()
    result = negmine.mine(queries, corpus, positives, relative_margin=0.05, duplicates=None)
    mined = time.perf_counter() - start
    digest = hashlib.sha1()
    for array in (result.negative_ids, result.negative_scores, result.positive_scores):
        digest.update(np.ascontiguousarray(array).tobytes())
    for array in result.removed.values():
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(str(result.report).encode())
    print(
        f"{n_queries} x {n:,} x {dim}: search(k=100) {searched:.2f} s, "
        f"mine(relative_margin=0.05) {mined:.2f} s ({mined / searched:.2f}x), "
        f"removed {sum(result.report.removed.values()) / n_queries:,.0f} per query, "
        f"digest {digest.hexdigest()[:12]}"
    )


if __name__ == "__main__":
    main()
