"""Command line of the agent suite; see ``python -m benchmarks.agent_suite --help`` and the package docstring."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.agent_suite import configs as cfgs
from benchmarks.agent_suite import report
from benchmarks.agent_suite.harness import GlimpSource, ModelSource, RecordStore, printer, run_suite
from benchmarks.agent_suite.tasks import TASKS, select

DEFAULT_RECORDS = "out/agent_suite/records.jsonl"
DRY_RUN_RECORDS = "out/agent_suite/dry-run.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.agent_suite",
        description=(
            "Tool-use tasks through a plain create_agent(ChatGlimp(config=...), tools=...) under several router "
            "configurations: success rate, tool calls, repeated identical calls, empty answers, loops, latency."
        ),
    )
    p.add_argument("--configs", default=",".join(cfgs.DEFAULT_ORDER), help="comma-separated configurations (--list)")
    p.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an extra configuration: NAME=JSON or NAME=BASE+JSON of RouterConfig fields (repeatable)",
    )
    p.add_argument("--tasks", default=None, help="comma-separated task ids (default: all)")
    p.add_argument("--limit", type=int, default=None, help="run only the first N tasks")
    p.add_argument(
        "--records", default=None, help=f"JSONL of records, resumed when it exists (default {DEFAULT_RECORDS})"
    )
    p.add_argument("--fresh", action="store_true", help="delete the records file first instead of resuming")
    p.add_argument("--json", dest="json_out", default=None, help="write summaries, settings and records as JSON")
    p.add_argument("--md", dest="md_out", default=None, help="write the Markdown report")
    p.add_argument("--plot", default=None, help="write the success-vs-latency plot (PNG; needs matplotlib)")
    p.add_argument("--config", default=None, help="a GlimpConfig file for the model pair (default: the CPU pair)")
    p.add_argument("--small", default=None, help="small model for llama.cpp (a registered name or a .gguf path)")
    p.add_argument("--large", default=None, help="large model for llama.cpp")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads per model")
    p.add_argument(
        "--max-tokens", type=int, default=256, help="token budget of each model turn (bounds a runaway turn)"
    )
    p.add_argument("--turn-timeout", type=float, default=None, help="seconds allowed per model turn (else no limit)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="scripted engines instead of models: a blind small and an oracle large model (seconds)",
    )
    p.add_argument("--list", action="store_true", help="list the configurations and tasks, then exit")
    return p


def base_config(args: argparse.Namespace) -> Any:
    """The model pair as configured (file < GLIMP_* env), with --small/--large/--threads applied."""
    from glimp_llm import GlimpConfig

    data = GlimpConfig.load(args.config).model_dump()
    for role in ("small", "large"):
        model = getattr(args, role)
        if model:
            data[role] = {"kind": "llama_cpp", "model": model}
        if args.threads and data[role].get("kind") == "llama_cpp":
            data[role]["n_threads"] = args.threads
    return GlimpConfig.validated(data, source="command line")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        defined = dict(cfgs.parse_define(d) for d in args.define)
        names = [c.strip() for c in args.configs.split(",") if c.strip()]
        overrides = cfgs.resolve(names, defined)
        tasks = select(args.tasks, args.limit)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for name, o in {**cfgs.CONFIGS, **defined}.items():
            print(f"config {name:<14} {json.dumps(o) if o else '(library defaults)'}")
        for t in TASKS:
            print(f"task   {t.id:<14} calls={t.min_calls} tools={','.join(t.tools)}  {t.question}")
        return 0
    if args.plot:
        report.require_matplotlib()  # before minutes of model runs, not after

    source: ModelSource
    if args.dry_run:
        from benchmarks.agent_suite.scripted import ScriptedSource

        source = ScriptedSource(overrides, small_token_seconds=1e-5, large_token_seconds=5e-5)
        models = "scripted blind small -> scripted oracle large"
    else:
        from glimp_llm.errors import ConfigurationError

        try:
            base = base_config(args)
            source = GlimpSource(base, overrides, max_tokens=args.max_tokens, timeout=args.turn_timeout)
        except ConfigurationError as exc:  # a misspelt RouterConfig field in a configuration, a bad file
            print(f"error: {exc}", file=sys.stderr)
            return 2
        models = f"{getattr(base.small, 'model', base.small.kind)} -> {getattr(base.large, 'model', base.large.kind)}"

    store = RecordStore(args.records or (DRY_RUN_RECORDS if args.dry_run else DEFAULT_RECORDS), fresh=args.fresh)
    print(
        f"agent suite: {len(tasks)} tasks x {len(overrides)} configurations on {models}; records {store.path} "
        f"({len(store.records)} there)",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    try:
        records = run_suite(list(overrides), tasks, source, store, progress=printer())
    except KeyboardInterrupt:
        print(f"\ninterrupted; rerun the same command to continue from {store.path}", file=sys.stderr)
        return 130
    summary = report.summaries(records, list(overrides))
    meta = {
        "models": models,
        "tasks": len(tasks),
        "task_ids": [t.id for t in tasks],
        "max_tokens": args.max_tokens,
        "dry_run": args.dry_run,
        "command": "python -m benchmarks.agent_suite " + " ".join(argv if argv is not None else sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_seconds": round(time.perf_counter() - t0, 1),
    }
    md = report.markdown(summary, records, overrides, meta)
    print(md)
    if args.md_out:
        Path(args.md_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md_out).write_text(md, encoding="utf-8")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "configs": overrides, "summary": summary, "records": [asdict(r) for r in records]}
        Path(args.json_out).write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.plot:
        report.plot(summary, args.plot, title=f"agent suite ({len(tasks)} tasks, {models})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
