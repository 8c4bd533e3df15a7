"""``negmine.mine_hard_negatives``: sentence-transformers' ``util.mine_hard_negatives`` (6.3)
with its signature, defaults, checks, messages and output, so that switching is one import.

By default it mines as sentence-transformers does: each query's candidates are the top
``range_max + max_positives + 1`` of the corpus (negmine's exact search), the query's own text,
its positives and the rows the filters remove are struck out, the window ``[range_min,
range_max)`` of what is left is taken, and a row that cannot be filled from it is dropped with
sentence-transformers' "Could not find enough negatives" message. sentence-transformers' own
test file runs against this function (tests/st_upstream). Where negmine differs on purpose it
is behind a keyword of its own (``deep``, ``seed``, ``dup_threshold``): the README's
"From sentence-transformers" section has the one table of them.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from negmine import _numbers as numbers
from negmine._inputs import text_list
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.mine import OPTIONS, mine
from negmine.outputs import OUTPUT_FORMATS, ST_LABEL_COLUMNS, dataset_from_arrays, to_dataset
from negmine.report import FILTERS, build_report
from negmine.result import MiningResult
from negmine.search import search
from negmine.store import save_embeddings
from negmine.teachers import cross_encoder as cross_encoder_teacher

# faiss on a GPU returns at most this many rows per query: sentence-transformers caps a derived
# range_max (with use_faiss=True) to fit, and so does negmine, for the same window.
_FAISS_GPU_K = 2048


@dataclass
class Mined:
    """What :func:`negmine.st.from_dataset` mined, beside the dataset: the pieces that
    :func:`negmine.st.topic_batch_sampler`, the masked losses and
    :class:`negmine.st.RefreshCallback` take. The dataset's ids column refers to these rows."""

    dataset: Any
    """The ``datasets.Dataset`` that :func:`mine_hard_negatives` returns, with the ids column."""
    result: MiningResult
    """The negatives of every query row (``-1`` where missing: the rows the dataset dropped)
    and its positives (CSR): ``positives=`` of the masked losses, a refresh's start."""
    query_texts: list[str]
    """The distinct anchors, in order of first appearance: query row ``q`` is ``query_texts[q]``."""
    corpus_texts: list[str]
    """``corpus + positives`` with repeated texts dropped: corpus row ``c`` is
    ``corpus_texts[c]``."""
    query_embeddings: np.ndarray
    """float32 ``[queries, d]``, normalised: e.g. ``negmine.kmeans`` of them for topics."""
    corpus_embeddings: np.ndarray
    """float32 ``[corpus rows, d]``, normalised."""
    options: dict[str, Any]
    """:func:`negmine.mine` keywords that mine these rows again with new embeddings (the
    call's window, filters and sampling; the query's own text excluded; without its
    ``cross_encoder``): what a refresh mines with."""
    encode: dict[str, Any]
    """How the texts were encoded (prompts, ``batch_size``), for a refresh to encode alike."""


def mine_hard_negatives(
    dataset: Any,
    model: Any,
    anchor_column_name: str | None = None,
    positive_column_name: str | None = None,
    corpus: Sequence[str] | None = None,
    cross_encoder: Any = None,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: Literal["random", "top"] = "top",
    query_prompt_name: str | None = None,
    query_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    include_positives: bool = False,
    output_format: Literal[
        "triplet", "n-tuple", "labeled-pair", "labeled-list", "n-tuple-scores"
    ] = "triplet",
    output_scores: bool = False,
    batch_size: int = 32,
    faiss_batch_size: int = 16384,
    use_faiss: bool = False,
    use_multi_process: list[str] | bool = False,
    verbose: bool = True,
    cache_folder: str | None = None,
    as_triplets: bool | None = None,
    margin: float | None = None,
    *,
    deep: bool = False,
    seed: int | None = None,
    dup_threshold: float | None = None,
    threads: int | None = None,
    ids_column: str | None = None,
) -> Any:
    """Hard negatives for a ``datasets.Dataset`` of (anchor, positive) pairs: the arguments,
    result and messages of sentence-transformers' ``util.mine_hard_negatives`` (6.3), with
    negmine's exact search. See the module docstring.

    Keywords of negmine's own (none changes the default behaviour):

    - ``deep=True``: negmine's mining instead (:func:`negmine.mine`): the window is taken from
      the filtered ranking of the whole corpus, fetched as deep as the filters need, so a row
      is left short only when the corpus runs out; ``range_max=None`` is then unbounded for
      ``"top"``; ``verbose`` prints negmine's report.
    - ``seed``: ``sampling_strategy="random"`` draws from its own generator seeded with it;
      ``None`` (default) draws from Python's global ``random``, as sentence-transformers
      does (so ``random.seed`` governs both).
    - ``dup_threshold`` (with ``deep=True``): drop candidates whose cosine with a positive
      is at least this.
    - ``threads``: negmine's cores for the search.
    - ``ids_column`` (e.g. ``"label"``): a last column of int ids per row, ``[query,
      positive, negatives...]`` as :func:`negmine.to_dataset` writes it, for
      :func:`negmine.st.topic_batch_sampler` and the masked losses. The query id is the
      anchor's row among the distinct anchors (in order of first appearance), a corpus id the
      text's row in ``corpus + positives`` with repeated texts dropped (the rows mined).
      :func:`negmine.st.from_dataset` returns those lists, the embeddings and the result.

    ``use_faiss``, ``faiss_batch_size`` and ``use_multi_process`` are accepted (and checked as
    sentence-transformers checks them) but negmine's exact search needs none of them.
    """
    return mine_dataset(**locals()).dataset


def mine_dataset(dataset: Any, model: Any, *args: Any, **kwargs: Any) -> Mined:
    """:func:`mine_hard_negatives` (any of its arguments, bound as a call binds them: an
    unknown one is a ``TypeError``), with what it mined from (see :class:`Mined`)."""
    bound = _SIGNATURE.bind(dataset, model, *args, **kwargs)
    bound.apply_defaults()
    return _mine(SimpleNamespace(**bound.arguments))


def _mine(a: SimpleNamespace) -> Mined:
    """:func:`mine_hard_negatives` with its arguments ``a`` (bound by :func:`mine_dataset`), and
    what it mined from (see :class:`Mined`)."""
    if not isinstance(a.deep, bool):
        raise InvalidTypeError(f"deep must be a bool, got {type(a.deep).__name__} {a.deep!r}")
    columns = list(getattr(a.dataset, "column_names", None) or [])
    if not columns:
        raise InvalidTypeError(
            f"dataset must be a datasets.Dataset with (anchor, positive) columns, got "
            f"{type(a.dataset).__name__}"
        )
    if len(a.dataset) == 0:
        raise InvalidArgumentError("the dataset is empty: it has no (anchor, positive) rows")
    numbers.count(a.faiss_batch_size, "faiss_batch_size")
    a.batch_size = numbers.count(a.batch_size, "batch_size")
    if not a.anchor_column_name or a.anchor_column_name not in columns:
        a.anchor_column_name = columns[0]
    if not a.positive_column_name or a.positive_column_name not in columns:
        if len(columns) < 2:
            raise InvalidArgumentError(
                "the dataset needs a second column to take the positives from"
            )
        a.positive_column_name = columns[1]
    if a.as_triplets is not None:
        a.output_format = "triplet" if a.as_triplets else "n-tuple"
    if a.include_positives:
        a.output_format = "n-tuple"  # as sentence-transformers: the ranking order is kept
    if a.output_format == "n-tuple-scores":  # sentence-transformers' deprecated alias
        a.output_format, a.output_scores = "n-tuple", True
    if a.output_format not in OUTPUT_FORMATS:
        raise InvalidArgumentError(
            f"output_format must be one of {', '.join(map(repr, OUTPUT_FORMATS))} (or the "
            f"deprecated 'n-tuple-scores'), got {a.output_format!r}"
        )
    if a.margin is not None:
        a.absolute_margin = a.margin
    a.sampling_strategy = numbers.choice(
        a.sampling_strategy, "sampling_strategy", ("random", "top")
    )
    if a.dup_threshold is not None and not a.deep:
        raise InvalidArgumentError(
            "dup_threshold is a filter of negmine's own mining: pass deep=True with it"
        )
    _check_ids_column(a.ids_column, a.output_format, bool(a.output_scores))

    # Texts as they are: sentence-transformers raises ValueError for a non-string one (its
    # encode), where str() would embed None as "None"; InvalidTextError is a ValueError.
    anchors = text_list(a.dataset[a.anchor_column_name], f"dataset[{a.anchor_column_name!r}]")
    positive_texts = text_list(
        a.dataset[a.positive_column_name], f"dataset[{a.positive_column_name!r}]"
    )
    extra = [] if a.corpus is None else text_list(a.corpus, "corpus")

    # sentence-transformers counts the rows per anchor (repeated pairs included) for its
    # derived range_max and its candidate depth.
    rows_per_anchor = Counter(anchors)
    max_positives = max(rows_per_anchor.values())
    filtered = any(x is not None for x in (a.absolute_margin, a.relative_margin, a.max_score)) or (
        a.cross_encoder is not None and a.min_score is not None
    )
    a.num_negatives = numbers.integer(a.num_negatives, "num_negatives")
    if a.num_negatives < 1:
        raise InvalidArgumentError(
            f"num_negatives must be at least 1, got num_negatives={a.num_negatives}"
        )
    a.range_min = numbers.integer(a.range_min, "range_min")
    a.range_max = None if a.range_max is None else numbers.integer(a.range_max, "range_max")
    cap_note = ""
    if a.range_max is None and (not a.deep or a.sampling_strategy == "random"):
        a.range_max = a.range_min + a.num_negatives * (10 if filtered else 1) + max_positives
        if a.use_faiss and a.range_max + max_positives + 1 > _FAISS_GPU_K and _faiss_gpus() > 0:
            a.range_max = _FAISS_GPU_K - (max_positives + 1)
            cap_note = (
                f" Note that range_max was capped to {a.range_max} because FAISS on GPU can only "
                f"retrieve up to {_FAISS_GPU_K} documents per query, some of which are reserved "
                "for excluded candidates (sentence-transformers' cap, kept for the same window)."
            )
        if a.verbose:
            print(f"Setting range_max to {a.range_max} based on the provided parameters.")
    if a.range_min < 0:
        raise InvalidArgumentError(f"range_min must be non-negative, got range_min={a.range_min}")
    if a.range_max is not None:
        if a.range_min >= a.range_max:
            raise InvalidArgumentError(
                f"range_min must be smaller than range_max, got range_min={a.range_min} and "
                f"range_max={a.range_max}.{cap_note}"
            )
        if a.num_negatives > a.range_max - a.range_min:
            raise InvalidArgumentError(
                f"Cannot mine {a.num_negatives} negatives per query: only "
                f"{a.range_max - a.range_min} candidates remain after skipping the first "
                f"range_min={a.range_min} of range_max={a.range_max}. Consider decreasing "
                f"num_negatives or range_min, or increasing range_max.{cap_note}"
            )
    if a.seed is not None:
        a.seed = numbers.seed(a.seed)

    corpus_texts = list(dict.fromkeys(extra + positive_texts))
    corpus_index = {text: i for i, text in enumerate(corpus_texts)}
    queries = list(dict.fromkeys(anchors))
    query_index = {text: i for i, text in enumerate(queries)}
    positive_lists: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(anchors, positive_texts):
        row = positive_lists[query_index[anchor]]
        if corpus_index[positive] not in row:
            row.append(corpus_index[positive])
    # The query's own text is never its negative (sentence-transformers >= 6.3), unless it is
    # one of its positives and include_positives keeps those.
    own = [corpus_index.get(q, -1) for q in queries]
    if a.include_positives:
        for anchor, positive in zip(anchors, positive_texts):
            if anchor == positive:
                own[query_index[anchor]] = -1
    if a.verbose and not a.deep:
        if len(queries) != len(anchors):
            print(f"Found {len(queries)} unique queries out of {len(anchors)} total queries.")
        if max_positives > 1:
            average = np.mean(list(rows_per_anchor.values()))
            print(f"Found an average of {average:.3f} positives per query.")

    query_embeddings, corpus_embeddings = _embeddings(
        a.model,
        queries,
        corpus_texts,
        query_prompt_name=a.query_prompt_name,
        query_prompt=a.query_prompt,
        corpus_prompt_name=a.corpus_prompt_name,
        corpus_prompt=a.corpus_prompt,
        batch_size=a.batch_size,
        cache_folder=a.cache_folder,
        verbose=bool(a.verbose),
    )
    teacher = (
        None
        if a.cross_encoder is None
        else cross_encoder_teacher(a.cross_encoder, queries, corpus_texts, batch_size=a.batch_size)
    )
    metric = _metric(a.model)
    encode = {
        "query_prompt_name": a.query_prompt_name,
        "query_prompt": a.query_prompt,
        "corpus_prompt_name": a.corpus_prompt_name,
        "corpus_prompt": a.corpus_prompt,
        "batch_size": a.batch_size,
    }
    # The mining options that are also sentence-transformers' arguments, in the core's order.
    options: dict[str, Any] = {
        name: metric if name == "metric" else getattr(a, name)
        for name in OPTIONS
        if name in _ST_OPTIONS or name == "metric"
    }
    options["duplicates"] = None  # the corpus holds each text once
    options["exclude"] = [[i] if i >= 0 else [] for i in own]
    if a.deep:
        options["dup_threshold"] = a.dup_threshold
    else:
        # sentence-transformers' candidates per query, the depth its window is taken from
        options["max_depth"] = a.range_max + max_positives + 1
    parts: dict[str, Any] = {
        "query_texts": queries,
        "corpus_texts": corpus_texts,
        "query_embeddings": query_embeddings,
        "corpus_embeddings": corpus_embeddings,
        "options": options,
        "encode": encode,
    }
    if a.deep:
        result, out = _mine_deep(
            a,
            query_embeddings,
            corpus_embeddings,
            queries,
            corpus_texts,
            positive_lists,
            teacher,
            options,
        )
        return Mined(dataset=out, result=result, **parts)
    assert a.range_max is not None  # derived above when not deep
    pool = a.range_max + max_positives + 1  # sentence-transformers' candidates per query
    candidate_ids, scores = _candidates(
        query_embeddings, corpus_embeddings, pool, metric, a.threads
    )
    positive_scores = _pair_scores(query_embeddings, corpus_embeddings, positive_lists, metric)
    if teacher is not None:
        # The cross-encoder scores every candidate and positive; its scores rank and filter.
        rows, cols = np.nonzero(candidate_ids >= 0)
        scores = np.full(candidate_ids.shape, -np.inf, dtype=np.float32)
        scores[rows, cols] = teacher(rows.astype(np.int64), candidate_ids[rows, cols])
        pair_query = np.repeat(np.arange(len(queries)), [len(p) for p in positive_lists])
        flat = np.asarray([i for p in positive_lists for i in p], dtype=np.int64)
        positive_scores = teacher(pair_query.astype(np.int64), flat)
    indptr = np.concatenate(([0], np.cumsum([len(p) for p in positive_lists]))).astype(np.int64)
    flat_positives = np.asarray([i for p in positive_lists for i in p], dtype=np.int64)
    negative_ids, negative_scores, skipped = _select(
        candidate_ids,
        scores,
        indptr,
        flat_positives,
        positive_scores,
        np.asarray(own, dtype=np.int64),
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
        flat_positives,
        positive_scores,
        queries,
        corpus_texts,
        output_format=a.output_format,
        include_scores=bool(a.output_scores),
        anchor_column=a.anchor_column_name,
        positive_column=a.positive_column_name,
        ids_column=a.ids_column,
    )
    if a.verbose:
        _print_summary(
            out,
            a.output_format,
            negative_ids,
            negative_scores,
            indptr,
            positive_scores,
            skipped,
            n_rows=len(anchors),
            range_min=a.range_min,
            filters={
                "absolute_margin": a.absolute_margin,
                "relative_margin": a.relative_margin,
                "max_score": a.max_score,
                "min_score": a.min_score,
            },
        )
    removed_counts = np.zeros(len(FILTERS), dtype=np.int64)
    for name, (count, _) in skipped.items():
        removed_counts[FILTERS.index(name)] = count
    result = MiningResult(
        negative_ids=negative_ids,
        negative_scores=negative_scores,
        positive_indptr=indptr,
        positive_ids=flat_positives,
        positive_scores=positive_scores,
        removed=_no_removed(),
        report=build_report(
            n_queries=len(queries),
            num_negatives=a.num_negatives,
            options={k: v for k, v in options.items() if k != "exclude"},
            positives=len(flat_positives),
            excluded_duplicates=0,
            linked=0,
            found=(negative_ids >= 0).sum(axis=1),
            negative_scores=negative_scores,
            positive_scores=positive_scores,
            removed=_no_removed(),
            removed_counts=removed_counts,
        ),
    )
    return Mined(dataset=out, result=result, **parts)


_SIGNATURE = inspect.signature(mine_hard_negatives)
_ST_OPTIONS = frozenset(_SIGNATURE.parameters) - {"seed", "dup_threshold"}
"""The arguments named as mining options whose values go to the mining as given (``seed``
and ``dup_threshold`` take their own paths)."""


def _no_removed() -> dict[str, np.ndarray]:
    """``MiningResult.removed`` of a run that recorded no removed candidate."""
    return {
        "query": np.zeros(0, np.int64),
        "id": np.zeros(0, np.int64),
        "score": np.zeros(0, np.float32),
        "filter": np.zeros(0, np.uint8),
    }


def _check_ids_column(ids_column: str | None, output_format: str, output_scores: bool) -> None:
    """``ids_column`` checked before anything is encoded (``to_dataset`` checks it again):
    sentence-transformers' collator hands the loss one label column and tokenizes the rest."""
    if ids_column is None:
        return
    if not isinstance(ids_column, str) or not ids_column:
        raise InvalidArgumentError(f"ids_column must be a non-empty name, got {ids_column!r}")
    if ids_column not in ST_LABEL_COLUMNS:
        return
    if output_scores:
        raise InvalidArgumentError(
            f"ids_column {ids_column!r} and output_scores' 'scores' column are both label "
            "columns to sentence-transformers' trainer, which hands only one to the loss and "
            "tokenizes the other as text: drop output_scores (the masked loss needs only the "
            "ids) or name the ids column otherwise"
        )
    if output_format in ("labeled-pair", "labeled-list"):
        raise InvalidArgumentError(
            f"ids_column {ids_column!r} and the {output_format!r} layout's labels are both "
            "label columns to sentence-transformers' trainer, which hands only one to the "
            "loss: use the 'triplet' or 'n-tuple' layout, or another name for the ids"
        )


def _faiss_gpus() -> int:
    """GPUs faiss sees (0 without faiss: negmine does not need it)."""
    try:
        import faiss  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return 0
    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


def _candidates(
    queries: np.ndarray,
    corpus: np.ndarray,
    count: int,
    metric: Literal["dot", "cosine"],
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top ``count`` corpus rows (ids, float32 scores), exact. No more than the
    corpus holds: sentence-transformers pads past it with candidates that are never chosen,
    which :func:`_select` stands for (a ``range_max`` of a billion costs nothing)."""
    scores, ids = search(queries, corpus, min(count, len(corpus)), metric=metric, threads=threads)
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def _select(
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


def _print_summary(
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


def _mine_deep(
    a: SimpleNamespace,
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    queries: list[str],
    corpus_texts: list[str],
    positive_lists: list[list[int]],
    teacher: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    options: dict[str, Any],
) -> tuple[MiningResult, Any]:
    """``deep=True``: :func:`negmine.mine` over the whole corpus with ``options`` (see the
    README's table)."""
    if a.include_positives and (a.absolute_margin is not None or a.relative_margin is not None):
        raise InvalidArgumentError(
            "include_positives keeps the positives among the candidates, so margins "
            "relative to them cannot apply: pass one or the other"
        )
    seed = random.getrandbits(64) if a.seed is None else a.seed
    result = mine(
        query_embeddings,
        corpus_embeddings,
        [[] for _ in queries] if a.include_positives else positive_lists,
        **{**options, "duplicates": "auto"},
        corpus_texts=corpus_texts,
        seed=seed,
        rescore=teacher,
        threads=a.threads,
        progress=bool(a.verbose),
    )
    if a.include_positives:
        # The output's positive columns come from the labelled pairs.
        result.positive_indptr = np.concatenate(
            ([0], np.cumsum([len(p) for p in positive_lists]))
        ).astype(np.int64)
        result.positive_ids = np.asarray([i for p in positive_lists for i in p], np.int64)
        result.positive_scores = _pair_scores(
            query_embeddings, corpus_embeddings, positive_lists, options["metric"]
        )
    if a.verbose:
        print(result.report)
    return result, to_dataset(
        result,
        queries,
        corpus_texts,
        output_format=a.output_format,
        include_scores=bool(a.output_scores),
        score_source="teacher" if teacher is not None else "retriever",
        anchor_column=a.anchor_column_name,
        positive_column=a.positive_column_name,
        ids_column=a.ids_column,
    )


def _metric(model: Any) -> Literal["dot", "cosine"]:
    """negmine's metric for the model's similarity function (on normalised embeddings)."""
    name = getattr(model, "similarity_fn_name", None) or "cosine"
    if name == "cosine":
        return "cosine"
    if name == "dot":
        return "dot"
    raise InvalidArgumentError(
        f"the model's similarity function is {name!r}; negmine mines with 'cosine' or 'dot'"
    )


def _pair_scores(
    queries: np.ndarray,
    corpus: np.ndarray,
    lists: list[list[int]],
    metric: Literal["dot", "cosine"],
) -> np.ndarray:
    """Each listed pair's exact score (negmine's, as the search computes it)."""
    from negmine.search import rescore

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


def _cache_file(
    folder: str, kind: str, model: Any, prompt: Any, name: Any, texts: list[str]
) -> str:
    """sentence-transformers' cache file name for these texts (so the caches are shared)."""
    card = getattr(model, "model_card_data", None)
    model_name = getattr(card, "base_model", None) or ""
    digest = hashlib.sha256(repr((model_name, prompt, name, texts)).encode()).hexdigest()
    return os.path.join(folder, f"{kind}_embeddings_{digest}.npy")


def _embeddings(
    model: Any,
    queries: list[str],
    corpus: list[str],
    *,
    query_prompt_name: str | None,
    query_prompt: str | None,
    corpus_prompt_name: str | None,
    corpus_prompt: str | None,
    batch_size: int,
    cache_folder: str | None,
    verbose: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 embeddings of the queries and the corpus, read from or written to
    ``cache_folder`` (written atomically)."""
    encoders = model_encoders(model)
    out = []
    for kind, texts, name, prompt in (
        ("query", queries, query_prompt_name, query_prompt),
        ("corpus", corpus, corpus_prompt_name, corpus_prompt),
    ):
        path = None
        if cache_folder:
            os.makedirs(cache_folder, exist_ok=True)
            path = _cache_file(cache_folder, kind, model, prompt, name, texts)
            if os.path.exists(path):
                out.append(np.ascontiguousarray(np.load(path), dtype=np.float32))
                continue
        embeddings = encode_texts(
            encoders[kind],
            texts,
            batch_size=batch_size,
            prompt=prompt,
            prompt_name=name,
            verbose=verbose,
        )
        if path is not None:  # atomic, and a full disk is an OSError with its errno
            save_embeddings(path, embeddings)
        out.append(np.ascontiguousarray(embeddings))
    return out[0], out[1]


def model_encoders(model: Any) -> dict[str, Callable[..., Any]]:
    """The model's query and corpus encoders, as sentence-transformers calls them:
    ``encode_query`` / ``encode_document``, or ``encode`` for a model with only that
    (sentence-transformers < 5)."""
    fallback = getattr(model, "encode", None)
    encoders = {
        kind: next((f for f in (getattr(model, name, None), fallback) if callable(f)), None)
        for kind, name in (("query", "encode_query"), ("corpus", "encode_document"))
    }
    found = {kind: f for kind, f in encoders.items() if f is not None}
    if len(found) < 2:
        raise InvalidTypeError(
            "model must encode texts as a SentenceTransformer does (encode_query and "
            f"encode_document, or encode), got {type(model).__name__}"
        )
    return found


def encode_texts(
    encoder: Callable[..., Any],
    texts: list[str],
    *,
    batch_size: int,
    prompt: str | None,
    prompt_name: str | None,
    verbose: bool,
) -> np.ndarray:
    """``texts`` through one of :func:`model_encoders`, normalised, as float32 rows."""
    return np.asarray(
        encoder(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=verbose,
            prompt_name=prompt_name,
            prompt=prompt,
        ),
        dtype=np.float32,
    )
