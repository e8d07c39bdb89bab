"""LangChain adapters: ``GlimpLLM`` (text in, text out) and ``ChatGlimp`` (messages, tools, agents).

Both are thin: they map LangChain's arguments onto a :class:`~glimp_llm.router.RouteRequest`, run it
through a :class:`~glimp_llm.Glimp` client (whose engines live on their own loop thread, so the sync
methods work from any thread and the async ones are real async on the caller's loop), and map the
:class:`~glimp_llm.trace.RoutedResult` back. No routing decision is made here.

* Construction never loads a model: ``ChatGlimp()`` (the embedded default pair), ``ChatGlimp(config=...)``
  (a :class:`~glimp_llm.GlimpConfig` or a config file path), or ``ChatGlimp(glimp=client)`` to share one
  running client between several adapters (the engines are loaded once).
* ``stop`` is honoured and excluded from the output, also while streaming (a partial stop string is held
  back until the next token decides).
* Token usage: ``llm_output["token_usage"]`` (``GlimpLLM``) and ``AIMessage.usage_metadata`` (``ChatGlimp``,
  on exactly one chunk when streaming).
* The routing trace (steps, which model wrote each, glimpse entropies, small/large token counts) is in
  ``generation_info["glimp"]`` / ``response_metadata["glimp"]``, so it is part of the run outputs every
  LangChain callback handler and LangSmith trace records.

Tool calling (``ChatGlimp.bind_tools``): answers are parsed into ``AIMessage.tool_calls`` (unreadable calls
into ``invalid_tool_calls``) and tool results are rendered back through the model's own template. Rendering,
forcing and parsing are :mod:`glimp_llm.chat` (shared with the LlamaIndex adapter and ``glimp serve``); this
module only maps LangChain's types onto it and back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

try:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel, BaseLLM, LanguageModelInput
    from langchain_core.language_models.base import LangSmithParams
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
    from langchain_core.outputs import (
        ChatGeneration,
        ChatGenerationChunk,
        ChatResult,
        Generation,
        GenerationChunk,
        LLMResult,
    )
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langchain_core.utils.json import parse_partial_json
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "glimp_llm.integrations.langchain needs langchain-core: pip install 'glimp-llm[langchain]'"
    ) from exc

from pydantic import Field, model_validator

from glimp_llm._version import __version__
from glimp_llm.chat.content import content_text
from glimp_llm.chat.tools import InvalidToolCall, ParsedToolCall, tool_choice_prefill, tool_names
from glimp_llm.chat.turn import ChatAnswer, ChatTurn, StreamPiece, prepare, request_options, text_turn, usage
from glimp_llm.engines.base import Message
from glimp_llm.errors import InvalidRequestError
from glimp_llm.integrations._common import PROVIDER, GlimpFields, routing_trace
from glimp_llm.router import RouteRequest
from glimp_llm.trace import RoutedResult

__all__ = ["ChatGlimp", "GlimpLLM"]


class _LangChainFields(GlimpFields):
    """What both LangChain models add to the shared fields: LangChain's cache key, LangSmith parameters,
    token counting and the integration version."""

    streaming: bool = Field(default=False, description="stream tokens internally on invoke (callbacks see them)")
    _ls_model_type: ClassVar[Literal["llm", "chat"]]
    if TYPE_CHECKING:  # a field of LangChain's models
        custom_get_token_ids: Callable[[str], list[int]] | None

    @model_validator(mode="after")
    def _add_glimp_version(self) -> Any:
        add = getattr(self, "_add_version", None)  # langchain-core >= 1.5 records integration versions
        if callable(add):
            add("glimp-llm", __version__)
        return self

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Everything that changes what a prompt produces: LangChain's cache key and the traced invocation."""
        cfg = self._client.config or self._client.router.config  # adopted engines: named by model_label
        return {
            "model_name": self.model_label,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "threshold": self.threshold,
            "stop": list(self.stop) if self.stop else None,
            "config_sha256": hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16],
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=str(kwargs.get("model") or self.model_label),
            ls_model_type=self._ls_model_type,
        )
        options = request_options(self, kwargs, stop)  # what the call is routed with
        if "temperature" in options:
            params["ls_temperature"] = options["temperature"]
        if "max_tokens" in options:
            params["ls_max_tokens"] = options["max_tokens"]
        if "stop" in options:
            params["ls_stop"] = list(options["stop"])
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the small model's own tokenizer (the LangChain default would fetch GPT-2), unless
        ``custom_get_token_ids`` is set."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return self._client.tokenize(text)


def _unrepairable(raw: str | None) -> str | None:
    """The text of an invalid call, as a tool-call chunk's ``args`` that stays invalid.

    LangChain re-parses streamed ``args`` with ``parse_partial_json``, which closes what a truncated call
    left open: ``{"name": "add", "arguments": {"a": 1`` would come back as a *valid* call (with the whole
    block as its arguments) while ``invoke`` reports it in ``invalid_tool_calls``. Text it would repair into
    an object is passed as a JSON string instead, which it keeps invalid.
    """
    if not raw:
        return raw
    try:
        repaired = parse_partial_json(raw)
    except ValueError:
        return raw
    return json.dumps(raw, ensure_ascii=False) if isinstance(repaired, dict) else raw


# ================================================================================= GlimpLLM
class GlimpLLM(_LangChainFields, BaseLLM):
    """A routed text LLM. ``prompts`` of one ``generate``/``batch`` call are routed *concurrently*.

    By default each prompt is sent as one user message through the model's chat template (what instruct
    models expect); ``raw_prompt=True`` continues the text exactly as given.

    Note on ``batch(..., config={"max_concurrency": k})``: LangChain splits the inputs into groups of
    ``k`` and calls ``generate`` per group in turn, so ``k`` is the number routed at once.
    """

    raw_prompt: bool = Field(default=False, description="continue prompts as raw text instead of a user message")
    _ls_model_type = "llm"

    @property
    def _llm_type(self) -> str:
        return "glimp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, "raw_prompt": self.raw_prompt}

    def _request(self, prompt: str, stop: list[str] | None, kwargs: Mapping[str, Any]) -> RouteRequest:
        return RouteRequest(prompt=prompt, raw=self.raw_prompt, **request_options(self, kwargs, stop))

    @staticmethod
    def _info(result: RoutedResult) -> dict[str, Any]:
        return {"finish_reason": result.finish_reason, "glimp": routing_trace(result), "token_usage": usage(result)}

    def _result(self, outputs: Sequence[tuple[str, Mapping[str, Any]]]) -> LLMResult:
        """``(text, generation info)`` per prompt, streamed or not, as one LLMResult: the token usage and
        the routing counts are summed into ``llm_output``, the rest stays in each generation's info."""
        generations = []
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        routing = {"small_tokens": 0, "large_tokens": 0, "small_steps": 0, "large_steps": 0}
        for text, info in outputs:
            info = dict(info)
            for k, v in info.pop("token_usage").items():
                totals[k] += v
            for k in routing:
                routing[k] += info["glimp"][k]
            generations.append([Generation(text=text, generation_info=info)])
        return LLMResult(
            generations=generations,
            llm_output={"token_usage": totals, "model_name": self.model_label, "glimp": routing},
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if self.streaming and len(prompts) == 1 and run_manager is not None:
            # stream so that callbacks see tokens; the final chunk carries the whole result
            final = GenerationChunk(text="")
            for chunk in self._stream(prompts[0], stop=stop, run_manager=run_manager, **kwargs):
                final += chunk
            return self._result([(final.text, final.generation_info or {})])
        results = self._client.batch([self._request(p, stop, kwargs) for p in prompts])
        return self._result([(r.text, self._info(r)) for r in results])

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        if self.streaming and len(prompts) == 1 and run_manager is not None:
            final = GenerationChunk(text="")
            async for chunk in self._astream(prompts[0], stop=stop, run_manager=run_manager, **kwargs):
                final += chunk
            return self._result([(final.text, final.generation_info or {})])
        results = await self._client.abatch([self._request(p, stop, kwargs) for p in prompts])
        return self._result([(r.text, self._info(r)) for r in results])

    def _chunks(self, piece: StreamPiece) -> list[GenerationChunk]:
        chunks = [GenerationChunk(text=piece.text)] if piece.text else []
        if piece.answer is not None:
            chunks.append(GenerationChunk(text="", generation_info=self._info(piece.answer.result)))
        return chunks

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        request = self._request(prompt, stop, kwargs)
        for piece in text_turn(request).stream(self._client.stream(request)):
            for chunk in self._chunks(piece):
                if run_manager is not None:  # BaseLLM.stream() leaves token callbacks to the model
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        request = self._request(prompt, stop, kwargs)
        async for piece in text_turn(request).astream(self._client.astream(request)):
            for chunk in self._chunks(piece):
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk


# ================================================================================ ChatGlimp
def to_template_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages as the OpenAI-shaped dicts the chat template renders (tool calls included):
    LangChain's own conversion, with content flattened to text."""
    try:
        converted = convert_to_openai_messages(messages)
    except ValueError as exc:
        raise InvalidRequestError(
            f"cannot render these messages with the chat template ({exc}); "
            "use System/Human/AI/Tool messages (or ChatMessage with a role)"
        ) from exc
    # roles stay OpenAI's: the chat layer names them as templates do (developer -> system) for every front end
    return [{**m, "content": content_text(m["content"])} for m in converted]


class ChatGlimp(_LangChainFields, BaseChatModel):
    """A routed chat model with tool calling, for LangChain and LangGraph agents.

    >>> from langchain.agents import create_agent
    >>> agent = create_agent(ChatGlimp(), tools=[calculator])  # doctest: +SKIP
    """

    _ls_model_type = "chat"

    @property
    def _llm_type(self) -> str:
        return "glimp-chat"

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Prompt tokens exactly as the model sees them: the messages (and tools) through its template."""
        formatted = [convert_to_openai_tool(t) for t in tools] if tools else None
        rendered = self._client.render_chat(to_template_messages(messages), tools=formatted)
        return len(self.get_token_ids(rendered))

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (rendered by the model's chat template). ``tool_choice``: ``None``/``"auto"`` lets
        the model decide, ``"any"``/``"required"``/``True``/a tool name forces a call (by prefilling the
        answer with the opening of a call), ``"none"`` hides the tools."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        tool_choice_prefill(tool_choice, tool_names(formatted))  # fail now, with the fix, on a bad choice
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    # ------------------------------------------------------------------------------ requests
    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]) -> ChatTurn:
        """Messages + bound tools -> a chat turn (no engine is touched: safe on the caller's loop)."""
        return prepare(
            to_template_messages(messages),
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            parallel_tool_calls=kwargs.get("parallel_tool_calls"),  # bind_tools(..., parallel_tool_calls=False)
            **request_options(self, kwargs, stop),
        )

    def _fields(self, answer: ChatAnswer) -> dict[str, Any]:
        """What the message of an answer (or the last chunk of a stream) carries besides its content."""
        result, tokens = answer.result, answer.usage
        return {
            "usage_metadata": UsageMetadata(
                input_tokens=tokens["prompt_tokens"],
                output_tokens=tokens["completion_tokens"],
                total_tokens=tokens["total_tokens"],
            ),
            "response_metadata": {
                "model_name": self.model_label,
                "model_provider": PROVIDER,
                "finish_reason": answer.finish_reason,
                "small_model": result.small_model,
                "large_model": result.large_model,
                "glimp": routing_trace(result),
            },
        }

    def _chat_result(self, answer: ChatAnswer) -> ChatResult:
        message = AIMessage(
            content=answer.content,
            tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in answer.tool_calls],
            invalid_tool_calls=[
                invalid_tool_call(name=c.name, args=c.arguments, id=c.id, error=c.error)
                for c in answer.invalid_tool_calls
            ],
            **self._fields(answer),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(self, piece: StreamPiece) -> list[ChatGenerationChunk]:
        """A visible piece; after the last, the one chunk that carries calls, usage and metadata."""
        chunks = [ChatGenerationChunk(message=AIMessageChunk(content=piece.text))] if piece.text else []
        answer = piece.answer
        if answer is None:
            return chunks
        calls: list[tuple[ParsedToolCall | InvalidToolCall, str | None]]
        calls = [(c, c.arguments_json) for c in answer.tool_calls]
        calls += [(c, _unrepairable(c.arguments)) for c in answer.invalid_tool_calls]
        call_chunks = [tool_call_chunk(name=c.name, args=a, id=c.id, index=i) for i, (c, a) in enumerate(calls)]
        last = AIMessageChunk(content="", tool_call_chunks=call_chunks, chunk_position="last", **self._fields(answer))
        chunks.append(ChatGenerationChunk(message=last))
        return chunks

    # ------------------------------------------------------------------------------- calls
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = self._prepare(messages, stop, kwargs)
        return self._chat_result(turn.answer(self._client.generate(turn.request)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = self._prepare(messages, stop, kwargs)
        return self._chat_result(turn.answer(await self._client.agenerate(turn.request)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # No token callbacks here: BaseChatModel.stream() emits on_llm_new_token for every chunk itself.
        turn = self._prepare(messages, stop, kwargs)
        for piece in turn.stream(self._client.stream(turn.request)):
            yield from self._chunks(piece)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        turn = self._prepare(messages, stop, kwargs)
        async for piece in turn.astream(self._client.astream(turn.request)):
            for chunk in self._chunks(piece):
                yield chunk
