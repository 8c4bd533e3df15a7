"""``mine(..., backend="torch")``: candidates from a low-precision torch matmul (on a GPU, or on
the CPU), rescored exactly by the core, so the result is bit for bit ``backend="exact"``'s.

The core (``negmine.mine_prepared(..., fetch=...)``) asks a :class:`TorchCandidates` source (opened
by :mod:`negmine.sources.torch`) for each
query's candidates at a depth ``k``; it drops duplicates and excluded ids, rescores the rest with
its own f32 chain and keeps the best ``k``. So the result is exact as soon as each query's
candidates are a *superset* of its exact top ``k`` rows among those it does not exclude. This
module proves that superset per query with an error bound, the way the int8 pre-scoring
(``rust/core/src/quant.rs``) does.

**Rows.** ``x`` is a row as the core scores it: the stored row (f16 widened exactly) for
``dot``; for ``cosine`` the core's ``pack::normalize``, ``fl32(x * inv)`` with ``inv`` the f64
reciprocal of the norm (its sum of squares is f64, so ``inv`` errs relatively by at most
``(d + 8) 2^-53``). Here each row is converted on the CPU in f64: ``y = x`` (dot) or
``y = x / ||x||`` (cosine; a zero row stays zero, as in the core), then multiplied by a power of
two ``2^e`` that puts its norm in ``(2^6, 2^7]`` (so every dot of two rows, at most ``2^14``,
fits f16, and the scaling is exact) and rounded to the low dtype: ``Y~ = low(2^e y)``,
``y~ = 2^-e Y~``, known exactly. Per row, in f64 with a relative margin ``1 + 2^-30`` and
rounded up:

- ``r = ||x - y~||``, bounded by ``||y - y~|| + rho`` where ``rho = 0`` for dot and, for cosine,
  ``rho = 2^-24 + (d + 20) 2^-52`` bounds ``||x - y||`` (one f32 rounding per coordinate of a
  unit row, plus ``inv``'s error);
- ``||x|| <= ||y|| + rho`` and ``||y~||``.

**Bound.** The device computes ``A = 2^-(e_q + e_c) out`` where ``out`` is the matmul of the
scaled low rows (``Y~_q . Y~_c``), unscaled in f64 (exact: powers of two, no under/overflow in
f64). The core's score is ``S``, the f32 fused multiply-add chain of ``x_q . x_c``. Then::

    |S - x_q.x_c|          <= gamma_d ||x_q|| ||x_c||          (the core's chain, u = 2^-24)
                              + (d + sqrt(d) (||x_q|| + ||x_c||)) 2^-123   (its underflow)
    |x_q.x_c - y~_q.y~_c|  <= r_q ||x_c|| + ||y~_q|| r_c        (Cauchy-Schwarz)
    |A - y~_q.y~_c|        <= gamma'_d ||y~_q|| ||y~_c||        (the matmul's accumulation)
                              + u_o (1 + gamma'_d) ||y~_q|| ||y~_c||   (its output rounding)
                              + (a_o + d 2^-125) 2^-(e_q + e_c)       (subnormals, flushed or not)

with ``gamma_n = n u / (1 - n u)``. The chain's underflow term is the int8 bound's ``U``
(``rust/core/src/quant.rs``): a step that underflows errs absolutely, not relatively (up to
``2^-126`` where the CPU flushes subnormals to zero, and inputs read as zero change a product
by ``2^-126`` times the other factor), so rows near the subnormal range, whose f32 scores
round or flush to equal values that their low-precision products still order, are not proven
until every row that can tie is a candidate. Their sum is the pair's bound; a query's bound
``E_q`` takes each corpus term at its maximum over the corpus (``max ||x_c||``, ``max r_c``,
``max ||y~_c||``, ``max 2^-e_c``), times ``1 + 2^-20`` for the f64 arithmetic of the bound
itself.

**What is assumed of the backend** (torch's matmul for f16 / bf16 inputs): every product of two
low-precision values is exact in f32 (11 + 11 or 8 + 8 significand bits), and products are
summed in f32 in any order with each addition erring by at most ``2^-22`` relatively
(``gamma'`` uses ``u = 2^-22``, four times round-to-nearest's: it covers accumulators that align
a block of products to the largest and truncate, as NVIDIA's tensor cores do (Fasi et al.,
"Numerical behavior of NVIDIA tensor cores", 2021): a block of ``b`` products added to the
running sum loses at most ``(b + 1) 2^-23 <= 2 b 2^-23`` of their absolute sum), subnormal
products or sums possibly flushed to zero (the ``d 2^-125`` term). The output is f32 where
torch offers ``mm(..., out_dtype=float32)`` (CUDA), else the input dtype, whose rounding is the
``u_o`` term (``2^-11`` f16, ``2^-8`` bf16) and ``a_o`` its smallest subnormal's half.
Reduced-precision reductions
(``torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction`` and the bf16 one) are
switched off around every matmul and restored after. ``tests/test_torch_candidates.py`` checks
``|A - S| <= E_q`` for every pair on random data with the backend at hand (CPU torch in CI).

**Selection.** For a query with ``n_ex`` excluded ids, torch keeps a running top ``m = k + n_ex +
g`` (``g`` starts at ``slack``) of ``A`` over corpus tiles. Every row left out has ``A <=
A_last``, the smallest kept; after dropping excluded ids, let ``A_k`` be the ``k``-th best kept.
If ``A_k - A_last > 2 E_q``, every row left out scores ``S <= A_last + E_q < A_k - E_q``, below
each of ``k`` kept eligible rows, so the exact top ``k`` (ties by id included) is among the kept
rows: proven. A query that is not proven gets ``g`` doubled and is scanned again (a pass over the
corpus for the failing queries only) until it is proven or ``m`` covers the corpus.

**Memory.** The corpus is streamed in tiles of ``tile_rows`` rows from the mapped file (pinned
host buffers, two in flight, copied with ``non_blocking`` on CUDA); queries are multiplied
:data:`QUERY_ROWS` at a time, and a scan holds the running top ``m`` of a group of queries sized
to :data:`TOPK_BUDGET` bytes. So the device holds at most: those lists, the queries of one
core call (at most ``mine``'s ``SOURCE_CHUNK`` rows in the low dtype), two tiles, and
``QUERY_ROWS x tile_rows`` scores (about 20 bytes each while they are unscaled and selected):
bounded by the tile and chunk sizes, not by the corpus size. When the device runs out,
:class:`DeviceMemoryError` names a smaller ``tile_rows``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from negmine.errors import DeviceMemoryError, InvalidArgumentError, InvalidTypeError
from negmine.report import TorchReport
from negmine.sources import ExactPathDecides, candidate_csr

QUERY_ROWS = 1024
"""Queries multiplied against a corpus tile at once."""
TOPK_BUDGET = 1 << 30
"""Device bytes for the running top ``m`` lists of one scan (values f64 and ids int64, twice
while a tile is merged); more queries than fit are scanned in several groups."""
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
"""The low-precision dtypes of ``torch_dtype``."""

_MARGIN = 1.0 + 2.0**-30
_BOUND_MARGIN = 1.0 + 2.0**-20
_NORM_TARGET = 7  # scaled rows have their norm in (2^6, 2^7]
_ROUNDING = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 0.0}
_HALF_SUBNORMAL = {torch.float16: 2.0**-25, torch.bfloat16: 2.0**-134, torch.float32: 2.0**-150}


def score_limit(dim: int) -> float:
    """The core's ``metric::score_limit``: the largest product of two norms whose f32 score
    is certain to be finite."""
    return float(np.finfo(np.float32).max) / 2.0 / math.exp(dim * 2.0**-23)


@dataclass
class _Rows:
    """Rows converted for the device (see the module docstring): the scaled low-precision rows
    and, per row, ``2^-e``, ``||x||`` (upper bound), ``r`` and ``||y~||``."""

    low: torch.Tensor
    unscale: np.ndarray
    norm: np.ndarray
    residual: np.ndarray
    low_norm: np.ndarray


@dataclass
class _CorpusMax:
    """The corpus maxima a query's bound takes."""

    norm: float = 0.0
    residual: float = 0.0
    low_norm: float = 0.0
    unscale: float = 0.0

    def update(self, rows: _Rows) -> None:
        if len(rows.norm):
            self.norm = max(self.norm, float(rows.norm.max()))
            self.residual = max(self.residual, float(rows.residual.max()))
            self.low_norm = max(self.low_norm, float(rows.low_norm.max()))
            self.unscale = max(self.unscale, float(rows.unscale.max()))


def resolve_device(device: object) -> torch.device:
    """``device`` (a string or ``torch.device``) checked: CUDA must be available."""
    if not isinstance(device, (str, torch.device)):
        raise InvalidTypeError(
            f"device must be a string or torch.device, got {type(device).__name__} {device!r}"
        )
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise InvalidArgumentError(f"device {device!r} is not a torch device: {e}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(
            f"device {device!r}: backend='torch' runs on 'cpu' or 'cuda' (it needs float64 "
            "for the bound's bookkeeping)"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {device!r} needs CUDA, but CUDA is not available here (no GPU, driver "
                "or CUDA build of torch): pass device='cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise InvalidArgumentError(
                f"device {device!r} does not exist: CUDA has {count} device(s)"
            )
    return resolved


def convert(block: np.ndarray, normalize: bool, dtype: torch.dtype) -> _Rows:
    """Rows of ``block`` (f16/f32) converted for the device, with their norms and residuals
    (the module docstring's ``y``, ``Y~``, ``2^-e``, ``||x||``, ``r``, ``||y~||``);
    :class:`ExactPathDecides` for a row that is not finite."""
    y = np.asarray(block, dtype=np.float64)
    bad = ~np.isfinite(y).all(axis=1)
    if bad.any():
        raise ExactPathDecides
    dim = y.shape[1]
    norm = np.sqrt(np.einsum("ij,ij->i", y, y))
    rho = 0.0
    if normalize:
        nonzero = norm > 0
        y = y / np.where(nonzero, norm, 1.0)[:, None]
        rho = 2.0**-24 + (dim + 20) * 2.0**-52
        norm = np.where(nonzero, 1.0, 0.0)
    # 2^e puts the norm in (2^6, 2^7]: frexp gives norm = f 2^x with f in [0.5, 1).
    _, exponent = np.frexp(np.where(norm > 0, norm, 1.0))
    e = (_NORM_TARGET - exponent).astype(np.int64)
    scaled = np.ldexp(y, e[:, None])
    low = torch.from_numpy(scaled).to(dtype)
    back = np.ldexp(low.to(torch.float64).numpy(), -e[:, None])
    diff = y - back
    residual = np.sqrt(np.einsum("ij,ij->i", diff, diff)) * _MARGIN
    low_norm = np.sqrt(np.einsum("ij,ij->i", back, back)) * _MARGIN
    if normalize:
        residual = residual + np.where(norm > 0, rho, 0.0)
    return _Rows(
        low=low,
        unscale=np.ldexp(1.0, -e),
        norm=norm * _MARGIN + np.where(norm > 0, rho, 0.0),
        residual=residual,
        low_norm=low_norm,
    )


def _gamma(dim: int, unit: float) -> float:
    nu = dim * unit
    if nu >= 0.5:
        raise InvalidArgumentError(f"dimension {dim} is too large for the float32 error bound")
    return nu / (1.0 - nu)


def error_bounds(
    queries: _Rows, corpus: _CorpusMax, dim: int, out_dtype: torch.dtype
) -> np.ndarray:
    """``E_q`` per query: ``|A - S| <= E_q`` for the query against every corpus row (the
    module docstring's bound, each corpus term at its corpus maximum)."""
    exact = _gamma(dim, 2.0**-24)
    device = _gamma(dim, 2.0**-22)
    device_out = device + _ROUNDING[out_dtype] * (1.0 + device)
    absolute = _HALF_SUBNORMAL[out_dtype] + dim * 2.0**-125
    underflow = (dim + math.sqrt(dim) * (queries.norm + corpus.norm)) * 2.0**-123
    bound = (
        queries.residual * corpus.norm
        + queries.low_norm * corpus.residual
        + exact * queries.norm * corpus.norm
        + underflow
        + device_out * queries.low_norm * corpus.low_norm
        + absolute * queries.unscale * corpus.unscale
    )
    return np.asarray(bound * _BOUND_MARGIN, dtype=np.float64)


class _ExactPrecision:
    """Reduced-precision reductions off for the matmuls inside, restored after."""

    def __enter__(self) -> None:
        matmul = torch.backends.cuda.matmul
        self.saved = (
            matmul.allow_fp16_reduced_precision_reduction,
            matmul.allow_bf16_reduced_precision_reduction,
        )
        matmul.allow_fp16_reduced_precision_reduction = False
        matmul.allow_bf16_reduced_precision_reduction = False

    def __exit__(self, *exc: object) -> None:
        matmul = torch.backends.cuda.matmul
        (
            matmul.allow_fp16_reduced_precision_reduction,
            matmul.allow_bf16_reduced_precision_reduction,
        ) = self.saved


def _is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


class TorchCandidates:
    """The candidate source of one mining call: ``fetch(rows, depth) -> (indptr, ids)`` for
    ``_core.mine(..., fetch=...)`` (see the module docstring). ``queries``: the call's query
    rows; ``excluded(row)``: the sorted excluded ids of that row; ``stats`` is updated as it
    goes."""

    def __init__(
        self,
        queries: np.ndarray,
        corpus: np.ndarray,
        excluded: Callable[[int], np.ndarray],
        *,
        normalize: bool,
        device: torch.device,
        dtype: torch.dtype,
        tile_rows: int,
        slack: int,
        stats: TorchReport,
    ) -> None:
        self.corpus = corpus
        self.excluded = excluded
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.tile_rows = tile_rows
        self.slack = slack
        self.stats = stats
        self.queries = convert(queries, normalize, dtype)
        self.dim = int(corpus.shape[1])
        self.n = int(corpus.shape[0])
        self.corpus_max: _CorpusMax | None = None
        self.out_dtype: torch.dtype | None = None
        # torch.mm(..., out_dtype=float32) exists for CUDA only (torch >= 2.8).
        self.f32_output = device.type == "cuda"

    # --- the source ---------------------------------------------------------------------------

    def __call__(self, rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        excluded = [self.excluded(int(r)) for r in rows]
        n_ex = np.array([len(x) for x in excluded], dtype=np.int64)
        slack = np.full(len(rows), self.slack, dtype=np.int64)
        lists: list[np.ndarray] = [np.empty(0, np.int64)] * len(rows)
        pending = np.arange(len(rows))
        first = True
        while len(pending):
            want = np.minimum(depth + n_ex[pending] + slack[pending], self.n)
            whole = want >= self.n
            for i in pending[whole]:  # the whole corpus: nothing to prove
                lists[i] = np.setdiff1d(np.arange(self.n, dtype=np.int64), excluded[i])
            pending, want = pending[~whole], want[~whole]
            if not len(pending):
                break
            if not first:
                self.stats.rescanned_queries += len(pending)
            values, ids = self._top(rows[pending], want, extra=not first)
            bounds = error_bounds(
                self._query_rows(rows[pending]), self._max(), self.dim, self._out()
            )
            failed = []
            for j, i in enumerate(pending):
                m = int(want[j])
                v, c = values[j][:m], ids[j][:m]
                keep = ~np.isin(c, excluded[i], assume_unique=False)
                eligible = v[keep]
                if len(eligible) >= depth and eligible[depth - 1] - v[m - 1] > 2 * bounds[j]:
                    lists[i] = c[keep]
                else:
                    failed.append(i)
            pending = np.array(failed, dtype=np.int64)
            slack[pending] *= 2
            first = False
        if not self.normalize:
            self._check_dot_range()
        indptr, found = candidate_csr(lists)
        counts = np.diff(indptr)
        self.stats.fetched_queries += len(rows)
        self.stats.candidates += int(counts.sum())
        self.stats.max_candidates = max(self.stats.max_candidates, int(counts.max(initial=0)))
        return indptr, found

    def _check_dot_range(self) -> None:
        """:class:`ExactPathDecides` when some dot score could overflow float32: the exact
        search checks every pair, the core's rescoring only the candidates."""
        if self.corpus_max is None:  # every query took the whole corpus: no scan ran
            maxima = _CorpusMax()
            for a in range(0, self.n, self.tile_rows):
                maxima.update(convert(self.corpus[a : a + self.tile_rows], False, self.dtype))
            self.corpus_max = maxima
        largest = float(self.queries.norm.max(initial=0.0)) * self.corpus_max.norm
        if largest >= score_limit(self.dim):
            raise ExactPathDecides

    def _query_rows(self, rows: np.ndarray) -> _Rows:
        q = self.queries
        return _Rows(q.low[rows], q.unscale[rows], q.norm[rows], q.residual[rows], q.low_norm[rows])

    def _max(self) -> _CorpusMax:
        assert self.corpus_max is not None, "the bound is taken after a scan"
        return self.corpus_max

    def _out(self) -> torch.dtype:
        assert self.out_dtype is not None, "the bound is taken after a scan"
        return self.out_dtype

    # --- scans --------------------------------------------------------------------------------

    def _top(
        self, rows: np.ndarray, want: np.ndarray, *, extra: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each row's top ``want`` approximate scores (descending, f64) and their ids, from
        scans of the corpus over groups of queries that fit :data:`TOPK_BUDGET`."""
        order = np.argsort(want, kind="stable")
        values: list[np.ndarray] = [np.empty(0)] * len(rows)
        ids: list[np.ndarray] = [np.empty(0, np.int64)] * len(rows)
        a = 0
        while a < len(order):
            # Queries in ascending m: a group grows while its widest lists fit the budget.
            b = a + 1
            while b < len(order) and (b - a + 1) * int(want[order[b]]) * 32 <= TOPK_BUDGET:
                b += 1
            group = order[a:b]
            widest = int(want[order[b - 1]])
            try:
                v, c = self._scan(rows[group], widest)
            except Exception as e:
                if _is_oom(e):
                    raise self._oom_error() from e
                raise
            self.stats.scans += 1
            self.stats.extra_scans += int(extra)
            for j, g in enumerate(group):
                values[g] = v[j][: want[g]]
                ids[g] = c[j][: want[g]]
            a = b
        return values, ids

    def _oom_error(self) -> DeviceMemoryError:
        smaller = max(1, self.tile_rows // 4)
        return DeviceMemoryError(
            f"the torch device {self.device} ran out of memory with tile_rows={self.tile_rows} "
            f"({QUERY_ROWS} queries x {self.tile_rows} rows per matmul): pass "
            f"tile_rows={smaller} (or free device memory)"
        )

    def _tiles(self) -> Iterator[tuple[int, torch.Tensor, np.ndarray]]:
        """``(first row, tile on the device, its rows' 2^-e)`` for each tile of the corpus,
        converted on the CPU and copied through two pinned buffers on CUDA; the corpus maxima
        are gathered on the way."""
        maxima = _CorpusMax()
        cuda = self.device.type == "cuda"
        pinned: list[torch.Tensor] = []
        copied: list[Any] = [None, None]
        if cuda:
            pinned = [
                torch.empty((self.tile_rows, self.dim), dtype=self.dtype, pin_memory=True)
                for _ in range(2)
            ]
        for t, a in enumerate(range(0, self.n, self.tile_rows)):
            b = min(self.n, a + self.tile_rows)
            rows = convert(self.corpus[a:b], self.normalize, self.dtype)
            maxima.update(rows)
            if cuda:
                slot = t % 2
                if copied[slot] is not None:
                    copied[slot].synchronize()  # the buffer's previous copy is done
                buffer = pinned[slot][: b - a]
                buffer.copy_(rows.low)
                tile = buffer.to(self.device, non_blocking=True)
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
                copied[slot] = event
            else:
                tile = rows.low
            yield a, tile, rows.unscale
        self.corpus_max = maxima

    def _matmul(self, q: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
        """``q @ tile.T`` with f32 accumulation, with an f32 output where torch offers it."""
        with _ExactPrecision():
            if self.f32_output:
                try:
                    out = torch.mm(q, tile.T, out_dtype=torch.float32)
                except (TypeError, RuntimeError) as e:
                    if _is_oom(e):
                        raise
                    self.f32_output = False  # an older torch: the output's rounding is bounded
                    out = q @ tile.T
            else:
                out = q @ tile.T
        self.out_dtype = out.dtype
        return out

    def _scan(self, rows: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """One pass over the corpus: the top ``m`` approximate scores of ``rows`` (descending)
        and their ids."""
        device = self.device
        q_low = self.queries.low[rows].to(device)
        q_unscale = torch.from_numpy(self.queries.unscale[rows]).to(device)
        best = torch.full((len(rows), m), -math.inf, dtype=torch.float64, device=device)
        best_ids = torch.full((len(rows), m), -1, dtype=torch.int64, device=device)
        for a, tile, tile_unscale in self._tiles():
            unscale = torch.from_numpy(tile_unscale).to(device)
            take = min(m, len(tile))
            for s in range(0, len(rows), QUERY_ROWS):
                e = min(len(rows), s + QUERY_ROWS)
                approx = self._matmul(q_low[s:e], tile).to(torch.float64)
                approx *= q_unscale[s:e, None]
                approx *= unscale[None, :]
                v, i = torch.topk(approx, take, dim=1)
                merged = torch.cat([best[s:e], v], dim=1)
                merged_ids = torch.cat([best_ids[s:e], i + a], dim=1)
                top, at = torch.topk(merged, m, dim=1)
                best[s:e] = top
                best_ids[s:e] = torch.gather(merged_ids, 1, at)
        return best.cpu().numpy(), best_ids.cpu().numpy()
