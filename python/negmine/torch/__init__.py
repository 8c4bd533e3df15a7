"""PyTorch integration: :class:`ClusterBatchSampler` (``sampler.py``) feeds
:mod:`negmine.batches` plans to a ``DataLoader``; :class:`HardNegativeDataset` (``dataset.py``)
serves a mining result, :func:`collate` / :class:`Collator` (``collate.py``) batch it with the
in-batch false-negative mask; :class:`GpuPrefetcher` (``prefetch.py``) copies batches to the GPU
ahead of use; :class:`NegativeRefresher` (``refresh.py``) mines the negatives again with the
model being trained and swaps them in at epoch boundaries.

Importable only with torch installed; ``import negmine`` never imports this package. Inside it,
``import torch`` is the real torch (imports are absolute).

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

try:
    import torch as _torch  # noqa: F401  (only to fail early, with the way out)
except ImportError as e:
    raise ImportError(
        "negmine.torch needs PyTorch, which is not installed: pip install 'negmine[torch]' "
        "(or a CPU-only torch: pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu)"
    ) from e

from negmine.torch.collation import Collator, collate
from negmine.torch.dataset import HardNegativeDataset
from negmine.torch.prefetch import GpuPrefetcher
from negmine.torch.refresh import (
    NegativeRefresher,
    RefreshReport,
    SentenceTransformerEncoder,
    mining_seed,
)
from negmine.torch.sampler import ClusterBatchSampler, Plan

__all__ = [
    "ClusterBatchSampler",
    "Collator",
    "GpuPrefetcher",
    "HardNegativeDataset",
    "NegativeRefresher",
    "Plan",
    "RefreshReport",
    "SentenceTransformerEncoder",
    "collate",
    "mining_seed",
]
