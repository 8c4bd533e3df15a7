"""PyTorch integration: a batch sampler that feeds :mod:`negmine.batches` plans to a
``DataLoader``.

Importable only with torch installed; ``import negmine`` never imports this module.

Example::

    from negmine.torch import ClusterBatchSampler

    sampler = ClusterBatchSampler(assignments, batch_size=64, plan="topic", seed=13)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=4)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)  # without it every epoch repeats epoch 0's order
        for batch in loader:
            ...
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from negmine import _numbers
from negmine import batches as _batches
from negmine._core import Embeddings, open_embeddings
from negmine._inputs import EmbeddingsLike, IdsLike, as_matrix
from negmine.errors import InvalidArgumentError, InvalidTypeError

if TYPE_CHECKING:
    from negmine.result import MiningResult

Plan = Literal["topic", "ngame"]
_PLANS = ("topic", "ngame")
STATE_FORMAT = 2
"""Version of :meth:`ClusterBatchSampler.state_dict` (2: ``conflicts_digest`` recorded)."""
# Everything that shapes the sequence of batches, as state key -> constructor argument: a
# state loads only into a sampler where every one of them matches.
_PLAN_SHAPING = {
    "seed": "seed",
    "num_replicas": "num_replicas",
    "dataset_len": "dataset length (len(clusters))",
    "batch_size": "batch_size",
    "plan": "plan",
    "drop_last": "drop_last",
    "clusters_per_batch": "clusters_per_batch",
    "weighting": "weighting",
    "clusters_digest": "clusters",
    "conflicts_digest": "conflicts",
}
_REQUIRED = ("epoch", "yielded", *_PLAN_SHAPING)


class ClusterBatchSampler(Sampler[list[int]]):
    """Batches of dataset row indices from a :mod:`negmine.batches` plan, for
    ``DataLoader(dataset, batch_sampler=sampler)``.

    ``clusters[i]`` is the cluster id of dataset row ``i`` (e.g. ``negmine.kmeans``
    assignments). ``plan="topic"`` uses :func:`negmine.batches.topic` (with
    ``clusters_per_batch`` and ``weighting``), ``plan="ngame"`` :func:`negmine.batches.ngame`;
    ``conflicts`` keeps rows sharing a conflict key out of one batch (no in-batch false
    negatives). Each epoch's plan is built from ``(seed, epoch)``, identically in every process.

    **Epochs.** Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``;
    without it every epoch repeats the same order.

    **Distributed.** ``num_replicas`` and ``rank`` default to ``torch.distributed``'s world
    size and rank when it is initialised, else 1 and 0. Rank ``r`` takes the plan's batches
    ``r, r + W, r + 2W, ...`` (``W = num_replicas``) and every rank yields the same number of
    batches:

    - ``drop_last=True``: the plan is built with ``drop_last=True`` (its short last batch, if
      any, is left out), then its last ``len(plan) % W`` batches are dropped too: each rank
      yields ``len(plan) // W`` batches, and those rows are not seen this epoch.
    - ``drop_last=False``: the plan is padded by repeating its batches from the start
      (cyclically if the plan has fewer than ``W`` batches) up to a multiple of ``W``: each rank
      yields ``ceil(len(plan) / W)`` batches; up to ``W - 1`` batches are seen twice in an epoch
      (as with ``DistributedSampler``), and the last batch may be short.

    An empty dataset gives no batches. ``len(sampler)`` is known without building a plan.

    **Resuming.** :meth:`state_dict` records the epoch and the number of batches yielded so
    far in it; :meth:`load_state_dict` on a fresh sampler makes the next iteration skip those
    batches and yield the exact remainder of that epoch (later epochs are normal). With
    ``num_workers > 0`` the ``DataLoader`` fetches batches ahead of the training loop, so
    ``"yielded"`` can exceed the steps done: set ``state["yielded"]`` to your own count of
    batches consumed in the epoch before saving if you need the exact step. The state records
    everything that shapes the plan: seed, world size, dataset length, batch size, plan,
    ``drop_last``, ``clusters_per_batch``, ``weighting``, and digests of ``clusters`` and
    ``conflicts``. A state that differs in any of them is refused with
    ``InvalidArgumentError`` naming each argument that differs (resuming it would repeat some
    rows and skip others); so is a state from before ``conflicts`` was recorded (negmine's
    state format 1), which cannot be checked. A state saved on one rank loads on any rank (all
    ranks yield the same number of batches).

    The plan is built in the process that iterates the sampler (the ``DataLoader``'s main
    process; workers only load rows); plan building is a single-threaded Rust call that never
    uses negmine's thread pool, so forked workers cannot deadlock on it.
    """

    def __init__(
        self,
        clusters: npt.ArrayLike,
        batch_size: int,
        *,
        plan: Plan = "topic",
        seed: int = 0,
        drop_last: bool = False,
        clusters_per_batch: int = 1,
        weighting: _batches.Weighting = "uniform",
        conflicts: IdsLike = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if plan not in _PLANS:
            raise InvalidArgumentError(f"plan must be 'topic' or 'ngame', got {plan!r}")
        if weighting not in ("uniform", "size"):
            raise InvalidArgumentError(f"weighting must be 'uniform' or 'size', got {weighting!r}")
        batch_size = _numbers.integer(batch_size, "batch_size")
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be positive, got {batch_size}")
        seed = _numbers.seed(seed, "seed")
        if num_replicas is None or rank is None:
            initialised = dist.is_available() and dist.is_initialized()
            if num_replicas is None:
                num_replicas = dist.get_world_size() if initialised else 1
            if rank is None:
                rank = dist.get_rank() if initialised else 0
        num_replicas = _numbers.integer(num_replicas, "num_replicas")
        rank = _numbers.integer(rank, "rank")
        if num_replicas < 1:
            raise InvalidArgumentError(f"num_replicas must be positive, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise InvalidArgumentError(
                f"rank must be in [0, num_replicas) = [0, {num_replicas}), got {rank}"
            )
        self.clusters = _batches._int_array(clusters, "clusters")
        self._clusters_digest = _digest(self.clusters)
        self.batch_size = batch_size
        self.plan: Plan = plan
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.clusters_per_batch = _numbers.integer(clusters_per_batch, "clusters_per_batch")
        self.weighting: _batches.Weighting = weighting
        # Converted once: a caller changing its lists later cannot change the plan behind
        # the digest's back.
        keys = _batches._conflicts(conflicts, len(self.clusters))
        self.conflicts: tuple[np.ndarray, np.ndarray] | None = keys
        self._conflicts_digest = None if keys is None else _digest(*keys)
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._yielded = 0  # batches yielded in the current epoch
        self._skip = 0  # batches the next __iter__ skips (set by load_state_dict)
        self._count()

    def _count(self) -> None:
        # The plan's length depends on neither seed nor epoch; this also checks the arguments.
        if self.plan == "topic":
            self._plan_len = _batches.topic_count(
                self.clusters,
                self.batch_size,
                clusters_per_batch=self.clusters_per_batch,
                drop_last=self.drop_last,
            )
        else:
            self._plan_len = _batches.ngame_count(
                len(self.clusters), self.batch_size, drop_last=self.drop_last
            )
        if self.drop_last:
            self._per_rank = self._plan_len // self.num_replicas
        else:
            self._per_rank = -(-self._plan_len // self.num_replicas)

    # -----------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` from the next iteration on. Setting the epoch a loaded
        state is in keeps its resume point; any other epoch starts from its first batch."""
        epoch = _numbers.seed(epoch, "epoch")
        if epoch != self.epoch:
            self._skip = 0
            self._yielded = 0
        self.epoch = epoch

    def set_clusters(self, clusters: npt.ArrayLike) -> None:
        """Use new cluster ids (one per dataset row, as before) from the next iteration on,
        e.g. coarser ones as training goes (NGAME's growing clusters, see
        :func:`negmine.coarsen_clusters`) or a re-clustering with the current model. Call it
        between epochs, with the same clusters on every rank; ``len(sampler)`` follows (a
        ``"topic"`` plan's count depends on the cluster sizes), a pending resume point is
        dropped unless the clusters are unchanged, and :meth:`state_dict` records them, so a
        state only loads into a sampler with the same clusters."""
        new = _batches._int_array(clusters, "clusters")
        if len(new) != len(self.clusters):
            raise InvalidArgumentError(
                f"clusters must keep one id per dataset row ({len(self.clusters)}), got {len(new)}"
            )
        digest = _digest(new)
        if digest == self._clusters_digest:
            return
        previous = (self.clusters, self._clusters_digest)
        self.clusters, self._clusters_digest = new, digest
        try:
            self._count()
        except Exception:
            self.clusters, self._clusters_digest = previous
            raise
        self._skip = 0
        self._yielded = 0

    def __len__(self) -> int:
        """The number of batches the next iteration yields (less a pending resume skip)."""
        return self._per_rank - self._skip

    def _build(self) -> _batches.BatchPlan:
        if self.plan == "topic":
            return _batches.topic(
                self.clusters,
                self.batch_size,
                seed=self.seed,
                epoch=self.epoch,
                clusters_per_batch=self.clusters_per_batch,
                weighting=self.weighting,
                drop_last=self.drop_last,
                conflicts=self.conflicts,
            )
        return _batches.ngame(
            self.clusters,
            self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            drop_last=self.drop_last,
            conflicts=self.conflicts,
        )

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        self._yielded = skip
        if self._per_rank == 0 or skip >= self._per_rank:
            return iter(())
        built = self._build()
        n = len(built)
        if n != self._plan_len:  # pragma: no cover - the counts are the plans' contract
            raise RuntimeError(f"plan has {n} batches, expected {self._plan_len}")
        return self._batches(built, skip)

    def _batches(self, built: _batches.BatchPlan, skip: int) -> Iterator[list[int]]:
        n = len(built)
        for k in range(skip, self._per_rank):
            b = (self.rank + k * self.num_replicas) % n
            batch = built.indices[built.offsets[b] : built.offsets[b + 1]].tolist()
            self._yielded = k + 1
            yield batch

    # -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The resume point: epoch and batches yielded in it, with every plan-shaping argument
        (``clusters`` and ``conflicts`` as digests) so that it loads only where it resumes
        the same sequence."""
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "epoch": self.epoch,
            "num_replicas": self.num_replicas,
            "rank": self.rank,
            "dataset_len": len(self.clusters),
            "batch_size": self.batch_size,
            "plan": self.plan,
            "drop_last": self.drop_last,
            "clusters_per_batch": self.clusters_per_batch,
            "weighting": self.weighting,
            "clusters_digest": self._clusters_digest,
            "conflicts_digest": self._conflicts_digest,
            "yielded": self._yielded,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields the rest of its epoch."""
        if not isinstance(state, Mapping):
            raise InvalidTypeError(f"state must be a mapping, got {type(state).__name__}")
        version = state.get("format", 1)
        if _same(version, 1):
            raise InvalidArgumentError(
                "state was saved by an older negmine that did not record conflicts, so it "
                "cannot be checked against this sampler (a state from a sampler with other "
                "conflicts would repeat some rows and skip others): resume from the start of "
                f"the epoch with set_epoch({state.get('epoch')!r}) instead"
            )
        if not _same(version, STATE_FORMAT):
            raise InvalidArgumentError(
                f"state has format {version!r}; this negmine reads format {STATE_FORMAT}"
            )
        missing = [k for k in _REQUIRED if k not in state]
        if missing:
            raise InvalidArgumentError(f"state is missing {', '.join(missing)}")
        current = self.state_dict()
        differ = [k for k in _PLAN_SHAPING if not _same(state[k], current[k])]
        if differ:
            raise InvalidArgumentError(
                "state is from a sampler with other "
                + ", ".join(_PLAN_SHAPING[k] for k in differ)
                + " ("
                + "; ".join(f"{k}: saved {state[k]!r}, this sampler {current[k]!r}" for k in differ)
                + "); resuming it would repeat some rows and skip others"
            )
        epoch = _numbers.seed(state["epoch"], "epoch")
        yielded = _numbers.integer(state["yielded"], "yielded")
        if not 0 <= yielded <= self._per_rank:
            raise InvalidArgumentError(
                f"state yielded {yielded} batches, but an epoch has {self._per_rank} per rank"
            )
        self.epoch = epoch
        self._skip = yielded
        self._yielded = yielded


# ---------------------------------------------------------------------------------------------
# Mined negatives as a dataset, and a collate function with the in-batch false-negative mask.

Positives = Union["MiningResult", tuple[npt.ArrayLike, npt.ArrayLike], None]


def _digest(*arrays: np.ndarray) -> str:
    """A fingerprint of integer arrays (cluster ids; conflict CSR arrays), so that a saved
    state resumes only the same plan. Each array is length-prefixed: no two splits of the
    same values collide."""
    h = hashlib.blake2b(digest_size=16)
    for array in arrays:
        data = np.ascontiguousarray(array, dtype="<i8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data.tobytes())
    return h.hexdigest()


def _same(saved: object, current: object) -> bool:
    """``saved == current`` for state values, False for anything that does not compare as
    one bool (e.g. an array put in a state by hand)."""
    try:
        equal = saved == current
    except Exception:
        return False
    return isinstance(equal, (bool, np.bool_)) and bool(equal)


def _groups_array(groups: npt.ArrayLike | None, needed: int, what: str) -> np.ndarray | None:
    """``groups`` as int64, checked to cover corpus ids ``[0, needed)``."""
    if groups is None:
        return None
    array = _batches._int_array(groups, "groups")
    if len(array) < needed:
        raise InvalidArgumentError(
            f"groups has {len(array)} entries (one per corpus row), but {what} has corpus id "
            f"{needed - 1}"
        )
    return array


def _positive_csr(positives: Positives) -> tuple[np.ndarray, np.ndarray] | None:
    if positives is None:
        return None
    if isinstance(positives, tuple):
        if len(positives) != 2:
            raise InvalidTypeError("positives must be a MiningResult or an (indptr, ids) pair")
        indptr = _batches._int_array(positives[0], "positive_indptr")
        ids = _batches._int_array(positives[1], "positive_ids")
    else:
        indptr = _batches._int_array(positives.positive_indptr, "positive_indptr")
        ids = _batches._int_array(positives.positive_ids, "positive_ids")
    if len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != len(ids) or np.any(np.diff(indptr) < 0):
        raise InvalidArgumentError(
            "positive_indptr must start at 0, be non-decreasing and end at len(positive_ids)"
        )
    return indptr, ids


def _max_id(*arrays: np.ndarray) -> int:
    return max([int(a.max()) for a in arrays if a.size] + [-1])


class HardNegativeDataset(Dataset[dict[str, Any]]):
    """Training examples from a :class:`~negmine.mine.MiningResult`, one per query.

    ``dataset[i]`` is ``{"query": i, "positive": p, "negatives": int64[n]}``: ``p`` is one of
    query ``i``'s labelled positives (drawn per epoch, seeded by ``(seed, epoch, i)``, when it
    has several; ``-1`` if it has none) and ``negatives`` its mined negatives, ``-1`` where
    mining found fewer (the collate function masks those out).

    ``num_negatives`` (default: all mined) keeps ``n`` negatives per item: the ``n``
    best-ranked ones, or with ``resample=True`` a per-epoch, ``(seed, epoch, i)``-seeded subset
    of the non-missing mined ones (in rank order; ``-1``-padded if fewer were mined).
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
        csr = _positive_csr(result)
        assert csr is not None
        self.positive_indptr, self.positive_ids = csr
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
        self.groups = _groups_array(
            groups, _max_id(self.positive_ids, self.negative_ids) + 1, "the result"
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
        if len(positives) == 0:
            positive = -1
        elif len(positives) == 1:
            positive = int(positives[0])
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i, 0])
            positive = int(positives[rng.integers(len(positives))])
        row = self.negative_ids[i]
        k = self.num_negatives
        if self.resample and k < len(row):
            present = np.flatnonzero(row >= 0)
            out = np.full(k, -1, dtype=np.int64)
            if len(present) <= k:
                out[: len(present)] = row[present]
            else:
                rng = np.random.default_rng([self.seed, self.epoch, i, 1])
                chosen = np.sort(rng.choice(present, size=k, replace=False))
                out[:] = row[chosen]
            negatives = out
        else:
            negatives = row[:k].copy()
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
    ``i`` (all of them when ``positives`` — a ``MiningResult`` or an ``(indptr, ids)`` CSR
    pair — is given, else its sampled one), a member of such a positive's duplicate group
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
    csr = _positive_csr(positives)
    group_array = None if groups is None else _batches._int_array(groups, "groups")
    dtype = _torch_dtype(dtype)
    query_source = _source(query_embeddings, "query_embeddings")
    corpus_source = _source(corpus_embeddings, "corpus_embeddings")
    batch = _collate(items, group_array, csr)
    _add_embeddings(batch, query_source, corpus_source, dtype)
    return batch


def _collate(
    items: list[dict[str, Any]],
    groups: np.ndarray | None,
    csr: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, torch.Tensor]:
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
        needed = max(_max_id(candidates), _max_id(csr[1]) if csr is not None else -1) + 1
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
        self.positives = _positive_csr(positives)
        needed = _max_id(self.positives[1]) + 1 if self.positives is not None else 0
        self.groups = _groups_array(groups, needed, "positives")
        self.dtype = _torch_dtype(dtype)
        self.query_embeddings = _source(query_embeddings, "query_embeddings")
        self.corpus_embeddings = _source(corpus_embeddings, "corpus_embeddings")

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = _collate(items, self.groups, self.positives)
        _add_embeddings(batch, self.query_embeddings, self.corpus_embeddings, self.dtype)
        return batch


class GpuPrefetcher:
    """Iterates a DataLoader with the next ``depth`` batches already on ``device``.

    On CUDA, each batch's tensors are pinned and copied on a side stream while the current
    batch is being used, and the compute stream waits for the copy (an event) before the batch
    is handed out; tensors in nested dicts, lists and tuples are moved, anything else passes as
    is. On any other device (CPU) it is a transparent pass-through: the batches are yielded
    unchanged, so the same training loop runs with or without a GPU. A CUDA device where CUDA
    is not available (or an index past the last GPU) raises ``InvalidArgumentError`` here.
    """

    def __init__(
        self, loader: Iterable[Any], device: str | torch.device, *, depth: int = 2
    ) -> None:
        depth = _numbers.count(depth, "depth")
        self.loader = loader
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise InvalidArgumentError(
                    f"device {device!r} needs CUDA, but CUDA is not available here (no GPU, "
                    "driver or CUDA build of torch): pass device='cpu'"
                )
            count = torch.cuda.device_count()
            if self.device.index is not None and self.device.index >= count:
                raise InvalidArgumentError(
                    f"device {device!r} does not exist: CUDA has {count} device(s)"
                )
        self.depth = depth

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            yield from self.loader
            return
        stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        pending: deque[tuple[Any, torch.cuda.Event]] = deque()
        source = iter(self.loader)

        def load_next() -> bool:
            try:
                batch = next(source)
            except StopIteration:
                return False
            with torch.cuda.stream(stream):
                moved = _to_device(batch, self.device)
                ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
                ready.record(stream)
            pending.append((moved, ready))
            return True

        while len(pending) < self.depth and load_next():
            pass
        current = torch.cuda.current_stream(self.device)
        while pending:
            batch, ready = pending.popleft()
            current.wait_event(ready)
            _record_stream(batch, current)
            load_next()
            yield batch


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        if value.device.type == "cpu" and not value.is_pinned():
            value = value.pin_memory()
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def _record_stream(value: Any, stream: torch.cuda.Stream) -> None:
    """Tells the caching allocator that the compute stream uses memory the side stream made."""
    if isinstance(value, torch.Tensor):
        value.record_stream(stream)
    elif isinstance(value, Mapping):
        for v in value.values():
            _record_stream(v, stream)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _record_stream(v, stream)


__all__ = [
    "ClusterBatchSampler",
    "Collator",
    "GpuPrefetcher",
    "HardNegativeDataset",
    "Plan",
    "collate",
]
