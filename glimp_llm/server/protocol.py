"""The OpenAI request shapes ``glimp serve`` accepts, and the mapping of its answers back to OpenAI's.

Requests are validated by pydantic; fields OpenAI defines that routing cannot honour (``n > 1``, ``logprobs``,
``best_of``, ``echo``, ``suffix``) are rejected with 400 rather than ignored, and unknown fields are tolerated
(clients such as LangChain send a few vendor extras). The routing extension is the ``glimp`` object:

* in requests: ``{"glimp": {"threshold": 0.8}}`` overrides tau for that request;
* in responses: ``"glimp": {"finish_reason", "threshold", "mode", "usage", "timings", "steps": [...]}`` with one
  entry per step (model, entropy, entropy_kind, entropy_error_bound, tokens, text, ended_by, ...): the
  routing trace of :meth:`glimp_llm.trace.RoutedResult.to_json_dict` without the text (already in ``choices``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from glimp_llm.errors import InvalidRequestError
from glimp_llm.trace import RoutedFinishReason, RoutedResult

#: Why a routed request ended -> OpenAI's ``finish_reason``. The exact reason stays in ``glimp.finish_reason``.
FINISH_REASON: dict[RoutedFinishReason, str] = {
    "eos": "stop",
    "stop": "stop",
    "repetition": "stop",
    "length": "length",
    "cancelled": "stop",
}


class GlimpExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(None, description="tau (nats) for this request")


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
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

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def reject_unsupported(self) -> None:
        extra = self.model_extra or {}
        for name in ("logprobs", "top_logprobs", "best_of", "echo", "suffix"):
            value = extra.get(name)
            if value not in (None, False, 0, 1) or (name in ("echo", "suffix") and value):
                raise InvalidRequestError(f"{name} is not supported by the routed model; leave it out")
            if name == "best_of" and value not in (None, 1):
                raise InvalidRequestError("best_of is not supported by the routed model; leave it out")


class ChatRequest(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None

    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def prompt_chars(self) -> int:
        total = 0
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
        return total


class CompletionRequest(_Common):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequestError("send one prompt per request (a list of one string is accepted)")
            return self.prompt[0]
        return self.prompt


def trace(result: RoutedResult) -> dict[str, Any]:
    """The ``glimp`` extension field of a response: the routing trace without the text."""
    data = result.to_json_dict()
    data.pop("text", None)
    return data


def usage(result: RoutedResult) -> dict[str, int]:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
