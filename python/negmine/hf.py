"""negmine's batch sampler in Hugging Face's ``transformers.Trainer``.

``Trainer`` has no batch-sampler argument, and overriding ``_get_train_sampler`` hands back a
*sampler* that the trainer batches itself. :class:`ClusterSamplerTrainerMixin` overrides
``get_train_dataloader`` instead; :class:`ClusterSamplerTrainer` is the mixin on ``Trainer``.
Needs torch and transformers (with accelerate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import transformers
from torch.utils.data import DataLoader

from negmine.errors import InvalidTypeError
from negmine.torch.sampler import ClusterBatchSampler

BatchSamplerFactory = Callable[..., ClusterBatchSampler]


class ClusterSamplerTrainerMixin:
    """Put before ``transformers.Trainer`` (or a subclass of it) in the bases:
    ``class MyTrainer(ClusterSamplerTrainerMixin, Trainer)``, then
    ``MyTrainer(..., batch_sampler=negmine.st.topic_batch_sampler(clusters))``.

    ``batch_sampler`` is called like sentence-transformers' trainer calls it,
    ``f(dataset, batch_size, drop_last, valid_label_columns, generator, seed)``, on the
    training dataset *before* the trainer drops the columns the model does not take (so
    :func:`negmine.st.topic_batch_sampler` can read the ``ids_column``), with
    ``args.per_device_train_batch_size``, ``args.dataloader_drop_last`` and ``args.seed``. It
    must return a :class:`~negmine.torch.ClusterBatchSampler` built with ``wrapped=True``
    (``topic_batch_sampler`` does): accelerate shards its batches over the ranks, so under
    ``torchrun`` every row is seen once per epoch, and the trainer calls ``set_epoch``.
    """

    def __init__(self, *args: Any, batch_sampler: BatchSamplerFactory, **kwargs: Any) -> None:
        if not callable(batch_sampler):
            raise InvalidTypeError(
                "batch_sampler must be a factory f(dataset, batch_size, drop_last, "
                "valid_label_columns, generator, seed), e.g. negmine.st.topic_batch_sampler(...)"
                f", got {type(batch_sampler).__name__}"
            )
        self.negmine_batch_sampler = batch_sampler
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self) -> DataLoader[Any]:
        trainer: Any = self
        dataset = trainer.train_dataset
        if dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = trainer.args
        sampler = self.negmine_batch_sampler(
            dataset,
            args.per_device_train_batch_size,
            args.dataloader_drop_last,
            None,
            None,
            args.seed,
        )
        if not isinstance(sampler, ClusterBatchSampler) or not sampler.wrapped:
            raise InvalidTypeError(
                "batch_sampler must return a ClusterBatchSampler built with wrapped=True "
                "(the trainer's accelerate shards its batches over the ranks), got "
                + (
                    type(sampler).__name__
                    if not isinstance(sampler, ClusterBatchSampler)
                    else "one with wrapped=False"
                )
            )
        collator = trainer.data_collator
        if type(dataset).__module__.startswith("datasets"):
            dataset = trainer._remove_unused_columns(dataset, description="training")
        else:
            collator = trainer._get_collator_with_removed_columns(collator, description="training")
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
        )
        # accelerate pads a rank's short last batch with rows from the epoch's start when
        # even_batches is on; the plan is already padded to a multiple of the world size.
        trainer.accelerator.even_batches = False
        prepared: DataLoader[Any] = trainer.accelerator.prepare(loader)
        return prepared


class ClusterSamplerTrainer(ClusterSamplerTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` with :class:`ClusterSamplerTrainerMixin`."""


__all__ = ["BatchSamplerFactory", "ClusterSamplerTrainer", "ClusterSamplerTrainerMixin"]
