"""The tables ``negmine bench`` prints: the search table, the peers not run and why, the
mining table and the machine it ran on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from negmine.bench.machine import machine_lines
from negmine.bench.mining import MiningRow
from negmine.bench.settings import MINE_NEGATIVES, MINE_RELATIVE_MARGIN
from negmine.bench.timing import Measurement


def _aligned(cells: Sequence[str], widths: Sequence[int], names: int = 2) -> str:
    """Names left-aligned (the first ``names`` columns), numbers right-aligned."""
    return "  ".join(
        c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )


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
    head = (
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
    rows = [
        (
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
        for m in measurements
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
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
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))
        ),
    ]
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    lines += [f"- {text}" for text in not_run]
    lines += render_mining(mining, q, repeats)
    return "\n".join([*lines, "", *machine_lines(info)]) + "\n"


def render_mining(rows: Sequence[MiningRow], q: int, repeats: int) -> list[str]:
    """The mining table's lines."""
    if not rows:
        return []
    head = ("method", "best s", "median s", "spread", "negmine speed-up", "rows", "same")
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
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = [
        "",
        f"Mining {MINE_NEGATIVES} hard negatives for {q:,} queries (relative_margin="
        f"{MINE_RELATIVE_MARGIN}, top; each positive is the query's nearest row) on the same "
        "embeddings, injected into sentence-transformers' cache (encoding excluded); best and "
        f"median of up to {repeats} runs. 'rows': queries with every negative; 'same': rows "
        "whose negatives equal the first row's.",
        "",
        _aligned(head, widths, names=1),
    ]
    lines += [(_aligned(c[:-1], widths, names=1) + "  " + c[-1]).rstrip() for c in cells]
    return lines
