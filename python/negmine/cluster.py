"""Seeded k-means (spherical or L2) on the exact top-k engine."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import EmbeddingsLike, as_matrix, read_only
from negmine.errors import InvalidArgumentError

MAX_ITERATIONS = 10_000
"""Lloyd iterations run all the way (there is no early stop, so that results do not depend on
a tolerance); past a few dozen they change nothing, and a huge count would only hang."""


def kmeans(
    embeddings: EmbeddingsLike,
    n_clusters: int,
    *,
    metric: Literal["cosine", "l2"] = "cosine",
    iterations: int = 10,
    seed: int = 0,
    sample: int | None = None,
    init: Literal["k-means++", "random"] = "k-means++",
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Clusters the rows of ``embeddings`` (array, ``Embeddings`` or ``.npy`` path).

    ``metric="cosine"`` is spherical k-means (unit centroids, nearest by inner product);
    ``"l2"`` is Lloyd's algorithm on squared Euclidean distance (computed in float32, so every
    row's squared norm must be below float32's largest value / 16, about ``2.1e37``; a larger
    one raises ``InvalidArgumentError`` naming the row). ``init="k-means++"`` (default)
    starts from seeded D^2 sampling on a bounded subset of the rows; ``"random"`` from
    ``n_clusters`` distinct rows picked at random (faiss' default, cheaper); with ``sample``, the
    centroids are trained on that many seeded random rows and then every row is assigned. An
    empty cluster takes the row worst served by its centroid. All ``iterations`` (at most
    10,000) run: there is no early stop. Results are identical for any thread count.

    Returns:
        ``(centroids, assignments, inertia)``: float32 ``[n_clusters, d]``, int64 ``[N]`` and
        the sum over all rows of their distance to their centroid (``1 - cos`` or
        ``||x - c||^2``).
    """
    options = _core.KMeansOptions(
        numbers.count(n_clusters, "n_clusters"),
        metric=metric,
        iterations=numbers.non_negative(iterations, "iterations", maximum=MAX_ITERATIONS),
        seed=numbers.seed(seed),
        sample=numbers.optional_count(sample, "sample"),
        init=init,
    )
    threads = numbers.optional_count(threads, "threads")
    data = as_matrix(embeddings, "embeddings")
    with read_only(data):
        centroids, assignments, inertia, _ = _core.kmeans(data, options, threads=threads)
    return centroids, assignments.astype(np.int64), float(inertia)


def coarsen_clusters(
    centroids: npt.ArrayLike,
    assignments: npt.ArrayLike,
    n_clusters: int,
    *,
    metric: Literal["cosine", "l2"] = "cosine",
    iterations: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Merges neighbouring clusters into ``n_clusters`` larger ones: k-means of the
    ``centroids`` themselves, and row ``i`` goes to the group of its cluster
    ``assignments[i]``. Returns int64 ``[N]``.

    This is how NGAME grows its cluster size over training without re-clustering every row:
    cluster once into many small clusters, then pass coarser and coarser groups to
    :func:`negmine.batches.ngame` (or ``ClusterBatchSampler.set_clusters``) as epochs go by.
    Merged clusters are neighbours, so a larger cluster is still one region of the space; group
    sizes follow the data (the merge does not weigh centroids by their cluster's size).
    """
    centres = as_matrix(centroids, "centroids")
    labels = np.asarray(assignments)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise InvalidArgumentError(
            f"assignments must be a 1-D integer array, got shape {labels.shape} dtype "
            f"{labels.dtype}"
        )
    n_fine = int(centres.shape[0])
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_fine):
        raise InvalidArgumentError(
            f"assignments must be in [0, {n_fine}) (rows of centroids), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    _, groups, _ = kmeans(centres, n_clusters, metric=metric, iterations=iterations, seed=seed)
    return groups[labels.astype(np.int64, copy=False)]
