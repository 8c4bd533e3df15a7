"""Batch plans: which dataset rows share a training batch in each epoch.

Every plan is computed in Rust (``negmine._core``) from its inputs and ``(seed, epoch)``, which
are mixed by a hash chain (SplitMix64's finaliser), never added: ``(seed=1, epoch=0)`` and
``(seed=0, epoch=1)`` are unrelated. The same arguments give the same plan in every process,
for any thread count.

The number of batches is known before a plan is built (:func:`topic_count`,
:func:`ngame_count`): it depends on the cluster sizes, ``batch_size``, ``clusters_per_batch``
and ``drop_last`` only, never on the seed or epoch, and the ``conflicts`` constraint keeps it.

Plans:

- :func:`topic` (TAS): batches drawn from one cluster (or ``clusters_per_batch``), clusters
  picked uniformly or by size; every row once per epoch.
- :func:`ngame` (NGAME): clusters shuffled, concatenated and cut into batches.
- :func:`margin_balanced` (TAS-Balanced): one (positive, negative) pair per query, picked from
  a uniformly chosen non-empty margin bin.
- ``conflicts=`` / :func:`separate`: no in-batch false negatives, i.e. two rows sharing a
  conflict key (see :func:`conflict_keys`) never share a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import IdsLike, as_csr, private_copy, private_csr
from negmine._inputs import count_int as _count_int
from negmine._inputs import int_array as _int_array
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.idlists import entry_rows

Weighting = Literal["uniform", "size"]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BatchPlan:
    """The batches of one epoch: batch ``b`` is ``indices[offsets[b]:offsets[b + 1]]``
    (dataset row indices).

    ``len(plan)`` is the number of batches, ``plan[b]`` one batch, ``iter(plan)`` all of them;
    :meth:`to_array` gives a ``(len(plan), batch_size)`` array when all batches have the same
    size. ``topical`` (topic plans only) is the number of leading batches built from whole
    cluster chunks; the batches after them hold the leftovers.
    """

    indices: IntArray
    offsets: IntArray
    topical: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, batch: int) -> IntArray: ...
    @overload
    def __getitem__(self, batch: slice) -> list[IntArray]: ...
    def __getitem__(self, batch: int | slice) -> IntArray | list[IntArray]:
        if isinstance(batch, slice):
            return [self[b] for b in range(*batch.indices(len(self)))]
        n = len(self)
        b = int(batch)
        if not -n <= b < n:
            raise IndexError(f"batch {batch} out of range for a plan of {n} batches")
        b %= n
        return self.indices[self.offsets[b] : self.offsets[b + 1]]

    def __iter__(self) -> Iterator[IntArray]:
        for b in range(len(self)):
            yield self.indices[self.offsets[b] : self.offsets[b + 1]]

    @property
    def sizes(self) -> IntArray:
        """The number of rows of every batch."""
        return np.diff(self.offsets)

    @property
    def uniform(self) -> bool:
        """True when every batch has the same size (so :meth:`to_array` works)."""
        sizes = self.sizes
        return bool(len(sizes) == 0 or (sizes == sizes[0]).all())

    def to_array(self) -> IntArray:
        """The plan as a ``(batches, batch_size)`` array (a view of ``indices``)."""
        sizes = self.sizes
        if not self.uniform:
            raise InvalidArgumentError(
                f"batches have different sizes ({int(sizes.min())} to {int(sizes.max())} rows): "
                "use indices/offsets, or drop_last=True"
            )
        width = int(sizes[0]) if len(sizes) else 0
        return self.indices.reshape(len(sizes), width)

    def tolist(self) -> list[list[int]]:
        return [batch.tolist() for batch in self]


def _plan(arrays: tuple[IntArray, IntArray, int]) -> BatchPlan:
    indices, offsets, topical = arrays
    return BatchPlan(indices, offsets, int(topical))


# ---------------------------------------------------------------------------------------------
# Plans


def topic(
    clusters: npt.ArrayLike,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    clusters_per_batch: int = 1,
    weighting: Weighting = "uniform",
    drop_last: bool = False,
    conflicts: IdsLike = None,
) -> BatchPlan:
    """TAS topic batches: row ``i`` belongs to cluster ``clusters[i]`` (any non-negative ids).

    Each cluster's rows are shuffled and cut into chunks of ``m = batch_size //
    clusters_per_batch`` rows (``batch_size`` must be a multiple of ``clusters_per_batch``).
    Chunks are picked one by one, among clusters with a whole chunk left: ``"uniform"`` picks
    the cluster uniformly (TAS; small clusters run out early in the epoch), ``"size"``
    proportionally to its remaining chunks (a random interleaving of all chunks). Every
    ``clusters_per_batch`` picks make a *topical* batch of exactly ``batch_size`` rows from at
    most ``clusters_per_batch`` clusters.

    **Leftovers.** A cluster's tail of ``size % m`` rows (all of a cluster smaller than
    ``m``), and the at most ``clusters_per_batch - 1`` chunks that cannot fill a topical batch,
    go cluster by cluster (in a random cluster order, so they stay as topical as possible) into
    one sequence that is cut into batches of ``batch_size`` after the topical ones. Only the
    very last batch can be short; ``drop_last`` leaves it out (those rows change every epoch).

    **Count.** With ``F`` whole chunks over all clusters, ``T = F // clusters_per_batch``
    topical batches and ``L = n - T * batch_size`` leftover rows, the plan has
    ``T + ceil(L / batch_size)`` batches, or ``T + L // batch_size`` with ``drop_last``
    (:func:`topic_count`). ``plan.topical == T``.

    ``conflicts`` (per-row keys, see :func:`separate`) then keeps rows sharing a key apart;
    rows it moves may leave their cluster's batch.
    """
    clusters_ = _int_array(clusters, "clusters")
    keys = private_csr(conflicts, len(clusters_), "conflicts")
    args = (
        numbers.seed(seed, "seed"),
        numbers.seed(epoch, "epoch"),
        _count_int(batch_size, "batch_size"),
        _count_int(clusters_per_batch, "clusters_per_batch"),
    )
    return _plan(
        _core.topic_plan(
            clusters_,
            args[2],
            seed=args[0],
            epoch=args[1],
            clusters_per_batch=args[3],
            weighting=weighting,
            drop_last=bool(drop_last),
            conflicts=keys,
        )
    )


def topic_count(
    clusters: npt.ArrayLike,
    batch_size: int,
    *,
    clusters_per_batch: int = 1,
    drop_last: bool = False,
) -> int:
    """The exact number of batches :func:`topic` returns for these arguments, for every seed
    and epoch (see :func:`topic` for the rule)."""
    count, _ = _core.topic_count(
        _int_array(clusters, "clusters"),
        _count_int(batch_size, "batch_size"),
        clusters_per_batch=_count_int(clusters_per_batch, "clusters_per_batch"),
        drop_last=bool(drop_last),
    )
    return count


def ngame(
    clusters: npt.ArrayLike,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_last: bool = False,
    conflicts: IdsLike = None,
) -> BatchPlan:
    """NGAME batches: the clusters in a random order, each cluster's rows shuffled, all
    concatenated and cut into batches of ``batch_size`` rows. The last batch has
    ``n % batch_size`` rows when that is not zero; ``drop_last`` leaves it out. Count:
    :func:`ngame_count`.

    NGAME grows the cluster size during training: cluster once into many small clusters
    (``negmine.kmeans``), then every few epochs pass coarser ones,
    ``negmine.coarsen_clusters(centroids, assignments, fewer)`` (neighbouring clusters
    merged), or a re-clustering with the current model; the count does not depend on the
    clusters, so it stays the same (``ClusterBatchSampler.set_clusters`` does this in a
    training loop).

    ``conflicts``: see :func:`separate`.
    """
    clusters_ = _int_array(clusters, "clusters")
    keys = private_csr(conflicts, len(clusters_), "conflicts")
    seed_, epoch_ = numbers.seed(seed, "seed"), numbers.seed(epoch, "epoch")
    return _plan(
        _core.ngame_plan(
            clusters_,
            _count_int(batch_size, "batch_size"),
            seed=seed_,
            epoch=epoch_,
            drop_last=bool(drop_last),
            conflicts=keys,
        )
    )


def ngame_count(n_rows: int, batch_size: int, *, drop_last: bool = False) -> int:
    """``ceil(n_rows / batch_size)``, or ``n_rows // batch_size`` with ``drop_last``."""
    return _core.ngame_count(
        _count_int(n_rows, "n_rows"),
        _count_int(batch_size, "batch_size"),
        drop_last=bool(drop_last),
    )


def separate(plan: BatchPlan, conflicts: IdsLike) -> BatchPlan:
    """``plan`` with no two rows sharing a conflict key in one batch; every batch keeps its
    size, so the plan keeps its length.

    ``conflicts`` gives each dataset row its keys, as ``(indptr, keys)`` CSR arrays or one list
    per row (non-negative integers; build them with :func:`conflict_keys`). Greedy and
    deterministic: rows are taken in plan order, each into the first batch not yet full that
    holds none of its keys, so a clashing row moves to the next batch that can take it; a row
    that fits no batch near the end is swapped with a row of an earlier batch. Raises
    ``InvalidArgumentError`` when a key is shared by more rows of the plan than it has batches
    (impossible), or, rarely, when no swap is found.
    """
    if not isinstance(plan, BatchPlan):
        raise InvalidTypeError(f"plan must be a BatchPlan, got {type(plan).__name__}")
    if conflicts is None:
        raise InvalidTypeError("conflicts must be given")
    n_rows = len(conflicts[0]) - 1 if isinstance(conflicts, tuple) else len(conflicts)
    keys = private_csr(conflicts, n_rows, "conflicts")
    assert keys is not None
    indices, offsets = (
        _int_array(plan.indices, "indices"),
        _int_array(plan.offsets, "offsets"),
    )
    return _plan(_core.separate_plan(indices, offsets, max(n_rows, 0), keys, topical=plan.topical))


def margin_balanced(
    margins_indptr: npt.ArrayLike | None,
    margins: npt.ArrayLike,
    bins: int = 10,
    *,
    seed: int,
    epoch: int,
) -> IntArray:
    """TAS-Balanced margin sampling: one (positive, negative) pair per query.

    Query ``q``'s pairs have margins ``margins[margins_indptr[q]:margins_indptr[q + 1]]``
    (teacher score of the positive minus that of the negative), or ``margins[q]`` when
    ``margins`` is 2-D and ``margins_indptr`` is None. The global margin range ``[lo, hi]`` is
    cut into ``bins`` equal-width bins (the last one closed); per query a non-empty bin is
    picked uniformly, then a pair uniformly inside it, from a stream of ``(seed, epoch, q)``.

    Returns the chosen pair's index *within its query* (``0 <= i < len``; with a 2-D ``margins``
    the column), or -1 for a query without pairs. Margins must be finite.
    """
    values = np.asarray(margins)
    if values.size and values.dtype.kind not in "fiu":
        raise InvalidTypeError(f"margins must hold numbers, got dtype {values.dtype}")
    if margins_indptr is None:
        if values.ndim != 2:
            raise InvalidArgumentError(
                f"margins must be 2-D (queries x pairs) when margins_indptr is None, "
                f"got shape {values.shape}"
            )
        indptr = np.arange(values.shape[0] + 1, dtype=np.int64) * values.shape[1]
    else:
        indptr = _int_array(margins_indptr, "margins_indptr")
        if values.ndim != 1:
            raise InvalidArgumentError(
                f"margins must be 1-D with margins_indptr, got shape {values.shape}"
            )
    flat = private_copy(values, np.float64).reshape(-1)
    seed_, epoch_ = numbers.seed(seed, "seed"), numbers.seed(epoch, "epoch")
    return _core.margin_balanced(indptr, flat, _count_int(bins, "bins"), seed=seed_, epoch=epoch_)


def conflict_keys(
    positives: IdsLike,
    *,
    groups: npt.ArrayLike | None = None,
    components: npt.ArrayLike | None = None,
) -> tuple[IntArray, IntArray]:
    """Per-row conflict keys for :func:`separate` / ``conflicts=``: rows whose positives share
    an id (or, with ``groups``, a duplicate group), or whose queries are linked, conflict.

    ``positives``: each row's positive corpus ids (CSR pair or one list per row).
    ``groups``: a duplicate-group id per *corpus* row (``negmine._core.duplicate_groups``);
    when given, positives conflict by group instead of by id (identical ids share a group).
    ``components``: a linked-query component id per *row* (``negmine._core.link_queries``).
    Keys are ``2 * id_or_group`` and ``2 * component + 1``, so the two kinds never collide.
    """
    if positives is None:
        raise InvalidTypeError("positives must be given")
    n_rows = len(positives[0]) - 1 if isinstance(positives, tuple) else len(positives)
    csr = as_csr(positives, n_rows, "positives")
    assert csr is not None
    indptr, ids = csr  # indptr checked by as_csr
    n_rows = len(indptr) - 1
    if len(ids) and ids.min() < 0:
        raise InvalidArgumentError(f"positive ids must be non-negative, got {int(ids.min())}")
    base = ids
    if groups is not None:
        groups_ = _int_array(groups, "groups")
        if len(ids) and ids.max() >= len(groups_):
            raise InvalidArgumentError(
                f"positive id {int(ids.max())} has no group (groups has {len(groups_)} entries)"
            )
        base = groups_[ids]
    if components is None:
        return indptr.copy(), base * 2
    comps = _int_array(components, "components")
    if len(comps) != n_rows:
        raise InvalidArgumentError(
            f"components must have one entry per row ({n_rows}), got {len(comps)}"
        )
    if len(comps) and comps.min() < 0:
        raise InvalidArgumentError(f"components must be non-negative, got {int(comps.min())}")
    rows = np.arange(n_rows + 1, dtype=np.int64)
    out_indptr = indptr + rows
    keys = np.empty(len(ids) + n_rows, dtype=np.int64)
    row_of = entry_rows(indptr)
    keys[np.arange(len(ids), dtype=np.int64) + row_of] = base * 2
    keys[indptr[1:] + rows[:-1]] = comps * 2 + 1
    return out_indptr, keys


__all__ = [
    "BatchPlan",
    "Weighting",
    "conflict_keys",
    "margin_balanced",
    "ngame",
    "ngame_count",
    "separate",
    "topic",
    "topic_count",
]
