"""The three front ends build the same prompt for the same conversation: LangChain's ``ChatGlimp``, LlamaIndex's
``GlimpLlamaIndexLLM`` and ``glimp serve`` (over real HTTP) all go through one chat layer (``glimp_llm.chat``),
so the token ids that reach the engine are identical.

The conversation has what the front ends used to render differently: a system message, a user message made of
several text parts (LangChain content blocks, LlamaIndex ``TextBlock``\\ s, OpenAI content parts), an assistant
call with JSON arguments, its tool result, two bound tools, and (second case) ``tool_choice`` forcing one tool by
name. Each front end speaks its own idiom; the tools are LlamaIndex ``FunctionTool``\\ s, and LangChain and the
HTTP request get the OpenAI dicts LlamaIndex makes of them (each framework's own schema of a Python function
differs, which is no front end's doing). Two chat templates: the scripted engine's own and a Qwen2.5-like one
(tools in the system turn, ``tool_call.arguments | tojson``, results as ``<tool_response>``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import UNGUARDED, require

require("langchain_core", "the LangChain front end is one of the three compared")
require("llama_index.core", "the LlamaIndex front end is one of the three compared")
require("fastapi", "glimp serve is one of the three front ends compared")
require("httpx", "glimp serve is called over HTTP")

import httpx  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402
from test_serve import _serve  # noqa: E402

from glimp_llm import Glimp, GlimpConfig  # noqa: E402
from glimp_llm.engines.base import Completion, Glimpse, SamplingParams  # noqa: E402
from glimp_llm.engines.scripted import SCRIPTED_TEMPLATE, ScriptedEngine, shared_tokenizer  # noqa: E402
from glimp_llm.integrations.langchain import ChatGlimp  # noqa: E402
from glimp_llm.integrations.llama_index import GlimpLlamaIndexLLM  # noqa: E402
from glimp_llm.manager import BackendManager  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b": 7}}\n</tool_call>'
CONFIG = GlimpConfig.validated(
    {
        "small": {"kind": "scripted", "response": CALL, "name": "small"},
        "large": {"kind": "scripted", "response": CALL, "name": "large"},
        "router": {"threshold": 1.0, "max_tokens": 64, **UNGUARDED},
    }
)

#: Qwen2.5-Coder-Instruct's template, its system texts shortened: the tools in the system turn, calls as <tool_call>
#: JSON with the arguments as an object (``| tojson``), tool results as a user turn in <tool_response> tags.
QWEN_LIKE_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nReturn each function call within <tool_call></tool_call> XML tags.<|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first)
        or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
TEMPLATES = {"scripted": SCRIPTED_TEMPLATE, "qwen-like": QWEN_LIKE_TEMPLATE}

SYSTEM = "You are a careful calculator."
PARTS = ("What is 6 times 7?", "Use the multiply tool, then answer.")
ARGS = {"a": 6, "b": 7}
RESULT = "42"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


LLAMA_TOOLS = [
    FunctionTool.from_defaults(fn=multiply, description="Multiply two integers."),
    FunctionTool.from_defaults(fn=add, description="Add two integers."),
]
TOOLS = [t.metadata.to_openai_tool() for t in LLAMA_TOOLS]

LANGCHAIN_MESSAGES: list[BaseMessage] = [
    SystemMessage(SYSTEM),
    HumanMessage(content=[{"type": "text", "text": p} for p in PARTS]),
    AIMessage(content="", tool_calls=[{"name": "multiply", "args": ARGS, "id": "call_1"}]),
    ToolMessage(content=RESULT, tool_call_id="call_1"),
]
LLAMA_MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM),
    ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text=p) for p in PARTS]),
    ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[ToolCallBlock(tool_call_id="call_1", tool_name="multiply", tool_kwargs=ARGS)],
    ),
    ChatMessage(
        role=MessageRole.TOOL, content=RESULT, additional_kwargs={"tool_call_id": "call_1", "name": "multiply"}
    ),
]
OPENAI_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": [{"type": "text", "text": p} for p in PARTS]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": RESULT},
]

#: tool_choice as each front end's users write it: (LangChain, LlamaIndex, OpenAI HTTP); None: not given
CHOICES: dict[str, tuple[Any, Any, Any]] = {
    "auto": (None, None, None),
    "named": ("multiply", "multiply", {"type": "function", "function": {"name": "multiply"}}),
}
PREFILL = {"auto": "", "named": '<tool_call>\n{"name": "multiply", "arguments": {'}


class RecordingEngine(ScriptedEngine):
    """A scripted engine that keeps the context of every model call: what a front end's prompt became."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts: list[list[int]] = []

    async def glimpse(self, context: Sequence[int], sampling: SamplingParams, *, top_logprobs: int = 0) -> Glimpse:
        self.contexts.append(list(context))
        return await super().glimpse(context, sampling, top_logprobs=top_logprobs)

    async def generate(self, context: Sequence[int], **kwargs: Any) -> Completion:
        self.contexts.append(list(context))
        return await super().generate(context, **kwargs)

    def prompt(self) -> list[int]:
        """The context of the first model call: the prompt, as token ids."""
        assert self.contexts, f"no model call reached engine {self.name!r}"
        return self.contexts[0]


def _engines(template: str) -> tuple[RecordingEngine, RecordingEngine]:
    """The configured scripted pair (``CONFIG``), recording, with ``template`` as their chat template."""
    small, large = CONFIG.small, CONFIG.large
    return (
        RecordingEngine(**small.model_dump(exclude={"kind"}), chat_template=template),
        RecordingEngine(**large.model_dump(exclude={"kind"}), chat_template=template),
    )


def via_langchain(template: str, case: str) -> list[int]:
    small, large = _engines(template)
    with Glimp(CONFIG, small=small, large=large) as client:
        llm = ChatGlimp(glimp=client)  # type: ignore[call-arg]  # the pydantic plugin wants a LangChain field
        llm.bind_tools(TOOLS, tool_choice=CHOICES[case][0]).invoke(LANGCHAIN_MESSAGES)
    return small.prompt()


def via_llama_index(template: str, case: str) -> list[int]:
    small, large = _engines(template)
    choice = CHOICES[case][1]
    with Glimp(CONFIG, small=small, large=large) as client:
        llm = GlimpLlamaIndexLLM(glimp=client)
        llm.chat_with_tools(LLAMA_TOOLS, chat_history=LLAMA_MESSAGES, **({"tool_choice": choice} if choice else {}))
    return small.prompt()


def via_serve(template: str, case: str) -> list[int]:
    small, large = _engines(template)
    body: dict[str, Any] = {"model": "glimp", "messages": OPENAI_MESSAGES, "tools": TOOLS}
    if CHOICES[case][2] is not None:
        body["tool_choice"] = CHOICES[case][2]
    serving = contextlib.contextmanager(_serve)(BackendManager(CONFIG, small=small, large=large))
    with serving as served, httpx.Client(timeout=30, trust_env=False) as http:
        resp = http.post(served.v1 + "/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return small.prompt()


FRONT_ENDS: dict[str, Callable[[str, str], list[int]]] = {
    "langchain": via_langchain,
    "llama_index": via_llama_index,
    "serve": via_serve,
}


def _text(ids: Sequence[int]) -> str:
    """Token ids back to text (every character of this conversation is in the scripted vocabulary)."""
    tok = shared_tokenizer()
    return "".join(tok.piece(i) for i in ids)


@pytest.mark.parametrize("case", list(CHOICES))
@pytest.mark.parametrize("template", list(TEMPLATES))
def test_the_three_front_ends_send_the_engine_the_same_prompt(template: str, case: str) -> None:
    prompts = {name: run(TEMPLATES[template], case) for name, run in FRONT_ENDS.items()}
    texts = {name: _text(ids) for name, ids in prompts.items()}
    reference = texts["langchain"]
    # the conversation is all there (a prompt that lost a part would agree too, and prove nothing)
    for piece in (SYSTEM, "\n".join(PARTS), '"arguments": {"a": 6, "b": 7}', RESULT, '"name": "add"'):
        assert piece in reference, f"{piece!r} is missing from the prompt:\n{reference}"
    assert reference.endswith(PREFILL[case]), reference[-80:]  # a forced call opens the answer
    for name in ("llama_index", "serve"):
        assert texts[name] == reference, f"{name} and langchain render different prompts"
        assert prompts[name] == prompts["langchain"], f"{name} and langchain send different token ids"
