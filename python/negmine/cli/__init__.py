"""The `negmine` command line.

Exit codes: 0 success; 1 a data error (a missing, unreadable or invalid file, a bad qrels
row, a dimension mismatch, anything raised while reading or mining); 2 a usage error (what
argparse refuses, and invalid options or combinations of options, found before any data is
read); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from collections.abc import Sequence

from negmine import _core
from negmine.cli import embed, export, mine, misc, search
from negmine.cli.common import UsageError, default_cache_dir, load_ids, quiet_libraries
from negmine.cli.embed import embedder
from negmine.cli.export import EXPORT_FORMATS, TEXT_FORMATS, write_flag_jsonl
from negmine.errors import NegmineError

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_DATA",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "EXPORT_FORMATS",
    "TEXT_FORMATS",
    "UsageError",
    "build_parser",
    "default_cache_dir",
    "load_ids",
    "main",
    "write_flag_jsonl",
]

EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success
  1    data error: a missing, unreadable or invalid file, a bad qrels row or id, a dimension
       mismatch, anything that fails while reading or mining
  2    usage error: an unknown or invalid option, or options that do not go together (found
       before any data is read)
  130  interrupted (Ctrl-C); outputs are written atomically, so none is left half-written,
       and `negmine mine` resumes from its checkpoint when run again

`negmine COMMAND --help` describes each command; docs/cli.md has an example of each."""


_embedder = embedder
"""The model and cache identity that ``embed`` and ``mine`` embed texts with, looked up here
at each call (:func:`negmine.cli.embed.embed_with_options`): tests replace it with a
stand-in model."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (``None``, a flag's
    ``False``) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        no_default = action.default is None or action.default is False
        if no_default or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    # Every command also takes -q after its name (the default stays the global one's).
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no output except errors",
    )
    parser = argparse.ArgumentParser(
        prog="negmine",
        description="Fast, exact, reproducible hard-negative mining.",
        epilog=EXIT_CODES_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"negmine {_core.__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars and no output except errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=textwrap.fill(description or help, 88),
            parents=[quiet],
            formatter_class=_HelpFormatter,
            epilog=EXIT_CODES_HELP,
        )

    misc.add_demo_parser(command)
    embed.add_parser(command)
    search.add_parser(command)
    mine.add_parser(command)
    export.add_parser(command)
    misc.add_report_parser(command)
    misc.add_info_parser(command)
    from negmine import bench

    bench.add_parser(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit code (see ``EXIT_CODES_HELP``)."""
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries() if args.quiet else contextlib.nullcontext():
            code: int = args.run(args)
    except UsageError as e:
        print(f"negmine: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("negmine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # ValueError: what a library (numpy, pyarrow, json) raises for a value it cannot take;
    # RecursionError: JSON nested too deep.
    except (NegmineError, OSError, ImportError, ValueError, RecursionError) as e:
        print(f"negmine: error: {str(e) or type(e).__name__}", file=sys.stderr)
        return EXIT_DATA
    except MemoryError:
        print("negmine: error: out of memory", file=sys.stderr)
        return EXIT_DATA
    return code
