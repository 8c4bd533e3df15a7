"""What mining did: :class:`MiningReport` (filter counts, score histograms, starved queries),
built from the core's outputs by :func:`build_report`, and drawn by :func:`plot_histograms`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from negmine import _core
from negmine._atomic import atomic_write

FILTERS: tuple[str, ...] = tuple(_core.filter_names())
"""Filter names, in the order the core applies them (codes of ``removed["filter"]``)."""

_HISTOGRAM_BINS = 50


@dataclass
class MiningReport:
    """What mining did: how many candidates each filter removed, score distributions, and the
    queries left with fewer negatives than asked for."""

    n_queries: int
    num_negatives: int
    options: dict[str, Any]
    positives: int
    """Labelled (and linked) positives, all excluded by id."""
    excluded_duplicates: int
    """Corpus rows excluded because they duplicate a positive (same group)."""
    linked_queries: int
    """Queries that share their positives with a near-identical query."""
    removed: dict[str, int]
    """Per filter, candidates it removed."""
    negatives: int
    starved: list[int]
    """Queries with fewer than ``num_negatives`` negatives (the corpus ran out)."""
    histogram_edges: list[float]
    histograms: dict[str, list[int]]
    """Score counts per bin for ``positive``, ``negative`` and each filter's removals."""
    backend: str = "exact"
    """Where candidates came from: ``"exact"`` search or an ``"hnsw"`` graph."""
    recall: float | None = None
    """hnsw: recall@``recall_depth`` of the graph search (at ``ef``) against exact search,
    measured on ``recall_sample`` sampled queries."""
    ef: int | None = None
    """hnsw: the search ``ef`` chosen for ``target_recall`` (scaled up with deeper fetches)."""
    target_recall: float | None = None
    recall_depth: int | None = None
    recall_sample: int | None = None
    refetched: int = 0
    """hnsw: queries whose candidates were fetched more than once: filters emptied their
    window and they were fetched again, deeper, or the graph came back short and the exact
    search took them over."""
    exact_fallback: int = 0
    """hnsw: queries finished by exact search (they needed deeper than a graph search is
    worth, or the graph came back short)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiningReport:
        return cls(**data)

    def __str__(self) -> str:
        total = self.n_queries * self.num_negatives
        lines = [
            f"mined {self.negatives:,} of {total:,} negatives for {self.n_queries:,} queries",
            f"  positives excluded by id:        {self.positives:,}",
            f"  duplicates of positives excluded: {self.excluded_duplicates:,}",
        ]
        if self.backend != "exact":
            recall = "n/a" if self.recall is None else f"{self.recall:.4f}"
            line = (
                f"  backend {self.backend}: ef {self.ef}, recall@{self.recall_depth} {recall} "
                f"on {self.recall_sample} sampled queries (target {self.target_recall})"
            )
            if (
                self.recall is not None
                and self.target_recall is not None
                and self.recall < self.target_recall
            ):
                line += ": TARGET NOT REACHED"
            lines.append(line)
            if self.refetched or self.exact_fallback:
                lines.append(
                    f"    re-fetched deeper: {self.refetched:,} queries; "
                    f"finished by exact search: {self.exact_fallback:,}"
                )
        if self.linked_queries:
            lines.append(f"  queries sharing positives (linked): {self.linked_queries:,}")
        lines.append("  removed by filter:")
        for name in FILTERS:
            if self.removed.get(name):
                lines.append(f"    {name:<28} {self.removed[name]:>10,}")
        if not any(self.removed.values()):
            lines.append("    (nothing)")
        if self.starved:
            shown = ", ".join(map(str, self.starved[:10]))
            more = " ..." if len(self.starved) > 10 else ""
            lines.append(
                f"  {len(self.starved):,} queries have fewer than {self.num_negatives} "
                f"negatives: {shown}{more}"
            )
        for name, label in (("positive", "positives"), ("negative", "negatives")):
            counts = np.asarray(self.histograms.get(name, []))
            if counts.sum():
                edges = np.asarray(self.histogram_edges)
                centers = (edges[:-1] + edges[1:]) / 2
                mean = float((centers * counts).sum() / counts.sum())
                lines.append(f"  mean score of {label}: {mean:.4f}")
        return "\n".join(lines)


def build_report(
    *,
    n_queries: int,
    num_negatives: int,
    options: dict[str, Any],
    positives: int,
    excluded_duplicates: int,
    linked: int,
    found: np.ndarray,
    negative_scores: np.ndarray,
    positive_scores: np.ndarray,
    removed: dict[str, np.ndarray],
    removed_counts: np.ndarray,
) -> MiningReport:
    """The report of a run: ``options`` as recorded (``MiningOptions.to_dict``), the counts,
    and histograms of every score on one set of bins."""
    kept = negative_scores[np.isfinite(negative_scores)]
    every = np.concatenate([kept, positive_scores, removed["score"]]).astype(np.float64)
    every = every[np.isfinite(every)]
    lo, hi = (float(every.min()), float(every.max())) if len(every) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, _HISTOGRAM_BINS + 1)

    def hist(values: np.ndarray) -> list[int]:
        values = values[np.isfinite(values)]
        return [int(x) for x in np.histogram(values, bins=edges)[0]]

    codes = removed["filter"]
    counts = removed_counts
    histograms = {"positive": hist(positive_scores), "negative": hist(kept)}
    for code, name in enumerate(FILTERS):
        if (codes == code).any():
            histograms[name] = hist(removed["score"][codes == code])
    return MiningReport(
        n_queries=n_queries,
        num_negatives=num_negatives,
        options=options,
        positives=positives,
        excluded_duplicates=excluded_duplicates,
        linked_queries=linked,
        removed={name: int(counts[i]) for i, name in enumerate(FILTERS)},
        negatives=int(found.sum()),
        starved=[int(x) for x in np.flatnonzero(found < num_negatives)],
        histogram_edges=[float(x) for x in edges],
        histograms=histograms,
    )


def plot_histograms(report: MiningReport, path: str | os.PathLike[str]) -> None:
    """Writes a PNG histogram of ``report``'s positive, kept and removed scores (needs
    matplotlib), atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plot() needs matplotlib: pip install 'negmine[plot]'") from e
    edges = np.asarray(report.histogram_edges)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, counts in report.histograms.items():
        if sum(counts):
            ax.stairs(counts, edges, label=name, fill=name in ("positive", "negative"), alpha=0.6)
    ax.set_xlabel("score")
    ax.set_ylabel("candidates")
    ax.set_title(f"negmine: {report.negatives:,} negatives for {report.n_queries:,} queries")
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
