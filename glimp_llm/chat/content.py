"""The text of a message's content: one flattening of OpenAI content parts for every front end.

Glimp models read text. A content part is ``{"type": "text", "text": ...}`` (the type may be left out);
parts that carry the model's own earlier reasoning or call bookkeeping (``thinking``, ``reasoning``,
``tool_use``, ...) are not text the model should read again and are skipped; anything else (an image, a
file, audio) is refused with the fix, rather than silently dropped: an answer about an image the model
never saw is worse than an error. Text parts are joined with a newline, as vLLM and the adapters did.
"""

from __future__ import annotations

import json
from typing import Any

from glimp_llm.errors import InvalidRequestError

SKIPPED_PART_TYPES = frozenset({"tool_use", "tool_call", "reasoning", "thinking", "function_call"})
#: OpenAI roles that chat templates know by another name (newer OpenAI clients send system prompts as developer)
ROLE_ALIASES = {"developer": "system", "function": "tool"}


def template_role(role: Any) -> Any:
    """The role a chat template knows for an OpenAI ``role``."""
    return ROLE_ALIASES.get(role, role) if isinstance(role, str) else role


def template_message(message: Any) -> Any:
    """``message`` with its role as templates know it (a copy when it changes). Anything malformed is left as
    it is, for the template's own check to name."""
    if isinstance(message, dict) and message.get("role") in ROLE_ALIASES:
        return {**message, "role": template_role(message["role"])}
    return message


def json_arguments(arguments: Any) -> Any:
    """Tool-call ``arguments`` as the object they encode (OpenAI sends a JSON string; ``""`` and ``None`` are
    none; anything else is returned as it is). Raises ``ValueError`` for a string that is not JSON."""
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        return json.loads(arguments) if arguments.strip() else {}
    return arguments


def history_arguments(arguments: Any) -> Any:
    """A history call's arguments for a template: the object they encode, or the text when it is not JSON."""
    try:
        return json_arguments(arguments)
    except ValueError:
        return arguments


def content_text(content: Any) -> str:
    """``content`` (a string, ``None`` or a list of content parts) as the text the template renders."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list | tuple):
        raise InvalidRequestError(f"message content must be a string or a list of parts; got {type(content).__name__}")
    return "\n".join(text for part in content if (text := part_text(part)))


def part_text(part: Any) -> str:
    """The text of one content part ("" for a part the model skips)."""
    if not isinstance(part, dict):
        raise InvalidRequestError(
            f"a content part must be an object like {{'type': 'text', 'text': ...}}; got {part!r:.60}"
        )
    kind = part.get("type")
    if isinstance(kind, str) and kind in SKIPPED_PART_TYPES:
        return ""
    if not (kind == "text" or (kind is None and "text" in part)):
        raise InvalidRequestError(
            f"glimp models read text only; a message has a {kind!r:.40} content part. "
            "Send text (describe images or files in words)"
        )
    text = part.get("text")
    if not isinstance(text, str | None):
        raise InvalidRequestError(f"a content part's 'text' must be a string; got {type(text).__name__}")
    return text or ""
