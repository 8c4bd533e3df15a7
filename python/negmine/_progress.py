"""Progress reporting shared by every long call: a tqdm bar or a user callable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressCallback = Callable[[int, int], object]


@contextmanager
def progress_callback(
    progress: bool | ProgressCallback,
    description: str,
    *,
    total: int,
    unit: str = "it",
    initial: int = 0,
) -> Iterator[ProgressCallback | None]:
    """Yields the ``(done, total)`` callable to hand to the core, closing the bar afterwards.

    The bar is drawn at once, at 0 of ``total``: made at the first report instead, it would
    start its clock after the first chunk of work (minutes, for a model's first batches) and
    show that chunk done in no time. ``initial`` is work done before (a resumed run): the bar
    starts there, and its rate and ETA count only what this run does. A callable ``progress``
    is handed on as it is."""
    if progress is False or progress is None:
        yield None
        return
    if callable(progress):
        yield progress
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=description, unit=unit, unit_scale=True, initial=initial)

    def update(done: int, total: int) -> None:
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
