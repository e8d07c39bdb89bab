"""The mode runner: every mode on the same problems, interleaved per problem, one record per run.

Why interleaved: on a shared machine the load changes over an hour. Running problem i in every mode
before problem i+1 spreads that drift over all modes alike (the load average is recorded per run).
Why the cache is primed before each run: the engines keep their KV prefix from the previous call, so a
mode that ran right after another on the same problem would get that problem's prompt for free. Each
run therefore starts with both engines holding only the chat template's shared header (what any
deployment with a system prompt keeps warm) and pays for its own problem prompt.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from glimp_llm.bench.answers import extract_answer, format_number, is_correct
from glimp_llm.bench.datasets import Problem
from glimp_llm.bench.modes import GUARDS_OFF, ModeKind
from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Engine, SamplingParams
from glimp_llm.engines.slots import common_prefix_length
from glimp_llm.errors import ConfigurationError, GlimpError
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import RoutedResult


@dataclass(frozen=True)
class Mode:
    """One resolved mode of a run: a registry entry (:mod:`glimp_llm.bench.modes`) with its threshold.

    ``overrides`` are the RouterConfig settings of the mode beyond ``paper_faithful`` and
    ``glimpse_tokens`` (kept as fields: the records and meta files of earlier runs carry them).
    ``share_of``: the mode whose measured large-step share sets ``random_large_share`` at run time.
    ``sweep`` marks the extra taus that run only on the sweep subset."""

    name: str
    kind: ModeKind
    threshold: float | None = None
    paper_faithful: bool = False
    target_share: float | None = None
    sweep: bool = False
    glimpse_tokens: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    share_of: str | None = None
    description: str = ""

    def router_update(self) -> dict[str, Any]:
        """The RouterConfig fields this mode sets. The single-model kinds route through the router too
        (routing small-only / large-only), also when read from a meta file written before that existed."""
        # every guard starts off, so a mode measures what it names whatever the library's defaults are
        update: dict[str, Any] = {
            **GUARDS_OFF,
            "paper_faithful": self.paper_faithful,
            "glimpse_tokens": self.glimpse_tokens,
        }
        if self.kind != "routed":
            update["routing"] = f"{self.kind}-only"
        update.update(self.overrides)
        return update

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mode:
        """A mode from a meta file (fields an older file lacks take their defaults)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Record:
    """One (mode, problem) run: correctness, latency, tokens, steps and where the time went."""

    problem: str
    mode: str
    threshold: float | None
    correct: bool
    predicted: str | None
    gold: str
    wall_s: float
    glimpse_s: float
    small_s: float
    large_s: float
    queue_s: float
    small_tokens: int
    large_tokens: int
    small_steps: int
    large_steps: int
    glimpses: int
    finish_reason: str
    load1: float
    step_models: list[str] = field(default_factory=list)
    entropies: list[float | None] = field(default_factory=list)
    entropy_kind: str | None = None
    text: str = ""
    random_large_share: float | None = None  # routing=random: the probability of a large step in this run
    verify_s: float = 0.0  # the large model scoring small-model steps (router.verify)
    verified_steps: int = 0
    rejected_steps: int = 0  # verified steps of which the large model rejected a token
    small_tokens_rejected: int = 0
    forced_tokens: int = 0  # near-certain tokens kept before routing (router.forced_entropy)
    routed_by: list[str] = field(default_factory=list)  # per step: entropy, random, fixed, a guard ...

    @property
    def engine_s(self) -> float:
        return self.glimpse_s + self.small_s + self.large_s + self.verify_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["engine_s"] = self.engine_s
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def record_of(
    problem: Problem, mode: Mode, result: RoutedResult, load1: float, random_large_share: float | None = None
) -> Record:
    predicted = extract_answer(result.text)
    t, u = result.timings, result.usage
    kinds = {s.entropy_kind for s in result.steps if s.entropy_kind}
    return Record(
        problem=problem.id,
        mode=mode.name,
        threshold=mode.threshold,
        correct=is_correct(predicted, problem.gold),
        predicted=format_number(predicted),
        gold=format_number(problem.gold) or "",
        wall_s=t.wall_seconds,
        glimpse_s=t.glimpse_seconds,
        small_s=t.small_seconds,
        large_s=t.large_seconds,
        queue_s=t.queue_seconds,
        small_tokens=u.small_tokens,
        large_tokens=u.large_tokens,
        small_steps=u.small_steps,
        large_steps=u.large_steps,
        glimpses=u.glimpses,
        finish_reason=result.finish_reason,
        load1=load1,
        step_models=[s.model for s in result.steps],
        entropies=[s.entropy for s in result.steps],
        entropy_kind=kinds.pop() if len(kinds) == 1 else None,
        text=result.text,
        random_large_share=random_large_share,
        verify_s=t.verify_seconds,
        verified_steps=u.verified_steps,
        rejected_steps=u.rejected_steps,
        small_tokens_rejected=u.small_tokens_rejected,
        forced_tokens=u.forced_tokens,
        routed_by=[s.routed_by for s in result.steps],
    )


def load_average() -> float:
    """1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


class ModeRunner:
    """Runs one problem in one mode on a small and a large engine, from a primed cache."""

    def __init__(self, small: Engine, large: Engine, router_config: RouterConfig) -> None:
        self.small = small
        self.large = large
        self.config = router_config
        self._header: list[int] | None = None

    async def _header_ids(self) -> list[int]:
        """The token ids every prompt starts with (chat template and system turn)."""
        if self._header is None:
            router = Router(self.small, self.large, self.config)
            a = await router.prepare_prompt(RouteRequest(prompt="alpha question"), self.small)
            b = await router.prepare_prompt(RouteRequest(prompt="zulu problem"), self.small)
            self._header = a[: max(1, common_prefix_length(a, b))]
        return self._header

    async def prime(self) -> None:
        """Leave both engines holding only the shared header, so no run inherits another's prompt."""
        header = await self._header_ids()
        engines = [self.small] if self.small is self.large else [self.small, self.large]
        for engine in engines:
            await engine.glimpse(header, SamplingParams())

    async def run(self, problem: Problem, mode: Mode, max_tokens: int, extra: dict[str, Any] | None = None) -> Record:
        """``problem`` in ``mode``: the router with the mode's settings (and ``extra`` ones decided at run
        time, such as the random baseline's share), from a primed cache."""
        await self.prime()
        load1 = load_average()
        update = {**mode.router_update(), **(extra or {})}
        if mode.threshold is not None:
            update["threshold"] = mode.threshold
        cfg = self.config.model_copy(update=update)
        request = RouteRequest(prompt=problem.prompt, max_tokens=max_tokens)
        result = await Router(self.small, self.large, cfg).generate(request)
        share = cfg.random_large_share if cfg.routing == "random" else None
        return record_of(problem, mode, result, load1, share)


@dataclass(frozen=True)
class BenchPlan:
    """Which problems run in which modes. Main modes run on every problem; sweep modes on the first
    ``sweep_problems`` (so the sweep is complete early if the run must be cut short)."""

    modes: Sequence[Mode]
    max_tokens: int
    sweep_problems: int = 0

    def runs(self, problems: Sequence[Problem]) -> list[tuple[Problem, Mode]]:
        return [(p, m) for i, p in enumerate(problems) for m in self.modes if not m.sweep or i < self.sweep_problems]


async def run_plan(
    runner: ModeRunner,
    problems: Sequence[Problem],
    plan: BenchPlan,
    *,
    jsonl: str | os.PathLike[str] | None = None,
    on_record: Callable[[Record], None] | None = None,
    done: Sequence[Record] = (),
) -> list[Record]:
    """Run the plan, appending each record to ``jsonl`` as it finishes (a crash loses one run, and a
    rerun with the same file resumes: ``done`` records are skipped).

    A mode with ``share_of`` (the random baseline) gets ``random_large_share`` = the large-step share the
    named mode measured so far on this run's problems (the current one included: it runs earlier in each
    problem), so that over the run both send the same share of steps to the large model."""
    finished = {(r.problem, r.mode) for r in done}
    records = list(done)
    ids = {p.id for p in problems}
    for problem, mode in plan.runs(problems):
        if (problem.id, mode.name) in finished:
            continue
        extra: dict[str, Any] = {}
        if mode.share_of is not None:
            share = measured_share([r for r in records if r.problem in ids], mode.share_of)
            if share is not None:
                extra["random_large_share"] = share
            elif "random_large_share" not in mode.overrides:
                print(
                    f"run skipped: {problem.id} {mode.name}: {mode.share_of} has no finished run yet to take the "
                    f"large-step share from",
                    file=sys.stderr,
                )
                continue
        try:
            record = await runner.run(problem, mode, plan.max_tokens, extra)
        except GlimpError as exc:  # one failed run must not lose an hour of others; it is reported
            print(f"run failed: {problem.id} {mode.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        records.append(record)
        if jsonl is not None:
            append_record(jsonl, record)
        if on_record is not None:
            on_record(record)
    return records


def measured_share(records: Sequence[Record], mode: str) -> float | None:
    """The large-step share of ``mode`` over ``records`` (None before it has a step)."""
    mine = [r for r in records if r.mode == mode]
    steps = sum(r.small_steps + r.large_steps for r in mine)
    return sum(r.large_steps for r in mine) / steps if steps else None


def append_record(path: str | os.PathLike[str], record: Record) -> None:
    """One JSON line per finished run (milliseconds next to a run of seconds: no need for async IO)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Records of an earlier (possibly unfinished) run. A killed process can leave its last line cut
    short: that run is dropped (it runs again); a broken line before the end is an error naming it."""
    out: list[Record] = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(Record.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as exc:
            if number == len(lines):
                print(f"{path}:{number}: an unfinished record (the run was cut off); it runs again", file=sys.stderr)
                continue
            raise ConfigurationError(
                f"--records {path}:{number} is not a benchmark record ({exc}); delete that line, or pass a new "
                "--records file to start afresh"
            ) from exc
    return out


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
