"""The OpenAI wire shapes of ``glimp serve``, in one module: request bodies in, the ``openai`` package's own
response types out (``ChatCompletion``, ``ChatCompletionChunk``, ``Completion``, ``Model``), so what the
server sends is what the official client parses.

Requests are validated by pydantic. The generation options and their bounds are
:class:`~glimp_llm.chat.options.GenerationOptions`, the model the router validates with too. Fields OpenAI
defines that routing cannot honour (``n > 1``, ``logprobs``, ``best_of``, ``echo``, ``suffix``) are rejected
with 400 rather than ignored; unknown fields are tolerated (clients such as LangChain send vendor extras).
The routing extension is the ``glimp`` object:

* in requests: ``{"glimp": {"threshold": 0.8}}`` overrides tau for that request;
* in responses: ``"glimp": {"finish_reason", "threshold", "mode", "usage", "timings", "steps": [...]}``, the
  routing trace of :meth:`glimp_llm.trace.RoutedResult.to_json_dict` without the text (already in ``choices``).

Tool calls (``tools``, ``tool_choice``: ``"none"``, ``"auto"``, ``"required"`` or a named function) go through
:mod:`glimp_llm.chat` like the adapters' and come back as ``tool_calls``. A call the model wrote but that
cannot be read stays in ``content``, as the model wrote it (its ``<tool_call>`` block), as vLLM and llama-server
return what their tool parsers cannot read: OpenAI's wire has no invalid call, and clients would take one for
a call to run (LangChain's ``ChatOpenAI`` repairs a truncated one into a call with half its arguments when
streaming, reads a nameless one as a tool named ``""`` and fails on arguments that are not an object). The
adapters, whose frameworks know invalid calls, report them as such (LangChain: ``invalid_tool_calls``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta, ChoiceDeltaToolCall, ChoiceDeltaToolCallFunction
from openai.types.chat.chat_completion_message_function_tool_call import ChatCompletionMessageFunctionToolCall, Function
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from glimp_llm.chat.content import content_text
from glimp_llm.chat.options import GenerationOptions
from glimp_llm.chat.turn import ChatAnswer, ChatTurn, FinishReason, prepare, text_turn
from glimp_llm.errors import InvalidRequestError
from glimp_llm.router import RouteRequest
from glimp_llm.trace import RoutedResult

_UNSUPPORTED = ("logprobs", "top_logprobs", "best_of", "echo", "suffix")


# ------------------------------------------------------------------------------------------ requests
class GlimpExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(None, description="tau (nats) for this request")


class _Body(GenerationOptions):
    """What both endpoints accept besides their prompt."""

    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    glimp: GlimpExtension | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported (each routed request writes one answer)")
        return value

    @model_validator(mode="after")
    def _nothing_unsupported(self) -> _Body:
        extra = self.model_extra or {}
        for name in _UNSUPPORTED:
            value = extra.get(name)
            if value not in (None, False, 0, 1) or (name in ("echo", "suffix") and value):
                raise ValueError(f"{name} is not supported by the routed model; leave it out")
        return self

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def options(self) -> dict[str, Any]:
        """The :class:`RouteRequest` options (validated again, with the same model, by the router)."""
        options = self.model_dump(include={"max_tokens", "temperature", "top_p", "seed"})
        return {**options, "stop": tuple(self.stops()), "threshold": self.glimp.threshold if self.glimp else None}


class ChatBody(_Body):
    """``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = Field(None, strict=True)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for tool in tools or ():
            fn = tool.get("function")
            if tool.get("type", "function") != "function" or not isinstance(fn, dict) or not fn.get("name"):
                raise ValueError('each tool must be {"type": "function", "function": {"name": ..., "parameters": ...}}')
        return tools

    def prompt_chars(self) -> int:
        return sum(len(content_text(m.get("content"))) for m in self.messages)

    def turn(self) -> ChatTurn:
        options = self.options()
        options["max_tokens"] = self.max_completion_tokens or self.max_tokens
        return prepare(
            self.messages,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            **options,
        )


class CompletionBody(_Body):
    """``POST /v1/completions``: raw text, continued as it is."""

    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequestError("send one prompt per request (a list of one string is accepted)")
            return self.prompt[0]
        return self.prompt

    def prompt_chars(self) -> int:
        return len(self.text())

    def turn(self) -> ChatTurn:
        return text_turn(RouteRequest(prompt=self.text(), raw=True, **self.options()))


# ----------------------------------------------------------------------------------------- responses
def trace(result: RoutedResult) -> dict[str, Any]:
    """The ``glimp`` extension field of a response: the routing trace without the text."""
    data = result.to_json_dict()
    data.pop("text", None)
    return data


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _with_unreadable_calls(answer: ChatAnswer, text: str) -> str:
    """``text`` (the answer's content, or its last streamed part) followed by the calls that cannot be read, as
    the model wrote them (module docstring)."""
    blocks = "\n".join(dict.fromkeys(c.text for c in answer.invalid_tool_calls))  # a block may hold several calls
    return text + ("\n" if blocks and answer.content else "") + blocks


@dataclass
class Wire:
    """Builds one request's response objects: the whole answer, or the chunks of its stream."""

    rid: str
    model: str
    chat: bool
    include_trace: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, chunk: bool) -> dict[str, Any]:
        """The fields every response object and stream event starts with."""
        kind = "text_completion" if not self.chat else "chat.completion.chunk" if chunk else "chat.completion"
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model}

    def _extra(self, answer: ChatAnswer) -> dict[str, Any]:
        return {"glimp": trace(answer.result)} if self.include_trace else {}

    def full(self, answer: ChatAnswer) -> ChatCompletion | Completion:
        usage = CompletionUsage(**answer.usage)
        if not self.chat:
            text = CompletionChoice(index=0, text=answer.content, finish_reason=answer.finish_reason, logprobs=None)
            return Completion(**self._head(False), choices=[text], usage=usage, **self._extra(answer))
        calls = [
            ChatCompletionMessageFunctionToolCall(
                id=c.id, type="function", function=Function(name=c.name, arguments=c.arguments_json)
            )
            for c in answer.tool_calls
        ]
        content = _with_unreadable_calls(answer, answer.content)
        message = ChatCompletionMessage(
            role="assistant", content=content or (None if calls else ""), tool_calls=calls or None
        )
        choice = Choice(index=0, message=message, finish_reason=answer.finish_reason, logprobs=None)
        return ChatCompletion(**self._head(False), choices=[choice], usage=usage, **self._extra(answer))

    def chunk(
        self,
        text: str | None = None,
        *,
        finish: FinishReason | None = None,
        delta: ChoiceDelta | None = None,
        **extra: Any,
    ) -> ChatCompletionChunk | Completion:
        """One stream event. Completion chunks are built unvalidated: the ``openai`` type of a completion
        choice requires a finish reason, which every chunk but the last has not yet."""
        if not self.chat:
            text_choice = CompletionChoice.model_construct(
                index=0,
                text=text or "",
                finish_reason=finish,  # type: ignore[arg-type]
                logprobs=None,
            )
            return Completion.model_construct(**self._head(True), choices=[text_choice], **extra)
        if delta is None:
            delta = ChoiceDelta(content=text) if text is not None else ChoiceDelta()
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish, logprobs=None)
        return ChatCompletionChunk(**self._head(True), choices=[choice], **extra)

    def first_chunks(self) -> list[ChatCompletionChunk | Completion]:
        return [self.chunk(delta=ChoiceDelta(role="assistant", content=""))] if self.chat else []

    def last_chunks(self, answer: ChatAnswer, rest: str, include_usage: bool) -> list[ChatCompletionChunk | Completion]:
        """The rest of the visible text, the tool calls, the finish reason (with the trace), the usage."""
        rest = _with_unreadable_calls(answer, rest)
        out = [self.chunk(rest)] if rest else []
        calls = [
            ChoiceDeltaToolCall(
                index=k,
                id=c.id,
                type="function",
                function=ChoiceDeltaToolCallFunction(name=c.name, arguments=c.arguments_json),
            )
            for k, c in enumerate(answer.tool_calls if self.chat else [])
        ]
        if calls:
            out.append(self.chunk(delta=ChoiceDelta(tool_calls=calls)))
        out.append(self.chunk(finish=answer.finish_reason, **self._extra(answer)))
        if include_usage:
            cls = ChatCompletionChunk if self.chat else Completion
            out.append(cls.model_construct(**self._head(True), choices=[], usage=CompletionUsage(**answer.usage)))
        return out
