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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from negmine._st_inputs import Rows, check_arguments, check_window, read_texts
from negmine._st_window import Teacher, lists_csr, mine_window, pair_scores
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.mine import OPTIONS, mine
from negmine.outputs import to_dataset
from negmine.result import MiningResult
from negmine.store import save_embeddings
from negmine.teachers import cross_encoder as cross_encoder_teacher


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
    check_arguments(a)
    rows = Rows.of(*read_texts(a), include_positives=a.include_positives)
    check_window(a, rows.max_positives)
    if a.verbose and not a.deep:
        rows.print_counts()
    query_embeddings, corpus_embeddings = _embeddings(
        a.model,
        rows.queries,
        rows.corpus_texts,
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
        else cross_encoder_teacher(
            a.cross_encoder, rows.queries, rows.corpus_texts, batch_size=a.batch_size
        )
    )
    metric = _metric(a.model)
    options = _options(a, rows, metric)
    if a.deep:
        result, out = _mine_deep(a, rows, query_embeddings, corpus_embeddings, teacher, options)
    else:
        result, out = mine_window(
            a, rows, query_embeddings, corpus_embeddings, teacher, metric=metric, options=options
        )
    return Mined(
        dataset=out,
        result=result,
        query_texts=rows.queries,
        corpus_texts=rows.corpus_texts,
        query_embeddings=query_embeddings,
        corpus_embeddings=corpus_embeddings,
        options=options,
        encode={
            "query_prompt_name": a.query_prompt_name,
            "query_prompt": a.query_prompt,
            "corpus_prompt_name": a.corpus_prompt_name,
            "corpus_prompt": a.corpus_prompt,
            "batch_size": a.batch_size,
        },
    )


def _options(a: SimpleNamespace, rows: Rows, metric: Literal["dot", "cosine"]) -> dict[str, Any]:
    """The :func:`negmine.mine` keywords of this call (see :attr:`Mined.options`): the mining
    options that are also sentence-transformers' arguments, in the core's order, and the
    rows each query excludes."""
    options: dict[str, Any] = {
        name: metric if name == "metric" else getattr(a, name)
        for name in OPTIONS
        if name in _ST_OPTIONS or name == "metric"
    }
    options["duplicates"] = None  # the corpus holds each text once
    options["exclude"] = [[i] if i >= 0 else [] for i in rows.own]
    if a.deep:
        options["dup_threshold"] = a.dup_threshold
    else:
        # sentence-transformers' candidates per query, the depth its window is taken from
        options["max_depth"] = a.range_max + rows.max_positives + 1
    return options


_SIGNATURE = inspect.signature(mine_hard_negatives)
_ST_OPTIONS = frozenset(_SIGNATURE.parameters) - {"seed", "dup_threshold"}
"""The arguments named as mining options whose values go to the mining as given (``seed``
and ``dup_threshold`` take their own paths)."""


def _mine_deep(
    a: SimpleNamespace,
    rows: Rows,
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    teacher: Teacher | None,
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
        [[] for _ in rows.queries] if a.include_positives else rows.positive_lists,
        **{**options, "duplicates": "auto"},
        corpus_texts=rows.corpus_texts,
        seed=seed,
        rescore=teacher,
        threads=a.threads,
        progress=bool(a.verbose),
    )
    if a.include_positives:
        # The output's positive columns come from the labelled pairs.
        result.positive_indptr, result.positive_ids = lists_csr(rows.positive_lists)
        result.positive_scores = pair_scores(
            query_embeddings, corpus_embeddings, rows.positive_lists, options["metric"]
        )
    if a.verbose:
        print(result.report)
    return result, to_dataset(
        result,
        rows.queries,
        rows.corpus_texts,
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
