"""The gradient-cached masked losses of :mod:`negmine.st`
(``CachedMaskedMultipleNegativesRankingLoss``, ``CachedMaskedGISTEmbedLoss``): built on first
use, since they derive from sentence-transformers' gradient-cache mixin and the rest of
:mod:`negmine.st` works without sentence-transformers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy.typing as npt
import torch
from torch import Tensor

from negmine._st_losses import (
    Direction,
    HardnessMode,
    PartitionMode,
    check_mini_batch,
    check_splittable,
    masked_gist,
    masked_mnrl,
    slice_features,
)
from negmine.st import MaskedGISTEmbedLoss, MaskedMultipleNegativesRankingLoss
from negmine.torch.collation import Positives


def set_mini_batches(
    loss: Any, mini_batch_size: int, mini_batch_num_tokens: int | None, show_progress_bar: bool
) -> None:
    """A cached loss's settings of the gradient cache (checked by ``check_mini_batch``)."""
    loss.mini_batch_size = mini_batch_size
    loss.mini_batch_num_tokens = mini_batch_num_tokens
    loss.show_progress_bar = show_progress_bar


def mini_batch_config(loss: Any) -> dict[str, Any]:
    """What a cached loss's ``get_config_dict`` adds to the uncached loss's."""
    return {
        "mini_batch_size": loss.mini_batch_size,
        "mini_batch_num_tokens": loss.mini_batch_num_tokens,
    }


def cached_mnrl_class() -> type:
    """``CachedMaskedMultipleNegativesRankingLoss`` (see its docstring)."""
    from sentence_transformers.base.losses.gradcache import CachedLossMixin

    class CachedMaskedMultipleNegativesRankingLoss(
        CachedLossMixin,
        MaskedMultipleNegativesRankingLoss,
    ):
        """:class:`MaskedMultipleNegativesRankingLoss` with sentence-transformers' gradient
        cache (as ``CachedMultipleNegativesRankingLoss``): the batch is embedded
        ``mini_batch_size`` rows at a time (or, with ``mini_batch_num_tokens``, as many rows
        as fit that many non-padding tokens), and the loss is computed ``mini_batch_size``
        anchor rows at a time, so large batches fit in memory; the loss and gradients are
        those of the uncached loss, with the same options (``directions``,
        ``partition_mode``, ``hardness_mode`` ...). Not for ``StaticEmbedding`` models, whose
        inputs cannot be split."""

        def __init__(
            self,
            model: Any,
            *,
            mini_batch_size: int = 32,
            mini_batch_num_tokens: int | None = None,
            positives: Positives = None,
            groups: npt.ArrayLike | None = None,
            scale: float = 20.0,
            similarity_fct: Any = None,
            gather_across_devices: bool = False,
            directions: tuple[Direction, ...] = ("query_to_doc",),
            partition_mode: PartitionMode = "joint",
            hardness_mode: HardnessMode | None = None,
            hardness_strength: float = 0.0,
            show_progress_bar: bool = False,
        ) -> None:
            check_mini_batch(mini_batch_size, mini_batch_num_tokens)
            check_splittable(model, "CachedMaskedMultipleNegativesRankingLoss")
            MaskedMultipleNegativesRankingLoss.__init__(
                self,
                model,
                positives=positives,
                groups=groups,
                scale=scale,
                similarity_fct=similarity_fct,
                gather_across_devices=gather_across_devices,
                directions=directions,
                partition_mode=partition_mode,
                hardness_mode=hardness_mode,
                hardness_strength=hardness_strength,
            )
            set_mini_batches(self, mini_batch_size, mini_batch_num_tokens, show_progress_bar)

        def calculate_loss(
            self,
            reps: list[list[Tensor]],
            labels: Tensor | None = None,
            *,
            with_backward: bool = False,
        ) -> Tensor:
            embeddings = [torch.cat(r) for r in reps]
            return masked_mnrl(self, embeddings, labels, self.mini_batch_size, with_backward)

        def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
            result: Tensor = self.forward_cached(list(sentence_features), labels)
            return result

        def get_config_dict(self) -> dict[str, Any]:
            return {**super().get_config_dict(), **mini_batch_config(self)}

    return CachedMaskedMultipleNegativesRankingLoss


def cached_gist_class() -> type:
    """``CachedMaskedGISTEmbedLoss`` (see its docstring)."""
    from sentence_transformers.base.losses.gradcache import CachedLossMixin, _minibatch_ranges

    class CachedMaskedGISTEmbedLoss(CachedLossMixin, MaskedGISTEmbedLoss):
        """:class:`MaskedGISTEmbedLoss` with sentence-transformers' gradient cache (as
        ``CachedGISTEmbedLoss``): the model and the guide embed ``mini_batch_size`` rows at a
        time (or ``mini_batch_num_tokens`` tokens' worth), the loss is computed
        ``mini_batch_size`` anchor rows at a time; loss and gradients are the uncached
        loss's."""

        def __init__(
            self,
            model: Any,
            guide: Any,
            *,
            mini_batch_size: int = 32,
            mini_batch_num_tokens: int | None = None,
            show_progress_bar: bool = False,
            **options: Any,
        ) -> None:
            check_mini_batch(mini_batch_size, mini_batch_num_tokens)
            check_splittable(model, "CachedMaskedGISTEmbedLoss")
            MaskedGISTEmbedLoss.__init__(self, model, guide, **options)
            set_mini_batches(self, mini_batch_size, mini_batch_num_tokens, show_progress_bar)

        def calculate_loss(
            self,
            reps: list[list[Tensor]],
            labels: Any = None,
            *,
            with_backward: bool = False,
        ) -> Tensor:
            ids, guide = labels  # forward passes the guide's embeddings along with the ids
            embeddings = [torch.cat(r) for r in reps]
            return masked_gist(self, embeddings, guide, ids, self.mini_batch_size, with_backward)

        def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
            features = list(sentence_features)
            guide: list[Tensor] = []
            for f in features:
                # The guide embeds the same mini-batches as the model, without gradients.
                ranges = _minibatch_ranges(f, self.mini_batch_size, self.mini_batch_num_tokens)
                parts = [
                    self.guide_embeddings([slice_features(f, begin, end)])[0]
                    for begin, end in ranges
                ]
                guide.append(torch.cat(parts))
            # calculate_loss gets the guide's embeddings with the ids, through the mixin.
            result: Tensor = self.forward_cached(features, (labels, guide))  # type: ignore[arg-type]
            return result

        def get_config_dict(self) -> dict[str, Any]:
            return {**super().get_config_dict(), **mini_batch_config(self)}

    return CachedMaskedGISTEmbedLoss
