"""Which process of a ``torchrun`` / accelerate job this is, for work split over the ranks
(:func:`negmine.embed_texts`, the ``NegativeRefresher``'s encoding).

A job of several processes is seen from ``torch.distributed``: an initialised process group,
or, without one, the ``RANK`` / ``WORLD_SIZE`` variables ``torchrun`` sets (a gloo group is
then started for the call and destroyed after it). Nothing imports ``torch`` unless it is
already imported or ``WORLD_SIZE`` says there are several processes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from negmine import errors
from negmine.errors import InvalidArgumentError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process is rank ``rank`` of ``world``; :meth:`gather` is every rank's value (a
    barrier too)."""

    rank: int = 0
    world: int = 1
    _dist: Any = None

    def gather(self, value: object) -> list[Any]:
        if self._dist is None:
            return [value]
        out: list[Any] = [None] * self.world
        self._dist.all_gather_object(out, value)
        return out


ONE = Ranks()
"""One process: no other rank to wait for."""


def _world_from_environment() -> int:
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgumentError(f"WORLD_SIZE={raw!r} is not a number of processes") from None


def current() -> Ranks:
    """The ranks of an initialised ``torch.distributed`` process group, else :data:`ONE`."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        return Ranks(dist.get_rank(), world, dist) if world > 1 else ONE
    return ONE


@contextlib.contextmanager
def ranks(distributed: bool | None) -> Iterator[Ranks]:
    """The ranks of this job. ``distributed``: ``None`` to detect them (see the module),
    ``False`` for this process alone (a call made on one rank only), ``True`` to require
    several."""
    if distributed is False:
        yield ONE
        return
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        yield current()
        return
    if _world_from_environment() <= 1:
        if distributed:
            raise InvalidArgumentError(
                "distributed=True but this process is not one of several: no torch.distributed "
                "process group is initialised and WORLD_SIZE is not above 1 (run it under "
                "torchrun or accelerate launch)"
            )
        yield ONE
        return
    try:
        import torch.distributed as torch_dist
    except ImportError as e:
        raise ImportError(
            "WORLD_SIZE is above 1 (a torchrun job?) but torch is not installed: install it "
            "(pip install torch), or pass distributed=False for this process alone"
        ) from e
    # torchrun's variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE) say where to meet.
    torch_dist.init_process_group("gloo")
    try:
        yield Ranks(torch_dist.get_rank(), torch_dist.get_world_size(), torch_dist)
    finally:
        torch_dist.destroy_process_group()


def together(ranks: Ranks, step: Callable[[], T]) -> list[T]:
    """Every rank's ``step()`` result, in rank order, once all ranks have run theirs; an error
    on any rank is raised on every rank (its own error on the rank it happened on, a copy
    naming that rank elsewhere), so that no rank waits for one that has given up."""
    try:
        value: T | None = step()
        failure: Exception | None = None
    except Exception as e:
        value, failure = None, e
    if ranks.world == 1:
        if failure is not None:
            raise failure
        return [value]  # type: ignore[list-item]
    described = None if failure is None else _portable(failure)
    answers = ranks.gather((described, value))
    if failure is not None:
        raise failure
    for rank, (error, _) in enumerate(answers):
        if error is not None:
            raise _relayed(error, rank)
    return [answer for _, answer in answers]


def _portable(error: Exception) -> tuple[str, int | None, str]:
    """What another rank needs to raise ``error`` again: its class name, errno and message."""
    if isinstance(error, OSError) and error.errno is not None:
        return type(error).__name__, error.errno, error.strerror or str(error)
    return type(error).__name__, None, str(error)


def _relayed(error: tuple[str, int | None, str], rank: int) -> Exception:
    """Rank ``rank``'s error raised here: an ``OSError`` keeps its errno (out of space stays
    out of space), negmine's errors their class, anything else a ``RuntimeError``."""
    name, code, message = error
    if code is not None:
        return OSError(code, f"{message} (on rank {rank})")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.NegmineError):
        return cls(f"{message} (on rank {rank})")
    return RuntimeError(f"{name}: {message} (on rank {rank})")
