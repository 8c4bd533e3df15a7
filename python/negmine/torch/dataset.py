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
        negatives = np.asarray(result.negative_ids)
        if negatives.ndim != 2 or (negatives.size and negatives.dtype.kind not in "iu"):
            raise InvalidArgumentError(
                f"result.negative_ids must be an integer [queries, n] array, got shape "
                f"{negatives.shape} dtype {negatives.dtype}"
            )
        self.negative_ids = np.ascontiguousarray(negatives, dtype=np.int64)
        self.positive_indptr, self.positive_ids = int_csr(
            result.positive_indptr, result.positive_ids, "positive_indptr", "positive_ids"
        )
        if len(self.positive_indptr) != len(self.negative_ids) + 1:
            raise InvalidArgumentError(
                f"result has {len(self.positive_indptr) - 1} positive lists for "
                f"{len(self.negative_ids)} queries"
            )
        mined = self.negative_ids.shape[1]
        if num_negatives is None:
            num_negatives = mined
        num_negatives = _numbers.integer(num_negatives, "num_negatives")
        if num_negatives <= 0:
            raise InvalidArgumentError(f"num_negatives must be positive, got {num_negatives}")
        if num_negatives > mined:
            raise InvalidArgumentError(
                f"num_negatives {num_negatives} exceeds the {mined} mined negatives per query"
            )
        self.num_negatives = num_negatives
        self.resample = bool(resample)
        self.seed = _numbers.seed(seed, "seed")
        self.groups = groups_array(
            groups, largest_id(self.positive_ids, self.negative_ids) + 1, "the result"
        )
        self.epoch = 0

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
        positives = self.positive_ids[self.positive_indptr[i] : self.positive_indptr[i + 1]]
        row = self.negative_ids[i]
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
        """A :class:`Collator` with this dataset's groups and the result's positives; the
        embedding arguments are passed on (see :class:`Collator`)."""
        return Collator(
            groups=self.groups,
            positives=(self.positive_indptr, self.positive_ids),
            query_embeddings=query_embeddings,
            corpus_embeddings=corpus_embeddings,
            dtype=dtype,
        )
