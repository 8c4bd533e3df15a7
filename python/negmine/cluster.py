"""Seeded k-means (spherical or L2) on the exact top-k engine."""

from __future__ import annotations

from typing import Literal

import numpy as np

from negmine import _core
from negmine._inputs import EmbeddingsLike, as_matrix, positive_int, read_only
from negmine.errors import InvalidArgumentError


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
    ``"l2"`` is Lloyd's algorithm on squared Euclidean distance. ``init="k-means++"`` (default)
    starts from seeded D^2 sampling on a bounded subset of the rows; ``"random"`` from
    ``n_clusters`` distinct rows picked at random (faiss' default, cheaper); with ``sample``, the
    centroids are trained on that many seeded random rows and then every row is assigned. An
    empty cluster takes the row worst served by its centroid. Results are identical for any
    thread count.

    Returns:
        ``(centroids, assignments, inertia)``: float32 ``[n_clusters, d]``, int64 ``[N]`` and
        the sum over all rows of their distance to their centroid (``1 - cos`` or
        ``||x - c||^2``).
    """
    n_clusters = positive_int(n_clusters, "n_clusters")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise InvalidArgumentError(f"iterations must be a non-negative integer, got {iterations!r}")
    if sample is not None:
        sample = positive_int(sample, "sample")
    data = as_matrix(embeddings, "embeddings")
    with read_only(data):
        centroids, assignments, inertia, _ = _core.kmeans(
            data,
            n_clusters,
            metric=metric,
            iterations=iterations,
            seed=seed,
            sample=sample,
            init=init,
            threads=threads,
        )
    return centroids, assignments.astype(np.int64), float(inertia)
