"""GlimpLLM (LangChain BaseLLM) and ChatGlimp behaviour the standard suite does not pin down: concurrent
batches, streaming with token callbacks, stop strings, usage, the routing trace, construction, tools.

langchain-tests has no suite for BaseLLM, so these are its equivalents. Mechanics run on scripted engines
(deterministic, instant); one test runs the real SmolLM2 model through llama.cpp."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import UNGUARDED, require

require("langchain_core", "the LangChain adapter tests need the langchain extra")

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402

from glimp_llm import Glimp, GlimpConfig, LlamaCppEngineConfig, ScriptedEngineConfig  # noqa: E402
from glimp_llm.config import RouterConfig  # noqa: E402
from glimp_llm.errors import RequestTimeoutError  # noqa: E402
from glimp_llm.integrations.langchain import ChatGlimp, GlimpLLM, to_template_messages  # noqa: E402

SMALL = "The answer is 4.\n\nDone here."
LARGE = "Large says 4.\n\nLarge done."
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'


def scripted(small: str = SMALL, large: str = LARGE, entropies: float | list[float] = 0.05) -> GlimpConfig:
    return GlimpConfig(
        small=ScriptedEngineConfig(response=small, entropies=entropies),
        large=ScriptedEngineConfig(response=large),
        router=RouterConfig(**UNGUARDED),  # these tests are about the adapter on the plain entropy loop
    )


@pytest.fixture
def glimp() -> Iterator[Glimp]:
    client = Glimp(scripted())
    yield client
    client.close()


class Counter(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.starts = 0
        self.ends: list[Any] = []

    def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends.append(response)


class AsyncCounter(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# ------------------------------------------------------------------------------------ GlimpLLM
def test_invoke_returns_only_the_answer(glimp: Glimp) -> None:
    llm = GlimpLLM(glimp=glimp)
    assert llm.invoke("What is 2+2?") == SMALL  # low entropy: the small model wrote every step


def test_batch_routes_all_prompts_in_one_concurrent_call(glimp: Glimp, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = glimp.batch

    def spy(prompts: Any, **options: Any) -> Any:
        calls.append(len(prompts))
        return original(prompts, **options)

    monkeypatch.setattr(glimp, "batch", spy)
    counter = Counter()
    out = GlimpLLM(glimp=glimp).batch(["a", "b", "c"], config={"callbacks": [counter]})
    assert out == [SMALL] * 3
    assert calls == [3]  # one Glimp.batch over all prompts, not three sequential calls
    assert counter.starts == 3 and len(counter.ends) == 3


async def test_abatch_and_ainvoke(glimp: Glimp, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = glimp.abatch

    async def spy(prompts: Any, **options: Any) -> Any:
        calls.append(len(prompts))
        return await original(prompts, **options)

    monkeypatch.setattr(glimp, "abatch", spy)
    llm = GlimpLLM(glimp=glimp)
    assert await llm.abatch(["a", "b"]) == [SMALL, SMALL]
    assert await llm.ainvoke("a") == SMALL
    assert calls == [2, 1]


def test_stream_chunks_add_up_and_each_fires_one_callback(glimp: Glimp) -> None:
    counter = Counter()
    chunks = list(GlimpLLM(glimp=glimp).stream("hi", config={"callbacks": [counter]}))
    assert "".join(chunks) == SMALL
    assert len([c for c in chunks if c]) > 5  # token by token, not one piece
    assert counter.tokens == chunks  # exactly one on_llm_new_token per chunk, in order


async def test_astream_fires_async_callbacks(glimp: Glimp) -> None:
    counter = AsyncCounter()
    chunks = [c async for c in GlimpLLM(glimp=glimp).astream("hi", config={"callbacks": [counter]})]
    assert "".join(chunks) == SMALL
    assert counter.tokens == chunks


def test_stop_is_honoured_and_excluded_in_invoke_stream_and_field(glimp: Glimp) -> None:
    llm = GlimpLLM(glimp=glimp)
    assert llm.invoke("hi", stop=["is 4"]) == "The answer "
    streamed = "".join(llm.stream("hi", stop=["is 4"]))
    assert streamed == "The answer "
    assert GlimpLLM(glimp=glimp, stop=["Done"]).invoke("hi") == "The answer is 4.\n\n"
    assert GlimpLLM(glimp=glimp, stop=["Done"]).invoke("hi", stop=["4"]) == "The answer is "  # call overrides


@pytest.mark.parametrize("name", ["timeout", "timeout_s"])
def test_a_deadline_given_to_one_call_applies_under_either_name(name: str) -> None:
    """``Glimp`` takes ``timeout_s`` and the adapters' field is ``timeout``: ``invoke(x, timeout_s=...)`` used to
    be dropped silently, so the call ran past the deadline its caller set."""
    slow = GlimpConfig(
        small=ScriptedEngineConfig(response="One two three four five.", token_seconds=0.05),
        large=ScriptedEngineConfig(response="Six."),
        router=RouterConfig(**UNGUARDED),
    )
    with Glimp(slow) as client:
        for llm in (ChatGlimp(glimp=client), GlimpLLM(glimp=client)):  # type: ignore[call-arg]
            with pytest.raises(RequestTimeoutError):
                llm.invoke("hi", **{name: 0.05})


def test_usage_and_routing_trace(glimp: Glimp) -> None:
    result = GlimpLLM(glimp=glimp).generate(["a", "b"])
    usage = result.llm_output["token_usage"]  # type: ignore[index]
    assert usage["completion_tokens"] == 2 * len(glimp.tokenize(SMALL))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    info = result.generations[0][0].generation_info
    assert info is not None and info["finish_reason"] == "eos"
    trace = info["glimp"]
    assert trace["small_steps"] == 2 and trace["large_steps"] == 0
    assert [s["model"] for s in trace["steps_detail"]] == ["small", "small"]


def test_high_entropy_steps_are_written_by_the_large_model() -> None:
    with Glimp(scripted(entropies=5.0)) as client:
        result = GlimpLLM(glimp=client).generate(["a"])
    trace = result.generations[0][0].generation_info["glimp"]  # type: ignore[index]
    assert trace["large_steps"] == 2 and result.generations[0][0].text == LARGE


def test_streaming_field_makes_invoke_emit_tokens(glimp: Glimp) -> None:
    counter = Counter()
    text = GlimpLLM(glimp=glimp, streaming=True).invoke("hi", config={"callbacks": [counter]})
    assert text == SMALL and "".join(counter.tokens) == SMALL


def test_get_token_ids_uses_the_models_tokenizer(glimp: Glimp) -> None:
    llm = GlimpLLM(glimp=glimp)
    assert llm.get_token_ids("the answer") == glimp.tokenize("the answer")
    assert llm.get_num_tokens("the answer") == 2


def test_construction_loads_nothing_and_rejects_ambiguity() -> None:
    llm = GlimpLLM()
    assert llm.model_label == "qwen2.5-coder-0.5b-instruct->qwen2.5-coder-1.5b-instruct"
    assert llm.client._portal is None  # no engine started
    assert GlimpLLM(config=scripted()).model_label == "scripted:scripted"
    assert GlimpLLM(config=scripted(), model="my-pair")._get_ls_params()["ls_model_name"] == "my-pair"
    with pytest.raises(ValueError, match="not both"):
        GlimpLLM(glimp=Glimp(scripted()), config=scripted())


def test_adapters_wrap_an_existing_router() -> None:
    """Third way to build an adapter: around a Router someone already assembled (its engines, its settings)."""
    from glimp_llm.engines.scripted import ScriptedEngine
    from glimp_llm.integrations.llama_index import GlimpLlamaIndexLLM
    from glimp_llm.router import Router

    small = ScriptedEngine(SMALL, entropies=[0.1, 5.0], name="tiny")
    large = ScriptedEngine(LARGE, entropies=0.1, name="huge")
    router = Router(small, large, RouterConfig(threshold=1.0, **UNGUARDED))
    llm = GlimpLLM(router=router)
    assert llm.model_label == "tiny->huge"  # named by the engines, not by a default config
    assert llm.invoke("hi") == "The answer is 4.\n\nLarge done."  # the router's own threshold routed it
    assert llm.client.router is router
    chat = ChatGlimp(glimp=llm.client)
    assert chat.invoke("hi").response_metadata["glimp"]["large_steps"] == 1
    assert GlimpLlamaIndexLLM(glimp=llm.client).complete("hi").raw["glimp"]["small_steps"] == 1
    llm.close()
    with pytest.raises(ValueError, match="instance of Router"):
        GlimpLLM(router="not a router")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both config and router"):
        ChatGlimp(config=scripted(), router=router)


def test_identifying_params_separate_configurations() -> None:
    a = GlimpLLM(config=scripted())._identifying_params
    b = GlimpLLM(config=scripted(small="Other."))._identifying_params
    assert a != b and GlimpLLM(config=scripted(), threshold=0.5)._identifying_params != a
    # the stop field changes the output, so it must change LangChain's cache key too
    assert GlimpLLM(config=scripted(), stop=["4"])._identifying_params != a
    chat = ChatGlimp(config=scripted())._identifying_params
    assert ChatGlimp(config=scripted(), stop=["4"])._identifying_params != chat


def test_streamed_llm_output_matches_the_batch_path(glimp: Glimp) -> None:
    batch = GlimpLLM(glimp=glimp).generate(["hi"]).llm_output
    streamed = GlimpLLM(glimp=glimp, streaming=True).generate(["hi"], callbacks=[Counter()]).llm_output
    assert streamed == batch and streamed["glimp"]["small_tokens"] > 0  # type: ignore[index]


def test_custom_get_token_ids_is_honoured(glimp: Glimp) -> None:
    llm = GlimpLLM(glimp=glimp, custom_get_token_ids=lambda text: [7] * len(text))
    chat = ChatGlimp(glimp=glimp, custom_get_token_ids=lambda text: [1, 2, 3])
    assert llm.get_token_ids("abcd") == [7, 7, 7, 7] and llm.get_num_tokens("abcd") == 4
    assert chat.get_num_tokens_from_messages([HumanMessage("hello")]) == 3


def test_a_system_message_marked_as_openais_developer_renders_as_system(glimp: Glimp) -> None:
    """langchain-core converts such a SystemMessage to role 'developer'; the chat layer names it 'system' when
    the template renders it (the prompt of a call, the token count), as for every front end."""
    from langchain_core.messages import SystemMessage

    developer = SystemMessage("Be brief.", additional_kwargs={"__openai_role__": "developer"})
    messages = [developer, HumanMessage("hi")]
    assert to_template_messages(messages)[0]["role"] == "developer"
    rendered = glimp.render_chat(to_template_messages(messages))
    assert rendered.startswith("<|system|>\nBe brief.") and "developer" not in rendered
    system = [SystemMessage("Be brief."), HumanMessage("hi")]
    assert ChatGlimp(glimp=glimp).get_num_tokens_from_messages(messages) == ChatGlimp(
        glimp=glimp
    ).get_num_tokens_from_messages(system)


def test_closing_an_adapter_leaves_a_shared_client_to_its_owner(glimp: Glimp) -> None:
    GlimpLLM(glimp=glimp).close()
    ChatGlimp(glimp=glimp).close()
    assert GlimpLLM(glimp=glimp).invoke("still there?") == SMALL
    own = GlimpLLM(config=scripted())
    assert own.invoke("x") == SMALL
    own.close()
    with pytest.raises(Exception, match="closed"):
        own.invoke("x")


# ----------------------------------------------------------------------------- ChatGlimp tools
def test_chat_tool_call_parsed_and_tool_result_rendered_back() -> None:
    with Glimp(scripted(small=CALL, large=CALL)) as client:
        model = ChatGlimp(glimp=client).bind_tools([add])
        msg = model.invoke("add 1 and 2")
        assert isinstance(msg, AIMessage)
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("add", {"a": 1, "b": 2})]
        assert msg.content == "" and msg.response_metadata["finish_reason"] == "tool_calls"
        history = [HumanMessage("add 1 and 2"), msg, ToolMessage("3", tool_call_id=msg.tool_calls[0]["id"])]
        rendered = client.render_chat(to_template_messages(history))
        assert '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>' in rendered
        assert "<|tool|>\n3" in rendered


def test_chat_stream_puts_calls_usage_and_metadata_on_one_final_chunk() -> None:
    with Glimp(scripted(small=CALL, large=CALL)) as client:
        chunks = list(ChatGlimp(glimp=client).bind_tools([add]).stream("add"))
    assert all(c.content == "" for c in chunks)  # the call's JSON is never streamed as text
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata is not None
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert [c["args"] for c in total.tool_calls] == [{"a": 1, "b": 2}]


def test_chat_forced_tool_choice_prefills_the_call() -> None:
    # The scripted engine reads its position from the tokens after the assistant turn opened, so the
    # prefilled opening counts as already written: the engine generates only the rest of the call, and
    # the adapter must put the prefill back in front to parse it.
    forced = '<tool_call>\n{"name": "add", "arguments": {"a": 5, "b": 6}}\n</tool_call>'
    with Glimp(scripted(small=forced, large=forced)) as client:
        msg = ChatGlimp(glimp=client).bind_tools([add], tool_choice="add").invoke("go")
        assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("add", {"a": 5, "b": 6})]
        assert msg.usage_metadata["output_tokens"] < len(client.tokenize(forced)) - 5  # type: ignore[index]
        with pytest.raises(ValueError, match="not a bound tool"):
            ChatGlimp(glimp=client).bind_tools([add], tool_choice="sub")


def test_chat_malformed_call_becomes_invalid_tool_call() -> None:
    bad = '<tool_call>\n{"name": "add", "arguments": {"a": 1,}\n</tool_call>'
    with Glimp(scripted(small=bad, large=bad)) as client:
        msg = ChatGlimp(glimp=client).bind_tools([add]).invoke("go")
    assert msg.tool_calls == [] and msg.invalid_tool_calls[0]["name"] == "add"


def test_a_truncated_call_stays_invalid_when_streamed() -> None:
    """LangChain repairs streamed partial JSON; a call cut off mid-way must not come back as a valid one."""
    cut = '<tool_call>\n{"name": "add", "arguments": {"a": 1'
    with Glimp(scripted(small=cut, large=cut)) as client:
        model = ChatGlimp(glimp=client).bind_tools([add])
        invoked = model.invoke("go")
        chunks = list(model.stream("go"))
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    for msg in (invoked, total):
        assert msg.tool_calls == [], msg.tool_calls
        assert [c["name"] for c in msg.invalid_tool_calls] == ["add"]


def test_chat_without_tools_keeps_json_as_text(glimp: Glimp) -> None:
    msg = ChatGlimp(glimp=glimp).invoke([HumanMessage("hi")])
    assert msg.content == SMALL and msg.tool_calls == []
    assert msg.response_metadata["glimp"]["small_steps"] == 2
    assert msg.usage_metadata["output_tokens"] == len(glimp.tokenize(SMALL))  # type: ignore[index]


# ------------------------------------------------------------------------------- real model
@pytest.mark.llama_cpp
def test_real_model_invoke_stream_batch_stop(smollm2_path: str) -> None:
    engine = LlamaCppEngineConfig(model=smollm2_path, n_ctx=1024)
    with Glimp(GlimpConfig(small=engine, large=engine)) as client:
        llm = GlimpLLM(glimp=client, max_tokens=12, temperature=0)
        text = llm.invoke("Name three colours.")
        assert text and "Name three colours" not in text  # the prompt is not echoed
        assert "".join(llm.stream("Name three colours.")) == text  # greedy: same text streamed
        assert len(llm.batch(["Say hi.", "Say bye."])) == 2
        first_word = text.split()[0]
        cut = llm.invoke("Name three colours.", stop=[first_word])
        assert first_word not in cut
        assert llm.get_token_ids("hello") == client.tokenize("hello")
