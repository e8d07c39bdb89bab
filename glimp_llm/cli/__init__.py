"""The ``glimp`` command line. Each subcommand lives in its own module exposing
``add_parser(subparsers)`` and ``main(args) -> int``; heavy imports happen inside ``main``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from glimp_llm._version import __version__
from glimp_llm.errors import GlimpError

#: subcommand -> module. Every module must exist; a missing one is a packaging bug, not skipped.
COMMANDS: dict[str, str] = {
    "run": "glimp_llm.cli.run",
    "chat": "glimp_llm.cli.chat",
    "models": "glimp_llm.cli.models",
    "doctor": "glimp_llm.cli.doctor",
    "serve": "glimp_llm.cli.serve",
    "bench": "glimp_llm.cli.bench",
    "calibrate": "glimp_llm.cli.calibrate",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glimp",
        description="Step-wise small/large model routing by glimpse entropy (GlimpRouter).",
    )
    parser.add_argument("--version", action="version", version=f"glimp-llm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for _name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command still being written in this checkout; see COMMANDS
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
