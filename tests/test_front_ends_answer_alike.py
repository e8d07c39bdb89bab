"""The three front ends give the caller the same answer for the same routed output: LangChain's ``ChatGlimp``,
LlamaIndex's ``GlimpLlamaIndexLLM`` and ``glimp serve`` (over real HTTP), each non-streamed and streamed.

The sibling ``test_front_ends_agree.py`` shows they build the same prompt; this is the way back. Scripted engines
write a known answer (the small model hands its second step to the large one, so the answer is really routed),
and each front end's own idiom reads it: LangChain ``AIMessage`` (``tool_calls``, ``invalid_tool_calls``,
``response_metadata``, ``usage_metadata``; streams summed with ``+``), LlamaIndex ``ChatResponse`` (text blocks,
``get_tool_calls_from_response``, ``additional_kwargs["invalid_tool_calls"]``, ``raw``), and the OpenAI wire
(``choices[0].message``, SSE chunks assembled as OpenAI clients do). Compared: the visible text, the tool calls
(name and parsed arguments; ids are each front end's own), the unreadable calls, the finish reason, the usage,
and every stream against the same front end's non-streamed answer. Each answer is also checked against the
answer the script implies, so an answer lost everywhere cannot pass.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import UNGUARDED, require

require("langchain_core", "the LangChain front end is one of the three compared")
require("llama_index.core", "the LlamaIndex front end is one of the three compared")
require("fastapi", "glimp serve is one of the three front ends compared")
require("httpx", "glimp serve is called over HTTP")

import httpx  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, ToolCallBlock  # noqa: E402
from test_front_ends_agree import LLAMA_TOOLS, TOOLS  # noqa: E402  (one tool set and schema for both)
from test_serve import _serve  # noqa: E402

from glimp_llm import Glimp, GlimpConfig  # noqa: E402
from glimp_llm.engines.scripted import shared_tokenizer  # noqa: E402
from glimp_llm.integrations.langchain import ChatGlimp  # noqa: E402
from glimp_llm.integrations.llama_index import GlimpLlamaIndexLLM  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

SYSTEM = "You are a careful calculator."
QUESTION = "What is 6 times 7?"
ARGS = {"a": 6, "b": 7}
CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n</tool_call>'
ADD_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 40, "b": 2}}\n</tool_call>'
TRUNCATED = '{"name": "multiply", "arguments": {"a": 6, "b":'
NOT_AN_OBJECT = '{"name": "multiply", "arguments": [6, 7]}'
NAMELESS = '{"arguments": {"a": 6, "b": 7}}'
PROSE = "The answer is 42.\n\nSo the total is 42 dollars.\n\nDone."


LANGCHAIN_MESSAGES: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]
LLAMA_MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM),
    ChatMessage(role=MessageRole.USER, content=QUESTION),
]
OPENAI_MESSAGES: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def _first_tokens(text: str, n: int) -> str:
    """The first ``n`` tokens of ``text`` in the scripted vocabulary: what a budget of ``n`` lets through."""
    tok = shared_tokenizer()
    return "".join(tok.piece(i) for i in tok.encode(text)[:n])


@dataclass(frozen=True)
class Case:
    """What the scripted models write, how the caller asks, and the answer that implies."""

    response: str
    tools: bool
    content: str
    finish: str  # OpenAI's finish_reason
    routed_finish: str  # the router's own reason (RoutedResult.finish_reason)
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    invalid: tuple[tuple[str | None, str], ...] = ()  # (name, the raw arguments text) of each unreadable call
    options: dict[str, Any] = field(default_factory=dict)  # stop / max_tokens, as the caller gives them
    steps: tuple[int, int] = (1, 0)  # steps written by the small and by the large model

    @property
    def server_content(self) -> str:
        """What glimp serve shows: the content, and each unreadable call as the model wrote it (protocol.py's
        module docstring: OpenAI's wire has no invalid call, and its clients would take one for a call to run)."""
        return self.response if self.invalid else self.content


CASES: dict[str, Case] = {
    # a stop string of two tokens (" total", " is"), " is" already written once before: cut, never shown
    "text_stop": Case(
        PROSE,
        tools=False,
        content="The answer is 42.\n\nSo the ",
        finish="stop",
        routed_finish="stop",
        options={"stop": ["total is"]},
        steps=(1, 1),
    ),
    "text_length": Case(
        PROSE,
        tools=False,
        content=_first_tokens(PROSE, 9),
        finish="length",
        routed_finish="length",
        options={"max_tokens": 9},
        steps=(1, 1),
    ),
    "one_call": Case(
        CALL, tools=True, content="", finish="tool_calls", routed_finish="eos", calls=(("multiply", ARGS),)
    ),
    "two_calls": Case(
        CALL + "\n" + ADD_CALL,
        tools=True,
        content="",
        finish="tool_calls",
        routed_finish="eos",
        calls=(("multiply", ARGS), ("add", {"a": 40, "b": 2})),
    ),
    "text_then_call": Case(
        "Let me call the multiply tool.\n\n" + CALL,
        tools=True,
        content="Let me call the multiply tool.\n\n",
        finish="tool_calls",
        routed_finish="eos",
        calls=(("multiply", ARGS),),
        steps=(1, 1),
    ),
    # Unreadable calls: no call to run, so the finish reason is the router's ("stop" for its end of sequence);
    # the adapters report them as invalid calls, glimp serve as the text the model wrote (Case.server_content).
    "invalid_truncated": Case(
        f"<tool_call>\n{TRUNCATED}\n</tool_call>",
        tools=True,
        content="",
        finish="stop",
        routed_finish="eos",
        invalid=(("multiply", TRUNCATED),),
    ),
    "invalid_not_an_object": Case(
        f"<tool_call>\n{NOT_AN_OBJECT}\n</tool_call>",
        tools=True,
        content="",
        finish="stop",
        routed_finish="eos",
        invalid=(("multiply", "[6, 7]"),),
    ),
    "invalid_nameless": Case(
        f"<tool_call>\n{NAMELESS}\n</tool_call>",
        tools=True,
        content="",
        finish="stop",
        routed_finish="eos",
        invalid=((None, NAMELESS),),
    ),
}


@dataclass
class Answer:
    """One front end's answer, as its caller reads it, in common terms."""

    content: str
    calls: list[tuple[str, dict[str, Any]]]
    invalid: list[tuple[str | None, str]]
    errors: list[str | None]  # why each unreadable call is unreadable (None: the front end does not say)
    finish: str | None  # OpenAI's finish_reason; None where the front end has none (LlamaIndex)
    routed_finish: str
    usage: tuple[int, int, int]  # prompt, completion, total tokens
    steps: tuple[int, int]  # (small, large) steps, from the routing trace each front end carries
    pieces: list[str] | None = None  # the visible text pieces of a stream, in order; None: not streamed


def _config(case: Case) -> GlimpConfig:
    return GlimpConfig.validated(
        {
            # step 2 (if any) is uncertain for the small model (3 nats > tau): the large one writes it
            "small": {"kind": "scripted", "response": case.response, "name": "small", "entropies": [0.05, 3.0, 0.05]},
            "large": {"kind": "scripted", "response": case.response, "name": "large"},
            "router": {"threshold": 1.0, "max_tokens": 256, **UNGUARDED},
        }
    )


# ------------------------------------------------------------------------------------------------- LangChain
def _langchain_answer(message: AIMessage) -> Answer:
    meta = message.response_metadata
    usage = message.usage_metadata
    assert usage is not None, "no usage_metadata"
    assert isinstance(message.content, str), message.content
    return Answer(
        content=message.content,
        calls=[(c["name"], c["args"]) for c in message.tool_calls],
        invalid=[(c["name"], c["args"] or "") for c in message.invalid_tool_calls],
        errors=[c["error"] for c in message.invalid_tool_calls],
        finish=meta["finish_reason"],
        routed_finish=meta["glimp"]["finish_reason"],
        steps=(meta["glimp"]["small_steps"], meta["glimp"]["large_steps"]),
        usage=(usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]),
    )


def via_langchain(client: Glimp, case: Case, stream: bool) -> Answer:
    llm = ChatGlimp(glimp=client)  # type: ignore[call-arg]  # the pydantic plugin wants a LangChain field
    model: Any = llm.bind_tools(TOOLS) if case.tools else llm
    if not stream:
        return _langchain_answer(model.invoke(LANGCHAIN_MESSAGES, **case.options))
    chunks: list[AIMessageChunk] = list(model.stream(LANGCHAIN_MESSAGES, **case.options))
    answer = _langchain_answer(functools.reduce(operator.add, chunks))
    answer.pieces = [c.content for c in chunks if c.content]  # type: ignore[misc]
    return answer


# ------------------------------------------------------------------------------------------------ LlamaIndex
def _llama_answer(llm: GlimpLlamaIndexLLM, response: ChatResponse) -> Answer:
    message = response.message
    selections = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    calls = [(s.tool_name, s.tool_kwargs) for s in selections]
    blocks = [(b.tool_name, b.tool_kwargs) for b in message.blocks if isinstance(b, ToolCallBlock)]
    assert calls == blocks, "the tool selections are not the message's ToolCallBlocks"
    stored = message.additional_kwargs.get("tool_calls", [])  # the OpenAI-shaped copy FunctionAgent may read
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in stored] == calls
    invalid = message.additional_kwargs.get("invalid_tool_calls", [])
    raw = response.raw or {}
    usage = raw["usage"]
    return Answer(
        content=message.content or "",
        calls=calls,
        invalid=[(c["name"], c["arguments"]) for c in invalid],
        errors=[c["error"] for c in invalid],
        # LlamaIndex has no finish reason of its own; raw["finish_reason"] is the router's (see test below)
        finish=None,
        routed_finish=raw["finish_reason"],
        steps=(raw["glimp"]["small_steps"], raw["glimp"]["large_steps"]),
        usage=(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]),
    )


def via_llama_index(client: Glimp, case: Case, stream: bool) -> Answer:
    llm = GlimpLlamaIndexLLM(glimp=client)
    # allow_parallel_tool_calls: LlamaIndex's chat_with_tools keeps only the first call otherwise (as its OpenAI
    # adapter does), while stream_chat_with_tools keeps them all: a LlamaIndex convention, not glimp's
    tooled: dict[str, Any] = {"tools": LLAMA_TOOLS, "chat_history": LLAMA_MESSAGES, "allow_parallel_tool_calls": True}
    if not stream:
        if case.tools:
            return _llama_answer(llm, llm.chat_with_tools(**tooled, **case.options))
        return _llama_answer(llm, llm.chat(LLAMA_MESSAGES, **case.options))
    gen = (
        llm.stream_chat_with_tools(**tooled, **case.options)
        if case.tools
        else llm.stream_chat(LLAMA_MESSAGES, **case.options)
    )
    responses = list(gen)
    assert responses, "an empty stream"
    deltas = [r.delta or "" for r in responses]
    for k, r in enumerate(responses[:-1]):  # documented: cumulative message content, the new text in delta
        assert r.message.content == "".join(deltas[: k + 1]), (k, r.message.content, deltas)
    answer = _llama_answer(llm, responses[-1])
    answer.pieces = [d for d in deltas if d]
    return answer


# ----------------------------------------------------------------------------------------------- glimp serve
def _wire_calls(calls: list[dict[str, Any]]) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str | None, str]]]:
    """OpenAI tool calls read as an OpenAI client does (LangChain's ChatOpenAI, LlamaIndex's OpenAI): arguments
    that are a JSON object make a call, anything else an invalid call. The server sends an unreadable call with
    ``name`` "" when it had none (protocol.py's module docstring): that is None here."""
    valid: list[tuple[str, dict[str, Any]]] = []
    invalid: list[tuple[str | None, str]] = []
    for c in calls:
        name, arguments = c["function"]["name"], c["function"]["arguments"]
        try:
            args = json.loads(arguments)
        except ValueError:
            args = None
        if isinstance(args, dict):
            valid.append((name, args))
        else:
            invalid.append((name or None, arguments))
    return valid, invalid


def _sse(resp: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of an SSE stream, up to ``[DONE]`` (which must come)."""
    events: list[dict[str, Any]] = []
    for line in resp.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return events
        events.append(json.loads(data))
    raise AssertionError(f"the stream ended without [DONE] after {events!r:.400}")


def _steps(trace: dict[str, Any]) -> tuple[int, int]:
    """(small, large) steps from the server's ``glimp`` field (the routing trace)."""
    return trace["usage"]["small_steps"], trace["usage"]["large_steps"]


def via_serve(url: str, case: Case, stream: bool) -> Answer:
    body: dict[str, Any] = {"model": "glimp", "messages": OPENAI_MESSAGES, **case.options}
    if case.tools:
        body["tools"] = TOOLS
    with httpx.Client(timeout=30, trust_env=False) as http:
        if not stream:
            resp = http.post(url + "/chat/completions", json=body)
            assert resp.status_code == 200, resp.text
            data = resp.json()
            choice = data["choices"][0]
            message = choice["message"]
            calls = message.get("tool_calls") or []
            # OpenAI's convention: content null when the answer is only calls
            assert (message["content"] is None) == (bool(calls) and not case.content), message
            valid, invalid = _wire_calls(calls)
            usage = data["usage"]
            return Answer(
                content=message["content"] or "",
                calls=valid,
                invalid=invalid,
                errors=[None] * len(invalid),  # the wire has no field for why
                finish=choice["finish_reason"],
                routed_finish=data["glimp"]["finish_reason"],
                steps=_steps(data["glimp"]),
                usage=(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]),
            )
        body.update(stream=True, stream_options={"include_usage": True})
        with http.stream("POST", url + "/chat/completions", json=body) as resp:
            assert resp.status_code == 200, resp.read()
            events = _sse(resp)
    pieces: list[str] = []
    assembled: dict[int, dict[str, Any]] = {}  # tool calls by index, name and arguments concatenated
    finishes: list[tuple[str, dict[str, Any]]] = []  # (finish_reason, the glimp trace sent with it)
    usages: list[dict[str, int]] = []
    for event in events:
        if event.get("usage"):
            usages.append(event["usage"])
        for choice in event["choices"]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                pieces.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                into = assembled.setdefault(tc["index"], {"function": {"name": "", "arguments": ""}})
                fn = tc.get("function") or {}
                into["function"]["name"] += fn.get("name") or ""
                into["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finishes.append((choice["finish_reason"], event["glimp"]))
    assert len(finishes) == 1, f"one finish reason per stream, got {finishes}"
    assert len(usages) == 1, f"one usage chunk (include_usage), got {usages}"
    valid, invalid = _wire_calls([assembled[k] for k in sorted(assembled)])
    (finish, trace), usage = finishes[0], usages[0]
    return Answer(
        content="".join(pieces),
        calls=valid,
        invalid=invalid,
        errors=[None] * len(invalid),
        finish=finish,
        routed_finish=trace["finish_reason"],
        steps=_steps(trace),
        usage=(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]),
        pieces=pieces,
    )


# --------------------------------------------------------------------------------------------------- answers
Key = tuple[str, str]  # (front end, "invoke" | "stream")
FRONT_ENDS = ("langchain", "llama_index", "serve")
MODES = ("invoke", "stream")


@pytest.fixture(scope="module", params=list(CASES))
def answers(request: pytest.FixtureRequest) -> tuple[Case, dict[Key, Answer]]:
    """Every front end's answer to one case, non-streamed and streamed (one client, one server per case)."""
    case = CASES[request.param]
    config = _config(case)
    out: dict[Key, Answer] = {}
    with Glimp(config) as client:
        for mode in MODES:
            out["langchain", mode] = via_langchain(client, case, mode == "stream")
            out["llama_index", mode] = via_llama_index(client, case, mode == "stream")
    with contextlib.contextmanager(_serve)(config) as served:
        for mode in MODES:
            out["serve", mode] = via_serve(served.v1, case, mode == "stream")
    return case, out


def _invalid_as_given(key: Key, answer: Answer) -> list[tuple[str | None, str]]:
    """The unreadable calls with their raw text. LangChain's streamed ``args`` are re-parsed by LangChain with
    ``parse_partial_json``, which would *repair* a truncated call into a valid one; glimp therefore sends such
    text as a JSON string (integrations/langchain.py, ``_unrepairable``), which LangChain keeps invalid. That
    quoting is decoded here; ``test_langchain_streams_a_repairable_invalid_call_as_a_json_string`` pins it."""
    if key != ("langchain", "stream"):
        return answer.invalid
    out = []
    for name, args in answer.invalid:
        with contextlib.suppress(ValueError):
            decoded = json.loads(args)
            args = decoded if isinstance(decoded, str) else args
        out.append((name, args))
    return out


Problem = tuple[Key, str, Any, Any]  # (front end and mode, field, what it gave, what was expected)


def _fields(key: Key, a: Answer) -> dict[str, Any]:
    """What is compared of an answer; ``finish`` only where the front end has one."""
    out = {
        "content": a.content,
        "calls": a.calls,
        "invalid": _invalid_as_given(key, a),
        "routed_finish": a.routed_finish,
        "usage": a.usage,
        "steps": a.steps,
    }
    if a.finish is not None:
        out["finish"] = a.finish
    return out


def _report(problems: list[Problem]) -> str:
    return "\n".join(
        f"{front_end}/{mode} {name}: {got!r}, expected {want!r}" for (front_end, mode), name, got, want in problems
    )


def test_every_front_end_gives_the_answer_the_script_implies(answers: tuple[Case, dict[Key, Answer]]) -> None:
    case, got = answers
    expected = {
        "content": case.content,
        "calls": list(case.calls),
        "invalid": list(case.invalid),
        "routed_finish": case.routed_finish,
        "finish": case.finish,
        "steps": case.steps,
    }
    problems: list[Problem] = []
    for key, a in got.items():
        wanted = {**expected, "content": case.server_content, "invalid": []} if key[0] == "serve" else expected
        for name, value in _fields(key, a).items():
            if name in wanted and value != wanted[name]:
                problems.append((key, name, value, wanted[name]))
        prompt, completion, total = a.usage
        if not (prompt > 0 and completion > 0 and total == prompt + completion):
            problems.append((key, "usage", a.usage, "positive counts, total = prompt + completion"))
    assert not problems, _report(problems)


def test_the_front_ends_agree_with_each_other(answers: tuple[Case, dict[Key, Answer]]) -> None:
    """Field by field against LangChain's invoke (the finish reason: against the server's, where LangChain
    and the server both have one; LlamaIndex has none, see ``test_llama_index_reports_the_routers_finish_reason``)."""
    case, got = answers
    ref = _fields(("langchain", "invoke"), got["langchain", "invoke"])
    ref["finish"] = got["serve", "invoke"].finish
    # the server shows unreadable calls as text (Case.server_content); the rest must agree field by field
    serving = {**ref, "content": case.server_content if ref["invalid"] else ref["content"], "invalid": []}
    problems: list[Problem] = []
    for key, a in got.items():
        want = serving if key[0] == "serve" else ref
        problems += [(key, n, v, want[n]) for n, v in _fields(key, a).items() if v != want[n]]
    assert sum(a.finish is not None for a in got.values()) == 4  # LangChain and the server, both modes
    assert not problems, _report(problems)


def test_each_stream_adds_up_to_its_non_streamed_answer(answers: tuple[Case, dict[Key, Answer]]) -> None:
    case, got = answers
    problems: list[Problem] = []
    for front_end in FRONT_ENDS:
        key = (front_end, "stream")
        streamed, whole = got[key], got[front_end, "invoke"]
        assert streamed.pieces is not None and whole.pieces is None
        assert all(streamed.pieces), (key, streamed.pieces)
        if "".join(streamed.pieces) != whole.content:
            problems.append((key, "pieces joined", streamed.pieces, whole.content))
        if len(case.content) > 20 and len(streamed.pieces) < 2:  # a long text streams as it comes
            problems.append((key, "pieces", streamed.pieces, "more than one"))
        wanted = _fields((front_end, "invoke"), whole)
        problems += [(key, n, v, wanted[n]) for n, v in _fields(key, streamed).items() if v != wanted[n]]
    assert not problems, _report(problems)


def test_unreadable_calls_say_why_where_the_framework_can(answers: tuple[Case, dict[Key, Answer]]) -> None:
    """LangChain's ``invoke`` and LlamaIndex (both modes) carry the chat layer's reason, the same text. A
    LangChain stream cannot: LangChain rebuilds ``invalid_tool_calls`` from the chunks with ``error=None``
    (``AIMessageChunk.init_tool_calls``); the OpenAI wire has no such field."""
    case, got = answers
    if not case.invalid:
        assert all(a.invalid == [] and a.errors == [] for a in got.values())
        return
    reasons = [got[k].errors for k in (("langchain", "invoke"), ("llama_index", "invoke"), ("llama_index", "stream"))]
    assert len(reasons[0]) == len(case.invalid) and all(isinstance(e, str) and e for e in reasons[0]), reasons[0]
    assert reasons[1] == reasons[0] and reasons[2] == reasons[0], reasons
    assert got["langchain", "stream"].errors == [None] * len(case.invalid)


INVALID_CASES = [name for name, case in CASES.items() if case.invalid]


@pytest.mark.parametrize("name", INVALID_CASES)
def test_chat_openai_runs_none_of_the_servers_unreadable_calls(name: str) -> None:
    """Sent as tool calls with their raw text as arguments, unreadable calls reached ``ChatOpenAI`` as calls to
    run: a truncated one repaired into ``multiply`` with half its arguments when streaming, a nameless one as a
    tool named "", and arguments that are no object raised a ValidationError in langchain-openai. glimp serve
    now returns them as the text the model wrote, as vLLM does: no call to run, no error, nothing lost."""
    require("langchain_openai", "ChatOpenAI is the client protocol.py names for unreadable calls")
    from langchain_openai import ChatOpenAI

    case = CASES[name]
    problems: list[Problem] = []
    with contextlib.contextmanager(_serve)(_config(case)) as served:
        llm = ChatOpenAI(model="glimp", base_url=served.v1, api_key="none", max_retries=0, timeout=30)
        model = llm.bind_tools(TOOLS)
        for mode in MODES:
            key = ("chat_openai", mode)
            try:
                message: Any = (
                    model.invoke(LANGCHAIN_MESSAGES)
                    if mode == "invoke"
                    else functools.reduce(operator.add, model.stream(LANGCHAIN_MESSAGES))
                )
            except Exception as exc:  # reported with the rest
                problems.append((key, "raised", f"{type(exc).__name__}: {exc}"[:300], "an AIMessage"))
                continue
            for name_, got_, want in (
                ("tool_calls", message.tool_calls, []),
                ("invalid_tool_calls", message.invalid_tool_calls, []),
                ("content", message.content, case.server_content),
            ):
                if got_ != want:
                    problems.append((key, name_, got_, want))
    assert not problems, _report(problems)


def test_llama_index_reports_the_routers_finish_reason() -> None:
    """LlamaIndex's ``ChatResponse`` has no finish reason; the adapter's ``raw["finish_reason"]`` is the
    router's own (``eos``, ``stop``, ``length``...), which the other two carry in their routing trace (LangChain
    ``response_metadata["glimp"]``, the server's ``glimp`` field) and compare above as ``routed_finish``. So
    LlamaIndex does not say "tool_calls": its caller sees the calls themselves."""
    case = CASES["one_call"]
    with Glimp(_config(case)) as client:
        response = GlimpLlamaIndexLLM(glimp=client).chat_with_tools(LLAMA_TOOLS, chat_history=LLAMA_MESSAGES)
    assert response.raw is not None
    assert response.raw["finish_reason"] == "eos"
    assert response.raw["glimp"]["finish_reason"] == "eos"
    assert [b.tool_name for b in response.message.blocks if isinstance(b, ToolCallBlock)] == ["multiply"]


def test_langchain_streams_a_repairable_invalid_call_as_a_json_string() -> None:
    """The one place a stream's call text differs from ``invoke``'s: LangChain would repair the truncated call
    into a valid ``multiply`` call, so its raw text travels JSON-quoted (and stays invalid)."""
    case = CASES["invalid_truncated"]
    with Glimp(_config(case)) as client:
        model: Any = ChatGlimp(glimp=client).bind_tools(TOOLS)  # type: ignore[call-arg]
        merged = functools.reduce(operator.add, model.stream(LANGCHAIN_MESSAGES))
        whole = model.invoke(LANGCHAIN_MESSAGES)
    assert merged.tool_calls == [] and whole.tool_calls == []
    assert [c["args"] for c in whole.invalid_tool_calls] == [TRUNCATED]
    assert [c["args"] for c in merged.invalid_tool_calls] == [json.dumps(TRUNCATED)]


def test_one_call_only_when_parallel_calls_are_off_streamed_or_not() -> None:
    """OpenAI's ``parallel_tool_calls=False`` (LangChain's ``bind_tools(..., parallel_tool_calls=False)``,
    LlamaIndex's default ``allow_parallel_tool_calls=False``, the server's body field): the first call only, in
    every front end. LlamaIndex trimmed only its non-streamed response (its streams gave both calls), LangChain
    and the server ignored the setting."""
    case = CASES["two_calls"]
    config = _config(case)
    first = [("multiply", ARGS)]
    got: dict[Key, list[tuple[str, dict[str, Any]]]] = {}
    with Glimp(config) as client:
        model: Any = ChatGlimp(glimp=client).bind_tools(TOOLS, parallel_tool_calls=False)  # type: ignore[call-arg]
        got["langchain", "invoke"] = [(c["name"], c["args"]) for c in model.invoke(LANGCHAIN_MESSAGES).tool_calls]
        merged = functools.reduce(operator.add, model.stream(LANGCHAIN_MESSAGES))
        got["langchain", "stream"] = [(c["name"], c["args"]) for c in merged.tool_calls]
        llm = GlimpLlamaIndexLLM(glimp=client)
        tooled: dict[str, Any] = {"tools": LLAMA_TOOLS, "chat_history": LLAMA_MESSAGES}
        for mode, response in (
            ("invoke", llm.chat_with_tools(**tooled)),
            ("stream", list(llm.stream_chat_with_tools(**tooled))[-1]),
        ):
            selections = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
            got["llama_index", mode] = [(s.tool_name, s.tool_kwargs) for s in selections]
    with contextlib.contextmanager(_serve)(config) as served, httpx.Client(timeout=30, trust_env=False) as http:
        body = {"model": "glimp", "messages": OPENAI_MESSAGES, "tools": TOOLS, "parallel_tool_calls": False}
        message = http.post(served.v1 + "/chat/completions", json=body).json()["choices"][0]["message"]
        got["serve", "invoke"] = _wire_calls(message["tool_calls"])[0]
        with http.stream("POST", served.v1 + "/chat/completions", json={**body, "stream": True}) as resp:
            deltas = [tc for e in _sse(resp) for ch in e["choices"] for tc in ch["delta"].get("tool_calls") or []]
        got["serve", "stream"] = _wire_calls(deltas)[0]
    assert got == {key: first for key in got} and len(got) == 6, got
