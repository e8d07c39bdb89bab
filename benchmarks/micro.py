"""The three micro-benchmarks, printed as ratios measured in one run (see benchmarks/microbench.py):

1. glimpse cost with ~2,000 vs ~200 tokens of context (prefix reuse keeps it near 1);
2. router overhead: wall time / time inside engine calls - 1, over routed requests;
3. throughput of 8 concurrent routed requests over 1, on llama.cpp's server (parallel slots, continuous
   batching) through the OpenAI-compatible engine, next to the same servers' own speed-up on 8 concurrent
   plain completions over 1 (no routing), and their ratio: how much of the engine's batching the router
   keeps.

    .venv/bin/python benchmarks/micro.py --data benchmarks/data/gsm8k/test_dev.jsonl

Writes benchmarks/micro.json and, from it, the block in benchmarks/RESULTS.md (``--render-only`` rewrites
the block from the JSON without measuring).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from glimp_llm.bench import preflight as preflight_checks
from glimp_llm.bench.datasets import load_problems
from glimp_llm.bench.report import update_results_file, write_json
from glimp_llm.errors import ConfigurationError, GlimpError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `benchmarks` is a directory of the repository
    sys.path.insert(0, str(ROOT))
from benchmarks import microbench as micro  # noqa: E402

SMALL = "qwen2.5-coder-0.5b-instruct"
LARGE = "qwen2.5-coder-1.5b-instruct"
PARTS = {"glimpse", "overhead", "concurrency"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/micro.py", description=__doc__.splitlines()[0])
    p.add_argument("--small", default=SMALL)
    p.add_argument("--large", default=LARGE)
    p.add_argument("--data", help="GSM8K-format JSONL (default: reasoning-gym gsm_symbolic)")
    p.add_argument("--offset", type=int, default=900, help="problems used for text and requests")
    p.add_argument("--tau", type=float, help="threshold (default: the 'ours' tau of --from-results, else 1.0)")
    p.add_argument("--from-results", default="benchmarks/results.json", help="full run whose tau is reused")
    p.add_argument("--overhead-requests", type=int, default=3)
    p.add_argument("--budget", type=int, default=128, help="generated tokens per request (overhead, concurrency)")
    p.add_argument("--step-cap", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--threads", type=int, help="threads per model (default: all cores)")
    p.add_argument("--skip", default="", help="comma-separated: glimpse,overhead,concurrency")
    p.add_argument("--json", default="benchmarks/micro.json")
    p.add_argument("--results-md", default="benchmarks/RESULTS.md")
    p.add_argument("--note", help="said next to the concurrency figure (e.g. what else loaded the machine)")
    p.add_argument(
        "--render-only", action="store_true", help="rewrite the RESULTS.md block from --json; measure nothing"
    )
    return p.parse_args(argv)


def preflight(args: argparse.Namespace) -> list[Any]:
    """Everything the three measurements need, checked before the first generation: --skip, the tau of
    --from-results, the problems, both output files and both models; the concurrency measurement without
    its server is announced now (it is reported as not measured, as before). Returns the problems."""
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - PARTS:
        raise ConfigurationError(f"--skip {args.skip!r}: use a comma-separated subset of {', '.join(sorted(PARTS))}")
    tau = args.tau
    if tau is None and Path(args.from_results).is_file():
        try:
            modes = json.loads(Path(args.from_results).read_text(encoding="utf-8"))["meta"]["modes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"--from-results {args.from_results}: not a glimp bench JSON ({exc}); pass --tau T instead"
            ) from exc
        tau = next((m["threshold"] for m in modes if m["name"] == "ours"), None)
    args.tau = 1.0 if tau is None else tau
    problems = load_problems(args.data, offset=args.offset, limit=100)
    preflight_checks.check_problem_count(
        len(problems),
        100,
        source=f"--data {args.data}" if args.data else "the generated dataset",
        what=f"the requests and text need from --offset {args.offset}",
        fix="lower --offset",
    )
    preflight_checks.check_writable(args.json, "--json")
    preflight_checks.check_writable(args.results_md, "--results-md")
    preflight_checks.check_llama_model(args.small, "small")  # every part loads both (the servers too)
    preflight_checks.check_llama_model(args.large, "large")
    if "concurrency" not in skip:
        why = micro.server_engines_available()
        if why is not None:
            print(f"warning: concurrency will not be measured: {why} (--skip concurrency silences this)")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:  # the block's one generator is render(), from the JSON, measured or not
        result = json.loads(Path(args.json).read_text(encoding="utf-8"))
        update_results_file(args.results_md, render(result), name="glimp-micro")
        print(render(result))
        return 0
    try:
        problems = preflight(args)
    except GlimpError as exc:
        print(f"benchmarks/micro.py: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(run(args, [p.prompt for p in problems], " ".join(p.question for p in problems)))
    result["command"] = " ".join(shlex.quote(a) for a in ["benchmarks/micro.py", *sys.argv[1:]])
    earlier = None
    if args.skip and Path(args.json).is_file():  # a partial rerun keeps the other measurements
        earlier = json.loads(Path(args.json).read_text(encoding="utf-8"))
    result = micro.merge_runs(earlier, result)
    write_json(args.json, result)
    update_results_file(args.results_md, render(result), name="glimp-micro")
    print(render(result))
    return 0


async def run(args: argparse.Namespace, prompts: list[str], text: str) -> dict[str, Any]:
    from glimp_llm.engines.llama_cpp import LlamaCppEngine
    from glimp_llm.router import Router

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out: dict[str, Any] = {
        "tau": args.tau,
        "concurrency": args.concurrency,
        "load1_start": micro.load1(),
        "started": time.strftime("%H:%M:%S"),
        "date": time.strftime("%Y-%m-%d"),
    }
    config = micro.default_router_config(args.tau, args.step_cap, args.budget)
    if not {"glimpse", "overhead"} <= skip:
        small = LlamaCppEngine(args.small, name="small", n_ctx=4096, n_threads=args.threads, n_slots=2)
        large = LlamaCppEngine(args.large, name="large", n_ctx=4096, n_threads=args.threads)
        await small.start()
        await large.start()
        try:
            if "glimpse" not in skip:
                tokens = await small.tokenize(text)
                out["glimpse_cost_2000_over_200"] = await micro.glimpse_cost_ratio(small, tokens)
                print("glimpse:", out["glimpse_cost_2000_over_200"]["detail"], flush=True)
            if "overhead" not in skip:
                results = await micro.route_all(
                    Router(small, large, config), prompts[: args.overhead_requests], args.budget
                )
                out["router_overhead"] = micro.overhead_ratio(results)
                print("overhead:", out["router_overhead"]["detail"], flush=True)
        finally:
            await small.close()
            await large.close()
    if "concurrency" not in skip:
        why = micro.server_engines_available()
        if why is not None:
            out["concurrency_8_over_1"] = {"missing": why}
        else:
            out["concurrency_8_over_1"] = await _concurrency(args, config, prompts[: args.concurrency])
            if args.note:
                out["concurrency_8_over_1"]["note"] = args.note
        print("concurrency:", out["concurrency_8_over_1"], flush=True)
    out["load1_end"] = micro.load1()
    return out


async def _concurrency(args: argparse.Namespace, config: Any, prompts: list[str]) -> dict[str, Any]:
    from glimp_llm.engines.openai_compat import OpenAICompatEngine
    from glimp_llm.router import Router

    ctx = args.concurrency * 1024
    servers = []
    try:
        for model in (args.small, args.large):
            servers.append(micro.LlamaServer.start(model, parallel=args.concurrency, ctx=ctx, threads=args.threads))
        small = OpenAICompatEngine([servers[0].url + "/v1"], "small", name="small", timeout_s=600)
        large = OpenAICompatEngine([servers[1].url + "/v1"], "large", name="large", timeout_s=600)
        await small.start()
        await large.start()
        try:
            result = await micro.concurrency_comparison(Router(small, large, config), prompts, args.budget)
        finally:
            await small.close()
            await large.close()
        result["detail"] += (
            f"; llama.cpp server (xllamacpp) with {args.concurrency} parallel slots per model, top-20 entropy estimate"
        )
        return result
    finally:
        for server in servers:
            server.stop()


def render(result: dict[str, Any]) -> str:
    """The RESULTS.md block, from micro.json's content (see :func:`benchmarks.microbench.render_block`)."""
    return micro.render_block(result)


if __name__ == "__main__":
    sys.exit(main())
