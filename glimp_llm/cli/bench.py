"""``glimp bench``: every mode on the same problems in one run, with a calibrated tau sweep.

Modes: small only, large only (both without glimpses: see :mod:`glimp_llm.bench.baseline`), routed
(ours: exact entropy, glimpse reused) and routed paper-faithful (renormalised top-20, glimpse discarded).
Unless taus are given, they are calibrated first on held-out problems (the ones right after the
evaluated range) for target shares of large-model steps, separately for each entropy kind, so that ours
and the paper's variant are compared at the same intervention rate rather than at the same number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from glimp_llm.cli.common import add_config_options, config_from_args

DEFAULT_SMALL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_LARGE = "qwen2.5-coder-1.5b-instruct"


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmark small / large / routed / paper-faithful on the same problems")
    add_arguments(p)
    p.set_defaults(handler=main)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_options(p)
    d = p.add_argument_group("problems")
    d.add_argument("--data", metavar="FILE", help="GSM8K-format JSONL (default: reasoning-gym gsm_symbolic, seeded)")
    d.add_argument("--seed", type=int, default=42, help="seed of the generated dataset")
    d.add_argument("--offset", type=int, default=0, help="first problem")
    d.add_argument("--limit", type=int, default=100, help="number of evaluated problems")
    r = p.add_argument_group("modes and taus")
    r.add_argument("--main-share", type=float, default=0.5, help="target large-step share of the main routed modes")
    r.add_argument("--sweep-shares", default="0.2,0.8", help="extra target shares for ours (comma-separated)")
    r.add_argument("--sweep-problems", type=int, default=20, help="the sweep runs on the first N problems")
    r.add_argument("--calibrate-problems", type=int, default=8, help="held-out problems (after the evaluated ones)")
    r.add_argument("--taus", help="explicit taus for ours instead of calibration: MAIN[,SWEEP...]")
    r.add_argument(
        "--glimpse-tokens",
        type=int,
        default=1,
        metavar="K",
        help="also run ours with a K-token look-ahead glimpse (router.glimpse_tokens), calibrated at the main share",
    )
    r.add_argument("--paper-tau", type=float, help="explicit tau for the paper-faithful mode")
    r.add_argument("--step-cap", type=int, default=256, help="tokens per step at most")
    r.add_argument("--budget", type=int, default=768, help="generated tokens per problem at most")
    r.add_argument("--n-threads", type=int, help="llama.cpp threads per model (default: all cores)")
    o = p.add_argument_group("output")
    o.add_argument("--json", default="benchmarks/results.json", metavar="FILE", help="the run as JSON")
    o.add_argument("--results-md", default="benchmarks/RESULTS.md", metavar="FILE", help="Markdown tables go here")
    o.add_argument("--plots", default="benchmarks/plots", metavar="DIR", help="PNG figures go here")
    o.add_argument("--records", metavar="FILE", help="append each run to this JSONL (resumes when it exists)")
    o.add_argument("--quiet", action="store_true", help="no per-run lines")


def _shares(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(args: argparse.Namespace) -> int:
    from glimp_llm.bench.runner import read_records

    resume: dict[str, Any] = {"done": [], "saved": None, "meta_path": None}
    if args.records:
        Path(args.records).parent.mkdir(parents=True, exist_ok=True)
        meta_path = Path(args.records + ".meta.json")
        resume["meta_path"] = meta_path
        if Path(args.records).is_file():
            resume["done"] = read_records(args.records)
        if meta_path.is_file():
            resume["saved"] = json.loads(meta_path.read_text(encoding="utf-8"))
    return asyncio.run(run(args, resume))


def build_config(args: argparse.Namespace) -> Any:
    """The GlimpConfig of the run: the Qwen pair unless a config/--small/--large says otherwise, greedy,
    the step cap and budget of the run."""
    if not getattr(args, "config", None):
        args.small = args.small or DEFAULT_SMALL
        args.large = args.large or DEFAULT_LARGE
    config = config_from_args(args)
    data = config.model_dump()
    for role in ("small", "large"):
        if data[role]["kind"] == "llama_cpp" and args.n_threads:
            data[role]["n_threads"] = args.n_threads
    data["router"].update(step_max_tokens=args.step_cap, max_tokens=args.budget)
    if getattr(args, "temperature", None) is None:
        data["router"]["sampling"] = {**data["router"]["sampling"], "temperature": 0.0}
    from glimp_llm.config import GlimpConfig

    return GlimpConfig.validated(data)


async def run(args: argparse.Namespace, resume: dict[str, Any]) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from glimp_llm.bench import plots
    from glimp_llm.bench.datasets import load_problems
    from glimp_llm.bench.report import render_markdown, update_results_file, write_json
    from glimp_llm.bench.runner import BenchPlan, Mode, ModeRunner, load_average, now_iso, run_plan
    from glimp_llm.manager import BackendManager
    from glimp_llm.render import entropy_histogram

    console = Console(stderr=True)
    t_start = time.time()
    started = now_iso()
    config = build_config(args)
    problems = load_problems(args.data, offset=args.offset, limit=args.limit, seed=args.seed)
    held_out = (
        load_problems(args.data, offset=args.offset + args.limit, limit=args.calibrate_problems, seed=args.seed)
        if args.calibrate_problems and not args.taus
        else []
    )
    records_path = args.records
    meta_path: Path | None = resume["meta_path"]
    done = resume["done"]
    saved = resume["saved"]

    async with BackendManager(config) as manager:
        small, large = manager.small, manager.large
        runner = ModeRunner(small, large, config.router)
        calibration: dict[str, Any] | None = None
        if saved is not None:
            modes = [Mode(**m) for m in saved["modes"]]
            calibration = saved.get("calibration")
            started = saved.get("started", started)
        else:
            modes, calibration = await _choose_modes(args, small, large, config, held_out, console)
        if meta_path is not None and saved is None:
            _write_text(
                meta_path,
                json.dumps({"modes": [m.to_dict() for m in modes], "calibration": calibration, "started": started}),
            )
        plan = BenchPlan(modes, max_tokens=args.budget, sweep_problems=min(args.sweep_problems, len(problems)))
        runs = plan.runs(problems)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("benchmark", total=len(runs), completed=len(done))

            def on_record(r: Any) -> None:
                progress.advance(task)
                if not args.quiet:
                    progress.console.print(
                        f"{r.problem:>18} {r.mode:<12} {'ok ' if r.correct else 'bad'} {r.wall_s:6.2f} s "
                        f"S{r.small_tokens:>4} L{r.large_tokens:>4} load {r.load1:.2f}",
                        highlight=False,
                    )

            records = await run_plan(runner, problems, plan, jsonl=records_path, on_record=on_record, done=done)
        small_model, large_model = small.info.model, large.info.model

    document = build_document(
        args, config, modes, records, problems, plan, calibration, started, t_start, small_model, large_model
    )
    write_json(args.json, document)
    update_results_file(args.results_md, render_markdown(document))
    _plots(document, records, modes, Path(args.plots), plots)
    summary = document["summary"]
    for name, row in summary.items():
        console.print(
            f"{name:<12} acc {row['accuracy']:.3f}  median {row['latency_median_s']:.2f} s  p90 "
            f"{row['latency_p90_s']:.2f} s  vs large {row.get('latency_ratio_mean', float('nan')):.3f}  "
            f"large steps {row['large_step_share']:.3f}  overhead {100 * row['router_overhead']:.2f}%",
            highlight=False,
        )
    exact = [h for r in records if r.mode == "ours" for h in r.entropies if h is not None]
    if exact:
        main_tau = next((m.threshold for m in modes if m.name == "ours"), None)
        console.print(entropy_histogram(exact, threshold=main_tau))
    console.print(f"wrote {args.json}, {args.results_md}, {args.plots}/*.png ({load_average():.2f} load)")
    return 0


async def _choose_modes(
    args: argparse.Namespace, small: Any, large: Any, config: Any, held_out: list[Any], console: Any
) -> tuple[list[Any], dict[str, Any] | None]:
    from glimp_llm.bench.runner import Mode
    from glimp_llm.calibrate import calibrate, collect_glimpses

    modes = [Mode("small", "small"), Mode("large", "large")]
    if args.taus:
        taus = _shares(args.taus)
        paper_tau = args.paper_tau if args.paper_tau is not None else taus[0]
        modes += [Mode("ours", "routed", taus[0]), Mode("paper", "routed", paper_tau, paper_faithful=True)]
        modes += [Mode(f"ours@tau={t:g}", "routed", t, sweep=True) for t in taus[1:]]
        return modes, None
    console.print(f"calibrating on {len(held_out)} held-out problems (small and large sample solutions)...")
    k = args.glimpse_tokens
    router_config = config.router.model_copy(update={"glimpse_tokens": k})
    samples = await collect_glimpses(small, large, [p.prompt for p in held_out], router_config, max_tokens=args.budget)
    rows = []
    main_exact = calibrate(samples, args.main_share, "exact")
    main_paper = calibrate(samples, args.main_share, "paper")
    modes += [
        Mode("ours", "routed", main_exact.threshold, target_share=args.main_share),
        Mode("paper", "routed", main_paper.threshold, paper_faithful=True, target_share=args.main_share),
    ]
    rows += [{"mode": "ours", **main_exact.to_dict()}, {"mode": "paper", **main_paper.to_dict()}]
    if k > 1:
        ahead = calibrate(samples, args.main_share, "look-ahead")
        modes.append(Mode(f"ours+k{k}", "routed", ahead.threshold, target_share=args.main_share, glimpse_tokens=k))
        rows.append({"mode": f"ours+k{k}", **ahead.to_dict()})
    for share in _shares(args.sweep_shares):
        c = calibrate(samples, share, "exact")
        name = f"ours@{share:.2f}"
        modes.append(Mode(name, "routed", c.threshold, target_share=share, sweep=True))
        rows.append({"mode": name, **c.to_dict()})
    calibration = {
        "description": (
            f"{len(samples)} glimpses of the small model at the step starts of small-only and large-only sample "
            f"solutions to {len(held_out)} held-out problems ({held_out[0].id} .. {held_out[-1].id}); tau = the "
            "(1 - share) quantile, per entropy kind."
            if held_out
            else "no held-out problems"
        ),
        "taus": rows,
        "quantiles": {"exact": main_exact.quantiles, "top-20 renormalised": main_paper.quantiles},
        "samples": {
            "exact": [s.exact for s in samples],
            "top-20 renormalised": [s.topk_renormalized for s in samples],
            **({f"look-ahead k={k}": [s.look_ahead for s in samples]} if k > 1 else {}),
        },
    }
    return modes, calibration


def build_document(
    args: argparse.Namespace,
    config: Any,
    modes: list[Any],
    records: list[Any],
    problems: list[Any],
    plan: Any,
    calibration: dict[str, Any] | None,
    started: str,
    t_start: float,
    small_model: str,
    large_model: str,
) -> dict[str, Any]:
    from glimp_llm.bench.runner import now_iso
    from glimp_llm.bench.stats import decode_speeds, percentile, summarize

    ids = {p.id for p in problems}
    records = [r for r in records if r.problem in ids]  # a resumed run cut short: only the evaluated range
    names = [m.name for m in modes]
    main_names = [m.name for m in modes if not m.sweep]
    sweep_ids = {p.id for p in problems[: plan.sweep_problems]}
    loads = [r.load1 for r in records] or [0.0]
    source = args.data or f"reasoning-gym gsm_symbolic seed {args.seed}"
    document: dict[str, Any] = {
        "schema": "glimp-bench/1",
        "meta": {
            "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": started,
            "finished": now_iso(),
            "elapsed_min": (time.time() - t_start) / 60.0,
            "dataset": f"{source}, problems [{args.offset}, {args.offset + len(problems)}), "
            f"sweep on the first {plan.sweep_problems}",
            "small_model": small_model,
            "large_model": large_model,
            "settings": (
                f"greedy, step delimiter {config.router.step_delimiter!r}, step cap {config.router.step_max_tokens}, "
                f"budget {plan.max_tokens} generated tokens, llama.cpp threads {args.n_threads or os.cpu_count()}, "
                "modes interleaved per problem, caches primed to the shared chat header before each run"
            ),
            "host": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "load": {"median": percentile(loads, 50), "max": max(loads), "min": min(loads)},
            "modes": [m.to_dict() for m in modes],
        },
        "summary": summarize([r for r in records if r.mode in main_names], main_names),
        "sweep_problems": plan.sweep_problems,
        "sweep_summary": summarize([r for r in records if r.problem in sweep_ids], names)
        if any(m.sweep for m in modes)
        else {},
        "speeds": decode_speeds(records),
        "calibration": calibration,
        "records": [r.to_dict() for r in records],
    }
    return document


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _plots(document: dict[str, Any], records: list[Any], modes: list[Any], out: Path, plots: Any) -> None:
    from glimp_llm.bench.report import sweep_points

    out.mkdir(parents=True, exist_ok=True)
    meta = document["meta"]
    pair = f"{meta['small_model']} -> {meta['large_model']}"
    source = document["sweep_summary"] or document["summary"]
    n = next(iter(source.values()))["n"] if source else 0
    plots.accuracy_vs_latency(
        sweep_points(source, meta["modes"]),
        out / "accuracy_vs_latency.png",
        title=f"Accuracy vs mean latency, same {n} problems ({pair})",
    )
    taus = {m.name: m.threshold for m in modes}
    series = {
        "exact (ours)": plots.glimpse_entropies(records, "ours"),
        "top-20 renormalised (paper)": plots.glimpse_entropies(records, "paper"),
    }
    plots.entropy_histogram(
        series,
        {"exact (ours)": taus.get("ours"), "top-20 renormalised (paper)": taus.get("paper")},  # type: ignore[dict-item]
        out / "entropy_histogram.png",
        title=f"Glimpse entropies of the small model in the routed runs ({pair})",
    )
    plots.time_breakdown(
        document["summary"], out / "time_breakdown.png", title=f"Where the time goes, mean per problem ({pair})"
    )
