"""The router's guards, verification and routing modes, on scripted engines (issue 14).

Scripted engines follow their script; a token off the large model's script has probability ~1e-5 under it
(log-prob about -11), a token on it ~1 (log-prob about 0). So verification accepts exactly the tokens the
two scripts share, and the large model continues from the first token where they part.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from conftest import UNGUARDED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimp_llm.config import GlimpConfig, RouterConfig
from glimp_llm.engines.scripted import ScriptedEngine
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router
from glimp_llm.trace import StepEvent, TokenEvent

SMALL = "First we add 2 plus 3.\n\nThen we multiply.\n\nThe answer is 10."
LARGE = "LARGE one.\n\nLARGE two.\n\nLARGE three."
TOOLS = [{"type": "function", "function": {"name": "multiply", "parameters": {"type": "object", "properties": {}}}}]


async def make_router(
    entropies: list[float] | float,
    *,
    small: str = SMALL,
    large: str = LARGE,
    small_kwargs: dict | None = None,
    **options: object,
) -> tuple[Router, ScriptedEngine, ScriptedEngine]:
    s = ScriptedEngine(small, entropies=entropies, name="small", **(small_kwargs or {}))
    lg = ScriptedEngine(large, entropies=0.1, name="large")
    await s.start()
    await lg.start()
    return Router(s, lg, RouterConfig(**{**UNGUARDED, **options})), s, lg


def assert_accounting(result) -> None:  # type: ignore[no-untyped-def]
    """Invariants every setting keeps: the text is the steps, and every generated token is counted once."""
    assert result.text == "".join(s.text for s in result.steps)
    assert result.usage.small_tokens + result.usage.large_tokens == result.usage.completion_tokens
    assert result.usage.completion_tokens == sum(s.tokens for s in result.steps)


# ----------------------------------------------------------------------------- routing modes
@pytest.mark.parametrize(("routing", "model"), [("small-only", "small"), ("large-only", "large")])
async def test_one_model_routing_writes_every_step_without_glimpses(routing: str, model: str) -> None:
    router, small, large = await make_router(5.0, routing=routing, threshold=1.0)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == [model] * 3
    assert result.text == (SMALL if model == "small" else LARGE)
    assert result.usage.glimpses == 0 and small.stats.glimpses == 0
    assert {s.routed_by for s in result.steps} == {"fixed"}
    assert_accounting(result)


async def test_random_routing_is_seeded_and_follows_its_share() -> None:
    script = "\n\n".join(f"step {i}." for i in range(40))
    decisions = []
    for seed in (1, 1, 2):
        router, _, _ = await make_router(
            0.0, small=script, large=script, routing="random", random_large_share=0.5, random_seed=seed
        )
        result = await router.generate("hello", max_tokens=4000)
        assert result.usage.glimpses == 0
        assert {s.routed_by for s in result.steps} == {"random"}
        decisions.append([s.model for s in result.steps])
    assert decisions[0] == decisions[1]  # the same seed and prompt: the same draw
    assert decisions[0] != decisions[2]
    share = decisions[0].count("large") / len(decisions[0])
    assert 0.25 < share < 0.75  # 40 draws at p=0.5: outside this is a ~0.1 % event, and the seed is fixed


# ----------------------------------------------------------------------------- guards
async def test_first_step_large_writes_the_turns_first_step_unglimpsed() -> None:
    router, small, _ = await make_router([0.1, 0.1, 0.1], threshold=1.0, first_step_large=True)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == ["large", "small", "small"]
    assert result.steps[0].routed_by == "first_step" and result.steps[0].entropy is None
    assert result.text == "LARGE one.\n\nThen we multiply.\n\nThe answer is 10."
    assert result.usage.glimpses == 2
    assert_accounting(result)


async def test_glimpse_past_forced_tokens_keeps_them_for_the_large_model() -> None:
    # each step opens with a near-certain token, then hesitates: forced tokens are kept, the route is
    # decided on the first uncertain token, and the large model continues after the kept prefix
    kwargs = {"small_kwargs": {"inner_entropy": 2.0}}
    router, _, large = await make_router([0.01, 0.01, 0.01], threshold=1.0, forced_entropy=0.05, **kwargs)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == ["large"] * 3
    first = result.steps[0]
    assert first.forced_tokens == 1 and first.kept_small_tokens == 1
    assert first.text.startswith("First") and first.glimpse_tokens == 2
    assert first.entropy == pytest.approx(2.0, abs=1e-3)  # the deciding token's entropy
    assert result.usage.forced_tokens == 3
    assert result.usage.glimpse_tokens_discarded == 3  # only the uncertain token of each step
    assert result.usage.small_tokens == 3  # the kept forced tokens count for the small model
    assert_accounting(result)


async def test_forced_tokens_up_to_the_cap_leave_the_step_to_the_small_model() -> None:
    router, _, large = await make_router([0.01, 0.01, 0.01], threshold=0.5, forced_entropy=0.05, forced_max_tokens=3)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == ["small"] * 3
    assert result.text == SMALL
    assert [s.forced_tokens for s in result.steps] == [3, 3, 3]
    assert large.stats.generate_calls == 0
    assert_accounting(result)


def test_forced_tokens_and_look_ahead_are_exclusive() -> None:
    with pytest.raises(ValueError, match="choose one"):
        RouterConfig(forced_entropy=0.1, glimpse_tokens=4)
    # asking for the look-ahead turns the forced glimpse's default off (it is on by default)
    assert RouterConfig(glimpse_tokens=4).forced_entropy == 0.0 < RouterConfig().forced_entropy
    looking_ahead = GlimpConfig().with_router(glimpse_tokens=4)
    assert looking_ahead.router.forced_entropy == 0.0
    # turned off again, the look-ahead gives the forced glimpse its default back; an explicit 0 stays 0
    assert looking_ahead.with_router(glimpse_tokens=1).router.forced_entropy == RouterConfig().forced_entropy > 0
    assert GlimpConfig().with_router(forced_entropy=0.0).with_router(glimpse_tokens=1).router.forced_entropy == 0.0


async def test_final_step_check_rewrites_the_small_models_last_step() -> None:
    router, _, _ = await make_router([0.1, 0.1, 0.1], threshold=1.0, final_step_check=True)
    result = await router.generate("hello")
    assert [s.model for s in result.steps] == ["small", "small", "large"]
    last = result.steps[-1]
    assert last.routed_by == "final_check" and last.rejected_text == "The answer is 10."
    assert result.text == "First we add 2 plus 3.\n\nThen we multiply.\n\nLARGE three."
    assert result.usage.small_tokens_rejected == last.rejected_tokens > 0
    assert_accounting(result)


async def test_final_step_check_sees_the_final_answer_marker() -> None:
    small = "Compute.\n\nSo \\boxed{5}.\n\nDone."
    router, _, _ = await make_router(0.1, small=small, threshold=1.0, final_step_check=True)
    result = await router.generate("hello")
    assert [s.routed_by for s in result.steps][:2] == ["entropy", "final_check"]
    assert result.steps[1].text == "LARGE two.\n\n"


async def test_tool_call_guard_sends_a_step_that_opens_a_call_to_the_large_model() -> None:
    small = "I need the tool.\n\n<tool_call>{}</tool_call>"
    router, _, _ = await make_router(0.1, small=small, threshold=1.0, tool_call_large=True)
    result = await router.generate("hello", tools=TOOLS)
    assert [(s.model, s.routed_by) for s in result.steps][:2] == [("small", "entropy"), ("large", "tool_call")]
    # without tools in the request the guard does nothing
    plain = await router.generate("hello")
    assert [s.model for s in plain.steps] == ["small", "small"]


async def test_tool_call_guard_rewrites_a_call_opened_inside_a_small_step() -> None:
    small = "I need the tool.<tool_call>{}</tool_call>"
    large = "I need the tool.<tool_call>the large call</tool_call>"
    router, _, _ = await make_router(0.1, small=small, large=large, threshold=1.0, tool_call_large=True)
    result = await router.generate("hello", tools=TOOLS)
    (step,) = result.steps
    assert step.model == "large" and step.routed_by == "tool_call"
    assert step.kept_small_tokens == len(ScriptedEngine("x").tokenizer.encode("I need the tool."))
    assert step.text == large and step.rejected_text == "<tool_call>{}</tool_call>"
    assert_accounting(result)


@pytest.mark.parametrize("verify", [False, True])
async def test_tool_call_guard_rewrites_the_call_even_when_the_large_model_would_accept_it(verify: bool) -> None:
    """Verification reads a repeated call as plausible token by token; calling is the large model's decision."""
    script = "I need the tool.<tool_call>{}</tool_call>"
    router, _, lg = await make_router(
        0.1, small=script, large=script, threshold=1.0, tool_call_large=True, verify=verify
    )
    result = await router.generate("hello", tools=TOOLS)
    (step,) = result.steps
    assert step.model == "large" and step.routed_by == "tool_call" and not step.verified
    assert lg.stats.generate_calls == 1
    assert_accounting(result)


# ----------------------------------------------------------------------------- verification
async def test_verification_keeps_the_agreed_prefix_and_the_large_model_continues() -> None:
    small = "First we add 2 plus 3.\n\nThen we divide.\n\nThe answer is 10."
    large = "First we add 2 plus 3.\n\nThen we multiply.\n\nThe answer is 10."
    router, _, lg = await make_router(0.1, small=small, large=large, threshold=1.0, verify=True)
    result = await router.generate("hello")
    assert result.text == large  # the large model's answer, with the small model writing what it agreed with
    assert [s.model for s in result.steps] == ["small", "large", "small"]
    s0, s1, s2 = result.steps
    assert s0.verified and s0.accepted_tokens == s0.tokens and s0.min_logprob > -0.01
    assert s1.verified and s1.accepted_tokens == 2 and s1.kept_small_tokens == 2  # "Then", " we"
    assert s1.rejected_text == " divide.\n\n" and s1.min_logprob < -7
    assert s2.verified and s2.accepted_tokens == s2.tokens  # the end of sequence is accepted too
    assert result.usage.verified_steps == 3 and result.usage.rejected_steps == 1
    assert result.usage.small_tokens_rejected == s1.rejected_tokens
    assert result.timings.verify_seconds > 0
    assert lg.stats.generate_calls == 1
    assert_accounting(result)


async def test_verification_rejects_an_early_end_of_sequence() -> None:
    router, _, _ = await make_router(0.1, small="A.\n\nB.", large="A.\n\nB.\n\nC.", threshold=1.0, verify=True)
    result = await router.generate("hello")
    assert result.text == "A.\n\nB.\n\nC."
    assert result.usage.rejected_steps == 2  # "B." then end: no; the small model's empty last step: no
    assert_accounting(result)


async def test_verification_streams_only_what_was_kept() -> None:
    small = "First we add 2 plus 3.\n\nThen we divide.\n\nThe answer is 10."
    large = "First we add 2 plus 3.\n\nThen we multiply.\n\nThe answer is 10."
    router, _, _ = await make_router(0.1, small=small, large=large, threshold=1.0, verify=True)
    tokens, steps = [], []
    async for event in router.stream("hello"):
        if isinstance(event, TokenEvent):
            tokens.append(event.text)
        elif isinstance(event, StepEvent):
            steps.append(event.step.text)
    assert "".join(tokens) == "".join(steps) == large


async def test_verification_needs_a_large_engine_that_scores() -> None:
    router, _, lg = await make_router(0.1, threshold=1.0, verify=True)
    lg._info = dataclasses.replace(lg.info, can_score=False)
    with pytest.raises(ConfigurationError, match="router.verify needs a large engine that scores"):
        await router.generate("hello")


async def test_verification_needs_the_large_models_end_of_sequence_ids() -> None:
    router, _, lg = await make_router(0.1, threshold=1.0, verify=True)
    lg._info = dataclasses.replace(lg.info, eos_token_ids=frozenset())
    with pytest.raises(ConfigurationError, match="no end-of-sequence token ids"):
        await router.generate("hello")


# ------------------------------------------------------- verification, the small model drafting on
SPECULATIVE = {"verify": True, "verify_resume": "small", "verify_margin": 0.0}


async def test_speculative_verification_puts_the_large_models_token_in_and_lets_the_small_model_go_on() -> None:
    small = "First we add 2 plus 3.\n\nThen we minus by 5.\n\nThe answer is 10."
    large = "First we add 2 plus 3.\n\nThen we multiply by 5.\n\nThe answer is 10."
    router, sm, lg = await make_router(
        0.1, small=small, large=large, threshold=1.0, verify=True, verify_resume="small", verify_margin=0.0
    )
    result = await router.generate("hello")
    assert result.text == large
    assert [s.model for s in result.steps] == ["small", "small", "small"]
    s1 = result.steps[1]
    assert s1.verified and s1.corrected_tokens == 1  # " multiply" in place of " minus" (one token each)
    assert s1.rejected_text == " minus by 5.\n\n" and s1.rejected_tokens == len(sm.tokenizer.encode(s1.rejected_text))
    assert s1.accepted_tokens == s1.tokens - 1  # "Then we" before it, " by 5.\n\n" drafted again after it
    assert lg.stats.generate_calls == 0  # the large model never decoded: its token came from the scoring
    assert result.usage.large_tokens == result.usage.corrected_tokens == 1
    from glimp_llm.render import step_reason

    assert step_reason(s1) == "H✓~1"
    assert result.usage.rejected_steps == 1 and result.usage.small_tokens_rejected == s1.rejected_tokens
    assert_accounting(result)


async def test_speculative_verification_drafts_in_pieces_of_verify_draft_tokens() -> None:
    small = "First we add 2 plus 3.\n\nThen we minus by 5.\n\nThe answer is 10."
    large = "First we add 2 plus 3.\n\nThen we multiply by 5.\n\nThe answer is 10."
    router, sm, lg = await make_router(
        0.1,
        small=small,
        large=large,
        threshold=1.0,
        verify=True,
        verify_resume="small",
        verify_margin=0.0,
        verify_draft_tokens=2,
    )
    drafts: list[int] = []
    generate = sm.generate

    async def counting(context, **kw):  # type: ignore[no-untyped-def]
        drafts.append(kw["max_tokens"])
        return await generate(context, **kw)

    sm.generate = counting  # type: ignore[method-assign]
    result = await router.generate("hello")
    assert result.text == large
    assert drafts and max(drafts) <= 2
    assert result.steps[1].rejected_text == " minus"  # only the rest of its draft is lost
    assert all(s.tokens > 2 for s in result.steps)  # a draft's size does not end the step
    assert_accounting(result)


async def test_speculative_verification_replaces_an_early_end_of_sequence() -> None:
    router, _, lg = await make_router(0.1, small="A.\n\nB.", large="A.\n\nB.\n\nC.", threshold=1.0, **SPECULATIVE)
    result = await router.generate("hello")
    assert result.text == "A.\n\nB.\n\nC."
    assert lg.stats.generate_calls == 0
    assert_accounting(result)


async def test_speculative_verification_needs_the_large_models_own_tokens() -> None:
    from glimp_llm.engines.base import TokenScores

    router, _, lg = await make_router(0.1, small="A.\n\nB.", large="A.\n\nC.", threshold=1.0, **SPECULATIVE)
    score = lg.score

    async def without_best(context, continuation):  # type: ignore[no-untyped-def]
        s = await score(context, continuation)
        return TokenScores(s.logprobs, s.best_logprobs)

    lg.score = without_best  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="verify_resume=small needs the large model's own token"):
        await router.generate("hello")


async def test_verify_auto_verifies_where_the_pair_can_and_warns_once_where_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = "First we add 2 plus 3.\n\nThen we minus by 5.\n\nThe answer is 10."
    large = "First we add 2 plus 3.\n\nThen we multiply by 5.\n\nThe answer is 10."
    router, _, lg = await make_router(0.1, small=small, large=large, threshold=1.0, verify="auto")
    assert router.verifying
    result = await router.generate("hello")
    assert result.text == large and result.usage.verified_steps == 3
    lg._info = dataclasses.replace(lg.info, can_score=False)
    assert not router.verifying
    with caplog.at_level("WARNING", logger="glimp_llm.router"):
        first = await router.generate("hello")
        await router.generate("hello")
    assert first.text == small and first.usage.verified_steps == 0
    assert not any(s.verified for s in first.steps)
    warnings = [r.getMessage() for r in caplog.records if "verify=auto" in r.getMessage()]
    assert len(warnings) == 1 and "scores tokens" in warnings[0]


async def test_score_matches_the_engines_own_logprobs_and_primes_its_cache() -> None:
    _, small, _ = await make_router(0.1)
    context = await small.tokenize("<|user|>\nhi<|end|>\n<|assistant|>")
    step = small.tokenizer.encode("First we add")
    scores = await small.score(context, step)
    assert len(scores.logprobs) == 3 and all(lp > -0.01 for lp in scores.logprobs)
    off = await small.score(context, small.tokenizer.encode("Then"))
    assert off.logprobs[0] < -7
    before = small.stats.tokens_evaluated
    await small.generate([*context, *small.tokenizer.encode("Then")], max_tokens=1)
    assert small.stats.tokens_evaluated == before  # the scored tokens are in the cache already


# ----------------------------------------------------------------------------- properties
GUARD_SETTINGS = st.fixed_dictionaries(
    {
        "routing": st.sampled_from(["entropy", "entropy", "random", "small-only", "large-only"]),
        "first_step_large": st.booleans(),
        "tool_call_large": st.booleans(),
        "forced_entropy": st.sampled_from([0.0, 0.05, 0.5]),
        "forced_max_tokens": st.integers(1, 4),
        "final_step_check": st.booleans(),
        "verify": st.sampled_from([False, True, "auto"]),
        "verify_logprob": st.sampled_from([-7.0, -0.5]),
        "verify_resume": st.sampled_from(["large", "small"]),
        "verify_margin": st.sampled_from([None, 0.0]),
        "verify_draft_tokens": st.sampled_from([0, 1, 3]),
        "threshold": st.floats(0.0, 4.0),
        "step_max_tokens": st.integers(1, 12),
        "random_large_share": st.floats(0.0, 1.0),
    }
)
WORDS = ["the", "we", "add", "so", "is", "done", "answer", " 1", " 2", ".", "<tool_call>", "\\boxed{"]
SCRIPTS = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map("".join), min_size=1, max_size=4)


async def _guarded_run(small: list[str], large: list[str], entropies: list[float], options: dict, budget: int) -> None:
    s = ScriptedEngine(small, entropies=entropies, name="small", inner_entropy=0.2)
    lg = ScriptedEngine(large, entropies=0.1, name="large")
    await s.start()
    await lg.start()
    try:
        router = Router(s, lg, RouterConfig(**options))
        events: list = []
        result = await router.generate("q", max_tokens=budget, tools=TOOLS, on_event=events.append, timeout_s=20)
        full = "".join(step.text for step in result.steps)
        assert result.text == full
        assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == full  # streamed = kept
        assert [e.step.text for e in events if isinstance(e, StepEvent)] == [step.text for step in result.steps]
        assert_accounting(result)
        assert result.usage.completion_tokens <= budget
        assert all(step.tokens <= options["step_max_tokens"] for step in result.steps)
        assert all(0 <= step.kept_small_tokens <= step.tokens for step in result.steps)
        assert all(step.kept_small_tokens == 0 for step in result.steps if step.model == "small")
        assert result.usage.small_tokens_rejected == sum(step.rejected_tokens for step in result.steps)
        assert result.usage.corrected_tokens == sum(step.corrected_tokens for step in result.steps)
        assert all(step.corrected_tokens == 0 for step in result.steps if step.model == "large")
        if options["verify"] and options["routing"] in ("entropy", "random"):  # one-model routing: no checks
            assert all(step.verified for step in result.steps if step.model == "small")
        if options["routing"] == "large-only":
            assert result.usage.small_tokens == 0
        for engine in (s, lg):
            assert engine._pool is not None and engine._pool.in_flight == 0
    finally:
        await s.close()
        await lg.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    small=SCRIPTS,
    large=SCRIPTS,
    entropies=st.lists(st.floats(0.0, 4.0), min_size=1, max_size=4),
    options=GUARD_SETTINGS,
    budget=st.integers(1, 40),
)
def test_every_setting_keeps_text_stream_and_accounting(
    small: list[str], large: list[str], entropies: list[float], options: dict, budget: int
) -> None:
    asyncio.run(_guarded_run(small, large, entropies, options, budget))


@pytest.mark.parametrize(("routing", "model"), [("small-only", "small"), ("large-only", "large")])
async def test_one_model_routing_ignores_the_guards_it_ships_with(routing: str, model: str) -> None:
    """The single-model baselines stay single-model under the shipped defaults (guards on)."""
    s = ScriptedEngine(SMALL, entropies=5.0, name="small")
    lg = ScriptedEngine(LARGE, entropies=0.1, name="large")
    await s.start()
    await lg.start()
    result = await Router(s, lg, RouterConfig(routing=routing)).generate("hello", tools=TOOLS)
    assert [step.model for step in result.steps] == [model] * 3
    assert result.usage.small_tokens_rejected == 0 and result.usage.glimpses == 0


async def test_the_shipped_defaults_are_all_four_guards_and_verification_where_the_pair_can() -> None:
    defaults = RouterConfig()
    assert defaults.first_step_large and defaults.tool_call_large and defaults.final_step_check
    assert defaults.forced_entropy == 0.05 and defaults.forced_max_tokens == 8 and defaults.routing == "entropy"
    assert defaults.verify == "auto" and defaults.verify_logprob == -7.0 and defaults.verify_resume == "large"


async def test_the_defaults_route_as_the_benchmarks_verify_guards_mode() -> None:
    """RESULTS.md measures the shipped defaults on GSM8K through the verify+guards mode (the same settings;
    verify=auto verifies on a pair that can score): the two give the same trace."""
    from glimp_llm.bench.modes import GUARDS_OFF, registry

    small = "First we add 2 plus 3.\n\nThen we minus by 5.\n\nThe answer is \\boxed{10}."
    large = "First we add 2 plus 3.\n\nThen we multiply by 5.\n\nThe answer is \\boxed{25}."
    mode = {**GUARDS_OFF, **registry()["verify+guards"].overrides}
    results = []
    for router_config in (RouterConfig(threshold=1.0), RouterConfig(threshold=1.0, **mode)):
        s = ScriptedEngine(small, entropies=[0.1, 2.0, 0.1], name="small", inner_entropy=0.2)
        lg = ScriptedEngine(large, entropies=0.1, name="large")
        await s.start()
        await lg.start()
        results.append(await Router(s, lg, router_config).generate("hello"))
    shipped, measured = results
    assert shipped.text == measured.text
    assert [(st.model, st.routed_by, st.verified) for st in shipped.steps] == [
        (st.model, st.routed_by, st.verified) for st in measured.steps
    ]
    assert shipped.usage.verified_steps == measured.usage.verified_steps > 0


async def test_the_trace_table_says_why_and_what_verification_kept() -> None:
    from rich.console import Console

    from glimp_llm.render import step_reason, step_table, summary_line

    small = "First we add 2 plus 3.\n\nThen we divide.\n\nThe answer is 10."
    large = "First we add 2 plus 3.\n\nThen we multiply.\n\nThe answer is 10."
    router, _, _ = await make_router(0.1, small=small, large=large, threshold=1.0, verify=True, first_step_large=True)
    result = await router.generate("hello")
    assert [step_reason(s) for s in result.steps] == ["1st", "H✗2", "H✓"]
    console = Console(width=100, record=True)
    console.print(step_table(result, width=100))
    console.print(summary_line(result))
    out = console.export_text()
    assert "why" in out and "H✗2" in out and "verified 2 small steps" in out and "rewritten by the" in out


async def test_the_trace_table_fits_80_columns_with_guard_reasons() -> None:
    from rich.console import Console

    from glimp_llm.render import step_table

    router, _, _ = await make_router(0.1, threshold=1.0, first_step_large=True, final_step_check=True)
    result = await router.generate("hello")
    assert [s.routed_by for s in result.steps] == ["first_step", "entropy", "final_check"]
    console = Console(width=80, record=True)
    console.print(step_table(result, width=80))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any("fin✗" in line for line in lines)
