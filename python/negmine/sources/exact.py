"""``backend="exact"``: no candidate source; the core searches the whole corpus itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from negmine.report import MiningReport
from negmine.sources import Fetch, Job


@dataclass(frozen=True)
class Settings:
    """The exact search has no settings of its own."""

    def identity(self) -> None:
        return None


class Exact:
    name = "exact"
    chunk_rows: int | None = None
    max_depth: int | None = None
    ranked = False

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> Fetch | None:
        return None

    def negative_sources(self, fetch: Fetch | None, part: Any) -> None:
        return None

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        pass


def open(job: Job, settings: Settings) -> Exact:
    return Exact()
