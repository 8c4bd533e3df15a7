"""The inputs of :func:`negmine.mine_hard_negatives`: its arguments checked with
sentence-transformers' checks, messages and derived defaults (the output format's aliases, the
column names, the window's ``range_max``), in its order, so that a bad call fails as it fails
there; and the dataset's (anchor, positive) pairs as the rows that are mined (:class:`Rows`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from negmine import _numbers as numbers
from negmine._inputs import column_name, text_list
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.outputs import OUTPUT_FORMATS, ST_LABEL_COLUMNS

# faiss on a GPU returns at most this many rows per query: sentence-transformers caps a derived
# range_max (with use_faiss=True) to fit, and so does negmine, for the same window.
FAISS_GPU_K = 2048


def check_arguments(a: SimpleNamespace) -> None:
    """The checks that come before the texts are read, with the defaults they derive (the
    column names, the output format) written back into ``a``."""
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
    _check_output_format(a)
    if a.margin is not None:
        a.absolute_margin = a.margin
    a.sampling_strategy = numbers.choice(
        a.sampling_strategy, "sampling_strategy", ("random", "top")
    )
    if a.dup_threshold is not None and not a.deep:
        raise InvalidArgumentError(
            "dup_threshold is a filter of negmine's own mining: pass deep=True with it"
        )
    check_ids_column(a.ids_column, a.output_format, bool(a.output_scores))


def _check_output_format(a: SimpleNamespace) -> None:
    """``output_format`` after sentence-transformers' aliases (``as_triplets``,
    ``include_positives``, ``"n-tuple-scores"``), checked."""
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


def check_ids_column(ids_column: str | None, output_format: str, output_scores: bool) -> None:
    """``ids_column`` checked before anything is encoded (``to_dataset`` checks it again):
    sentence-transformers' collator hands the loss one label column and tokenizes the rest."""
    if ids_column is None:
        return
    column_name(ids_column, "ids_column")
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


def read_texts(a: SimpleNamespace) -> tuple[list[str], list[str], list[str]]:
    """The anchors, the positives (one per dataset row) and the extra ``corpus``, as they
    are: sentence-transformers raises ``ValueError`` for a non-string one (its encode), where
    ``str()`` would embed ``None`` as ``"None"``; ``InvalidTextError`` is a ``ValueError``."""
    anchors = text_list(a.dataset[a.anchor_column_name], f"dataset[{a.anchor_column_name!r}]")
    positives = text_list(a.dataset[a.positive_column_name], f"dataset[{a.positive_column_name!r}]")
    extra = [] if a.corpus is None else text_list(a.corpus, "corpus")
    return anchors, positives, extra


def check_window(a: SimpleNamespace, max_positives: int) -> None:
    """``num_negatives`` and the window ``[range_min, range_max)`` checked, and
    sentence-transformers' ``range_max`` derived when none is given (``max_positives``: the
    most dataset rows of one anchor)."""
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
        if a.use_faiss and a.range_max + max_positives + 1 > FAISS_GPU_K and faiss_gpus() > 0:
            a.range_max = FAISS_GPU_K - (max_positives + 1)
            cap_note = (
                f" Note that range_max was capped to {a.range_max} because FAISS on GPU can only "
                f"retrieve up to {FAISS_GPU_K} documents per query, some of which are reserved "
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


def faiss_gpus() -> int:
    """GPUs faiss sees (0 without faiss: negmine does not need it)."""
    try:
        import faiss  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return 0
    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


@dataclass
class Rows:
    """The dataset's (anchor, positive) pairs as the rows mined (see :meth:`of`)."""

    queries: list[str]
    """The distinct anchors, in order of first appearance: query row ``q``."""
    corpus_texts: list[str]
    """``corpus + positives`` with repeated texts dropped: corpus row ``c``."""
    positive_lists: list[list[int]]
    """Each query's positives (corpus rows), in order of first appearance, without repeats."""
    own: list[int]
    """Each query's own text's corpus row, never its negative; ``-1`` for none."""
    rows_per_anchor: Counter[str]
    """The dataset's rows per anchor, repeated pairs included: sentence-transformers counts
    them for its derived ``range_max`` and its candidate depth."""

    @classmethod
    def of(
        cls, anchors: list[str], positives: list[str], extra: list[str], *, include_positives: bool
    ) -> Rows:
        """The rows of the pairs ``zip(anchors, positives)`` with the ``extra`` corpus. The
        query's own text is never its negative (sentence-transformers >= 6.3), unless it is one
        of its positives and ``include_positives`` keeps those."""
        corpus_texts = list(dict.fromkeys(extra + positives))
        corpus_index = {text: i for i, text in enumerate(corpus_texts)}
        queries = list(dict.fromkeys(anchors))
        query_index = {text: i for i, text in enumerate(queries)}
        positive_lists: list[list[int]] = [[] for _ in queries]
        for anchor, positive in zip(anchors, positives):
            row = positive_lists[query_index[anchor]]
            if corpus_index[positive] not in row:
                row.append(corpus_index[positive])
        own = [corpus_index.get(q, -1) for q in queries]
        if include_positives:
            for anchor, positive in zip(anchors, positives):
                if anchor == positive:
                    own[query_index[anchor]] = -1
        return cls(queries, corpus_texts, positive_lists, own, Counter(anchors))

    @property
    def n_pairs(self) -> int:
        """The dataset's rows."""
        return sum(self.rows_per_anchor.values())

    @property
    def max_positives(self) -> int:
        """The most dataset rows of one anchor."""
        return max(self.rows_per_anchor.values())

    def print_counts(self) -> None:
        """sentence-transformers' counts of the queries and their positives (verbose)."""
        if len(self.queries) != self.n_pairs:
            print(f"Found {len(self.queries)} unique queries out of {self.n_pairs} total queries.")
        if self.max_positives > 1:
            average = np.mean(list(self.rows_per_anchor.values()))
            print(f"Found an average of {average:.3f} positives per query.")
