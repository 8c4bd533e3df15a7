"""negmine.kmeans vs faiss.Kmeans in one run, same data, settings and threads.

    python benches/kmeans_compare.py                 # 1M x 384, 1024 clusters, 10 iterations
    python benches/kmeans_compare.py --quick         # 100k x 128, 256 clusters

Both train on the same number of rows (faiss' default of 256 per centroid) and then assign
every row; inertia is the sum of squared distances (L2) or of 1 - cos (cosine) over all rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import negmine


def data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d), dtype=np.float32) * 2
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        labels = rng.integers(0, k, stop - start)
        out[start:stop] = centers[labels] + rng.standard_normal((stop - start, d), dtype=np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.dim, args.clusters = 100_000, 128, 256
    import faiss

    faiss.omp_set_num_threads(args.threads)
    x = data(args.rows, args.dim, args.clusters, 0)
    sample = min(args.rows, 256 * args.clusters)
    print(
        f"k-means: {args.rows:,} x {args.dim}, {args.clusters} clusters, {args.iterations} "
        f"iterations, trained on {sample:,} rows, {args.threads} threads"
    )
    print(
        "| metric | negmine init | negmine s | faiss s | speed (faiss / negmine) "
        "| inertia (negmine / faiss) |"
    )
    print("|---|---|---|---|---|---|")
    for metric, init in [(m, i) for m in ("l2", "cosine") for i in ("k-means++", "random")]:
        xx = x if metric == "l2" else x / np.linalg.norm(x, axis=1, keepdims=True)
        start = time.perf_counter()
        _, _, inertia = negmine.kmeans(
            xx,
            args.clusters,
            metric=metric,
            iterations=args.iterations,
            seed=1,
            sample=sample,
            init=init,
            threads=args.threads,
        )
        negmine_s = time.perf_counter() - start
        km = faiss.Kmeans(
            args.dim, args.clusters, niter=args.iterations, seed=1, spherical=metric == "cosine"
        )
        start = time.perf_counter()
        km.train(xx)
        distances, _ = km.index.search(xx, 1)
        faiss_s = time.perf_counter() - start
        faiss_inertia = float(distances.sum()) if metric == "l2" else float((1 - distances).sum())
        print(
            f"| {metric} | {init} | {negmine_s:.1f} | {faiss_s:.1f} | {faiss_s / negmine_s:.2f} | "
            f"{inertia / faiss_inertia:.4f} |"
        )


if __name__ == "__main__":
    main()
