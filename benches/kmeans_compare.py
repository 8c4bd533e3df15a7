"""negmine.kmeans vs faiss.Kmeans in one run, same data, settings and threads.

    python benches/kmeans_compare.py                 # 1M x 384, 1024 clusters, 10 iterations
    python benches/kmeans_compare.py --seeds 1,2,3 --write-readme
    python benches/kmeans_compare.py --quick         # 100k x 128, 256 clusters
    python benches/kmeans_compare.py --npy bench-data/rotated-60000x8192/corpus.npy --clusters 256

Both train on the same number of rows (faiss' default of 256 per centroid) and then assign
every row; inertia is the sum of squared distances (L2) or of 1 - cos (cosine) over all rows.
faiss starts from random rows; negmine is run with its default k-means++ start and with
``init="random"`` (faiss' start). Times are wall clock of the whole job (train + assign all
rows); with several seeds a row shows the median time and the range of the inertia ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import negmine
from readme_block import publish


def data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """``n`` rows around ``k`` Gaussian centres (seeded)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d), dtype=np.float32) * 2
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        labels = rng.integers(0, k, stop - start)
        out[start:stop] = centers[labels] + rng.standard_normal((stop - start, d), dtype=np.float32)
    return out


def run_negmine(
    x: np.ndarray, args: argparse.Namespace, metric: str, init: str, seed: int
) -> tuple[float, float]:
    start = time.perf_counter()
    _, _, inertia = negmine.kmeans(
        x,
        args.clusters,
        metric=metric,
        iterations=args.iterations,
        seed=seed,
        sample=min(len(x), 256 * args.clusters),
        init=init,
        threads=args.threads,
    )
    return time.perf_counter() - start, inertia


def run_faiss(
    x: np.ndarray, args: argparse.Namespace, metric: str, seed: int
) -> tuple[float, float]:
    import faiss

    km = faiss.Kmeans(
        x.shape[1], args.clusters, niter=args.iterations, seed=seed, spherical=metric == "cosine"
    )
    start = time.perf_counter()
    km.train(x)
    distances, _ = km.index.search(x, 1)
    seconds = time.perf_counter() - start
    inertia = float(distances.sum()) if metric == "l2" else float((1 - distances).sum())
    return seconds, inertia


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="1", help="comma-separated k-means seeds")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--npy", help="cluster the rows of this float32 .npy (real embeddings) instead"
    )
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite its block in docs/performance.md"
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.dim, args.clusters = 100_000, 128, 256
    seeds = [int(s) for s in args.seeds.split(",")]
    import faiss

    faiss.omp_set_num_threads(args.threads)
    if args.npy:
        x = np.ascontiguousarray(np.load(args.npy), dtype=np.float32)
        args.rows, args.dim = x.shape
    else:
        x = data(args.rows, args.dim, args.clusters, 0)
    sample = min(args.rows, 256 * args.clusters)
    lines = [
        f"{args.rows:,} x {args.dim} f32, {args.clusters} clusters, {args.iterations} "
        f"iterations, trained on {sample:,} rows, then all rows assigned; {args.threads} "
        f"threads; seeds {args.seeds}; faiss {faiss.__version__}",
        "",
        "| metric | negmine init | negmine s | faiss s | speed (faiss / negmine) "
        "| inertia (negmine / faiss) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    print(lines[0], flush=True)
    for metric in ("l2", "cosine"):
        xx = x if metric == "l2" else x / np.linalg.norm(x, axis=1, keepdims=True)
        faiss_runs = [run_faiss(xx, args, metric, seed) for seed in seeds]
        for init in ("k-means++", "random"):
            ours = [run_negmine(xx, args, metric, init, seed) for seed in seeds]
            ratios = [o[1] / f[1] for o, f in zip(ours, faiss_runs)]
            ours_s = statistics.median(o[0] for o in ours)
            faiss_s = statistics.median(f[0] for f in faiss_runs)
            inertia = (
                f"{ratios[0]:.3f}"
                if len(ratios) == 1
                else f"{statistics.mean(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
            )
            line = (
                f"| {metric} | {init} | {ours_s:.1f} | {faiss_s:.1f} | "
                f"{faiss_s / ours_s:.2f} | {inertia} |"
            )
            lines.append(line)
            print(line, flush=True)
    publish("kmeans-bench", lines, args.write_readme)


if __name__ == "__main__":
    main()
