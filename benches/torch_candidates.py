"""backend="torch" vs backend="exact" on the same data and thread count: wall time, and that
the results are identical (ids, scores). Seeded Gaussian clusters; cosine.

    PYTHONPATH=python python benches/torch_candidates.py --queries 2000 --corpus 50000 --dim 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import negmine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--corpus", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile-rows", type=int, default=16_384)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(200, args.dim))
    corpus = centers[rng.integers(0, 200, args.corpus)] + rng.normal(size=(args.corpus, args.dim))
    queries = centers[rng.integers(0, 200, args.queries)] + rng.normal(
        size=(args.queries, args.dim)
    )
    corpus, queries = corpus.astype(np.float32), queries.astype(np.float32)
    positives = [[int(i)] for i in rng.integers(0, args.corpus, args.queries)]
    common = {"num_negatives": 5, "duplicates": None, "threads": args.threads}
    start = time.perf_counter()
    exact = negmine.mine(queries, corpus, positives, **common)
    print(f"exact: {time.perf_counter() - start:.2f} s")
    for dtype in ("float16", "bfloat16"):
        start = time.perf_counter()
        got = negmine.mine(
            queries,
            corpus,
            positives,
            backend="torch",
            device=args.device,
            torch_dtype=dtype,
            tile_rows=args.tile_rows,
            **common,
        )
        elapsed = time.perf_counter() - start
        same = np.array_equal(exact.negative_ids, got.negative_ids) and np.array_equal(
            exact.negative_scores, got.negative_scores
        )
        stats = got.report.torch
        assert stats is not None
        print(
            f"torch {dtype} on {args.device}: {elapsed:.2f} s, identical={same}, "
            f"{stats.candidates_per_query:.1f} candidates/query, {stats.scans} scans "
            f"({stats.extra_scans} extra)"
        )


if __name__ == "__main__":
    main()
