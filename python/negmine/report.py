"""What mining did: :class:`MiningReport` (filter counts, score histograms, starved queries,
how deep the negatives ranked: :class:`DepthReport`), built from the core's outputs by
:func:`build_report`, and drawn by :func:`plot_histograms`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from negmine import _core
from negmine._atomic import atomic_write
from negmine._numbers import counted

FILTERS: tuple[str, ...] = tuple(_core.filter_names())
"""Filter names, in the order the core applies them (codes of ``removed["filter"]``)."""

_HISTOGRAM_BINS = 50

REPORT_FORMAT = 2
"""Version of the report's saved layout (:meth:`MiningReport.to_dict`, ``report.json``): 2
nests the hnsw fields in ``ann``; 1 (no ``format`` key) had them flat."""
_FORMAT_1_ANN_KEYS = ("recall", "ef", "target_recall", "recall_depth", "recall_sample")


@dataclass(frozen=True)
class AnnReport:
    """What an approximate backend (``"hnsw"``) did: ``MiningReport.ann``."""

    target_recall: float
    recall: float | None = None
    """recall@``recall_depth`` of the graph search (at ``ef``) against exact search, measured
    on ``recall_sample`` sampled queries; ``None`` when there was nothing to search (no
    queries, or an empty corpus: then no index either)."""
    ef: int | None = None
    """The search ``ef`` chosen for ``target_recall`` (scaled up with deeper fetches)."""
    recall_depth: int | None = None
    recall_sample: int | None = None
    built: bool | None = None
    """Whether this run built the index (``False``: loaded from ``path``, or none was
    needed); ``None`` in a report saved before :data:`REPORT_FORMAT` 2, which did not say."""
    path: str | None = None
    """The index file used (loaded or saved); ``None`` when the index lived in memory only."""


@dataclass(frozen=True)
class TeacherReport:
    """What the teacher (``mine(rescore=...)``) did: ``MiningReport.teacher``."""

    pairs: int
    """Candidate pairs it scored (each once, however deep the query was fetched)."""
    positives: int
    """Positive pairs it scored (the references of the margins)."""
    percentile: float | None = None
    """``rescore_percentile``, if given."""
    cut: float | None = None
    """The teacher score above which candidates were dropped as ``max_score``: that
    percentile of its positive scores."""


@dataclass
class TorchReport:
    """What ``backend="torch"`` did (:mod:`negmine.torch.candidates`): ``MiningReport.torch``."""

    device: str
    dtype: str
    tile_rows: int
    slack: int
    scans: int = 0
    """Passes over the corpus (each streams every tile once, for a group of queries)."""
    extra_scans: int = 0
    """Of these, passes for queries whose bound did not yet prove their candidates (``g``
    doubled)."""
    rescanned_queries: int = 0
    """Query fetches that needed such an extra pass (a query counts once per fetch)."""
    fetched_queries: int = 0
    """Query fetches served (a query the filters sent deeper counts once per fetch)."""
    candidates: int = 0
    """Candidate ids handed to the core for exact rescoring, over all fetches."""
    max_candidates: int = 0
    """The most candidates one query fetch got."""

    @property
    def candidates_per_query(self) -> float:
        """Mean candidates per query fetch."""
        return self.candidates / self.fetched_queries if self.fetched_queries else 0.0


@dataclass(frozen=True)
class DepthReport:
    """How deep in their queries' rankings the negatives were found: ``MiningReport.depth``,
    or :func:`depth_report` at another ``window`` or ``floor``.

    A negative's rank is its position in its query's ranking before any filter (every corpus
    row less the query's positives and other exclusions, best first; 0 is the best
    candidate), as the core records it (``MiningResult.negative_ranks``). sentence-transformers
    takes its negatives from the first ``range_max`` of that ranking; negmine's ``range_max``
    counts the *filtered* ranking and its ``"top"`` fills a row as deep as the filters need,
    so a negative can rank far deeper than the window: such negatives are usually easy."""

    window: int
    """The rank the counts are taken at."""
    window_from: str
    """Where ``window`` came from: ``"range_max"``, ``"sampling window"`` (``range_min + 10 *
    num_negatives``), ``"sentence-transformers' default range_max"`` (what it derives for
    these options, less the positives it counts: ``"top"`` without ``range_max``) or
    ``"given"``."""
    negatives: int
    """Negatives counted (those mined)."""
    beyond_window: int
    """Negatives ranked at ``window`` or deeper."""
    queries_beyond_window: int
    """Queries with at least one such negative."""
    short_queries: int
    """Queries with fewer than ``num_negatives`` negatives ranked above ``window``: filled from
    deeper ranks, or left short (the corpus or the window ran out)."""
    short_rows: int
    """Of these, queries left with fewer than ``num_negatives`` negatives at all."""
    median_rank: float | None = None
    p90_rank: float | None = None
    max_rank: int | None = None
    min_score: float | None = None
    """The lowest score of a negative."""
    p10_score: float | None = None
    """The 10th percentile of the negatives' scores."""
    floor: float | None = None
    """A score floor, if one was given (``depth_report(floor=...)``, ``negmine report
    --floor``); the options' ``min_score`` is a filter (no negative scores under it)."""
    under_floor: int | None = None
    """Negatives scoring under ``floor`` (``None`` without one)."""

    def lines(self, n_queries: int, num_negatives: int) -> list[str]:
        """The report's lines about depth (indented like :class:`MiningReport`'s)."""
        if not self.negatives:
            return []
        lines = [
            f"  rank of the negatives before filters (0 = best candidate): median "
            f"{self.median_rank:g}, p90 {self.p90_rank:g}, max {self.max_rank:,}",
            f"    {counted(self.beyond_window, 'negative')} of "
            f"{counted(self.queries_beyond_window, 'query', 'queries')} ranked at "
            f"{self.window:,} or deeper ({self.window_from})",
        ]
        score = (
            f"    lowest negative score {self.min_score:.4f}, 10th percentile {self.p10_score:.4f}"
        )
        if self.floor is not None:
            under = counted(self.under_floor or 0, "negative")
            score += f"; {under} under the floor {self.floor:g}"
        lines.append(score)
        if self.short_queries:
            deeper = self.short_queries - self.short_rows
            lines.append(
                f"  Could not find enough negatives within rank {self.window:,} for "
                f"{self.short_queries:,} of {n_queries:,} queries "
                f"({self.short_queries / n_queries:.2%}): {deeper:,} filled from deeper ranks, "
                f"{self.short_rows:,} left with fewer than {num_negatives}. Consider "
                "adjusting range_max (or the filters) if you'd like harder negatives."
            )
        return lines


def default_window(options: dict[str, Any]) -> tuple[int, str]:
    """The rank :class:`DepthReport` counts at for mining ``options`` (``MiningOptions``'
    ``to_dict()``), and where it comes from: ``range_max`` if set; else the samplers' window;
    else (``"top"``) sentence-transformers' derived ``range_max`` for these options (``range_min
    + num_negatives``, times 10 with ``max_score`` or a margin), less its positives."""
    range_min, n = int(options.get("range_min") or 0), int(options.get("num_negatives") or 1)
    if options.get("range_max") is not None:
        return int(options["range_max"]), "range_max"
    if options.get("sampling_strategy", "top") != "top":
        return range_min + 10 * n, "sampling window"
    filtered = any(
        options.get(name) is not None
        for name in ("max_score", "absolute_margin", "relative_margin")
    )
    return range_min + n * (10 if filtered else 1), "sentence-transformers' default range_max"


def depth_report(
    negative_ranks: np.ndarray,
    negative_scores: np.ndarray,
    num_negatives: int,
    window: int,
    *,
    window_from: str = "given",
    floor: float | None = None,
) -> DepthReport:
    """The :class:`DepthReport` of negatives with these ranks and scores (``n x
    num_negatives``, mined where the score is finite) at ``window`` (and ``floor``)."""
    ranks = np.asarray(negative_ranks)
    scores = np.asarray(negative_scores)
    if ranks.shape != scores.shape or ranks.ndim != 2 or ranks.shape[1] != num_negatives:
        raise ValueError(
            f"ranks {ranks.shape} and scores {scores.shape} must both be queries x "
            f"num_negatives ({num_negatives})"
        )
    mined = np.isfinite(scores)
    within = (mined & (ranks < window)).sum(axis=1)
    beyond = mined & (ranks >= window)
    kept_ranks, kept_scores = ranks[mined].astype(np.int64), scores[mined].astype(np.float64)
    stats: dict[str, Any] = {}
    if len(kept_ranks):
        stats = {
            "median_rank": float(np.median(kept_ranks)),
            "p90_rank": float(np.percentile(kept_ranks, 90)),
            "max_rank": int(kept_ranks.max()),
            "min_score": float(kept_scores.min()),
            "p10_score": float(np.percentile(kept_scores, 10)),
        }
    return DepthReport(
        window=int(window),
        window_from=window_from,
        negatives=int(mined.sum()),
        beyond_window=int(beyond.sum()),
        queries_beyond_window=int(beyond.any(axis=1).sum()),
        short_queries=int((within < num_negatives).sum()),
        short_rows=int((mined.sum(axis=1) < num_negatives).sum()),
        floor=floor,
        under_floor=None if floor is None else int((kept_scores < floor).sum()),
        **stats,
    )


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
    ann: AnnReport | None = None
    """What the approximate backend did (its recall, ``ef``, index); ``None`` for
    ``"exact"``."""
    refetched: int = 0
    """Queries whose candidates were fetched more than once: filters emptied their window and
    they were fetched again, deeper, or the candidate source came back short and the exact
    search took them over. Counted by the core for any candidate source; reported for the
    backends other than ``"exact"`` (0 there)."""
    exact_fallback: int = 0
    """Queries finished by exact search instead of the backend's candidate source (they
    needed deeper than a graph search is worth, or the source came back short); 0 for
    ``"exact"``."""
    teacher: TeacherReport | None = None
    """What the teacher scored, when the score filters read a teacher's scores
    (``mine(rescore=...)``); ``None`` otherwise."""
    torch: TorchReport | None = None
    """What ``backend="torch"`` did (candidates per query, corpus passes); ``None`` for the
    other backends."""
    depth: DepthReport | None = None
    """How deep in their rankings the negatives were found, at :func:`default_window`;
    ``None`` in a report of a run that did not record ranks (an older negmine)."""
    sources: dict[str, int] | None = None
    """With ``backend="bm25"`` or ``"hybrid"``: how many negatives each combination of rankings
    found (``"bm25"``, ``"dense"``, ``"bm25+dense"``: found by both), summing to
    :attr:`negatives` (see ``MiningResult.negative_sources``); ``None`` for the backends with
    one ranking."""
    record_cut: float | None = None
    """With removals recorded per query up to ``record_removed``: the score below which some
    query's recorded removals were cut (the highest score at which a query reached the cap;
    above it every removal is recorded); ``None`` when no query reached the cap."""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, in layout :data:`REPORT_FORMAT` (its ``format``)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["ann"] = None if self.ann is None else dataclasses.asdict(self.ann)
        data["teacher"] = None if self.teacher is None else dataclasses.asdict(self.teacher)
        data["torch"] = None if self.torch is None else dataclasses.asdict(self.torch)
        data["depth"] = None if self.depth is None else dataclasses.asdict(self.depth)
        data["format"] = REPORT_FORMAT
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiningReport:
        """The report :meth:`to_dict` wrote, of this :data:`REPORT_FORMAT` or of format 1 (no
        ``format`` key; what negmine wrote before the hnsw fields were nested: they move into
        :attr:`ann`, whose ``built`` and ``path`` format 1 did not record). ``ValueError`` or
        ``TypeError`` when ``data`` is neither."""
        if not isinstance(data, dict):
            raise TypeError(f"a report is a JSON object, not {type(data).__name__}")
        fields = dict(data)
        # Reports written before negmine recorded ranks have no depth.
        depth = fields.pop("depth", None)
        fields["depth"] = None if depth is None else DepthReport(**depth)
        if "format" not in fields:
            flat = {k: fields.pop(k) for k in _FORMAT_1_ANN_KEYS if k in fields}
            ann = None if fields.get("backend", "exact") == "exact" else AnnReport(**flat)
            return cls(**fields, ann=ann)
        version = fields.pop("format")
        if version != REPORT_FORMAT:
            raise ValueError(
                f"report format {version!r}; this negmine reads formats 1 and {REPORT_FORMAT}"
            )
        nested = fields.pop("ann", None)
        teacher = fields.pop("teacher", None)
        # A format-2 report written before backend="torch" or teachers has no such key.
        torch = fields.pop("torch", None)
        return cls(
            **fields,
            ann=None if nested is None else AnnReport(**nested),
            teacher=None if teacher is None else TeacherReport(**teacher),
            torch=None if torch is None else TorchReport(**torch),
        )

    def __str__(self) -> str:
        total = self.n_queries * self.num_negatives
        lines = [
            f"mined {self.negatives:,} of {total:,} negatives for {self.n_queries:,} queries",
            f"  positives excluded by id:        {self.positives:,}",
            f"  duplicates of positives excluded: {self.excluded_duplicates:,}",
        ]
        if self.ann is not None:
            ann = self.ann
            recall = "n/a" if ann.recall is None else f"{ann.recall:.4f}"
            line = (
                f"  backend {self.backend}: ef {ann.ef}, recall@{ann.recall_depth} {recall} "
                f"on {ann.recall_sample} sampled queries (target {ann.target_recall})"
            )
            if ann.recall is not None and ann.recall < ann.target_recall:
                line += ": TARGET NOT REACHED"
            lines.append(line)
            if self.refetched or self.exact_fallback:
                lines.append(
                    f"    re-fetched deeper: {self.refetched:,} queries; "
                    f"finished by exact search: {self.exact_fallback:,}"
                )
        if self.torch is not None:
            t = self.torch
            lines.append(
                f"  backend torch ({t.dtype} on {t.device}, tiles of {t.tile_rows:,} rows): "
                f"{t.candidates_per_query:.1f} candidates per query fetch (at most "
                f"{t.max_candidates:,}), {t.scans:,} corpus passes ({t.extra_scans:,} for "
                f"{t.rescanned_queries:,} queries whose bound needed more)"
            )
        if self.backend in ("bm25", "hybrid") and (self.refetched or self.exact_fallback):
            lines.append(
                f"  backend {self.backend}: re-fetched deeper: {self.refetched:,} queries; "
                f"finished by exact search: {self.exact_fallback:,}"
            )
        if self.sources is not None:
            found = ", ".join(f"{n:,} by {label}" for label, n in self.sources.items())
            lines.append(f"  negatives found: {found}")
        if self.linked_queries:
            lines.append(f"  queries sharing positives (linked): {self.linked_queries:,}")
        if self.teacher is not None:
            judged = self.teacher
            line = (
                f"  teacher scores for the filters: {judged.pairs:,} candidate pairs, "
                f"{judged.positives:,} positives"
            )
            if judged.cut is not None and judged.percentile is not None:
                line += (
                    f"; cut at its {judged.percentile:g}th positive percentile: {judged.cut:.4g}"
                )
            lines.append(line)
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
        if self.depth is not None:
            lines += self.depth.lines(self.n_queries, self.num_negatives)
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
    negative_ranks: np.ndarray | None = None,
) -> MiningReport:
    """The report of a run: ``options`` as recorded (``MiningOptions.to_dict``), the counts
    (``removed_counts``: per query and filter, or totals per filter), histograms of every score
    on one set of bins, and, given the negatives' ranks, their :class:`DepthReport` at
    :func:`default_window`."""
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
    # Per query and filter; a run that counted only totals (the drop-in's own selection)
    # passes one count per filter and has no per-query cut to mark.
    per_query = removed_counts.sum(axis=1) if removed_counts.ndim == 2 else np.zeros(0, np.int64)
    counts = removed_counts.sum(axis=0) if removed_counts.ndim == 2 else removed_counts
    # A query whose removals outnumber its records was cut at its last (lowest) record.
    recorded = np.bincount(removed["query"], minlength=len(per_query))
    cut_queries = np.flatnonzero(per_query > recorded[: len(per_query)])
    record_cut = None
    if len(cut_queries):
        lowest = np.full(len(per_query), np.inf)
        np.minimum.at(lowest, removed["query"], removed["score"].astype(np.float64))
        cut = float(lowest[cut_queries].max())
        # record_removed=0 records nothing: there is no curve to cut.
        record_cut = cut if np.isfinite(cut) else None
    depth = None
    if negative_ranks is not None:
        window, window_from = default_window(options)
        depth = depth_report(
            negative_ranks, negative_scores, num_negatives, window, window_from=window_from
        )
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
        depth=depth,
        record_cut=record_cut,
    )


def _histogram_figure(report: MiningReport) -> Any:
    """The figure :func:`plot_histograms` saves. A removal curve that holds only the recorded
    candidates says so in its legend entry and under the plot: unmarked, 5,833 recorded of
    15,883 removed read as the whole removal."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plot() needs matplotlib: pip install 'negmine[plot]'") from e
    edges = np.asarray(report.histogram_edges)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    capped = []
    for name, counts in report.histograms.items():
        if not sum(counts):
            continue
        label = name
        # Mining records at most `record_removed` removed candidates per query (the
        # best-ranked); the report's per-filter counts are exact.
        held, removed = sum(counts), report.removed.get(name, 0)
        if name in FILTERS and held < removed:
            label = f"{name} (recorded {held:,} of {removed:,} removed)"
            capped.append(name)
        ax.stairs(counts, edges, label=label, fill=name in ("positive", "negative"), alpha=0.6)
    ax.set_xlabel("score")
    ax.set_ylabel("candidates")
    ax.set_title(f"negmine: {report.negatives:,} negatives for {report.n_queries:,} queries")
    ax.legend()
    if capped:
        cap = report.options.get("record_removed")
        per_query = f"the best-ranked {cap:,} per query" if isinstance(cap, int) else "a cap"
        note = (
            f"{', '.join(capped)}: only the removed candidates recorded ({per_query}, "
            "record_removed) are drawn; the report's counts are exact"
        )
        if report.record_cut is not None:
            # Records are kept best-ranked first: above this score no query's were cut.
            ax.axvline(report.record_cut, color="black", linestyle="--", linewidth=1)
            ax.annotate(
                "record_removed cut\n(complete to the right)",
                xy=(report.record_cut, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize=8,
            )
            note += f"; left of the dashed line ({report.record_cut:.4g}) some queries' were cut"
        fig.text(0.01, 0.01, note, fontsize=8)
    fig.tight_layout(rect=(0, 0.04 if capped else 0, 1, 1))
    return fig


def plot_histograms(report: MiningReport, path: str | os.PathLike[str]) -> None:
    """Writes a PNG histogram of ``report``'s positive, kept and removed scores (needs
    matplotlib), atomically. Removed candidates are drawn as recorded: at most
    ``record_removed`` per query (a legend entry and a note under the plot say which
    curves are so capped)."""
    fig = _histogram_figure(report)
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
