"""sentence-transformers' own mining for :func:`negmine.mine_hard_negatives` (without
``deep=True``): each query's top ``range_max + max_positives + 1`` candidates, the query's own
text, its positives and what the filters remove struck out, the window ``[range_min,
range_max)`` of what is left sampled; then its closing statistics, and the result in
negmine's form (:class:`~negmine.MiningResult`, with a report)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from negmine._st_inputs import Rows
from negmine.outputs import dataset_from_arrays
from negmine.report import FILTERS, build_report
from negmine.result import MiningResult
from negmine.search import rescore, search

Teacher = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``teacher(query_ids, corpus_ids) -> float32 scores`` (:func:`negmine.teachers.cross_encoder`)."""


def top_candidates(
    queries: np.ndarray,
    corpus: np.ndarray,
    count: int,
    metric: Literal["dot", "cosine"],
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top ``count`` corpus rows (ids, float32 scores), exact. No more than the
    corpus holds: sentence-transformers pads past it with candidates that are never chosen,
    which :func:`select` stands for (a ``range_max`` of a billion costs nothing)."""
    scores, ids = search(queries, corpus, min(count, len(corpus)), metric=metric, threads=threads)
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def select(
    candidate_ids: np.ndarray,
    scores: np.ndarray,
    positive_indptr: np.ndarray,
    positive_ids: np.ndarray,
    positive_scores: np.ndarray,
    own: np.ndarray,
    *,
    include_positives: bool,
    pool: int,
    range_min: int,
    range_max: int,
    num_negatives: int,
    absolute_margin: float | None,
    relative_margin: float | None,
    max_score: float | None,
    min_score: float | None,
    sampling_strategy: str,
    draw: Callable[[Sequence[int], int], list[int]],
) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, float]]]:
    """sentence-transformers' selection from each query's ``pool`` candidates (fewer when the
    corpus is smaller): struck out (``-inf``) are the query's own text, its positives (unless
    ``include_positives``) and what each filter removes; of what is left, ranked by score,
    the window ``[range_min, range_max)`` is sampled. Returns the negatives (ids, ``-1``
    where missing; scores, NaN there) and, per filter that removed any, (count, ratio) as
    sentence-transformers reports them."""
    scores = scores.astype(np.float32, copy=True)
    n_queries = len(candidate_ids)
    scores[candidate_ids == own[:, None]] = -np.inf  # own is -1 for none: no id matches
    if not include_positives:
        # One key per (query, corpus row): a candidate is a positive when its key is listed.
        stride = max(int(candidate_ids.max(initial=0)), int(positive_ids.max())) + 1
        listed = np.repeat(np.arange(n_queries), np.diff(positive_indptr)) * stride
        listed = np.sort(listed + positive_ids)
        keys = np.arange(n_queries)[:, None] * stride + candidate_ids
        at = np.searchsorted(listed, keys).clip(max=len(listed) - 1)
        scores[listed[at] == keys] = -np.inf
    skipped: dict[str, tuple[int, float]] = {}
    candidates = n_queries * pool  # the ratios' base, sentence-transformers' padding included

    def strike(name: str, removed: np.ndarray, advance: bool) -> None:
        nonlocal candidates
        scores[removed] = -np.inf
        count = int(removed.sum())
        if count:
            skipped[name] = (count, count / candidates)
            if advance:  # as sentence-transformers counts its ratios
                candidates -= count

    if absolute_margin is not None or relative_margin is not None:
        # The margins are relative to the query's lowest positive score (its hardest one).
        lowest = np.minimum.reduceat(positive_scores.astype(np.float32), positive_indptr[:-1])[
            :, None
        ]  # every query has a positive: no segment is empty
        if absolute_margin is not None:
            strike("absolute_margin", scores + np.float32(absolute_margin) > lowest, True)
        if relative_margin is not None:
            # |p| * margin below p: a negative positive score keeps the cut below it.
            threshold = lowest - np.abs(lowest) * np.float32(relative_margin)
            strike("relative_margin", scores > threshold, True)
    if max_score is not None:
        strike("max_score", scores > np.float32(max_score), False)
    if min_score is not None:
        strike("min_score", (scores < np.float32(min_score)) & (scores != -np.inf), False)

    # The filtered ranking (ties in candidate order, i.e. the retriever's), then the window.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :range_max][:, range_min:]
    ids = np.take_along_axis(candidate_ids, order, axis=1)
    window = np.take_along_axis(scores, order, axis=1)
    short = num_negatives - window.shape[1]
    if short > 0:  # the corpus ends inside the window: sentence-transformers' padding
        ids = np.pad(ids, ((0, 0), (0, short)), constant_values=-1)
        window = np.pad(window, ((0, 0), (0, short)), constant_values=-np.inf)
    if sampling_strategy == "top":
        ids, window = ids[:, :num_negatives], window[:, :num_negatives]
    else:
        # Uniform among the window's candidates that are left (its first ones: it is ranked);
        # with fewer than num_negatives, all of them.
        options = np.maximum(np.isfinite(window).sum(axis=1), num_negatives)
        picked = np.asarray(
            [draw(range(int(n)), num_negatives) for n in options], dtype=np.int64
        ).reshape(n_queries, num_negatives)
        picked = np.take_along_axis(
            picked, np.argsort(-np.take_along_axis(window, picked, 1), 1, kind="stable"), 1
        )
        ids = np.take_along_axis(ids, picked, axis=1)
        window = np.take_along_axis(window, picked, axis=1)
    missing = ~np.isfinite(window)
    ids = np.where(missing, -1, ids)
    window = np.where(missing, np.nan, window).astype(np.float32)
    return ids, window, skipped


def print_summary(
    out: Any,
    output_format: str,
    negative_ids: np.ndarray,
    negative_scores: np.ndarray,
    indptr: np.ndarray,
    positive_scores: np.ndarray,
    skipped: dict[str, tuple[int, float]],
    *,
    n_rows: int,
    range_min: int,
    filters: dict[str, float | None],
) -> None:
    """sentence-transformers' closing statistics and its warning for the samples it could not
    fill (the same counts: per its output rows)."""
    n_queries, n = negative_ids.shape
    pair_query = np.repeat(np.arange(n_queries), np.diff(indptr))
    found = negative_ids[pair_query] >= 0  # per (query, positive), as its rows are made
    per_pair = negative_scores[pair_query]
    differences = positive_scores[:, None] - per_pair
    if output_format == "n-tuple":
        complete = found.all(axis=1)
        kept = np.zeros_like(found)
        kept[complete] = True
        possible = len(pair_query)
    else:
        kept = found
        possible = {
            "triplet": found.size,
            "labeled-pair": n_queries * n + n_rows,
        }.get(output_format, len(pair_query))
    negatives, differences = per_pair[kept], differences[kept]

    def stats(values: np.ndarray) -> list[str]:
        v = values.astype(np.float64)
        if not len(v):
            return ["nan", "nan", "nan", "inf", "inf", "inf", "inf", "-inf"]
        quantiles = np.quantile(v, [0.25, 0.5, 0.75])
        std = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        lower_median = float(np.sort(v)[(len(v) - 1) // 2])  # torch.median's
        cells = [v.mean(), lower_median, std, v.min(), *quantiles, v.max()]
        return [f"{float(x):.4f}" for x in cells]

    row = "{:<6} {:>14} {:>14} {:>14}"
    print(row.format("Metric", "Positive", "Negative", "Difference"))
    print(row.format("Count", f"{len(positive_scores):,}", f"{len(negatives):,}", ""))
    names = ["Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max"]
    for name, *cells in zip(names, stats(positive_scores), stats(negatives), stats(differences)):
        print(row.format(name, *cells))
    for name, value in filters.items():
        if name in skipped:
            count, ratio = skipped[name]
            print(
                f"Skipped {count:,} potential negatives ({ratio:.2%}) due to the {name} of {value}."
            )
    missing = possible - len(out)
    if missing > 0:
        solutions = ["range_max"]
        if range_min > 0:
            solutions.append("range_min")
        solutions += [
            name
            for name in ("absolute_margin", "relative_margin", "max_score")
            if filters[name] is not None
        ]
        if len(solutions) > 1:
            listed = ", ".join(solutions[:-1]) + " and " + solutions[-1]
        else:
            listed = solutions[0]
        print(
            f"Could not find enough negatives for {missing} samples ({missing / possible:.2%})."
            f" Consider adjusting the {listed} parameter{'s' if len(solutions) > 1 else ''} "
            "if you'd like to find more valid negatives."
        )


def pair_scores(
    queries: np.ndarray,
    corpus: np.ndarray,
    lists: list[list[int]],
    metric: Literal["dot", "cosine"],
) -> np.ndarray:
    """Each listed pair's exact score (negmine's, as the search computes it)."""
    width = max((len(p) for p in lists), default=0)
    if width == 0:
        return np.empty(0, np.float32)
    candidates = np.full((len(lists), width), -1, np.int64)
    for row, listed in enumerate(lists):
        candidates[row, : len(listed)] = listed
    scores, ranked = rescore(queries, corpus, candidates, k=width, metric=metric)
    # `rescore` ranks each row: put the scores back in the listed order.
    out: list[float] = []
    for row, listed in enumerate(lists):
        by_id = dict(zip(ranked[row].tolist(), scores[row].tolist()))
        out.extend(by_id[i] for i in listed)
    return np.asarray(out, dtype=np.float32)


def no_removed() -> dict[str, np.ndarray]:
    """``MiningResult.removed`` of a run that recorded no removed candidate."""
    return {
        "query": np.zeros(0, np.int64),
        "id": np.zeros(0, np.int64),
        "score": np.zeros(0, np.float32),
        "filter": np.zeros(0, np.uint8),
    }


def lists_csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query id lists as int64 CSR arrays ``(indptr, ids)``, in list order."""
    indptr = np.concatenate(([0], np.cumsum([len(p) for p in lists]))).astype(np.int64)
    return indptr, np.asarray([i for p in lists for i in p], dtype=np.int64)


def mine_window(
    a: SimpleNamespace,
    rows: Rows,
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    teacher: Teacher | None,
    *,
    metric: Literal["dot", "cosine"],
    options: dict[str, Any],
) -> tuple[MiningResult, Any]:
    """sentence-transformers' mining of ``rows`` with the checked arguments ``a``: the result
    (its report built from the mining ``options``) and the ``datasets.Dataset``; with
    ``a.verbose``, sentence-transformers' statistics printed."""
    assert a.range_max is not None  # derived by the argument checks when not deep
    pool = a.range_max + rows.max_positives + 1  # sentence-transformers' candidates per query
    candidate_ids, scores = top_candidates(
        query_embeddings, corpus_embeddings, pool, metric, a.threads
    )
    positive_scores = pair_scores(query_embeddings, corpus_embeddings, rows.positive_lists, metric)
    indptr, positive_ids = lists_csr(rows.positive_lists)
    if teacher is not None:
        # The cross-encoder scores every candidate and positive; its scores rank and filter.
        scores, positive_scores = _judged(teacher, candidate_ids, indptr, positive_ids)
    negative_ids, negative_scores, skipped = select(
        candidate_ids,
        scores,
        indptr,
        positive_ids,
        positive_scores,
        np.asarray(rows.own, dtype=np.int64),
        include_positives=a.include_positives,
        pool=pool,
        range_min=a.range_min,
        range_max=a.range_max,
        num_negatives=a.num_negatives,
        absolute_margin=a.absolute_margin,
        relative_margin=a.relative_margin,
        max_score=a.max_score,
        min_score=a.min_score,
        sampling_strategy=a.sampling_strategy,
        draw=random.sample if a.seed is None else random.Random(a.seed).sample,
    )
    if a.verbose:
        print("Negative candidates mined, preparing dataset...")
    out = dataset_from_arrays(
        negative_ids,
        negative_scores,
        indptr,
        positive_ids,
        positive_scores,
        rows.queries,
        rows.corpus_texts,
        output_format=a.output_format,
        include_scores=bool(a.output_scores),
        anchor_column=a.anchor_column_name,
        positive_column=a.positive_column_name,
        ids_column=a.ids_column,
    )
    filters = {name: getattr(a, name) for name in _ST_FILTERS}
    if a.verbose:
        print_summary(
            out,
            a.output_format,
            negative_ids,
            negative_scores,
            indptr,
            positive_scores,
            skipped,
            n_rows=rows.n_pairs,
            range_min=a.range_min,
            filters=filters,
        )
    result = MiningResult(
        negative_ids=negative_ids,
        negative_scores=negative_scores,
        positive_indptr=indptr,
        positive_ids=positive_ids,
        positive_scores=positive_scores,
        removed=no_removed(),
        report=build_report(
            n_queries=len(rows.queries),
            num_negatives=a.num_negatives,
            options={k: v for k, v in options.items() if k != "exclude"},
            positives=len(positive_ids),
            excluded_duplicates=0,
            linked=0,
            found=(negative_ids >= 0).sum(axis=1),
            negative_scores=negative_scores,
            positive_scores=positive_scores,
            removed=no_removed(),
            removed_counts=_removed_counts(skipped),
        ),
    )
    return result, out


# sentence-transformers' filters, in the order its summary reports them.
_ST_FILTERS = ("absolute_margin", "relative_margin", "max_score", "min_score")


def _judged(
    teacher: Teacher, candidate_ids: np.ndarray, indptr: np.ndarray, positive_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's scores of every candidate (``-inf`` where there is none) and of every
    positive (CSR ``indptr``, ``positive_ids``)."""
    rows, cols = np.nonzero(candidate_ids >= 0)
    scores = np.full(candidate_ids.shape, -np.inf, dtype=np.float32)
    scores[rows, cols] = teacher(rows.astype(np.int64), candidate_ids[rows, cols])
    pair_query = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return scores, teacher(pair_query.astype(np.int64), positive_ids)


def _removed_counts(skipped: dict[str, tuple[int, float]]) -> np.ndarray:
    """The candidates each filter removed, per :data:`negmine.report.FILTERS`."""
    counts = np.zeros(len(FILTERS), dtype=np.int64)
    for name, (count, _) in skipped.items():
        counts[FILTERS.index(name)] = count
    return counts
