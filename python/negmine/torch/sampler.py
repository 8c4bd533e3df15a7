"""``ClusterBatchSampler``: :mod:`negmine.batches` plans as a ``DataLoader`` batch sampler,
sharded over DDP ranks, resumable mid-epoch."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch.distributed as dist
from torch.utils.data import Sampler

from negmine import _numbers
from negmine import batches as _batches
from negmine._inputs import IdsLike, int_array, private_csr
from negmine.errors import InvalidArgumentError, InvalidTypeError

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
    "wrapped": "wrapped",
}
_REQUIRED = ("epoch", "yielded", *(k for k in _PLAN_SHAPING if k != "wrapped"))


class ClusterBatchSampler(Sampler[list[int]]):
    """Batches of dataset row indices from a :mod:`negmine.batches` plan, for
    ``DataLoader(dataset, batch_sampler=sampler)``.

    ``clusters[i]`` is the cluster id of dataset row ``i`` (e.g. ``negmine.kmeans``
    assignments). ``plan="topic"`` uses :func:`negmine.batches.topic` (with
    ``clusters_per_batch`` and ``weighting``), ``plan="ngame"`` :func:`negmine.batches.ngame`;
    ``conflicts`` keeps rows sharing a conflict key out of one batch (no in-batch false
    negatives). Each epoch's plan is built from ``(seed, epoch)``, identically in every process.

    **Epochs.** Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``;
    without it every epoch repeats the same order. An epoch lower than the current one is
    accepted with a warning (it replays that epoch).

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

    **Inside a trainer that shards batches itself** (``wrapped=True``). sentence-transformers'
    and Hugging Face's trainers pass every batch sampler through accelerate, which wraps it in
    a ``BatchSamplerShard`` that gives rank ``r`` the batches ``r, r + W, ...`` of what the
    sampler yields. A sampler that also shards by rank would be sharded twice (each rank seeing
    ``1/W`` of its ``1/W``). With ``wrapped=True`` the sampler yields the whole padded (or
    trimmed) plan of all ranks, in an order where the wrapper's sharding gives each rank exactly
    the batches it would have taken itself; ``len(sampler)`` is then ``W`` times the per-rank
    count and ``rank`` is not used. :func:`negmine.st.topic_batch_sampler` and
    :class:`negmine.hf.ClusterSamplerTrainerMixin` set it.

    A sampler whose ``num_replicas`` came from ``torch.distributed`` (not given) refuses to
    iterate in a process group of another size, e.g. when it was built before the group was
    initialised (every rank would yield every row).

    **Lightning** calls ``set_epoch`` only on ``dataloader.sampler`` and
    ``dataloader.batch_sampler.sampler``: :attr:`sampler` is an object whose ``set_epoch``
    forwards to this sampler, so every epoch gets its own plan there too. Under DDP, Lightning
    re-creates custom batch samplers around its ``DistributedSampler`` unless the trainer is
    built with ``Trainer(use_distributed_sampler=False)``; pass that (this sampler shards by
    rank itself), otherwise the constructor refuses the ``DistributedSampler`` with an
    ``InvalidTypeError`` that says so.

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
        wrapped: bool = False,
    ) -> None:
        if isinstance(clusters, Sampler):
            raise InvalidTypeError(
                f"clusters must be cluster ids (one per dataset row), got a "
                f"{type(clusters).__name__}: Lightning re-creates custom batch samplers around "
                "its DistributedSampler under DDP; build the Trainer with "
                "use_distributed_sampler=False (ClusterBatchSampler shards by rank itself)"
            )
        if plan not in _PLANS:
            raise InvalidArgumentError(f"plan must be 'topic' or 'ngame', got {plan!r}")
        if weighting not in ("uniform", "size"):
            raise InvalidArgumentError(f"weighting must be 'uniform' or 'size', got {weighting!r}")
        batch_size = _numbers.integer(batch_size, "batch_size")
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be positive, got {batch_size}")
        seed = _numbers.seed(seed, "seed")
        # Checked at each iteration: a sampler built before the process group (e.g. outside
        # Lightning's train_dataloader hook) would have every rank yield every row.
        self._world_from_dist = num_replicas is None
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
        self.clusters = int_array(clusters, "clusters")
        self._clusters_digest = _digest(self.clusters)
        self.batch_size = batch_size
        self.plan: Plan = plan
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.clusters_per_batch = _numbers.integer(clusters_per_batch, "clusters_per_batch")
        self.weighting: _batches.Weighting = weighting
        # Converted once: a caller changing its lists later cannot change the plan behind
        # the digest's back.
        keys = private_csr(conflicts, len(self.clusters), "conflicts")
        self.conflicts: tuple[np.ndarray, np.ndarray] | None = keys
        self._conflicts_digest = None if keys is None else _digest(*keys)
        self.num_replicas = num_replicas
        self.rank = rank
        self.wrapped = bool(wrapped)
        self.sampler = EpochForwarder(self)
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
        # What one iteration yields: this rank's batches, or every rank's for a wrapper.
        self._per_iter = self._per_rank * (self.num_replicas if self.wrapped else 1)

    # -----------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Use the plan of ``epoch`` from the next iteration on. Setting the epoch a loaded
        state is in keeps its resume point; any other epoch starts from its first batch.

        An epoch before the current one replays that epoch's batches in the same order: it
        is allowed, as with ``DistributedSampler`` (rolling back to an earlier checkpoint
        does it), but warned about, since a training loop that means to go on does not
        (e.g. one that restarts its count at 0 after :meth:`load_state_dict`, dropping the
        resume point)."""
        epoch = _numbers.seed(epoch, "epoch")
        if epoch < self.epoch:
            dropped = (
                f"; the resume point loaded for epoch {self.epoch} ({self._skip} batches "
                "yielded) is dropped"
                if self._skip
                else ""
            )
            warnings.warn(
                f"ClusterBatchSampler.set_epoch({epoch}) after epoch {self.epoch}: epoch "
                f"{epoch}'s batches come again, in the same order{dropped}. Pass increasing "
                "epochs unless you mean to replay one.",
                stacklevel=2,
            )
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
        new = int_array(clusters, "clusters")
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
        return self._per_iter - self._skip

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
        if self._world_from_dist and dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            if world != self.num_replicas:
                raise InvalidArgumentError(
                    f"ClusterBatchSampler took num_replicas={self.num_replicas} from "
                    "torch.distributed when it was built, but iterates among "
                    f"{world} processes: every rank would repeat the others' rows. Build it "
                    "after init_process_group (Lightning: in the train_dataloader hook) or pass "
                    "num_replicas= and rank="
                )
        skip, self._skip = self._skip, 0
        self._yielded = skip
        if self._per_iter == 0 or skip >= self._per_iter:
            return iter(())
        built = self._build()
        n = len(built)
        if n != self._plan_len:  # pragma: no cover - the counts are the plans' contract
            raise RuntimeError(f"plan has {n} batches, expected {self._plan_len}")
        return self._batches(built, skip)

    def _batches(self, built: _batches.BatchPlan, skip: int) -> Iterator[list[int]]:
        n = len(built)
        for k in range(skip, self._per_iter):
            # Rank r's k-th batch is global batch r + k * W; a wrapper gets them all in order.
            b = (k if self.wrapped else self.rank + k * self.num_replicas) % n
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
            "wrapped": self.wrapped,
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
        # States saved before ``wrapped`` existed come from samplers that shard themselves.
        state = {"wrapped": False, **state}
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
        if not 0 <= yielded <= self._per_iter:
            raise InvalidArgumentError(
                f"state yielded {yielded} batches, but an epoch has {self._per_iter} per iteration"
            )
        self.epoch = epoch
        self._skip = yielded
        self._yielded = yielded


class EpochForwarder:
    """``ClusterBatchSampler.sampler``: forwards ``set_epoch`` to its batch sampler, for
    trainers (Lightning, accelerate) that call ``set_epoch`` on ``batch_sampler.sampler``."""

    def __init__(self, batch_sampler: ClusterBatchSampler) -> None:
        self.batch_sampler = batch_sampler

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


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
