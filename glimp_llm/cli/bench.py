"""``glimp bench``: the chosen modes on the same problems in one run, with a calibrated tau sweep.

Modes are named sets of router settings (:mod:`glimp_llm.bench.modes`): the single-model baselines, ours,
paper-faithful, the look-ahead glimpse, the random baseline at ours' share, each guard, all guards,
verification. ``--modes`` picks some (default: all); only what runs is calibrated, reported and drawn.
Unless taus are given, they are calibrated first on held-out problems (the ones right after the
evaluated range) for target shares of large-model steps, separately for each entropy kind, so that ours
and the paper's variant are compared at the same intervention rate rather than at the same number.

Why :func:`prepare` runs first: every input and output of an hour-long run is checked before the first
generation (see :mod:`glimp_llm.bench.preflight`); a run with ``--records`` resumes from the runs it
finished, and says so.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimp_llm.bench import preflight
from glimp_llm.bench.datasets import Problem, count_rows, load_problems
from glimp_llm.bench.modes import ModeSpec, Selection, TauKind, parse_modes, registry
from glimp_llm.bench.report import render_markdown, update_results_file, write_json
from glimp_llm.bench.runner import BenchPlan, Mode, ModeRunner, Record, load_average, now_iso, read_records, run_plan
from glimp_llm.bench.stats import decode_speeds, percentile, summarize
from glimp_llm.cli.common import add_config_options, config_from_args
from glimp_llm.cli.models import fetch_config_models
from glimp_llm.config import GlimpConfig
from glimp_llm.errors import ConfigurationError, EngineUnavailableError, GlimpError
from glimp_llm.manager import BackendManager

DEFAULT_SMALL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_LARGE = "qwen2.5-coder-1.5b-instruct"
DEFAULT_PLOTS = "benchmarks/plots"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmark small / large / routed / paper-faithful on the same problems")
    add_arguments(p)
    p.set_defaults(handler=main)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_options(p)
    d = p.add_argument_group("problems")
    d.add_argument("--data", metavar="FILE", help="GSM8K-format JSONL (default: reasoning-gym gsm_symbolic, seeded)")
    d.add_argument("--seed", type=int, default=42, help="seed of the generated dataset and of the random mode")
    d.add_argument("--offset", type=int, default=0, help="first problem")
    d.add_argument("--limit", type=int, default=100, help="number of evaluated problems")
    r = p.add_argument_group("modes and taus")
    r.add_argument(
        "--modes",
        metavar="LIST",
        help="comma-separated modes to run, e.g. large,ours (default: all). Modes: "
        + ", ".join(registry())
        + "; 'sweep' adds ours at the --sweep-shares. They run in that order per problem, whatever the order here",
    )
    r.add_argument("--main-share", type=float, default=0.5, help="target large-step share of the main routed modes")
    r.add_argument("--sweep-shares", default="0.2,0.8", help="extra target shares for ours (comma-separated)")
    r.add_argument("--sweep-problems", type=int, default=20, help="the sweep runs on the first N problems")
    r.add_argument("--calibrate-problems", type=int, default=8, help="held-out problems (after the evaluated ones)")
    r.add_argument("--taus", help="explicit taus for ours instead of calibration: MAIN[,SWEEP...]")
    r.add_argument(
        "--lookahead-tokens",
        type=int,
        default=8,
        metavar="K",
        help="look-ahead width K of the mode ours+kK (its router.glimpse_tokens; every other mode glimpses one "
        "token), calibrated at the main share; 1 leaves that mode out",
    )
    r.add_argument("--paper-tau", type=float, help="explicit tau for the paper-faithful mode")
    r.add_argument("--lookahead-tau", type=float, help="explicit tau for the look-ahead mode ours+kK")
    r.add_argument(
        "--random-share",
        type=float,
        metavar="S",
        help="large-step probability of the random mode (default: the share ours measured on the same problems)",
    )
    r.add_argument("--step-cap", type=int, default=256, help="tokens per step at most")
    r.add_argument("--budget", type=int, default=768, help="generated tokens per problem at most")
    r.add_argument("--n-threads", type=int, help="llama.cpp threads per model (default: all cores)")
    o = p.add_argument_group("output")
    o.add_argument("--json", default="benchmarks/results.json", metavar="FILE", help="the run as JSON")
    o.add_argument("--results-md", default="benchmarks/RESULTS.md", metavar="FILE", help="Markdown tables go here")
    o.add_argument(
        "--plots",
        metavar="DIR",
        help=f"PNG figures go here (default: {DEFAULT_PLOTS}; needs the bench extra: given explicitly, a missing "
        "matplotlib is an error before the run; by default the plots are skipped with a warning)",
    )
    o.add_argument("--no-plots", action="store_true", help="draw no figures")
    o.add_argument("--records", metavar="FILE", help="append each run to this JSONL (resumes when it exists)")
    o.add_argument("--quiet", action="store_true", help="no per-run lines")


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigurationError(f"{flag} {text!r}: not a comma-separated list of numbers ({exc})") from exc


def _share(value: float, flag: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"{flag} must be within 0..1 (a share of steps); got {value}")
    return value


def _sample_keys(lookahead_tokens: int) -> dict[str, str]:
    """Each entropy kind's calibration samples, as the meta file keys them."""
    return {"exact": "exact", "paper": "top-20 renormalised", "look-ahead": f"look-ahead k={lookahead_tokens}"}


def _say(console: Any, text: str) -> None:
    """One plain line (no markup: paths and mode names are printed as they are)."""
    console.print(text, highlight=False, soft_wrap=True, markup=False)


@dataclass
class Prepared:
    """Everything ``glimp bench`` decided and checked before its engines start: the run needs nothing
    else that could fail late (short of the engines themselves)."""

    config: GlimpConfig
    selection: Selection
    problems: list[Problem]
    held_out: list[Problem]
    plots: Path | None
    meta_path: Path | None
    done: list[Record] = field(default_factory=list)
    saved: dict[str, Any] | None = None
    explicit_taus: dict[str, float] = field(default_factory=dict)
    sweep: list[tuple[str, float | None, float | None]] = field(default_factory=list)  # (name, tau, share)


def prepare(args: argparse.Namespace, warn: Callable[[str], None]) -> Prepared:
    """Check every input and output of the run and resolve what can be resolved without an engine.
    Raises the typed error (with the fix) of the first problem found."""
    if args.lookahead_tokens < 1:
        raise ConfigurationError(f"--lookahead-tokens must be >= 1; got {args.lookahead_tokens}")
    if args.limit < 1 or args.offset < 0 or args.calibrate_problems < 0 or args.sweep_problems < 0:
        raise ConfigurationError("--limit must be >= 1, and --offset, --calibrate-problems, --sweep-problems >= 0")
    selection = parse_modes(args.modes, registry(args.lookahead_tokens))
    _share(args.main_share, "--main-share")
    if args.random_share is not None:
        _share(args.random_share, "--random-share")
    taus = _floats(args.taus, "--taus") if args.taus else []
    if args.taus and not taus:
        raise ConfigurationError(f"--taus {args.taus!r} names no tau; pass MAIN[,SWEEP...]")
    explicit: dict[str, float] = {"exact": taus[0], "paper": taus[0]} if taus else {}
    if args.paper_tau is not None:
        explicit["paper"] = args.paper_tau
    if args.lookahead_tau is not None:
        explicit["look-ahead"] = args.lookahead_tau
    sweep: list[tuple[str, float | None, float | None]] = []
    if selection.sweep and args.sweep_problems > 0:
        if taus:
            sweep = [(f"ours@tau={t:g}", t, None) for t in taus[1:]]
        else:
            shares = _floats(args.sweep_shares, "--sweep-shares")
            sweep = [(f"ours@{s:.2f}", None, _share(s, "--sweep-shares")) for s in shares]
    if selection.explicit and selection.sweep and not sweep:
        raise ConfigurationError(
            "--modes names 'sweep' but there is nothing to sweep: pass --sweep-shares (or extra --taus) and "
            "--sweep-problems > 0"
        )
    if not selection.specs and not sweep:
        raise ConfigurationError("--modes selects nothing to run; name at least one mode")

    config = build_config(args)
    preflight.check_models(config)

    # Resume: the records of an earlier run and its modes, taus and calibration.
    meta_path: Path | None = None
    done: list[Record] = []
    saved: dict[str, Any] | None = None
    if args.records:
        preflight.check_writable(args.records, "--records")
        meta_path = Path(args.records + ".meta.json")
        preflight.check_writable(meta_path, "--records (its .meta.json)")
        if Path(args.records).is_file():
            done = read_records(args.records)
        if meta_path.is_file():
            try:
                saved = json.loads(meta_path.read_text(encoding="utf-8"))
                [Mode.from_dict(m) for m in saved["modes"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigurationError(
                    f"{meta_path}: not the meta file of a benchmark run ({exc}); delete it (the taus are "
                    "calibrated again) or pass a new --records file"
                ) from exc

    saved_names = {m["name"] for m in saved["modes"]} if saved else set()
    if args.random_share is None:
        for name in {s.share_of for s in selection.specs if s.share_of}:
            if name not in selection.names and not any(r.mode == name for r in done):
                raise ConfigurationError(
                    f"the random mode takes its large-step share from {name} on the same problems: add {name} to "
                    "--modes, or pass --random-share S"
                )
    kinds = {s.tau for s in selection.specs if s.tau and s.name not in saved_names and s.tau not in explicit}
    if any(name not in saved_names and tau is None for name, tau, _ in sweep):
        kinds.add("exact")
    # a calibration runs unless the saved samples hold every entropy kind still to calibrate
    reusable = set(((saved or {}).get("calibration") or {}).get("samples", {}))
    collect = not {_sample_keys(args.lookahead_tokens)[k] for k in kinds} <= reusable

    # Problems: the evaluated range and, when a calibration will run, the held-out ones right after it.
    problems = load_problems(args.data, offset=args.offset, limit=args.limit, seed=args.seed)
    total = count_rows(args.data) if args.data else None
    preflight.check_problem_count(
        len(problems),
        args.limit,
        source=f"--data {args.data}" if args.data else f"reasoning-gym gsm_symbolic (seed {args.seed})",
        what=f"--offset {args.offset} --limit {args.limit} asks for (it has {total} in all)",
        fix=f"lower --limit to {len(problems)} or --offset" if problems else "lower --offset",
    )
    held_out: list[Problem] = []
    if collect:
        if args.calibrate_problems < 1:
            raise ConfigurationError(
                f"modes {', '.join(sorted(kinds))} need a calibrated tau and --calibrate-problems is 0: pass "
                "--calibrate-problems N, or the taus (--taus, --paper-tau, --lookahead-tau)"
            )
        first = args.offset + args.limit
        held_out = load_problems(args.data, offset=first, limit=args.calibrate_problems, seed=args.seed)
        last = first + args.calibrate_problems - 1
        preflight.check_problem_count(
            len(held_out),
            args.calibrate_problems,
            source=f"--data {args.data}",
            what=f"the calibration needs after the evaluated ones (problems {first}..{last})",
            fix="lower --calibrate-problems, --limit or --offset, or pass the taus (--taus, --paper-tau, "
            "--lookahead-tau)",
        )

    # Outputs, all before the first generation.
    preflight.check_writable(args.json, "--json")
    preflight.check_writable(args.results_md, "--results-md")
    plots = preflight.plots_dir(args.plots, disabled=args.no_plots, default=DEFAULT_PLOTS, warn=warn)
    if plots is not None:
        preflight.check_writable(plots, "--plots", directory=True)
    return Prepared(config, selection, problems, held_out, plots, meta_path, done, saved, explicit, sweep)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    prepared = prepare(args, lambda text: _warn(console, text))
    fetch_config_models(prepared.config, console)  # a first run downloads with a progress bar
    try:
        return asyncio.run(run(args, prepared, console))
    except KeyboardInterrupt:
        if args.records:
            try:
                n = len(read_records(args.records)) if Path(args.records).is_file() else 0
            except GlimpError:
                n = 0
            _say(
                console,
                f"interrupted: {n} finished runs are in {args.records}; rerun the same command to resume from them",
            )
        else:
            _say(console, "interrupted: the finished runs are lost (pass --records FILE to make a run resumable)")
        raise


def _warn(console: Any, text: str) -> None:
    """One warning line (escaped: "glimp-llm[bench]" is not a style tag)."""
    from rich.markup import escape

    console.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


def build_config(args: argparse.Namespace) -> GlimpConfig:
    """The GlimpConfig of the run: the Qwen pair unless a config/--small/--large says otherwise, greedy,
    the step cap and budget of the run."""
    if not args.config:
        args.small = args.small or DEFAULT_SMALL
        args.large = args.large or DEFAULT_LARGE
    config = config_from_args(args)
    data = config.model_dump()
    for role in ("small", "large"):
        if data[role]["kind"] == "llama_cpp" and args.n_threads:
            data[role]["n_threads"] = args.n_threads
    data["router"].update(step_max_tokens=args.step_cap, max_tokens=args.budget)
    if args.temperature is None:
        data["router"]["sampling"] = {**data["router"]["sampling"], "temperature": 0.0}
    return GlimpConfig.validated(data)


async def run(args: argparse.Namespace, prep: Prepared, console: Any) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from glimp_llm.render import entropy_histogram

    t_start = time.time()
    started = (prep.saved or {}).get("started") or now_iso()
    config, problems = prep.config, prep.problems

    async with BackendManager(config) as manager:
        small, large = manager.small, manager.large
        selection = _check_scoring(prep.selection, large, console)
        runner = ModeRunner(small, large, config.router)
        modes, calibration = await _choose_modes(args, prep, selection, small, large, console)
        if prep.meta_path is not None:
            prep.meta_path.parent.mkdir(parents=True, exist_ok=True)
            _write_meta(prep.meta_path, prep.saved, modes, calibration, started)
        plan = BenchPlan(modes, max_tokens=args.budget, sweep_problems=min(args.sweep_problems, len(problems)))
        runs = plan.runs(problems)
        wanted = {(p.id, m.name) for p, m in runs}
        done = [r for r in prep.done if (r.problem, r.mode) in wanted]
        if args.records and done:
            _say(
                console,
                f"resuming from {args.records}: {len(done)} of {len(runs)} runs already done, "
                f"{len(runs) - len(done)} to go",
            )
        elif args.records:
            _say(console, f"recording each run to {args.records} (an interrupted run resumes from it)")
        _say(console, f"modes: {', '.join(m.name for m in modes)} on {len(problems)} problems")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("benchmark", total=len(runs), completed=len(done))

            def on_record(r: Record) -> None:
                progress.advance(task)
                if not args.quiet:
                    progress.console.print(
                        f"{r.problem:>18} {r.mode:<14} {'ok ' if r.correct else 'bad'} {r.wall_s:6.2f} s "
                        f"S{r.small_tokens:>4} L{r.large_tokens:>4} load {r.load1:.2f}",
                        highlight=False,
                    )

            # every saved record of these problems goes in (the random mode reads ours' share from them, also
            # when ours ran in an earlier command); the document keeps only the modes of this one
            ids = {p.id for p in problems}
            earlier = [r for r in prep.done if r.problem in ids]
            records = await run_plan(runner, problems, plan, jsonl=args.records, on_record=on_record, done=earlier)
        small_model, large_model = small.info.model, large.info.model

    document = build_document(
        args, config, modes, records, problems, plan, calibration, started, t_start, small_model, large_model
    )
    write_json(args.json, document)
    update_results_file(args.results_md, render_markdown(document))
    if prep.plots is not None:
        from glimp_llm.bench import plots

        plots.draw_all(document, records, modes, prep.plots)
    for name, row in document["summary"].items():
        _say(
            console,
            f"{name:<14} acc {row['accuracy']:.3f} ± {row['accuracy_se']:.3f}  median {row['latency_median_s']:.2f} s"
            f"  vs large {row.get('latency_ratio_mean', float('nan')):.3f}  large steps "
            f"{row['large_step_share']:.3f}  large tokens {row['large_token_share']:.3f}",
        )
    exact = [h for r in records if r.mode == "ours" for h in r.entropies if h is not None]
    if exact:
        main_tau = next((m.threshold for m in modes if m.name == "ours"), None)
        console.print(entropy_histogram(exact, threshold=main_tau))
    wrote = [args.json, args.results_md] + ([f"{prep.plots}/*.png"] if prep.plots is not None else [])
    _say(console, f"wrote {', '.join(wrote)} ({load_average():.2f} load)")
    return 0


def _check_scoring(selection: Selection, large: Any, console: Any) -> Selection:
    """Verification needs the large engine's ``score``. Named in --modes: a typed error now; only in the
    default set: those modes are dropped, with one warning (the other modes still run)."""
    if large.info.can_score:
        return selection
    needing = [s.name for s in selection.specs if s.needs_scoring]
    if not needing:
        return selection
    why = f"the large engine ({large.info.model}) cannot score tokens (EngineInfo.can_score is false)"
    if selection.explicit:
        raise EngineUnavailableError(
            f"--modes {', '.join(needing)}: verification needs a large engine that can score tokens, and {why}; "
            "use one that can (llama.cpp in-process, TensorRT-LLM with context logits, a server that returns "
            f"prompt log-probabilities), or drop {', '.join(needing)} from --modes"
        )
    _warn(console, f"skipping {', '.join(needing)}: {why}")
    return selection.without(needing)


async def _choose_modes(
    args: argparse.Namespace, prep: Prepared, selection: Selection, small: Any, large: Any, console: Any
) -> tuple[list[Mode], dict[str, Any] | None]:
    """The resolved modes of the run, each with its tau: from the meta file of the run being resumed,
    from explicit taus, or calibrated (on the saved calibration samples when they have the kind needed,
    else on the held-out problems)."""
    from glimp_llm.calibrate import Calibration, calibrate_values, collect_glimpses, quantiles

    saved_modes = {m["name"]: Mode.from_dict(m) for m in (prep.saved or {}).get("modes", [])}
    calibration: dict[str, Any] | None = (prep.saved or {}).get("calibration")
    k = args.lookahead_tokens
    keys = _sample_keys(k)
    samples: dict[str, list[float]] = dict((calibration or {}).get("samples", {}))
    if prep.held_out:
        held_out = prep.held_out
        console.print(f"calibrating on {len(held_out)} held-out problems (small and large sample solutions)...")
        router_config = prep.config.router.model_copy(update={"glimpse_tokens": k, "forced_entropy": 0.0})
        glimpses = await collect_glimpses(
            small, large, [p.prompt for p in held_out], router_config, max_tokens=args.budget
        )
        kinds: list[TauKind] = ["exact", "paper", "look-ahead"] if k > 1 else ["exact", "paper"]
        samples = {keys[kind]: [s.value(kind) for s in glimpses] for kind in kinds}
        calibration = {
            "description": (
                f"{len(glimpses)} glimpses of the small model at the step starts of small-only and large-only "
                f"sample solutions to {len(held_out)} held-out problems ({held_out[0].id} .. {held_out[-1].id}); "
                "tau = the (1 - share) quantile, per entropy kind. The guard and verification modes use ours' tau."
            ),
            "taus": [row for row in (calibration or {}).get("taus", []) if row["mode"] in saved_modes],
            "quantiles": {},
            "samples": samples,
        }
    rows: list[dict[str, Any]] = []
    calibrated: dict[str, Calibration] = {}  # one calibration per kind; the guard modes share ours'

    def calibrate(kind: TauKind, share: float, row_name: str) -> Calibration:
        result = calibrate_values(samples[keys[kind]], share, kind)
        rows.append({"mode": row_name, **result.to_dict()})
        return result

    modes: list[Mode] = []
    for spec in selection.specs:
        if spec.name in saved_modes:
            modes.append(saved_modes[spec.name])
        elif spec.tau is None:
            modes.append(mode_of(spec, None, None, args))
        elif spec.tau in prep.explicit_taus:
            modes.append(mode_of(spec, prep.explicit_taus[spec.tau], None, args))
        else:
            if spec.tau not in calibrated:
                calibrated[spec.tau] = calibrate(spec.tau, args.main_share, spec.name)
            modes.append(mode_of(spec, calibrated[spec.tau].threshold, args.main_share, args))
    for name, tau, share in prep.sweep:
        if name in saved_modes:
            modes.append(saved_modes[name])
            continue
        if tau is None and share is not None:  # a target share (else an explicit tau)
            tau = calibrate("exact", share, name).threshold
        modes.append(
            Mode(name, "routed", tau, target_share=share, sweep=True, description="ours at another tau (sweep)")
        )
    if calibration is not None:
        seen = {row["mode"] for row in rows}
        calibration["taus"] = [r for r in calibration.get("taus", []) if r["mode"] not in seen] + rows
        calibration["quantiles"] = {
            kind: quantiles(samples[kind]) for kind in ("exact", "top-20 renormalised") if samples.get(kind)
        }
    return modes, calibration


def mode_of(spec: ModeSpec, tau: float | None, target: float | None, args: argparse.Namespace) -> Mode:
    """A registry entry resolved for this run: its tau, and for the random baseline its seed and share
    (explicit ``--random-share``, else taken at run time from the mode it names)."""
    overrides = dict(spec.overrides)
    paper = bool(overrides.pop("paper_faithful", False))
    k = int(overrides.pop("glimpse_tokens", 1))
    share_of = spec.share_of
    if overrides.get("routing") == "random":
        overrides["random_seed"] = args.seed
        if args.random_share is not None:
            overrides["random_large_share"] = args.random_share
            share_of = None
    return Mode(
        spec.name,
        spec.kind,
        tau,
        paper_faithful=paper,
        target_share=target,
        glimpse_tokens=k,
        overrides=overrides,
        share_of=share_of,
        description=spec.description,
    )


def _write_meta(
    path: Path, saved: dict[str, Any] | None, modes: list[Mode], calibration: dict[str, Any] | None, started: str
) -> None:
    """The modes (with their taus) and calibration of the run, merged with those of the run it resumes,
    so a later run with other --modes keeps every tau already used."""
    merged = {m["name"]: m for m in (saved or {}).get("modes", [])}
    merged.update({m.name: m.to_dict() for m in modes})
    path.write_text(
        json.dumps({"modes": list(merged.values()), "calibration": calibration, "started": started}), encoding="utf-8"
    )


def build_document(
    args: argparse.Namespace,
    config: GlimpConfig,
    modes: list[Mode],
    records: list[Record],
    problems: list[Problem],
    plan: BenchPlan,
    calibration: dict[str, Any] | None,
    started: str,
    t_start: float,
    small_model: str,
    large_model: str,
) -> dict[str, Any]:
    ids = {p.id for p in problems}
    names = [m.name for m in modes]
    # Only what this run covers: the evaluated range and the chosen modes (a records file can hold more).
    records = [r for r in records if r.problem in ids and r.mode in names]
    main_names = [m.name for m in modes if not m.sweep]
    sweep_ids = {p.id for p in problems[: plan.sweep_problems]}
    loads = [r.load1 for r in records] or [0.0]
    source = args.data or f"reasoning-gym gsm_symbolic seed {args.seed}"
    return {
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
