"""Teachers for :func:`negmine.mine`'s ``rescore=``: callables ``(query_ids, corpus_ids) ->
scores`` that judge candidates with a stronger model than the retriever (RocketQA's
cross-encoder denoising, NV-Retriever's teacher filtering).

:func:`cross_encoder` wraps a sentence-transformers ``CrossEncoder`` (or a path to one) over
the query and corpus texts. Any other model works the same way: a callable taking two int64
arrays of row indices and returning one float per pair.

:func:`make_teacher` checks ``mine``'s teacher arguments and wraps the callable in a
:class:`Teacher`, which the core calls (also importable from :mod:`negmine.mine`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from negmine import _numbers as numbers
from negmine._inputs import text_list
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.idlists import Prepared
from negmine.options import MiningOptions
from negmine.report import TeacherReport


def cross_encoder(
    model: Any,
    query_texts: Sequence[str],
    corpus_texts: Sequence[str],
    *,
    batch_size: int = 64,
    device: str | None = None,
    activation_fn: Callable[[Any], Any] | None = None,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A ``rescore=`` teacher scoring ``(query_texts[q], corpus_texts[c])`` pairs with a
    sentence-transformers ``CrossEncoder``.

    Args:
        model: a ``CrossEncoder``, or a name or local path to load one from
            (``pip install 'negmine[st]'``).
        query_texts, corpus_texts: the texts of the query rows and corpus rows, indexed like
            the embeddings given to :func:`negmine.mine`.
        batch_size: pairs per forward pass.
        device: where a model loaded from a path runs (default: sentence-transformers' choice).
        activation_fn: passed to ``CrossEncoder.predict`` (default: the model's own, e.g. a
            sigmoid for a one-label model: scores in ``(0, 1)``). The margins of ``mine``
            compare these scores, so choose the scale the thresholds are meant for.

    Returns:
        The teacher: ``teacher(query_ids, corpus_ids) -> float32 scores``.

    Example::

        teacher = negmine.teachers.cross_encoder("cross-encoder/ms-marco-MiniLM-L6-v2",
                                                 query_texts, corpus_texts)
        result = negmine.mine(queries, corpus, positives, rescore=teacher,
                              relative_margin=0.05)
    """
    # Checked once here, not pair by pair: a None must not reach the model as a text.
    query_texts = text_list(query_texts, "query_texts")
    corpus_texts = text_list(corpus_texts, "corpus_texts")
    batch_size = numbers.count(batch_size, "batch_size")
    if isinstance(model, (str, os.PathLike)):
        try:
            from sentence_transformers import CrossEncoder
        except ImportError:  # pragma: no cover - the st extra is a test dependency
            raise ImportError(
                "loading a cross-encoder needs sentence-transformers: pip install 'negmine[st]'"
            ) from None
        model = CrossEncoder(os.fspath(model), device=device)
    if not callable(getattr(model, "predict", None)):
        raise InvalidTypeError(
            f"model must be a CrossEncoder (or a path to one), got {type(model).__name__}"
        )
    n_queries, n_corpus = len(query_texts), len(corpus_texts)

    def teacher(query_ids: np.ndarray, corpus_ids: np.ndarray) -> np.ndarray:
        q = np.asarray(query_ids, dtype=np.int64)
        c = np.asarray(corpus_ids, dtype=np.int64)
        if len(q) and (q.min() < 0 or q.max() >= n_queries):
            raise InvalidArgumentError(
                f"query row {int(q.max() if q.max() >= n_queries else q.min())} has no text: "
                f"query_texts holds {n_queries}"
            )
        if len(c) and (c.min() < 0 or c.max() >= n_corpus):
            raise InvalidArgumentError(
                f"corpus row {int(c.max() if c.max() >= n_corpus else c.min())} has no text: "
                f"corpus_texts holds {n_corpus}"
            )
        pairs = [(query_texts[i], corpus_texts[j]) for i, j in zip(q.tolist(), c.tolist())]
        if not pairs:
            return np.empty(0, dtype=np.float32)
        kwargs: dict[str, Any] = {"batch_size": batch_size, "show_progress_bar": False}
        if activation_fn is not None:
            kwargs["activation_fn"] = activation_fn
        answer = np.asarray(model.predict(pairs, **kwargs))
        # A multi-label model gives one column per label: the caller must pick the score.
        if answer.shape != (len(pairs),):
            raise InvalidArgumentError(
                f"the cross-encoder returned scores of shape {answer.shape} for {len(pairs)} "
                "pairs: a teacher needs one score per pair (a one-label model)"
            )
        return numbers.float32_scores(
            answer,
            len(pairs),
            "the cross-encoder",
            lambda i: f"query row {int(q[i])} with corpus row {int(c[i])}",
        )

    return teacher


class Teacher:
    """``mine(rescore=...)``'s callable as the core calls it: pairs in batches, scores checked
    and made float32, pairs counted for the report."""

    def __init__(
        self,
        score: Callable[[np.ndarray, np.ndarray], npt.ArrayLike],
        percentile: float | None,
        batch_size: int,
    ) -> None:
        self.score = score
        self.percentile = percentile
        self.batch_size = batch_size
        self.cut: float | None = None

    def __call__(self, query_ids: np.ndarray, corpus_ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(query_ids), dtype=np.float32)
        for start in range(0, len(query_ids), self.batch_size):
            stop = min(start + self.batch_size, len(query_ids))
            q, c = query_ids[start:stop], corpus_ids[start:stop]
            scores = numbers.float32_scores(self.score(q, c), len(q), "rescore", _pair_names(q, c))
            out[start:stop] = scores
        return out

    def judge_positives(
        self, prepared: Prepared, options: MiningOptions
    ) -> tuple[Prepared, MiningOptions]:
        """``prepared`` with the teacher's scores of every positive (all queries at once, so
        that the percentile cut does not depend on chunking), and the options the core
        applies (``max_score`` lowered to the percentile cut)."""
        rows = np.repeat(
            np.arange(len(prepared.pos_indptr) - 1, dtype=np.int64), np.diff(prepared.pos_indptr)
        )
        scores = self(rows, prepared.pos_ids.astype(np.int64))
        if self.percentile is not None:
            if not len(scores):
                raise InvalidArgumentError("rescore_percentile needs positives: no query has any")
            self.cut = float(np.float32(np.percentile(scores.astype(np.float64), self.percentile)))
            given = options.max_score
            cut = self.cut if given is None else min(self.cut, float(given))
            options = options.replace(max_score=cut)
        return dataclasses.replace(prepared, teacher_positive_scores=scores), options

    def report(self, assembled: TeacherReport | None) -> TeacherReport | None:
        """``assembled`` (the counts, from :func:`~negmine.steps.assemble`) with this
        teacher's cut."""
        if assembled is None:
            return None
        return dataclasses.replace(assembled, percentile=self.percentile, cut=self.cut)


def _pair_names(query_ids: np.ndarray, corpus_ids: np.ndarray) -> Callable[[int], str]:
    """Names pair ``i`` in a message about the teacher's score of it."""
    return lambda i: f"query {int(query_ids[i])} with corpus row {int(corpus_ids[i])}"


def make_teacher(rescore: object, percentile: object, batch_size: object) -> Teacher | None:
    """``mine``'s teacher arguments, checked."""
    if rescore is None:
        if percentile is not None:
            raise InvalidArgumentError("rescore_percentile needs a rescore callable")
        return None
    if not callable(rescore):
        raise InvalidTypeError(
            f"rescore must be a callable (query_ids, corpus_ids) -> scores, got "
            f"{type(rescore).__name__}"
        )
    cut = (
        None
        if percentile is None
        else numbers.real(percentile, "rescore_percentile", low=0.0, high=100.0)
    )
    size = numbers.count(batch_size, "rescore_batch_size")
    return Teacher(rescore, cut, size)
