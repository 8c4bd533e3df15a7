"""The documentation runs and holds together: every Python block of the README and of docs/*.md
runs as written (each in a fresh interpreter, in an empty directory), so the examples stay
self-contained and keep up with the API; every relative link points at a file and heading that
exist; every benchmark block sits, once, in the file the benchmarks write it to.

Only blocks fenced as ```python run. An illustration that is not meant to run (a fragment, a
signature) is fenced as ```py, which renders the same and is skipped here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: m.start()].count("\n") + 1
            blocks.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1)))
    return blocks


def test_the_readme_has_python_examples() -> None:
    assert sum(where.startswith("README.md:") for where, _ in _blocks()) >= 8


@pytest.mark.slow  # a Python process per block, some train or start Ray (see `make test-quick`)
@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_doc_block_runs_as_written(where: str, code: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{where}:\n{proc.stderr[-3000:]}"


def _anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text`` (lower case, punctuation dropped,
    spaces to hyphens; a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for m in re.finditer(r"^#{1,6} (.+)$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


# The README is also the PyPI page, where relative links go nowhere: it links to the
# repository's files by URL, checked here against the checkout like relative links.
REPOSITORY_FILES = "https://github.com/negmine/negmine/blob/main/"


def _targets(doc: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text(encoding="utf-8")))


def _links() -> list[tuple[Path, str]]:
    links = []
    for doc in DOCS:
        for target in _targets(doc):
            if target.startswith(REPOSITORY_FILES):
                links.append((ROOT / "README.md", target.removeprefix(REPOSITORY_FILES)))
            elif not re.match(r"[a-z]+:", target):
                links.append((doc, target))
    return links


def test_the_readme_links_to_files_by_url_for_its_pypi_page() -> None:
    relative = [t for t in _targets(ROOT / "README.md") if not re.match(r"[a-z]+:|#", t)]
    assert relative == [], f"relative links break on PyPI; use {REPOSITORY_FILES}PATH"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    assert urls["Repository"] + "/blob/main/" == REPOSITORY_FILES


def test_the_docs_link_to_each_other() -> None:
    assert {doc.name for doc, _ in _links()} >= {"README.md", "performance.md", "internals.md"}


@pytest.mark.parametrize(
    ("doc", "target"), _links(), ids=[f"{d.relative_to(ROOT)}->{t}" for d, t in _links()]
)
def test_relative_link_resolves(doc: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{doc.relative_to(ROOT)} links to a missing {path}"
    if anchor:
        assert dest.suffix == ".md", f"{doc.relative_to(ROOT)}: an anchor into {path}"
        assert anchor in _anchors(dest.read_text(encoding="utf-8")), (
            f"{doc.relative_to(ROOT)} links to #{anchor}, not a heading of {dest.name}"
        )


def _readme_block() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("readme_block", ROOT / "benches/readme_block.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_benchmark_block_is_in_the_file_its_benchmark_writes() -> None:
    files = _readme_block().BLOCK_FILES
    for name, path in files.items():
        for doc in DOCS:
            text = doc.read_text(encoding="utf-8")
            count = (text.count(f"<!-- {name}:start -->"), text.count(f"<!-- {name}:end -->"))
            assert count == ((1, 1) if doc == path else (0, 0)), (name, doc.name, count)


def test_write_block_fills_the_mapped_file_and_never_creates_markers(tmp_path: Path) -> None:
    module = _readme_block()
    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- topic-bench:start -->\nold\n<!-- topic-bench:end -->\nafter\n")
    module.BLOCK_FILES = {**module.BLOCK_FILES, "topic-bench": doc}
    assert module.write_block("topic-bench", "new table")
    assert doc.read_text() == (
        "intro\n<!-- topic-bench:start -->\nnew table\n<!-- topic-bench:end -->\nafter\n"
    )
    doc.write_text("no markers\n")
    assert not module.write_block("topic-bench", "new table")
    assert doc.read_text() == "no markers\n"
