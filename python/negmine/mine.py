"""Hard-negative mining: exact candidates, false-negative filters, seeded sampling, a report.

The heavy lifting (search, filters, sampling) is ``negmine._core.mine``; this module turns
positives, duplicate groups and linked queries into the id lists the core needs, and wraps the
result in a :class:`MiningResult` with a :class:`MiningReport`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import numpy.typing as npt

from negmine import _core
from negmine import _numbers as numbers
from negmine._atomic import HashingWriter, atomic_directory, atomic_write, new_file
from negmine._core import Embeddings
from negmine._inputs import (
    Csr,
    EmbeddingsLike,
    IdsLike,
    as_csr,
    as_matrix,
    read_only,
    rows_of,
)
from negmine._numbers import MAX_ID
from negmine._paths import regular_file
from negmine._progress import progress_callback
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError

if TYPE_CHECKING:
    from negmine import ann

SamplingStrategy = Literal["top", "random", "simans"]
Duplicates = Union[Literal["auto"], None, npt.ArrayLike]

FILTERS: tuple[str, ...] = tuple(_core.filter_names())
"""Filter names, in the order the core applies them (codes of ``removed["filter"]``)."""

_HISTOGRAM_BINS = 50
_MAX_RANK = 2**30
"""The core's bound on ``num_negatives``, ``range_min`` and ``range_max``."""


_HEADER_WORDS = frozenset(
    {
        "query", "query-id", "query_id", "queryid", "qid", "q", "topic", "topic-id",
        "topic_id", "anchor", "corpus", "corpus-id", "corpus_id", "corpusid", "doc", "doc-id",
        "doc_id", "docid", "document", "document-id", "document_id", "did", "passage",
        "passage-id", "passage_id", "pid", "positive", "positive-id", "positive_id", "iter",
        "iteration", "score", "relevance", "rel", "label", "grade", "judgment", "judgement",
    }
)  # fmt: skip
"""Words a qrels header is made of (BEIR, MS MARCO, TREC, sentence-transformers)."""


def _header_word(text: str) -> bool:
    return text.strip().lower() in _HEADER_WORDS


def load_qrels(
    path: str | os.PathLike[str],
    query_ids: Sequence[str] | None = None,
    corpus_ids: Sequence[str] | None = None,
    *,
    n_queries: int | None = None,
    n_corpus: int | None = None,
) -> Csr:
    """Reads a qrels TSV (``query_id<TAB>corpus_id`` per line, optional header, optional third
    relevance column where ``0`` means not relevant; TREC's four columns too) into CSR
    positives.

    Without ``query_ids`` / ``corpus_ids`` the ids are row indices, checked against
    ``n_queries`` / ``n_corpus`` when given. With them, ids are looked up by name. The file is
    UTF-8 (a byte-order mark is skipped). Line 1 is skipped only when it is a header: its id
    fields are header words (``query-id``, ``qid``, ``corpus-id``, ``docid``, ``pid``...).
    Every other line must parse: an unknown or malformed id, an empty field (a doubled tab), a
    relevance that is not a finite number, or bytes that are not UTF-8 raise
    :class:`~negmine.InvalidArgumentError` naming the file and line, never a silent skip.
    """
    source = regular_file(path, "qrels file")
    if n_queries is not None and query_ids is not None and n_queries != len(query_ids):
        raise InvalidArgumentError(
            f"n_queries ({n_queries}) differs from the number of query_ids ({len(query_ids)})"
        )
    q_index = {name: i for i, name in enumerate(query_ids)} if query_ids is not None else None
    c_index = {name: i for i, name in enumerate(corpus_ids)} if corpus_ids is not None else None
    q_limit = len(query_ids) if query_ids is not None else n_queries
    pairs: list[tuple[int, int]] = []

    def row_id(text: str, index: dict[str, int] | None, what: str, limit: int | None) -> int:
        if index is not None:
            if text not in index:
                raise ValueError(f"unknown {what} id {text!r}")
            return index[text]
        try:
            value = int(text)
        except ValueError:
            raise ValueError(
                f"{what} ids must be integers (row indices) unless query_ids / corpus_ids are "
                f"given, got {text!r}"
            ) from None
        if value < 0:
            raise ValueError(f"negative {what} id {value}")
        if value > MAX_ID or (limit is not None and value >= limit):
            rows = "queries" if what == "query" else "corpus rows"
            bound = f"{limit} {rows}" if limit is not None else "int64 ids"
            raise ValueError(f"{what} {value} is out of range for {bound}")
        return value

    with open(source, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            where = f"{source}:{line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise InvalidArgumentError(
                    f"{where}: not UTF-8 text (byte {raw[e.start : e.start + 1]!r} at column "
                    f"{e.start + 1}); save the qrels as UTF-8"
                ) from None
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.rstrip().split("\t") if "\t" in text else text.split()
            if len(fields) not in (2, 3, 4):
                raise InvalidArgumentError(
                    f"{where}: expected 'query_id corpus_id [relevance]' (or TREC's 'query_id "
                    f"iteration corpus_id relevance'), got {len(fields)} fields in {text!r}"
                )
            if any(not field.strip() for field in fields):
                raise InvalidArgumentError(
                    f"{where}: empty field in {text!r} (a doubled or stray tab?)"
                )
            fields = [field.strip() for field in fields]
            if len(fields) == 4:  # TREC: query iteration doc relevance
                fields = [fields[0], fields[2], fields[3]]
            if line_no == 1 and _header_word(fields[0]) and _header_word(fields[1]):
                continue
            try:
                if len(fields) == 3:
                    try:
                        relevance = float(fields[2])
                    except ValueError:
                        raise ValueError(f"relevance must be a number, got {fields[2]!r}") from None
                    if not math.isfinite(relevance):
                        raise ValueError(f"relevance must be finite, got {fields[2]!r}")
                    if relevance <= 0:
                        continue
                q = row_id(fields[0], q_index, "query", q_limit)
                c = row_id(fields[1], c_index, "corpus", n_corpus)
            except ValueError as e:
                raise InvalidArgumentError(f"{where}: {e}") from None
            pairs.append((q, c))
    if not pairs:
        raise InvalidArgumentError(f"{source}: no positive pairs found")
    arr = np.unique(np.asarray(pairs, dtype=np.int64), axis=0)
    rows = q_limit if q_limit is not None else int(arr[:, 0].max()) + 1
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.add.at(indptr, arr[:, 0] + 1, 1)
    return Csr(np.cumsum(indptr), arr[:, 1].copy())


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
    """hnsw: queries fetched again, deeper, because filters emptied their first window."""
    exact_fallback: int = 0
    """hnsw: queries whose candidates came from exact search (needed deeper than a graph
    search is worth)."""

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


@dataclass
class MiningResult:
    """Mined negatives, aligned with the queries.

    ``negative_ids[q]`` holds query ``q``'s negatives ranked by score (-1 where missing),
    ``negative_scores[q]`` their scores (NaN where missing); ``positive_ids`` (CSR) and
    ``positive_scores`` the positives used; ``removed`` the candidates each filter dropped.
    """

    negative_ids: np.ndarray
    negative_scores: np.ndarray
    positive_indptr: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray
    removed: dict[str, np.ndarray] = field(repr=False)
    report: MiningReport

    def positives_of(self, query: int) -> np.ndarray:
        return self.positive_ids[self.positive_indptr[query] : self.positive_indptr[query + 1]]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the result, by file name stem."""
        return {
            "negative_ids": self.negative_ids,
            "negative_scores": self.negative_scores,
            "positive_indptr": self.positive_indptr,
            "positive_ids": self.positive_ids,
            "positive_scores": self.positive_scores,
            **{f"removed_{k}": v for k, v in self.removed.items()},
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Writes one ``.npy`` per array, ``report.json`` and ``manifest.json`` (every file's
        name, dtype, shape and sha256) into ``directory``, as one unit: the files go into a
        hidden sibling directory, are fsynced, and that directory replaces ``directory``
        whole (see ``negmine._atomic.atomic_directory``). After a crash or an error
        (``OSError`` naming the file and errno, e.g. a full disk) ``directory`` is the old
        result or the complete new one, never a mix, and nothing temporary is left. The bytes
        depend only on the result (no timestamps).

        ``directory`` (and its parents) is created if missing. An existing ``directory`` is
        replaced only when it is empty or holds nothing but a result's files (of this or an
        older negmine); one holding any other file is refused with ``InvalidArgumentError``
        naming them, so that no user file is ever deleted. A symlink is followed: the
        directory it points to is replaced."""
        _save_result(self, Path(os.path.realpath(directory)))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> MiningResult:
        """Reads a result written by :meth:`save`, verified against its ``manifest.json``:
        the manifest must list exactly a result's files, and each must exist with the listed
        sha256, dtype and shape. A directory mixing files of two saves, a truncated or edited
        file, a missing or unlisted one, or no manifest (not a result, or written by a negmine
        older than the manifest) raises ``FormatError`` naming the file and what differs.
        Files the manifest does not list are ignored."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, "no mining result directory (written by MiningResult.save)", str(d)
            )
        files = _read_result(d)
        arrays = {name[: -len(".npy")]: v for name, v in files.items() if name.endswith(".npy")}
        report_path = d / "report.json"
        try:
            report = MiningReport.from_dict(json.loads(files["report.json"]))
        except (ValueError, TypeError) as e:
            raise FormatError(f"{report_path} is not a mining report: {e}") from None
        return cls(
            negative_ids=arrays["negative_ids"],
            negative_scores=arrays["negative_scores"],
            positive_indptr=arrays["positive_indptr"],
            positive_ids=arrays["positive_ids"],
            positive_scores=arrays["positive_scores"],
            removed={k: arrays[f"removed_{k}"] for k in _REMOVED},
            report=report,
        )

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Writes a PNG histogram of positive, kept and removed scores (needs matplotlib),
        atomically."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("plot() needs matplotlib: pip install 'negmine[plot]'") from e
        r = self.report
        edges = np.asarray(r.histogram_edges)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for name, counts in r.histograms.items():
            if sum(counts):
                ax.stairs(
                    counts, edges, label=name, fill=name in ("positive", "negative"), alpha=0.6
                )
        ax.set_xlabel("score")
        ax.set_ylabel("candidates")
        ax.set_title(f"negmine: {r.negatives:,} negatives for {r.n_queries:,} queries")
        ax.legend()
        fig.tight_layout()
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)


_REMOVED = ("query", "id", "score", "filter")
_RESULT_ARRAYS = (
    "negative_ids",
    "negative_scores",
    "positive_indptr",
    "positive_ids",
    "positive_scores",
    *(f"removed_{k}" for k in _REMOVED),
)
_RESULT_FILES = frozenset({*(f"{name}.npy" for name in _RESULT_ARRAYS), "report.json"})
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "negmine mining result"


def _check_replaceable(directory: Path) -> None:
    """Refuses a ``directory`` that exists and is not empty or a result (save replaces it)."""
    if not os.path.lexists(directory):
        return
    if not directory.is_dir():
        raise InvalidArgumentError(
            f"{directory} exists and is not a directory; a mining result is a directory"
        )
    foreign = sorted(set(os.listdir(directory)) - _RESULT_FILES - {_MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InvalidArgumentError(
            f"{directory} holds files that are not part of a negmine result ({shown}); saving "
            "would delete them: pass an empty or new directory, or a previous result"
        )


def _save_result(result: MiningResult, directory: Path, staging: Path | None = None) -> None:
    """:meth:`MiningResult.save` into ``directory`` (an absolute path), staged in ``staging``
    (default: a hidden sibling) if given."""
    _check_replaceable(directory)
    files: dict[str, dict[str, Any]] = {}
    with atomic_directory(directory, staging=staging) as new:
        for name, array in result.arrays().items():
            with new_file(new / f"{name}.npy") as f:
                writer = HashingWriter(f)
                np.save(writer, array, allow_pickle=False)
            files[f"{name}.npy"] = {
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "sha256": writer.hexdigest(),
            }
        with new_file(new / "report.json") as f:
            writer = HashingWriter(f)
            writer.write(json.dumps(result.report.to_dict(), indent=1, sort_keys=True).encode())
        files["report.json"] = {"sha256": writer.hexdigest()}
        manifest = {"format": _MANIFEST_FORMAT, "version": 1, "files": files}
        with new_file(new / _MANIFEST) as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode())


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """The ``files`` of ``directory``'s manifest, checked to list exactly a result's files."""
    path = directory / _MANIFEST
    if not os.path.lexists(path):
        raise FormatError(
            f"{directory} has no {_MANIFEST}: it is not a mining result written by "
            "MiningResult.save (or was written by a negmine older than the manifest; mine it "
            "again)"
        )
    try:
        manifest = json.loads(regular_file(path, "result manifest").read_bytes())
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path} is not valid JSON: {e}") from None
    if not (
        isinstance(manifest, dict)
        and manifest.get("format") == _MANIFEST_FORMAT
        and isinstance(manifest.get("files"), dict)
    ):
        raise FormatError(f"{path} is not a negmine result manifest")
    if manifest.get("version") != 1:
        raise FormatError(
            f"{path} has version {manifest.get('version')!r}; this negmine reads version 1"
        )
    files: dict[str, dict[str, Any]] = manifest["files"]
    unlisted = sorted(_RESULT_FILES - set(files))
    if unlisted:
        raise FormatError(f"{path} does not list {unlisted[0]}, which every result has")
    unknown = sorted(set(files) - _RESULT_FILES)
    if unknown:
        raise FormatError(f"{path} lists {unknown[0]!r}, which is not a file of a mining result")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
            raise FormatError(f"{path}: the entry of {name} has no sha256")
        if name.endswith(".npy") and not (
            isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in entry["shape"])
        ):
            raise FormatError(f"{path}: the entry of {name} needs a dtype and a shape")
    return files


def _read_result(directory: Path) -> dict[str, Any]:
    """Every file of the result in ``directory``, verified: ``.npy`` files as arrays, the
    report as bytes. Each file is read once and its bytes are both digested and parsed, so
    a save swapping the directory in meanwhile is caught, never mixed in."""
    files = _read_manifest(directory)
    out: dict[str, Any] = {}
    for name in sorted(files):
        entry = files[name]
        path = directory / name
        try:
            data = regular_file(path, "result file").read_bytes()
        except FileNotFoundError:
            raise FormatError(f"{path} is listed in {_MANIFEST} but missing") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise FormatError(
                f"{path} does not match {_MANIFEST} (sha256 {digest[:16]}... instead of "
                f"{entry['sha256'][:16]}...): it was changed after the save, or comes from "
                "another save"
            )
        if not name.endswith(".npy"):
            out[name] = data
            continue
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise FormatError(f"{path} is not a valid .npy file: {e}") from None
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise FormatError(
                f"{path} holds {array.dtype.str} {list(array.shape)}, {_MANIFEST} lists "
                f"{entry['dtype']} {entry['shape']}"
            )
        out[name] = array
    return out


def _hash_groups(texts: Sequence[str]) -> np.ndarray:
    """Duplicate groups of identical texts: each row gets the index of its first occurrence."""
    first: dict[bytes, int] = {}
    groups = np.empty(len(texts), dtype=np.uint32)
    for i, text in enumerate(texts):
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        groups[i] = first.setdefault(key, i)
    return groups


def _gather_lists(
    indptr: np.ndarray, values: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The CSR lists ``keys[0], keys[1], ...`` concatenated: (length of each, values)."""
    starts, counts = indptr[keys], np.diff(indptr)[keys]
    total = int(counts.sum())
    if total == 0:
        return counts, np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return counts, values[np.arange(total) + shift]


def _pairs_to_csr(
    rows: np.ndarray, values: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique (row, value) pairs as CSR."""
    if len(rows):
        pairs = np.unique(np.stack([rows, values], axis=1).astype(np.int64), axis=0)
        rows, values = pairs[:, 0], pairs[:, 1]
    counts = np.bincount(rows, minlength=n_rows) if len(rows) else np.zeros(n_rows, np.int64)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return indptr, np.ascontiguousarray(values, dtype=np.int64)


@dataclass(frozen=True)
class MiningOptions:
    """Everything that decides which negatives are mined (see :func:`mine`)."""

    num_negatives: int = 3
    metric: Literal["dot", "cosine"] = "cosine"
    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    dup_threshold: float | None = None
    query_dup_threshold: float | None = None
    sampling_strategy: SamplingStrategy = "top"
    simans_a: float = 1.0
    simans_b: float = 0.0
    seed: int = 0
    max_depth: int | None = None
    record_removed: int | None = 64

    def __post_init__(self) -> None:
        # Stored as plain Python values (numpy scalars and metric aliases canonicalised), so
        # that the options serialise to JSON and compare equal however they were spelled.
        canonical = {
            "num_negatives": numbers.count(self.num_negatives, "num_negatives", maximum=_MAX_RANK),
            "metric": numbers.metric(self.metric),
            "range_min": numbers.non_negative(self.range_min, "range_min", maximum=_MAX_RANK),
            "range_max": numbers.optional_count(self.range_max, "range_max", maximum=_MAX_RANK),
            "sampling_strategy": numbers.choice(
                self.sampling_strategy, "sampling_strategy", ("top", "random", "simans")
            ),
            "seed": numbers.seed(self.seed),
            "max_depth": numbers.optional_count(self.max_depth, "max_depth"),
            "record_removed": None
            if self.record_removed is None
            else numbers.non_negative(self.record_removed, "record_removed"),
            "query_dup_threshold": numbers.optional_real(
                self.query_dup_threshold, "query_dup_threshold", low=-1.0, high=1.0
            ),
        }
        for name in (
            "max_score",
            "min_score",
            "absolute_margin",
            "relative_margin",
            "dup_threshold",
        ):
            canonical[name] = numbers.optional_real(getattr(self, name), name)
        canonical["simans_a"] = numbers.real(self.simans_a, "simans_a")
        canonical["simans_b"] = numbers.real(self.simans_b, "simans_b")
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def core_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``_core.mine`` that these options set."""
        kwargs = self.to_dict()
        del kwargs["query_dup_threshold"]  # applied by `prepare`
        return kwargs


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
        )


def _positives_csr(
    positives: IdsLike | str | os.PathLike[str], n_queries: int, n_corpus: int
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(positives, (str, os.PathLike)):
        positives = load_qrels(positives, n_queries=n_queries, n_corpus=n_corpus)
    csr = as_csr(positives, n_queries, "positives")
    if csr is None:
        raise InvalidArgumentError(
            "positives are required: one list of corpus ids per query (a list may be empty: "
            "such a query has nothing excluded and no margin filters), a "
            "CSR pair or a qrels path"
        )
    indptr, ids = csr
    if len(indptr) != n_queries + 1:
        raise InvalidArgumentError(
            f"positives must have one list per query ({n_queries}), got {len(indptr) - 1}"
        )
    if len(ids) and (ids.min() < 0 or ids.max() >= n_corpus):
        bad = ids[(ids < 0) | (ids >= n_corpus)][0]
        raise InvalidArgumentError(
            f"positive id {bad} is out of range for a corpus of {n_corpus} rows"
        )
    if np.any(np.diff(indptr) < 0) or indptr[0] != 0 or indptr[-1] != len(ids):
        raise InvalidArgumentError("positives indptr must be non-decreasing from 0 to len(ids)")
    rows = np.repeat(np.arange(n_queries), np.diff(indptr))
    return _pairs_to_csr(rows, ids, n_queries)


def prepare(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    positives: IdsLike | str | os.PathLike[str],
    *,
    duplicates: Duplicates = "auto",
    corpus_texts: Sequence[str] | None = None,
    query_dup_threshold: float | None = None,
    threads: int | None = None,
) -> Prepared:
    """Positives (with those of linked queries) and exclusions (with duplicate-group members)."""
    n_queries, n_corpus = rows_of(queries), rows_of(corpus)
    pos_indptr, pos_ids = _positives_csr(positives, n_queries, n_corpus)
    linked = 0
    if query_dup_threshold is not None:
        components = _core.link_queries(queries, float(query_dup_threshold), threads=threads)
        components = components.astype(np.int64)
        linked = int((np.bincount(components, minlength=n_queries)[components] > 1).sum())
        # Each query gets the positives of its whole component.
        pos_rows = np.repeat(np.arange(n_queries), np.diff(pos_indptr))
        comp_indptr, comp_ids = _pairs_to_csr(components[pos_rows], pos_ids, n_queries)
        counts, shared = _gather_lists(comp_indptr, comp_ids, components)
        pos_indptr, pos_ids = _pairs_to_csr(
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
        counts, members = _gather_lists(group_indptr, order, dense[pos_ids])
        pos_rows = np.repeat(np.arange(n_queries), np.diff(pos_indptr))
        ex_indptr, ex_ids = _pairs_to_csr(
            np.concatenate([pos_rows, np.repeat(pos_rows, counts)]),
            np.concatenate([pos_ids, members]),
            n_queries,
        )
    return Prepared(pos_indptr, pos_ids, ex_indptr, ex_ids, groups, linked)


def _duplicate_groups(
    corpus: Embeddings | np.ndarray,
    duplicates: Duplicates,
    corpus_texts: Sequence[str] | None,
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
        if len(corpus_texts) != n_corpus:
            raise InvalidArgumentError(
                f"corpus_texts has {len(corpus_texts)} texts for {n_corpus} corpus rows"
            )
        return _hash_groups(corpus_texts)
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
) -> dict[str, np.ndarray]:
    """The core call for queries whose lists are ``prepared`` (raw arrays, no report)."""
    with read_only(queries, corpus), progress_callback(progress, "mine", unit="row") as cb:
        return dict(
            _core.mine(
                queries,
                corpus,
                *prepared.id_lists(),
                **options.core_kwargs(),
                groups=prepared.groups,
                query_offset=query_offset,
                threads=threads,
                progress=cb,
            )
        )


def assemble(
    prepared: Prepared, options: MiningOptions, parts: Sequence[dict[str, np.ndarray]]
) -> MiningResult:
    """A :class:`MiningResult` from the core outputs of consecutive query chunks."""

    def cat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])

    offsets = np.cumsum([0] + [len(p["found"]) for p in parts[:-1]])
    removed_counts = np.concatenate([p["removed_counts"] for p in parts]).sum(axis=0)
    removed: dict[str, np.ndarray] = {
        "query": np.concatenate(
            [p["removed_query"] + off for p, off in zip(parts, offsets)]
        ).astype(np.int64),
        "id": cat("removed_id").astype(np.int64),
        "score": cat("removed_score").astype(np.float32),
        "filter": cat("removed_filter").astype(np.uint8),
    }
    found = cat("found")
    negative_scores = cat("negative_scores")
    positive_scores = cat("positive_scores")
    report = _report(
        n_queries=len(found),
        options=options,
        positives=len(prepared.pos_ids),
        excluded_duplicates=len(prepared.ex_ids) - len(prepared.pos_ids),
        linked=prepared.linked,
        found=found,
        negative_scores=negative_scores,
        positive_scores=positive_scores,
        removed=removed,
        removed_counts=removed_counts,
    )
    return MiningResult(
        negative_ids=cat("negative_ids"),
        negative_scores=negative_scores,
        positive_indptr=prepared.pos_indptr,
        positive_ids=prepared.pos_ids,
        positive_scores=positive_scores,
        removed=removed,
        report=report,
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
    corpus_texts: Sequence[str] | None = None,
    query_dup_threshold: float | None = None,
    sampling_strategy: SamplingStrategy = "top",
    simans_a: float = 1.0,
    simans_b: float = 0.0,
    seed: int = 0,
    max_depth: int | None = None,
    record_removed: int | None = 64,
    backend: Literal["exact", "hnsw"] = "exact",
    target_recall: float = 0.95,
    hnsw_path: str | os.PathLike[str] | None = None,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 200,
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
        target_recall: hnsw: ``ef`` is raised until the graph's recall against exact search
            on 200 sampled queries reaches this, in ``(0, 1]``; the report has the recall.
        hnsw_path: hnsw: where to save / reuse the index (default: beside a corpus file;
            an in-memory corpus gets an in-memory index unless this is given).
        hnsw_m, hnsw_ef_construction: hnsw: the graph's ``M`` and ``ef_construction``.

    Returns:
        A :class:`MiningResult`; ``result.report`` says what each filter removed and which
        queries got fewer negatives than asked for (only when the corpus ran out: the search
        goes as deep as the filters need).
    """
    options = MiningOptions(
        num_negatives=num_negatives,
        metric=metric,
        range_min=range_min,
        range_max=range_max,
        max_score=max_score,
        min_score=min_score,
        absolute_margin=absolute_margin,
        relative_margin=relative_margin,
        dup_threshold=dup_threshold,
        query_dup_threshold=query_dup_threshold,
        sampling_strategy=sampling_strategy,
        simans_a=simans_a,
        simans_b=simans_b,
        seed=seed,
        max_depth=max_depth,
        record_removed=record_removed,
    )
    threads = numbers.optional_count(threads, "threads")
    backend = numbers.choice(backend, "backend", ("exact", "hnsw"))  # type: ignore[assignment]
    target_recall = numbers.real(target_recall, "target_recall", low=0.0, high=1.0, low_open=True)
    from negmine import ann  # imported here: ann builds on this module

    hnsw_params = ann.HnswParams(options.metric, m=hnsw_m, ef_construction=hnsw_ef_construction)
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    if backend == "hnsw" and q.shape[1] != c.shape[1]:
        raise InvalidArgumentError(
            f"queries have dimension {q.shape[1]} but the corpus has {c.shape[1]}"
        )
    prepared = prepare(
        q,
        c,
        positives,
        duplicates=duplicates,
        corpus_texts=corpus_texts,
        query_dup_threshold=query_dup_threshold,
        threads=threads,
    )
    if backend == "hnsw":
        return _mine_hnsw(
            q,
            c,
            prepared,
            options,
            target_recall=float(target_recall),
            hnsw_path=hnsw_path,
            params=hnsw_params,
            threads=threads,
            progress=progress,
        )
    out = mine_prepared(q, c, prepared, options, threads=threads, progress=progress)
    return assemble(prepared, options, [out])


def _mine_hnsw(
    q: Embeddings | np.ndarray,
    c: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    *,
    target_recall: float,
    hnsw_path: str | os.PathLike[str] | None,
    params: ann.HnswParams,
    threads: int | None,
    progress: bool,
) -> MiningResult:
    """``mine(..., backend="hnsw")`` once the inputs are checked (see :mod:`negmine.ann`)."""
    from negmine import ann

    if rows_of(q) == 0 or rows_of(c) == 0:  # nothing to index or to ask: the exact path
        out = mine_prepared(q, c, prepared, options, threads=threads)
        result = assemble(prepared, options, [out])
        result.report.backend = "hnsw"
        result.report.target_recall = target_recall
        return result
    with read_only(q, c):
        ann.check_options(q, c, prepared, options)
        index, _, _ = ann.open_index(
            c,
            params,
            path=hnsw_path,
            threads=threads,
            progress=progress,
        )
        depth = ann.recall_depth(options, prepared, rows_of(c))
        ef, recall, sample = ann.tune_ef(
            index,
            q,
            c,
            metric=options.metric,
            k=depth,
            target_recall=target_recall,
            seed=options.seed,
            threads=threads,
        )
        if recall < target_recall:
            warnings.warn(
                f"the HNSW graph reaches recall@{depth} {recall:.4f} at ef {ef} (the cap), "
                f"below target_recall {target_recall}: build it with larger hnsw_m / "
                "hnsw_ef_construction, or use backend='exact'",
                RuntimeWarning,
                stacklevel=3,
            )
        parts, refetched, fallback = ann.mine_chunks(
            q,
            c,
            prepared,
            options,
            index=index,
            ef=ef,
            recall_depth=depth,
            threads=threads,
            progress=progress,
        )
    result = assemble(prepared, options, parts)
    report = result.report
    report.backend = "hnsw"
    report.recall = recall
    report.ef = ef
    report.target_recall = target_recall
    report.recall_depth = depth
    report.recall_sample = sample
    report.refetched = refetched
    report.exact_fallback = fallback
    return result


def _report(
    *,
    n_queries: int,
    options: MiningOptions,
    positives: int,
    excluded_duplicates: int,
    linked: int,
    found: np.ndarray,
    negative_scores: np.ndarray,
    positive_scores: np.ndarray,
    removed: dict[str, np.ndarray],
    removed_counts: np.ndarray,
) -> MiningReport:
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
    num_negatives = options.num_negatives
    return MiningReport(
        n_queries=n_queries,
        num_negatives=num_negatives,
        options=options.to_dict(),
        positives=positives,
        excluded_duplicates=excluded_duplicates,
        linked_queries=linked,
        removed={name: int(counts[i]) for i, name in enumerate(FILTERS)},
        negatives=int(found.sum()),
        starved=[int(x) for x in np.flatnonzero(found < num_negatives)],
        histogram_edges=[float(x) for x in edges],
        histograms=histograms,
    )
