"""The framework-free tool-call parsing, rendering and forcing both adapters share, and the stream filter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glimp_llm.chat.stream import HoldBack as StreamingText
from glimp_llm.chat.tools import (
    fallback_messages,
    format_tool_call,
    parse_tool_calls,
    tool_choice_prefill,
    tool_names,
)
from glimp_llm.chat_template import ChatTemplate
from glimp_llm.errors import InvalidRequestError

ADD = {"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {"type": "object"}}}
MUL = {"type": "function", "function": {"name": "mul", "description": "Multiply.", "parameters": {"type": "object"}}}


def test_qwen_blocks_multiple_calls_and_content() -> None:
    text = (
        'Let me compute.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
        '<tool_call>\n{"name": "mul", "arguments": "{\\"a\\": 3}"}\n</tool_call>'
    )
    parsed = parse_tool_calls(text, ["add", "mul"])
    assert [(c.name, c.arguments) for c in parsed.calls] == [("add", {"a": 1, "b": 2}), ("mul", {"a": 3})]
    assert parsed.content.strip() == "Let me compute."
    assert parsed.calls[0].id != parsed.calls[1].id


def test_a_call_written_as_a_javascript_object_literal_is_read() -> None:
    """Qwen2.5 0.5B, asked for a pydantic v1 schema, wrote its arguments with unquoted keys."""
    text = '<tool_call>\n{"name": "Joke", "arguments": {setup: "Why, cats: why?", punchline: "Because."}}\n</tool_call>'
    parsed = parse_tool_calls(text, ["Joke"])
    assert [(c.name, c.arguments) for c in parsed.calls] == [
        ("Joke", {"setup": "Why, cats: why?", "punchline": "Because."})
    ]
    assert parsed.invalid == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{a: 1, "b": {c: [1, {d: 2}]}}', '{"a": 1, "b": {"c": [1, {"d": 2}]}}'),
        ('{"s": "x, y: z", t : "{u: v}"}', '{"s": "x, y: z", "t" : "{u: v}"}'),  # strings untouched
        ('{"q": "say \\"a, b: c\\"", r: 1}', '{"q": "say \\"a, b: c\\"", "r": 1}'),  # escaped quotes
        ('{"a": 1}', '{"a": 1}'),  # valid JSON stays as it is
        ("[1, two, 3]", None),  # a bare word that is not a key stays a JSON error: the call is invalid
    ],
)
def test_javascript_object_literal_arguments_are_read_by_the_json5_parser(text: str, expected: str | None) -> None:
    """The unquoted keys of a JavaScript object literal (what the hand-written quote_bare_keys repaired) are
    read by json5; strings are never touched."""
    parsed = parse_tool_calls(f'<tool_call>\n{{"name": "f", "arguments": {text}}}\n</tool_call>', ["f"])
    if expected is None:
        assert parsed.calls == [] and len(parsed.invalid) == 1 and parsed.invalid[0].name == "f"
    else:
        assert [(c.name, c.arguments) for c in parsed.calls] == [("f", json.loads(expected))]


@pytest.mark.parametrize(
    "cut",
    [
        '{"name": "add", "arguments": {"a": 1',
        '{"name": "add", "arguments": {a: 1, b: ',
        "{name: 'add', arguments: {a: 1,",
        '{"name": "add", "arguments": {"a": 1}',
    ],
)
def test_a_truncated_call_stays_invalid_even_in_javascript_syntax(cut: str) -> None:
    """The budget can cut a call off mid-way: it must never run the tool with half its arguments."""
    for text in (f"<tool_call>\n{cut}", f"<tool_call>\n{cut}\n</tool_call>"):
        parsed = parse_tool_calls(text, ["add"])
        assert parsed.calls == [] and len(parsed.invalid) == 1, text
        assert parsed.invalid[0].name == "add" and "not valid JSON" in parsed.invalid[0].error


def test_code_fence_and_bare_json_and_parameters_key() -> None:
    fenced = '```json\n{\n  "name": "add",\n  "parameters": {"a": 1}\n}\n```'
    assert [c.name for c in parse_tool_calls(fenced, ["add"]).calls] == ["add"]
    bare = '{"function": {"name": "add", "arguments": {"a": 1}}}'
    parsed = parse_tool_calls(bare, ["add"])
    assert parsed.calls[0].arguments == {"a": 1} and parsed.content == ""


def test_ordinary_json_and_code_stay_content() -> None:
    for text in ('Here: {"x": 1}', '```json\n{"x": 1}\n```', '```python\nprint("hi")\n```'):
        parsed = parse_tool_calls(text, ["add"])
        assert not parsed.has_calls and parsed.content == text


def test_malformed_calls_become_invalid_not_exceptions() -> None:
    parsed = parse_tool_calls('<tool_call>\n{"name": "add", "arguments": {"a": 1,}\n</tool_call>', ["add"])
    assert parsed.calls == [] and len(parsed.invalid) == 1
    bad = parsed.invalid[0]
    assert bad.name == "add" and "not valid JSON" in bad.error and '"a": 1,' in bad.arguments
    no_name = parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>')
    assert no_name.invalid[0].error == "the tool call has no 'name'"
    not_object = parse_tool_calls('<tool_call>{"name": "add", "arguments": [1, 2]}</tool_call>')
    assert "must be a JSON object" in not_object.invalid[0].error


def test_unclosed_block_and_trailing_brace_are_recovered() -> None:
    parsed = parse_tool_calls('<tool_call>\n{"name": "add", "arguments": {"a": 1}}}\n')
    assert [(c.name, c.arguments) for c in parsed.calls] == [("add", {"a": 1})]


def test_prefill_forces_a_call_and_round_trips_through_the_parser() -> None:
    assert tool_choice_prefill(None, ["add"]) is None and tool_choice_prefill("auto", ["add"]) is None
    named = tool_choice_prefill("mul", ["add", "mul"])
    assert named is not None
    assert parse_tool_calls(named + '"a": 2}}\n</tool_call>').calls[0].arguments == {"a": 2}
    anyone = tool_choice_prefill("any", ["add", "mul"])
    assert anyone is not None and anyone.endswith('{"name": "')
    assert tool_choice_prefill("required", ["add"]) == tool_choice_prefill("add", ["add"])  # the only tool
    assert tool_choice_prefill({"type": "function", "function": {"name": "add"}}, ["add"]) is not None
    with pytest.raises(InvalidRequestError, match="not a bound tool"):
        tool_choice_prefill("sub", ["add", "mul"])
    with pytest.raises(InvalidRequestError, match="tool_choice must be"):
        tool_choice_prefill(3, ["add"])


def test_fallback_messages_render_calls_and_results_as_text() -> None:
    history = [
        {"role": "user", "content": "1+2?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}],
        },
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
    ]
    out = fallback_messages(history, [ADD, MUL])
    assert out[0]["role"] == "system" and '"name": "mul"' in out[0]["content"]
    assert out[2] == {"role": "assistant", "content": format_tool_call("add", {"a": 1})}
    assert out[3] == {"role": "user", "content": "<tool_response>\n3\n</tool_response>"}
    assert tool_names([ADD, MUL]) == ["add", "mul"]
    assert json.loads(format_tool_call("add", {"a": 1}).splitlines()[1]) == {"name": "add", "arguments": {"a": 1}}


@pytest.mark.parametrize(
    ("arguments", "rendered"),
    [('{"a": 1}', {"a": 1}), ({"a": 1}, {"a": 1}), ("", {}), (None, {}), ("{'a': 1", "{'a': 1")],
    ids=["json text", "object", "empty", "none", "not json"],
)
def test_history_calls_render_alike_with_and_without_template_tool_support(arguments: Any, rendered: Any) -> None:
    """A call in the history reads the same whichever way the model sees it: through a template that knows
    tools (Qwen2.5 writes ``arguments | tojson``) or as the fallback's text; unreadable arguments stay text."""
    template = (
        "{% for m in messages %}{% for c in m.tool_calls or [] %}{% set c = c.function %}"
        '{"name": "{{ c.name }}", "arguments": {{ c.arguments | tojson }}}{% endfor %}{% endfor %}'
    )
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": arguments}}
    history = [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    expected = {"name": "add", "arguments": rendered}
    assert json.loads(ChatTemplate(template).render(history, add_generation_prompt=False)) == expected
    assert json.loads(fallback_messages(history, None)[1]["content"].splitlines()[1]) == expected
    assert call["function"]["arguments"] == arguments  # the caller's history is not changed


def test_streaming_text_never_shows_a_stop_string_even_split_across_tokens() -> None:
    s = StreamingText(stops=["STOP"])
    shown = [s.push(t) for t in ["Hello ", "wor", "ld S", "TO", "P and more"]]
    assert "".join(shown) == "Hello world "
    assert s.finish("Hello world ") == ""


def test_streaming_text_releases_a_false_alarm_and_pauses_at_tool_calls() -> None:
    s = StreamingText(stops=["STOP"])
    assert s.push("a ST") == "a "
    assert s.push("ART") == "START"
    t = StreamingText(pause_markers=["<tool_call>"], pause_on_leading_json=True)
    assert t.push("  ") == ""
    assert t.push("Sure. <tool") == "  Sure. "
    assert t.push('_call>{"name"') == ""
    assert t.finish("  Sure. \n") == "\n"
    j = StreamingText(pause_on_leading_json=True)
    assert j.push(' {"name": ') == "" and j.finish("") == ""
    listed = StreamingText(pause_on_leading_json=True)  # a bare JSON list of calls is held back too
    assert listed.push('[{"name": "add"') == "" and listed.finish("") == ""


async def test_openai_role_aliases_render_as_the_template_knows_them() -> None:
    """Newer OpenAI clients send the system prompt as ``developer``; LangChain, LlamaIndex and ``glimp serve`` all
    render through the chat layer, which names it ``system`` (and ``function`` ``tool``), and a configured system
    prompt does not add a second one."""
    from glimp_llm.chat.prompt import render_prompt
    from glimp_llm.config import RouterConfig
    from glimp_llm.engines.scripted import ScriptedEngine
    from glimp_llm.router import RouteRequest

    engine = ScriptedEngine("Hi.")
    await engine.start()
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    text = await render_prompt(RouteRequest(messages=messages), engine, RouterConfig(system_prompt="Default."))
    assert text.startswith("<|system|>\nBe brief.<|end|>")
    assert "developer" not in text and "Default." not in text
    assert messages[0]["role"] == "developer"  # the caller's messages are not changed
    direct = await engine.render_chat([{"role": "developer", "content": "Be brief."}], add_generation_prompt=False)
    assert direct.startswith("<|system|>\n")
    with pytest.raises(InvalidRequestError, match="must be a dict with a 'role'"):  # still the typed error
        await render_prompt(RouteRequest(messages=[{"content": "no role"}]), engine, RouterConfig())
    await engine.close()


def test_call_arguments_have_one_wire_encoding_that_keeps_non_ascii() -> None:
    """LangChain, LlamaIndex and glimp serve all send a call's arguments as ``arguments_json``: the model's
    history then shows the text it wrote, not ``\\u`` escapes (LlamaIndex escaped them before)."""
    (call,) = parse_tool_calls(
        '<tool_call>\n{"name": "add", "arguments": {"city": "Zürich"}}\n</tool_call>', ["add"]
    ).calls
    assert call.arguments_json == '{"city": "Zürich"}'
    assert json.loads(call.arguments_json) == call.arguments
