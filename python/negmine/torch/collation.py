"""``collate`` / ``Collator``: a batch of :class:`~negmine.torch.HardNegativeDataset` items as
tensors, with the in-batch false-negative mask and, optionally, the embedding rows looked up."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt
import torch

from negmine import _numbers
from negmine._core import Embeddings, open_embeddings
from negmine._inputs import EmbeddingsLike, as_matrix, groups_array, int_array, int_csr, largest_id
from negmine.errors import InvalidArgumentError, InvalidTypeError

if TYPE_CHECKING:
    from negmine.result import MiningResult
    from negmine.torch.dataset import HardNegativeDataset

Positives = Union["MiningResult", "HardNegativeDataset", tuple[npt.ArrayLike, npt.ArrayLike], None]


def positive_csr(positives: Positives) -> tuple[np.ndarray, np.ndarray] | None:
    """``positives`` (as :func:`collate` takes them) as a checked int64 ``(indptr, ids)``
    pair; ``None`` for none."""
    if positives is None:
        return None
    if isinstance(positives, tuple):
        if len(positives) != 2:
            raise InvalidTypeError(
                "positives must be a MiningResult, a HardNegativeDataset or an (indptr, ids) pair"
            )
        return int_csr(positives[0], positives[1], "positive_indptr", "positive_ids")
    return int_csr(
        positives.positive_indptr, positives.positive_ids, "positive_indptr", "positive_ids"
    )


def collate(
    items: list[dict[str, Any]],
    *,
    groups: npt.ArrayLike | None = None,
    positives: Positives = None,
    query_embeddings: EmbeddingsLike | None = None,
    corpus_embeddings: EmbeddingsLike | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """A batch of :class:`HardNegativeDataset` items as tensors, with the in-batch
    false-negative mask.

    Returns ``query_ids`` [B], ``positive_ids`` [B], ``negative_ids`` [B, n] and
    ``candidate_ids`` [B * (1 + n)] (the batch's positives, then every row's negatives
    row-major), all int64, and ``false_negative_mask`` [B, B * (1 + n)] (bool), True where
    candidate ``j`` must not count as a negative of row ``i``: a labelled positive of query
    ``i`` (all of them when ``positives`` — a ``MiningResult``, a ``HardNegativeDataset``
    (its served result's) or an ``(indptr, ids)`` CSR pair — is given, else its sampled
    one), a member of such a positive's duplicate group
    (``groups``: corpus row -> group id), or a missing id (``-1``). Row ``i``'s own positive
    column ``i`` (the target) is never masked, unless the row has no positive (``-1``).

    With ``query_embeddings`` (a ``.npy`` path or a 2-D float32/float16 array, rows indexed by
    query id) the batch also holds ``query_embeddings`` [B, d_q], the rows ``query_ids``; with
    ``corpus_embeddings`` it holds ``candidate_embeddings`` [B * (1 + n), d_c], the rows
    ``candidate_ids``. Missing ids (``-1``) give all-zero rows (already masked). ``dtype`` (a
    torch floating dtype) converts them; ``None`` keeps the stored dtype. See
    :class:`Collator`, which opens a path once instead of at every call.

    Use: ``logits.masked_fill(batch["false_negative_mask"], float("-inf"))`` then
    cross-entropy with targets ``arange(B)``.
    """
    csr = positive_csr(positives)
    group_array = None if groups is None else int_array(groups, "groups")
    dtype = _torch_dtype(dtype)
    query_source = _source(query_embeddings, "query_embeddings")
    corpus_source = _source(corpus_embeddings, "corpus_embeddings")
    batch = collate_ids(items, group_array, csr)
    _add_embeddings(batch, query_source, corpus_source, dtype)
    return batch


def collate_ids(
    items: list[dict[str, Any]],
    groups: np.ndarray | None,
    csr: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, torch.Tensor]:
    """:func:`collate`'s id tensors and ``false_negative_mask``, from ``groups`` and ``csr``
    already checked (``int_array``, :func:`positive_csr`): what a loss that collates its own
    batches (``negmine.st``) calls per batch."""
    b = len(items)
    if b == 0:
        raise InvalidArgumentError("cannot collate an empty batch")
    query_ids = np.array([_numbers.integer(it["query"], "query") for it in items], dtype=np.int64)
    positive_ids = np.array(
        [_numbers.integer(it["positive"], "positive") for it in items], dtype=np.int64
    )
    rows = [np.asarray(it["negatives"], dtype=np.int64).reshape(-1) for it in items]
    n = len(rows[0])
    if any(len(r) != n for r in rows):
        raise InvalidArgumentError("every item of a batch must have the same number of negatives")
    negative_ids = np.stack(rows) if n else np.zeros((b, 0), dtype=np.int64)
    candidates = np.concatenate([positive_ids, negative_ids.reshape(-1)])
    padding = candidates < 0
    if csr is not None and (query_ids.min() < 0 or query_ids.max() >= len(csr[0]) - 1):
        raise InvalidArgumentError(
            f"query ids must be in [0, {len(csr[0]) - 1}) (rows of the positives)"
        )
    if groups is not None:
        needed = max(largest_id(candidates), largest_id(csr[1]) if csr is not None else -1) + 1
        if len(groups) < needed:
            raise InvalidArgumentError(
                f"groups has {len(groups)} entries (one per corpus row), but the batch refers "
                f"to corpus id {needed - 1}"
            )
        keys = np.where(padding, -1, groups[np.where(padding, 0, candidates)])
    else:
        keys = candidates
    mask = np.empty((b, len(candidates)), dtype=bool)
    for i in range(b):
        labelled = positive_ids[i : i + 1]
        if csr is not None:
            q = query_ids[i]
            labelled = np.concatenate([labelled, csr[1][csr[0][q] : csr[0][q + 1]]])
        labelled = labelled[labelled >= 0]
        if groups is not None:
            labelled = groups[labelled]
        mask[i] = np.isin(keys, labelled)
    mask |= padding[None, :]
    own = np.arange(b)
    mask[own, own] = padding[own]
    return {
        "query_ids": torch.from_numpy(query_ids),
        "positive_ids": torch.from_numpy(positive_ids),
        "negative_ids": torch.from_numpy(np.ascontiguousarray(negative_ids)),
        "candidate_ids": torch.from_numpy(candidates),
        "false_negative_mask": torch.from_numpy(mask),
    }


class _EmbeddingSource:
    """One side's embeddings for the collate lookup: a ``.npy`` file, memory-mapped lazily
    once per process and never pickled, or an in-memory array (pickled as is)."""

    def __init__(self, value: EmbeddingsLike, name: str) -> None:
        self.name = name
        self.path: str | None = None
        self._array: np.ndarray | None = None  # the rows as numpy (a view of the map for files)
        self._opened: Embeddings | None = None  # keeps the map alive; None for arrays
        self._pid = -1  # the process that opened ``_opened``
        if isinstance(value, Embeddings) and not value.mapped:
            # read into memory by open_embeddings(mmap=False): an ordinary array from here on
            value = value.numpy()
        matrix = as_matrix(value, name)  # opens and validates a path: fails here, not later
        if isinstance(matrix, Embeddings):
            self.path = os.path.abspath(matrix.path)  # workers may run in another directory
            self._keep(matrix)
        else:
            self._array = matrix
        assert self._array is not None
        self.shape: tuple[int, int] = (int(self._array.shape[0]), int(self._array.shape[1]))
        self.dtype = self._array.dtype

    def _keep(self, opened: Embeddings) -> None:
        self._opened = opened
        self._array = opened.numpy()
        self._pid = os.getpid()

    def matrix(self) -> np.ndarray:
        """The rows; a file is (re)opened on first use in each process."""
        if self.path is not None and (self._opened is None or self._pid != os.getpid()):
            opened = open_embeddings(self.path)
            if tuple(opened.shape) != self.shape or opened.dtype != self.dtype:
                raise InvalidArgumentError(
                    f"{self.name} file {self.path!r} changed since the collator was built: now "
                    f"shape {tuple(opened.shape)} dtype {opened.dtype}, was shape {self.shape} "
                    f"dtype {self.dtype}"
                )
            self._keep(opened)
        assert self._array is not None
        return self._array

    def describe(self) -> str:
        where = f"file {self.path!r}" if self.path is not None else "the array"
        return f"{self.name} ({where}, {self.shape[0]} rows)"

    def gather(self, ids: np.ndarray, what: str) -> torch.Tensor:
        """Rows ``ids`` as a new contiguous tensor; negative ids give zero rows."""
        out = np.zeros((len(ids), self.shape[1]), dtype=self.dtype)
        present = ids >= 0
        if present.any():
            unique, inverse = np.unique(ids[present], return_inverse=True)
            if unique[-1] >= self.shape[0]:
                bad = unique[unique >= self.shape[0]]
                shown = ", ".join(str(int(i)) for i in bad[:8]) + (", ..." if len(bad) > 8 else "")
                raise InvalidArgumentError(
                    f"{what} {shown} out of range for {self.describe()}: ids must be in "
                    f"[0, {self.shape[0]})"
                )
            # sorted unique rows: a mapped file is read in order, each row once
            out[present] = self.matrix()[unique][inverse.reshape(-1)]
        return torch.from_numpy(out)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.path is not None:  # the path travels, never the mapped data
            state["_opened"] = None
            state["_array"] = None
            state["_pid"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _source(value: EmbeddingsLike | None, name: str) -> _EmbeddingSource | None:
    return None if value is None else _EmbeddingSource(value, name)


def _torch_dtype(dtype: torch.dtype | None) -> torch.dtype | None:
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise InvalidTypeError(
            f"dtype must be None or a floating torch dtype such as torch.float32, got {dtype!r}"
        )
    return dtype


def _add_embeddings(
    batch: dict[str, torch.Tensor],
    query_source: _EmbeddingSource | None,
    corpus_source: _EmbeddingSource | None,
    dtype: torch.dtype | None,
) -> None:
    lookups = (
        ("query_embeddings", query_source, "query_ids", "query ids"),
        ("candidate_embeddings", corpus_source, "candidate_ids", "candidate (corpus) ids"),
    )
    for key, source, ids, what in lookups:
        if source is not None:
            rows = source.gather(batch[ids].numpy(), what)
            batch[key] = rows if dtype is None else rows.to(dtype).contiguous()


class Collator:
    """:func:`collate` with fixed ``groups``, ``positives`` and embeddings, picklable, for
    ``DataLoader(collate_fn=...)`` (see :meth:`HardNegativeDataset.collator`).

    ``query_embeddings`` / ``corpus_embeddings``: a path to a ``.npy`` file (float32 or
    float16, as written by :func:`negmine.save_embeddings` or ``np.save``) or a 2-D array,
    whose rows are indexed by query id / corpus id. The batch then also holds
    ``query_embeddings`` [B, d_q] and/or ``candidate_embeddings`` [B * (1 + n), d_c] (see
    :func:`collate`); the two dims may differ. ``dtype`` (e.g. ``torch.float32``) converts
    them, ``None`` keeps the stored dtype (float64 arrays are stored as float32).

    A path is opened (and validated: a missing or malformed file fails here) when the collator
    is built, and memory-mapped again lazily, once in each process that uses it; pickling the
    collator (``DataLoader(num_workers > 0)`` with spawn) carries the path, never the data.
    An array is kept as it is and pickled with the collator, i.e. copied into every spawned
    worker: pass a path for a big corpus.

    ``positives`` may be a :class:`HardNegativeDataset` (what
    :meth:`HardNegativeDataset.collator` passes): the positives of the result it serves
    *now* are read at every call, so a collator built before ``set_result`` (a
    :class:`NegativeRefresher` swap, whose re-mined positives differ when
    ``query_dup_threshold`` shares them between near-identical queries) masks the new
    positives, never the old ones. Pickled, it carries the positives served at that moment
    (a ``DataLoader`` pickles it when an iteration starts, after the epoch's swap), not the
    dataset.
    """

    def __init__(
        self,
        *,
        groups: npt.ArrayLike | None = None,
        positives: Positives = None,
        query_embeddings: EmbeddingsLike | None = None,
        corpus_embeddings: EmbeddingsLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        from negmine.torch.dataset import HardNegativeDataset  # it imports this module

        self._dataset = positives if isinstance(positives, HardNegativeDataset) else None
        self._positives = None if self._dataset is not None else positive_csr(positives)
        current = self.positives
        needed = largest_id(current[1]) + 1 if current is not None else 0
        # A dataset checks every result it is given against its groups (set_result).
        self.groups = groups_array(groups, needed, "positives")
        self.dtype = _torch_dtype(dtype)
        self.query_embeddings = _source(query_embeddings, "query_embeddings")
        self.corpus_embeddings = _source(corpus_embeddings, "corpus_embeddings")

    @property
    def positives(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The positives masked now: the CSR pair given, or the dataset's served result's
        (checked by the dataset, read at each call)."""
        if self._dataset is not None:
            return (self._dataset.positive_indptr, self._dataset.positive_ids)
        return self._positives

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_positives"] = self.positives  # a snapshot travels, not the whole dataset
        state["_dataset"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate_ids(items, self.groups, self.positives)
        _add_embeddings(batch, self.query_embeddings, self.corpus_embeddings, self.dtype)
        return batch
