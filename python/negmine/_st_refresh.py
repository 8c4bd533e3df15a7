""":class:`negmine.st.RefreshCallback`: negatives mined again with the trainer's model at epoch
boundaries (:class:`negmine.torch.NegativeRefresher`), served through a dataset whose rows read
the live negatives. transformers' ``TrainerCallback`` is imported when the callback is first
used (:func:`refresh_callback_class`), so the rest of :mod:`negmine.st` works without it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.hard_negatives import Mined, encode_texts, model_encoders
from negmine.torch.dataset import HardNegativeDataset
from negmine.torch.refresh import NegativeRefresher


class TrainerRefresh:
    """What :class:`negmine.st.RefreshCallback` does (its docstring says what), without
    transformers' ``TrainerCallback`` base, which :func:`refresh_callback_class` adds."""

    def __init__(
        self,
        mined: Mined,
        *,
        directory: str | Any,
        options: dict[str, Any] | None = None,
        every: int = 1,
        unit: str = "epoch",
        overlap: bool = True,
        seed: int = 0,
        keep: int = 2,
        chunk_size: int = 4096,
        batch_size: int | None = None,
        on_swap: Any = None,
        ids_column: str = "label",
    ) -> None:
        import datasets

        if not isinstance(mined, Mined):
            raise InvalidTypeError(
                f"mined must be negmine.st.from_dataset's result, got {type(mined).__name__}"
            )
        self.mined = mined
        self.source = HardNegativeDataset(mined.result)
        self.refresher: NegativeRefresher | None = None
        self._settings: dict[str, Any] = {
            "directory": directory,
            "options": mined.options if options is None else options,
            "every": every,
            "unit": unit,
            "overlap": overlap,
            "seed": seed,
            "keep": keep,
            "chunk_size": chunk_size,
            "on_swap": on_swap,
        }
        self._batch_size = mined.encode["batch_size"] if batch_size is None else batch_size
        indptr, positive_ids = mined.result.positive_indptr, mined.result.positive_ids
        pairs = np.stack(
            [np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), positive_ids], axis=1
        )
        rows = datasets.Dataset.from_dict({ids_column: pairs.tolist()})
        anchor, positive = mined.dataset.column_names[:2]  # the input's names
        self._rows = LiveRows(
            self.source, mined.query_texts, mined.corpus_texts, (anchor, positive), ids_column
        )
        rows.set_transform(self._rows)
        self.train_dataset = rows

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loader = kwargs.get("train_dataloader")
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and not self._serves(dataset):
            raise InvalidArgumentError(
                "the trainer trains on another dataset than the callback refreshes: pass "
                "train_dataset=callback.train_dataset to the trainer"
            )
        if getattr(args, "dataloader_persistent_workers", False):
            raise InvalidArgumentError(
                "dataloader_persistent_workers=True keeps the dataset that the workers "
                "copied at the first epoch, so refreshed negatives would never reach "
                "them: set it to False"
            )
        if self.refresher is not None:
            return  # a second train() call goes on with the same refresher
        model = kwargs.get("model")
        if model is None:
            raise InvalidArgumentError("the trainer passed no model to on_train_begin")
        mined = self.mined
        self.refresher = NegativeRefresher(
            self.source,
            encode_queries=TextEncoder(
                model, mined.query_texts, "query", mined.encode, self._batch_size
            ),
            encode_corpus=TextEncoder(
                model, mined.corpus_texts, "corpus", mined.encode, self._batch_size
            ),
            n_queries=len(mined.query_texts),
            n_corpus=len(mined.corpus_texts),
            positives=(mined.result.positive_indptr, mined.result.positive_ids),
            **self._settings,
        )

    def _serves(self, dataset: Any) -> bool:
        transform = getattr(dataset, "_format_kwargs", {}).get("transform")
        return dataset is self.train_dataset or transform is self._rows

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.refresher is not None  # on_train_begin came first
        # The epoch about to start: state.epoch is the epochs done (exactly an integer at
        # a boundary; a fraction when resumed inside an epoch).
        self.refresher.set_epoch(math.floor((state.epoch or 0) + 1e-9))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.refresher is not None:
            self.refresher.step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.refresher is not None:
            self.refresher.close()


def refresh_callback_class() -> type:
    """:class:`TrainerRefresh` as a transformers ``TrainerCallback``: ``RefreshCallback``."""
    from transformers import TrainerCallback

    class RefreshCallback(TrainerRefresh, TrainerCallback):
        """Negatives mined again with the trainer's model, at epoch boundaries, served to the
        next epochs: :class:`negmine.torch.NegativeRefresher` in sentence-transformers' (or
        Hugging Face's) trainer.

        Pass :attr:`train_dataset` to the trainer and the callback to its ``callbacks``::

            refresh = RefreshCallback(mined, directory="refresh")
            trainer = SentenceTransformerTrainer(model=model, args=args, loss=loss,
                train_dataset=refresh.train_dataset, callbacks=[refresh])

        :attr:`train_dataset` is a ``datasets.Dataset`` in the ``"n-tuple"`` layout with
        the ids column (``anchor, positive, negative_1 ... negative_n, label``), one row per
        (query, positive) pair of ``mined.result``; its rows read the negatives the refresher
        serves when they are read (a ``datasets`` transform), so no row is ever dropped or
        added and the trainer's step count holds. Rows of queries short of negatives keep
        them as empty texts with id ``-1``, which :class:`MaskedMultipleNegativesRankingLoss`
        (and its cached variant) leave out; the plain MNRL would take them as negatives.

        At the start of each epoch (``on_epoch_begin``, before its batches are read) the
        callback calls ``NegativeRefresher.set_epoch``: every ``every`` epochs the trainer's
        model encodes ``mined.query_texts`` and ``mined.corpus_texts`` (as the mining did:
        ``encode_query`` / ``encode_document`` with its prompts) and ``negmine.mine`` mines
        them with ``options`` (default ``mined.options``: the call's window, filters and
        sampling); with ``overlap=True`` the mining runs behind the next epoch and its
        negatives are served from the one after, with ``overlap=False`` at once (training
        waits). ``unit="step"`` counts optimiser steps instead. Batches never mix two
        refreshes. ``on_train_end`` waits for a mining still running.

        Under ``torchrun`` every process builds the callback with the same ``directory``
        (shared by the processes); rank 0 encodes and mines, the others read its result at
        the swap, and every rank swaps at the same boundary (see ``NegativeRefresher``).
        ``DataLoader`` workers copy the dataset when an epoch starts, so
        ``dataloader_persistent_workers`` would keep the first negatives: it is refused.

        Args:
            mined: :func:`from_dataset`'s result.
            directory: where refreshes keep their embeddings and results.
            options: :func:`negmine.mine` keywords (not ``seed``) instead of
                ``mined.options`` (``num_negatives`` as many as mined, at least).
            every, unit, overlap, seed, keep, chunk_size, on_swap: as ``NegativeRefresher``.
            batch_size: the encoding batch size (default: the one the mining used).
            ids_column: the ids column's name (``"label"``, which the trainer hands to
                the loss).
        """

    return RefreshCallback


class LiveRows:
    """The ``datasets`` transform of :attr:`negmine.st.RefreshCallback.train_dataset`: a batch of
    ``[query, positive]`` rows -> the ``"n-tuple"`` layout (anchor, positive, negative_1 ...,
    ids) with the negatives the refresher serves at the time of reading."""

    def __init__(
        self,
        source: HardNegativeDataset,
        query_texts: list[str],
        corpus_texts: list[str],
        columns: tuple[str, str],
        ids_column: str,
    ) -> None:
        self.source = source
        self.query_texts = query_texts
        self.corpus_texts = corpus_texts
        self.columns = columns
        self.ids_column = ids_column

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        pairs = np.asarray(batch[self.ids_column], dtype=np.int64).reshape(-1, 2)
        # One read of the served negatives: a swap between two reads cannot mix results.
        negatives = self.source.negative_ids[pairs[:, 0], : self.source.num_negatives]
        corpus = self.corpus_texts
        out: dict[str, list[Any]] = {
            self.columns[0]: [self.query_texts[q] for q in pairs[:, 0].tolist()],
            self.columns[1]: [corpus[p] for p in pairs[:, 1].tolist()],
        }
        for j in range(negatives.shape[1]):
            # A missing negative (-1) is an empty text that the masked losses leave out.
            out[f"negative_{j + 1}"] = [corpus[i] if i >= 0 else "" for i in negatives[:, j]]
        out[self.ids_column] = np.concatenate([pairs, negatives], axis=1).tolist()
        return out


class TextEncoder:
    """``NegativeRefresher``'s encoder of one side: the texts at the given rows through the
    model's ``encode_query`` / ``encode_document`` (as the mining encoded them), leaving the
    model in the train / eval mode it was in (``encode`` switches it to eval)."""

    def __init__(
        self, model: Any, texts: list[str], kind: str, encode: dict[str, Any], batch_size: int
    ) -> None:
        self.model = model
        self.encoder = model_encoders(model)[kind]
        self.texts = texts
        self.prompt = encode[f"{kind}_prompt"]
        self.prompt_name = encode[f"{kind}_prompt_name"]
        self.batch_size = batch_size

    def __call__(self, indices: Tensor) -> np.ndarray:
        training = getattr(self.model, "training", None)
        try:
            return encode_texts(
                self.encoder,
                [self.texts[i] for i in indices.tolist()],
                batch_size=self.batch_size,
                prompt=self.prompt,
                prompt_name=self.prompt_name,
                verbose=False,
            )
        finally:
            if training is not None:
                self.model.train(training)
