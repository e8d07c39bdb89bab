"""Micro-benchmarks, each printed as a ratio measured in one run.

* Glimpse cost with ~2,000 vs ~200 tokens of context. The router glimpses after every step, so with
  prefix reuse a glimpse evaluates only the step just appended; its cost should barely grow with the
  context (the ratio is close to 1; without reuse it would grow about tenfold). Each timed glimpse extends
  a primed context by one step of ``step_tokens`` tokens; the two lengths are measured alternately so
  that load drift on a shared machine hits both alike.
* Router overhead: wall time / time inside engine calls - 1, over routed requests.
* Concurrency: throughput (generated tokens per second) of ``n`` routed requests at once over the same
  requests one at a time, on a batching engine (llama.cpp's server with parallel slots, driven through
  the OpenAI-compatible engine).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Engine, SamplingParams
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import RoutedResult

LAUNCH = Path(__file__).resolve().parents[2] / "backends" / "llama_cpp" / "launch.py"


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


async def concurrency_ratio(router: Router, prompts: Sequence[str], max_tokens: int) -> dict[str, Any]:
    """Tokens/s of ``len(prompts)`` routed requests at once over the same requests one at a time."""
    await router.generate(RouteRequest(prompt=prompts[0], max_tokens=8))  # warm both servers
    t0 = time.perf_counter()
    one = [await router.generate(RouteRequest(prompt=p, max_tokens=max_tokens)) for p in prompts]
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = await asyncio.gather(*(router.generate(RouteRequest(prompt=p, max_tokens=max_tokens)) for p in prompts))
    t_many = time.perf_counter() - t0
    tok_one = sum(r.usage.completion_tokens for r in one)
    tok_many = sum(r.usage.completion_tokens for r in many)
    ratio = (tok_many / t_many) / (tok_one / t_one)
    n = len(prompts)
    return {
        "ratio": ratio,
        "sequential_tok_s": tok_one / t_one,
        "concurrent_tok_s": tok_many / t_many,
        "detail": (
            f"{n} routed requests at once: {tok_many} tokens in {t_many:.1f} s ({tok_many / t_many:.1f} tok/s) vs "
            f"one at a time: {tok_one} tokens in {t_one:.1f} s ({tok_one / t_one:.1f} tok/s)"
        ),
    }


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


def default_router_config(threshold: float, step_cap: int, budget: int) -> RouterConfig:
    return RouterConfig(threshold=threshold, step_max_tokens=step_cap, max_tokens=budget)
