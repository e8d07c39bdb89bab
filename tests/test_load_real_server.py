"""The load and fault scenario of tests/test_load_faults.py at a smaller scale against real llama.cpp
servers on 127.0.0.1 (xllamacpp serving SmolLM2; one server for the small model, two replicas for the
large one).

While 24 routed requests run at once, one large replica is killed with SIGKILL, some requests get a
deadline too short to make, and some are cancelled by their caller. What must hold, as with the scripted
engines: every request completes with a finish reason and a consistent trace, or raises a typed error
(or is cancelled because it was asked to be) within its deadline plus a grace; nothing hangs; afterwards
no asyncio task, replica slot or file descriptor is left behind, and the servers that live are idle (a
cancelled request stopped its server-side decoding instead of running on to its token cap).
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from llama_servers import LlamaServer

from glimp_llm.config import RouterConfig
from glimp_llm.engines.openai_compat import OpenAICompatEngine
from glimp_llm.errors import GlimpError
from glimp_llm.router import Router
from glimp_llm.trace import RoutedResult

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

REQUESTS = 24
MAX_TOKENS = 40
LONG_DEADLINE = 120.0
SHORT_DEADLINE = 1.0  # under this load a request needs several seconds: these must time out
GRACE_SECONDS = 10.0  # one in-flight HTTP call past the deadline, plus scheduling noise on 2 cores
PROMPTS = [
    "Explain step by step how to add 17 and 25.",
    "List three colours, then describe each in one sentence.",
    "Name two fruits and say why they are healthy.",
    "Describe how to boil an egg, one step per paragraph.",
]


@pytest.fixture
def three_servers(smollm2_path: str) -> Iterator[tuple[LlamaServer, LlamaServer, LlamaServer]]:
    started: list[LlamaServer] = []
    try:
        for _ in range(3):
            started.append(LlamaServer(smollm2_path, parallel=4))
        yield started[0], started[1], started[2]
    finally:
        for server in started:
            server.stop()


def check_result(result: RoutedResult) -> None:
    """A completed request is whole: the text is its steps' text, the tokens add up, the cap holds."""
    assert result.finish_reason in {"eos", "length", "repetition", "stop"}, result.finish_reason
    assert result.text == "".join(s.text for s in result.steps)
    assert result.usage.completion_tokens == sum(s.tokens for s in result.steps) <= MAX_TOKENS
    assert result.usage.small_tokens + result.usage.large_tokens == result.usage.completion_tokens


async def busy_slots(url: str) -> int:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        return sum(1 for s in (await http.get(url + "/slots")).json() if s["is_processing"])


async def scenario(small_srv: LlamaServer, large_a: LlamaServer, large_b: LlamaServer) -> dict[str, object]:
    gc.collect()  # an earlier test's unreachable sockets close now, not during the scenario's count
    fds_before = len(os.listdir("/proc/self/fd"))  # before the engines open their connection pools
    small = OpenAICompatEngine([small_srv.url], "smollm2", name="small", top_logprobs=50, timeout_s=60)
    large = OpenAICompatEngine(
        [large_a.url, large_b.url], "smollm2", name="large", timeout_s=60, max_retries=2, replica_retry_s=120
    )
    await small.start()
    await large.start()
    tasks_before = len(asyncio.all_tasks())
    strict = Router(small, large, RouterConfig(threshold=1.5, max_tokens=MAX_TOKENS))
    lenient = Router(small, large, RouterConfig(threshold=1.5, max_tokens=MAX_TOKENS, fallback_on_engine_failure=True))
    rng = random.Random(11)
    deadlines = [SHORT_DEADLINE if i % 6 == 5 else LONG_DEADLINE for i in range(REQUESTS)]
    to_cancel = {i for i in range(REQUESTS) if i % 7 == 3}
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}

    async def one(i: int) -> RoutedResult:
        router = lenient if i % 2 else strict
        starts[i] = time.monotonic()
        try:
            return await router.generate(PROMPTS[i % len(PROMPTS)], timeout_s=deadlines[i])
        finally:
            ends[i] = time.monotonic()

    tasks = [asyncio.create_task(one(i)) for i in range(REQUESTS)]

    async def cancel_later(i: int) -> None:
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        tasks[i].cancel()

    async def kill_replica_later() -> None:
        for _ in range(200):  # bounded: until the replica is decoding somebody's step
            if await busy_slots(large_b.url):
                break
            await asyncio.sleep(0.05)
        large_b.kill()

    helpers = [asyncio.create_task(cancel_later(i)) for i in sorted(to_cancel)]
    helpers.append(asyncio.create_task(kill_replica_later()))
    done, pending = await asyncio.wait(tasks, timeout=LONG_DEADLINE + GRACE_SECONDS)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, *helpers, return_exceptions=True)

    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    late: list[float] = []
    for i, task in enumerate(tasks):
        if task in pending:
            continue
        if task.cancelled():
            outcomes["cancelled"] += 1
            if i not in to_cancel:
                untyped.append(f"request {i} cancelled without being asked")
            continue
        exc = task.exception()
        if exc is None:
            check_result(task.result())
            outcomes[f"ok:{task.result().finish_reason}"] += 1
            outcomes["fallback_steps"] += sum(1 for s in task.result().steps if s.fallback)
        elif isinstance(exc, GlimpError):
            outcomes[f"error:{type(exc).__name__}"] += 1
        else:
            untyped.append(f"request {i}: {exc!r}")
        if ends[i] - starts[i] > deadlines[i] + GRACE_SECONDS:
            late.append(ends[i] - starts[i])

    # The servers that live must go idle: cancelled and timed-out requests stopped their decoding.
    busy = -1
    for _ in range(100):
        busy = await busy_slots(small_srv.url) + await busy_slots(large_a.url)
        if busy == 0:
            break
        await asyncio.sleep(0.1)
    for _ in range(3):
        await asyncio.sleep(0)
    leaks = {
        "asyncio_tasks": len(asyncio.all_tasks()) - tasks_before,
        "small_in_flight": small.pool.in_flight,
        "large_in_flight": large.pool.in_flight,
        "busy_server_slots": busy,
    }
    dead = large.pool.replicas[1]
    await small.close()
    await large.close()
    leaks["fds"] = len(os.listdir("/proc/self/fd")) - fds_before
    return {
        "outcomes": outcomes,
        "hangs": len(pending),
        "untyped": untyped,
        "late": late,
        "leaks": leaks,
        "dead_replica_failures": dead.failures,
        "replica_failures": large.stats.extra.get("replica_failures", 0),
    }


def test_real_servers_under_load_with_a_killed_replica_deadlines_and_cancellations(
    three_servers: tuple[LlamaServer, LlamaServer, LlamaServer],
) -> None:
    figures = asyncio.run(scenario(*three_servers))
    outcomes: Counter[str] = figures["outcomes"]  # type: ignore[assignment]
    print(
        f"\nRELIABILITY[real-servers] requests={REQUESTS} outcomes={dict(sorted(outcomes.items()))} "
        f"killed_replicas=1 hangs={figures['hangs']} untyped_errors={len(figures['untyped'])} "  # type: ignore[arg-type]
        f"over_deadline={len(figures['late'])} leaks={figures['leaks']}"  # type: ignore[arg-type]
    )
    assert figures["hangs"] == 0
    assert figures["untyped"] == []
    assert figures["late"] == []
    assert all(v == 0 for v in figures["leaks"].values()), figures["leaks"]  # type: ignore[union-attr]
    completed = sum(n for k, n in outcomes.items() if k.startswith(("ok:", "error:")) or k == "cancelled")
    assert completed == REQUESTS
    # the scenario exercised what it claims: completions, caller cancellations, deadlines, a dead replica
    assert sum(n for k, n in outcomes.items() if k.startswith("ok:")) > 0, outcomes
    assert outcomes["cancelled"] > 0, outcomes
    assert outcomes["error:RequestTimeoutError"] > 0, outcomes
    assert figures["dead_replica_failures"] >= 1
