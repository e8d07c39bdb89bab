"""Micro-benchmarks, each printed as a ratio measured in one run (run by ``benchmarks/micro.py``; kept out of the
wheel: it starts llama.cpp servers from this repository's ``backends/``).

* Glimpse cost with ~2,000 vs ~200 tokens of context. The router glimpses after every step, so with
  prefix reuse a glimpse evaluates only the step just appended; its cost should barely grow with the
  context (the ratio is close to 1; without reuse it would grow about tenfold). Each timed glimpse extends
  a primed context by one step of ``step_tokens`` tokens; the two lengths are measured alternately so
  that load drift on a shared machine hits both alike.
* Router overhead: wall time / time inside engine calls - 1, over routed requests.
* Concurrency: throughput (generated tokens per second) of ``n`` routed requests at once over the same
  requests one at a time, on a batching engine (llama.cpp's server with parallel slots, driven through
  the OpenAI-compatible engine), next to the same servers' own speed-up on plain completions (no
  routing, ``n`` at once per server over one at a time). A routed speed-up alone does not say whether
  the router is at fault when it is low: the engine may simply not batch well on the hardware. Their
  ratio, "batching kept", does (goal: at least 0.9).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Engine, SamplingParams
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import RoutedResult

LAUNCH = Path(__file__).resolve().parents[1] / "backends" / "llama_cpp" / "launch.py"


async def glimpse_cost_ratio(
    engine: Engine,
    tokens: Sequence[int],
    *,
    short: int = 200,
    long: int = 2000,
    step_tokens: int = 40,
    repeats: int = 7,
) -> dict[str, Any]:
    """Median glimpse time after a ``step_tokens`` extension of a ``long`` vs a ``short`` context.

    As in a routed request, each context grows by one step per glimpse. The short and the long sequence
    are different texts and are glimpsed alternately, so the engine needs two slots (prefix affinity keeps
    each sequence in its own KV cache), which is what an engine serving two requests does anyway."""
    need = long + short + 2 * step_tokens * (repeats + 1)
    if len(tokens) < need:
        raise ValueError(f"need {need} tokens of text, got {len(tokens)}")
    greedy = SamplingParams()
    sequences = {long: list(tokens[: long + step_tokens * repeats])}
    sequences[short] = list(tokens[len(sequences[long]) : len(sequences[long]) + short + step_tokens * repeats])
    for n, seq in sequences.items():
        await engine.glimpse(seq[:n], greedy)  # prime: the cache holds the first n tokens
    times: dict[int, list[float]] = {short: [], long: []}
    evaluated: dict[int, list[int]] = {short: [], long: []}
    for r in range(repeats):
        for n in (short, long) if r % 2 == 0 else (long, short):
            context = sequences[n][: n + step_tokens * (r + 1)]
            before = engine.stats.tokens_evaluated
            t0 = time.perf_counter()
            await engine.glimpse(context, greedy)
            times[n].append(time.perf_counter() - t0)
            evaluated[n].append(engine.stats.tokens_evaluated - before)
    med = {n: float(np.median(v)) for n, v in times.items()}
    return {
        "ratio": med[long] / med[short],
        "short_ms": 1000 * med[short],
        "long_ms": 1000 * med[long],
        "tokens_evaluated_per_glimpse": {str(n): int(np.median(v)) for n, v in evaluated.items()},
        "detail": (
            f"median glimpse after a {step_tokens}-token step: {1000 * med[long]:.1f} ms with ~{long} tokens of "
            f"context vs {1000 * med[short]:.1f} ms with ~{short} ({repeats} each, alternated); tokens evaluated "
            f"per glimpse {int(np.median(evaluated[long]))} / {int(np.median(evaluated[short]))} (prefix reuse)"
        ),
    }


def overhead_ratio(results: Sequence[RoutedResult]) -> dict[str, Any]:
    """wall / time inside engine calls - 1, summed over ``results``."""
    wall = sum(r.timings.wall_seconds - r.timings.queue_seconds for r in results)
    inside = sum(r.timings.engine_seconds for r in results)
    ratio = wall / inside - 1.0 if inside else float("nan")
    return {
        "ratio": ratio,
        "wall_s": wall,
        "engine_s": inside,
        "detail": f"{len(results)} routed requests: {wall:.2f} s wall, {inside:.2f} s inside engine calls",
    }


async def route_all(router: Router, prompts: Sequence[str], max_tokens: int) -> list[RoutedResult]:
    return [await router.generate(RouteRequest(prompt=p, max_tokens=max_tokens)) for p in prompts]


@dataclass(frozen=True)
class Throughput:
    """Generated tokens and the wall seconds they took, for one phase of the concurrency measurement."""

    tokens: int
    seconds: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"tokens": self.tokens, "seconds": self.seconds, "tok_s": self.tok_s}


def speedup(one: Throughput, many: Throughput) -> float:
    """Tokens/s at once over tokens/s one at a time: token counts may differ (a request can end early)."""
    return many.tok_s / one.tok_s if one.tok_s > 0 else float("nan")


async def routed_phase(
    router: Router, prompts: Sequence[str], max_tokens: int, *, at_once: bool
) -> tuple[Throughput, list[RoutedResult]]:
    """The routed requests of ``prompts``, all at once or one after the other."""
    requests = [RouteRequest(prompt=p, max_tokens=max_tokens) for p in prompts]
    t0 = time.perf_counter()
    if at_once:
        results = list(await asyncio.gather(*(router.generate(r) for r in requests)))
    else:
        results = [await router.generate(r) for r in requests]
    seconds = time.perf_counter() - t0
    return Throughput(sum(r.usage.completion_tokens for r in results), seconds), results


async def raw_phase(
    engines: Mapping[str, Engine], contexts: Mapping[str, Sequence[Sequence[int]]], max_tokens: int, *, at_once: bool
) -> dict[str, Throughput]:
    """Plain completions (no stop string, no routing) of every context on its engine: per engine and "all".

    One at a time, the engines take turns per prompt, as a routed request uses one server at a time; at
    once, every engine gets all its contexts together, so each server batches ``len(contexts[name])``
    sequences while the other server works on its own core, as in the routed run. Per engine, the seconds
    are its own calls' (one at a time) or the time until its last completion (at once)."""
    greedy = SamplingParams()
    tokens = dict.fromkeys(engines, 0)
    seconds = dict.fromkeys(engines, 0.0)

    async def one(name: str, context: Sequence[int]) -> None:
        t0 = time.perf_counter()
        completion = await engines[name].generate(context, max_tokens=max_tokens, sampling=greedy)
        tokens[name] += len(completion.token_ids)
        if not at_once:
            seconds[name] += time.perf_counter() - t0

    start = time.perf_counter()
    if at_once:

        async def group(name: str) -> None:
            await asyncio.gather(*(one(name, c) for c in contexts[name]))
            seconds[name] = time.perf_counter() - start

        await asyncio.gather(*(group(name) for name in engines))
    else:
        for i in range(max(len(c) for c in contexts.values())):
            for name in engines:
                if i < len(contexts[name]):
                    await one(name, contexts[name][i])
    wall = time.perf_counter() - start
    out = {name: Throughput(tokens[name], seconds[name]) for name in engines}
    out["all"] = Throughput(sum(tokens.values()), wall)
    return out


def engine_occupancy(results: Sequence[RoutedResult], seconds: float) -> dict[str, float]:
    """Mean number of routed requests inside a call to each server, and outside any engine call, over a
    phase of ``seconds`` (Little's law: summed time in a state / phase length). With ``n`` requests at
    once the three add up to about ``n``; a server whose share stays far below ``n`` batches few sequences,
    and a large "router" share means the requests wait in the router (admission, locks, Python)."""
    if seconds <= 0:
        return {"small": float("nan"), "large": float("nan"), "router": float("nan")}
    small = sum(r.timings.glimpse_seconds + r.timings.small_seconds for r in results)
    large = sum(r.timings.large_seconds + r.timings.verify_seconds for r in results)
    outside = sum(max(0.0, r.timings.wall_seconds - r.timings.engine_seconds) for r in results)
    return {"small": small / seconds, "large": large / seconds, "router": outside / seconds}


def time_split(results: Sequence[RoutedResult]) -> dict[str, float]:
    """Share of the routed requests' engine time spent on each server (glimpses count as the small one's)."""
    inside = sum(r.timings.engine_seconds for r in results)
    if inside <= 0:
        return {"small": float("nan"), "large": float("nan"), "glimpse": float("nan")}
    return {
        "small": sum(r.timings.glimpse_seconds + r.timings.small_seconds for r in results) / inside,
        "large": sum(r.timings.large_seconds + r.timings.verify_seconds for r in results) / inside,
        "glimpse": sum(r.timings.glimpse_seconds for r in results) / inside,
    }


def batching_kept(routed: float, raw: float) -> float:
    """The share of the engine's own speed-up that the router keeps: routed speed-up / raw speed-up."""
    return routed / raw if raw > 0 else float("nan")


async def concurrency_comparison(router: Router, prompts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    """Routed and raw speed-up of ``len(prompts)`` requests at once over one at a time, on the router's two
    engines, and their ratio ("batching kept").

    The four phases run in the order routed one-at-a-time, raw one-at-a-time, raw at once, routed at once,
    so that a load that drifts linearly on a shared machine hits the routed and the raw ratio alike. Raw
    requests are the same prompts as the routed ones (the same chat-rendered token ids), completed for up to
    ``max_tokens`` tokens on each engine, with no stop string."""
    engines: dict[str, Engine] = {"small": router.small, "large": router.large}
    contexts = {
        name: [await router.prepare_prompt(RouteRequest(prompt=p, max_tokens=max_tokens), e) for p in prompts]
        for name, e in engines.items()
    }
    await router.generate(RouteRequest(prompt=prompts[0], max_tokens=8))  # warm both servers
    await raw_phase(engines, {n: c[:1] for n, c in contexts.items()}, 8, at_once=False)
    loads_start = load_averages()
    routed_one, one_results = await routed_phase(router, prompts, max_tokens, at_once=False)
    raw_one = await raw_phase(engines, contexts, max_tokens, at_once=False)
    raw_many = await raw_phase(engines, contexts, max_tokens, at_once=True)
    routed_many, many_results = await routed_phase(router, prompts, max_tokens, at_once=True)
    return concurrency_report(
        len(prompts),
        routed_one=routed_one,
        routed_many=routed_many,
        raw_one=raw_one,
        raw_many=raw_many,
        split=time_split(one_results),
        occupancy=engine_occupancy(many_results, routed_many.seconds),
        loads=(loads_start, load_averages()),
    )


def concurrency_report(
    n: int,
    *,
    routed_one: Throughput,
    routed_many: Throughput,
    raw_one: Mapping[str, Throughput],
    raw_many: Mapping[str, Throughput],
    split: Mapping[str, float],
    occupancy: Mapping[str, float],
    loads: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
) -> dict[str, Any]:
    """The JSON entry of the concurrency measurement: ``ratio`` stays the routed speed-up (as before),
    ``raw_ratio`` the engines' own, ``batching_kept`` their ratio; the rest explains them."""
    routed = speedup(routed_one, routed_many)
    raw = speedup(raw_one["all"], raw_many["all"])
    per_engine = {name: speedup(raw_one[name], raw_many[name]) for name in raw_one if name != "all"}
    kept = batching_kept(routed, raw)
    engines_text = ", ".join(f"{name} {s:.2f}x" for name, s in per_engine.items())
    detail = (
        f"routed: {n} at once {routed_many.tokens} tokens in {routed_many.seconds:.1f} s "
        f"({routed_many.tok_s:.1f} tok/s) vs one at a time {routed_one.tokens} in {routed_one.seconds:.1f} s "
        f"({routed_one.tok_s:.1f} tok/s); raw plain completions, {n} at once per server on both servers: "
        f"{raw_many['all'].tokens} tokens in {raw_many['all'].seconds:.1f} s ({raw_many['all'].tok_s:.1f} tok/s) vs "
        f"one at a time {raw_one['all'].tokens} in {raw_one['all'].seconds:.1f} s ({raw_one['all'].tok_s:.1f} tok/s); "
        f"raw per server {engines_text}; routed engine time one at a time: small "
        f"{100 * split['small']:.0f} % (glimpses {100 * split['glimpse']:.0f} %), large {100 * split['large']:.0f} %; "
        f"routed requests at once, mean in flight: small server {occupancy['small']:.1f}, large "
        f"{occupancy['large']:.1f}, outside engine calls {occupancy['router']:.2f}"
    )
    out: dict[str, Any] = {
        "ratio": routed,
        "raw_ratio": raw,
        "batching_kept": kept,
        "raw_ratio_per_engine": per_engine,
        "sequential_tok_s": routed_one.tok_s,
        "concurrent_tok_s": routed_many.tok_s,
        "routed": {"one": routed_one.as_dict(), "many": routed_many.as_dict()},
        "raw": {
            "one": {k: v.as_dict() for k, v in raw_one.items()},
            "many": {k: v.as_dict() for k, v in raw_many.items()},
        },
        "routed_engine_time_split": dict(split),
        "routed_in_flight": dict(occupancy),
        "detail": detail,
    }
    if loads is not None:
        out["load_averages"] = {"start": list(loads[0]), "end": list(loads[1])}
    return out


def render_block(result: Mapping[str, Any]) -> str:
    """The generated micro-benchmark block of RESULTS.md, from micro.json's content (its one generator:
    ``benchmarks/micro.py`` writes the JSON, then this block from it; ``--render-only`` redoes the block)."""
    lines = ["### Micro-benchmarks", "", f"tau {result['tau']:.4g}. Each figure with the command that measured it:", ""]
    by_command: dict[str, list[str]] = {}
    for key in PART_KEYS:
        item = result.get(key)
        if item is not None:
            by_command.setdefault(_part_origin(result, item), []).append(PART_KEYS[key])
    for origin, parts in by_command.items():
        lines.append(f"- {', '.join(parts)}: {origin}")
    lines.append("")
    names = {
        "glimpse_cost_2000_over_200": "glimpse cost, 2,000 / 200 tokens of context",
        "router_overhead": "router overhead (wall / inside engine calls - 1)",
        "concurrency_8_over_1": "throughput, {n} concurrent routed requests / 1",
    }
    n = result.get("concurrency_8_over_1", {}).get("n", result.get("concurrency", 8))
    for key, label in names.items():
        item = result.get(key)
        if item is None:
            continue
        label = label.format(n=n)
        if "missing" in item:
            lines.append(f"- **{label}**: not measured: {item['missing']}")
        elif key == "concurrency_8_over_1" and "raw_ratio" in item:
            lines.append(f"- **{label}: {item['ratio']:.3f}** ({item['detail']})")
            lines.append(
                f"- **throughput, {n} concurrent plain completions / 1 on the same servers (raw engine, no routing): "
                f"{item['raw_ratio']:.3f}**"
            )
            verdict = "met" if item["batching_kept"] >= 0.9 else "below the 0.9 goal"
            if item["batching_kept"] > 1 and "routed" in item and "raw" in item:
                verdict += (
                    "; above 1 because routed requests one at a time use the servers less fully than plain "
                    f"completions ({item['routed']['one']['tok_s']:.1f} vs {item['raw']['one']['all']['tok_s']:.1f} "
                    "tok/s: a glimpse round trip and a new server request per step, the other model's step to read "
                    "first), "
                    "and running them together fills those gaps too"
                )
            lines.append(
                f"- **batching kept (routed / raw speed-up): {item['batching_kept']:.3f}** ({verdict})"
                + _loads_text(item.get("load_averages"))
                + (f"; {item['note']}" if item.get("note") else "")
            )
        else:
            value = f"{100 * item['ratio']:.2f}%" if key == "router_overhead" else f"{item['ratio']:.3f}"
            lines.append(f"- **{label}: {value}** ({item['detail']})")
    return "\n".join(lines) + "\n"


def _loads_text(loads: Mapping[str, Sequence[float]] | None) -> str:
    if not loads:
        return ""

    def three(v: Sequence[float]) -> str:
        return "/".join(f"{x:.2f}" for x in v)

    return (
        f"; load averages (1/5/15 min) {three(loads['start'])} at the start of the concurrency measurement, "
        f"{three(loads['end'])} at its end"
    )


PART_KEYS = {
    "glimpse_cost_2000_over_200": "glimpse",
    "router_overhead": "overhead",
    "concurrency_8_over_1": "concurrency",
}
"""micro.json's key of each part, and its --skip name."""


def _part_origin(result: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    command = item.get("command", result.get("command", "benchmarks/micro.py"))
    load = item.get("load1", [result.get("load1_start"), result.get("load1_end")])
    when = f", {item['date']}" if item.get("date") else ""
    if None in load:
        return f"`{command}`{when}"
    return f"`{command}`{when} (1-min load average {load[0]:.2f} at the start, {load[1]:.2f} at the end)"


def merge_runs(earlier: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """micro.json after a run: each part measured by ``new`` replaces the earlier one, the others stay.

    Every part carries the command, date and 1-min load averages of the run that measured it, so that a
    partial rerun (``--skip``) on a loaded machine does not lend its load, or its command, to figures an
    earlier, quieter run produced. Parts of an older file without them inherit that file's top-level ones."""
    stamp = {"command": new.get("command"), "load1": [new.get("load1_start"), new.get("load1_end")]}
    if new.get("date"):
        stamp["date"] = new["date"]
    merged: dict[str, Any] = dict(earlier or {})
    for key in PART_KEYS:
        if key in merged and isinstance(merged[key], dict):
            old = dict(merged[key])
            old.setdefault("command", merged.get("command"))
            old.setdefault("load1", [merged.get("load1_start"), merged.get("load1_end")])
            merged[key] = old
    for key, value in new.items():
        if value is None:
            continue
        merged[key] = {**stamp, **value} if key in PART_KEYS and isinstance(value, dict) else value
    return merged


@dataclass
class LlamaServer:
    """One llama.cpp server (xllamacpp, ``backends/llama_cpp/launch.py``) on 127.0.0.1, ours to stop."""

    proc: subprocess.Popen[str]
    url: str

    @classmethod
    def start(
        cls, model: str, *, parallel: int, ctx: int, threads: int | None = None, wait_s: float = 180
    ) -> LlamaServer:
        cmd = [sys.executable, str(LAUNCH), "--model", model, "--parallel", str(parallel), "--ctx", str(ctx)]
        if threads:
            cmd += ["--threads", str(threads)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line: list[str] = []
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(wait_s)
        if not line or not line[0].startswith("READY "):
            cls(proc, "").stop()
            raise RuntimeError(f"llama server for {model} did not start within {wait_s:.0f} s (said {line!r})")
        return cls(proc, line[0].split()[1].rstrip("/"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def server_engines_available() -> str | None:
    """None when the batching-engine benchmark can run, else why not."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return "xllamacpp is not installed (pip install xllamacpp)"
    try:
        from glimp_llm.engines import openai_compat  # noqa: F401
    except ImportError as exc:
        return f"the OpenAI-compatible engine is not available: {exc}"
    if not LAUNCH.is_file():
        return f"{LAUNCH} is missing"
    return None


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def load_averages() -> tuple[float, float, float]:
    """``uptime``'s three load averages: the concurrency figure is only as good as the machine was idle."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def default_router_config(threshold: float, step_cap: int, budget: int) -> RouterConfig:
    return RouterConfig(threshold=threshold, step_max_tokens=step_cap, max_tokens=budget)
