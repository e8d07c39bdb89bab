"""GlimpLlamaIndexLLM contract: every method sync and async, cumulative text + delta, ``formatted``, usage
counted by ``TokenCountingHandler``, the routing trace in ``raw``, tools, and a query engine that answers
from the right document. LlamaIndex has no standard suite; this is ours."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import UNGUARDED, require

require("llama_index.core", "the LlamaIndex adapter tests need the llamaindex extra")

from llama_index.core import Document, VectorStoreIndex  # noqa: E402
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler  # noqa: E402
from llama_index.core.llms import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402

from glimp_llm import Glimp, GlimpConfig, LlamaCppEngineConfig, ScriptedEngineConfig  # noqa: E402
from glimp_llm.config import RouterConfig  # noqa: E402
from glimp_llm.integrations.llama_index import GlimpLlamaIndexLLM, to_template_messages  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the examples' offline embedding
from hash_embedding import HashEmbedding  # noqa: E402

TEXT = "The answer is 4.\n\nDone here."
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
USER = [ChatMessage(role=MessageRole.USER, content="What is 2+2?")]


def scripted(text: str = TEXT, **kw: Any) -> GlimpConfig:
    return GlimpConfig(
        small=ScriptedEngineConfig(response=text, **kw),
        large=ScriptedEngineConfig(response=text, **kw),
        router=RouterConfig(**UNGUARDED),  # these tests are about the adapter on the plain entropy loop
    )


@pytest.fixture
def glimp() -> Iterator[Glimp]:
    client = Glimp(scripted())
    yield client
    client.close()


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_metadata_comes_from_the_engines(glimp: Glimp) -> None:
    meta = GlimpLlamaIndexLLM(glimp=glimp, max_tokens=99).metadata
    assert meta.context_window == glimp.small_info.context_window == 4096
    assert meta.num_output == 99 and meta.is_chat_model and meta.is_function_calling_model
    assert meta.model_name == "scripted:scripted"
    assert GlimpLlamaIndexLLM().model_label == "qwen2.5-coder-0.5b-instruct->qwen2.5-coder-1.5b-instruct"


def test_chat_and_complete_with_usage_and_trace(glimp: Glimp) -> None:
    llm = GlimpLlamaIndexLLM(glimp=glimp)
    chat = llm.chat(USER)
    assert chat.message.content == TEXT and chat.message.role == MessageRole.ASSISTANT
    usage = chat.raw["usage"]
    assert usage["completion_tokens"] == len(glimp.tokenize(TEXT))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert chat.raw["glimp"]["small_steps"] == 2
    done = llm.complete("What is 2+2?")
    assert done.text == TEXT and done.raw["usage"] == usage  # same prompt through the chat template


async def test_async_chat_and_complete(glimp: Glimp) -> None:
    llm = GlimpLlamaIndexLLM(glimp=glimp)
    assert (await llm.achat(USER)).message.content == TEXT
    assert (await llm.acomplete("hi")).text == TEXT


def _check_stream(responses: list[Any], text_of: Any) -> None:
    deltas = [r.delta for r in responses]
    assert "".join(deltas) == TEXT and len(responses) > 5
    cumulative = ""
    for r, d in zip(responses, deltas, strict=True):
        cumulative += d
        assert text_of(r) == cumulative  # text is the whole answer so far, delta the new piece
    assert responses[-1].raw["usage"]["completion_tokens"] > 0
    assert responses[0].raw["model"] in ("small", "large")


def test_stream_chat_and_complete(glimp: Glimp) -> None:
    llm = GlimpLlamaIndexLLM(glimp=glimp)
    _check_stream(list(llm.stream_chat(USER)), lambda r: r.message.content)
    _check_stream(list(llm.stream_complete("hi")), lambda r: r.text)


async def test_astream_chat_and_complete(glimp: Glimp) -> None:
    llm = GlimpLlamaIndexLLM(glimp=glimp)
    _check_stream([r async for r in await llm.astream_chat(USER)], lambda r: r.message.content)
    _check_stream([r async for r in await llm.astream_complete("hi")], lambda r: r.text)


async def test_async_does_not_block_the_callers_loop() -> None:
    with Glimp(scripted(token_seconds=0.01)) as client:
        llm = GlimpLlamaIndexLLM(glimp=client)
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await llm.acomplete("hi")
        done.set()
        await task
        assert ticks > 3  # the loop kept running while the engines generated on their own thread
        assert threading.current_thread() is threading.main_thread()


def test_formatted_prompt_is_sent_raw(glimp: Glimp, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    original = glimp.generate
    monkeypatch.setattr(glimp, "generate", lambda req: seen.append(req) or original(req))
    llm = GlimpLlamaIndexLLM(glimp=glimp, system_prompt="Be brief.")
    llm.complete("<|user|>\nhi<|end|>\n<|assistant|>", formatted=True)
    llm.complete("hi")
    assert seen[0].raw and seen[0].prompt.startswith("<|user|>")
    assert not seen[1].raw and seen[1].messages[0] == {"role": "system", "content": "Be brief."}
    custom = GlimpLlamaIndexLLM(glimp=glimp, completion_to_prompt=lambda p: f"<|user|>\n{p}<|end|>\n<|assistant|>")
    custom.complete("hi")
    assert seen[2].raw and seen[2].prompt.endswith("<|assistant|>")


def test_stop_is_excluded(glimp: Glimp) -> None:
    llm = GlimpLlamaIndexLLM(glimp=glimp, stop=["is 4"])
    assert llm.complete("hi").text == "The answer "
    assert "".join(r.delta for r in llm.stream_complete("hi")) == "The answer "


def test_token_counting_handler_counts_sync_async_and_streams(glimp: Glimp) -> None:
    counter = TokenCountingHandler()
    llm = GlimpLlamaIndexLLM(glimp=glimp, callback_manager=CallbackManager([counter]))
    expected = llm.complete("hi").raw["usage"]
    list(llm.stream_chat(USER))
    list(llm.stream_complete("hi"))
    asyncio.run(llm.acomplete("hi"))
    asyncio.run(llm.achat(USER))

    async def drain_async_streams() -> None:
        async for _ in await llm.astream_complete("hi"):
            pass
        async for _ in await llm.astream_chat(USER):
            pass

    asyncio.run(drain_async_streams())
    assert len(counter.llm_token_counts) == 7  # complete, stream_chat, stream_complete, and the async four
    assert [e.completion_token_count for e in counter.llm_token_counts] == [expected["completion_tokens"]] * 7
    assert counter.llm_token_counts[0].prompt_token_count == expected["prompt_tokens"]


def test_tools_chat_with_tools_and_predict_and_call() -> None:
    tool = FunctionTool.from_defaults(add)
    with Glimp(scripted(CALL)) as client:
        llm = GlimpLlamaIndexLLM(glimp=client)
        response = llm.chat_with_tools([tool], user_msg="add 1 and 2")
        calls = llm.get_tool_calls_from_response(response)
        assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("add", {"a": 1, "b": 2})]
        assert str(llm.predict_and_call([tool], user_msg="add 1 and 2")) == "3"
        streamed = list(llm.stream_chat_with_tools([tool], user_msg="add"))
        assert all(r.delta == "" for r in streamed)  # the call's JSON is not streamed as text
        assert llm.get_tool_calls_from_response(streamed[-1])[0].tool_name == "add"
        history = [
            *USER,
            response.message,
            ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "x"}),
        ]
        rendered = client.render_chat(to_template_messages(history))
        assert '"name": "add"' in rendered and "<|tool|>\n3" in rendered
    with Glimp(scripted()) as client:
        plain = GlimpLlamaIndexLLM(glimp=client).chat_with_tools([tool], user_msg="hi")
        with pytest.raises(ValueError, match="no"):
            GlimpLlamaIndexLLM(glimp=client).get_tool_calls_from_response(plain)


async def test_async_tool_calling_methods() -> None:
    tool = FunctionTool.from_defaults(add)
    with Glimp(scripted(CALL)) as client:
        llm = GlimpLlamaIndexLLM(glimp=client)
        response = await llm.achat_with_tools([tool], user_msg="add 1 and 2")
        calls = llm.get_tool_calls_from_response(response)
        assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("add", {"a": 1, "b": 2})]
        streamed = [r async for r in await llm.astream_chat_with_tools([tool], user_msg="add")]
        assert all(r.delta == "" for r in streamed)
        assert llm.get_tool_calls_from_response(streamed[-1])[0].tool_kwargs == {"a": 1, "b": 2}
        assert str(await llm.apredict_and_call([tool], user_msg="add 1 and 2")) == "3"


async def test_formatted_is_honoured_by_the_async_and_streaming_completions(
    glimp: Glimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    for name in ("agenerate", "astream", "stream"):
        original = getattr(glimp, name)
        monkeypatch.setattr(glimp, name, lambda req, _o=original: seen.append(req) or _o(req))
    llm = GlimpLlamaIndexLLM(glimp=glimp)
    raw = "<|user|>\nhi<|end|>\n<|assistant|>"
    await llm.acomplete(raw, formatted=True)
    [r async for r in await llm.astream_complete(raw, formatted=True)]
    await asyncio.to_thread(lambda: list(llm.stream_complete(raw, formatted=True)))
    await llm.acomplete("hi")
    assert [r.raw for r in seen] == [True, True, True, False]
    assert all(r.prompt == raw for r in seen[:3]) and seen[3].messages[0]["content"] == "hi"


def test_hash_embedding_retrieves_lexically() -> None:
    emb = HashEmbedding()
    assert emb.get_text_embedding("apple harvest") == emb.get_text_embedding("apple harvest")
    docs = [Document(text="Lighthouses guide ships at sea."), Document(text="Apples are harvested in autumn.")]
    index = VectorStoreIndex.from_documents(docs, embed_model=emb)
    nodes = index.as_retriever(similarity_top_k=1).retrieve("When is the apple harvest?")
    assert "Apples" in nodes[0].node.get_content()


@pytest.mark.llama_cpp
def test_query_engine_answers_from_the_right_document(smollm2_path: str) -> None:
    docs = [
        Document(
            text="The Karvik lighthouse was built in 1871 from grey granite.", metadata={"file_name": "light.txt"}
        ),
        Document(text="The Hallberg orchard grows fourteen kinds of apple.", metadata={"file_name": "orchard.txt"}),
    ]
    engine_cfg = LlamaCppEngineConfig(model=smollm2_path, n_ctx=1024)
    with Glimp(GlimpConfig(small=engine_cfg, large=engine_cfg)) as client:
        llm = GlimpLlamaIndexLLM(glimp=client, max_tokens=40, temperature=0)
        index = VectorStoreIndex.from_documents(docs, embed_model=HashEmbedding())
        engine = index.as_query_engine(llm=llm, streaming=True, similarity_top_k=1)
        response = engine.query("When was the Karvik lighthouse built?")
        answer = "".join(response.response_gen)
        assert response.source_nodes[0].node.metadata["file_name"] == "light.txt"
        assert "1871" in answer
        sync = index.as_query_engine(llm=llm, similarity_top_k=1)
        assert asyncio.run(sync.aquery("When was the Karvik lighthouse built?")).response
