"""Progress reporting shared by every long call: a tqdm bar or a user callable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressCallback = Callable[[int, int], object]


@contextmanager
def progress_callback(
    progress: bool | ProgressCallback, description: str, unit: str = "it"
) -> Iterator[ProgressCallback | None]:
    """Yields the ``(done, total)`` callable to hand to the core, closing the bar afterwards."""
    if progress is False or progress is None:
        yield None
        return
    if callable(progress):
        yield progress
        return
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=description, unit=unit, unit_scale=True)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
