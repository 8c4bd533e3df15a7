"""The mining table: negmine's ``mine_hard_negatives`` and ``mine`` against
sentence-transformers' ``mine_hard_negatives`` (faiss path) on the same embeddings, injected
into its embedding cache so that encoding is not what is timed."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from negmine.bench.settings import MINE_NEGATIVES, MINE_RELATIVE_MARGIN, ST_MODEL_NAME
from negmine.bench.timing import Timing, time_best


def st_cache_hash(model_name: str, texts: Sequence[str]) -> str:
    """The name sentence-transformers 6.x gives a list's cached embeddings in
    ``mine_hard_negatives(cache_folder=...)``: ``sha256(repr((model, prompt, prompt_name,
    texts)))`` with no prompt."""
    return hashlib.sha256(repr((model_name, None, None, list(texts))).encode()).hexdigest()


class InjectedModel:
    """What ``mine_hard_negatives`` reads of a model when both embedding files come from its
    cache (cosine similarity, like all-MiniLM-L6-v2); asked to encode, it raises: encoding is
    not what is timed."""

    def __init__(self, dim: int, name: str = ST_MODEL_NAME) -> None:
        import torch
        from sentence_transformers import util

        self.device = torch.device("cpu")
        self.model_card_data = type("Card", (), {"base_model": name})()
        self.similarity = util.cos_sim
        self.similarity_pairwise = util.pairwise_cos_sim
        self._dim = dim

    def get_embedding_dimension(self) -> int:
        return self._dim

    def _encode(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mine_hard_negatives missed the injected embedding cache")

    encode = encode_query = encode_document = _encode


@dataclass
class MiningRow:
    """One row of the mining table."""

    name: str
    timing: Timing
    rows: int
    """Queries that got every negative (sentence-transformers drops the others)."""
    same: float | None
    """Of the rows both returned, the share whose negatives equal the first row's."""
    note: str


def mining_rows(
    xq: np.ndarray,
    xb: np.ndarray,
    threads: int,
    repeats: int,
    budget: float,
    min_runs: int,
    log: Callable[[str], None],
    scratch: Path,
) -> list[MiningRow]:
    """negmine's ``mine_hard_negatives`` (its sentence-transformers drop-in), sentence-
    transformers' own (faiss path) and ``negmine.mine`` on the same embeddings: each query's
    positive is its nearest corpus row, the embeddings are injected into sentence-transformers'
    cache (files named by its hash), ``MINE_NEGATIVES`` negatives, ``MINE_RELATIVE_MARGIN``,
    ``"top"``. Times include building the output ``Dataset``: the call a user makes. The cache
    files go under ``scratch`` (the caller's, removed by it)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as st_mine

    import negmine
    from negmine.search import search

    q, (n, d) = len(xq), xb.shape
    positives = search(xq, xb, 1, threads=threads)[1][:, 0]
    queries = [f"q{i}" for i in range(q)]
    corpus = [f"p{j}" for j in range(n)]
    cache = scratch / "st-cache"
    cache.mkdir()
    np.save(cache / f"query_embeddings_{st_cache_hash(ST_MODEL_NAME, queries)}.npy", xq)
    np.save(cache / f"corpus_embeddings_{st_cache_hash(ST_MODEL_NAME, corpus)}.npy", xb)
    dataset = Dataset.from_dict({"query": queries, "answer": [corpus[p] for p in positives]})
    model = InjectedModel(d)
    c_index = {t: j for j, t in enumerate(corpus)}
    q_index = {t: i for i, t in enumerate(queries)}
    options: dict[str, Any] = {
        "num_negatives": MINE_NEGATIVES,
        "relative_margin": MINE_RELATIVE_MARGIN,
        "sampling_strategy": "top",
    }

    def drop_in(fn: Callable[..., Any]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            # sentence-transformers draws faiss' query batches with tqdm even when not verbose.
            with contextlib.redirect_stderr(io.StringIO()):
                ds = fn(
                    dataset,
                    model,
                    corpus=corpus,
                    output_format="n-tuple",
                    use_faiss=True,
                    cache_folder=str(cache),
                    verbose=False,
                    **options,
                )
            ids = np.full((q, MINE_NEGATIVES), -1, np.int64)
            cols = [ds[f"negative_{j}"] for j in range(1, MINE_NEGATIVES + 1)]
            for r, anchor in enumerate(ds["query"]):
                ids[q_index[anchor]] = [c_index[col[r]] for col in cols]
            return ids

        return run

    def native() -> np.ndarray:
        return negmine.mine(
            xq, xb, positives, duplicates=None, threads=threads, **options
        ).negative_ids

    runs = [
        ("negmine mine_hard_negatives", drop_in(negmine.mine_hard_negatives), "its drop-in"),
        (
            "sentence-transformers",
            drop_in(st_mine),
            "mine_hard_negatives(use_faiss=True), faiss as shipped",
        ),
        ("negmine.mine", native, "fills every row from the whole ranking"),
    ]
    return _time_rows(runs, repeats, budget, min_runs, log)


def _time_rows(
    runs: Sequence[tuple[str, Callable[[], np.ndarray], str]],
    repeats: int,
    budget: float,
    min_runs: int,
    log: Callable[[str], None],
) -> list[MiningRow]:
    """Times each ``(name, run, note)`` and compares its negatives with the first one's."""
    out: list[MiningRow] = []
    reference: np.ndarray | None = None
    for name, fn, note in runs:
        log(f"mining: {name} ...")
        timing = time_best(fn, repeats, True, budget, min_runs)
        ids = np.asarray(timing.result)
        timing.result = None
        full = (ids >= 0).all(axis=1)
        same = None
        if reference is not None:
            both = full & (reference >= 0).all(axis=1)
            same = float((ids[both] == reference[both]).all(axis=1).mean()) if both.any() else None
        else:
            reference = ids
        out.append(MiningRow(name, timing, int(full.sum()), same, note))
    return out
