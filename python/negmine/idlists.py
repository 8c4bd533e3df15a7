"""The id lists mining needs, for all queries at once: each query's positives (with those of
the queries linked to it) and its exclusions (its positives, their duplicate-group members and
the ids it must never be served), as sorted, deduplicated int64 CSR pairs (:class:`Prepared`).

Linking and duplicate groups are global, so :func:`prepare` runs once per run, before any
chunk is mined (by :func:`negmine.mine`, the checkpointed directory runs and
:mod:`negmine.distributed`); :func:`positives_csr` alone is what the refresher checks its
positives with. The names are importable from :mod:`negmine.mine` too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import numpy.typing as npt

from negmine import _core
from negmine import _numbers as numbers
from negmine._core import Embeddings
from negmine._inputs import IdsLike, as_csr, distinct_ids, gather_lists, pairs_to_csr, rows_of
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.qrels import load_qrels
from negmine.texts import TextScan, TextsLike, as_source, scan_texts

Duplicates = Union[Literal["auto"], None, npt.ArrayLike]


@dataclass(frozen=True)
class Prepared:
    """The id lists the core needs, computed once for all queries (linking and duplicate
    groups are global, so chunked runs must share them)."""

    pos_indptr: np.ndarray
    pos_ids: np.ndarray
    ex_indptr: np.ndarray
    ex_ids: np.ndarray
    groups: np.ndarray | None
    linked: int
    teacher_positive_scores: np.ndarray | None = None
    """With a teacher (``mine(rescore=...)``): its score of each of ``pos_ids``."""
    excluded_duplicates: int | None = None
    """Exclusions that are duplicate-group members of positives (``None``: all exclusions but
    the positives are, i.e. no ``exclude`` was given)."""

    def id_lists(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Positives and exclusions as the core takes them: two CSR pairs."""
        return (self.pos_indptr, self.pos_ids), (self.ex_indptr, self.ex_ids)

    def rows(self, start: int, stop: int) -> Prepared:
        """The lists of queries ``start..stop``."""
        p0, p1 = self.pos_indptr[start], self.pos_indptr[stop]
        e0, e1 = self.ex_indptr[start], self.ex_indptr[stop]
        return Prepared(
            pos_indptr=self.pos_indptr[start : stop + 1] - p0,
            pos_ids=self.pos_ids[p0:p1],
            ex_indptr=self.ex_indptr[start : stop + 1] - e0,
            ex_ids=self.ex_ids[e0:e1],
            groups=self.groups,
            linked=self.linked,
            teacher_positive_scores=None
            if self.teacher_positive_scores is None
            else self.teacher_positive_scores[p0:p1],
        )


def entry_rows(indptr: np.ndarray) -> np.ndarray:
    """The row of each entry of a CSR pair with this ``indptr`` (int64)."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def check_in_corpus(ids: np.ndarray, n_corpus: int, what: str) -> None:
    """Raises ``InvalidArgumentError`` naming the first of ``ids`` outside ``0..n_corpus``
    (``what``: ``"positive"``, ``"exclude"``)."""
    if len(ids) and (ids.min() < 0 or ids.max() >= n_corpus):
        bad = ids[(ids < 0) | (ids >= n_corpus)][0]
        raise InvalidArgumentError(
            f"{what} id {bad} is out of range for a corpus of {n_corpus} rows"
        )


def positives_csr(
    positives: IdsLike | str | os.PathLike[str], n_queries: int, n_corpus: int
) -> tuple[np.ndarray, np.ndarray]:
    """``positives`` in any form :func:`negmine.mine` takes (lists, a CSR pair, a qrels path)
    as a sorted, deduplicated int64 CSR pair over ``n_queries``, every id checked against
    ``n_corpus``."""
    if isinstance(positives, (str, os.PathLike)):
        positives = load_qrels(positives, n_queries=n_queries, n_corpus=n_corpus)
    csr = as_csr(positives, n_queries, "positives")
    if csr is None:
        raise InvalidArgumentError(
            "positives are required: one list of corpus ids per query (a list may be empty: "
            "such a query has nothing excluded and no margin filters), a "
            "CSR pair or a qrels path"
        )
    check_in_corpus(csr[1], n_corpus, "positive")  # one list per query, checked by as_csr
    return distinct_ids(csr, n_queries)


def prepare(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    positives: IdsLike | str | os.PathLike[str],
    *,
    duplicates: Duplicates = "auto",
    corpus_texts: TextsLike | TextScan | None = None,
    query_dup_threshold: float | None = None,
    threads: int | None = None,
    exclude: IdsLike = None,
) -> Prepared:
    """Positives (with those of linked queries) and exclusions (with duplicate-group members,
    and ``exclude``: ids never returned that are not positives)."""
    n_queries, n_corpus = rows_of(queries), rows_of(corpus)
    pos_indptr, pos_ids = positives_csr(positives, n_queries, n_corpus)
    linked = 0
    if query_dup_threshold is not None:
        components = _core.link_queries(queries, float(query_dup_threshold), threads=threads)
        components = components.astype(np.int64)
        linked = int((np.bincount(components, minlength=n_queries)[components] > 1).sum())
        pos_indptr, pos_ids = shared_positives(pos_indptr, pos_ids, components)
    groups = corpus_groups(corpus, duplicates, corpus_texts, threads)
    ex_indptr, ex_ids = pos_indptr, pos_ids
    if groups is not None and len(pos_ids):
        ex_indptr, ex_ids = with_group_members(pos_indptr, pos_ids, groups)
    duplicates_excluded = len(ex_ids) - len(pos_ids)
    extra = as_csr(exclude, n_queries, "exclude")
    if extra is not None and len(extra[1]):
        check_in_corpus(extra[1], n_corpus, "exclude")
        ex_indptr, ex_ids = pairs_to_csr(
            np.concatenate([entry_rows(ex_indptr), entry_rows(extra[0])]),
            np.concatenate([ex_ids, extra[1]]),
            n_queries,
        )
    return Prepared(
        pos_indptr,
        pos_ids,
        ex_indptr,
        ex_ids,
        groups,
        linked,
        excluded_duplicates=duplicates_excluded,
    )


def shared_positives(
    indptr: np.ndarray, ids: np.ndarray, components: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's positives are those of its whole linked component (``components``: an
    int64 component id per query), as CSR."""
    n_queries = len(indptr) - 1
    comp_indptr, comp_ids = pairs_to_csr(components[entry_rows(indptr)], ids, n_queries)
    counts, shared = gather_lists(comp_indptr, comp_ids, components)
    return pairs_to_csr(np.repeat(np.arange(n_queries), counts), shared, n_queries)


def with_group_members(
    indptr: np.ndarray, ids: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``ids`` with every member of their duplicate groups (``groups``: a group
    id per corpus row), as CSR."""
    # Members of each group, as CSR over dense group ids.
    _, dense = np.unique(groups, return_inverse=True)
    dense = dense.astype(np.int64)
    order = np.argsort(dense, kind="stable").astype(np.int64)
    group_indptr = np.concatenate(([0], np.cumsum(np.bincount(dense))))
    counts, members = gather_lists(group_indptr, order, dense[ids])
    rows = entry_rows(indptr)
    return pairs_to_csr(
        np.concatenate([rows, np.repeat(rows, counts)]),
        np.concatenate([ids, members]),
        len(indptr) - 1,
    )


def text_groups(corpus_texts: TextsLike | TextScan) -> TextScan:
    """The duplicate groups of identical texts (each row: the first row of its text), from
    one pass over them, unless they are already counted and grouped (:class:`TextScan`)."""
    if isinstance(corpus_texts, TextScan) and corpus_texts.groups is not None:
        return corpus_texts
    return scan_texts(as_source(corpus_texts, "corpus_texts"), groups=True)  # type: ignore[arg-type]


def corpus_groups(
    corpus: Embeddings | np.ndarray,
    duplicates: Duplicates,
    corpus_texts: TextsLike | TextScan | None,
    threads: int | None,
) -> np.ndarray | None:
    """The corpus's duplicate groups as ``duplicates`` asks (see :func:`negmine.mine`): a
    group id per corpus row, or ``None`` (off)."""
    n_corpus = rows_of(corpus)
    if duplicates is None:
        return None
    if isinstance(duplicates, str):
        if duplicates != "auto":
            raise InvalidArgumentError(
                f"duplicates must be 'auto', None or an array of group ids, got {duplicates!r}"
            )
        if corpus_texts is None:
            return np.asarray(_core.duplicate_groups(corpus, threads=threads))
        scan = text_groups(corpus_texts)
        if scan.count != n_corpus:
            raise InvalidArgumentError(
                f"corpus_texts has {numbers.counted(scan.count, 'text')} for "
                f"{numbers.counted(n_corpus, 'corpus row')}"
            )
        return scan.groups
    groups = np.asarray(duplicates)
    if groups.shape != (n_corpus,) or groups.dtype.kind not in "iu":
        raise InvalidTypeError(
            f"duplicates must be one integer group id per corpus row ({n_corpus}), got "
            f"shape {groups.shape} dtype {groups.dtype}"
        )
    return np.ascontiguousarray(np.unique(groups, return_inverse=True)[1], dtype=np.uint32)
