"""negmine in sentence-transformers' trainer: a batch sampler factory and masked losses.

- :func:`topic_batch_sampler`: for ``SentenceTransformerTrainingArguments(batch_sampler=...)``,
  topic (TAS) or NGAME batches from per-query clusters, never one query twice in a batch,
  each row once per epoch under ``torchrun`` (the trainer's accelerate does the rank sharding).
- :class:`MaskedMultipleNegativesRankingLoss`: MNRL that leaves out in-batch false negatives
  (a candidate that is a labelled positive of the row's query, or a duplicate of one), in
  every direction of sentence-transformers' ``directions`` option, with its
  ``partition_mode`` and ``hardness_mode`` options; ``CachedMaskedMultipleNegativesRankingLoss``
  with the gradient cache. :class:`MaskedGISTEmbedLoss` (and ``CachedMaskedGISTEmbedLoss``):
  ``GISTEmbedLoss`` masking by a guide model's scores and by the ids.

Both read the ids column that :func:`negmine.to_dataset` (or
``negmine.mine_hard_negatives``) writes with ``ids_column="label"``.

- :func:`from_dataset`: ``negmine.mine_hard_negatives`` with that column, and what it mined
  from (texts, embeddings, the result) for the sampler, the losses and refreshes.
- :class:`RefreshCallback`: a ``TrainerCallback`` that mines the negatives again with the
  trainer's model at epoch boundaries (:class:`negmine.torch.NegativeRefresher`) and serves
  them through a dataset whose rows read the live negatives.

Needs torch and sentence-transformers (``pip install 'negmine[st,torch]'``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from negmine import batches as _batches
from negmine._inputs import IdsLike, int_array, private_csr
from negmine._st_losses import (
    Direction,
    HardnessMode,
    MarginStrategy,
    MaskedLossBase,
    PartitionMode,
    check_directions,
    check_hardness,
    check_mini_batch,
    check_partition_mode,
    check_splittable,
    checked_number,
    guide_features,
    masked_gist,
    masked_mnrl,
    needs_retokenizing,
    positive_number,
    similarity_name,
    slice_features,
)
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.hard_negatives import Mined, encode_texts, mine_dataset, model_encoders
from negmine.torch.collation import Positives
from negmine.torch.dataset import HardNegativeDataset
from negmine.torch.refresh import NegativeRefresher
from negmine.torch.sampler import ClusterBatchSampler, Plan


def _row_ids(dataset: Any, column: str) -> np.ndarray:
    """The ids column of a ``datasets.Dataset`` (or anything indexable by column name) as a
    ``(rows, k)`` int64 matrix, or ``(rows,)`` for a plain integer column."""
    names = getattr(dataset, "column_names", None)
    if names is not None and column not in names:
        raise InvalidArgumentError(
            f"the dataset has no {column!r} column (its columns: {', '.join(names)}): build it "
            f"with negmine.to_dataset(..., ids_column={column!r})"
        )
    values = dataset.with_format("numpy")[column] if hasattr(dataset, "with_format") else None
    if values is None:
        values = dataset[column]
    array = np.asarray(values)
    if array.dtype == object:  # lists of different lengths (labeled-list): the query is first
        array = np.array([int(np.asarray(v).reshape(-1)[0]) for v in values], dtype=np.int64)
    if array.ndim == 2 and array.shape[1] == 0:
        raise InvalidArgumentError(f"column {column!r} holds empty id lists")
    return int_array(array[:, 0] if array.ndim == 2 else array, column)


def query_indices(dataset: Any, column: str = "label") -> np.ndarray:
    """The query row of every dataset row, from the ids column that
    :func:`negmine.to_dataset` writes (``ids_column=column``)."""
    return _row_ids(dataset, column)


class TopicBatchSampler:
    """A picklable batch sampler factory for sentence-transformers' trainer; see
    :func:`topic_batch_sampler`."""

    def __init__(
        self,
        clusters: npt.ArrayLike,
        *,
        ids_column: str = "label",
        conflicts: IdsLike = None,
        plan: Plan = "topic",
        clusters_per_batch: int = 1,
        weighting: _batches.Weighting = "uniform",
        seed: int | None = None,
    ) -> None:
        self.clusters = int_array(clusters, "clusters")
        if not isinstance(ids_column, str) or not ids_column:
            raise InvalidArgumentError(f"ids_column must be a non-empty name, got {ids_column!r}")
        self.ids_column = ids_column
        self.conflicts = private_csr(conflicts, len(self.clusters), "conflicts")
        self.plan: Plan = plan
        self.clusters_per_batch = clusters_per_batch
        self.weighting: _batches.Weighting = weighting
        self.seed = seed
        # Checks plan, weighting and clusters_per_batch now rather than when training starts.
        ClusterBatchSampler(
            self.clusters,
            1,
            plan=plan,
            clusters_per_batch=clusters_per_batch,
            weighting=weighting,
            num_replicas=1,
            rank=0,
        )

    def __call__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> ClusterBatchSampler:
        if valid_label_columns is not None and self.ids_column not in valid_label_columns:
            # sentence-transformers' collator tokenizes every other column as text.
            raise InvalidArgumentError(
                f"the trainer would tokenize the ids column {self.ids_column!r} as text: it "
                f"passes only {', '.join(map(repr, valid_label_columns))} to the loss; write it "
                "with to_dataset(..., ids_column='label') and topic_batch_sampler(ids_column="
                "'label')"
            )
        if valid_label_columns is not None:
            # The collator hands the loss only the first label column it finds, in this order,
            # and tokenizes the rest: a second one (e.g. include_scores' "scores") would be
            # fed to the model as text, or take the ids column's place.
            columns = getattr(dataset, "column_names", None) or []
            present = [c for c in valid_label_columns if c in columns]
            if len(present) > 1:
                raise InvalidArgumentError(
                    f"the dataset has the label columns {', '.join(map(repr, present))}, but "
                    f"the trainer passes only the first to the loss and tokenizes the others as "
                    f"text; keep the ids column {self.ids_column!r} as the only one (build the "
                    "dataset in the 'triplet' or 'n-tuple' layout, without include_scores)"
                )
        query = _row_ids(dataset, self.ids_column)
        n_queries = len(self.clusters)
        if len(query) and (query.min() < 0 or query.max() >= n_queries):
            raise InvalidArgumentError(
                f"column {self.ids_column!r} refers to query {int(query.max())}, but clusters "
                f"has {n_queries} entries (one per query row of the mining result)"
            )
        # Keys 2q + 1: a query's own rows (a triplet row per negative) never share a batch;
        # the caller's per-query keys become 2k, so the two kinds never collide.
        counts = np.ones(len(query), dtype=np.int64)
        extra: np.ndarray = np.zeros(0, dtype=np.int64)
        if self.conflicts is not None:
            indptr, keys = self.conflicts
            own = np.diff(indptr)[query]
            counts += own
            starts = np.repeat(indptr[query], own)
            within = np.arange(int(own.sum()), dtype=np.int64) - np.repeat(
                np.cumsum(own) - own, own
            )
            extra = keys[starts + within] * 2
        row_indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        row_keys = np.empty(int(row_indptr[-1]), dtype=np.int64)
        row_keys[row_indptr[:-1]] = query * 2 + 1
        if len(extra):
            mask = np.ones(len(row_keys), dtype=bool)
            mask[row_indptr[:-1]] = False
            row_keys[mask] = extra
        return ClusterBatchSampler(
            self.clusters[query],
            batch_size,
            plan=self.plan,
            seed=seed if self.seed is None else self.seed,
            drop_last=drop_last,
            clusters_per_batch=self.clusters_per_batch,
            weighting=self.weighting,
            conflicts=(row_indptr, row_keys),
            wrapped=True,
        )


def topic_batch_sampler(
    clusters: npt.ArrayLike,
    *,
    ids_column: str = "label",
    conflicts: IdsLike = None,
    plan: Plan = "topic",
    clusters_per_batch: int = 1,
    weighting: _batches.Weighting = "uniform",
    seed: int | None = None,
) -> TopicBatchSampler:
    """A batch sampler for ``SentenceTransformerTrainingArguments(batch_sampler=...)``.

    The trainer calls it as ``f(dataset, batch_size, drop_last, valid_label_columns,
    generator, seed)`` and pickles it with its arguments at checkpoints, which this object
    allows (a lambda does not). It returns a :class:`~negmine.torch.ClusterBatchSampler`
    over the dataset's rows:

    - ``clusters``: a cluster id per *query* (row of the mining result), e.g.
      ``negmine.kmeans`` of the query embeddings; every dataset row takes its query's cluster,
      read from the ``ids_column`` written by ``to_dataset(..., ids_column="label")``.
    - Rows of one query (a ``"triplet"`` dataset repeats each anchor once per negative) never
      share a batch, so MNRL never sees a query's own rows as in-batch negatives.
    - ``conflicts``: optional conflict keys per *query* (e.g. :func:`negmine.batches.conflict_keys`
      of the result's positives, with duplicate groups): queries sharing a key never share a
      batch either.
    - ``plan``, ``clusters_per_batch``, ``weighting``: as in ``ClusterBatchSampler``;
      ``seed``: the plan's seed, by default the trainer's ``args.seed``.

    Distributed (``torchrun``): the trainer's accelerate shards the batches over ranks, so the
    sampler is built with ``wrapped=True`` and every row is seen once per epoch across ranks;
    the trainer calls ``set_epoch`` each epoch.
    """
    return TopicBatchSampler(
        clusters,
        ids_column=ids_column,
        conflicts=conflicts,
        plan=plan,
        clusters_per_batch=clusters_per_batch,
        weighting=weighting,
        seed=seed,
    )


class MaskedMultipleNegativesRankingLoss(MaskedLossBase):
    """sentence-transformers' ``MultipleNegativesRankingLoss`` (with its ``directions``,
    ``partition_mode`` and ``hardness_mode`` options, as in sentence-transformers 5.3+) with
    negmine's in-batch false-negative mask.

    For a batch of ``(anchor, positive, negative_1..n)`` rows it scores every anchor against
    every positive and negative of the batch, like MNRL, but leaves out of every softmax
    denominator the candidates that are no negatives of the anchor's query. A row's *labelled*
    documents are every positive of its query in ``positives`` (e.g. the ``MiningResult``, not
    only the row's own), and every member of such a positive's duplicate group (``groups``:
    corpus row -> group id, e.g. ``negmine.duplicate_groups``). Row ``i``'s own positive is
    the target. What each direction leaves out of row ``i``'s terms:

    - ``"query_to_doc"`` (anchor ``i`` against every positive and negative of the batch): a
      labelled document of row ``i``'s query, or a missing one (id ``-1``).
    - ``"doc_to_query"`` (row ``i``'s positive against every anchor of the batch): an anchor
      ``j != i`` with the same query id as row ``i``, or one whose query has row ``i``'s
      positive among its labelled documents (the transposed ``query_to_doc`` mask).
    - ``"query_to_query"`` (anchor ``i`` against the other anchors): anchor ``i`` itself (as
      in sentence-transformers), an anchor with the same query id, or one whose query shares a
      labelled document (a positive, or a duplicate group) with row ``i``'s query.
    - ``"doc_to_doc"`` (row ``i``'s positive against every positive and negative of the
      batch): row ``i``'s own documents (as in sentence-transformers), and the documents that
      ``query_to_doc`` leaves out for row ``i`` (labelled documents of its query: two positives
      of one query are not pushed apart).

    The rows' corpus ids come from the dataset's ids column, which the trainer hands to the
    loss as ``labels``: build the dataset with ``to_dataset(result, ..., ids_column="label")``.
    Without ``positives`` only the rows' own positives (and their groups) count as labelled.
    With no id repeated in the batch (all ids distinct, no ``positives``) the loss and its
    gradients are sentence-transformers' own.

    Args:
        model: the ``SentenceTransformer`` being trained.
        positives, groups: the labelled positives and duplicate groups (above).
        scale: the logit scale (1 / temperature), 20 as in sentence-transformers; positive.
        similarity_fct: ``(a [B, d], b [C, d]) -> [B, C]``; cosine by default.
        gather_across_devices: as MNRL's: under ``torch.distributed`` every process scores
            its anchors (and, for ``doc_to_query``, its positives) against the candidates
            (and anchors) of all processes' batches, gathered with their gradients, so the
            in-batch negatives grow with the world size; the ids columns are gathered too, so
            the masks cover the whole global batch. Every process must hold the same number of
            rows (as for MNRL: ``drop_last`` or equal shards).
        directions: the score terms, a tuple of ``"query_to_doc"`` (required: it holds the
            positive pair), ``"query_to_query"``, ``"doc_to_query"``, ``"doc_to_doc"``; the
            default ``("query_to_doc",)`` is the classic MNRL / InfoNCE,
            ``("query_to_doc", "doc_to_query")`` with ``"per_direction"`` the symmetric one,
            all four with ``"joint"`` GTE's improved contrastive loss.
        partition_mode: ``"joint"``: one softmax over the scores of every direction;
            ``"per_direction"``: one softmax per direction, their log-normalisers averaged
            (not with ``query_to_query`` / ``doc_to_doc``, which hold no positive pair).
        hardness_mode: ``None`` (default) or which ``query_to_doc`` logits get
            ``hardness_strength * stop_grad(similarity)`` added (unscaled) inside the
            softmax: ``"in_batch_negatives"`` the other rows' positives and negatives (Lan et
            al. 2025), ``"hard_negatives"`` the row's own negatives (EmbeddingGemma),
            ``"all_negatives"`` both. The target is never penalised; masked entries stay out.
        hardness_strength: the penalty's ``alpha``, non-negative (9 in Lan et al., 5 in
            EmbeddingGemma); ignored when ``hardness_mode`` is ``None``.

    Bad option values raise :class:`~negmine.errors.InvalidArgumentError` (or
    :class:`~negmine.errors.InvalidTypeError`) naming the option.
    """

    def __init__(
        self,
        model: Any,
        *,
        positives: Positives = None,
        groups: npt.ArrayLike | None = None,
        scale: float = 20.0,
        similarity_fct: Any = None,
        gather_across_devices: bool = False,
        directions: tuple[Direction, ...] = ("query_to_doc",),
        partition_mode: PartitionMode = "joint",
        hardness_mode: HardnessMode | None = None,
        hardness_strength: float = 0.0,
    ) -> None:
        super().__init__(model, positives, groups, gather_across_devices)
        from sentence_transformers import util

        self.scale = positive_number(scale, "scale")
        self.similarity_fct = util.cos_sim if similarity_fct is None else similarity_fct
        self.directions = check_directions(directions)
        self.partition_mode = check_partition_mode(partition_mode, self.directions)
        self.hardness_mode, self.hardness_strength = check_hardness(
            hardness_mode, hardness_strength
        )

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        return masked_mnrl(self, embeddings, labels, len(embeddings[0]) if embeddings else 0)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "similarity_fct": similarity_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
        }


class MaskedGISTEmbedLoss(MaskedLossBase):
    """sentence-transformers' ``GISTEmbedLoss`` with negmine's in-batch false-negative mask:
    a guide model's scores and the ids column both take candidates out of the softmax.

    For a batch of ``(anchor, positive, negative_1..n)`` rows the logits of anchor ``i``
    (cosine similarities / ``temperature``) are, as in sentence-transformers: anchor ``i``
    against every positive of the batch (its own, the target, first), against every other
    anchor (``contrast_anchors``), positive ``i`` against every other positive
    (``contrast_positives``), and anchor ``i`` against every ``negative_k`` column (any ``n``,
    as ``CachedGISTEmbedLoss``; ``GISTEmbedLoss`` takes at most one). A candidate leaves the
    softmax when

    - the guide scores it (against anchor ``i``, or positive ``i`` in the positive-positive
      block) above the guide's score of anchor ``i`` with its positive, less ``margin``
      (``margin_strategy="absolute"``) or less ``|score| * margin`` (``"relative"``); never
      the target; or
    - the ids mark it a false negative, as in :class:`MaskedMultipleNegativesRankingLoss`:
      anchor-positive and anchor-negative blocks as its ``query_to_doc``, the anchor-anchor
      block as its ``query_to_query`` (the same query, or a shared labelled positive), the
      positive-positive block as its ``doc_to_doc`` (a labelled document of row ``i``'s query).

    With all ids distinct (and no ``positives``) the loss and its gradients are
    sentence-transformers' ``GISTEmbedLoss`` (``CachedGISTEmbedLoss`` for several negatives).

    Args:
        model: the ``SentenceTransformer`` being trained.
        guide: the guide ``SentenceTransformer`` (run without gradients). When its tokenizer's
            vocabulary differs from the model's (or its ``max_seq_length`` is shorter), the
            texts are decoded from the model's tokens and tokenized again for it.
        positives, groups: as in :class:`MaskedMultipleNegativesRankingLoss`.
        temperature: divides the cosine similarities; positive (0.01 as sentence-transformers).
        margin_strategy: ``"absolute"`` or ``"relative"`` (above).
        margin: the margin (0: only what the guide scores above the positive leaves).
        contrast_anchors, contrast_positives: include the anchor-anchor and the
            positive-positive blocks (both by default, as the GISTEmbed paper).
        gather_across_devices: as GISTEmbedLoss's: the candidates (and their guide embeddings
            and ids) of all processes, the anchor-anchor block stays within the process.
    """

    def __init__(
        self,
        model: Any,
        guide: Any,
        *,
        positives: Positives = None,
        groups: npt.ArrayLike | None = None,
        temperature: float = 0.01,
        margin_strategy: MarginStrategy = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(model, positives, groups, gather_across_devices)
        self.guide = guide
        self.temperature = positive_number(temperature, "temperature")
        if margin_strategy not in ("absolute", "relative"):
            raise InvalidArgumentError(
                f"margin_strategy must be 'absolute' or 'relative', got {margin_strategy!r}"
            )
        self.margin_strategy: MarginStrategy = margin_strategy
        self.margin = checked_number(margin, "margin")
        for name, flag in (
            ("contrast_anchors", contrast_anchors),
            ("contrast_positives", contrast_positives),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise InvalidTypeError(f"{name} must be True or False, got {flag!r}")
        self.contrast_anchors = bool(contrast_anchors)
        self.contrast_positives = bool(contrast_positives)
        self.must_retokenize = needs_retokenizing(model, guide)

    def guide_embeddings(self, sentence_features: list[dict[str, Tensor]]) -> list[Tensor]:
        """The guide's embeddings of the batch's columns (no gradients)."""
        from sentence_transformers.base.losses.merged_forward import embed_columns

        with torch.no_grad():
            features = [guide_features(self, f) for f in sentence_features]
            return embed_columns(self.guide, features)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        sentence_features = list(sentence_features)
        # The guide gets copies: models write their outputs into the features they are given.
        guide = self.guide_embeddings([dict(f) for f in sentence_features])
        embeddings = embed_columns(self.model, sentence_features)
        return self.compute_loss_from_embeddings(embeddings, guide, labels)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], guide_embeddings: list[Tensor], labels: Tensor
    ) -> Tensor:
        chunk = len(embeddings[0]) if embeddings else 0
        return masked_gist(self, embeddings, guide_embeddings, labels, chunk)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "guide": self.guide,
            "temperature": self.temperature,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "gather_across_devices": self.gather_across_devices,
        }


def from_dataset(dataset: Any, model: Any, *, ids_column: str = "label", **kwargs: Any) -> Mined:
    """``negmine.mine_hard_negatives(dataset, model, ids_column=ids_column, **kwargs)`` (any
    of its arguments), and what it mined from: a :class:`~negmine.hard_negatives.Mined` with
    the ``dataset`` it returns, the ``result`` (every query row's negatives and positives),
    the ``query_texts`` and ``corpus_texts`` that the ids refer to, their normalised
    embeddings, and the ``options`` a refresh mines with. Then::

        mined = negmine.st.from_dataset(pairs, model, corpus=corpus, output_format="n-tuple")
        clusters = negmine.kmeans(mined.query_embeddings, 20, seed=0)[1]
        args = SentenceTransformerTrainingArguments(
            ..., batch_sampler=topic_batch_sampler(clusters))
        loss = MaskedMultipleNegativesRankingLoss(model, positives=mined.result)
        SentenceTransformerTrainer(model, args, train_dataset=mined.dataset, loss=loss)

    ``ids_column`` defaults to ``"label"``, the column sentence-transformers' collator hands
    to the loss (so ``output_scores`` and the labeled layouts, which have their own, are
    refused with it: name it otherwise for other trainers).
    """
    return mine_dataset(dataset, model, ids_column=ids_column, **kwargs)


class _LiveRows:
    """The ``datasets`` transform of :attr:`RefreshCallback.train_dataset`: a batch of
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


class _TextEncoder:
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


def _refresh_callback_class() -> type:
    import math

    from transformers import TrainerCallback

    class RefreshCallback(TrainerCallback):
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
            self._rows = _LiveRows(
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
                encode_queries=_TextEncoder(
                    model, mined.query_texts, "query", mined.encode, self._batch_size
                ),
                encode_corpus=_TextEncoder(
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

    cls = RefreshCallback
    cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return cls


def _cached_loss_class() -> type:
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
            self.mini_batch_size = mini_batch_size
            self.mini_batch_num_tokens = mini_batch_num_tokens
            self.show_progress_bar = show_progress_bar

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
            return {
                **super().get_config_dict(),
                "mini_batch_size": self.mini_batch_size,
                "mini_batch_num_tokens": self.mini_batch_num_tokens,
            }

    cls = CachedMaskedMultipleNegativesRankingLoss
    cls.__module__, cls.__qualname__ = __name__, cls.__name__  # found by pickle
    return cls


def _cached_gist_class() -> type:
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
            self.mini_batch_size = mini_batch_size
            self.mini_batch_num_tokens = mini_batch_num_tokens
            self.show_progress_bar = show_progress_bar

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
            return {
                **super().get_config_dict(),
                "mini_batch_size": self.mini_batch_size,
                "mini_batch_num_tokens": self.mini_batch_num_tokens,
            }

    cls = CachedMaskedGISTEmbedLoss
    cls.__module__, cls.__qualname__ = __name__, cls.__name__  # found by pickle
    return cls


def __getattr__(name: str) -> Any:
    # Built on first use: it derives from sentence-transformers' gradient-cache mixin, and the
    # rest of this module works without sentence-transformers.
    builders = {
        "CachedMaskedMultipleNegativesRankingLoss": _cached_loss_class,
        "CachedMaskedGISTEmbedLoss": _cached_gist_class,
        "RefreshCallback": _refresh_callback_class,
    }
    if name in builders:
        cls = builders[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# And CachedMaskedMultipleNegativesRankingLoss, CachedMaskedGISTEmbedLoss and RefreshCallback,
# built on first use.
__all__ = [
    "MaskedGISTEmbedLoss",
    "MaskedMultipleNegativesRankingLoss",
    "Mined",
    "TopicBatchSampler",
    "from_dataset",
    "query_indices",
    "topic_batch_sampler",
]
