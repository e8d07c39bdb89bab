"""One chat turn through the router, for every front end: messages + tools in, answer out.

:func:`prepare` turns OpenAI-shaped messages, tools, ``tool_choice`` and request options into a
:class:`~glimp_llm.router.RouteRequest` (the prompt itself is made per engine by :mod:`glimp_llm.chat.prompt`).
:meth:`ChatTurn.answer` reads a :class:`~glimp_llm.trace.RoutedResult` back as a :class:`ChatAnswer`: the
visible text, the tool calls (valid and invalid), the OpenAI finish reason and the token usage.
:meth:`ChatTurn.stream` / :meth:`ChatTurn.astream` do the same for the router's event stream, through the one
hold-back (:class:`~glimp_llm.chat.stream.HoldBack`). The adapters and the server only map these to their
own types: LangChain messages, LlamaIndex responses, OpenAI chunks.

No engine is touched here, so preparing a turn never blocks an event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from glimp_llm.chat.options import RequestOptions
from glimp_llm.chat.stream import HoldBack
from glimp_llm.chat.tools import (
    STREAM_PAUSE_MARKERS,
    InvalidToolCall,
    ParsedToolCall,
    parse_tool_calls,
    tool_choice_prefill,
    tool_names,
)
from glimp_llm.engines.base import Message
from glimp_llm.router import RouteRequest
from glimp_llm.trace import DoneEvent, RoutedFinishReason, RoutedResult, RouterEvent, TokenEvent

FinishReason = Literal["stop", "length", "tool_calls"]

#: Why a routed request ended -> OpenAI's ``finish_reason``. The exact reason stays in the routing trace.
FINISH_REASON: dict[RoutedFinishReason, FinishReason] = {
    "eos": "stop",
    "stop": "stop",
    "repetition": "stop",
    "length": "length",
    "cancelled": "stop",
}
OPTION_NAMES = tuple(name for name in RequestOptions.model_fields if name != "stop")  # stop: see request_options


def request_options(
    defaults: object, overrides: Mapping[str, Any], stop: Sequence[str] | None = None
) -> dict[str, Any]:
    """:class:`RouteRequest` options from an adapter's fields (``defaults``) and one call's keyword arguments
    (``overrides``, LangChain's ``invoke(x, temperature=...)``); ``None`` leaves the router's default.
    ``timeout`` is the adapters' name for ``timeout_s`` (a call may use either: ``Glimp`` takes ``timeout_s``, and
    a deadline silently dropped is worse than two names); ``stop`` given to the call replaces the field's."""
    opts: dict[str, Any] = {}
    for name in OPTION_NAMES:
        field_name = "timeout" if name == "timeout_s" else name
        value = overrides.get(field_name, overrides.get(name, getattr(defaults, field_name, None)))
        if value is not None:
            opts[name] = value
    stops = stop if stop is not None else overrides.get("stop", getattr(defaults, "stop", None))
    if stops:
        opts["stop"] = tuple(stops)
    return opts


def usage(result: RoutedResult) -> dict[str, int]:
    """OpenAI-style token counts (also the keys LangChain's ``llm_output`` and LlamaIndex's
    ``TokenCountingHandler`` read)."""
    return result.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})


@dataclass(frozen=True)
class ChatAnswer:
    """A routed answer as every front end reports it."""

    result: RoutedResult
    content: str
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> FinishReason:
        return "tool_calls" if self.tool_calls else FINISH_REASON[self.result.finish_reason]

    @property
    def usage(self) -> dict[str, int]:
        return usage(self.result)


@dataclass(frozen=True)
class StreamPiece:
    """What a stream shows next: ``text`` (may be "" on the last piece), everything ``shown`` so far, the
    router's token ``event`` it came from, and on the last piece the whole ``answer``."""

    text: str
    shown: str
    event: TokenEvent | None = None
    answer: ChatAnswer | None = None


@dataclass(frozen=True)
class ChatTurn:
    """A prepared turn: the routed request, plus what is needed to read its answer."""

    request: RouteRequest
    tool_names: tuple[str, ...] | None = None  # None: no tools bound, the answer is plain text
    parallel_tool_calls: bool = True  # False: at most one call is answered (OpenAI's parallel_tool_calls)

    def answer(self, result: RoutedResult) -> ChatAnswer:
        text = self.request.prefill + result.text  # a forced call's opening was part of the prompt
        if self.tool_names is None:
            return ChatAnswer(result, text)
        parsed = parse_tool_calls(text, self.tool_names)
        calls = parsed.calls if self.parallel_tool_calls else parsed.calls[:1]
        return ChatAnswer(result, parsed.content, calls, parsed.invalid)

    def holdback(self) -> HoldBack:
        tools = self.tool_names is not None
        held = HoldBack(self.request.stop, STREAM_PAUSE_MARKERS if tools else (), pause_on_leading_json=tools)
        held.push(self.request.prefill)  # a forced call starts inside a <tool_call> block: nothing is shown
        return held

    def stream(self, events: Iterable[RouterEvent]) -> Iterator[StreamPiece]:
        """The router's events as visible pieces; the last one carries the answer."""
        held = self.holdback()
        for event in events:
            piece = self._piece(held, event)
            if piece is not None:
                yield piece

    async def astream(self, events: AsyncIterable[RouterEvent]) -> AsyncIterator[StreamPiece]:
        held = self.holdback()
        async for event in events:
            piece = self._piece(held, event)
            if piece is not None:
                yield piece

    def _piece(self, held: HoldBack, event: RouterEvent) -> StreamPiece | None:
        if isinstance(event, TokenEvent):
            text = held.push(event.text)
            return StreamPiece(text, held.shown, event) if text else None
        if isinstance(event, DoneEvent):
            answer = self.answer(event.result)
            return StreamPiece(held.finish(answer.content), answer.content, answer=answer)
        return None


def prepare(
    messages: Sequence[Message],
    *,
    tools: Sequence[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = None,
    **options: Any,
) -> ChatTurn:
    """A chat turn: OpenAI-shaped ``messages`` and ``tools``, ``tool_choice`` (``None``/``"auto"``: the model
    decides; ``"none"``: tools hidden; ``"required"``/``"any"``/``True``/a name/``{"function": {"name"}}``: a
    call is forced by prefilling its opening), ``parallel_tool_calls`` (``False``: only the first call the model
    writes is answered, in every front end and streamed or not) and :class:`RouteRequest` options."""
    bound = list(tools or ()) or None
    if tool_choice == "none":
        bound = None
    names = tool_names(bound)
    prefill = (tool_choice_prefill(tool_choice, names) if bound else None) or ""
    request = RouteRequest(messages=list(messages), tools=bound, prefill=prefill, **options)
    return ChatTurn(request, tuple(names) if bound else None, parallel_tool_calls is not False)


def text_turn(request: RouteRequest) -> ChatTurn:
    """A turn without tools (completions, ``GlimpLLM``): the answer is the routed text."""
    return ChatTurn(request)
