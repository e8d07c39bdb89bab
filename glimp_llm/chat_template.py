"""A model's own chat template (Jinja, as shipped in GGUF metadata or a HF tokenizer config).

The template is rendered in a sandbox with the helpers HF templates expect (``raise_exception``,
``tojson``, ``strftime_now``), so tool definitions, tool calls and tool results come out exactly as the
model was trained to see them (Qwen2.5 renders tools into its system turn and answers with
``<tool_call>`` JSON blocks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from glimp_llm.chat.content import content_text, history_arguments, template_role
from glimp_llm.errors import ConfigurationError, InvalidRequestError

#: Used when a model ships no template at all (ChatML, the most widespread convention).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise InvalidRequestError(f"the model's chat template rejected the messages: {message}")


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except Exception as exc:  # jinja2.TemplateSyntaxError and friends
        raise ConfigurationError(f"the model's chat template does not compile: {exc}") from exc


class ChatTemplate:
    """Renders messages with one model's template."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or CHATML_TEMPLATE
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.source)

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.source

    @property
    def is_thinking(self) -> bool:
        """Whether the template knows a ``<think>`` block (reasoning models such as Qwen3, R1)."""
        return "<think>" in self.source

    def render(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        normalized = template_messages(messages)
        try:
            return str(
                self._template.render(
                    messages=normalized,
                    tools=list(tools) if tools else None,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            )
        except InvalidRequestError:
            raise
        except Exception as exc:
            raise InvalidRequestError(f"the model's chat template failed on these messages: {exc}") from exc


def template_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """``messages`` as Jinja chat templates expect them, for every engine that renders one itself (this
    module's :class:`ChatTemplate`, and the HF tokenizer of the TensorRT-LLM driver): OpenAI messages carry
    content parts and JSON-string tool-call arguments, which a template would print as a Python list or
    encode twice (Qwen2.5 writes ``tool_call.arguments | tojson``)."""
    if not messages:
        raise InvalidRequestError("no messages: pass at least one user message")
    return [_normalize(m) for m in messages]


def _normalize(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``message`` as HF templates expect it: content as text, tool-call arguments as a mapping.
    Nothing the caller holds is changed (the nested ``tool_calls`` are copied before their arguments are
    parsed): an agent's history is rendered again on every turn."""
    if not isinstance(message, dict) or "role" not in message:
        raise InvalidRequestError(f"a chat message must be a dict with a 'role'; got {message!r:.80}")
    out = dict(message)
    out["role"] = template_role(out["role"])
    out["content"] = content_text(out.get("content"))
    if out.get("tool_calls"):
        out["tool_calls"] = [_normalize_call(call) for call in out["tool_calls"]]
    return out


def _normalize_call(call: Any) -> Any:
    """A copy of a tool call (or of its nested ``function``) with JSON ``arguments`` parsed into a mapping."""
    if not isinstance(call, dict):
        return call
    call = dict(call)
    if isinstance(call.get("function"), dict):
        call["function"] = _normalize_call(call["function"])
    elif "arguments" in call:
        call["arguments"] = history_arguments(call["arguments"])
    return call
