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

import json
from collections.abc import AsyncGenerator, Generator, Sequence
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
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.llms.llm import ToolSelection, default_completion_to_prompt
    from llama_index.core.tools import BaseTool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "glimp_llm.integrations.llama_index needs llama-index-core: pip install 'glimp-llm[llamaindex]'"
    ) from exc

from glimp_llm.chat.content import content_text
from glimp_llm.chat.turn import ChatAnswer, ChatTurn, StreamPiece, prepare, request_options, text_turn, usage
from glimp_llm.client import Glimp
from glimp_llm.config import GlimpConfig
from glimp_llm.engines.base import Message
from glimp_llm.integrations._common import pair_label, resolve_glimp, routing_trace
from glimp_llm.router import Router, RouteRequest
from glimp_llm.trace import RoutedResult, TokenEvent

__all__ = ["GlimpLlamaIndexLLM"]

_ROLE = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def _message_text(message: ChatMessage) -> str:
    """The text of a LlamaIndex message's blocks (tool-call and thinking blocks are not text to read)."""
    parts: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif not isinstance(block, ToolCallBlock):
            parts.append({"type": getattr(block, "block_type", type(block).__name__)})
    return content_text(parts)


def _assistant_tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    calls = [
        {
            "id": b.tool_call_id or "",
            "type": "function",
            "function": {"name": b.tool_name, "arguments": b.tool_kwargs},
        }
        for b in message.blocks
        if isinstance(b, ToolCallBlock)
    ]
    if calls:
        return calls
    out = []
    for c in message.additional_kwargs.get("tool_calls") or []:
        if isinstance(c, dict):
            out.append(c)
        elif hasattr(c, "tool_name"):  # a ToolSelection
            out.append(
                {"id": c.tool_id, "type": "function", "function": {"name": c.tool_name, "arguments": c.tool_kwargs}}
            )
    return out


def to_template_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """LlamaIndex messages as the OpenAI-shaped dicts the chat template renders (tool calls included)."""
    out: list[Message] = []
    for m in messages:
        role = _ROLE.get(MessageRole(m.role), "user")
        msg: Message = {"role": role, "content": _message_text(m)}
        if role == "assistant":
            calls = _assistant_tool_calls(m)
            if calls:
                msg["tool_calls"] = calls
        elif role == "tool":
            msg["tool_call_id"] = m.additional_kwargs.get("tool_call_id", "")
            msg["name"] = m.additional_kwargs.get("name", "")
        out.append(msg)
    return out


class GlimpLlamaIndexLLM(FunctionCallingLLM):
    """A routed LLM for LlamaIndex: ``GlimpLlamaIndexLLM()`` (embedded default), ``(config=...)`` or
    ``(glimp=client)`` to share a running client. Engines load on first use, not at construction."""

    glimp: Glimp | None = Field(default=None, exclude=True, description="an existing client to share")
    config: GlimpConfig | str | None = Field(default=None, exclude=True, description="config to build a client from")
    router: Router | None = Field(default=None, exclude=True, description="an existing Router to wrap")
    model_name: str | None = Field(default=None, description="name in metadata; default: the configured small->large")
    temperature: float | None = Field(default=None, description="sampling temperature (0 = greedy)")
    max_tokens: int | None = Field(default=None, description="tokens per answer (LLMMetadata.num_output)")
    top_p: float | None = None
    seed: int | None = None
    threshold: float | None = Field(default=None, description="entropy threshold (nats) above which a step goes large")
    stop: list[str] | None = Field(default=None, description="stop strings; the output is cut before the first")
    timeout: float | None = Field(default=None, description="deadline per routed request, seconds")
    context_window: int | None = Field(default=None, description="override; default: read from the engines")

    _client: Glimp = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _build_glimp_client(self) -> GlimpLlamaIndexLLM:
        self._client = resolve_glimp(self.glimp, self.config, self.router)
        self._owns_client = self.glimp is None  # a client around router= closes that router's engines
        return self

    @classmethod
    def class_name(cls) -> str:
        return "GlimpLlamaIndexLLM"

    @property
    def client(self) -> Glimp:
        return self._client

    @property
    def model_label(self) -> str:
        return self.model_name or pair_label(self._client)

    def close(self) -> None:
        """Release the engines of a client this adapter built; a shared one (``glimp=``) is left to its owner."""
        if self._owns_client:
            self._client.close()

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
            kwargs["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in calls
            ]
        if answer.invalid_tool_calls:
            kwargs["invalid_tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments, "error": c.error}
                for c in answer.invalid_tool_calls
            ]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=kwargs)

    def _chat_response(self, answer: ChatAnswer, delta: str | None = None) -> ChatResponse:
        return ChatResponse(message=self._assistant(answer), raw=self._raw(answer.result), delta=delta)

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
            result = piece.answer.result
            return CompletionResponse(text=result.text, delta=piece.text, raw=self._raw(result))
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

        def gen() -> Generator[ChatResponse, None, None]:
            for piece in turn.stream(self._client.stream(turn.request)):
                yield self._chat_piece(piece)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        turn = self._prepare_chat(messages, kwargs)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            async for piece in turn.astream(self._client.astream(turn.request)):
                yield self._chat_piece(piece)

        return gen()

    # ---------------------------------------------------------------------------- completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self._client.generate(self._prepare_complete(prompt, formatted, kwargs))
        return CompletionResponse(text=result.text, raw=self._raw(result))

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = await self._client.agenerate(self._prepare_complete(prompt, formatted, kwargs))
        return CompletionResponse(text=result.text, raw=self._raw(result))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = self._prepare_complete(prompt, formatted, kwargs)

        def gen() -> Generator[CompletionResponse, None, None]:
            for piece in text_turn(request).stream(self._client.stream(request)):
                yield self._completion_piece(piece)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        request = self._prepare_complete(prompt, formatted, kwargs)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            async for piece in text_turn(request).astream(self._client.astream(request)):
                yield self._completion_piece(piece)

        return gen()

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
        """Tools as OpenAI tool dicts for the chat template; ``tool_required`` forces a call."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": [t.metadata.to_openai_tool() for t in tools] or None,
            "tool_required": tool_required,
            **kwargs,
        }

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first call unless parallel calls were allowed (as LlamaIndex's OpenAI adapter)."""
        if allow_parallel_tool_calls:
            return response
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if len(calls) > 1:
            response.message.blocks = [
                b for b in response.message.blocks if not isinstance(b, ToolCallBlock) or b is calls[0]
            ]
            response.message.additional_kwargs["tool_calls"] = response.message.additional_kwargs["tool_calls"][:1]
        return response

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
