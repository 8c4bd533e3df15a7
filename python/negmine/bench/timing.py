"""The measuring core: a method (a source of ``(scores, ids)``), timing it (best, median and
spread of repeated runs after a warm-up) and checking its result against the reference's
(recall@k, same order, the k-th score's difference)."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from negmine.bench.settings import CELL_BUDGET

Result = tuple[np.ndarray, np.ndarray]  # (scores f32[Q,k], ids i64[Q,k])


@dataclass
class Timing:
    best: float
    runs: list[float]
    result: Any

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """The slowest run over the fastest, less 1: how much the runs disagreed."""
        return max(self.runs) / self.best - 1.0 if self.best > 0 else 0.0


def time_best(
    fn: Callable[[], Any], repeats: int, warmup: bool, budget: float, min_runs: int = 1
) -> Timing:
    """``repeats`` timed runs (after one untimed warm-up when asked), the best kept as the one
    least disturbed by other work on a shared machine, the median and spread beside it. Stops
    early once at least ``min_runs`` timed runs add up to ``budget`` seconds: a 30 s run is not
    noisy enough to need five of them."""
    if warmup:
        fn()
    runs: list[float] = []
    result = None
    wanted = max(1, repeats)
    while len(runs) < wanted and (len(runs) < min(min_runs, wanted) or sum(runs) < budget):
        t0 = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t0)
    return Timing(min(runs), runs, result)


@dataclass
class Method:
    """One row source of the tables: ``run(k)`` returns ``(scores, ids)`` for all queries."""

    name: str
    corpus: str  # dtype of the corpus it searches: "f32" or "f16"
    run: Callable[[int], Result]
    approximate: bool = False
    note: Callable[[int], str] = lambda k: ""
    timed: Callable[[int, int, float, int], Timing] | None = None
    """Times itself elsewhere (a subprocess): ``timed(k, repeats, budget, min_runs)`` warms up,
    runs and returns the timing with the result."""


def recall(ids: np.ndarray, ref: np.ndarray, n: int) -> float:
    """Mean |ids ∩ ref| / k per row, in one vectorised set test (row-offset keys)."""
    offsets = np.arange(ids.shape[0], dtype=np.int64)[:, None] * n
    return float(np.isin(ids + offsets, ref + offsets).mean())


def agreement(res: Result, ref: Result, n: int) -> dict[str, float]:
    scores, ids = res
    return {
        "recall": recall(ids, ref[1], n),
        "same_order": float((ids == ref[1]).all(axis=1).mean()),
        # If sets differ only at near-ties, the k-th scores still agree to rounding error.
        "kth_score_diff": float(np.abs(scores[:, -1] - ref[0][:, -1]).max()),
    }


@dataclass
class Measurement:
    method: Method
    k: int
    timing: Timing
    agreement: dict[str, float]
    note: str
    reference_seconds: float  # the reference method's best time for this k

    @property
    def seconds(self) -> float:
        return self.timing.best


def measure(
    methods: Sequence[Method],
    ks: Sequence[int],
    repeats: int,
    n: int,
    budget: float = CELL_BUDGET,
    min_runs: int = 1,
) -> Iterator[Measurement]:
    """Times every method for every k (one warm-up per method, not per k: page-in, thread
    pools and lazy set-up happen once) and checks it against the first method's result."""
    warmed: set[int] = set()
    for k in ks:
        ref: Result | None = None
        ref_seconds = 0.0
        for i, method in enumerate(methods):
            if method.timed is not None:
                timing = method.timed(k, repeats, budget, min_runs)
            else:
                timing = time_best(
                    functools.partial(method.run, k), repeats, i not in warmed, budget, min_runs
                )
            warmed.add(i)
            res: Result = (np.asarray(timing.result[0]), np.asarray(timing.result[1]))
            timing.result = None  # the Q x k result is not kept past its check
            if ref is None:
                ref, ref_seconds = res, timing.best
            yield Measurement(
                method, k, timing, agreement(res, ref, n), method.note(k), ref_seconds
            )
