"""The small commands: `negmine demo`, `negmine report` (a mining run's report again) and
`negmine info` (an embeddings file checked)."""

from __future__ import annotations

import argparse
import contextlib
import io

from negmine import _core
from negmine.cli.common import Command, hide_library_bars, positive_int, say
from negmine.errors import InvalidArgumentError

# ------------------------------------------------------------------------------------ demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from negmine.demo import DemoConfig, run

    config = DemoConfig(
        corpus_size=args.corpus_size,
        queries=args.queries,
        dim=args.dim,
        k=args.k,
        seed=args.seed,
        threads=args.threads,
        source=args.source,
        model=args.model,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    if args.quiet and args.source != "generated":
        hide_library_bars()
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
        run(config)
    return 0


def add_demo_parser(command: Command) -> None:
    demo = command(
        "demo",
        "mine hard negatives on stdlib docstrings (offline MiniLM) or generated embeddings, "
        "filters off vs on",
    )
    demo.add_argument(
        "--source",
        choices=["auto", "text", "generated"],
        default="auto",
        help="text: stdlib docstrings embedded with the offline MiniLM; generated: random "
        "topics; auto: text when the model is installed",
    )
    demo.add_argument(
        "--corpus-size",
        type=positive_int,
        default=None,
        help="corpus rows (default: text 1,500 at most, generated 100,000)",
    )
    demo.add_argument(
        "--queries",
        type=positive_int,
        default=None,
        help="queries (default: text 300, generated 2,000)",
    )
    demo.add_argument(
        "--dim", type=positive_int, default=384, help="dimension of generated embeddings"
    )
    demo.add_argument("--k", type=positive_int, default=5, help="negatives per query")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    demo.add_argument(
        "--threads", type=positive_int, default=None, help="cores to use (default: all)"
    )
    demo.add_argument(
        "--model", default=None, help="sentence-transformers model (default: bundled MiniLM)"
    )
    demo.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/negmine/demo)"
    )
    demo.set_defaults(run=_cmd_demo)


# ---------------------------------------------------------------------------- report, info


def _cmd_report(args: argparse.Namespace) -> int:
    from negmine.result import MiningResult

    result = MiningResult.load(args.directory)
    if args.window is not None or args.floor is not None:
        depth = result.depth(window=args.window, floor=args.floor)
        if depth is None:
            raise InvalidArgumentError(
                f"{args.directory} records no ranks of its negatives (mined by an older "
                "negmine): --window and --floor need them"
            )
        result.report.depth = depth
    say(args, result.report)
    if args.plot:
        result.plot(args.plot)
        say(args, f"histogram -> {args.plot}")
    return 0


def add_report_parser(command: Command) -> None:
    report = command("report", "print the report of a mining run again")
    report.add_argument("directory", help="a mining result (the --out of negmine mine)")
    report.add_argument(
        "--plot", default=None, help="also write a PNG score histogram (needs matplotlib)"
    )
    report.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="count the negatives ranked at this rank or deeper, before filters (default: "
        "range_max, the sampling window, or sentence-transformers' default range_max)",
    )
    report.add_argument(
        "--floor",
        type=float,
        default=None,
        help="also count the negatives scoring under this score",
    )
    report.set_defaults(run=_cmd_report)


def _cmd_info(args: argparse.Namespace) -> int:
    emb = _core.open_embeddings(args.path)
    say(args, f"{args.path}: {emb!r}")
    return 0


def add_info_parser(command: Command) -> None:
    info = command("info", "validate a .npy embeddings file and print its shape")
    info.add_argument("path", help="a .npy embeddings file")
    info.set_defaults(run=_cmd_info)
