"""One refresh of :class:`~negmine.torch.refresh.NegativeRefresher`, the step its schedule
starts: the embeddings of the model being trained, encoded into float16 files
(:func:`encode_rows`), mined in a :class:`MiningJob` (a background thread), and what is kept of
the mining in the refresh's folder (:func:`save_mined`, :func:`load_mined`: the result, the
clusters and the :class:`RefreshReport`). Also each refresh's seed (:func:`mining_seed`) and
the encoder of a sentence-transformers model. The public names are importable from
:mod:`negmine.torch.refresh` too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from negmine import _numbers, _ranks
from negmine._atomic import HashingWriter, atomic_write
from negmine._core import Embeddings
from negmine.cluster import kmeans
from negmine.embed import run_job
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.mine import mine
from negmine.options import OPTIONS, MiningOptions
from negmine.result import MiningResult
from negmine.store import cast_rows

Encoder = Callable[[torch.Tensor], Any]
"""``indices (int64 tensor on encode_device) -> embeddings`` (tensor or array, one row each)."""

# `mine`'s keyword arguments that a refresh passes on; `seed` is the refresher's own (each
# refresh mines with its own seed from the stream), the rest are the refresher's.
NOT_PASSED = ("queries", "corpus", "positives", "seed", "progress")
REPORT_FILE = "refresh.json"
"""The :class:`RefreshReport` of a refresh, as JSON in its folder."""
_FLOAT16 = np.dtype("<f2")


def mining_seed(seed: int, refresh: int) -> int:
    """The ``seed`` that refresh number ``refresh`` mines (and clusters) with: the first 8
    bytes, little-endian, of ``blake2b("negmine-refresh" + seed + refresh)`` (each as 8
    little-endian bytes). Every refresh gets its own seed, the same in every run."""
    seed = _numbers.seed(seed, "seed")
    refresh = _numbers.seed(refresh, "refresh")
    h = hashlib.blake2b(b"negmine-refresh", digest_size=8)
    h.update(seed.to_bytes(8, "little") + refresh.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little")


class SentenceTransformerEncoder:
    """``encode(indices)`` for a sentence-transformers model over a list of texts:
    ``model.encode([texts[i] for i in indices], ...)`` as float32 rows (normalised when
    ``normalize``), for :class:`~negmine.torch.refresh.NegativeRefresher`'s
    ``encode_queries`` / ``encode_corpus``.

    ``device`` is passed to ``model.encode`` (default: the model's own device); ``prompt``
    too when given (e.g. ``"query: "``)."""

    def __init__(
        self,
        model: Any,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        normalize: bool = True,
        prompt: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not callable(getattr(model, "encode", None)):
            raise InvalidTypeError(
                f"model must have an encode() method (a SentenceTransformer), got "
                f"{type(model).__name__}"
            )
        if isinstance(texts, (str, bytes)):
            raise InvalidTypeError("texts must be a sequence of strings, not a single string")
        self.texts = list(texts)
        for i, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise InvalidTypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
        self.model = model
        self.batch_size = _numbers.count(batch_size, "batch_size")
        self.normalize = bool(normalize)
        self.prompt = prompt
        self.device = None if device is None else str(device)

    def __len__(self) -> int:
        return len(self.texts)

    def __call__(self, indices: torch.Tensor) -> np.ndarray:
        chunk = [self.texts[i] for i in indices.tolist()]
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "show_progress_bar": False,
            "convert_to_numpy": True,
            "normalize_embeddings": self.normalize,
        }
        if self.prompt is not None:
            kwargs["prompt"] = self.prompt
        if self.device is not None:
            kwargs["device"] = self.device
        return np.asarray(self.model.encode(chunk, **kwargs), dtype=np.float32)


@dataclass(frozen=True)
class RefreshReport:
    """What a refresh serves that training should not miss
    (:attr:`~negmine.torch.refresh.NegativeRefresher.report`; saved as ``refresh.json`` in the
    refresh's folder). Any count above zero is logged as a warning when the refresh goes
    live."""

    refresh: int
    zero_query_rows: int
    """Query embeddings of zero norm: the encoder returned all-zero rows (a collapsed model
    returns nothing else). Under cosine they score 0 against everything."""
    zero_corpus_rows: int
    """Corpus embeddings of zero norm, likewise."""
    empty_queries: int
    """Queries served no negative at all (every id ``-1``): they train on in-batch negatives
    only."""


Mined = tuple[MiningResult, "np.ndarray | None", RefreshReport]
"""What a refresh serves: its result, its clusters (``None`` without ``n_clusters``) and its
report."""


class MiningJob:
    """One refresh being mined in the background: its thread, and its result or error."""

    def __init__(self, refresh: int, work: Callable[[], Mined]):
        self.refresh = refresh
        self.result: Mined | None = None
        self.error: BaseException | None = None
        self._work = work
        self.thread = threading.Thread(
            target=self._run, name=f"negmine-refresh-{refresh}", daemon=True
        )

    def _run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as e:  # re-raised in the training thread at the swap
            self.error = e

    def start(self, background: bool) -> None:
        if background:
            self.thread.start()
        else:
            self._run()

    def wait(self) -> Mined:
        if self.thread.ident is not None:
            self.thread.join()
        if self.error is not None:
            raise RuntimeError(
                f"refresh {self.refresh} failed while mining: "
                f"{type(self.error).__name__}: {self.error}"
            ) from self.error
        assert self.result is not None
        return self.result


def mining_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` checked to be keyword arguments of :func:`negmine.mine` (the core checks
    the values of those it declares now, the rest are checked at the first mining)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidTypeError(
            f"options must be a mapping of negmine.mine keyword arguments, got "
            f"{type(options).__name__}"
        )
    allowed = [p for p in inspect.signature(mine).parameters if p not in NOT_PASSED]
    for name in options:
        if name == "seed":
            raise InvalidArgumentError(
                "options must not hold 'seed': pass seed= to the refresher (each refresh mines "
                "with its own seed from it, see mining_seed)"
            )
        if name not in allowed:
            raise InvalidTypeError(
                f"unknown mining option {name!r}; the options are {', '.join(allowed)}"
            )
    MiningOptions(**{k: v for k, v in options.items() if k in OPTIONS})
    return dict(options)


def encode_rows(
    encoder: Encoder,
    n_rows: int,
    path: Path,
    what: str,
    *,
    chunk_size: int,
    device: torch.device | str,
) -> None:
    """``encoder`` over ``0..n_rows`` in chunks of ``chunk_size`` (index tensors on
    ``device``), into a float16 ``.npy`` at ``path``, as the job of
    :func:`negmine.embed_texts` writes (on every rank of a process group, chunk ``i`` on rank
    ``i % world``; rank 0 renames the file into place once all are done): the file made at
    full size in a hidden partial directory once the first chunk gives the width, each chunk
    written at its rows with ``pwrite`` and synced. Never through a writable map: a page the
    file system cannot back (disk full) would arrive as SIGBUS and kill the process instead
    of raising ``OSError``."""
    if n_rows == 0:
        raise InvalidArgumentError(f"no {what} to encode")

    def produce(pending: Sequence[tuple[int, int]]) -> Iterator[tuple[int, np.ndarray]]:
        with torch.no_grad():
            for start, stop in pending:
                idx = torch.arange(start, stop, dtype=torch.int64, device=device)
                rows = _rows(encoder(idx), stop - start, what, start)
                yield start, cast_rows(rows, _FLOAT16, f"encode_{what}'s {what} row", start)

    manifest = {"format": 1, "rows": n_rows, "chunk_size": chunk_size, "what": what}
    run_job(
        path,
        manifest,
        rows=n_rows,
        chunk_size=chunk_size,
        dtype=_FLOAT16,
        ranks=_ranks.current(),
        produce=produce,
        progress=False,
        description=f"encode {what}",
        unit="row",
    )


def save_mined(
    folder: Path,
    refresh: int,
    queries: Embeddings,
    corpus: Embeddings,
    result: MiningResult,
    *,
    n_clusters: int | None,
    seed: int,
    chunk_size: int,
) -> Mined:
    """Refresh ``refresh``'s ``result``, mined from ``queries`` and ``corpus``, with its
    clusters (with ``n_clusters``: :func:`negmine.kmeans` of the queries, ``seed``) and its
    report, each saved into ``folder`` (the result last)."""
    clusters = None
    if n_clusters is not None:
        _, clusters, _ = kmeans(queries, n_clusters, seed=seed)
        with atomic_write(folder / "clusters.npy") as f:
            # through write(): numpy's own path for a real file loses the errno
            np.save(HashingWriter(f), clusters)
    report = RefreshReport(
        refresh=refresh,
        zero_query_rows=_zero_rows(queries, chunk_size),
        zero_corpus_rows=_zero_rows(corpus, chunk_size),
        empty_queries=int(np.count_nonzero((result.negative_ids < 0).all(axis=1))),
    )
    with atomic_write(folder / REPORT_FILE) as f:
        f.write(json.dumps(dataclasses.asdict(report)).encode())
    result.save(folder / "result")
    return result, clusters, report


def load_mined(folder: Path, clustered: bool) -> Mined:
    """What :func:`save_mined` saved into ``folder`` (the clusters if ``clustered``)."""
    result = MiningResult.load(folder / "result")
    clusters = np.load(folder / "clusters.npy") if clustered else None
    saved = json.loads((folder / REPORT_FILE).read_text())
    return result, clusters, RefreshReport(**saved)


def problems(report: RefreshReport, n_queries: int, n_corpus: int) -> str:
    """What ``report`` counts that training should not miss, in words ("" if nothing)."""
    parts = []
    zero = [
        f"{count:,} of {total:,} {side} embeddings"
        for count, total, side in (
            (report.zero_query_rows, n_queries, "query"),
            (report.zero_corpus_rows, n_corpus, "corpus"),
        )
        if count
    ]
    if zero:
        parts.append(
            f"{' and '.join(zero)} have zero norm (the encoder returned all-zero rows: a "
            "collapsed model?)"
        )
    if report.empty_queries:
        parts.append(f"{report.empty_queries:,} of {n_queries:,} queries are served no negative")
    return "; ".join(parts)


def _zero_rows(matrix: Embeddings, chunk: int) -> int:
    """How many rows of ``matrix`` are all zero (read ``chunk`` rows at a time)."""
    rows = np.asarray(matrix)
    return sum(
        int(np.count_nonzero(~rows[a : a + chunk].any(axis=1))) for a in range(0, len(rows), chunk)
    )


def _rows(value: Any, expected: int, what: str, start: int) -> np.ndarray:
    """An encoder's output as a float32 ``[expected, d]`` array of finite values."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    try:
        rows = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(
            f"encode_{what} must return a tensor or array of embeddings, got "
            f"{type(value).__name__}: {e}"
        ) from None
    if rows.ndim != 2 or rows.shape[0] != expected:
        raise InvalidArgumentError(
            f"encode_{what} returned shape {rows.shape} for {expected} rows (expected one "
            "embedding row per index)"
        )
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = start + int(np.flatnonzero(~finite)[0])
        raise InvalidArgumentError(f"encode_{what} returned NaN or Inf for {what} row {bad}")
    return rows
