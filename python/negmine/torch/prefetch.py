"""``GpuPrefetcher``: DataLoader batches copied to the GPU ahead of use, on a side stream."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from negmine import _numbers
from negmine.errors import InvalidArgumentError


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
