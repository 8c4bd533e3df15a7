"""``HardNegativeDataset``: a mining result as training examples, one per query, with
per-epoch seeded draws of the positive (and of a subset of the negatives)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from negmine import _core, _numbers
from negmine._inputs import EmbeddingsLike, groups_array, int_csr, largest_id
from negmine.errors import InvalidArgumentError
from negmine.torch.collation import Collator

if TYPE_CHECKING:
    from negmine.result import MiningResult


class HardNegativeDataset(Dataset[dict[str, Any]]):
    """Training examples from a :class:`~negmine.MiningResult`, one per query.

    ``dataset[i]`` is ``{"query": i, "positive": p, "negatives": int64[n]}``: ``p`` is one of
    query ``i``'s labelled positives (drawn per epoch, seeded by ``(seed, epoch, i)``, when it
    has several; ``-1`` if it has none) and ``negatives`` its mined negatives, ``-1`` where
    mining found fewer (the collate function masks those out).

    ``num_negatives`` (default: all mined) keeps ``n`` negatives per item: the ``n``
    best-ranked ones, or with ``resample=True`` a per-epoch, ``(seed, epoch, i)``-seeded subset
    of the non-missing mined ones (in rank order; ``-1``-padded if fewer were mined).
    Both draws come from the core's seeded streams (``rust/core/src/dataset.rs``: one
    ``(seed, epoch, purpose, i)`` stream per draw, the same generator as the batch plans), so
    an item's draws depend on neither the other items nor the order they are read in.
    Call :meth:`set_epoch` each epoch (with ``DataLoader(num_workers > 0)`` before iterating,
    so that the workers get the new epoch). ``groups`` (corpus row -> duplicate group id) is
    only passed on to :meth:`collator`.
    """

    def __init__(
        self,
        result: MiningResult,
        *,
        groups: npt.ArrayLike | None = None,
        resample: bool = False,
        seed: int = 0,
        num_negatives: int | None = None,
    ) -> None:
        negatives, positive_indptr, positive_ids = _result_arrays(result)
        mined = negatives.shape[1]
        if num_negatives is None:
            num_negatives = mined
        num_negatives = _numbers.integer(num_negatives, "num_negatives")
        if num_negatives <= 0:
            raise InvalidArgumentError(f"num_negatives must be positive, got {num_negatives}")
        if num_negatives > mined:
            raise InvalidArgumentError(
                f"num_negatives {num_negatives} exceeds the {mined} mined negatives per query"
            )
        # One tuple, replaced whole by `set_result`: an item reads all three from one result.
        self._arrays = (negatives, positive_indptr, positive_ids)
        self.num_negatives = num_negatives
        self.resample = bool(resample)
        self.seed = _numbers.seed(seed, "seed")
        self.groups = groups_array(groups, largest_id(positive_ids, negatives) + 1, "the result")
        self.epoch = 0
        self.generation = 0

    @property
    def negative_ids(self) -> np.ndarray:
        """The served result's negatives, int64 ``[queries, mined]``."""
        return self._arrays[0]

    @property
    def positive_indptr(self) -> np.ndarray:
        return self._arrays[1]

    @property
    def positive_ids(self) -> np.ndarray:
        return self._arrays[2]

    def set_result(self, result: MiningResult) -> None:
        """Serve ``result`` (e.g. negatives mined again with the current model) from now on.

        The new result must have the same number of queries and at least ``num_negatives``
        negatives per query, and its ids must fit ``groups`` when groups were given; it is
        checked whole before anything changes, then swapped in as one reference, so an item is
        always read from one result, never a mix (an error leaves the old one served).
        ``generation`` counts the swaps. Call it between epochs, before iterating the
        ``DataLoader``: a batch started before the swap may hold items of the old result, and
        ``DataLoader`` workers hold a copy of the dataset made when the iteration starts (with
        ``persistent_workers=True`` they keep the old result for good: use
        ``persistent_workers=False`` with a dataset whose result changes).
        :class:`negmine.torch.NegativeRefresher` calls it at epoch boundaries only.
        """
        arrays = _result_arrays(result)
        negatives = arrays[0]
        if len(negatives) != len(self):
            raise InvalidArgumentError(
                f"result has {len(negatives)} queries; this dataset serves {len(self)}"
            )
        if negatives.shape[1] < self.num_negatives:
            raise InvalidArgumentError(
                f"result has {negatives.shape[1]} negatives per query; this dataset serves "
                f"num_negatives={self.num_negatives}"
            )
        if self.groups is not None:
            groups_array(self.groups, largest_id(arrays[2], negatives) + 1, "the result")
        self._arrays = arrays
        self.generation += 1

    def set_epoch(self, epoch: int) -> None:
        """Draw positives (and resampled negatives) of ``epoch`` from now on."""
        self.epoch = _numbers.seed(epoch, "epoch")

    def __len__(self) -> int:
        return len(self.negative_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = _numbers.integer(index, "index")
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} queries")
        negative_ids, positive_indptr, positive_ids = self._arrays
        positives = positive_ids[positive_indptr[i] : positive_indptr[i + 1]]
        row = negative_ids[i]
        k = self.num_negatives
        present = np.flatnonzero(row >= 0) if self.resample and k < len(row) else None
        drawn, chosen = _core.draw_example(
            i,
            len(positives),
            0 if present is None else len(present),
            k,
            seed=self.seed,
            epoch=self.epoch,
        )
        positive = -1 if drawn is None else int(positives[drawn])
        if present is None:
            negatives = row[:k].copy()
        else:
            negatives = np.full(k, -1, dtype=np.int64)
            negatives[: len(chosen)] = row[present[chosen]]
        return {"query": i, "positive": positive, "negatives": negatives}

    def collator(
        self,
        *,
        query_embeddings: EmbeddingsLike | None = None,
        corpus_embeddings: EmbeddingsLike | None = None,
        dtype: torch.dtype | None = None,
    ) -> Collator:
        """A :class:`Collator` with this dataset's groups and the positives of the result it
        serves at each call (after a :meth:`set_result` too); the embedding arguments are
        passed on (see :class:`Collator`)."""
        return Collator(
            groups=self.groups,
            positives=self,
            query_embeddings=query_embeddings,
            corpus_embeddings=corpus_embeddings,
            dtype=dtype,
        )


def _result_arrays(result: MiningResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A result's negatives (int64, C order) and positives (CSR), checked."""
    negatives = np.asarray(result.negative_ids)
    if negatives.ndim != 2 or (negatives.size and negatives.dtype.kind not in "iu"):
        raise InvalidArgumentError(
            f"result.negative_ids must be an integer [queries, n] array, got shape "
            f"{negatives.shape} dtype {negatives.dtype}"
        )
    negatives = np.ascontiguousarray(negatives, dtype=np.int64)
    positive_indptr, positive_ids = int_csr(
        result.positive_indptr, result.positive_ids, "positive_indptr", "positive_ids"
    )
    if len(positive_indptr) != len(negatives) + 1:
        raise InvalidArgumentError(
            f"result has {len(positive_indptr) - 1} positive lists for {len(negatives)} queries"
        )
    return negatives, positive_indptr, positive_ids
