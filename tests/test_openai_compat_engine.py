"""The OpenAI-compatible engine against real llama.cpp servers (xllamacpp serving SmolLM2 on 127.0.0.1):
the engine contract, then faults injected with real processes: a server killed mid-step, a stalled one,
one answering malformed JSON, and a replica dying while another lives. Last, `glimp serve` fronting two
servers, used through the official openai client."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from conftest import require, serve_app
from llama_servers import LlamaServer

from glimp_llm.engines.base import SamplingParams
from glimp_llm.engines.openai_compat import OpenAICompatEngine
from glimp_llm.errors import (
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    MalformedResponseError,
)

pytestmark = pytest.mark.server

PROMPT = [{"role": "user", "content": "List three colours. Write one short paragraph about each."}]


@pytest.fixture(scope="module")
def servers(smollm2_path: str) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    a = LlamaServer(smollm2_path)
    try:
        b = LlamaServer(smollm2_path)
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def spare(smollm2_path: str) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path)
    yield server
    server.stop()


@pytest.fixture
async def engine(servers: tuple[LlamaServer, LlamaServer]) -> AsyncIterator[OpenAICompatEngine]:
    e = OpenAICompatEngine([servers[0].url + "/v1"], "smollm2", top_logprobs=100, timeout_s=30)
    await e.start()
    yield e
    await e.close()


async def prompt_ids(engine: OpenAICompatEngine) -> list[int]:
    return await engine.tokenize(await engine.render_chat(PROMPT))


# ------------------------------------------------------------------------------------ contract
async def test_info_comes_from_the_server(engine: OpenAICompatEngine) -> None:
    info = engine.info
    assert engine.dialect == "llama.cpp"  # detected from /v1/models owned_by
    assert info.vocab_size == 49152
    assert info.entropy_kind == "top-k estimate"
    assert info.chat_template and "im_start" in info.chat_template
    assert info.eos_token_ids and info.context_window == 2048  # 4096 tokens over 2 slots


async def test_ids_that_are_no_tokens_are_refused_before_the_server_sees_them(engine: OpenAICompatEngine) -> None:
    """llama-server answers a bad id with HTTP 500, which reads as a failing server: the replica was taken
    out and the next valid call found none. The vocabulary it reports bounds the ids here first."""
    assert engine.bounds_token_ids  # llama-server reports its vocabulary; a configured vocab_size would not
    for bad in (-1, engine.info.vocab_size + 5):
        with pytest.raises(InvalidRequestError, match="are not tokens"):
            await engine.detokenize([bad])
        with pytest.raises(InvalidRequestError, match="are not tokens"):
            await engine.glimpse([*await prompt_ids(engine), bad], SamplingParams())
    assert await engine.detokenize(await engine.tokenize("Hello")) == "Hello"  # the replica is still in


async def test_every_end_of_generation_token_is_left_out_of_a_step(
    engine: OpenAICompatEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama-server streams the end token last; only eos_token (<|im_end|>) was dropped, so a step that
    ended on SmolLM2's other end token (<|endoftext|>, id 0) kept it, and the next context held it. The
    model is pushed to end on it by a logit bias the test adds to the server's sampling fields."""
    dialect = type(engine.server)
    fields = dialect.sampling_fields
    monkeypatch.setattr(dialect, "sampling_fields", lambda self, s: {**fields(self, s), "logit_bias": [[0, 100]]})
    assert 0 not in engine.info.eos_token_ids  # eos_token is <|im_end|>
    step = await engine.generate(await prompt_ids(engine), max_tokens=8)
    assert (step.finish_reason, step.token_ids, step.text) == ("eos", (), "")


async def test_a_glimpse_returns_the_top_logprobs_asked_for(engine: OpenAICompatEngine) -> None:
    """The estimate reads all ``top_logprobs`` (100 here) the server returns; the caller gets the k it asked
    for, most likely first, as from the in-process engines (the paper mode renormalises over exactly those)."""
    ids = await prompt_ids(engine)
    none, five = (
        await engine.glimpse(ids, SamplingParams()),
        await engine.glimpse(ids, SamplingParams(), top_logprobs=5),
    )
    assert none.top_logprobs == () and none.top_k == 100 and five.top_k == 100
    assert len(five.top_logprobs) == 5 and five.top_logprobs[0][0] == five.token_id
    assert [lp for _, lp in five.top_logprobs] == sorted((lp for _, lp in five.top_logprobs), reverse=True)


async def test_glimpse_entropy_is_within_its_bound_of_the_exact_one(
    engine: OpenAICompatEngine, smollm2_path: str
) -> None:
    require("llama_cpp", "the exact entropy comes from the in-process llama.cpp engine")
    from glimp_llm.engines.llama_cpp import LlamaCppEngine

    exact_engine = LlamaCppEngine(smollm2_path, n_ctx=2048)
    await exact_engine.start()
    try:
        ids = await prompt_ids(engine)
        assert await exact_engine.tokenize(await exact_engine.render_chat(PROMPT)) == ids
        for context in (ids, [*ids, *await engine.tokenize("1. Red")]):
            exact = await exact_engine.glimpse(context, SamplingParams())
            g = await engine.glimpse(context, SamplingParams())
            assert g.entropy_kind == "top-k estimate" and g.top_k == 100
            assert 0.0 < g.captured_mass <= 1.0 + 1e-3
            # the two llama.cpp builds differ in SIMD kernels: allow 0.05 nat on top of the reported bound
            assert abs(g.entropy - exact.entropy) <= g.entropy_error_bound + 0.05, (g, exact.entropy)
    finally:
        await exact_engine.close()


async def test_successive_calls_hit_the_prefix_cache(engine: OpenAICompatEngine) -> None:
    ids = await prompt_ids(engine)
    g = await engine.glimpse(ids, SamplingParams())
    step = await engine.generate([*ids, g.token_id], max_tokens=12)
    assert step.cached_tokens >= len(ids)  # the glimpse left the prompt in the slot
    g2 = await engine.glimpse([*ids, g.token_id, *step.token_ids], SamplingParams())
    assert g2.cached_tokens >= len(ids) + len(step.token_ids)


async def test_generation_stops_at_the_step_delimiter_and_keeps_it(engine: OpenAICompatEngine) -> None:
    ids = await prompt_ids(engine)
    deltas: list[str] = []
    c = await engine.generate(ids, max_tokens=300, stop=["\n\n"], on_token=lambda d: deltas.append(d.text))
    assert c.finish_reason == "stop" and c.stop_string == "\n\n"
    assert "\n\n" in c.text and c.text.index("\n\n") >= len(c.text) - 3
    assert await engine.detokenize(list(c.token_ids)) == c.text
    assert "".join(deltas) == c.text
    short = await engine.generate(ids, max_tokens=3)
    assert short.finish_reason == "length" and len(short.token_ids) == 3


async def test_concurrent_calls_are_batched_and_consistent(engine: OpenAICompatEngine) -> None:
    ids = await prompt_ids(engine)
    results = await asyncio.gather(*(engine.generate(ids, max_tokens=16) for _ in range(4)))
    assert len({r.text for r in results}) == 1 and all(len(r.token_ids) == 16 for r in results)


async def test_max_concurrency_bounds_glimpses_too(servers: tuple[LlamaServer, LlamaServer]) -> None:
    """``max_concurrency`` is the requests in flight to the model, glimpses included: with a bound of one, a
    glimpse asked for while a step streams waits for the step (the server itself has a free slot)."""
    e = OpenAICompatEngine([servers[0].url + "/v1"], "smollm2", top_logprobs=20, timeout_s=30, max_concurrency=1)
    await e.start()
    try:
        ids = await prompt_ids(e)
        streaming = asyncio.Event()
        finished: list[str] = []

        async def step() -> None:
            await e.generate(ids, max_tokens=40, on_token=lambda _: streaming.set())
            finished.append("step")

        async def glimpse() -> None:
            await streaming.wait()
            await e.glimpse(ids, SamplingParams())
            finished.append("glimpse")

        await asyncio.wait_for(asyncio.gather(step(), glimpse()), 60)
        assert finished == ["step", "glimpse"]
    finally:
        await e.close()


async def test_cancellation_closes_the_stream_and_frees_the_server_slot(
    engine: OpenAICompatEngine, servers: tuple[LlamaServer, LlamaServer]
) -> None:
    ids = await prompt_ids(engine)
    started = asyncio.Event()
    task = asyncio.create_task(engine.generate(ids, max_tokens=1500, on_token=lambda d: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats.cancelled_calls == 1
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(100):  # bounded: 10 s
            slots = (await http.get(servers[0].url + "/slots")).json()
            if not any(s["is_processing"] for s in slots):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the server kept decoding after the stream was closed")


# ------------------------------------------------------------------------------------ faults
async def test_server_killed_mid_step_is_retried_then_fails_typed(spare: LlamaServer) -> None:
    e = OpenAICompatEngine([spare.url], "smollm2", timeout_s=15, max_retries=2, replica_retry_s=0.05)
    await e.start()
    try:
        ids = await prompt_ids(e)
        task = asyncio.create_task(e.generate(ids, max_tokens=1500))
        async with httpx.AsyncClient(trust_env=False) as http:
            for _ in range(200):  # bounded: until the server decodes our step
                if any(s["is_processing"] for s in (await http.get(spare.url + "/slots")).json()):
                    break
                await asyncio.sleep(0.02)
        spare.kill()
        with pytest.raises((EngineFailureError, EngineUnavailableError)) as info:
            await asyncio.wait_for(task, 20)
        assert not isinstance(info.value, EngineTimeoutError)  # it failed fast, not by running out the clock
        assert e.stats.extra["retries"] == 2 and e.stats.failed_calls == 1
        assert (await e.health()).ok is False
    finally:
        await e.close()


class _Raw(http.server.BaseHTTPRequestHandler):
    """Answers every request with the class's canned bytes (or never, when ``stall`` is set)."""

    body = b"{not json"
    stall: threading.Event | None = None
    count = 0

    def _answer(self) -> None:
        type(self).count += 1
        if self.stall is not None:
            self.stall.wait(30)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def raw_server() -> Iterator[Callable[..., str]]:
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Event]] = []

    def start(*, stall: bool = False) -> str:
        release = threading.Event()
        handler = type("Handler", (_Raw,), {"stall": release if stall else None, "count": 0})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append((srv, release))
        start.handler = handler  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv, release in servers:
        release.set()
        srv.shutdown()
        srv.server_close()


async def test_malformed_json_is_a_typed_error_and_not_retried(raw_server: Callable[..., str]) -> None:
    url = raw_server()
    e = OpenAICompatEngine([url], "m", dialect="llama.cpp", timeout_s=5, max_retries=3)
    with pytest.raises(MalformedResponseError, match="not JSON"):
        await e.start()
    assert raw_server.handler.count == 1  # type: ignore[attr-defined]
    await e.close()


async def test_a_stalled_server_times_out(raw_server: Callable[..., str]) -> None:
    url = raw_server(stall=True)
    e = OpenAICompatEngine([url], "m", dialect="llama.cpp", timeout_s=1.0, max_retries=1)
    with pytest.raises(EngineTimeoutError, match="timeout_s=1"):
        await asyncio.wait_for(e.start(), 10)  # the outer bound only guards the test itself
    await e.close()


async def test_requests_keep_succeeding_when_one_replica_dies(
    servers: tuple[LlamaServer, LlamaServer], spare: LlamaServer
) -> None:
    e = OpenAICompatEngine([spare.url, servers[1].url], "smollm2", timeout_s=30, replica_retry_s=60)
    await e.start()
    try:
        ids = await prompt_ids(e)
        first = await asyncio.gather(*(e.glimpse([*ids, 300 + t], SamplingParams()) for t in range(4)))
        assert all(r.served > 0 for r in e.pool.replicas)  # least-outstanding spread the four calls
        spare.kill()
        later = []
        for i in range(6):
            later.append(await e.generate([*ids, 300 + i], max_tokens=4))
        assert len(first) == 4 and all(len(c.token_ids) == 4 for c in later)
        dead = e.pool.replicas[0]
        assert dead.failures >= 1 and not dead.available(time.monotonic())
        health = await e.health()
        assert health.ok and "down" in health.detail
    finally:
        await e.close()


# ------------------------------------------------------------------------------------ glimp serve
def test_glimp_serve_fronts_two_llama_servers(servers: tuple[LlamaServer, LlamaServer]) -> None:
    require("openai", "any OpenAI client must be able to use the routed model")
    import openai

    from glimp_llm.config import GlimpConfig
    from glimp_llm.manager import BackendManager
    from glimp_llm.server import ServerSettings, create_app

    engine = {"kind": "openai", "model": "smollm2", "top_logprobs": 50, "timeout_s": 60}
    config = GlimpConfig.validated(
        {
            "small": {**engine, "base_urls": [servers[0].url]},
            "large": {**engine, "base_urls": [servers[1].url]},
            "router": {"threshold": 1.5, "max_tokens": 48},
        }
    )
    manager = BackendManager(config)
    app = create_app(settings=ServerSettings(), manager=manager)
    with (
        serve_app(app, start_timeout_s=30) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client,
    ):
        resp = client.chat.completions.create(model="glimp", messages=PROMPT)
        steps = resp.model_extra["glimp"]["steps"]
        assert resp.choices[0].message.content == "".join(s["text"] for s in steps)
        assert all(s["entropy_kind"] == "top-k estimate" for s in steps if s["entropy"] is not None)
        assert resp.usage.completion_tokens == sum(s["tokens"] for s in steps) <= 48
        assert manager.small.stats.glimpses >= 1
