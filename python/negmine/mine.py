"""Hard-negative mining, the API: :func:`mine`, its :class:`MiningOptions`, and the steps the
checkpointed CLI runs chunk by chunk (:func:`prepare`, :func:`mine_prepared`, :func:`assemble`).

The heavy lifting (search, filters, sampling) is ``negmine._core.mine``; this module turns
positives, duplicate groups and linked queries into the id lists the core needs, and wraps the
result in a :class:`~negmine.result.MiningResult` with a :class:`~negmine.report.MiningReport`.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import numpy.typing as npt

from negmine import _core, sources
from negmine import _numbers as numbers
from negmine._core import Embeddings
from negmine._inputs import (
    EmbeddingsLike,
    IdsLike,
    as_csr,
    as_matrix,
    gather_lists,
    pairs_to_csr,
    read_only,
    rows_of,
)
from negmine._progress import progress_callback
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.qrels import load_qrels
from negmine.report import TeacherReport, build_report
from negmine.result import MiningResult
from negmine.texts import TextScan, TextsLike, as_source, scan_texts

SamplingStrategy = Literal["top", "random", "simans"]
Duplicates = Union[Literal["auto"], None, npt.ArrayLike]


class MiningOptions:
    """Everything that decides which negatives are mined: the options of :func:`mine`, with the
    same names, defaults and meaning (see its docstring), as keyword arguments.

    The options are declared once, in the core (``MineOptions``: name, type, default and help
    of each, see :data:`OPTIONS`), which checks them as they are built, raising
    ``InvalidArgumentError`` / ``InvalidTypeError`` naming the option. ``to_dict()`` holds
    plain Python values (a numpy scalar becomes an ``int`` or ``float``, an alias its
    canonical name), so that the options serialise to JSON and compare equal however they
    were spelled.
    """

    __slots__ = ("_values", "core")

    _values: dict[str, Any]
    core: _core.MineOptions
    """The options as the core takes them, built (and checked by the core) once."""

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidTypeError(
                f"unknown mining option {', '.join(map(repr, unknown))}; the options are "
                f"{', '.join(OPTIONS)}"
            )
        given = {name: options.get(name, spec["default"]) for name, spec in OPTIONS.items()}
        core = _core.MineOptions(**given)
        # Checked by the core first, so the conversion to the plain type cannot fail.
        values = {
            name: None if given[name] is None else _PLAIN[spec["type"]](given[name])
            for name, spec in OPTIONS.items()
        }
        values["metric"] = core.metric  # an alias resolved
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "core", core)

    def __getattr__(self, name: str) -> Any:
        # Only options are looked up here; the slots themselves (unset on an instance made
        # without `__init__`, e.g. by `copy`) must not recurse.
        values = None if name.startswith("_") else object.__getattribute__(self, "_values")
        if values is None or name not in values:
            raise AttributeError(f"MiningOptions has no option {name!r}")
        return values[name]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("MiningOptions is immutable: build new options instead")

    def __copy__(self) -> MiningOptions:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> MiningOptions:
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MiningOptions) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"MiningOptions({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any) -> MiningOptions:
        """These options with ``changes``, checked as new ones are."""
        return MiningOptions(**{**self._values, **changes})


OPTIONS: dict[str, dict[str, Any]] = {spec["name"]: spec for spec in _core.MineOptions.OPTIONS}
"""The mining options as the core declares them, by name: each one's ``type`` (``"int"``,
``"float"``, ``"str"``), ``optional``, ``choices``, ``default`` and ``help``. :func:`mine`'s
keyword arguments, :class:`MiningOptions`, the command line's flags and the refresher read
them from here (a test checks that :func:`mine`'s signature has each with its default)."""

_PLAIN: dict[str, Callable[[Any], Any]] = {"int": operator.index, "float": float, "str": str}


@dataclass(frozen=True)
class Prepared:
    """The id lists the core needs, computed once for all queries (linking and duplicate
    groups are global, so chunked runs must share them)."""

    pos_indptr: np.ndarray
    pos_ids: np.ndarray
    ex_indptr: np.ndarray
    ex_ids: np.ndarray
    groups: np.ndarray | None
    linked: int
    teacher_positive_scores: np.ndarray | None = None
    """With a teacher (``mine(rescore=...)``): its score of each of ``pos_ids``."""
    excluded_duplicates: int | None = None
    """Exclusions that are duplicate-group members of positives (``None``: all exclusions but
    the positives are, i.e. no ``exclude`` was given)."""

    def id_lists(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Positives and exclusions as the core takes them: two CSR pairs."""
        return (self.pos_indptr, self.pos_ids), (self.ex_indptr, self.ex_ids)

    def rows(self, start: int, stop: int) -> Prepared:
        """The lists of queries ``start..stop``."""
        p0, p1 = self.pos_indptr[start], self.pos_indptr[stop]
        e0, e1 = self.ex_indptr[start], self.ex_indptr[stop]
        return Prepared(
            pos_indptr=self.pos_indptr[start : stop + 1] - p0,
            pos_ids=self.pos_ids[p0:p1],
            ex_indptr=self.ex_indptr[start : stop + 1] - e0,
            ex_ids=self.ex_ids[e0:e1],
            groups=self.groups,
            linked=self.linked,
            teacher_positive_scores=None
            if self.teacher_positive_scores is None
            else self.teacher_positive_scores[p0:p1],
        )


def positives_csr(
    positives: IdsLike | str | os.PathLike[str], n_queries: int, n_corpus: int
) -> tuple[np.ndarray, np.ndarray]:
    """``positives`` in any form :func:`mine` takes (lists, a CSR pair, a qrels path) as a
    sorted, deduplicated int64 CSR pair over ``n_queries``, every id checked against
    ``n_corpus``."""
    if isinstance(positives, (str, os.PathLike)):
        positives = load_qrels(positives, n_queries=n_queries, n_corpus=n_corpus)
    csr = as_csr(positives, n_queries, "positives")
    if csr is None:
        raise InvalidArgumentError(
            "positives are required: one list of corpus ids per query (a list may be empty: "
            "such a query has nothing excluded and no margin filters), a "
            "CSR pair or a qrels path"
        )
    indptr, ids = csr  # one list per query, indptr checked by as_csr
    if len(ids) and (ids.min() < 0 or ids.max() >= n_corpus):
        bad = ids[(ids < 0) | (ids >= n_corpus)][0]
        raise InvalidArgumentError(
            f"positive id {bad} is out of range for a corpus of {n_corpus} rows"
        )
    rows = np.repeat(np.arange(n_queries), np.diff(indptr))
    return pairs_to_csr(rows, ids, n_queries)


def prepare(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    positives: IdsLike | str | os.PathLike[str],
    *,
    duplicates: Duplicates = "auto",
    corpus_texts: TextsLike | TextScan | None = None,
    query_dup_threshold: float | None = None,
    threads: int | None = None,
    exclude: IdsLike = None,
) -> Prepared:
    """Positives (with those of linked queries) and exclusions (with duplicate-group members,
    and ``exclude``: ids never returned that are not positives)."""
    n_queries, n_corpus = rows_of(queries), rows_of(corpus)
    pos_indptr, pos_ids = positives_csr(positives, n_queries, n_corpus)
    linked = 0
    if query_dup_threshold is not None:
        components = _core.link_queries(queries, float(query_dup_threshold), threads=threads)
        components = components.astype(np.int64)
        linked = int((np.bincount(components, minlength=n_queries)[components] > 1).sum())
        # Each query gets the positives of its whole component.
        pos_rows = np.repeat(np.arange(n_queries), np.diff(pos_indptr))
        comp_indptr, comp_ids = pairs_to_csr(components[pos_rows], pos_ids, n_queries)
        counts, shared = gather_lists(comp_indptr, comp_ids, components)
        pos_indptr, pos_ids = pairs_to_csr(
            np.repeat(np.arange(n_queries), counts), shared, n_queries
        )
    groups = _duplicate_groups(corpus, duplicates, corpus_texts, threads)
    ex_indptr, ex_ids = pos_indptr, pos_ids
    if groups is not None and len(pos_ids):
        # Members of each group, as CSR over dense group ids.
        _, dense = np.unique(groups, return_inverse=True)
        dense = dense.astype(np.int64)
        order = np.argsort(dense, kind="stable").astype(np.int64)
        group_indptr = np.concatenate(([0], np.cumsum(np.bincount(dense))))
        counts, members = gather_lists(group_indptr, order, dense[pos_ids])
        pos_rows = np.repeat(np.arange(n_queries), np.diff(pos_indptr))
        ex_indptr, ex_ids = pairs_to_csr(
            np.concatenate([pos_rows, np.repeat(pos_rows, counts)]),
            np.concatenate([pos_ids, members]),
            n_queries,
        )
    duplicates_excluded = len(ex_ids) - len(pos_ids)
    extra = as_csr(exclude, n_queries, "exclude")
    if extra is not None and len(extra[1]):
        if extra[1].min() < 0 or extra[1].max() >= n_corpus:
            bad = extra[1][(extra[1] < 0) | (extra[1] >= n_corpus)][0]
            raise InvalidArgumentError(
                f"exclude id {bad} is out of range for a corpus of {n_corpus} rows"
            )
        ex_rows = np.repeat(np.arange(n_queries), np.diff(ex_indptr))
        extra_rows = np.repeat(np.arange(n_queries), np.diff(extra[0]))
        ex_indptr, ex_ids = pairs_to_csr(
            np.concatenate([ex_rows, extra_rows]), np.concatenate([ex_ids, extra[1]]), n_queries
        )
    return Prepared(
        pos_indptr,
        pos_ids,
        ex_indptr,
        ex_ids,
        groups,
        linked,
        excluded_duplicates=duplicates_excluded,
    )


def text_groups(corpus_texts: TextsLike | TextScan) -> TextScan:
    """The duplicate groups of identical texts (each row: the first row of its text), from
    one pass over them, unless they are already counted and grouped (:class:`TextScan`)."""
    if isinstance(corpus_texts, TextScan) and corpus_texts.groups is not None:
        return corpus_texts
    return scan_texts(as_source(corpus_texts, "corpus_texts"), groups=True)  # type: ignore[arg-type]


def _duplicate_groups(
    corpus: Embeddings | np.ndarray,
    duplicates: Duplicates,
    corpus_texts: TextsLike | TextScan | None,
    threads: int | None,
) -> np.ndarray | None:
    n_corpus = rows_of(corpus)
    if duplicates is None:
        return None
    if isinstance(duplicates, str):
        if duplicates != "auto":
            raise InvalidArgumentError(
                f"duplicates must be 'auto', None or an array of group ids, got {duplicates!r}"
            )
        if corpus_texts is None:
            return np.asarray(_core.duplicate_groups(corpus, threads=threads))
        scan = text_groups(corpus_texts)
        if scan.count != n_corpus:
            raise InvalidArgumentError(
                f"corpus_texts has {numbers.counted(scan.count, 'text')} for "
                f"{numbers.counted(n_corpus, 'corpus row')}"
            )
        return scan.groups
    groups = np.asarray(duplicates)
    if groups.shape != (n_corpus,) or groups.dtype.kind not in "iu":
        raise InvalidTypeError(
            f"duplicates must be one integer group id per corpus row ({n_corpus}), got "
            f"shape {groups.shape} dtype {groups.dtype}"
        )
    return np.ascontiguousarray(np.unique(groups, return_inverse=True)[1], dtype=np.uint32)


def mine_prepared(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    *,
    query_offset: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
    fetch: sources.Fetch | None = None,
    max_depth: int | None = None,
    teacher: Teacher | None = None,
    ranked: bool = False,
) -> _core.Mined:
    """The core call for queries whose lists are ``prepared`` (raw arrays, no report), with
    candidates from the exact search or, given ``fetch`` (and its ``max_depth``), from it
    (``ranked``: its lists are the ranking, see ``Source.ranked``); judged by ``teacher`` if
    given (``prepared`` then holds its positive scores)."""
    judging: dict[str, Any] = {}
    if teacher is not None:
        judging = {
            "teacher": teacher,
            "teacher_positive_scores": prepared.teacher_positive_scores,
        }
    with (
        read_only(queries, corpus),
        progress_callback(progress, "mine", total=rows_of(corpus), unit="row") as cb,
    ):
        return _core.mine(
            queries,
            corpus,
            *prepared.id_lists(),
            options.core,
            groups=prepared.groups,
            query_offset=query_offset,
            threads=threads,
            progress=cb,
            fetch=fetch,
            max_depth=max_depth,
            fetch_ranked=ranked,
            **judging,
        )


def assemble(
    prepared: Prepared, options: MiningOptions, parts: Sequence[_core.Mined]
) -> MiningResult:
    """A :class:`MiningResult` from the core outputs of consecutive query chunks."""

    def cat(arrays: Callable[[_core.Mined], np.ndarray]) -> np.ndarray:
        # One part (the common case) is used as it is: a copy would double the peak memory.
        if len(parts) == 1:
            return arrays(parts[0])
        return np.concatenate([arrays(p) for p in parts])

    offsets = np.cumsum([0] + [len(p.found) for p in parts[:-1]])
    removed_counts = cat(lambda p: p.removed_counts)
    removed: dict[str, np.ndarray] = {
        "query": np.concatenate([p.removed_query + off for p, off in zip(parts, offsets)]).astype(
            np.int64
        ),
        "id": cat(lambda p: p.removed_id).astype(np.int64),
        "score": cat(lambda p: p.removed_score).astype(np.float32),
        "filter": cat(lambda p: p.removed_filter).astype(np.uint8),
    }
    found = cat(lambda p: p.found)
    negative_scores = cat(lambda p: p.negative_scores)
    positive_scores = cat(lambda p: p.positive_scores)
    # A chunk checkpointed by a negmine that did not record ranks has none (n x 0).
    ranked = all(p.negative_ranks.shape[1] == options.num_negatives for p in parts)
    negative_ranks = cat(lambda p: p.negative_ranks) if ranked else None
    tagged = all(p.negative_sources.shape[1] == options.num_negatives for p in parts)
    negative_sources = cat(lambda p: p.negative_sources) if tagged else None
    report = build_report(
        n_queries=len(found),
        num_negatives=options.num_negatives,
        options=options.to_dict(),
        positives=len(prepared.pos_ids),
        excluded_duplicates=len(prepared.ex_ids) - len(prepared.pos_ids)
        if prepared.excluded_duplicates is None
        else prepared.excluded_duplicates,
        linked=prepared.linked,
        found=found,
        negative_scores=negative_scores,
        positive_scores=positive_scores,
        removed=removed,
        removed_counts=removed_counts,
        negative_ranks=negative_ranks,
    )
    if negative_sources is not None:
        report.sources = sources.source_counts(negative_sources)
    judged = prepared.teacher_positive_scores is not None
    if judged:
        assert prepared.teacher_positive_scores is not None
        report.teacher = TeacherReport(
            pairs=int(cat(lambda p: p.judged).sum()),
            positives=len(prepared.teacher_positive_scores),
        )
    return MiningResult(
        negative_ids=cat(lambda p: p.negative_ids),
        negative_scores=negative_scores,
        positive_indptr=prepared.pos_indptr,
        positive_ids=prepared.pos_ids,
        positive_scores=positive_scores,
        removed=removed,
        report=report,
        teacher_scores=cat(lambda p: p.teacher_scores) if judged else None,
        positive_teacher_scores=prepared.teacher_positive_scores,
        groups=prepared.groups,
        negative_ranks=negative_ranks,
        negative_sources=negative_sources,
    )


def mine(
    queries: EmbeddingsLike,
    corpus: EmbeddingsLike,
    positives: IdsLike | str | os.PathLike[str],
    *,
    num_negatives: int = 3,
    metric: Literal["dot", "cosine"] = "cosine",
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    dup_threshold: float | None = None,
    duplicates: Duplicates = "auto",
    corpus_texts: TextsLike | None = None,
    query_texts: TextsLike | None = None,
    query_dup_threshold: float | None = None,
    sampling_strategy: SamplingStrategy = "top",
    simans_a: float = 1.0,
    simans_b: float = 0.0,
    seed: int = 0,
    max_depth: int | None = None,
    record_removed: int | None = 64,
    backend: Literal["exact", "hnsw", "torch", "bm25", "hybrid", "maxsim"] = "exact",
    target_recall: float = 0.95,
    hnsw_path: str | os.PathLike[str] | None = None,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 200,
    rescore: Callable[[np.ndarray, np.ndarray], npt.ArrayLike] | None = None,
    rescore_percentile: float | None = None,
    rescore_batch_size: int = 4096,
    device: Any = "cpu",
    torch_dtype: Literal["float16", "bfloat16"] = "float16",
    tile_rows: int = 16_384,
    torch_slack: int = 32,
    bm25_k1: float = 1.5,
    bm25_b: float = 0.75,
    bm25_cache_dir: str | os.PathLike[str] | None = None,
    rrf_k: int = 60,
    hybrid_depth: int | None = None,
    query_tokens: Any = None,
    corpus_tokens: Any = None,
    maxsim_depth: int = 100,
    query_offset: int = 0,
    exclude: IdsLike = None,
    threads: int | None = None,
    progress: bool = False,
) -> MiningResult:
    """Mines ``num_negatives`` hard negatives per query.

    Args:
        queries, corpus: embeddings (arrays, ``Embeddings`` or ``.npy`` paths).
        positives: each query's relevant corpus ids: a :class:`negmine.Csr` pair (or a tuple
            of two integer numpy arrays ``(indptr, indices)``), a list of id lists, or a qrels
            TSV path (``query_id corpus_id`` as row indices, see :func:`load_qrels`). A query
            may have no positives: nothing is excluded for it and the margin filters, which
            are relative to its positives, do not apply.
        num_negatives: negatives per query.
        metric: ``"cosine"`` (default) or ``"dot"`` (aliases as in :func:`negmine.search`); a
            dot score that could overflow float32 raises ``InvalidArgumentError`` naming the
            query and corpus row, as in :func:`negmine.search`.
        range_min, range_max: the window ``[range_min, range_max)`` of the filtered ranking
            (sentence-transformers' names). ``range_max=None``: unbounded for ``"top"``,
            ``range_min + 10 * num_negatives`` for the samplers.
        max_score, min_score: absolute score cuts.
        absolute_margin: drop a candidate if ``score + margin > p``; relative_margin: drop it
            if ``score > p - |p| * margin`` (0.05 is NV-Retriever's 95% PercPos); ``p`` is the
            query's lowest positive score.
        dup_threshold: a candidate whose cosine with a positive of the query is at least this
            is a near-duplicate of it and dropped; one this close to a negative already chosen
            is skipped, so the negatives are diverse.
        duplicates: duplicate groups of the corpus: ``"auto"`` (identical texts when
            ``corpus_texts`` is given, else identical embedding rows), ``None`` (off) or an
            array with a group id per corpus row. Every member of a positive's group counts as
            a positive; at most one member of a group is among a query's negatives.
        query_texts: the queries' texts, one per query row (any form ``corpus_texts``
            takes); read by ``backend="bm25"`` and ``"hybrid"`` only.
        query_dup_threshold: queries whose cosine is at least this share their positives.
        sampling_strategy: ``"top"``, ``"random"`` (uniform in the window) or ``"simans"``
            (weight ``exp(-simans_a * (score - p - simans_b)^2)``), seeded by ``seed``.
        max_depth: never rank deeper than this many candidates per query (``range_max +
            max_positives`` is what sentence-transformers looks at, ``+ 1`` from its 6.3);
            default: as deep as the filters need, so a window is never left short while the
            corpus has rows.
        record_removed: removed candidates kept in ``result.removed`` per query (the
            best-ranked ones, for the histograms and for inspection); ``None`` keeps all.
            The per-filter counts of the report are exact either way.
        backend: ``"exact"`` (default) searches the whole corpus; ``"hnsw"`` takes candidates
            from an hnswlib graph (``pip install 'negmine[ann]'``) for corpora too large to
            scan, rescores them exactly and applies the same filters and sampling (see
            :mod:`negmine.ann`). The graph of a corpus file is saved beside it
            (``<corpus>.hnsw-<key>.bin``) and reused while the file and parameters match.
            ``"torch"`` (``pip install 'negmine[torch]'``) scores the corpus with a
            float16/bfloat16 torch matmul on ``device`` to choose candidates, proves with an
            error bound that they hold each query's exact top rows and rescores them exactly:
            the result is bit for bit ``"exact"``'s (see :mod:`negmine.torch.candidates`);
            ``result.report.torch`` says how many candidates and corpus passes it took.
            ``"maxsim"`` mines a multi-vector (ColBERT-style) model: candidates from the
            pooled embeddings, ranked by exact MaxSim over ``query_tokens`` /
            ``corpus_tokens`` (see below).
            ``"bm25"`` takes each query's candidates from a BM25 index over ``corpus_texts``
            searched with ``query_texts`` (both required; see :mod:`negmine.sources.bm25`):
            the window and the sampling follow the BM25 ranking (score descending, id
            ascending), while the filters read the embeddings' exact scores of the
            candidates; ``result.negative_ranks`` are BM25 ranks. A query with fewer lexical
            matches than the filters need is finished by the exact search
            (``result.report.exact_fallback`` counts them). ``"hybrid"`` (texts required as
            for ``"bm25"``) walks the reciprocal-rank fusion of each query's BM25 and dense
            rankings (see :mod:`negmine.sources.hybrid`), the filters again reading the
            embeddings' exact scores. With ``"bm25"`` and ``"hybrid"``,
            ``result.negative_sources`` tags each negative with the rankings that found it
            (bit 1: bm25, bit 2: dense) and ``result.report.sources`` counts them.
        target_recall: hnsw: ``ef`` is raised until the graph's recall against exact search
            on 200 sampled queries reaches this, in ``(0, 1]``; ``result.report.ann`` has the
            recall, the ``ef`` chosen and whether the index was built or loaded.
        hnsw_path: hnsw: where to save / reuse the index (default: beside a corpus file;
            an in-memory corpus gets an in-memory index unless this is given).
        hnsw_m, hnsw_ef_construction: hnsw: the graph's ``M`` and ``ef_construction``.
        rescore: a teacher (RocketQA's / NV-Retriever's denoising): a callable
            ``(query_ids, corpus_ids) -> scores`` taking two int64 arrays of pairs (query row,
            corpus row) and returning one float score per pair (e.g. a cross-encoder, see
            :func:`negmine.teachers.cross_encoder`). It scores every query's positives and the
            candidates the filters and the window look at (the retriever's ranking, as deep
            as it is fetched; a deeper round asks only for new rows), in batches of
            ``rescore_batch_size`` pairs. ``max_score``, ``min_score``, ``absolute_margin``
            and ``relative_margin`` then compare the *teacher's* scores (of the candidate and
            of the query's positives); the ranking, window and sampling stay the retriever's.
            ``result.teacher_scores`` / ``result.positive_teacher_scores`` hold its scores.
        rescore_percentile: with ``rescore``: also drop a candidate whose teacher score is
            above this percentile (0-100, numpy's linear interpolation) of the teacher's
            scores of all positives; counted as ``max_score`` (the lower of the two cuts
            applies), the cut is ``result.report.teacher.cut``.
        rescore_batch_size: pairs per ``rescore`` call.
        exclude: per query, corpus ids never returned that are not positives (no margin is
            relative to them), in any form ``positives`` takes; e.g. the corpus entry whose
            text is the query's own.
        query_offset: the global index of ``queries[0]`` when they are a slice of a larger
            set mined piece by piece (by hand, or across machines): the seeded sampling is
            seeded per global query index, so the pieces draw what one call over all queries
            draws (given the same positives; ``query_dup_threshold`` links queries only within
            one call). A teacher gets global query indices too.
        device: torch: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` (torch's
            own thread settings govern its CPU work; ``threads`` is the core's).
        torch_dtype: torch: ``"float16"`` (default) or ``"bfloat16"``, the matmul's inputs.
        tile_rows: torch: corpus rows streamed to the device per tile (device memory grows
            with it; a device that runs out raises ``negmine.errors.DeviceMemoryError``
            naming a smaller one).
        torch_slack: torch: candidates asked for beyond the depth and the query's excluded
            ids (``g``); doubled for a query whose bound does not yet prove its candidates.
        bm25_k1, bm25_b: bm25, hybrid: BM25's ``k1`` (>= 0) and ``b`` (in [0, 1]); bm25s'
            defaults.
        bm25_cache_dir: bm25, hybrid: a directory keeping the BM25 index, as
            ``bm25-<sha256>.idx`` (the digest of the corpus texts, ``k1``, ``b`` and the
            format): a later run over the same texts maps it instead of building it again.
            ``None`` (default): built in memory for this run.
        rrf_k: hybrid: the fusion's constant (a row at rank ``r`` of a ranking scores
            ``1 / (rrf_k + r)``), >= 0.
        hybrid_depth: hybrid: rows each ranking contributes per query (default: the first
            fetch depth, twice the window end and at least 64); a query whose window the
            fused list cannot fill is finished by the exact search.
        query_tokens, corpus_tokens: maxsim: the token embeddings (``negmine.MultiVectors``,
            a saved multi-vector directory, or a list of ``tokens x dim`` arrays), one text per
            row of ``queries`` / ``corpus`` (which are then the pooled vectors the candidates
            come from, e.g. ``MultiVectors.pooled()``; see :func:`negmine.multivector.mine`).
        maxsim_depth: maxsim: pooled candidates per query rescored exactly by MaxSim. The
            window and sampling follow the MaxSim ranking of them, and without ``rescore``
            MaxSim is the teacher: the score filters read MaxSim scores
            (``result.teacher_scores``). See :mod:`negmine.sources.maxsim`.

    Returns:
        A :class:`MiningResult`; ``result.report`` says what each filter removed and which
        queries got fewer negatives than asked for (only when the corpus ran out: the search
        goes as deep as the filters need).
    """
    # The options are the arguments above that the core declares (see `OPTIONS`).
    options = MiningOptions(**{k: v for k, v in locals().items() if k in OPTIONS})
    threads = numbers.optional_count(threads, "threads")
    # Every backend's settings are checked, whichever is used (each declared by its source).
    source_settings = sources.all_settings(locals())[
        numbers.choice(backend, "backend", tuple(sources.BACKENDS))
    ]
    query_offset = numbers.non_negative(query_offset, "query_offset", maximum=numbers.MAX_ID)
    if backend == "maxsim" and rescore is None:
        rescore = source_settings.teacher(query_offset, threads)
    teacher = make_teacher(rescore, rescore_percentile, rescore_batch_size)
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    if backend != "exact" and q.shape[1] != c.shape[1]:
        raise InvalidArgumentError(
            f"queries have dimension {q.shape[1]} but the corpus has {c.shape[1]}"
        )
    prepared = prepare(
        q,
        c,
        positives,
        duplicates=duplicates,
        corpus_texts=corpus_texts,
        query_dup_threshold=options.query_dup_threshold,
        threads=threads,
        exclude=exclude,
    )
    core_options = options
    if teacher is not None:
        prepared, core_options = teacher.judge_positives(prepared, options)
    with read_only(q, c):
        source = open_source(
            backend,
            source_settings,
            q,
            c,
            prepared,
            options,
            threads=threads,
            progress=progress,
            query_texts=query_texts,
            corpus_texts=corpus_texts,
        )
        parts = mine_parts(
            q,
            c,
            prepared,
            core_options,
            source,
            teacher=teacher,
            query_offset=query_offset,
            threads=threads,
            progress=progress,
        )
    result = assemble(prepared, options, parts)
    source.report(result.report, parts)
    if teacher is not None:
        result.report.teacher = teacher.report(result.report.teacher)
    return result


def open_source(
    backend: str,
    settings: Any,
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    *,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
    query_texts: TextsLike | None = None,
    corpus_texts: TextsLike | None = None,
) -> sources.Source:
    """``backend``'s candidate source (:mod:`negmine.sources`) for a run over all of
    ``queries`` with these lists and options (the user's: a teacher's cut does not change
    which rows are candidates); the texts go to a source that reads them (``bm25``,
    ``hybrid``)."""
    job = sources.Job(
        queries,
        corpus,
        (prepared.ex_indptr, prepared.ex_ids),
        options.metric,
        options.seed,
        _core.first_depth(options.core),
        threads,
        progress,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
    )
    return sources.open_source(backend, job, settings)


def mine_chunk(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    lists: Prepared,
    options: MiningOptions,
    source: sources.Source,
    start: int,
    *,
    teacher: Teacher | None = None,
    query_offset: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
) -> _core.Mined:
    """The core call for the queries starting at row ``start`` of the source's run, with its
    candidates (:func:`mine_prepared` with the source's ``fetch``); by the exact path where
    the source leaves the chunk to it."""
    try:
        fetch = source.fetch(start, queries, (lists.ex_indptr, lists.ex_ids), corpus)
        part = mine_prepared(
            queries,
            corpus,
            lists,
            options,
            query_offset=query_offset,
            threads=threads,
            progress=progress,
            fetch=fetch,
            max_depth=None if fetch is None else source.max_depth,
            teacher=teacher,
            ranked=fetch is not None and source.ranked,
        )
    except sources.ExactPathDecides:
        # A row that is not finite, or dot scores that could overflow: the exact path raises
        # (naming the row or pair) or mines, exactly as backend="exact" does.
        fetch = None
        part = mine_prepared(
            queries,
            corpus,
            lists,
            options,
            query_offset=query_offset,
            threads=threads,
            teacher=teacher,
        )
    tags = source.negative_sources(fetch, part)
    if tags is None:
        return part
    return _core.Mined(**{**part.arrays(), "negative_sources": tags})


def mine_parts(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    source: sources.Source,
    *,
    teacher: Teacher | None = None,
    query_offset: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
) -> list[_core.Mined]:
    """The core outputs of a run, one per chunk of ``source.chunk_rows`` queries (one for all
    where the source takes them at once)."""
    n_queries = rows_of(queries)
    if source.chunk_rows is None or n_queries == 0:
        part = mine_chunk(
            queries,
            corpus,
            prepared,
            options,
            source,
            0,
            teacher=teacher,
            query_offset=query_offset,
            threads=threads,
            progress=progress,
        )
        return [part]
    q_array = queries if isinstance(queries, np.ndarray) else np.asarray(queries)
    parts: list[_core.Mined] = []
    with progress_callback(progress, f"mine ({source.name})", total=n_queries, unit="query") as cb:
        for start in range(0, n_queries, source.chunk_rows):
            stop = min(n_queries, start + source.chunk_rows)
            part = mine_chunk(
                q_array[start:stop],
                corpus,
                prepared.rows(start, stop),
                options,
                source,
                start,
                teacher=teacher,
                query_offset=query_offset + start,
                threads=threads,
            )
            parts.append(part)
            if cb is not None:
                cb(stop, n_queries)
    return parts


class Teacher:
    """``mine(rescore=...)``'s callable as the core calls it: pairs in batches, scores checked
    and made float32, pairs counted for the report."""

    def __init__(
        self,
        score: Callable[[np.ndarray, np.ndarray], npt.ArrayLike],
        percentile: float | None,
        batch_size: int,
    ) -> None:
        self.score = score
        self.percentile = percentile
        self.batch_size = batch_size
        self.cut: float | None = None

    def __call__(self, query_ids: np.ndarray, corpus_ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(query_ids), dtype=np.float32)
        for start in range(0, len(query_ids), self.batch_size):
            stop = min(start + self.batch_size, len(query_ids))
            q, c = query_ids[start:stop], corpus_ids[start:stop]
            scores = numbers.float32_scores(self.score(q, c), len(q), "rescore", _pair_names(q, c))
            out[start:stop] = scores
        return out

    def judge_positives(
        self, prepared: Prepared, options: MiningOptions
    ) -> tuple[Prepared, MiningOptions]:
        """``prepared`` with the teacher's scores of every positive (all queries at once, so
        that the percentile cut does not depend on chunking), and the options the core
        applies (``max_score`` lowered to the percentile cut)."""
        rows = np.repeat(
            np.arange(len(prepared.pos_indptr) - 1, dtype=np.int64), np.diff(prepared.pos_indptr)
        )
        scores = self(rows, prepared.pos_ids.astype(np.int64))
        if self.percentile is not None:
            if not len(scores):
                raise InvalidArgumentError("rescore_percentile needs positives: no query has any")
            self.cut = float(np.float32(np.percentile(scores.astype(np.float64), self.percentile)))
            given = options.max_score
            cut = self.cut if given is None else min(self.cut, float(given))
            options = options.replace(max_score=cut)
        return dataclasses.replace(prepared, teacher_positive_scores=scores), options

    def report(self, assembled: TeacherReport | None) -> TeacherReport | None:
        """``assembled`` (the counts, from :func:`assemble`) with this teacher's cut."""
        if assembled is None:
            return None
        return dataclasses.replace(assembled, percentile=self.percentile, cut=self.cut)


def _pair_names(query_ids: np.ndarray, corpus_ids: np.ndarray) -> Callable[[int], str]:
    """Names pair ``i`` in a message about the teacher's score of it."""
    return lambda i: f"query {int(query_ids[i])} with corpus row {int(corpus_ids[i])}"


def make_teacher(rescore: object, percentile: object, batch_size: object) -> Teacher | None:
    """``mine``'s teacher arguments, checked."""
    if rescore is None:
        if percentile is not None:
            raise InvalidArgumentError("rescore_percentile needs a rescore callable")
        return None
    if not callable(rescore):
        raise InvalidTypeError(
            f"rescore must be a callable (query_ids, corpus_ids) -> scores, got "
            f"{type(rescore).__name__}"
        )
    cut = (
        None
        if percentile is None
        else numbers.real(percentile, "rescore_percentile", low=0.0, high=100.0)
    )
    size = numbers.count(batch_size, "rescore_batch_size")
    return Teacher(rescore, cut, size)
