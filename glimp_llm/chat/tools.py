"""Tool calling through a model's own chat template, for the adapters and ``glimp serve`` alike.

Rendering: tools travel as OpenAI tool dicts (``{"type": "function", "function": {"name", "description",
"parameters"}}``) into the chat template, which renders them the way the model was trained (Qwen2.5 puts
them in its system turn and asks for ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks).
For a template that knows no tools (SmolLM2), :func:`fallback_messages` writes the same instruction into a
system message and turns earlier tool calls and results into text, so any instruct model sees one
coherent convention.

Forcing a call (``tool_choice="any"``/``"required"``/a tool name): :func:`tool_choice_prefill` returns the
beginning of the assistant's answer (``<tool_call>\\n{"name": "``), which the adapter sends as part of the
prompt. The model then *continues* a call instead of deciding whether to make one; the prefill is put back
in front of the output before parsing.

Parsing (:func:`parse_tool_calls`) accepts what small models actually write: ``<tool_call>`` blocks (one or
several, closing tag optional at the very end), the same JSON in a Markdown code fence, or a bare JSON
object as the whole answer; ``arguments`` or ``parameters``, as an object or a JSON string; and the
OpenAI ``{"function": {...}}`` shape. Inside a ``<tool_call>`` block, a call written as a JavaScript object
literal (unquoted keys, single quotes, a trailing comma: Qwen2.5 0.5B does this) is read with ``json5``, a
maintained JSON5 *parser*: unlike a repair library (``json-repair`` closes what a cut-off call left open,
``dirtyjson`` is unmaintained since 2022) it refuses truncated input, so a call the budget cut off stays
invalid instead of running a tool with half its arguments. JSON that cannot be read becomes an
:class:`InvalidToolCall` with the raw text and the reason, never an exception, so an agent can show the
model its mistake.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import json5

from glimp_llm.chat.content import content_text, history_arguments, json_arguments
from glimp_llm.engines.base import Message
from glimp_llm.errors import InvalidRequestError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
STREAM_PAUSE_MARKERS = (TOOL_CALL_OPEN, "```")
"""Where streamed content stops while tools are bound: what follows may be a call, parsed at the end."""

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|tool_call)?[ \t]*\n?(.*?)```", re.DOTALL)
_NAME = re.compile(r"""["']?\bname["']?\s*:\s*["']([^"']+)["']""")


def new_tool_call_id() -> str:
    """Small models write no call ids; frameworks need one to pair results with calls."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ParsedToolCall:
    """A call the model made: the tool's name and its arguments as a JSON object."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_tool_call_id)

    @property
    def arguments_json(self) -> str:
        """The arguments as OpenAI's wire text, one encoding for every front end (non-ASCII kept as is)."""
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class InvalidToolCall:
    """Something that was meant as a call but cannot be used: the raw text and why, and the whole
    ``<tool_call>`` block as the model wrote it (``text``; where a front end can only show text)."""

    name: str | None
    arguments: str
    error: str
    id: str = field(default_factory=new_tool_call_id)
    text: str = ""


@dataclass(frozen=True)
class ToolCallParse:
    """The answer split into the text the user sees and the calls the model made."""

    content: str
    calls: list[ParsedToolCall]
    invalid: list[InvalidToolCall]

    @property
    def has_calls(self) -> bool:
        return bool(self.calls or self.invalid)


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The names of OpenAI-shaped tool dicts."""
    functions = [t.get("function", t) for t in tools or ()]
    return [fn["name"] for fn in functions if isinstance(fn, Mapping) and isinstance(fn.get("name"), str)]


# ----------------------------------------------------------------------------------- parsing
def parse_tool_calls(text: str, known_tools: Collection[str] | None = None) -> ToolCallParse:
    """Split ``text`` into content and tool calls (see the module docstring for the accepted forms).

    ``<tool_call>`` blocks are always calls. A code fence or a bare JSON answer is a call only when it is
    call-shaped (``name`` plus ``arguments``/``parameters``); with extra keys it must also name one of
    ``known_tools``. Ordinary JSON in an answer stays content.
    """
    calls: list[ParsedToolCall] = []
    invalid: list[InvalidToolCall] = []
    if TOOL_CALL_OPEN in text:
        for block in _BLOCK.finditer(text):
            fenced = _FENCE.search(body := block.group(1))
            before = len(invalid)
            _read_call_body(fenced.group(1) if fenced else body, calls, invalid)
            invalid[before:] = [dataclasses.replace(c, text=block.group(0)) for c in invalid[before:]]
        return ToolCallParse(_content(_BLOCK.sub("", text)), calls, invalid)

    def fence(match: re.Match[str]) -> str:
        found = _as_calls(match.group(1), known_tools)
        if found is None:
            return match.group(0)
        calls.extend(found)
        return ""

    content = _FENCE.sub(fence, text)
    if calls:
        return ToolCallParse(_content(content), calls, invalid)
    bare = _as_calls(text, known_tools)
    if bare:
        return ToolCallParse("", bare, invalid)
    return ToolCallParse(text, [], [])


def _content(text: str) -> str:
    return text if text.strip() else ""


def _as_calls(text: str, known_tools: Collection[str] | None) -> list[ParsedToolCall] | None:
    """``text`` read as one call or a list of calls, or None when it is not (only) that."""
    try:
        data = json.loads(text.strip())
    except ValueError:
        return None
    items = data if isinstance(data, list) else [data]
    out: list[ParsedToolCall] = []
    for item in items:
        if not _call_shaped(item):
            return None
        call = _call_from_obj(item)
        if not isinstance(call, ParsedToolCall):
            return None
        if known_tools is not None and call.name not in known_tools and set(item) - {"name", "arguments", "parameters"}:
            return None
        out.append(call)
    return out or None


def _call_shaped(item: Any) -> bool:
    """``{"name": ..., "arguments"|"parameters": {...}}`` or the OpenAI ``{"function": {...}}`` shape.

    A JSON object of exactly this shape is a call even when it names a tool that does not exist (small
    models invent names): the framework then tells the model which tools exist, which is how agents
    recover. Any other JSON stays content."""
    if not isinstance(item, dict):
        return False
    function = item.get("function")
    fn = function if isinstance(function, dict) else item
    return isinstance(fn.get("name"), str) and ("arguments" in fn or "parameters" in fn)


def _read_call_body(body: str, calls: list[ParsedToolCall], invalid: list[InvalidToolCall]) -> None:
    raw = body.strip()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        data = _first_call_object(raw)
        if data is None:
            m = _NAME.search(raw)
            invalid.append(InvalidToolCall(m.group(1) if m else None, raw, f"the tool call is not valid JSON: {exc}"))
            return
    for item in data if isinstance(data, list) else [data]:
        result = _call_from_obj(item, raw=raw)
        (calls if isinstance(result, ParsedToolCall) else invalid).append(result)  # type: ignore[arg-type]


def _first_call_object(text: str) -> Any:
    """The first complete call-shaped object in ``text``, read as JSON5 (models add words or a stray brace
    around a call, and write keys unquoted). Only an object with a ``name`` (or OpenAI's ``function``)
    counts, so the inner ``arguments`` object of a call cut off mid-way is not taken for the call."""
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj = json5.loads(text, start=i, consume_trailing=False)
        except ValueError:
            continue
        if isinstance(obj, dict) and ("name" in obj or isinstance(obj.get("function"), dict)):
            return obj
    return None


def _call_from_obj(obj: Any, raw: str | None = None) -> ParsedToolCall | InvalidToolCall:
    raw = raw if raw is not None else json.dumps(obj, ensure_ascii=False)
    if not isinstance(obj, dict):
        return InvalidToolCall(None, raw, "a tool call must be a JSON object with 'name' and 'arguments'")
    if isinstance(obj.get("function"), dict):  # OpenAI shape
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return InvalidToolCall(None, raw, "the tool call has no 'name'")
    given = obj.get("arguments", obj.get("parameters"))
    try:
        args = json_arguments(given)
    except ValueError as exc:
        return InvalidToolCall(name, given, f"the arguments of {name!r} are not valid JSON: {exc}")
    if not isinstance(args, dict):
        return InvalidToolCall(name, json.dumps(args), f"the arguments of {name!r} must be a JSON object")
    return ParsedToolCall(name, args)


# --------------------------------------------------------------------------------- rendering
def format_tool_call(name: str, arguments: Any) -> str:
    """One call as the model writes it (the Qwen/Hermes convention)."""
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{payload}\n{TOOL_CALL_CLOSE}"


def tools_instruction(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool instruction for a template that cannot render tools itself."""
    listing = "\n".join(json.dumps(dict(t), ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call>\nFunction results are given back inside <tool_response></tool_response> tags."
    )


def fallback_messages(messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None) -> list[Message]:
    """Messages for a template without tool support: the tool instruction joins (or becomes) the
    system message, assistant tool calls become ``<tool_call>`` text, tool results become user turns
    in ``<tool_response>`` tags (what such a model can read)."""
    out: list[Message] = []
    for m in messages:
        role = m.get("role")
        content = content_text(m.get("content"))
        if role == "assistant" and m.get("tool_calls"):
            parts = [content] if content else []
            for call in m["tool_calls"]:
                fn = call.get("function", call)
                parts.append(format_tool_call(str(fn.get("name", "")), history_arguments(fn.get("arguments"))))
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            out.append({"role": role, "content": content})
    if tools:
        instruction = tools_instruction(tools)
        if out and out[0].get("role") == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instruction}"}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


def tool_choice_prefill(tool_choice: Any, names: Sequence[str]) -> str | None:
    """The start of the answer that forces a call, or None when the model may answer in text.

    ``None``/``"auto"``/``False``: no forcing. ``"any"``/``"required"``/``True``: a call to some tool (to
    *the* tool when there is one). A tool name, or ``{"type": "function", "function": {"name": ...}}``:
    a call to that tool. ``"none"`` is handled by the caller (it drops the tools).
    """
    if tool_choice is None or tool_choice is False or tool_choice == "auto" or tool_choice == "none":
        return None
    name: str | None = None
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function", tool_choice)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str):
            raise InvalidRequestError(f"tool_choice dict names no function: {tool_choice!r:.120}")
    elif tool_choice is True or tool_choice in ("any", "required"):
        name = names[0] if len(names) == 1 else None
    elif isinstance(tool_choice, str):
        name = tool_choice
    else:
        raise InvalidRequestError(
            f"tool_choice must be 'auto', 'any', 'required', 'none', a tool name or a dict; got {tool_choice!r:.80}"
        )
    if name is None:
        return TOOL_CALL_OPEN + '\n{"name": "'
    if name not in names:
        raise InvalidRequestError(f"tool_choice names {name!r}, which is not a bound tool; bound tools: {names}")
    # the arguments are opened too: they must be an object, and small models otherwise write bare text
    return TOOL_CALL_OPEN + "\n" + json.dumps({"name": name})[:-1] + ', "arguments": {'
