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
from negmine._inputs import IdsLike, column_name, gather_lists, int_array, private_csr
from negmine._st_losses import (
    Direction,
    HardnessMode,
    MarginStrategy,
    MaskedLossBase,
    PartitionMode,
    check_directions,
    check_hardness,
    check_partition_mode,
    checked_number,
    guide_features,
    masked_gist,
    masked_mnrl,
    needs_retokenizing,
    positive_number,
    similarity_name,
)
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.hard_negatives import Mined, mine_dataset
from negmine.torch.collation import Positives
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
        self.ids_column = column_name(ids_column, "ids_column")
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
            own, keys = gather_lists(*self.conflicts, query)
            counts += own
            extra = keys * 2
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


def __getattr__(name: str) -> Any:
    # Built on first use: they derive from sentence-transformers' gradient-cache mixin or
    # transformers' TrainerCallback, and the rest of this module works without them.
    if name == "CachedMaskedMultipleNegativesRankingLoss":
        from negmine._st_cached import cached_mnrl_class as build
    elif name == "CachedMaskedGISTEmbedLoss":
        from negmine._st_cached import cached_gist_class as build
    elif name == "RefreshCallback":
        from negmine._st_refresh import refresh_callback_class as build
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = build()
    cls.__module__, cls.__qualname__ = __name__, name  # found by pickle as negmine.st.<name>
    globals()[name] = cls
    return cls


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
