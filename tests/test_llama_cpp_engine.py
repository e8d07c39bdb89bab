"""The engine contract on real llama.cpp (SmolLM2-135M): exact entropy, prefix reuse, stops, concurrency."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from conftest import UNGUARDED

from glimp_llm.engines.base import SamplingParams
from glimp_llm.entropy import entropy_from_logits

pytestmark = pytest.mark.llama_cpp

PROMPT = [{"role": "user", "content": "List three colours. Separate items with a blank line."}]


@pytest.fixture
async def engine(smollm2_path: str):
    from glimp_llm.engines.llama_cpp import LlamaCppEngine

    e = LlamaCppEngine(smollm2_path, n_ctx=2048, n_slots=1)
    await e.start()
    yield e
    await e.close()


async def prompt_ids(engine) -> list[int]:
    return await engine.tokenize(await engine.render_chat(PROMPT))


async def test_glimpse_entropy_matches_an_independent_computation(engine, smollm2_path: str) -> None:
    import llama_cpp

    ids = await prompt_ids(engine)
    glimpse = await engine.glimpse(ids, SamplingParams())
    # Independent path: a separate Llama with logits_all=True fills `scores`; entropy from that row.
    ref = llama_cpp.Llama(model_path=smollm2_path, n_ctx=2048, logits_all=True, verbose=False)
    try:
        ref.eval(ids)
        row = np.array(ref.scores[len(ids) - 1], dtype=np.float64)
    finally:
        ref.close()
    assert glimpse.entropy_kind == "exact"
    assert glimpse.entropy == pytest.approx(entropy_from_logits(row, engine.info.vocab_size), abs=0.1)
    assert glimpse.token_id == int(np.argmax(row[: engine.info.vocab_size])) or glimpse.logprob > -1.0


async def test_an_end_of_sequence_glimpse_has_no_text(engine) -> None:
    """As generate leaves the end token out, a glimpse of it carries no text (llama.cpp's said '<|im_end|>',
    every other engine's ''): the router's glimpse text and its tool-call check see the same on every engine."""
    ids = await engine.tokenize(await engine.render_chat([{"role": "user", "content": "Say OK."}]))
    step = await engine.generate(ids, max_tokens=64)
    assert step.finish_reason == "eos"
    end = await engine.glimpse([*ids, *step.token_ids], SamplingParams())  # greedy: the token that ended it
    assert end.is_eos and end.text == ""


async def test_prefix_reuse_evaluates_only_new_tokens(engine) -> None:
    ids = await prompt_ids(engine)
    stats = engine.stats
    glimpse = await engine.glimpse(ids, SamplingParams())
    assert stats.tokens_evaluated == len(ids)
    step = await engine.generate(ids + [glimpse.token_id], max_tokens=40, stop=["\n\n"])
    # the glimpse token plus every generated token but the last are evaluated; the prompt is not again
    assert stats.tokens_evaluated == len(ids) + len(step.token_ids)
    before = stats.tokens_evaluated
    context = ids + [glimpse.token_id, *step.token_ids]
    await engine.glimpse(context, SamplingParams())
    assert stats.tokens_evaluated - before == 1  # only the step's last token was new
    # a foreign step written by "the other model" costs exactly its length
    before = stats.tokens_evaluated
    foreign = await engine.tokenize(" Blue is also nice.\n\n")
    await engine.glimpse(context + foreign, SamplingParams())
    assert stats.tokens_evaluated - before == len(foreign)


async def test_generation_stops_at_the_step_delimiter(engine) -> None:
    ids = await prompt_ids(engine)
    completion = await engine.generate(ids, max_tokens=200, stop=["\n\n"])
    assert completion.finish_reason in ("stop", "eos", "length")
    if completion.finish_reason == "stop":
        assert completion.text.endswith("\n\n") or completion.text.count("\n\n") == 1
        assert completion.stop_string == "\n\n"
    short = await engine.generate(ids, max_tokens=3)
    assert len(short.token_ids) <= 3


async def test_streamed_deltas_add_up_to_the_completion(engine) -> None:
    ids = await prompt_ids(engine)
    deltas: list[str] = []
    completion = await engine.generate(ids, max_tokens=30, on_token=lambda d: deltas.append(d.text))
    for _ in range(500):  # deltas are delivered on the loop: poll, bounded (5 s), instead of one fixed wait
        if "".join(deltas) == completion.text:
            break
        await asyncio.sleep(0.01)
    assert "".join(deltas) == completion.text


async def test_concurrent_calls_queue_fairly_without_blocking_the_loop(engine) -> None:
    ids = await prompt_ids(engine)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    start = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(ids, max_tokens=24) for _ in range(4)))
    elapsed = time.perf_counter() - start
    done = True
    await tick_task
    assert all(r.token_ids for r in results)
    assert len({r.text for r in results}) == 1  # greedy, same context: no state was shared or corrupted
    assert ticks >= elapsed / 0.005 * 0.3  # the loop kept running while llama.cpp worked in a thread


async def test_cancellation_frees_the_slot(engine) -> None:
    # A long answer, cancelled as soon as its first token is out (a fixed sleep let a short answer finish
    # first on a fast run); on_token may be called from the engine's worker thread.
    ids = await engine.tokenize(
        await engine.render_chat([{"role": "user", "content": "Count from 1 to 500, one number per line."}])
    )
    loop = asyncio.get_running_loop()
    first = asyncio.Event()
    task = asyncio.create_task(
        engine.generate(ids, max_tokens=1500, on_token=lambda _delta: loop.call_soon_threadsafe(first.set))
    )
    await asyncio.wait_for(first.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine._pool.in_flight == 0
    assert engine.stats.cancelled_calls == 1
    again = await engine.generate(ids, max_tokens=4)
    assert again.token_ids


async def test_two_slots_keep_their_own_prefixes(smollm2_path: str) -> None:
    from glimp_llm.engines.llama_cpp import LlamaCppEngine

    e = LlamaCppEngine(smollm2_path, n_ctx=1024, n_slots=2)
    await e.start()
    try:
        a = await e.tokenize(await e.render_chat([{"role": "user", "content": "Tell me about cats."}]))
        b = await e.tokenize(await e.render_chat([{"role": "user", "content": "Describe the sea at night."}]))
        await asyncio.gather(e.glimpse(a, SamplingParams()), e.glimpse(b, SamplingParams()))
        before = e.stats.tokens_evaluated
        await asyncio.gather(e.glimpse(a + [13], SamplingParams()), e.glimpse(b + [13], SamplingParams()))
        assert e.stats.tokens_evaluated - before == 2  # each request found its own cached slot
    finally:
        await e.close()


async def test_info_excludes_padding_and_knows_end_tokens(engine) -> None:
    info = engine.info
    assert info.vocab_size == 49152
    assert info.eos_token_ids
    assert info.chat_template and "im_start" in info.chat_template
    assert info.backend == "llama.cpp"


async def test_score_equals_an_independent_all_logits_evaluation(engine, smollm2_path: str) -> None:
    """Verification reads every row of one batched evaluation; a separate Llama with logits_all=True
    gives the reference log-probability of each scored token."""
    import llama_cpp

    from glimp_llm.entropy import log_softmax

    ids = await prompt_ids(engine)
    step = await engine.generate(ids, max_tokens=24, stop=["\n\n"])
    continuation = list(step.token_ids)
    continuation[5] = continuation[5] + 7  # an unlikely token: its log-prob must be low, and later rows follow it
    scores = await engine.score(ids, continuation)
    ref = llama_cpp.Llama(model_path=smollm2_path, n_ctx=2048, logits_all=True, verbose=False)
    try:
        ref.eval(ids + continuation)
        rows = np.array(ref.scores[len(ids) - 1 : len(ids) + len(continuation) - 1], dtype=np.float64)
    finally:
        ref.close()
    vocab = engine.info.vocab_size
    expected = [float(log_softmax(row, vocab)[t]) for row, t in zip(rows, continuation, strict=True)]
    assert len(scores.logprobs) == len(continuation)
    assert scores.logprobs == pytest.approx(expected, abs=0.05)
    assert scores.logprobs[5] < -3
    # the scored tokens are cached: continuing after them evaluates nothing again
    before = engine.stats.tokens_evaluated
    await engine.glimpse(ids + continuation, SamplingParams())
    assert engine.stats.tokens_evaluated == before


async def test_verification_on_real_llama_cpp_keeps_only_accepted_tokens(smollm2_path: str) -> None:
    """SmolLM2 as both models, sampling at temperature 1 (seeded), with a strict verification threshold:
    the large model rejects some sampled tokens; every kept small token has a log-prob at or above the
    threshold under it, and the large model's text starts right at the first rejected token."""
    from glimp_llm.config import RouterConfig
    from glimp_llm.engines.llama_cpp import LlamaCppEngine
    from glimp_llm.router import Router

    small = LlamaCppEngine(smollm2_path, n_ctx=2048, name="small")
    large = LlamaCppEngine(smollm2_path, n_ctx=2048, name="large")
    await small.start()
    await large.start()
    try:
        # verification alone: with the guards on, the first (and here only) step would go large unverified
        strict = {**UNGUARDED, "threshold": 6.0, "verify": True, "verify_logprob": -1.5}
        router = Router(small, large, RouterConfig(**strict))
        prompt = PROMPT[0]["content"]
        result = await router.generate(prompt, max_tokens=80, temperature=1.0, seed=3)
        assert result.text == "".join(s.text for s in result.steps)
        assert result.usage.verified_steps >= 1
        rejected = [s for s in result.steps if s.verified and s.model == "large"]
        assert rejected, "a strict threshold at temperature 1 rejects some sampled token"
        context = await router.prepare_prompt(router_request(prompt), large)
        for step in result.steps:
            if step.verified:
                kept = step.token_ids[: step.accepted_tokens]
                if kept:
                    lps = (await large.score(context, kept)).logprobs
                    assert min(lps) >= -1.5 - 0.05
                assert step.kept_small_tokens == (step.accepted_tokens if step.model == "large" else 0)
            context = context + step.token_ids
        assert result.usage.small_tokens + result.usage.large_tokens == result.usage.completion_tokens
    finally:
        await small.close()
        await large.close()


async def test_speculative_verification_on_real_llama_cpp_writes_the_large_models_greedy_text(
    smollm2_path: str,
) -> None:
    """verify_resume=small with verify_margin=0: the small model samples at temperature 1 (seeded), the large
    model (SmolLM2 again, its own engine) replaces every token it would not have chosen by its own. So every
    kept token is the large model's argmax after the text before it, read back by an independent scoring."""
    from glimp_llm.config import RouterConfig
    from glimp_llm.engines.llama_cpp import LlamaCppEngine
    from glimp_llm.router import Router

    small = LlamaCppEngine(smollm2_path, n_ctx=2048, name="small")
    large = LlamaCppEngine(smollm2_path, n_ctx=2048, name="large")
    await small.start()
    await large.start()
    try:
        options = {**UNGUARDED, "verify": True, "verify_resume": "small", "verify_margin": 0.0}
        router = Router(small, large, RouterConfig(threshold=6.0, verify_draft_tokens=8, **options))
        prompt = PROMPT[0]["content"]
        result = await router.generate(prompt, max_tokens=60, temperature=1.0, seed=3)
        assert result.text == "".join(s.text for s in result.steps)
        assert result.usage.corrected_tokens > 0, "sampling at temperature 1 drafts some token greedy would not"
        assert large.stats.generate_calls == 0  # every large-model token came from a scoring
        context = await router.prepare_prompt(router_request(prompt), large)
        ids = [t for step in result.steps for t in step.token_ids]
        best = (await large.score(context, ids)).best_ids
        agree = sum(a == b for a, b in zip(ids, best, strict=True))
        assert agree >= len(ids) - 2  # a near-tie may flip between two evaluations of different batch shapes
        assert result.usage.small_tokens + result.usage.large_tokens == result.usage.completion_tokens
    finally:
        await small.close()
        await large.close()


def router_request(prompt: str):  # type: ignore[no-untyped-def]
    from glimp_llm.router import RouteRequest

    return RouteRequest(prompt=prompt)


@pytest.mark.parametrize("user_policy", [None, "PASSIVE"])
def test_openmp_spin_defaults_are_set_before_llama_cpp_loads_unless_the_user_set_them(user_policy: str | None) -> None:
    """Two llama.cpp models in one process oversubscribe OpenMP; libgomp then throttles its spin and routed
    decoding slows by half (benchmarks/RESULTS.md, "OpenMP spin"). The engine sets libgomp's policy before the
    library loads (libgomp reads it once, then); a policy the user chose is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    code = (
        "import os, sys; from glimp_llm.engines.llama_cpp import import_llama_cpp; "
        "assert 'llama_cpp' not in sys.modules; import_llama_cpp(); "
        "print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [user_policy or "ACTIVE", "300000"]
