"""negmine.mine vs sentence-transformers' ``mine_hard_negatives`` on the SAME embeddings.

Encoding is excluded: the embeddings are precomputed and handed to ``mine_hard_negatives``
through its ``cache_folder`` (files named by the hash recipe of sentence-transformers 6.x,
``sha256(repr((model_name, prompt, prompt_name, texts)))``), and its model is a stand-in that
computes cosine similarity like all-MiniLM-L6-v2 and raises if asked to encode. Every method
runs in a fresh process (so peak RSS is its own: ``VmHWM``, with ``ru_maxrss`` as the
fallback), on the same thread count, with 5 negatives, ``relative_margin=0.05``, "top"
sampling (NV-Retriever's TopK-PercPos 95%):

- ``negmine``: ``negmine.mine`` over the ``.npy`` files opened with ``open_embeddings``
  (memory-mapped), ``duplicates=None`` (sentence-transformers only knows string identity).
  The time includes opening the files and building the positives.
- ``negmine-st-depth``: the same with ``max_depth`` set to the depth sentence-transformers
  retrieves (``range_max + max_positives``, ``+ 1`` from its 6.3), so both do the same work;
  queries the margin empties are then reported starved, as sentence-transformers drops them.
- ``st-torch``: ``mine_hard_negatives(..., use_faiss=False)``: 16 384-query blocks of scores
  (``faiss_batch_size`` x N floats) + ``torch.topk``.
- ``st-faiss``: ``mine_hard_negatives(..., use_faiss=True)``: faiss ``IndexFlatIP`` (CPU).
  Both sentence-transformers times include loading its cache and building its output
  ``Dataset`` (``output_format="n-tuple"``): that is the call a user makes.

Data sets:

- ``synthetic``: 100 000 queries x 500 000 passages x 384, unit Gaussian rows; query i's
  positive is passage i (the query plus noise, cosine ~0.5-0.9). ``st-torch`` would need a
  16 384 x 500 000 float32 score block (32.8 GB) and is not run where that exceeds RAM; the
  table says so.
- ``real``: 60 000 Debian package names (queries) x every distinct one-line package
  description (~60k passages), all-MiniLM-L6-v2 embeddings (see ``realtext.py``; built once,
  ~15 min on 2 cores, cached in ``bench-data/``).

Ratios are sentence-transformers / negmine (> 1: negmine is faster / smaller). ``same
negatives``: share of the rows sentence-transformers returned whose negatives are exactly
negmine's (ids in order); the rest are near-ties ordered differently by float rounding.
``rows``: queries with all 5 negatives (sentence-transformers drops the others; negmine
searches deeper when the margin empties its window).

    python benches/mine_compare.py --quick                 # smoke run, ~1-2 min
    python benches/mine_compare.py                         # both sets (~15+ min of 2 cores)
    python benches/mine_compare.py --only real --write-readme
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from negmine import bench
from readme_block import write_block

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "bench-data"
METHODS = ("negmine", "negmine-st-depth", "st-torch", "st-faiss")
NUM_NEGATIVES = 5
RELATIVE_MARGIN = 0.05
FAISS_BATCH = 16384  # mine_hard_negatives' default faiss_batch_size (also the torch block)


# --------------------------------------------------------------------------- data sets


def st_cache_hash(texts: list[str]) -> str:
    return bench.st_cache_hash(bench.ST_MODEL_NAME, texts)


def _link(src: Path, dest: Path) -> None:
    """``dest`` as a hard link to ``src`` (a copy across file systems), atomically."""
    if dest.exists():
        return
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def prepare_set(
    directory: Path,
    queries: list[str],
    corpus: list[str],
    anchors: list[str],
    positives: list[str],
    q_path: Path,
    c_path: Path,
    positive_ids: np.ndarray,
) -> Path:
    """The layout the child processes read: texts, positives, the embeddings (links), and the
    sentence-transformers cache with the embeddings under its hashed names."""
    directory.mkdir(parents=True, exist_ok=True)
    cache = directory / "st-cache"
    cache.mkdir(exist_ok=True)
    _link(q_path, directory / "queries.npy")
    _link(c_path, directory / "corpus.npy")
    _link(q_path, cache / f"query_embeddings_{st_cache_hash(queries)}.npy")
    _link(c_path, cache / f"corpus_embeddings_{st_cache_hash(corpus)}.npy")
    q_index = {t: i for i, t in enumerate(queries)}
    pairs = np.stack([[q_index[a] for a in anchors], positive_ids]).T.astype(np.int64)
    np.save(directory / "pairs.npy", pairs)
    _write_json(
        directory / "texts.json",
        {"queries": queries, "corpus": corpus, "anchors": anchors, "positives": positives},
    )
    return directory


def synthetic_set(n_queries: int, n_corpus: int, dim: int, seed: int = 0) -> Path:
    """Unit Gaussian rows; passage i is query i plus noise (its positive)."""
    name = f"minecmp-synth-s{seed}-{n_queries}x{n_corpus}x{dim}"
    directory = DATA_DIR / name
    if (directory / "texts.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    q_path, c_path = directory / "q-raw.npy", directory / "c-raw.npy"
    rng = np.random.default_rng([seed, 1])
    q = rng.standard_normal((n_queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(q_path, q)
    out = np.lib.format.open_memmap(c_path, mode="w+", dtype=np.float32, shape=(n_corpus, dim))
    step = 65536
    for start in range(0, n_corpus, step):
        stop = min(n_corpus, start + step)
        block = np.random.default_rng([seed, 2, start]).standard_normal(
            (stop - start, dim), dtype=np.float32
        )
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        lo, hi = start, min(stop, n_queries)
        if lo < hi:  # positives: the query plus noise of norm 0.5..1.5
            noise = block[: hi - lo] * np.random.default_rng([seed, 3, start]).uniform(
                0.5, 1.5, (hi - lo, 1)
            ).astype(np.float32)
            pos = q[lo:hi] + noise
            block[: hi - lo] = pos / np.linalg.norm(pos, axis=1, keepdims=True)
        out[start:stop] = block
    out.flush()
    del out
    queries = [f"q{i}" for i in range(n_queries)]
    corpus = [f"p{j}" for j in range(n_corpus)]
    positives = corpus[:n_queries]
    return prepare_set(
        directory, queries, corpus, queries, positives, q_path, c_path, np.arange(n_queries)
    )


def real_set(n_queries: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import realtext

    src = realtext.ensure(n_queries)
    texts = json.loads((src / "texts.json").read_text())
    directory = DATA_DIR / f"minecmp-{src.name}"
    if (directory / "texts.json").exists():
        return directory
    return prepare_set(
        directory,
        texts["queries"],
        texts["corpus"],
        texts["anchors"],
        texts["positives"],
        src / "queries.npy",
        src / "corpus.npy",
        np.load(src / "positive_ids.npy"),
    )


# --------------------------------------------------------------------------- child process


def st_extra_candidate() -> int:
    """1 when the installed sentence-transformers retrieves one candidate more than
    ``range_max + max_positives`` (6.3 and later), else 0."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("sentence-transformers").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return 0
    return int((major, minor) >= (6, 3))


def vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def child(method: str, directory: Path, threads: int, out_ids: Path) -> dict[str, Any]:
    """Runs one method once in this process; returns its numbers (ids go to ``out_ids``)."""
    pairs = np.load(directory / "pairs.npy")
    n_queries = int(pairs[:, 0].max()) + 1
    rss_before = vm_hwm_bytes()
    if method.startswith("negmine"):
        import negmine

        # "negmine-st-depth" ranks no deeper than sentence-transformers retrieves
        # (range_max + max_positives, with its default range_max for margins, + 1 from its
        # 6.3 on): the same work.
        max_positives = int(np.bincount(pairs[:, 0]).max())
        st_depth = 10 * NUM_NEGATIVES + 2 * max_positives + st_extra_candidate()
        max_depth = st_depth if method.endswith("depth") else None

        start = time.perf_counter()
        q = negmine.open_embeddings(directory / "queries.npy")
        c = negmine.open_embeddings(directory / "corpus.npy")
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n_queries))])
        res = negmine.mine(
            q,
            c,
            (indptr.astype(np.int64), pairs[order, 1].astype(np.int64)),
            num_negatives=NUM_NEGATIVES,
            relative_margin=RELATIVE_MARGIN,
            sampling_strategy="top",
            duplicates=None,
            threads=threads,
            max_depth=max_depth,
        )
        seconds = time.perf_counter() - start
        ids = res.negative_ids
        rows = int((ids >= 0).all(axis=1).sum())
    else:
        import faiss
        import torch
        from datasets import Dataset
        from sentence_transformers.util import mine_hard_negatives

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        texts = json.loads((directory / "texts.json").read_text())
        dim = int(np.load(directory / "queries.npy", mmap_mode="r").shape[1])
        dataset = Dataset.from_dict({"query": texts["anchors"], "answer": texts["positives"]})
        model = bench.InjectedModel(dim)
        start = time.perf_counter()
        ds = mine_hard_negatives(
            dataset,
            model,
            corpus=texts["corpus"],
            num_negatives=NUM_NEGATIVES,
            relative_margin=RELATIVE_MARGIN,
            sampling_strategy="top",
            output_format="n-tuple",
            use_faiss=method == "st-faiss",
            faiss_batch_size=FAISS_BATCH,
            cache_folder=str(directory / "st-cache"),
            verbose=False,
        )
        seconds = time.perf_counter() - start
        q_index = {t: i for i, t in enumerate(texts["queries"])}
        c_index = {t: i for i, t in enumerate(texts["corpus"])}
        ids = np.full((n_queries, NUM_NEGATIVES), -1, dtype=np.int64)
        cols = [ds[f"negative_{k}"] for k in range(1, NUM_NEGATIVES + 1)]
        for r, anchor in enumerate(ds["query"]):
            ids[q_index[anchor]] = [c_index[col[r]] for col in cols]
        rows = int((ids >= 0).all(axis=1).sum())
    np.save(out_ids, ids)
    return {
        "method": method,
        "seconds": seconds,
        "vm_hwm": vm_hwm_bytes(),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before": rss_before,
        "rows": rows,
        "n_queries": n_queries,
    }


def run_child(method: str, directory: Path, threads: int, tmp: Path) -> dict[str, Any]:
    out_ids = tmp / f"{directory.name}-{method}.npy"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        method,
        "--data",
        str(directory),
        "--threads",
        str(threads),
        "--ids-out",
        str(out_ids),
    ]
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"method": method, "error": f"exit {proc.returncode}: {tail}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["ids"] = str(out_ids)
    return result


# --------------------------------------------------------------------------- report


def fmt_gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB"


def table(name: str, shape: str, results: list[dict[str, Any]]) -> list[str]:
    by = {r["method"]: r for r in results}
    ref = by.get("negmine")
    same_depth = by.get("negmine-st-depth")
    ref_ids = np.load(ref["ids"]) if ref and "ids" in ref else None
    lines = [
        f"**{name}** ({shape})",
        "",
        "| method | seconds | peak RSS | time ST/negmine | time ST/negmine at ST's depth "
        "| RSS ST/negmine | rows with 5 negatives | same negatives as negmine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        r = by.get(method)
        if r is None:
            continue
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or r["error"].splitlines()[-1]
            lines.append(f"| {method} | not run: {why} | | | | | | |")
            continue
        rss = r.get("vm_hwm") or r.get("ru_maxrss")
        t_ratio = depth_ratio = rss_ratio = same = "-"
        if method.startswith("st-") and same_depth and "seconds" in same_depth:
            depth_ratio = f"{r['seconds'] / same_depth['seconds']:.2f}x"
        if method.startswith("st-") and ref and "seconds" in ref:
            t_ratio = f"{r['seconds'] / ref['seconds']:.2f}x"
            ref_rss = ref.get("vm_hwm") or ref.get("ru_maxrss")
            rss_ratio = f"{rss / ref_rss:.2f}x"
            if ref_ids is not None:
                ids = np.load(r["ids"])
                got = (ids >= 0).all(axis=1)
                agree = (ids[got] == ref_ids[got]).all(axis=1)
                same = f"{agree.mean():.2%}" if got.any() else "-"
        rows = f"{r['rows']:,} / {r['n_queries']:,}"
        lines.append(
            f"| {method} | {r['seconds']:.1f} | {fmt_gb(rss)} | {t_ratio} | {depth_ratio} | "
            f"{rss_ratio} | {rows} | {same} |"
        )
    return [*lines, ""]


def versions() -> str:
    out = []
    for mod in ("negmine", "sentence_transformers", "torch", "faiss", "numpy"):
        try:
            m = __import__(mod)
            out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception:  # a missing peer is reported, not fatal
            out.append(f"{mod} missing")
    return ", ".join(out)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sets: a smoke run (~1-2 min)")
    p.add_argument("--only", choices=("synthetic", "real"), help="run one data set")
    p.add_argument("--skip", default="", help="comma list of methods to skip")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--synthetic", default="100000x500000x384", help="QxNxD of the synthetic set")
    p.add_argument("--real-queries", type=int, default=60000)
    p.add_argument(
        "--write-readme", action="store_true", help="rewrite its block in docs/performance.md"
    )
    p.add_argument("--json", type=Path, help="write every raw number here")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ids-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.threads, args.ids_out)))
        return
    if args.quick:
        args.synthetic = "5000x50000x384"
        args.real_queries = 2000
    qn, nn, dim = (int(x) for x in args.synthetic.lower().split("x"))
    skip = {s for s in args.skip.split(",") if s}
    sets: list[tuple[str, str, Any]] = []
    if args.only in (None, "synthetic"):
        sets.append(("synthetic", f"{qn:,} x {nn:,} x {dim}", lambda: synthetic_set(qn, nn, dim)))
    if args.only in (None, "real"):
        sets.append(("real", "", lambda: real_set(args.real_queries)))
    blocks: list[str] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mine-compare-") as tmp:
        for name, shape, build in sets:
            t0 = time.perf_counter()
            directory = build()
            meta_q = np.load(directory / "queries.npy", mmap_mode="r").shape
            meta_c = np.load(directory / "corpus.npy", mmap_mode="r").shape
            shape = f"{meta_q[0]:,} queries x {meta_c[0]:,} passages x {meta_q[1]}"
            if name == "real":
                shape += ", Debian package names -> descriptions, all-MiniLM-L6-v2"
            print(f"[{name}] data ready in {time.perf_counter() - t0:.0f} s: {shape}", flush=True)
            results = []
            for method in METHODS:
                if method in skip:
                    continue
                block_bytes = min(meta_q[0], FAISS_BATCH) * meta_c[0] * 4
                if method == "st-torch" and block_bytes > 0.7 * mem_total():
                    results.append(
                        {
                            "method": method,
                            "skipped": f"its {min(meta_q[0], FAISS_BATCH):,} x {meta_c[0]:,} "
                            "f32 score block "
                            f"is {block_bytes / 1e9:.1f} GB, this machine has "
                            f"{mem_total() / 2**30:.0f} GiB",
                        }
                    )
                    print(f"[{name}] {method}: not run ({results[-1]['skipped']})", flush=True)
                    continue
                r = run_child(method, directory, args.threads, Path(tmp))
                results.append(r)
                if "error" in r:
                    print(f"[{name}] {method}: FAILED {r['error']}", flush=True)
                else:
                    print(
                        f"[{name}] {method}: {r['seconds']:.1f} s, peak RSS "
                        f"{fmt_gb(r.get('vm_hwm') or r.get('ru_maxrss'))}",
                        flush=True,
                    )
            raw[name] = results
            blocks.extend(table(name, shape, results))
    command = "python benches/mine_compare.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    footer = (
        f"`{command.strip()}` — {args.threads} threads, {cpu_name()}, "
        f"{mem_total() / 2**30:.0f} GiB RAM; {versions()}. {NUM_NEGATIVES} negatives, "
        f"relative_margin={RELATIVE_MARGIN}, top sampling, embeddings precomputed (encoding "
        "excluded), each method in a fresh process. Ratios: sentence-transformers / negmine "
        "(> 1: negmine faster / smaller)."
    )
    block = "\n".join([*blocks, footer])
    print()
    print(block)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "results": raw}, indent=1))
    if args.write_readme:
        write_block("mine-bench", block)


if __name__ == "__main__":
    main()
