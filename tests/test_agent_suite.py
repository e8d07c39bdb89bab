"""The agent task suite (benchmarks/agent_suite) and the plain-agent test of issue 14, on scripted engines.

The harness tests check that a task's outcome is judged right: a pass, a wrong number, an empty final
message, a loop of identical calls ended by the turn limit (reason ``loop``, the repeats counted), an
error recorded instead of raised, resumption from the JSONL records, and the CLI's outputs.

``test_plain_agent_answers_after_one_tool_call`` is the test issue 14 asks for: a plain
``create_agent(ChatGlimp(...), tools=[multiply])``, no middleware, on scripted engines that behave like the
default pair did: the small model glimpses ``<tool_call>`` at low entropy in every turn and repeats the call
it has already seen answered; the large model calls once, then answers. It must end with a non-empty answer
after exactly one tool call."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require

require("langchain", "the agent suite runs LangChain agents (langchain extra)")


from langchain.agents import create_agent  # noqa: E402
from langchain_core.messages import AIMessage, ToolMessage  # noqa: E402
from langgraph.errors import GraphRecursionError  # noqa: E402

from benchmarks.agent_suite import configs as cfgs  # noqa: E402
from benchmarks.agent_suite import report  # noqa: E402
from benchmarks.agent_suite.__main__ import main as cli  # noqa: E402
from benchmarks.agent_suite.harness import (  # noqa: E402
    Record,
    RecordStore,
    check_answer,
    numbers_in,
    recursion_limit,
    run_suite,
    run_task,
)
from benchmarks.agent_suite.scripted import (  # noqa: E402
    ScriptedSource,
    blind_turns,
    call_text,
    oracle_turns,
    turn_scripted_engine,
)
from benchmarks.agent_suite.tasks import BY_ID, TASKS, Task, select  # noqa: E402
from benchmarks.agent_suite.tools import TOOLS, call, multiply  # noqa: E402
from glimp_llm import RouterConfig  # noqa: E402
from glimp_llm.integrations.langchain import ChatGlimp  # noqa: E402
from glimp_llm.router import Router  # noqa: E402

ISSUE = BY_ID["mul-37x23"]
TWO_CALLS = BY_ID["mul-add"]


def one(task: Task, overrides: dict[str, Any], **source: Any) -> Record:
    """``task`` under one configuration on scripted engines (blind small, oracle large unless given)."""
    src = ScriptedSource({"c": overrides}, **source)
    try:
        return run_task("c", task, src.model("c", task))
    finally:
        src.close()


# ------------------------------------------------------------------------------------ the tasks
def test_at_least_20_tasks_with_unique_ids_and_answers_their_plans_produce() -> None:
    assert len(TASKS) >= 20 and len(BY_ID) == len(TASKS)
    assert {n for t in TASKS for n in t.tools} <= set(TOOLS) and len({n for t in TASKS for n, _ in t.plan}) >= 4
    for t in TASKS:
        results = [call(name, args) for name, args in t.plan]  # the reference plan, through the real tools
        assert float(results[-1]) == pytest.approx(t.expected), t.id
        assert {name for name, _ in t.plan} <= set(t.tools), t.id
        assert check_answer(t.question, t.expected) != "ok", f"{t.id}: the question contains its own answer"
        assert "\n" not in t.system and len(t.system) < 120  # one line a user would write


def test_the_issue_case_is_in_the_suite_verbatim() -> None:
    assert ISSUE.question == "What is 37 times 23? Use the tool."
    assert ISSUE.system == "Use the multiply tool for every multiplication, then state the result."
    assert ISSUE.tools == ("multiply",) and ISSUE.expected == 851


def test_tools_accept_what_models_write() -> None:
    assert call("multiply", {"a": "37", "b": 23}) == "851"
    assert call("convert_units", {"value": 3, "from_unit": "feet", "to_unit": "inches"}) == "36"
    assert call("convert_units", {"value": 1, "from_unit": "kg", "to_unit": "m"}).startswith("error")
    assert call("lookup_price", {"item": "the Lanterns"}) == "18"
    assert "catalogue has" in call("lookup_stock", {"item": "unicorn"})


def test_select_by_ids_and_limit() -> None:
    assert [t.id for t in select("mul-add,mul-37x23")] == ["mul-add", "mul-37x23"]
    assert len(select(limit=3)) == 3
    with pytest.raises(ValueError, match="unknown task"):
        select("nope")


# ------------------------------------------------------------------------------------ the checker
@pytest.mark.parametrize(
    ("text", "expected", "reason"),
    [
        ("The result of 37 times 23 is 851.0.", 851, "ok"),
        ("It costs $1,234.50 in total.", 1234.5, "ok"),
        ("That is 3.20 km.", 3.2, "ok"),
        ("\\boxed{851}", 851, "ok"),
        ("37 times 23 is 850.", 851, "wrong"),
        ("I used the tool.", 851, "no_number"),
        ("  \n", 851, "empty"),
        # what the default pair wrote as its final message in a real run: a call and its result, as text
        ('{"name": "multiply", "arguments": {"a": 37, "b": 23}}\n{"response": "851"}', 851, "call_as_text"),
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 37', 851, "call_as_text"),
    ],
)
def test_check_answer(text: str, expected: float, reason: str) -> None:
    assert check_answer(text, expected) == reason


def test_numbers_in() -> None:
    assert numbers_in("a-1, 2,500 and .5 or 3.") == [1.0, 2500.0, 0.5, 3.0]


# ------------------------------------------------------------------------------------ the harness
def test_a_task_passes_with_the_calls_it_needs() -> None:
    r = one(TWO_CALLS, {"routing": "large-only"})
    assert r.success and r.reason == "ok", r
    assert (r.tool_calls, r.min_calls, r.repeated_calls, r.turns) == (2, 2, 0, 3)
    assert r.calls == [["multiply", {"a": 12, "b": 15}], ["add", {"a": 180, "b": 7}]]
    assert r.final == "The result is 187." and r.large_tokens > 0 and r.small_tokens == 0


def test_a_loop_of_identical_calls_ends_at_the_turn_limit_and_is_counted() -> None:
    r = one(ISSUE, {"routing": "small-only"})  # the blind small model repeats its call every turn
    assert not r.success and r.reason == "loop"
    turns = (recursion_limit(ISSUE) + 1) // 2  # model turns within the limit (the tool steps between them)
    assert r.tool_calls == turns and r.repeated_calls == turns - 1
    assert r.final == "" and r.large_tokens == 0


def test_wrong_and_empty_answers_are_failures_with_their_reason() -> None:
    wrong = one(
        ISSUE,
        {"routing": "large-only"},
        large_turns=lambda t: [call_text("multiply", {"a": 37, "b": 23}), "It is 850."],
    )
    assert (wrong.success, wrong.reason, wrong.tool_calls) == (False, "wrong", 1)
    empty = one(ISSUE, {"routing": "large-only"}, large_turns=lambda t: [call_text("multiply", {"a": 37, "b": 23}), ""])
    assert (empty.success, empty.reason, empty.final) == (False, "empty", "")


def test_an_error_is_recorded_not_raised() -> None:
    class Broken(ChatGlimp):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("engine on fire")

    src = ScriptedSource({"c": {}})
    model = src.model("c", ISSUE)
    broken = Broken(glimp=model.client)
    try:
        r = run_task("c", ISSUE, broken)
    finally:
        src.close()
    assert r.reason == "error" and "engine on fire" in (r.error or "") and r.turns == 0


def test_run_suite_resumes_from_its_records(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    overrides = {"large-only": {"routing": "large-only"}, "small-only": {"routing": "small-only"}}
    tasks = [ISSUE, TWO_CALLS]
    first = run_suite(["large-only"], tasks[:1], ScriptedSource(overrides), RecordStore(path))
    assert [r.task for r in first] == [ISSUE.id] and len(path.read_text().splitlines()) == 1
    with path.open("a") as f:
        f.write('{"config": "large-only", "task": "cut-by-a-kill"')  # a line an interrupted write left behind
    lines: list[str] = []
    store = RecordStore(path)
    again = run_suite(list(overrides), tasks, ScriptedSource(overrides), store, progress=lines.append)
    assert [(r.config, r.task) for r in again] == [(c, t.id) for c in overrides for t in tasks]
    assert sum("resumed" in line for line in lines) == 1  # the first record was not run again
    assert again[0] == first[0]
    assert len(RecordStore(path).records) == 4
    # other settings under the same name are not resumed as if they were the same configuration
    changed = {"large-only": {"routing": "large-only", "threshold": 0.5}}
    redo: list[str] = []
    run_suite(["large-only"], tasks[:1], ScriptedSource(changed), RecordStore(path), progress=redo.append)
    assert not any("resumed" in line for line in redo)


def test_summary_counts_and_standard_error() -> None:
    src = ScriptedSource({"large-only": {"routing": "large-only"}, "small-only": {"routing": "small-only"}})
    records = run_suite(["large-only", "small-only"], [ISSUE, TWO_CALLS], src, RecordStore(None))
    s = report.summaries(records, ["large-only", "small-only"])
    assert s["large-only"]["success_rate"] == 1.0 and s["large-only"]["success_se"] == 0.0
    assert s["large-only"]["tool_calls_mean"] == 1.5 and s["large-only"]["latency_vs_large"] == pytest.approx(1.0)
    small = s["small-only"]
    assert small["success"] == 0 and small["loops"] == 2 and small["tasks_with_repeats"] == 2
    assert small["repeated_calls"] == sum(r.repeated_calls for r in records if r.config == "small-only") > 0
    assert report.summarize([records[0], records[2]])["success_se"] == pytest.approx(0.5 / 2**0.5)
    md = report.markdown(s, records, {"large-only": {}, "small-only": {}}, {"tasks": 2})
    assert "| large-only | 1.00 ± 0.00 (2/2) |" in md and "| mul-37x23 | ok (1) | loop (5) |" in md


def test_configurations_are_valid_router_settings() -> None:
    for name, overrides in cfgs.CONFIGS.items():
        RouterConfig(**overrides)  # a misspelt field fails here, not after an hour of runs
        assert name in cfgs.DEFAULT_ORDER
    assert cfgs.parse_define('tau2={"threshold": 2}') == ("tau2", {"threshold": 2})
    name, o = cfgs.parse_define('fs=first-step+{"threshold": 2}')
    assert name == "fs" and o["first_step_large"] is True and o["threshold"] == 2
    name, o = cfgs.parse_define('vg=verify+guards+{"forced_entropy": 0.05}')  # a base name holding "+"
    assert o["verify"] is True and o["first_step_large"] is True and o["forced_entropy"] == 0.05
    with pytest.raises(ValueError, match="unknown configuration"):
        cfgs.resolve(["nope"])


def test_cli_dry_run_writes_json_markdown_and_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "r.jsonl"
    args = ["--dry-run", "--configs", "large-only,small-only", "--limit", "2", "--records", str(records)]
    assert cli([*args, "--json", str(tmp_path / "o.json"), "--md", str(tmp_path / "o.md")]) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["summary"]["large-only"]["success"] == 2 and data["summary"]["small-only"]["loops"] == 2
    assert len(data["records"]) == 4 and (tmp_path / "o.md").read_text().startswith("# Agent suite")
    err = capsys.readouterr().err
    assert "[small-only 2/2] FAIL" in err  # progress on screen
    assert cli(args) == 0 and "resumed" in capsys.readouterr().err
    assert cli(["--configs", "nope"]) == 2


def test_cli_plot_needs_matplotlib_and_says_so_before_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(SystemExit, match=r"pip install 'glimp-llm\[bench\]'"):
        cli(["--dry-run", "--limit", "1", "--records", str(tmp_path / "r.jsonl"), "--plot", str(tmp_path / "p.png")])
    assert not (tmp_path / "r.jsonl").exists()  # nothing ran


def test_cli_plot(tmp_path: Path) -> None:
    require("matplotlib", "the plot needs matplotlib (bench extra)")
    out = tmp_path / "p.png"
    assert (
        cli(
            [
                "--dry-run",
                "--configs",
                "large-only,small-only",
                "--limit",
                "1",
                "--records",
                str(tmp_path / "r"),
                "--plot",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ issue 14: a plain agent must answer
def _plain_agent_run(router_config: RouterConfig) -> tuple[list[Any], str | None]:
    """``create_agent(ChatGlimp(...), tools=[multiply])`` with the issue's prompt, nothing else; the small
    model repeats its call every turn, the large one calls once and then answers."""
    small = turn_scripted_engine(blind_turns(ISSUE), name="small", entropies=0.3)  # <tool_call> glimpsed at 0.3 nats
    large = turn_scripted_engine(oracle_turns(ISSUE), name="large")
    chat = ChatGlimp(router=Router(small, large, router_config))
    agent = create_agent(chat, tools=[multiply], system_prompt=ISSUE.system)
    messages: list[Any] = []
    stopped = None
    try:
        for state in agent.stream(
            {"messages": [("user", ISSUE.question)]}, config={"recursion_limit": 9}, stream_mode="values"
        ):
            messages = state["messages"]
    except GraphRecursionError:
        stopped = "the turn limit (9 graph steps) was reached"
    finally:
        chat.close()
    return messages, stopped


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="library-defaults"),
        pytest.param({"first_step_large": True}, id="first_step_large"),
    ],
)
def test_plain_agent_answers_after_one_tool_call(settings: dict[str, Any]) -> None:
    messages, stopped = _plain_agent_run(RouterConfig(**settings))
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    final = messages[-1] if messages else None
    summary = f"{len(calls)} tool calls {[(c['name'], c['args']) for c in calls]}; stopped by {stopped or 'the agent'}"
    assert stopped is None, f"the agent looped: {summary}"
    assert len(calls) == 1, summary
    assert [m.content for m in messages if isinstance(m, ToolMessage)] == ["851"]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.text.strip(), f"empty final answer: {summary}"
    assert check_answer(final.text, 851) == "ok", final.text
