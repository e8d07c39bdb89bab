"""One entry point for the benchmark (the same as ``glimp bench``): every mode on the same problems in
one run, ratios printed at the end, RESULTS.md tables, JSON and PNG plots written.

    .venv/bin/python benchmarks/run.py --data benchmarks/data/gsm8k/test_dev.jsonl --limit 100

See ``--help`` for the modes, the tau calibration and the outputs.
"""

from __future__ import annotations

import argparse
import sys

from glimp_llm.cli import bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=bench.__doc__)
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
