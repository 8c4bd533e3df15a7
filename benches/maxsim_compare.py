"""MaxSim (late-interaction) scoring: negmine's core kernel against numpy and torch einsum
implementations and sentence-transformers' ``util.maxsim`` / ``maxsim_pairwise``, in one run
on the same data and thread count, printing seconds, GFLOP/s, ratios and the CPU.

Two workloads, both on ColBERT-like synthetic token embeddings (unit tokens, dim 128, queries
of 32 tokens, documents of 40-180):
- brute force: every query against every document (what the recall of a candidate stage is
  measured against), negmine's ``maxsim_search`` (top-10) vs the peers' full score matrix;
- rescoring: ``depth`` candidates per query (mining's exact stage), negmine's
  ``maxsim_scores`` on the pairs vs ``maxsim_pairwise`` and a padded torch gather.

    python benches/maxsim_compare.py [--queries 64] [--docs 2000] [--depth 100] [--threads 2]

Timings are the best of ``--repeat`` runs; on a shared 2-core machine they are noisy.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import negmine
from negmine import cpu_features
from negmine import multivector as mv


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def make(rng: np.random.Generator, n: int, lo: int, hi: int, dim: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        x = rng.standard_normal((int(rng.integers(lo, hi + 1)), dim)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def padded(texts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``n x max_len x dim`` zero-padded, and the ``n x max_len`` mask of real tokens."""
    longest = max(len(t) for t in texts)
    out = np.zeros((len(texts), longest, texts[0].shape[1]), np.float32)
    mask = np.zeros((len(texts), longest), bool)
    for i, t in enumerate(texts):
        out[i, : len(t)] = t
        mask[i, : len(t)] = True
    return out, mask


def numpy_all(q: list[np.ndarray], docs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per query: one einsum against the padded corpus, padding masked to -inf."""
    out = np.empty((len(q), len(docs)), np.float32)
    for i, x in enumerate(q):
        sims = np.einsum("td,nsd->nts", x, docs, optimize=True)
        sims = np.where(mask[:, None, :], sims, -np.inf)
        out[i] = sims.max(axis=2).sum(axis=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    qa = make(rng, args.queries, 32, 32, args.dim)
    da = make(rng, args.docs, 40, 180, args.dim)
    queries, corpus = mv.MultiVectors.from_arrays(qa), mv.MultiVectors.from_arrays(da)
    q_tokens, d_tokens = queries.n_tokens, corpus.n_tokens
    print(f"CPU: {cpu_name()}; negmine kernels: {cpu_features()}; threads: {args.threads}")
    print(
        f"{args.queries} queries x {args.docs} documents, dim {args.dim}, "
        f"{q_tokens} query tokens, {d_tokens} document tokens (mean {d_tokens / args.docs:.0f})"
    )
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None  # type: ignore[assignment]
    try:
        from sentence_transformers import util as st_util
    except ImportError:
        st_util = None  # type: ignore[assignment]

    # --- brute force
    flops = 2.0 * q_tokens * d_tokens * args.dim
    rows: list[tuple[str, float, str]] = []
    t_neg, (scores, ids) = best(
        lambda: mv.maxsim_search(queries, corpus, 10, threads=args.threads), args.repeat
    )
    rows.append(("negmine maxsim_search (top-10)", t_neg, ""))
    # Not MaxSim: the same token dot products as one dense top-10 search in f32 (no int8
    # pre-scoring), the f32 kernel's rate on this machine right now: the MaxSim kernel's
    # ceiling.
    t, _ = best(
        lambda: negmine.search(
            np.asarray(queries.tokens),
            np.asarray(corpus.tokens),
            10,
            threads=args.threads,
            precision="f32",
        ),
        args.repeat,
    )
    rows.append(("(negmine dense search, same token dots)", t, "reference, not MaxSim"))
    docs, mask = padded(da)
    t, ref = best(lambda: numpy_all(qa, docs, mask), 1)
    agree = np.abs(np.take_along_axis(ref, ids, axis=1) - scores).max()
    rows.append(("numpy einsum, padded", t, f"max |diff| {agree:.1e}"))
    if torch is not None:
        tq = [torch.from_numpy(x) for x in qa]
        td, tm = torch.from_numpy(docs), torch.from_numpy(mask)

        def torch_all() -> np.ndarray:
            with torch.inference_mode():
                out = []
                for x in tq:
                    sims = torch.einsum("td,nsd->nts", x, td).masked_fill(
                        ~tm[:, None, :], -torch.inf
                    )
                    out.append(sims.amax(dim=2).sum(dim=1))
                return torch.stack(out).numpy()

        t, ref = best(torch_all, args.repeat)
        agree = np.abs(np.take_along_axis(ref, ids, axis=1) - scores).max()
        rows.append(("torch einsum, padded", t, f"max |diff| {agree:.1e}"))
    if st_util is not None and hasattr(st_util, "maxsim") and torch is not None:
        tq_list = [torch.from_numpy(x) for x in qa]
        td_list = [torch.from_numpy(x) for x in da]
        t, ref = best(lambda: st_util.maxsim(tq_list, td_list).numpy(), args.repeat)
        agree = np.abs(np.take_along_axis(ref, ids, axis=1) - scores).max()
        rows.append(("sentence-transformers util.maxsim", t, f"max |diff| {agree:.1e}"))
    print(f"\nbrute force ({flops / 1e9:.1f} GFLOP of token dots)")
    for name, t, note in rows:
        print(f"  {name:38s} {t:8.3f} s {flops / t / 1e9:7.1f} GFLOP/s  x{t / t_neg:6.2f}  {note}")

    # --- rescoring `depth` candidates per query
    depth = min(args.depth, args.docs)
    cand = np.stack([rng.choice(args.docs, depth, replace=False) for _ in qa])
    q_ids = np.repeat(np.arange(len(qa)), depth)
    d_ids = cand.ravel()
    pair_tokens = sum(len(qa[i]) * len(da[j]) for i, j in zip(q_ids, d_ids))
    flops = 2.0 * pair_tokens * args.dim
    rows = []
    t_neg, pairs = best(
        lambda: mv.maxsim_scores(queries, corpus, q_ids, d_ids, threads=args.threads), args.repeat
    )
    rows.append(("negmine maxsim_scores", t_neg, ""))
    if torch is not None:

        def torch_gather() -> np.ndarray:
            with torch.inference_mode():
                out = []
                for i, x in enumerate(tq):
                    c = cand[i]
                    sims = torch.einsum("td,nsd->nts", x, td[c]).masked_fill(
                        ~tm[c][:, None, :], -torch.inf
                    )
                    out.append(sims.amax(dim=2).sum(dim=1))
                return torch.cat(out).numpy()

        t, ref = best(torch_gather, args.repeat)
        rows.append(("torch einsum, gathered", t, f"max |diff| {np.abs(ref - pairs).max():.1e}"))
    if st_util is not None and hasattr(st_util, "maxsim_pairwise") and torch is not None:
        a = [tq_list[i] for i in q_ids]
        b = [td_list[j] for j in d_ids]
        t, ref = best(lambda: st_util.maxsim_pairwise(a, b).numpy(), args.repeat)
        rows.append(
            (
                "sentence-transformers maxsim_pairwise",
                t,
                f"max |diff| {np.abs(ref - pairs).max():.1e}",
            )
        )
    print(f"\nrescoring {depth} candidates per query ({flops / 1e9:.1f} GFLOP)")
    for name, t, note in rows:
        print(f"  {name:38s} {t:8.3f} s {flops / t / 1e9:7.1f} GFLOP/s  x{t / t_neg:6.2f}  {note}")
    print("\n(xN: the peer's time over negmine's; > 1 means negmine is faster)")


if __name__ == "__main__":
    main()
