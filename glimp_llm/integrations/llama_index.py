"""LlamaIndex adapter: ``GlimpLlamaIndexLLM``, a chat-first ``FunctionCallingLLM`` over a routed client.

* ``metadata`` is read from the engines: the real context window (the smaller of the two models'),
  ``num_output`` (the token budget), ``is_chat_model=True``, ``is_function_calling_model=True`` and the
  configured ``small->large`` model name. Query engines size their prompts from it.
* ``chat``/``complete`` and their ``stream_*`` forms, and *real* async variants: ``achat``/``acomplete``
  await :meth:`Glimp.agenerate`, ``astream_*`` iterate :meth:`Glimp.astream`, so the caller's loop is never
  blocked by generation.
* Streams yield cumulative ``text``/``message.content`` and the new ``delta``; the last response carries
  the whole answer, its tool calls, ``raw["usage"]`` (``prompt_tokens``/``completion_tokens``/``total_tokens``,
  what ``TokenCountingHandler`` reads) and ``raw["glimp"]``, the routing trace. Stream responses before it
  say in ``raw`` which model (small or large) wrote the token and in which step.
* ``complete(prompt, formatted=True)`` continues ``prompt`` as raw text (it is already formatted);
  ``formatted=False`` applies ``completion_to_prompt`` when one was given (then the text is raw), else
  sends the prompt as a user message (after ``system_prompt``) through the model's chat template.
* Tools: the same rendering, forcing and parsing as the LangChain adapter and ``glimp serve``
  (:mod:`glimp_llm.chat` does all of the chat; this module maps types); calls come back as
  ``ToolCallBlock``\\ s in the message and in ``additional_kwargs["tool_calls"]`` (OpenAI shape), so
  ``FunctionAgent`` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ChatResponseAsyncGen,
        ChatResponseGen,
        CompletionResponse,
        CompletionResponseAsyncGen,
        CompletionResponseGen,
        LLMMetadata,
        MessageRole,
        TextBlock,
        ToolCallBlock,
    )
    from llama_index.core.bridge.pydantic import Field
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.llms.llm import ToolSelection, default_completion_to_prompt
    from llama_index.core.tools import BaseTool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "glimp_llm.integrations.llama_index needs llama-index-core: pip install 'glimp-llm[llamaindex]'"
    ) from exc

from glimp_llm.chat.content import content_text, template_role
from glimp_llm.chat.turn import ChatAnswer, ChatTurn, StreamPiece, prepare, request_options, text_turn, usage
from glimp_llm.engines.base import Message
from glimp_llm.integrations._common import GlimpFields, routing_trace
from glimp_llm.router import RouteRequest
from glimp_llm.trace import RoutedResult, TokenEvent

__all__ = ["GlimpLlamaIndexLLM"]

#: LlamaIndex's own roles for the assistant; the others are OpenAI's (glimp_llm.chat.content.template_role)
_ROLE = {MessageRole.CHATBOT: "assistant", MessageRole.MODEL: "assistant"}


def _message_text(message: ChatMessage) -> str:
    """The text of a LlamaIndex message's blocks: tool-call and thinking blocks are skipped by their type
    (not text to read again), an image or a file is refused."""
    parts = [
        {"type": "text", "text": b.text} if isinstance(b, TextBlock) else {"type": b.block_type} for b in message.blocks
    ]
    return content_text(parts)


def _call(call_id: str | None, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": call_id or "", "type": "function", "function": {"name": name, "arguments": arguments}}


def _assistant_tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    """The calls of an assistant message: its ``ToolCallBlock``\\ s, else ``additional_kwargs["tool_calls"]``
    (OpenAI dicts, or ``ToolSelection``\\ s)."""
    blocks = [_call(b.tool_call_id, b.tool_name, b.tool_kwargs) for b in message.blocks if isinstance(b, ToolCallBlock)]
    stored = message.additional_kwargs.get("tool_calls") or []
    return blocks or [
        c if isinstance(c, dict) else _call(c.tool_id, c.tool_name, c.tool_kwargs)
        for c in stored
        if isinstance(c, dict) or hasattr(c, "tool_name")
    ]


def to_template_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """LlamaIndex messages as the OpenAI-shaped dicts the chat template renders (tool calls included)."""
    out: list[Message] = []
    for m in messages:
        role = template_role(_ROLE.get(m.role, m.role.value))
        msg: Message = {"role": role, "content": _message_text(m)}
        if role == "assistant" and (calls := _assistant_tool_calls(m)):
            msg["tool_calls"] = calls
        elif role == "tool":
            msg["tool_call_id"] = m.additional_kwargs.get("tool_call_id", "")
            msg["name"] = m.additional_kwargs.get("name", "")
        out.append(msg)
    return out


class GlimpLlamaIndexLLM(GlimpFields, FunctionCallingLLM):
    """A routed LLM for LlamaIndex: ``GlimpLlamaIndexLLM()`` (embedded default), ``(config=...)`` or
    ``(glimp=client)`` to share a running client. Engines load on first use, not at construction."""

    context_window: int | None = Field(default=None, description="override; default: read from the engines")

    @classmethod
    def class_name(cls) -> str:
        return "GlimpLlamaIndexLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Read from the engines (starts them on first access)."""
        window = self.context_window or min(
            self._client.small_info.context_window, self._client.large_info.context_window
        )
        return LLMMetadata(
            context_window=window,
            num_output=self.max_tokens or self._client.router.config.max_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model_label,
        )

    # ------------------------------------------------------------------------------ requests
    def _prepare_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatTurn:
        """Messages + tools -> a chat turn (no engine is touched: safe on the caller's loop)."""
        return prepare(
            to_template_messages(messages),
            tools=kwargs.get("tools"),
            tool_choice="required" if kwargs.get("tool_required") else kwargs.get("tool_choice"),
            parallel_tool_calls=kwargs.get("parallel_tool_calls"),
            **request_options(self, kwargs),
        )

    def _prepare_complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> RouteRequest:
        options = request_options(self, kwargs)
        if formatted:
            return RouteRequest(prompt=prompt, raw=True, **options)
        to_prompt = self.completion_to_prompt  # typed Optional; LLM's validators replace None by the default
        if to_prompt is not None and to_prompt is not default_completion_to_prompt:
            return RouteRequest(prompt=to_prompt(prompt), raw=True, **options)
        msgs: list[Message] = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return RouteRequest(messages=msgs, **options)

    # ------------------------------------------------------------------------------ responses
    @staticmethod
    def _raw(result: RoutedResult) -> dict[str, Any]:
        return {"usage": usage(result), "finish_reason": result.finish_reason, "glimp": routing_trace(result)}

    @staticmethod
    def _assistant(answer: ChatAnswer) -> ChatMessage:
        blocks: list[Any] = [TextBlock(text=answer.content)]
        calls = answer.tool_calls
        blocks += [ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in calls]
        kwargs: dict[str, Any] = {}
        if calls:
            kwargs["tool_calls"] = [_call(c.id, c.name, c.arguments_json) for c in calls]
        if answer.invalid_tool_calls:
            kwargs["invalid_tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments, "error": c.error}
                for c in answer.invalid_tool_calls
            ]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=kwargs)

    def _chat_response(self, answer: ChatAnswer, delta: str | None = None) -> ChatResponse:
        return ChatResponse(message=self._assistant(answer), raw=self._raw(answer.result), delta=delta)

    def _completion_response(self, result: RoutedResult, delta: str | None = None) -> CompletionResponse:
        return CompletionResponse(text=result.text, raw=self._raw(result), delta=delta)

    @staticmethod
    def _token_raw(event: TokenEvent | None) -> dict[str, Any]:
        return {"model": event.model, "step": event.step} if event is not None else {}

    def _chat_piece(self, piece: StreamPiece) -> ChatResponse:
        if piece.answer is not None:
            return self._chat_response(piece.answer, delta=piece.text)
        message = ChatMessage(role=MessageRole.ASSISTANT, content=piece.shown)
        return ChatResponse(message=message, delta=piece.text, raw=self._token_raw(piece.event))

    def _completion_piece(self, piece: StreamPiece) -> CompletionResponse:
        if piece.answer is not None:
            return self._completion_response(piece.answer.result, delta=piece.text)
        return CompletionResponse(text=piece.shown, delta=piece.text, raw=self._token_raw(piece.event))

    # ---------------------------------------------------------------------------------- chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        turn = self._prepare_chat(messages, kwargs)
        return self._chat_response(turn.answer(self._client.generate(turn.request)))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        turn = self._prepare_chat(messages, kwargs)
        return self._chat_response(turn.answer(await self._client.agenerate(turn.request)))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        turn = self._prepare_chat(messages, kwargs)
        return (self._chat_piece(piece) for piece in turn.stream(self._client.stream(turn.request)))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        turn = self._prepare_chat(messages, kwargs)
        return (self._chat_piece(piece) async for piece in turn.astream(self._client.astream(turn.request)))

    # ---------------------------------------------------------------------------- completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._completion_response(self._client.generate(self._prepare_complete(prompt, formatted, kwargs)))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = self._prepare_complete(prompt, formatted, kwargs)
        return self._completion_response(await self._client.agenerate(request))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = self._prepare_complete(prompt, formatted, kwargs)
        return (self._completion_piece(piece) for piece in text_turn(request).stream(self._client.stream(request)))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        request = self._prepare_complete(prompt, formatted, kwargs)
        pieces = text_turn(request).astream(self._client.astream(request))
        return (self._completion_piece(piece) async for piece in pieces)

    # --------------------------------------------------------------------------------- tools
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Tools as OpenAI tool dicts for the chat template; ``tool_required`` forces a call; without
        ``allow_parallel_tool_calls`` only the first call is answered, streamed or not (LlamaIndex itself trims
        only the non-streamed response, relying on OpenAI's ``parallel_tool_calls`` for streams)."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": [t.metadata.to_openai_tool() for t in tools] or None,
            "tool_required": tool_required,
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The calls the model made, as LlamaIndex tool selections."""
        selections = [
            ToolSelection(
                tool_id=b.tool_call_id or "",
                tool_name=b.tool_name,
                tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else {},
            )
            for b in response.message.blocks
            if isinstance(b, ToolCallBlock)
        ]
        if not selections and error_on_no_tool_call:
            invalid = response.message.additional_kwargs.get("invalid_tool_calls")
            hint = f" (unreadable calls: {invalid})" if invalid else ""
            raise ValueError(f"expected at least one tool call, but the model made none{hint}")
        return selections
