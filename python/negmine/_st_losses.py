"""The masked contrastive losses of :mod:`negmine.st`: sentence-transformers'
``MultipleNegativesRankingLoss`` (with its ``directions``, ``partition_mode`` and hardness
options) and ``GISTEmbedLoss``, each with negmine's in-batch false-negative mask built from the
ids column.

The masks are computed on the host from the ids (numpy), once per batch, for the whole
(gathered) batch; the scores are computed on the embeddings' device, ``chunk`` anchor rows at a
time, so the cached variants never hold a ``[B, C]`` score matrix for the whole batch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from negmine._inputs import int_array
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.torch.collation import Positives, collate_ids, positive_csr

Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
PartitionMode = Literal["joint", "per_direction"]
HardnessMode = Literal["in_batch_negatives", "hard_negatives", "all_negatives"]
MarginStrategy = Literal["absolute", "relative"]

DIRECTIONS: tuple[Direction, ...] = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
HARDNESS_MODES: tuple[HardnessMode, ...] = ("in_batch_negatives", "hard_negatives", "all_negatives")


def checked_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name} must be finite, got {number}")
    return number


def positive_number(value: Any, name: str) -> float:
    number = checked_number(value, name)
    if number <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {number}")
    return number


def check_directions(directions: Any) -> tuple[Direction, ...]:
    if isinstance(directions, str) or not isinstance(directions, (tuple, list)):
        raise InvalidTypeError(
            f"directions must be a tuple of direction names, e.g. ('query_to_doc', "
            f"'doc_to_query'), got {directions!r}"
        )
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise InvalidArgumentError(
            f"directions holds {', '.join(map(repr, unknown))}: the directions are "
            f"{', '.join(map(repr, DIRECTIONS))}"
        )
    if not directions:
        raise InvalidArgumentError("directions must name at least 'query_to_doc'")
    if len(set(directions)) != len(directions):
        raise InvalidArgumentError(f"directions names a direction twice: {tuple(directions)!r}")
    if "query_to_doc" not in directions:
        raise InvalidArgumentError(
            "directions must include 'query_to_doc': it holds each anchor's positive, the target"
        )
    return tuple(directions)


def check_partition_mode(partition_mode: Any, directions: tuple[Direction, ...]) -> PartitionMode:
    if partition_mode not in ("joint", "per_direction"):
        raise InvalidArgumentError(
            f"partition_mode must be 'joint' or 'per_direction', got {partition_mode!r}"
        )
    same_kind = [d for d in directions if d in ("query_to_query", "doc_to_doc")]
    if partition_mode == "per_direction" and same_kind:
        # A softmax over same-kind scores alone holds no positive pair: its term is ill-defined.
        raise InvalidArgumentError(
            f"partition_mode='per_direction' cannot take the directions "
            f"{', '.join(map(repr, same_kind))}: their scores never include the positive pair; "
            "use partition_mode='joint'"
        )
    mode: PartitionMode = partition_mode
    return mode


def check_hardness(mode: Any, strength: Any) -> tuple[HardnessMode | None, float]:
    if mode is not None and mode not in HARDNESS_MODES:
        raise InvalidArgumentError(
            f"hardness_mode must be None or one of {', '.join(map(repr, HARDNESS_MODES))}, "
            f"got {mode!r}"
        )
    value = checked_number(strength, "hardness_strength")
    if value < 0:
        raise InvalidArgumentError(f"hardness_strength must be non-negative, got {value}")
    if mode is not None and value == 0:
        warnings.warn(
            f"hardness_mode={mode!r} with hardness_strength=0.0 changes nothing: give "
            "hardness_strength a positive value",
            UserWarning,
            stacklevel=3,
        )
    return mode, value


def similarity_name(fn: Any) -> str:
    try:
        from sentence_transformers.util import similarity_fct_name

        return str(similarity_fct_name(fn))
    except ImportError:  # older sentence-transformers
        return str(getattr(fn, "__name__", type(fn).__name__))


def _labelled_keys(
    ids: np.ndarray, groups: np.ndarray | None, csr: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(row, key) pairs, deduplicated: the labelled positives of each row's query (the row's
    own positive and, with ``csr``, all of its query's), as group ids with ``groups``."""
    rows: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    for i, (query, positive) in enumerate(ids[:, :2].tolist()):
        labelled = np.array([positive], dtype=np.int64)
        if csr is not None:
            labelled = np.concatenate([labelled, csr[1][csr[0][query] : csr[0][query + 1]]])
        labelled = labelled[labelled >= 0]
        if groups is not None:
            labelled = groups[labelled]
        rows.append(np.full(len(labelled), i, dtype=np.int64))
        keys.append(labelled)
    pairs = np.unique(np.stack([np.concatenate(keys), np.concatenate(rows)], axis=1), axis=0)
    return pairs[:, 1], pairs[:, 0]


def _sharing_rows(b: int, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``[b, b]``: True where two rows share a key. ``(row, key)`` pairs unique, sorted by key."""
    share = np.zeros((b, b), dtype=bool)
    if len(keys) == 0:
        return share
    _, start, counts = np.unique(keys, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(start)), counts)  # the key group of every pair
    fan = counts[group]  # every pair meets each pair of its group
    left = np.repeat(rows, fan)
    within = np.arange(int(fan.sum())) - np.repeat(np.cumsum(fan) - fan, fan)
    right = rows[np.repeat(start[group], fan) + within]
    share[left, right] = True
    return share


def _id_masks(
    loss: Any, labels: Tensor, n_negatives: int, wanted: Iterable[str]
) -> dict[str, Tensor]:
    """The false-negative masks (True: left out) of one (gathered) batch of ``W`` rows, by
    direction, in MNRL's candidate order (the batch's positives, then every row's first
    negative, ...); ``query_to_doc`` always, the others when ``wanted``:

    - ``query_to_doc`` ``[W, W(1+n)]``: candidate ``c`` is a labelled positive of row ``i``'s
      query, in a duplicate group of one, or missing; never row ``i``'s own positive.
    - ``doc_to_query`` ``[W, W]``: query ``j != i`` is row ``i``'s query (same id), or row
      ``i``'s positive is a labelled positive of query ``j`` (``query_to_doc[j, i]``).
    - ``query_to_query`` ``[W, W]``: query ``j`` is query ``i`` itself (``j == i``, as in
      sentence-transformers), the same query id, or shares a labelled positive (by group) with it.
    - ``doc_to_doc`` ``[W, W(1+n)]``: ``query_to_doc``'s entries, and row ``i``'s own documents
      (its positive and negatives, left out by sentence-transformers too).
    """
    wanted = set(wanted)
    q2d = loss.false_negative_mask(labels, n_negatives).cpu()
    ids = labels.detach().cpu().numpy()
    w = len(ids)
    q2d_np = q2d.numpy()
    query = ids[:, 0]
    same_query = query[:, None] == query[None, :]
    diagonal = np.arange(w)
    masks: dict[str, Tensor] = {"query_to_doc": q2d}
    if "doc_to_query" in wanted:
        d2q = q2d_np[:, :w].T | same_query
        d2q[diagonal, diagonal] = q2d_np[diagonal, diagonal]  # the target, unless missing
        masks["doc_to_query"] = torch.from_numpy(d2q)
    if "query_to_query" in wanted:
        q2q = same_query | _sharing_rows(w, *_labelled_keys(ids, loss._groups, loss._csr))
        q2q[diagonal, diagonal] = True
        masks["query_to_query"] = torch.from_numpy(q2q)
    if "doc_to_doc" in wanted:
        d2d = q2d_np.copy()
        for k in range(n_negatives + 1):
            d2d[diagonal, k * w + diagonal] = True
        masks["doc_to_doc"] = torch.from_numpy(d2d)
    return masks


def _gather(
    anchors: Tensor, columns: list[Tensor], labels: Tensor, with_anchors: bool
) -> tuple[Tensor, list[Tensor], Tensor, int]:
    """Every process's candidates (with gradients, which flow back to the process that embedded
    them), ids and, ``with_anchors``, anchors, in rank order; and this process's first row."""
    from sentence_transformers.util import all_gather, all_gather_with_grad, get_rank

    b = len(anchors)
    sizes = all_gather(torch.tensor([b], device=anchors.device))
    if bool((sizes != b).any()):
        raise InvalidArgumentError(
            "gather_across_devices needs the same batch size on every process, got "
            f"{sizes.tolist()} (drop the last, smaller batch: drop_last=True)"
        )
    columns = [all_gather_with_grad(c) for c in columns]
    queries = all_gather_with_grad(anchors) if with_anchors else anchors
    return queries, columns, all_gather(labels), get_rank() * b


def _check_batch(embeddings: Sequence[Tensor], labels: Any) -> None:
    if len(embeddings) < 2:
        raise InvalidArgumentError(
            f"expected an anchor and at least a positive column, got {len(embeddings)}"
        )
    if not isinstance(labels, Tensor):
        raise InvalidTypeError(
            "labels must be the ids column as a tensor: build the dataset with "
            "to_dataset(..., ids_column='label')"
        )


def _penalised(mode: HardnessMode, rows: Tensor, w: int, n_docs: int) -> Tensor:
    """``[len(rows), w * n_docs]``: the query -> document scores of global rows ``rows`` that
    ``mode`` penalises."""
    columns = torch.arange(w * n_docs, device=rows.device)
    own = (columns[None, :] % w) == rows[:, None]  # the row's own positive and negatives
    own_positive = columns[None, :] == rows[:, None]
    if mode == "in_batch_negatives":
        penalised = ~own
    elif mode == "hard_negatives":
        penalised = own & ~own_positive
    else:  # all_negatives
        penalised = ~own_positive
    return penalised


def masked_mnrl(
    loss: Any,
    embeddings: list[Tensor],
    labels: Tensor | None,
    chunk: int,
    with_backward: bool = False,
) -> Tensor:
    """The masked MNRL loss over anchor rows ``chunk`` at a time (backpropagated chunk by chunk
    with ``with_backward``, the GradCache way), the same value for any ``chunk``."""
    _check_batch(embeddings, labels)
    assert isinstance(labels, Tensor)
    directions: tuple[str, ...] = loss.directions
    anchors, columns = embeddings[0], list(embeddings[1:])
    b, offset = len(anchors), 0
    queries = anchors
    if loss.gather_across_devices:
        with_anchors = bool({"query_to_query", "doc_to_query"} & set(directions))
        queries, columns, labels, offset = _gather(anchors, columns, labels, with_anchors)
    w, n_docs = len(columns[0]), len(columns)
    masks = {
        k: m[offset : offset + b].to(anchors.device)
        for k, m in _id_masks(loss, labels, n_docs - 1, directions).items()
    }
    documents = torch.cat(columns, dim=0)
    similarity, scale = loss.similarity_fct, loss.scale
    hardness = loss.hardness_mode if loss.hardness_strength > 0 else None
    total: list[Tensor] = []
    step = max(1, chunk)
    for begin in range(0, b, step):
        end = min(b, begin + step)
        rows = torch.arange(offset + begin, offset + end, device=anchors.device)
        local_queries = anchors[begin:end]
        local_docs = columns[0][rows]
        raw = similarity(local_queries, documents)
        logits = {"query_to_doc": raw * scale}
        if hardness is not None:
            # hardness_strength * the raw score, unscaled and without gradient (stop-gradient).
            penalty = (loss.hardness_strength * raw.detach()).masked_fill(
                ~_penalised(hardness, rows, w, n_docs), 0.0
            )
            logits["query_to_doc"] = logits["query_to_doc"] + penalty
        if "query_to_query" in directions:
            logits["query_to_query"] = similarity(local_queries, queries) * scale
        if "doc_to_query" in directions:
            logits["doc_to_query"] = similarity(queries, local_docs).T * scale
        if "doc_to_doc" in directions:
            logits["doc_to_doc"] = similarity(documents, local_docs).T * scale
        logits = {k: v.masked_fill(masks[k][begin:end], float("-inf")) for k, v in logits.items()}
        target = logits["query_to_doc"].gather(1, rows[:, None]).squeeze(1)
        if loss.partition_mode == "joint":
            log_z = torch.logsumexp(torch.cat(list(logits.values()), dim=1), dim=1)
        else:
            log_z = torch.stack([torch.logsumexp(v, dim=1) for v in logits.values()]).mean(0)
        part: Tensor = (log_z - target).sum() / b
        if with_backward:
            part.backward()  # type: ignore[no-untyped-call]
            part = part.detach()
        total.append(part)
    return torch.stack(total).sum()


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarities ``[len(a), len(b)]`` (as GISTEmbedLoss: norms clamped at 1e-8)."""
    eps = 1e-8
    an = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    bn = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return torch.mm(an, bn.T)


def masked_gist(
    loss: Any,
    embeddings: list[Tensor],
    guide_embeddings: list[Tensor],
    labels: Tensor | None,
    chunk: int,
    with_backward: bool = False,
) -> Tensor:
    """The masked GISTEmbed loss over anchor rows ``chunk`` at a time (see
    :class:`negmine.st.MaskedGISTEmbedLoss`)."""
    _check_batch(embeddings, labels)
    assert isinstance(labels, Tensor)
    if len(guide_embeddings) != len(embeddings):
        raise InvalidArgumentError(
            f"the guide embedded {len(guide_embeddings)} columns, the model {len(embeddings)}"
        )
    anchors, columns = embeddings[0], list(embeddings[1:])
    guide_anchors, guide_columns = guide_embeddings[0], list(guide_embeddings[1:])
    b, offset = len(anchors), 0
    if loss.gather_across_devices:
        from sentence_transformers.util import all_gather_with_grad

        _, columns, labels, offset = _gather(anchors, columns, labels, False)
        guide_columns = [all_gather_with_grad(c) for c in guide_columns]
    w, n_docs = len(columns[0]), len(columns)
    wanted = ["query_to_query"] if loss.contrast_anchors else []
    id_masks = _id_masks(loss, labels, n_docs - 1, wanted)
    q2d = id_masks["query_to_doc"][offset : offset + b].to(anchors.device)
    q2q = id_masks["query_to_query"][offset : offset + b, offset : offset + b] if wanted else None
    margin, relative = loss.margin, loss.margin_strategy == "relative"
    total: list[Tensor] = []
    step = max(1, chunk)
    for begin in range(0, b, step):
        end = min(b, begin + step)
        local = torch.arange(begin, end, device=anchors.device)
        rows = local + offset
        guide_positive = _cosine(guide_anchors[begin:end], guide_columns[0][rows]).diagonal()
        # A candidate the guide scores above the anchor's positive (less the margin) leaves.
        threshold = (guide_positive - (guide_positive.abs() * margin if relative else margin))[
            :, None
        ]

        blocks: list[Tensor] = []
        for k in range(n_docs):
            scores = _cosine(anchors[begin:end], columns[k])
            drop = _cosine(guide_anchors[begin:end], guide_columns[k]) > threshold
            drop |= q2d[begin:end, k * w : (k + 1) * w]
            if k == 0:  # the target stays, unless the positive is missing
                drop[local - begin, rows] = q2d[local, rows]
            blocks.append(scores.masked_fill(drop, float("-inf")))
        if loss.contrast_anchors:
            assert q2q is not None
            scores = _cosine(anchors[begin:end], anchors)
            drop = _cosine(guide_anchors[begin:end], guide_anchors) > threshold
            drop |= q2q[begin:end].to(anchors.device)
            blocks.append(scores.masked_fill(drop, float("-inf")))
        if loss.contrast_positives:
            scores = _cosine(columns[0][rows], columns[0])
            drop = _cosine(guide_columns[0][rows], guide_columns[0]) > threshold
            # Same as doc_to_doc: the positive itself, and the row's query's labelled positives.
            drop |= q2d[begin:end, :w]
            drop[local - begin, rows] = True
            blocks.append(scores.masked_fill(drop, float("-inf")))
        logits = torch.cat(blocks, dim=1) / loss.temperature
        target = logits.gather(1, rows[:, None]).squeeze(1)
        part: Tensor = (torch.logsumexp(logits, dim=1) - target).sum() / b
        if with_backward:
            part.backward()  # type: ignore[no-untyped-call]
            part = part.detach()
        total.append(part)
    return torch.stack(total).sum()


class MaskedLossBase(nn.Module):
    """The id-mask state shared by the masked losses."""

    def __init__(
        self,
        model: Any,
        positives: Positives,
        groups: npt.ArrayLike | None,
        gather_across_devices: bool,
    ) -> None:
        super().__init__()
        self.model = model
        self.gather_across_devices = bool(gather_across_devices)
        self._csr = positive_csr(positives)
        self._groups = None if groups is None else int_array(groups, "groups")

    def false_negative_mask(self, labels: Tensor, n_negatives: int) -> Tensor:
        """The ``[B, B * (1 + n)]`` query -> document mask (True: left out) in MNRL's candidate
        order (the batch's positives, then the first negatives of every row, then the second
        ...), from the ids column ``labels`` ``[B, 2 + n]``."""
        ids = labels.detach().cpu().numpy()
        if ids.ndim != 2 or ids.shape[1] != 2 + n_negatives:
            raise InvalidArgumentError(
                f"labels must be the ids column [query, positive, {n_negatives} negatives] per "
                f"row (to_dataset(..., ids_column='label')), got shape {tuple(ids.shape)}"
            )
        items = [{"query": r[0], "positive": r[1], "negatives": r[2:]} for r in ids.tolist()]
        mask = collate_ids(items, self._groups, self._csr)["false_negative_mask"]
        b = len(items)
        # negmine orders the negatives row-major (row k's j-th at b + k * n + j); MNRL
        # concatenates the columns (row k's j-th at b + j * b + k).
        order = np.arange(b * (1 + n_negatives))
        order[b:] = (
            b + np.arange(b)[None, :] * n_negatives + np.arange(n_negatives)[:, None]
        ).ravel()
        return mask[:, torch.from_numpy(order)]


def check_mini_batch(mini_batch_size: Any, mini_batch_num_tokens: Any) -> None:
    if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int):
        raise InvalidTypeError(
            f"mini_batch_size must be a positive integer, got {mini_batch_size!r}"
        )
    if mini_batch_size < 1:
        raise InvalidArgumentError(
            f"mini_batch_size must be a positive integer, got {mini_batch_size!r}"
        )
    if mini_batch_num_tokens is not None and (
        isinstance(mini_batch_num_tokens, bool)
        or not isinstance(mini_batch_num_tokens, int)
        or mini_batch_num_tokens < 1
    ):
        raise InvalidArgumentError(
            f"mini_batch_num_tokens must be a positive integer or None, got "
            f"{mini_batch_num_tokens!r}"
        )


def check_splittable(model: Any, name: str) -> None:
    """The cached losses embed mini-batches: a StaticEmbedding model's inputs have no batch
    dimension to split."""
    try:
        from sentence_transformers.base.losses.gradcache import has_static_embedding_input
    except ImportError:  # older sentence-transformers
        return
    from sentence_transformers import SentenceTransformer

    if isinstance(model, SentenceTransformer) and has_static_embedding_input(model):
        raise InvalidArgumentError(
            f"{name} embeds mini-batches, which a StaticEmbedding model's inputs cannot be split "
            "into: use the uncached loss"
        )


def needs_retokenizing(model: Any, guide: Any) -> bool:
    """Whether the guide needs its own tokens: another vocabulary, or a shorter maximum length
    (the model's tokens would not fit it)."""
    if guide is model:
        return False
    vocabularies = []
    for name, m in (("model", model), ("guide", guide)):
        tokenizer = getattr(m, "tokenizer", None)
        if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
            raise InvalidArgumentError(
                f"the {name} has no tokenizer with a vocabulary, so the guide cannot be "
                "given the batch's texts"
            )
        vocabularies.append(tokenizer.get_vocab())
    shorter = (getattr(guide, "max_seq_length", None) or 0) < (
        getattr(model, "max_seq_length", None) or 0
    )
    return vocabularies[0] != vocabularies[1] or shorter


def guide_features(loss: Any, features: dict[str, Any]) -> dict[str, Any]:
    """One column's features for the guide: the model's own, or its texts decoded from the
    model's tokens and tokenized by the guide."""
    if not loss.must_retokenize:
        return features
    from sentence_transformers.util import batch_to_device

    input_ids = features["input_ids"]
    if "cu_seq_lens_q" in features:  # flattened batch: one row of every sequence's tokens
        flat = input_ids[0].tolist()
        bounds = features["cu_seq_lens_q"].tolist()
        input_ids = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    texts = loss.model.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
    guide = loss.guide
    tokenize = getattr(guide, "preprocess", None) or guide.tokenize
    return dict(batch_to_device(tokenize(texts), guide.device))


def slice_features(features: dict[str, Any], begin: int, end: int) -> dict[str, Any]:
    """Rows ``begin:end`` of one column's features, as the gradient cache slices them."""
    from sentence_transformers.base.losses.gradcache import _create_minibatch

    return dict(_create_minibatch(features, begin, end))
