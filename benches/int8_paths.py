"""The exact search's paths on this CPU, against ``faiss.knn``, numpy and torch, in one run.

Rows: ``precision="f32"``; int8 pre-scoring with each int8 kernel the CPU has (``avx512``:
VNNI ``vpdpbusd``; ``avx512+amx``: AMX-INT8 tiles; ``avx2+fma``: ``vpmaddubsw``);
``precision="auto"`` (what a user gets); ``faiss.knn`` (its bundled OpenBLAS, kernel named
from threadpoolctl); numpy (``q @ c.T`` + ``argpartition`` in chunks) and torch (``mm`` +
``topk``). Every negmine result is checked against the f32 path bit for bit. Each time is the
best of ``--repeat`` runs, the configurations interleaved so that a slow moment hits them all.

Real set: MiniLM embeddings of apt package names (queries) and descriptions (corpus), as in
``benches/rotated.py`` (cached under ``bench-data/``); then isotropic normal data of the same
shape, where pre-scoring bounds are widest.

    python benches/int8_paths.py                          # 60k x 8192 MiniLM, k = 1 10 100 1000
    python benches/int8_paths.py --corpus 20000 --queries 1000 --k 10
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import negmine
from negmine import _core
from rotated import REPO, cpu_name, real_set


def blas_kernels() -> list[str]:
    from threadpoolctl import threadpool_info

    return [
        f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
        f"({Path(i['filepath']).name})"
        for i in threadpool_info()
        if i["internal_api"] != "openmp"
    ]


def numpy_knn(q: np.ndarray, c: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), chunk):
        scores = q[s : s + chunk] @ c.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(top, order, 1)
    return out


def torch_knn(q: Any, c: Any, k: int, chunk: int = 1024) -> None:
    import torch

    with torch.inference_mode():
        for s in range(0, len(q), chunk):
            torch.topk(q[s : s + chunk] @ c.T, k, dim=1)


def run(name: str, q: np.ndarray, c: np.ndarray, ks: list[int], repeat: int, threads: int) -> list:
    import faiss
    import torch

    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    tq, tc = torch.from_numpy(q), torch.from_numpy(c)
    kernels = [i for i in _core.cpu_features() if i not in ("scalar", "avx512vnni")]
    has_vnni = "avx512vnni" in _core.cpu_features()
    rows = []
    for k in ks:
        configs: dict[str, Callable[[], Any]] = {}

        def negmine_path(precision: str, isa: str | None = None, k: int = k) -> Callable[[], Any]:
            options = _core.SearchOptions(k, metric="dot", precision=precision, isa=isa)
            return functools.partial(_core.search, q, c, options, threads=threads)

        configs["f32"] = negmine_path("f32")
        for isa in kernels:
            if isa == "avx512" and not has_vnni:
                continue
            configs[f"int8 {isa}"] = negmine_path("int8", isa)
        configs["auto"] = negmine_path("auto")
        configs["faiss.knn"] = functools.partial(
            faiss.knn, q, c, k, metric=faiss.METRIC_INNER_PRODUCT
        )
        configs["numpy"] = functools.partial(numpy_knn, q, c, k)
        configs["torch"] = functools.partial(torch_knn, tq, tc, k)
        best = dict.fromkeys(configs, float("inf"))
        stats: dict[str, dict] = {}
        reference = None
        for _ in range(repeat):
            for label, fn in configs.items():
                started = time.perf_counter()
                out = fn()
                elapsed = time.perf_counter() - started
                if label in ("f32", "auto") or label.startswith("int8"):
                    scores, ids, st = out
                    if reference is None:
                        reference = (scores.tobytes(), ids)
                    same = scores.tobytes() == reference[0] and np.array_equal(ids, reference[1])
                    assert same, f"{label} differs from the f32 path"
                    if elapsed < best[label]:
                        stats[label] = st
                best[label] = min(best[label], elapsed)
        base = best["faiss.knn"]
        for label, seconds in best.items():
            st = stats.get(label)
            row = {
                "set": name,
                "k": k,
                "path": label,
                "seconds": round(seconds, 4),
                "vs_faiss": round(base / seconds, 2),
                "vs_f32": round(best["f32"] / seconds, 2),
            }
            if st is not None:
                row["ran"] = st["precision"]
                row["scan_s"] = round(st["scan_seconds"], 4)
                row["rescore_s"] = round(st["rescore_seconds"], 4)
                if len(st["rescored"]):
                    row["rescored_per_query"] = round(float(np.mean(st["rescored"])), 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=int, default=60000)
    p.add_argument("--queries", type=int, default=8192)
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data-dir", type=Path, default=REPO / "bench-data")
    p.add_argument("--skip-isotropic", action="store_true")
    args = p.parse_args(argv)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            sys.exit(f"unset {var}: the peers run as shipped here")
    import faiss  # noqa: F401  (loads its BLAS, so threadpoolctl can name it)

    print(f"CPU: {cpu_name()}, {args.threads} threads; kernels {_core.cpu_features()}")
    print("BLAS:", "; ".join(blas_kernels()))
    q, c = real_set(args.corpus, args.queries, args.data_dir)
    print(f"real: {len(q)} x {len(c)} x {c.shape[1]} MiniLM ({negmine.__version__})")
    run("MiniLM", q, c, args.k, args.repeat, args.threads)
    if not args.skip_isotropic:
        rng = np.random.default_rng(0)
        iq = rng.standard_normal((len(q), c.shape[1])).astype(np.float32)
        ic = rng.standard_normal((len(c), c.shape[1])).astype(np.float32)
        print(f"isotropic: {len(iq)} x {len(ic)} x {c.shape[1]} normal")
        run("isotropic", iq, ic, args.k, args.repeat, args.threads)


if __name__ == "__main__":
    main()
