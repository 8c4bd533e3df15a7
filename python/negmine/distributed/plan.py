"""The arguments of a Ray run, checked before Ray starts, and its plan: how many shards (or
actors), their row boundaries and resources, and the connection to the cluster."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from negmine import _numbers as numbers
from negmine import sources
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.mine import MiningOptions

if TYPE_CHECKING:
    from types import ModuleType

ShardBy = Literal["query", "corpus"]
NAMES = ("queries", "corpus", "positives")


def import_ray() -> ModuleType:
    """``ray``, or an ImportError naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("negmine.distributed needs Ray: pip install 'negmine[ray]'") from e
    return ray


@contextlib.contextmanager
def connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    """A Ray already initialised in this process as it is; else one connected (or started) for
    the block and shut down after it."""
    if ray.is_initialized():
        yield
        return
    ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


def check_address(ray_address: object) -> None:
    if ray_address is not None and not isinstance(ray_address, str):
        raise InvalidTypeError(f"ray_address must be a str, got {type(ray_address).__name__}")


def alive_nodes(ray: ModuleType) -> int:
    """The cluster's alive nodes (at least one): the default number of shards or actors."""
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


@dataclass(frozen=True)
class MiningArguments:
    """:func:`negmine.distributed.mine`'s keyword options sorted and checked: the mining
    options, ``shard_by``, the backend's settings and the backend options as given (for the
    checkpoint)."""

    mining: MiningOptions
    shard_by: ShardBy
    settings: Any
    given: dict[str, Any]


def mining_arguments(options: dict[str, Any], backend: str, shard_by: object) -> MiningArguments:
    """The mining options and ``backend``'s settings in ``options`` (the keyword options of
    ``mine``) and ``shard_by``, checked; the combinations that do not run on Ray refused."""
    if "rescore" in options:
        raise InvalidArgumentError(
            "rescore= (a teacher) runs in one process: use negmine.mine, or negmine mine "
            "--rescore-model without --ray"
        )
    names = set(sources.setting_names())
    given = {name: options.pop(name) for name in list(options) if name in names}
    mining = MiningOptions(**options)
    by: ShardBy = numbers.choice(shard_by, "shard_by", ("query", "corpus"))  # type: ignore[assignment]
    settings = sources.settings(backend, given)
    if backend == "torch":
        raise InvalidArgumentError(
            "backend='torch' runs in one process: use negmine.mine, or negmine mine without --ray"
        )
    if backend != "exact" and by == "corpus":
        raise InvalidArgumentError(
            f"backend={backend!r} needs shard_by='query' (by corpus, each shard searches its "
            "rows exactly)"
        )
    return MiningArguments(mining, by, settings, given)


def file_path(value: object, name: str) -> str | os.PathLike[str]:
    """``value``, an input of a run with ``out=``, which must be a file path."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidTypeError(
            f"with out=, {name} must be a file path (as for `negmine mine`), got "
            f"{type(value).__name__}"
        )
    return value


@dataclass(frozen=True)
class Split:
    """How a run is split, as far as it is known before Ray starts: the number of shards
    (``None``: one per alive node), by corpus their boundaries if given, and each actor's
    resources if given."""

    shard_by: str
    n_corpus: int
    n_shards: int | None
    boundaries: list[int] | None
    resources: list[dict[str, float]] | None

    def resolve(self, ray: ModuleType) -> tuple[int, list[int] | None]:
        """The number of shards (by query: of actors; by default the cluster's alive nodes)
        and, by corpus, their boundaries ``[0, b1, ..., N]`` (given, or equal ranges)."""
        n = self.n_shards
        if n is None:
            n = alive_nodes(ray)
            if self.shard_by == "corpus":
                n = min(n, max(self.n_corpus, 1))
        if self.shard_by == "query":
            return n, None
        if self.boundaries is not None:
            return n, self.boundaries
        return n, [self.n_corpus * i // n for i in range(n + 1)]


def split(
    shards: object,
    shard_by: str,
    shard_resources: Sequence[Mapping[str, float]] | None,
    n_corpus: int,
) -> Split:
    """``shards`` and ``shard_resources`` checked (see :func:`negmine.distributed.mine`)."""
    n_shards, boundaries = shard_plan(shards, shard_by, n_corpus)
    resources = shard_resources_of(shard_resources, n_shards)
    if resources is not None:
        n_shards = len(resources)
    return Split(shard_by, n_corpus, n_shards, boundaries, resources)


def shard_resources_of(
    shard_resources: Sequence[Mapping[str, float]] | None, n_shards: int | None
) -> list[dict[str, float]] | None:
    """``shard_resources`` checked: one mapping per shard (``None``: not given)."""
    if shard_resources is None:
        return None
    if isinstance(shard_resources, (str, Mapping)) or not isinstance(shard_resources, Sequence):
        raise InvalidTypeError(
            "shard_resources must be a sequence of one mapping per shard, e.g. "
            f"[{{'shard-0': 1}}, {{'shard-1': 1}}], got {shard_resources!r}"
        )
    if not all(isinstance(r, Mapping) for r in shard_resources):
        raise InvalidTypeError(
            f"shard_resources must hold one mapping per shard, got {shard_resources!r}"
        )
    if n_shards is not None and len(shard_resources) != n_shards:
        raise InvalidArgumentError(
            f"shard_resources has {len(shard_resources)} entries for {n_shards} shards"
        )
    return [dict(r) for r in shard_resources]


def shard_plan(shards: object, shard_by: str, n_corpus: int) -> tuple[int | None, list[int] | None]:
    """The number of shards (``None``: not given) and, by corpus, their boundaries if given."""
    if shards is None:
        return None, None
    if isinstance(shards, np.ndarray) and shards.ndim <= 1:
        # A numpy count, or boundaries as an array: their elements are checked as numbers.
        shards = shards[()] if shards.ndim == 0 else list(shards)
    if isinstance(shards, (int, np.integer)):
        n = numbers.count(shards, "shards")
        # An empty corpus is one empty shard (as by default), which mines as `negmine.mine`.
        if shard_by == "corpus" and n > max(n_corpus, 1):
            raise InvalidArgumentError(
                f"shards must be at most the corpus rows ({n_corpus}), got {n}"
            )
        return n, None
    if shard_by == "query" or not isinstance(shards, Sequence) or isinstance(shards, str):
        raise InvalidTypeError(
            "shards must be a number of shards"
            + ("" if shard_by == "query" else " or a sequence of row boundaries")
            + f", got {shards!r}"
        )
    bounds = [numbers.integer(b, "shard boundary", minimum=0) for b in shards]
    increasing = all(a < b for a, b in zip(bounds, bounds[1:]))
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != n_corpus or not increasing:
        raise InvalidArgumentError(
            f"shard boundaries must rise strictly from 0 to the corpus rows ({n_corpus}), "
            f"got {bounds}"
        )
    return len(bounds) - 1, bounds
