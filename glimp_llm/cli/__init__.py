"""The ``glimp`` command line. Each subcommand lives in its own module exposing
``add_parser(subparsers)`` and ``main(args) -> int``; heavy imports happen inside ``main``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from glimp_llm._version import __version__
from glimp_llm.errors import GlimpError

#: the subcommands, each the module ``glimp_llm.cli.<name>`` (a missing one is a packaging bug, not skipped)
COMMANDS = ("run", "chat", "models", "doctor", "serve", "bench", "calibrate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glimp", description="Step-wise small/large model routing by glimpse entropy (GlimpRouter)."
    )
    parser.add_argument("--version", action="version", version=f"glimp-llm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"glimp_llm.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GlimpError as exc:
        print(f"glimp: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glimp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
