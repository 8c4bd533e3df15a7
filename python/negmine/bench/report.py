"""The tables ``negmine bench`` prints: the search table, the peers not run and why, the
mining table and the machine it ran on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from negmine.bench.machine import machine_lines
from negmine.bench.mining import MiningRow
from negmine.bench.settings import MINE_NEGATIVES, MINE_RELATIVE_MARGIN
from negmine.bench.timing import Measurement

SEARCH_HEAD = (
    "method",
    "corpus",
    "k",
    "best s",
    "median s",
    "spread",
    "queries/s",
    "negmine speed-up",
    "recall@k",
)
MINING_HEAD = ("method", "best s", "median s", "spread", "negmine speed-up", "rows", "same")


def render(
    measurements: Sequence[Measurement],
    info: dict[str, Any],
    description: str,
    shape: tuple[int, int, int],
    threads: int,
    repeats: int,
    not_run: Sequence[str] = (),
    mining: Sequence[MiningRow] = (),
) -> str:
    """The table of ``negmine bench``, the peers not run and why, the mining table, the
    machine it ran on."""
    q, n, d = shape
    lines = [
        f"Exact top-k, {q:,} queries x {n:,} corpus rows x d = {d} ({description}), "
        f"{threads} threads for every method; the best and the median of up to {repeats} timed "
        "runs after a warm-up (at least 3; fewer past a few seconds), 'spread' = slowest / "
        "fastest - 1.",
        "'negmine speed-up' = the method's best / negmine's (2.00x: negmine takes half the "
        "time); recall@k against negmine's exact ids. Each peer's note names the BLAS kernels "
        "it ran."
        + (
            " faiss runs as shipped and, in a subprocess, with OPENBLAS_CORETYPE set for this "
            "CPU (its bundled OpenBLAS takes some CPUs for an older core)."
            if any(m.method.name.startswith("faiss ") for m in measurements)
            else ""
        ),
        "",
        *_table(SEARCH_HEAD, [_search_row(m, q) for m in measurements], names=2),
    ]
    lines += [f"- {text}" for text in not_run]
    lines += render_mining(mining, q, repeats)
    return "\n".join([*lines, "", *machine_lines(info)]) + "\n"


def render_mining(rows: Sequence[MiningRow], q: int, repeats: int) -> list[str]:
    """The mining table's lines."""
    if not rows:
        return []
    ref = rows[0].timing.best
    cells = [
        (
            r.name,
            f"{r.timing.best:.3f}",
            f"{r.timing.median:.3f}",
            f"{r.timing.spread:.0%}",
            f"{r.timing.best / ref:.2f}x",
            f"{r.rows:,}",
            "-" if r.same is None else f"{r.same:.4f}",
            r.note,
        )
        for r in rows
    ]
    return [
        "",
        f"Mining {MINE_NEGATIVES} hard negatives for {q:,} queries (relative_margin="
        f"{MINE_RELATIVE_MARGIN}, top; each positive is the query's nearest row) on the same "
        "embeddings, injected into sentence-transformers' cache (encoding excluded); best and "
        f"median of up to {repeats} runs. 'rows': queries with every negative; 'same': rows "
        "whose negatives equal the first row's.",
        "",
        *_table(MINING_HEAD, cells, names=1),
    ]


def _search_row(m: Measurement, q: int) -> tuple[str, ...]:
    """One row of the search table, its note last."""
    return (
        m.method.name,
        m.method.corpus,
        str(m.k),
        f"{m.seconds:.3f}",
        f"{m.timing.median:.3f}",
        f"{m.timing.spread:.0%}",
        f"{q / m.seconds:,.0f}",
        f"{m.seconds / m.reference_seconds:.2f}x",
        f"{m.agreement['recall']:.4f}",
        m.note,
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], names: int) -> list[str]:
    """The header and the rows, each column as wide as its widest cell, each row's last cell
    (its note) unaligned after the others."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    return [
        _aligned(head, widths, names),
        *((_aligned(r[:-1], widths, names) + "  " + r[-1]).rstrip() for r in rows),
    ]


def _aligned(cells: Sequence[str], widths: Sequence[int], names: int) -> str:
    """Names left-aligned (the first ``names`` columns), numbers right-aligned."""
    return "  ".join(
        c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
