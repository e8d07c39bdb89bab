"""Load and fault injection: many routed requests at once while engines fail, stall and callers cancel.

What must hold (issue 7): every request either completes with a finish reason or raises a *typed* error
(or ``CancelledError`` when its caller cancelled it) within its deadline plus the longest uninterruptible
engine call; nothing hangs; afterwards no asyncio task, engine slot, admission slot, thread or file
descriptor is left behind. Each scenario runs in its own event loop (``asyncio.run``) so that threads and
descriptors can be compared with the counts before it, loop and default executor included.

The figures the scenarios measure are printed (``pytest -s``) and copied into docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import UNGUARDED

from glimp_llm.client import Glimp
from glimp_llm.config import GlimpConfig, RouterConfig
from glimp_llm.engines.scripted import FaultPlan, ScriptedEngine
from glimp_llm.errors import (
    EngineFailureError,
    EngineUnavailableError,
    GlimpError,
    OverloadedError,
    RequestCancelledError,
    RequestTimeoutError,
)
from glimp_llm.router import Router
from glimp_llm.trace import RoutedResult, StepEvent

pytestmark = pytest.mark.timeout(180)

SMALL = "First we add two numbers.\n\nThen we multiply the result.\n\nSo the answer is 10."
LARGE = "LARGE first step.\n\nLARGE second step.\n\nLARGE final answer."
ENTROPIES = [0.1, 2.0, 0.3]  # with tau = 1: small, large, small
STALL_SECONDS = 0.15
# A request may overrun its deadline by at most one uninterruptible engine call (a stall) plus
# scheduling noise on a shared 2-core machine: past this it counts as hung.
GRACE_SECONDS = STALL_SECONDS + 5.0
MAX_DEADLINE = 10.0  # the longest timeout_s any request in these scenarios gets


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def live_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate()}


def new_since(before: set[Any], now: set[Any]) -> int:
    """What was opened (started) since ``before`` and is still there. A count difference would also drop when
    an unrelated thread or descriptor from an earlier test ends meanwhile, and then hide a leak or flag a
    negative one."""
    return len(now - before)


def glimp_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("glimp-")]


@dataclass
class Figures:
    """What one scenario measured; printed for docs/reliability.md."""

    name: str
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    faults_failures: int = 0
    faults_stalls: int = 0
    cancellations_sent: int = 0
    hangs: int = 0
    untyped: list[str] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    leaks: dict[str, int] = field(default_factory=dict)

    def report(self) -> None:
        print(
            f"\nRELIABILITY[{self.name}] requests={self.requests} outcomes={dict(sorted(self.outcomes.items()))} "
            f"injected_failures={self.faults_failures} injected_stalls={self.faults_stalls} "
            f"cancellations={self.cancellations_sent} hangs={self.hangs} untyped_errors={len(self.untyped)} "
            f"over_deadline={len(self.late)} leaks={self.leaks}"
        )


def injected(engine: ScriptedEngine, plan: FaultPlan) -> tuple[int, int]:
    """(failures, stalls) the fault plan injected: evaluations are counted from 1 per engine."""
    evaluations = int(engine.stats.extra.get("evaluations", 0))
    fails = evaluations // plan.fail_every if plan.fail_every else 0
    stalls = evaluations // plan.stall_every if plan.stall_every else 0
    return fails, stalls


def check_result(result: RoutedResult) -> None:
    """A completed request is a whole answer: each step is the matching step of one of the scripts
    (nothing lost, nothing mixed across requests), the text is their concatenation, and it ended at eos."""
    small_steps = SMALL.split("\n\n")
    large_steps = LARGE.split("\n\n")
    assert result.finish_reason == "eos", result.finish_reason
    assert len(result.steps) == 3
    for i, step in enumerate(result.steps):
        expected = {small_steps[i], large_steps[i]} if i == 2 else {small_steps[i] + "\n\n", large_steps[i] + "\n\n"}
        assert step.text in expected, (i, step.text)
        assert step.model == ("small" if step.text.startswith(small_steps[i][:5]) else "large")
    assert result.text == "".join(s.text for s in result.steps)
    assert result.usage.completion_tokens == sum(s.tokens for s in result.steps)


def pool_leaks(engine: ScriptedEngine, n_slots: int) -> dict[str, int]:
    pool = engine._pool
    assert pool is not None
    return {
        f"{engine.name}_in_flight": pool.in_flight,
        f"{engine.name}_slots_not_free": n_slots - len(pool._free),
        f"{engine.name}_queued": pool.queued,
    }


async def run_requests(
    figures: Figures,
    make: Callable[[int], tuple[Awaitable[RoutedResult], float]],
    n: int,
    cancel_every: int,
    rng: random.Random,
) -> None:
    """Start ``n`` requests at once, cancel every ``cancel_every``-th after a short random delay, and
    classify each outcome. A request not finished by its deadline plus the grace counts as hung."""
    starts: dict[int, float] = {}
    deadlines: dict[int, float] = {}
    ends: dict[int, float] = {}

    async def one(i: int) -> RoutedResult:
        coro, timeout = make(i)
        deadlines[i] = timeout
        starts[i] = time.monotonic()
        try:
            return await coro
        finally:
            ends[i] = time.monotonic()

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    cancelled = set(range(0, n, cancel_every)) if cancel_every else set()

    async def cancel_later(i: int) -> None:
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        tasks[i].cancel()

    cancellers = [asyncio.create_task(cancel_later(i)) for i in sorted(cancelled)]
    figures.requests += n
    figures.cancellations_sent += len(cancelled)
    done, pending = await asyncio.wait(tasks, timeout=MAX_DEADLINE + GRACE_SECONDS)
    figures.hangs += len(pending)
    for t in pending:  # report, then clean up so the leak checks below see the rest
        t.cancel()
    await asyncio.gather(*pending, *cancellers, return_exceptions=True)
    for i, task in enumerate(tasks):
        if task in pending:
            continue
        if task.cancelled():
            figures.outcomes["cancelled"] += 1
            if i not in cancelled:
                figures.untyped.append(f"request {i} cancelled without being asked")
            continue
        exc = task.exception()
        if exc is None:
            check_result(task.result())
            figures.outcomes[f"ok:{task.result().finish_reason}"] += 1
        elif isinstance(exc, GlimpError):
            figures.outcomes[f"error:{type(exc).__name__}"] += 1
        else:
            figures.untyped.append(f"request {i}: {exc!r}")
        elapsed = ends[i] - starts[i]
        if elapsed > deadlines[i] + GRACE_SECONDS:
            figures.late.append(elapsed)


async def _load_scenario(figures: Figures) -> None:
    small_plan = FaultPlan(fail_every=41, fail_transient=True, stall_every=97, stall_seconds=STALL_SECONDS)
    large_plan = FaultPlan(fail_every=53, fail_transient=False, stall_every=89, stall_seconds=STALL_SECONDS)
    small = ScriptedEngine(
        SMALL, entropies=ENTROPIES, name="small", n_slots=4, max_queue=100, token_seconds=0.0005, faults=small_plan
    )
    large = ScriptedEngine(LARGE, entropies=0.1, name="large", n_slots=2, token_seconds=0.001, faults=large_plan)
    await small.start()
    await large.start()
    # Two front doors over the same engines: one fails on engine errors, one falls back to the other model.
    strict = Router(small, large, RouterConfig(threshold=1.0, max_concurrent_requests=24, max_queued_requests=60))
    lenient = Router(
        small,
        large,
        RouterConfig(
            threshold=1.0,
            fallback_on_engine_failure=True,
            max_concurrent_requests=64,
            max_queued_requests=200,
            request_timeout_s=10.0,
        ),
    )
    rng = random.Random(7)

    def make(i: int) -> tuple[Awaitable[RoutedResult], float]:
        router = lenient if i % 2 else strict
        timeout = 0.05 if i % 10 == 3 else 10.0
        return router.generate(f"question {i}: what is 2 + 3 times 2?", timeout_s=timeout), timeout

    await run_requests(figures, make, 200, cancel_every=9, rng=rng)

    for _ in range(3):  # let finished tasks' callbacks run
        await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    figures.leaks["asyncio_tasks"] = len(leftover)
    figures.leaks.update(pool_leaks(small, 4))
    figures.leaks.update(pool_leaks(large, 2))
    figures.leaks["admission_running"] = strict.admission.running + lenient.admission.running
    figures.leaks["admission_waiting"] = strict.admission.waiting + lenient.admission.waiting
    for engine, plan in ((small, small_plan), (large, large_plan)):
        fails, stalls = injected(engine, plan)
        figures.faults_failures += fails
        figures.faults_stalls += stalls
    await small.close()
    await large.close()
    figures.leaks["engine_threads_after_close"] = len(glimp_threads())


def test_200_concurrent_requests_with_faults_stalls_and_cancellations() -> None:
    threads_before, fds_before = live_threads(), open_fds()
    figures = Figures("async-200")
    asyncio.run(_load_scenario(figures))
    figures.leaks["threads"] = new_since(threads_before, live_threads())
    figures.leaks["fds"] = new_since(fds_before, open_fds())
    figures.report()

    assert figures.requests == 200
    assert figures.hangs == 0
    assert figures.untyped == []
    assert figures.late == []
    assert all(v == 0 for v in figures.leaks.values()), figures.leaks
    assert sum(figures.outcomes.values()) == 200
    # the scenario really exercised every path it claims to
    assert figures.faults_failures > 0 and figures.faults_stalls > 0
    for outcome in ("ok:eos", "cancelled", "error:RequestTimeoutError", "error:EngineFailureError"):
        assert figures.outcomes[outcome] > 0, (outcome, figures.outcomes)
    assert figures.outcomes["error:OverloadedError"] > 0, figures.outcomes


async def _fallback_scenario() -> tuple[int, int]:
    """With fallback on, an engine that fails every call still yields whole answers from the other one,
    and every fallback is recorded in the trace."""
    small = ScriptedEngine(SMALL, entropies=ENTROPIES, name="small", n_slots=2, faults=FaultPlan(fail_every=1))
    large = ScriptedEngine(LARGE, entropies=0.1, name="large", n_slots=2)
    await small.start()
    await large.start()
    router = Router(small, large, RouterConfig(**UNGUARDED, threshold=1.0, fallback_on_engine_failure=True))
    results = await asyncio.gather(*(router.generate(f"q{i}", timeout_s=10.0) for i in range(50)))
    await small.close()
    await large.close()
    fallbacks = sum(1 for r in results for s in r.steps if s.fallback)
    for r in results:
        assert r.text == LARGE and r.finish_reason == "eos"
        assert all(s.model == "large" and s.fallback and "small glimpse failed" in s.fallback for s in r.steps)
    return len(results), fallbacks


def test_fallback_under_load_records_every_fallback() -> None:
    n, fallbacks = asyncio.run(_fallback_scenario())
    print(f"\nRELIABILITY[fallback] requests={n} fallback_steps={fallbacks}")
    assert fallbacks == 3 * n


async def _close_with_queued_scenario() -> list[BaseException | RoutedResult]:
    """Closing an engine while calls wait for its slot fails them with EngineUnavailableError at once
    (and touches their futures only from the loop thread: debug mode checks that)."""
    asyncio.get_running_loop().set_debug(True)
    small = ScriptedEngine(SMALL, entropies=0.1, name="small", n_slots=1, token_seconds=0.01)
    large = ScriptedEngine(LARGE, entropies=0.1, name="large")
    await small.start()
    await large.start()
    router = Router(small, large, RouterConfig(threshold=1.0))
    tasks = [asyncio.create_task(router.generate(f"q{i}", timeout_s=20.0)) for i in range(6)]
    await asyncio.sleep(0.05)  # one runs, five wait for the only slot
    await small.close()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    await large.close()
    return outcomes


def test_closing_an_engine_fails_its_queue_promptly() -> None:
    threads_before = live_threads()
    outcomes = asyncio.run(_close_with_queued_scenario())
    kinds = Counter(type(o).__name__ for o in outcomes)
    assert kinds["EngineUnavailableError"] >= 4, kinds
    assert all(isinstance(o, RoutedResult | EngineUnavailableError | EngineFailureError) for o in outcomes), kinds
    assert new_since(threads_before, live_threads()) == 0


# ----------------------------------------------------------------------------- the sync facade
def _facade(*, small_faults: FaultPlan | None = None, **router: Any) -> tuple[Glimp, ScriptedEngine, ScriptedEngine]:
    small = ScriptedEngine(
        SMALL, entropies=ENTROPIES, name="small", n_slots=2, token_seconds=0.0005, faults=small_faults
    )
    large = ScriptedEngine(LARGE, entropies=0.1, name="large", n_slots=2, token_seconds=0.001)
    config = GlimpConfig(router=RouterConfig(threshold=1.0, **router))
    return Glimp(config, small=small, large=large), small, large


def run_threads(n: int, target: Callable[[int], None], bound: float) -> int:
    """Run ``target(i)`` in ``n`` daemon threads; return how many did not finish within ``bound``."""
    threads = [threading.Thread(target=target, args=(i,), daemon=True, name=f"caller-{i}") for i in range(n)]
    for t in threads:
        t.start()
    end = time.monotonic() + bound
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    return sum(t.is_alive() for t in threads)


def test_sync_facade_under_concurrent_threads() -> None:
    threads_before, fds_before = live_threads(), open_fds()
    plan = FaultPlan(fail_every=23, stall_every=61, stall_seconds=STALL_SECONDS)
    glimp, small, large = _facade(small_faults=plan, max_concurrent_requests=8, max_queued_requests=64)
    outcomes: queue.Queue[str] = queue.Queue()
    figures = Figures("sync-threads")

    def caller(i: int) -> None:
        for j in range(6):
            kind = (i + j) % 4
            try:
                if kind == 3:  # a stream abandoned after its first step: must cancel the request
                    for event in glimp.stream(f"t{i}-{j}", timeout_s=10.0):
                        if isinstance(event, StepEvent):
                            break
                    outcomes.put("stream-abandoned")
                    continue
                result = glimp.generate(f"t{i}-{j}", timeout_s=0.03 if kind == 2 else 10.0)
                check_result(result)
                outcomes.put(f"ok:{result.finish_reason}")
            except GlimpError as exc:
                outcomes.put(f"error:{type(exc).__name__}")
            except BaseException as exc:
                outcomes.put(f"untyped:{exc!r}")

    glimp.start()
    figures.hangs = run_threads(16, caller, bound=60.0)
    figures.requests = 16 * 6
    while not outcomes.empty():
        figures.outcomes[outcomes.get()] += 1
    health = glimp.health()
    figures.leaks["small_in_flight"] = health["small"]["in_flight"]
    figures.leaks["large_in_flight"] = health["large"]["in_flight"]
    figures.leaks["requests_running"] = health["requests_running"]
    figures.leaks["requests_waiting"] = health["requests_waiting"]
    fails, stalls = injected(small, plan)
    figures.faults_failures, figures.faults_stalls = fails, stalls
    glimp.close()
    time.sleep(0.05)
    figures.leaks["threads"] = new_since(threads_before, live_threads())
    figures.leaks["fds"] = new_since(fds_before, open_fds())
    figures.report()

    assert figures.hangs == 0
    assert not [k for k in figures.outcomes if k.startswith("untyped")], figures.outcomes
    assert sum(figures.outcomes.values()) == figures.requests
    assert all(v == 0 for v in figures.leaks.values()), figures.leaks
    assert figures.outcomes["ok:eos"] > 0 and figures.outcomes["stream-abandoned"] > 0
    assert figures.outcomes["error:RequestTimeoutError"] > 0


def test_closing_the_facade_under_traffic_never_strands_a_caller() -> None:
    """Threads keep calling while another thread closes the client: each call returns, or raises a
    typed error (cancelled / closed), and none waits forever on a loop that has stopped."""
    threads_before = live_threads()
    glimp, _, _ = _facade()
    glimp.start()
    outcomes: queue.Queue[str] = queue.Queue()
    started = threading.Barrier(9)
    some_done = threading.Event()

    def caller(i: int) -> None:
        started.wait()
        for j in range(40):
            try:
                if j % 3 == 2:
                    list(glimp.stream(f"c{i}-{j}", timeout_s=10.0))
                else:
                    glimp.generate(f"c{i}-{j}", timeout_s=10.0)
                outcomes.put("ok")
                some_done.set()
            except (RequestCancelledError, EngineUnavailableError) as exc:
                outcomes.put(type(exc).__name__)
            except GlimpError as exc:
                outcomes.put(f"other:{type(exc).__name__}")
            except BaseException as exc:
                outcomes.put(f"untyped:{exc!r}")

    def closer() -> None:
        started.wait()
        some_done.wait(30)  # close in the middle of the traffic, not before it
        glimp.close()

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(8)]
    threads.append(threading.Thread(target=closer, daemon=True))
    for t in threads:
        t.start()
    end = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    seen: Counter[str] = Counter()
    while not outcomes.empty():
        seen[outcomes.get()] += 1
    print(f"\nRELIABILITY[close-under-traffic] calls={sum(seen.values())} outcomes={dict(seen)} hangs={hung}")
    assert hung == 0
    assert not [k for k in seen if k.startswith("untyped")], seen
    assert seen["ok"] > 0
    assert seen["EngineUnavailableError"] > 0  # calls after close are refused, typed
    time.sleep(0.05)
    assert new_since(threads_before, live_threads()) == 0


def test_overload_is_immediate_and_bounded() -> None:
    """Past the admission bound requests fail at once with OverloadedError; the queue never grows past it."""

    async def scenario() -> tuple[Counter[str], int]:
        small = ScriptedEngine(SMALL, entropies=0.1, name="small", token_seconds=0.002)
        large = ScriptedEngine(LARGE, entropies=0.1, name="large")
        await small.start()
        await large.start()
        router = Router(small, large, RouterConfig(max_concurrent_requests=2, max_queued_requests=5))
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, router.admission.waiting)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        outcomes = await asyncio.gather(
            *(router.generate(f"q{i}", timeout_s=30) for i in range(100)), return_exceptions=True
        )
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await small.close()
        await large.close()
        return Counter(type(o).__name__ for o in outcomes), peak

    kinds, peak = asyncio.run(scenario())
    print(f"\nRELIABILITY[overload] requests=100 outcomes={dict(kinds)} peak_waiting={peak}")
    assert kinds == Counter({"RoutedResult": 7, "OverloadedError": 93})
    assert peak <= 5
    assert isinstance(OverloadedError("x"), GlimpError)


def test_request_timeout_error_is_raised_not_a_bare_timeout() -> None:
    """A stalled engine call ends the request with RequestTimeoutError once the stall returns."""

    async def scenario() -> BaseException | None:
        small = ScriptedEngine(SMALL, name="small", faults=FaultPlan(stall_every=1, stall_seconds=0.3))
        large = ScriptedEngine(LARGE, name="large")
        await small.start()
        await large.start()
        router = Router(small, large, RouterConfig())
        try:
            await router.generate("q", timeout_s=0.05)
        except BaseException as exc:
            return exc
        finally:
            await small.close()
            await large.close()
        return None

    exc = asyncio.run(scenario())
    assert isinstance(exc, RequestTimeoutError)


def test_loop_thread_stop_never_strands_a_submitter() -> None:
    """Callers that submit while the engines' portal closes get a result, a cancellation or
    EngineUnavailableError; before the fix a submission between the drain and the loop's close waited
    forever on a future nothing would run."""
    import asyncio as aio

    from glimp_llm._portal import EnginePortal

    seen: Counter[str] = Counter()
    lock = threading.Lock()
    hung = 0
    for _ in range(10):
        lt = EnginePortal(name="glimp-race")

        def hammer(lt: EnginePortal = lt) -> None:
            for _ in range(2000):
                try:
                    lt.call(aio.sleep, 0)
                    outcome = "ok"
                except EngineUnavailableError:
                    outcome = "EngineUnavailableError"
                except RequestCancelledError:
                    outcome = "RequestCancelledError"
                with lock:
                    seen[outcome] += 1
                if outcome == "EngineUnavailableError":
                    return

        callers = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
        for t in callers:
            t.start()
        time.sleep(0.005)
        lt.close()
        for t in callers:
            t.join(10)
            hung += t.is_alive()
    print(f"\nRELIABILITY[loop-stop-race] outcomes={dict(seen)} hangs={hung}")
    assert hung == 0
    assert seen["EngineUnavailableError"] == 30  # every caller learned that the loop is gone
