"""Router unit tests on the scripted engine: every branch, boundary, budget, stop and error path."""

from __future__ import annotations

import asyncio

import pytest
from conftest import UNGUARDED

from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import SamplingParams
from glimp_llm.engines.scripted import SCRIPTED_TEMPLATE, FaultPlan, ScriptedEngine
from glimp_llm.errors import (
    ContextTooLongError,
    EngineFailureError,
    InvalidRequestError,
    OverloadedError,
    RequestTimeoutError,
)
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import DoneEvent, StepEvent, TokenEvent

SMALL = "First we add 2 plus 3.\n\nThen we multiply.\n\nThe answer is 10."
LARGE = "LARGE one.\n\nLARGE two.\n\nLARGE three."


async def make_router(entropies, *, small=SMALL, large=LARGE, small_kwargs=None, **router_options):
    s = ScriptedEngine(small, entropies=entropies, name="small", **(small_kwargs or {}))
    lg = ScriptedEngine(large, entropies=0.1, name="large")
    await s.start()
    await lg.start()
    return Router(s, lg, RouterConfig(**{**UNGUARDED, **router_options})), s, lg


async def test_low_entropy_steps_stay_small_and_reuse_the_glimpse() -> None:
    router, small, large = await make_router([0.1, 0.2, 0.3], threshold=1.0)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == ["small", "small", "small"]
    assert result.text == SMALL
    assert result.finish_reason == "eos"
    for step in result.steps:
        assert step.glimpse_reused
        assert step.token_ids[0] == (await small.tokenize(step.glimpse_text))[0]
    assert result.usage.glimpse_tokens_discarded == 0
    assert large.stats.generate_calls == 0


async def test_high_entropy_step_goes_to_large_and_glimpse_is_dropped() -> None:
    router, _, large = await make_router([0.1, 2.0, 0.3], threshold=1.0)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == ["small", "large", "small"]
    assert result.steps[1].text == "LARGE two.\n\n"
    assert not result.steps[1].glimpse_reused
    assert result.steps[1].glimpse_text == "Then"  # what the small model would have written
    assert result.text == "First we add 2 plus 3.\n\nLARGE two.\n\nThe answer is 10."
    assert result.usage.large_steps == 1 and result.usage.small_steps == 2
    assert result.usage.glimpse_tokens_discarded == 1
    assert result.usage.large_tokens == result.steps[1].tokens
    assert large.stats.generate_calls == 1


async def test_look_ahead_glimpse_routes_on_the_most_uncertain_of_the_first_tokens() -> None:
    """A step that opens with a certain token ("First", a list number) but hesitates right after it:
    one glimpsed token sees only the certainty; three see the hesitation and send the step large."""
    kwargs = {"small_kwargs": {"inner_entropy": 2.0}}  # every token after a step's first is uncertain
    one, _, _ = await make_router([0.01, 0.01, 0.01], threshold=1.0, **kwargs)
    assert [s.model for s in (await one.generate("hello")).steps] == ["small"] * 3
    three, small, large = await make_router([0.01, 0.01, 0.01], threshold=1.0, glimpse_tokens=3, **kwargs)
    result = await three.generate("hello")
    assert [s.model for s in result.steps] == ["large"] * 3
    assert result.text == LARGE
    assert [s.glimpse_tokens for s in result.steps] == [3, 3, 3]
    assert result.steps[0].glimpse_text == "First we add"  # what the small model would have written
    assert result.steps[0].entropy == pytest.approx(2.0, abs=1e-3)
    assert result.usage.glimpses == 3 and result.usage.glimpse_tokens_discarded == 9


async def test_look_ahead_tokens_are_kept_when_the_small_model_writes_the_step() -> None:
    router, small, _ = await make_router([0.1, 0.2, 0.3], threshold=1.0, glimpse_tokens=4)
    result = await router.generate("hello")
    assert result.text == SMALL and [s.model for s in result.steps] == ["small"] * 3
    first = result.steps[0]
    assert first.glimpse_reused and first.glimpse_tokens == 4 and first.glimpse_text == "First we add 2"
    assert first.token_ids[:4] == await small.tokenize("First we add 2")
    assert result.usage.glimpse_tokens_discarded == 0
    # and they cost nothing extra: the small engine evaluates exactly the tokens it would with one glimpse
    plain, plain_small, _ = await make_router([0.1, 0.2, 0.3], threshold=1.0)
    assert (await plain.generate("hello")).text == SMALL
    assert small.stats.tokens_evaluated == plain_small.stats.tokens_evaluated


async def test_look_ahead_stops_at_the_step_delimiter_and_the_step_cap() -> None:
    short = "Yes.\n\nNo.\n\nDone."
    router, _, _ = await make_router([0.1, 0.1, 0.1], small=short, threshold=1.0, glimpse_tokens=8)
    result = await router.generate("hello")
    assert [s.text for s in result.steps] == ["Yes.\n\n", "No.\n\n", "Done."]
    assert all(s.glimpse_reused for s in result.steps)
    capped, _, _ = await make_router([0.1], threshold=1.0, glimpse_tokens=8, step_max_tokens=2)
    steps = (await capped.generate("hello", max_tokens=6)).steps
    assert all(s.tokens <= 2 and s.glimpse_tokens <= 2 for s in steps)


async def test_threshold_boundary_is_inclusive_for_small() -> None:
    router, small, _ = await make_router([0.7, 0.7, 0.7])
    prompt_ids = await router.prepare_prompt(RouteRequest(prompt="hello"), small)
    exact = (await small.glimpse(prompt_ids, SamplingParams())).entropy
    at = await router.generate("hello", threshold=exact)
    assert at.steps[0].model == "small"  # H <= tau -> small
    below = await router.generate("hello", threshold=exact - 1e-6)
    assert below.steps[0].model == "large"


async def test_paper_faithful_mode_uses_top20_and_discards_glimpse() -> None:
    router, small, _ = await make_router([0.7, 0.7, 0.7], paper_faithful=True, threshold=0.0)
    result = await router.generate("hello")
    assert result.mode == "paper"
    assert all(s.entropy_kind == "top-k renormalized" for s in result.steps)
    assert all(not s.glimpse_reused for s in result.steps)
    assert result.usage.glimpse_tokens_discarded == result.usage.glimpses == len(result.steps)
    # >= comparison: tau 0 sends every step to the large model
    assert all(s.model == "large" for s in result.steps)
    # with a high tau the small model rewrites the step from the context (glimpse discarded)
    router.config = RouterConfig(**UNGUARDED, paper_faithful=True, threshold=5.0)
    result = await router.generate("hello")
    assert result.text == SMALL and all(s.model == "small" for s in result.steps)
    assert all(not s.glimpse_reused for s in result.steps)


async def test_budget_is_never_exceeded_and_reported_as_length() -> None:
    router, _, _ = await make_router(0.1)
    result = await router.generate("hello", max_tokens=5)
    assert result.usage.completion_tokens == 5
    assert sum(s.tokens for s in result.steps) == 5
    assert result.finish_reason == "length"
    assert result.steps[-1].ended_by == "budget"


async def test_step_cap_splits_long_steps() -> None:
    router, _, _ = await make_router(0.1, step_max_tokens=3)
    result = await router.generate("hello")
    assert all(s.tokens <= 3 for s in result.steps)
    assert any(s.ended_by == "step_cap" for s in result.steps)
    assert result.text == SMALL


async def test_stop_sequence_cuts_the_output() -> None:
    router, _, _ = await make_router(0.1)
    result = await router.generate("hello", stop=["multiply"])
    assert result.finish_reason == "stop"
    assert result.text == "First we add 2 plus 3.\n\nThen we "
    assert "multiply" not in result.text


async def test_repeated_identical_step_stops() -> None:
    router, _, _ = await make_router(0.1, small="Again.\n\nAgain.\n\nAgain.\n\nNever reached.")
    result = await router.generate("hello")
    assert result.finish_reason == "repetition"
    assert len(result.steps) == 2


async def test_end_of_thinking_hands_the_answer_to_the_large_model() -> None:
    thinking_template = SCRIPTED_TEMPLATE.replace("<|assistant|>{% endif %}", "<|assistant|><think>{% endif %}")
    router, _, _ = await make_router(
        0.1,
        small="We think.\n\nDone thinking </think> small answer",
        large="LARGE one.\n\nLARGE answer.",
        small_kwargs={"chat_template": thinking_template},
    )
    # the large engine shares the scripted tokenizer; it is at "step 2" when the answer phase starts
    result = await router.generate("hello")
    phases = [(s.phase, s.model, s.ended_by) for s in result.steps]
    assert phases[1] == ("thinking", "small", "end_of_thinking")
    assert phases[2][0:2] == ("answer", "large")
    assert result.steps[1].text.endswith("</think>")


async def test_streaming_events_match_the_result() -> None:
    router, _, _ = await make_router([0.1, 2.0, 0.3], threshold=1.0)
    events = [e async for e in router.stream("hello")]
    assert isinstance(events[-1], DoneEvent)
    result = events[-1].result
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert tokens == result.text
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert [s.model for s in steps] == [s.model for s in result.steps]
    models_of_tokens = {e.model for e in events if isinstance(e, TokenEvent)}
    assert models_of_tokens == {"small", "large"}


@pytest.mark.parametrize(
    "stop",
    ["add", "2 plus", ["GE two", "multiply"], "two.\n\nThe", "3.\n\nLARGE"],
    ids=["one token", "across tokens", "inside the large step", "across steps", "across steps and models"],
)
async def test_streamed_tokens_never_show_a_stop_string(stop: str | list[str]) -> None:
    """The tokens of a stream add up to the result's text, which ends before the stop string: they used to
    carry it (and what followed it in the same token), so a caller printing tokens showed what generate hid."""
    router, _, _ = await make_router([0.1, 2.0, 0.3], threshold=1.0)
    events = [e async for e in router.stream("hello", stop=stop)]
    result = events[-1].result  # type: ignore[union-attr]
    assert result.finish_reason == "stop"
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert "".join(e.text for e in tokens) == result.text
    by_step = {s.index: s for s in result.steps}
    assert all(by_step[e.step].model == e.model for e in tokens)  # each piece keeps the step and model it came from


async def test_closing_a_stream_early_cancels_engine_work() -> None:
    router, small, _ = await make_router(0.1, small_kwargs={"token_seconds": 0.01})
    agen = router.stream("hello")
    first = await agen.__anext__()
    assert isinstance(first, TokenEvent)
    await agen.aclose()
    assert small._pool is not None
    for _ in range(500):  # bounded (5 s): the engine call winds down on the loop
        if small._pool.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert small._pool.in_flight == 0


async def test_prefix_reuse_evaluates_each_token_about_once() -> None:
    router, small, large = await make_router([0.1, 2.0, 0.3], threshold=1.0)
    result = await router.generate("hello")
    prompt = result.usage.prompt_tokens
    generated = result.usage.completion_tokens
    # every context token is evaluated once per model that reads it; no re-processing of the prefix
    assert small.stats.tokens_evaluated <= prompt + generated + len(result.steps)
    assert large.stats.tokens_evaluated <= prompt + generated + 1


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": "   "}, "empty"),
        ({"prompt": 42}, "must be a string"),
        ({"prompt": "a\x00b"}, "NUL"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "hi", "threshold": float("nan")}, "finite"),
        ({"prompt": "hi", "threshold": float("inf")}, "finite"),
        ({"prompt": "hi", "threshold": -0.5}, ">= 0"),
        ({"messages": []}, "non-empty"),
        ({"messages": [{"content": "no role"}]}, "role"),
        ({"prompt": "hi", "stop": [""]}, "stop"),
    ],
)
async def test_bad_input_gets_a_typed_error(request_kwargs: dict, message: str) -> None:
    router, _, _ = await make_router(0.1)
    with pytest.raises(InvalidRequestError, match=message):
        await router.generate(RouteRequest(**request_kwargs))


async def test_context_longer_than_the_window() -> None:
    router, _, _ = await make_router(0.1, small_kwargs={"context_window": 32})
    with pytest.raises(ContextTooLongError, match="window") as info:
        await router.generate("hello " * 40)
    assert info.value.window == 32


async def test_engine_failure_is_typed_or_falls_back_when_asked() -> None:
    router, small, _ = await make_router(0.1, small_kwargs={"faults": FaultPlan(fail_every=1)})
    with pytest.raises(EngineFailureError, match="injected"):
        await router.generate("hello")
    router.config = RouterConfig(**UNGUARDED, fallback_on_engine_failure=True)
    result = await router.generate("hello")
    assert all(s.model == "large" and s.fallback for s in result.steps)
    assert result.text == LARGE


async def test_deadline_raises_request_timeout() -> None:
    router, _, _ = await make_router(0.1, small_kwargs={"token_seconds": 0.05})
    with pytest.raises(RequestTimeoutError, match="did not finish"):
        await router.generate("hello", timeout_s=0.2)


async def test_admission_bounds_the_queue() -> None:
    router, _, _ = await make_router(
        0.1, small_kwargs={"token_seconds": 0.02}, max_concurrent_requests=1, max_queued_requests=1
    )
    tasks = [asyncio.create_task(router.generate("hello")) for _ in range(3)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, OverloadedError) for r in results) == 1
    assert sum(not isinstance(r, BaseException) for r in results) == 2


async def test_concurrent_requests_on_one_slot_do_not_corrupt_each_other() -> None:
    router, _, _ = await make_router([0.1, 2.0, 0.3], threshold=1.0)
    results = await asyncio.gather(*(router.generate("hello") for _ in range(20)))
    assert {r.text for r in results} == {"First we add 2 plus 3.\n\nLARGE two.\n\nThe answer is 10."}


async def test_result_is_json_serialisable() -> None:
    import json

    router, _, _ = await make_router([0.1, 2.0, 0.3], threshold=1.0)
    data = (await router.generate("hello")).to_json_dict()
    text = json.dumps(data)
    assert set(data) >= {"text", "steps", "usage", "timings", "finish_reason"}
    assert {s["model"] for s in json.loads(text)["steps"]} == {"small", "large"}
    assert all({"model", "entropy", "tokens", "text"} <= set(s) for s in data["steps"])


async def test_different_tokenizers_travel_as_text() -> None:
    class OtherTokenizer(ScriptedEngine):
        def _load(self):  # same vocabulary, but declared different: forces the text path
            states, info = super()._load()
            from dataclasses import replace

            return states, replace(info, tokenizer_fingerprint="other")

    small = ScriptedEngine(SMALL, entropies=[0.1, 2.0, 0.3], name="small")
    large = OtherTokenizer(LARGE, name="large")
    await small.start()
    await large.start()
    result = await Router(small, large, RouterConfig(**UNGUARDED, threshold=1.0)).generate("hello")
    assert result.text == "First we add 2 plus 3.\n\nLARGE two.\n\nThe answer is 10."


async def test_the_small_step_continues_from_the_sampled_glimpse_token() -> None:
    # At entropy 5 nats the first token is nearly random: a router that re-drew it would rarely match.
    router, _, _ = await make_router(5.0, threshold=10.0)
    for _ in range(3):
        result = await router.generate("hello", temperature=1.0)
        for step in result.steps:
            assert step.glimpse_reused
            assert step.text.startswith(step.glimpse_text)
        assert len({s.glimpse_text for s in result.steps}) > 1  # the draws really were random


async def test_seeded_sampling_is_reproducible() -> None:
    router, _, _ = await make_router(3.0, threshold=10.0)
    a = await router.generate("hello", temperature=1.0, seed=7)
    b = await router.generate("hello", temperature=1.0, seed=7)
    c = await router.generate("hello", temperature=1.0, seed=8)
    assert a.text == b.text
    assert a.text != c.text or [s.glimpse_text for s in a.steps] != [s.glimpse_text for s in c.steps]


async def test_options_beside_a_request_object_apply_to_it() -> None:
    """``generate(RouteRequest(...), max_tokens=...)``: the keyword options replace the request's fields, as they
    do beside a prompt string, instead of being dropped."""
    router, _, _ = await make_router(0.1)
    result = await router.generate(RouteRequest(prompt="hello", max_tokens=200), max_tokens=3)
    assert result.usage.completion_tokens == 3 and result.finish_reason == "length"
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_token'"):
        await router.generate(RouteRequest(prompt="hello"), max_token=3)


async def test_a_scripted_engine_answers_by_turn_after_tool_results() -> None:
    """``next_turns``: the response after the first, second, ... tool result (the last repeats), as an agent's
    model answers differently once it has seen a result."""
    engine = ScriptedEngine("Call the tool.", next_turns=["Got one.", "Got two."])
    await engine.start()
    history = [{"role": "user", "content": "go"}]
    for expected in ("Call the tool.", "Got one.", "Got two.", "Got two."):
        ids = await engine.tokenize(await engine.render_chat(history))
        assert (await engine.generate(ids, max_tokens=20)).text == expected
        history += [{"role": "assistant", "content": expected}, {"role": "tool", "content": "42"}]
    await engine.close()


def test_the_request_and_sampling_field_sets_the_router_copies_match() -> None:
    """The router passes a request's option fields to the shared bounds check by name, and merges the
    configured sampling into the engines' SamplingParams by name: a field added on one side only would fail
    every request, so it fails here first."""
    import dataclasses

    from glimp_llm.chat.options import RequestOptions
    from glimp_llm.config import SamplingConfig

    assert set(RequestOptions.model_fields) <= {f.name for f in dataclasses.fields(RouteRequest)}
    assert set(SamplingConfig.model_fields) == {f.name for f in dataclasses.fields(SamplingParams)}
