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

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch.distributed as dist
from torch.utils.data import Sampler

from negmine import batches as _batches
from negmine._inputs import IdsLike
from negmine.errors import InvalidArgumentError, InvalidTypeError

Plan = Literal["topic", "ngame"]
_PLANS = ("topic", "ngame")
_REQUIRED = (
    "seed",
    "epoch",
    "num_replicas",
    "dataset_len",
    "batch_size",
    "plan",
    "drop_last",
    "yielded",
)
# Keys whose value must match between a saved state and the sampler that loads it.
_MUST_MATCH = (
    "seed",
    "num_replicas",
    "dataset_len",
    "batch_size",
    "plan",
    "drop_last",
    "clusters_per_batch",
    "weighting",
)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


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
    batches consumed in the epoch before saving if you need the exact step. States from
    another seed, world size, dataset length, batch size, plan, ``drop_last``,
    ``clusters_per_batch`` or ``weighting`` are refused (``ValueError``); a state saved on one
    rank loads on any rank (all ranks yield the same number of batches).

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
        batch_size = _int(batch_size, "batch_size")
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be positive, got {batch_size}")
        seed = _batches._stream_int(seed, "seed")
        if num_replicas is None or rank is None:
            initialised = dist.is_available() and dist.is_initialized()
            if num_replicas is None:
                num_replicas = dist.get_world_size() if initialised else 1
            if rank is None:
                rank = dist.get_rank() if initialised else 0
        num_replicas = _int(num_replicas, "num_replicas")
        rank = _int(rank, "rank")
        if num_replicas < 1:
            raise InvalidArgumentError(f"num_replicas must be positive, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise InvalidArgumentError(
                f"rank must be in [0, num_replicas) = [0, {num_replicas}), got {rank}"
            )
        self.clusters = _batches._int_array(clusters, "clusters")
        self.batch_size = batch_size
        self.plan: Plan = plan
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.clusters_per_batch = _int(clusters_per_batch, "clusters_per_batch")
        self.weighting: _batches.Weighting = weighting
        self.conflicts = conflicts
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._yielded = 0  # batches yielded in the current epoch
        self._skip = 0  # batches the next __iter__ skips (set by load_state_dict)
        # The plan's length depends on neither seed nor epoch; this also checks the arguments.
        if plan == "topic":
            self._plan_len = _batches.topic_count(
                self.clusters,
                batch_size,
                clusters_per_batch=self.clusters_per_batch,
                drop_last=self.drop_last,
            )
        else:
            self._plan_len = _batches.ngame_count(
                len(self.clusters), batch_size, drop_last=self.drop_last
            )
        if self.drop_last:
            self._per_rank = self._plan_len // num_replicas
        else:
            self._per_rank = -(-self._plan_len // num_replicas)

    # -----------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` from the next iteration on. Setting the epoch a loaded
        state is in keeps its resume point; any other epoch starts from its first batch."""
        epoch = _batches._stream_int(epoch, "epoch")
        if epoch != self.epoch:
            self._skip = 0
            self._yielded = 0
        self.epoch = epoch

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
        """The resume point: configuration fingerprint, epoch and batches yielded in it."""
        return {
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
            "yielded": self._yielded,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields the rest of its epoch."""
        if not isinstance(state, Mapping):
            raise InvalidTypeError(f"state must be a mapping, got {type(state).__name__}")
        missing = [k for k in _REQUIRED if k not in state]
        if missing:
            raise InvalidArgumentError(f"state is missing {', '.join(missing)}")
        current = self.state_dict()
        for key in _MUST_MATCH:
            if key in state and state[key] != current[key]:
                raise InvalidArgumentError(
                    f"state is from another {key}: saved {state[key]!r}, "
                    f"this sampler has {current[key]!r}"
                )
        epoch = _batches._stream_int(state["epoch"], "epoch")
        yielded = _int(state["yielded"], "yielded")
        if not 0 <= yielded <= self._per_rank:
            raise InvalidArgumentError(
                f"state yielded {yielded} batches, but an epoch has {self._per_rank} per rank"
            )
        self.epoch = epoch
        self._skip = yielded
        self._yielded = yielded


__all__ = ["ClusterBatchSampler", "Plan"]
