"""``negmine.mine_hard_negatives``: sentence-transformers' ``util.mine_hard_negatives`` (6.x)
with its signature and output, backed by :func:`negmine.mine`, so that switching is one import.

What is the same: the arguments (names, defaults, meaning), the column selection, the corpus
built from ``corpus`` plus the positives (de-duplicated by text, in first-seen order),
anchors de-duplicated with all their positives gathered, the embeddings (``encode_query`` /
``encode_document``, normalised, with the prompts), the ``cache_folder`` files (the same names,
so one side reads the other's cache), the query's own text never a negative, the filters'
definitions (margins against the query's lowest positive score) and the output layouts
(``output_format``, ``output_scores``).

What differs, on purpose:

- **Exact and deep.** negmine searches the whole corpus exactly and windows the *filtered*
  ranking, fetching deeper when filters empty a window; sentence-transformers filters inside
  its top ``range_max + max_positives + 1`` and leaves the window short. ``range_max=None``
  is unbounded for ``"top"``. ``use_faiss``, ``faiss_batch_size`` and ``use_multi_process`` are
  accepted and change nothing (there is no k cap and no backend-dependent result).
- **Seeded.** ``sampling_strategy="random"`` draws from ``seed`` (a keyword of this
  function); sentence-transformers uses Python's global ``random``.
- **Ties** go to the smaller corpus index (sentence-transformers' torch/faiss order is
  arbitrary).
- **A cross-encoder judges, the retriever ranks.** With ``cross_encoder``, the score filters
  (margins, ``max_score``, ``min_score``) read the cross-encoder's scores (as in
  sentence-transformers) but the candidates stay in the retriever's order (sentence-transformers
  re-ranks them by the cross-encoder); ``output_scores`` then writes the cross-encoder's scores.
- **Duplicates** are grouped by identical text (as sentence-transformers does) and also
  ``dup_threshold`` is available (near-duplicates of positives), off by default.
- ``include_positives=True`` keeps the positives among the candidates (so the margins, which
  are relative to them, cannot apply: refused together).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from negmine import _numbers as numbers
from negmine._inputs import text_list
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.mine import mine
from negmine.outputs import OUTPUT_FORMATS, to_dataset
from negmine.store import save_embeddings
from negmine.teachers import cross_encoder as cross_encoder_teacher


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
    output_format: Literal["triplet", "n-tuple", "labeled-pair", "labeled-list"] = "triplet",
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
    seed: int = 0,
    dup_threshold: float | None = None,
    threads: int | None = None,
) -> Any:
    """Hard negatives for a ``datasets.Dataset`` of (anchor, positive) pairs, as
    sentence-transformers' ``util.mine_hard_negatives`` returns them (same arguments and output
    dataset), mined exactly by negmine. See the module docstring for the differences.

    Extra keywords: ``seed`` (random sampling), ``dup_threshold`` (drop near-duplicates of a
    positive, cosine), ``threads`` (negmine's cores).
    """
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
    if margin is not None:
        absolute_margin = margin
    if output_format not in OUTPUT_FORMATS:
        raise InvalidArgumentError(
            f"output_format must be one of {', '.join(map(repr, OUTPUT_FORMATS))}, got "
            f"{output_format!r}"
        )
    sampling_strategy = numbers.choice(  # type: ignore[assignment]
        sampling_strategy, "sampling_strategy", ("random", "top")
    )
    num_negatives = numbers.count(num_negatives, "num_negatives")
    batch_size = numbers.count(batch_size, "batch_size")
    if include_positives:
        if absolute_margin is not None or relative_margin is not None:
            raise InvalidArgumentError(
                "include_positives keeps the positives among the candidates, so margins "
                "relative to them cannot apply: pass one or the other"
            )
        output_format = "n-tuple"  # as sentence-transformers: the ranking order is kept
    columns = list(getattr(dataset, "column_names", None) or [])
    if not columns:
        raise InvalidTypeError(
            f"dataset must be a datasets.Dataset with (anchor, positive) columns, got "
            f"{type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise InvalidArgumentError("the dataset is empty")
    if not anchor_column_name or anchor_column_name not in columns:
        anchor_column_name = columns[0]
    if not positive_column_name or positive_column_name not in columns:
        if len(columns) < 2:
            raise InvalidArgumentError(
                "the dataset needs a second column to take the positives from"
            )
        positive_column_name = columns[1]

    # Texts as they are: sentence-transformers raises ValueError for a non-string one (its
    # encode), where str() would embed None as "None"; InvalidTextError is a ValueError.
    anchors = text_list(dataset[anchor_column_name], f"dataset[{anchor_column_name!r}]")
    positive_texts = text_list(dataset[positive_column_name], f"dataset[{positive_column_name!r}]")
    extra = [] if corpus is None else text_list(corpus, "corpus")
    corpus_texts = list(dict.fromkeys(extra + positive_texts))
    corpus_index = {text: i for i, text in enumerate(corpus_texts)}
    queries = list(dict.fromkeys(anchors))
    query_index = {text: i for i, text in enumerate(queries)}
    positive_lists: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(anchors, positive_texts):
        row = positive_lists[query_index[anchor]]
        if corpus_index[positive] not in row:
            row.append(corpus_index[positive])
    # The query's own text is never its negative (sentence-transformers >= 6.3).
    own = [[corpus_index[q]] if q in corpus_index else [] for q in queries]

    query_embeddings, corpus_embeddings = _embeddings(
        model,
        queries,
        corpus_texts,
        query_prompt_name=query_prompt_name,
        query_prompt=query_prompt,
        corpus_prompt_name=corpus_prompt_name,
        corpus_prompt=corpus_prompt,
        batch_size=batch_size,
        cache_folder=cache_folder,
        verbose=bool(verbose),
    )
    if range_max is None and sampling_strategy == "random":
        # sentence-transformers' window for sampling: the candidates it would retrieve.
        most = max(len(p) for p in positive_lists)
        filtered = any(x is not None for x in (absolute_margin, relative_margin, max_score)) or (
            cross_encoder is not None and min_score is not None
        )
        range_max = range_min + num_negatives * (10 if filtered else 1) + most
    teacher = (
        None
        if cross_encoder is None
        else cross_encoder_teacher(cross_encoder, queries, corpus_texts, batch_size=batch_size)
    )
    result = mine(
        query_embeddings,
        corpus_embeddings,
        [[] for _ in queries] if include_positives else positive_lists,
        num_negatives=num_negatives,
        metric=_metric(model),
        range_min=range_min,
        range_max=range_max,
        max_score=max_score,
        min_score=min_score,
        absolute_margin=absolute_margin,
        relative_margin=relative_margin,
        dup_threshold=dup_threshold,
        duplicates="auto",
        corpus_texts=corpus_texts,
        sampling_strategy=sampling_strategy,
        seed=seed,
        rescore=teacher,
        exclude=own,
        threads=threads,
        progress=bool(verbose),
    )
    if include_positives:
        # The output's positive columns come from the labelled pairs.
        result.positive_indptr = np.concatenate(
            ([0], np.cumsum([len(p) for p in positive_lists]))
        ).astype(np.int64)
        result.positive_ids = np.asarray([i for p in positive_lists for i in p], np.int64)
        result.positive_scores = _pair_scores(
            query_embeddings, corpus_embeddings, positive_lists, _metric(model)
        )
    if verbose:
        print(result.report)
    return to_dataset(
        result,
        queries,
        corpus_texts,
        output_format=output_format,
        include_scores=bool(output_scores),
        score_source="teacher" if teacher is not None else "retriever",
        anchor_column=anchor_column_name,
        positive_column=positive_column_name,
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
    if not callable(getattr(model, "encode", None)):
        raise InvalidTypeError(f"model must be a SentenceTransformer, got {type(model).__name__}")
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
        encode = getattr(model, "encode_query" if kind == "query" else "encode_document", None)
        encode = encode if callable(encode) else model.encode
        embeddings = np.asarray(
            encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=verbose,
                prompt_name=name,
                prompt=prompt,
            ),
            dtype=np.float32,
        )
        if path is not None:  # atomic, and a full disk is an OSError with its errno
            save_embeddings(path, embeddings)
        out.append(np.ascontiguousarray(embeddings))
    return out[0], out[1]
