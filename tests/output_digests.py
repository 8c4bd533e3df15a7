"""Digests of negmine's outputs on small generated data: search, mine with every filter and
backend, the checkpointed directory runs and the CLI's directories. Run it before and after a
refactor that must not change any output, and compare:

    python tests/output_digests.py > before.json   # on the old code
    python tests/output_digests.py > after.json    # on the new code
    diff before.json after.json

Not a pytest module (its name does not start with ``test_``): the digests are only meaningful
compared with themselves on one machine and library set. Every array is hashed by dtype, shape
and bytes; a directory by each file's bytes (the data lives in a fixed temporary directory so
that the paths recorded in the manifests are the same from run to run).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import negmine
from negmine.checkpoint import mine_to_directory
from negmine.mine import MiningOptions

FILTERS: dict[str, dict[str, Any]] = {
    "plain": {},
    "margins": {"relative_margin": 0.05, "max_score": 0.97, "min_score": -0.5},
    "absolute": {"absolute_margin": 0.1, "metric": "dot", "range_min": 2},
    "dups": {"dup_threshold": 0.95, "query_dup_threshold": 0.99},
    "random": {"sampling_strategy": "random", "seed": 7, "num_negatives": 4},
    "simans": {"sampling_strategy": "simans", "simans_a": 2.0, "simans_b": 0.1, "seed": 3},
    "depth": {"max_depth": 12, "range_max": 9, "record_removed": None},
}


def digest_arrays(arrays: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        if a is None:
            h.update(f"{name}=None".encode())
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{name} {a.dtype.str} {a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def digest_result(result: negmine.MiningResult) -> str:
    report = result.report.to_dict()
    for volatile in ("ann",):  # the index path and built-or-loaded vary with the run
        if report.get(volatile):
            report[volatile] = {k: v for k, v in report[volatile].items() if k not in ("built",)}
    return (
        digest_arrays(result.arrays())
        + ":"
        + hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest()[:16]
    )


def digest_directory(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def data(directory: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    n_queries, n_corpus, dim = 37, 400, 24
    corpus = rng.normal(size=(n_corpus, dim)).astype(np.float32)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    pos = 2 * rng.choice(n_corpus // 2, size=n_queries, replace=False)
    queries += 1.5 * corpus[pos]
    for i in range(0, n_queries, 5):
        corpus[pos[i] + 1] = corpus[pos[i]]
    corpus[pos[3] + 1] = corpus[pos[3]] + 1e-3 * rng.normal(size=dim).astype(np.float32)
    q, c, r = directory / "q.npy", directory / "c.npy", directory / "qrels.tsv"
    np.save(q, queries)
    np.save(c, corpus)
    lines = [f"{i}\t{p}" for i, p in enumerate(pos)] + [
        f"{i}\t{(p + 7) % n_corpus}" for i, p in enumerate(pos[:9])
    ]
    r.write_text("\n".join(lines) + "\n")
    return q, c, r


def main() -> None:
    root = Path(tempfile.gettempdir()) / "negmine-output-digests"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    q_path, c_path, r_path = data(root)
    q, c = np.load(q_path), np.load(c_path)
    out: dict[str, str] = {}
    exclude = [[i, (i * 7) % len(c)] for i in range(len(q))]
    for metric in ("dot", "cosine"):
        out[f"search {metric}"] = digest_arrays(
            dict(zip("si", negmine.search(q, c, 10, metric=metric, exclude=exclude)))
        )
        out[f"search torch {metric}"] = digest_arrays(
            dict(zip("si", negmine.search(q, c, 10, metric=metric, backend="torch")))
        )
    teacher = lambda qi, ci: (q[qi] * c[ci]).sum(axis=1) * 0.5  # noqa: E731
    for name, options in FILTERS.items():
        for backend in ("exact", "hnsw", "torch"):
            extra: dict[str, Any] = {"backend": backend}
            if backend == "hnsw":
                extra["hnsw_path"] = str(root / "index.bin")
                extra["threads"] = 1
            out[f"mine {name} {backend}"] = digest_result(
                negmine.mine(q, c, str(r_path), **options, **extra)
            )
    out["mine teacher"] = digest_result(
        negmine.mine(q, c, str(r_path), rescore=teacher, rescore_percentile=90, relative_margin=0.1)
    )
    out["mine offset+exclude"] = digest_result(
        negmine.mine(q, c, str(r_path), query_offset=5, exclude=exclude, sampling_strategy="random")
    )
    groups = np.arange(len(c)) // 3
    out["mine groups"] = digest_result(negmine.mine(q, c, str(r_path), duplicates=groups))
    out["mine no dups"] = digest_result(negmine.mine(q, c, str(r_path), duplicates=None))
    for name, options in FILTERS.items():
        options = {k: v for k, v in options.items() if k not in ("max_depth", "record_removed")}
        d = root / f"dir-{name}"
        mine_to_directory(
            q_path, c_path, r_path, d, MiningOptions(**options), chunk_queries=6, progress=False
        )
        out[f"mine_to_directory {name}"] = digest_directory(d)
    cli = [sys.executable, "-m", "negmine.cli"]
    subprocess.run(
        [
            *cli,
            "search",
            "--quiet",
            "--queries",
            str(q_path),
            "--corpus",
            str(c_path),
            "--k",
            "8",
            "--out",
            str(root / "s.npz"),
        ],
        check=True,
        capture_output=True,
    )
    with np.load(root / "s.npz") as z:
        out["cli search"] = digest_arrays({k: z[k] for k in z.files})
    for name, flags in {
        "plain": [],
        "filters": [
            "--relative-margin",
            "0.05",
            "--dup-threshold",
            "0.95",
            "--range-min",
            "1",
            "--sampling-strategy",
            "random",
            "--seed",
            "7",
            "--chunk-queries",
            "5",
        ],
        "no-dups": ["--no-duplicates", "--metric", "dot", "--num-negatives", "5"],
    }.items():
        d = root / f"cli-{name}"
        subprocess.run(
            [
                *cli,
                "mine",
                "--queries",
                str(q_path),
                "--corpus",
                str(c_path),
                "--positives",
                str(r_path),
                "--out",
                str(d),
                "--quiet",
                "--cache-dir",
                str(root / "cache"),
                *flags,
            ],
            check=True,
            capture_output=True,
        )
        out[f"cli mine {name}"] = digest_directory(d)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
