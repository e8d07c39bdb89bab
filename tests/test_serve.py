"""`glimp serve` over scripted engines, on 127.0.0.1: the official openai client, LangChain's ChatOpenAI,
streaming, the routing trace, limits (413/429), the API key, errors without stack traces, metrics,
client disconnects cancelling the routed request, and tool calling: OpenAI ``tool_calls`` (streamed and
not, every ``tool_choice``) read by the official client and by a LangChain ``create_agent`` on ChatOpenAI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import UNGUARDED, require, serve_app

from glimp_llm.config import GlimpConfig
from glimp_llm.manager import BackendManager

pytestmark = pytest.mark.server

SMALL = "First the small model writes.\n\nThen a hard part.\n\nThe small model ends it.\n\nAnswer: 42."
LARGE = "Large one.\n\nThe large model solves the hard part.\n\nLarge three.\n\nLarge answer."
KEY = "s3cret-key"


@dataclass
class Served:
    url: str
    manager: BackendManager

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def _config(token_seconds: float = 0.0, **router: Any) -> GlimpConfig:
    engine = {"kind": "scripted", "token_seconds": token_seconds, "n_slots": 4}
    return GlimpConfig.validated(
        {
            "small": {**engine, "response": SMALL, "entropies": [0.1, 3.0, 0.1, 0.1], "name": "small"},
            "large": {**engine, "response": LARGE, "entropies": 0.1, "name": "large"},
            "router": {"threshold": 1.0, "max_tokens": 200, **UNGUARDED, **router},
        }
    )


def _serve(config: GlimpConfig | BackendManager, **settings: Any) -> Iterator[Served]:
    require("fastapi", "glimp serve needs the server extra")
    require("uvicorn", "glimp serve needs the server extra")
    from glimp_llm.server import ServerSettings, create_app

    manager = config if isinstance(config, BackendManager) else BackendManager(config)
    app = create_app(settings=ServerSettings(**settings), manager=manager)
    with serve_app(app, lifespan="on") as url:
        yield Served(url, manager)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    yield from _serve(_config(), api_key=KEY, max_body_bytes=4096, max_prompt_chars=500)


@pytest.fixture
def slow() -> Callable[..., Iterator[Served]]:
    return lambda **router: _serve(_config(token_seconds=0.02, **router))


_OPENAI_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_openai_clients() -> Iterator[None]:
    """Close the clients a test made (their connection pools), rather than leave them to the GC."""
    yield
    while _OPENAI_CLIENTS:
        _OPENAI_CLIENTS.pop().close()


def _openai(served: Served, key: str = KEY) -> Any:
    require("openai", "the official client is the test of OpenAI compatibility")
    import openai

    _OPENAI_CLIENTS.append(openai.OpenAI(base_url=served.v1, api_key=key, max_retries=0, timeout=30))
    return _OPENAI_CLIENTS[-1]


def _http() -> Any:
    import httpx

    return httpx.Client(timeout=30, trust_env=False)


def test_openai_client_chat_returns_the_routed_answer_and_its_trace(served: Served) -> None:
    resp = _openai(served).chat.completions.create(
        model="glimp", messages=[{"role": "user", "content": "What is six times seven?"}]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    trace = resp.model_extra["glimp"]
    steps = trace["steps"]
    assert [s["model"] for s in steps][:3] == ["small", "large", "small"]  # entropy 3.0 > tau sent step 2 up
    assert "".join(s["text"] for s in steps) == choice.message.content
    assert steps[1]["entropy"] > 1.0 and steps[0]["entropy"] <= 1.0
    assert resp.usage.completion_tokens == sum(s["tokens"] for s in steps) > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_adds_up_to_the_full_answer_and_ends_with_trace_and_usage(served: Served) -> None:
    client = _openai(served)
    messages = [{"role": "user", "content": "What is six times seven?"}]
    full = client.chat.completions.create(model="glimp", messages=messages)
    chunks = list(
        client.chat.completions.create(
            model="glimp", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert finals[0].model_extra["glimp"]["steps"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_streaming_never_sends_a_stop_string(served: Served) -> None:
    client = _openai(served)
    messages = [{"role": "user", "content": "Go."}]
    full = client.chat.completions.create(model="glimp", messages=messages, stop=["hard part"])
    chunks = client.chat.completions.create(model="glimp", messages=messages, stop=["hard part"], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "hard part" not in full.choices[0].message.content
    assert text == full.choices[0].message.content
    assert full.model_extra["glimp"]["finish_reason"] == "stop"


def test_completions_endpoint_takes_raw_text(served: Served) -> None:
    client = _openai(served)
    resp = client.completions.create(model="glimp", prompt="<|user|>Count.<|assistant|>", max_tokens=5)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 5
    streamed = client.completions.create(model="glimp", prompt="<|user|>Count.<|assistant|>", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices)


def test_langchain_chat_openai_invoke_and_stream(served: Served) -> None:
    require("langchain_openai", "LangChain's ChatOpenAI is the second client the issue names")
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="glimp", base_url=served.v1, api_key=KEY, max_retries=0, timeout=30)
    message = llm.invoke("What is six times seven?")
    assert "small model" in message.content
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata["output_tokens"] > 0
    streamed = "".join(chunk.content for chunk in llm.stream("What is six times seven?"))
    assert streamed == message.content


def test_api_key_is_required_and_checked(served: Served) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError):
        _openai(served, key="wrong").chat.completions.create(model="glimp", messages=[{"role": "user", "content": "x"}])
    with _http() as http:
        r = http.post(served.v1 + "/chat/completions", json={"model": "glimp", "messages": []})
        assert r.status_code == 401
        assert http.get(served.v1 + "/models").status_code == 401
        assert http.get(served.url + "/metrics").status_code == 401
        assert http.get(served.url + "/health").status_code == 200  # open, for load balancers
        r = http.get(served.v1 + "/models", headers={"Authorization": f"Bearer {KEY}"})
        assert r.json()["data"][0]["id"] == "glimp"


def test_size_limits_answer_413(served: Served) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    with _http() as http:
        body = {"model": "glimp", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = http.post(served.v1 + "/chat/completions", json=body, headers=auth)
        assert r.status_code == 413 and "4096 bytes" in r.json()["error"]["message"]
        body = {"model": "glimp", "messages": [{"role": "user", "content": "x" * 600}]}
        r = http.post(served.v1 + "/chat/completions", json=body, headers=auth)
        assert r.status_code == 413 and "600 characters" in r.json()["error"]["message"]


def test_bad_requests_get_messages_not_stack_traces(served: Served) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = served.v1 + "/chat/completions"
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "glimp", "messages": []}', 400, "messages"),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}', 404, "does not exist"),
        (b'{"model": "glimp", "n": 2, "messages": [{"role": "user", "content": "x"}]}', 400, "n=1"),
        (b'{"model": "glimp", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}', 400, "max_tokens"),
        (b'{"model": "glimp", "messages": [{"role": "user", "content": " "}], "glimp": {"threshold": -1}}', 400, ""),
        (b'{"model": "glimp", "messages": [{"role": "user", "content": "a\\u0000b"}]}', 400, "NUL"),
        (b'{"model": "glimp", "messages": [{"role": "user", "content": "a\\ud800b"}]}', 400, "not valid Unicode"),
    ]
    with _http() as http:
        for raw, status, needle in cases:
            r = http.post(url, content=raw, headers=auth)
            assert r.status_code == status, (raw, r.text)
            error = r.json()["error"]
            assert needle in error["message"]
            assert "Traceback" not in r.text and 'File "' not in r.text


def test_metrics_count_requests_steps_entropy_and_latency(served: Served) -> None:
    _openai(served).chat.completions.create(model="glimp", messages=[{"role": "user", "content": "Six times seven?"}])
    with _http() as http:
        text = http.get(served.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'glimp_requests_total{endpoint="chat",status="200"}' in text
    assert 'glimp_steps_total{model="large"}' in text and 'glimp_steps_total{model="small"}' in text
    assert "glimp_step_entropy_nats_bucket" in text
    assert 'glimp_request_latency_seconds_count{endpoint="chat"}' in text


def test_past_the_admission_bounds_requests_get_429(slow: Callable[..., Iterator[Served]]) -> None:
    for served in slow(max_concurrent_requests=1, max_queued_requests=0):
        body = {"model": "glimp", "messages": [{"role": "user", "content": "Go."}], "max_tokens": 60}
        with _http() as http:
            first = threading.Thread(target=http.post, args=(served.v1 + "/chat/completions",), kwargs={"json": body})
            first.start()
            deadline = time.monotonic() + 10
            while served.manager.router.admission.running == 0:
                assert time.monotonic() < deadline, "the first request never started"
                time.sleep(0.01)
            with _http() as other:
                r = other.post(served.v1 + "/chat/completions", json=body)
                s = other.post(served.v1 + "/chat/completions", json={**body, "stream": True})
            first.join(30)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "retry later" in r.json()["error"]["message"]
        assert s.status_code == 429  # streaming requests are refused before the stream starts


def test_client_disconnect_cancels_the_routed_request(slow: Callable[..., Iterator[Served]]) -> None:
    import httpx

    for served in slow():
        small, large = served.manager.small, served.manager.large
        body = {"model": "glimp", "messages": [{"role": "user", "content": "Go."}], "max_tokens": 200}
        # streaming: read one chunk, then hang up
        with _http() as http, http.stream("POST", served.v1 + "/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_lines())
        # not streaming: give up after a fraction of the generation time
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=0.5, trust_env=False) as http:
            http.post(served.v1 + "/chat/completions", json=body)
        deadline = time.monotonic() + 10
        while served.manager.router.admission.running or small.stats.cancelled_calls + large.stats.cancelled_calls < 2:
            assert time.monotonic() < deadline, "the routed requests were not cancelled after the clients left"
            time.sleep(0.02)


# ------------------------------------------------------------------------------------- tool calling
MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
ADD = {**MULTIPLY, "function": {**MULTIPLY["function"], "name": "add", "description": "Add two integers."}}
CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n</tool_call>'
FINAL = "The product of 6 and 7 is 42."
QUESTION = [{"role": "user", "content": "What is 6 times 7? Use the tool."}]


def _turn_scripted_manager() -> BackendManager:
    """Engines that write ``CALL`` until the conversation holds a tool result, then ``FINAL``: the two
    turns of a tool-calling agent. A forced call's prefill is the start of ``CALL``, so the script
    continues it token for token."""
    from glimp_llm.config import RouterConfig
    from glimp_llm.engines.scripted import ScriptedEngine
    from glimp_llm.router import Router

    small, large = (ScriptedEngine(CALL, next_turns=[FINAL], name=name) for name in ("small", "large"))
    return BackendManager(router=Router(small, large, RouterConfig(threshold=1.0, max_tokens=200, **UNGUARDED)))


@pytest.fixture(scope="module")
def tooled() -> Iterator[Served]:
    yield from _serve(_turn_scripted_manager(), api_key=KEY)


@pytest.mark.parametrize(
    "tool_choice",
    [None, "auto", "required", {"type": "function", "function": {"name": "multiply"}}],
    ids=["unset", "auto", "required", "named"],
)
def test_openai_client_gets_tool_calls_for_every_tool_choice_that_allows_them(tooled: Served, tool_choice: Any) -> None:
    extra = {} if tool_choice is None else {"tool_choice": tool_choice}
    resp = _openai(tooled).chat.completions.create(model="glimp", messages=QUESTION, tools=[MULTIPLY, ADD], **extra)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "multiply" and json.loads(call.function.arguments) == {"a": 6, "b": 7}
    assert resp.model_extra["glimp"]["steps"] and resp.usage.completion_tokens > 0


def test_tool_choice_none_hides_the_tools_and_returns_text(tooled: Served) -> None:
    resp = _openai(tooled).chat.completions.create(
        model="glimp", messages=QUESTION, tools=[MULTIPLY], tool_choice="none"
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content == CALL  # the script's text, not read as a call: no tools were offered


def test_a_named_tool_choice_that_is_not_offered_is_a_400(tooled: Served) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match="not a bound tool"):
        _openai(tooled).chat.completions.create(
            model="glimp",
            messages=QUESTION,
            tools=[MULTIPLY],
            tool_choice={"type": "function", "function": {"name": "divide"}},
        )


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_streamed_tool_calls_assemble_to_the_same_call(tooled: Served, tool_choice: str) -> None:
    chunks = list(
        _openai(tooled).chat.completions.create(
            model="glimp",
            messages=QUESTION,
            tools=[MULTIPLY],
            tool_choice=tool_choice,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    deltas = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert content == ""  # the call's text is never streamed as content
    assert {d.index for d in deltas} == {0}
    name = "".join(d.function.name or "" for d in deltas)
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert name == "multiply" and json.loads(arguments) == {"a": 6, "b": 7}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_the_tool_result_turn_answers_in_text(tooled: Served) -> None:
    client = _openai(tooled)
    first = client.chat.completions.create(model="glimp", messages=QUESTION, tools=[MULTIPLY])
    call = first.choices[0].message.tool_calls[0]
    history = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    second = client.chat.completions.create(model="glimp", messages=history, tools=[MULTIPLY])
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert second.choices[0].message.content == FINAL
    streamed = client.chat.completions.create(model="glimp", messages=history, tools=[MULTIPLY], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == FINAL


def test_langchain_create_agent_on_chat_openai_runs_the_tool_through_glimp_serve(tooled: Served) -> None:
    require("langchain_openai", "LangChain's ChatOpenAI is the second client the issue names")
    require("langchain.agents", "create_agent is LangChain's tool-calling agent")
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    calls: list[tuple[int, int]] = []

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    for streaming in (False, True):
        calls.clear()
        llm = ChatOpenAI(model="glimp", base_url=tooled.v1, api_key=KEY, max_retries=0, timeout=30, streaming=streaming)
        agent = create_agent(llm, tools=[multiply])
        state = agent.invoke({"messages": [("user", "What is 6 times 7? Use the tool.")]})
        messages = state["messages"]
        assert calls == [(6, 7)], streaming
        [tool_message] = [m for m in messages if isinstance(m, ToolMessage)]
        assert tool_message.content == "42" and tool_message.name == "multiply"
        final = messages[-1]
        assert isinstance(final, AIMessage) and not final.tool_calls and final.content == FINAL
