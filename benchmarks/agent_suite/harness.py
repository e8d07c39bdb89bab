"""Run one task through a plain LangChain agent and judge it; run many, resumably.

The agent is exactly what a user builds: ``create_agent(ChatGlimp(config=...), tools=task_tools,
system_prompt=one_line)``. No middleware, no forced ``tool_choice``, no prompt tuned per model. What is
measured comes from the agent's own message history:

* success: a number in the final message equals the expected answer (:func:`check_answer`);
* tool calls, and *repeated identical calls* (same tool, same arguments as an earlier call of the run:
  the failure mode of issue 14, where the small model re-issues the call it already saw answered);
* an *empty* final message (the other half of that failure);
* ``loop``: the task's turn limit was reached (LangGraph's recursion limit), whatever the calls were;
* latency: wall time of the whole agent run, plus the routing trace summed over its model turns.

A task that raises is recorded with reason ``error`` (and the message), never aborts the suite.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.errors import GraphRecursionError

from benchmarks.agent_suite.tasks import Task

# Reasons a task ends, best first; everything but "ok" is a failure.
REASONS = ("ok", "wrong", "no_number", "call_as_text", "empty", "loop", "error")
EXTRA_TURNS = 3  # a task may take this many model turns beyond its reference plan (+1 for the answer)

# A tool call written as the answer's text (``{"name": "multiply", "arguments": ...}`` or a ``<tool_call>``
# block the parser could not read): the agent stops there and the user sees JSON, not an answer.
_CALL_TEXT = re.compile(r'<tool_call>|\{\s*"name"\s*:\s*"[^"]*"\s*,\s*"(?:arguments|parameters)"\s*:')
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?|(?<![\w.])-?\.\d+")


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text``: ``851``, ``851.0``, ``1,234``, ``$27.50``, ``-3``, ``\\boxed{42}``."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text)]


def check_answer(text: str, expected: float) -> str:
    """``ok`` when a number in the final message equals ``expected`` (relative tolerance 1e-6, so
    ``851.0`` and ``3.20`` count), ``no_number`` when it states none, ``wrong`` otherwise, ``empty``
    when there is no text at all, ``call_as_text`` when the message is a tool call written out as text
    (even one holding the right number: a user gets JSON, not an answer). The questions never contain
    their answer, so an echo does not pass."""
    if not text.strip():
        return "empty"
    if _CALL_TEXT.search(text):
        return "call_as_text"
    found = numbers_in(text)
    if not found:
        return "no_number"
    tol = 1e-6 * max(1.0, abs(expected))
    return "ok" if any(abs(x - expected) <= tol for x in found) else "wrong"


def recursion_limit(task: Task) -> int:
    """LangGraph counts each model call and each tool round as one step. A correct run needs
    ``2 * min_calls + 1``; a run past ``min_calls + EXTRA_TURNS`` tool rounds is a loop."""
    return 2 * (task.min_calls + EXTRA_TURNS) + 1


@dataclass
class Record:
    """One task run under one configuration: everything the summary needs, one JSON line."""

    config: str
    task: str
    success: bool
    reason: str
    expected: float
    final: str
    tool_calls: int
    min_calls: int
    repeated_calls: int
    invalid_calls: int
    tool_errors: int
    turns: int
    wall_s: float
    small_tokens: int = 0
    large_tokens: int = 0
    small_steps: int = 0
    large_steps: int = 0
    calls: list[list[Any]] = field(default_factory=list)  # [name, args] in order
    error: str | None = None
    fingerprint: str = ""
    started: float = 0.0
    load1: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def _call_key(name: str, args: Any) -> str:
    return json.dumps([name, args], sort_keys=True, default=str)


def judge(
    config: str, task: Task, messages: Sequence[BaseMessage], *, wall_s: float, failure: str | None, error: str | None
) -> Record:
    """A record from an agent's message history. ``failure`` is ``loop``/``error`` when the run did not end
    by itself; otherwise the last message is the final answer (an AI message without tool calls)."""
    seen: set[str] = set()
    calls: list[list[Any]] = []
    repeated = invalid = turns = 0
    totals = {"small_tokens": 0, "large_tokens": 0, "small_steps": 0, "large_steps": 0}
    for m in messages:
        if isinstance(m, AIMessage):
            turns += 1
            invalid += len(m.invalid_tool_calls)
            trace = m.response_metadata.get("glimp") or {}
            for k in totals:
                totals[k] += int(trace.get(k) or 0)
            for c in m.tool_calls:
                key = _call_key(c["name"], c.get("args"))
                repeated += key in seen
                seen.add(key)
                calls.append([c["name"], c.get("args")])
    tool_errors = sum(
        1
        for m in messages
        if isinstance(m, ToolMessage) and (m.status == "error" or str(m.content).startswith("error"))
    )
    final = ""
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage) and not last.tool_calls:
        final = last.text  # the text blocks of the content (langchain-core >= 1: a property)
    reason = failure or check_answer(final, task.expected)
    return Record(
        config=config,
        task=task.id,
        success=reason == "ok",
        reason=reason,
        expected=task.expected,
        final=final.strip()[:500],
        tool_calls=len(calls),
        min_calls=task.min_calls,
        repeated_calls=repeated,
        invalid_calls=invalid,
        tool_errors=tool_errors,
        turns=turns,
        wall_s=round(wall_s, 4),
        calls=calls,
        error=error,
        **totals,
    )


def run_task(config: str, task: Task, model: BaseChatModel) -> Record:
    """One plain agent run: ``create_agent(model, tools, system_prompt)``, the question, the turn limit."""
    agent = create_agent(model, tools=task.tool_objects(), system_prompt=task.system)
    messages: list[BaseMessage] = []
    failure = error = None
    started = time.time()
    t0 = time.perf_counter()
    try:
        # stream the state after every step, so a run cut by the limit still shows what it did
        for state in agent.stream(
            {"messages": [("user", task.question)]},
            config={"recursion_limit": recursion_limit(task)},
            stream_mode="values",
        ):
            messages = list(state["messages"])
    except GraphRecursionError:
        failure = "loop"
    except Exception as exc:  # a benchmark records failures, it does not stop on them
        failure, error = "error", f"{type(exc).__name__}: {exc}"[:1000]
    record = judge(config, task, messages, wall_s=time.perf_counter() - t0, failure=failure, error=error)
    record.started = started
    with contextlib.suppress(OSError, AttributeError):
        record.load1 = round(os.getloadavg()[0], 2)
    return record


# ------------------------------------------------------------------------------------- models
class ModelSource(Protocol):
    """Where the chat model of a (configuration, task) comes from, and what identifies its settings."""

    def model(self, config: str, task: Task) -> BaseChatModel: ...

    def fingerprint(self, config: str) -> str: ...

    def close(self) -> None: ...


class GlimpSource:
    """``ChatGlimp(config=base.with_router(**overrides))``: one client per configuration, built when
    the configuration's first task needs it and closed when the next configuration starts (two clients
    of the CPU pair at once would double the memory and share the cores)."""

    def __init__(
        self, base: Any, overrides: dict[str, dict[str, Any]], *, max_tokens: int | None, timeout: float | None
    ):
        from glimp_llm import GlimpConfig

        self.base: GlimpConfig = base
        self.configs = {name: base.with_router(**o) for name, o in overrides.items()}  # validated up front
        self.max_tokens = max_tokens
        self.timeout = timeout
        self._current: tuple[str, Any] | None = None

    def fingerprint(self, config: str) -> str:
        import hashlib

        data = self.configs[config].model_dump_json() + f"|max_tokens={self.max_tokens}"
        return hashlib.sha256(data.encode()).hexdigest()[:12]

    def model(self, config: str, task: Task) -> BaseChatModel:
        from glimp_llm.integrations.langchain import ChatGlimp

        if self._current is None or self._current[0] != config:
            self.close()
            chat = ChatGlimp(config=self.configs[config], max_tokens=self.max_tokens, timeout=self.timeout)
            chat.client.start()  # load the models now, so the first task's latency does not include it
            self._current = (config, chat)
        return self._current[1]

    def close(self) -> None:
        if self._current is not None:
            self._current[1].close()
            self._current = None


# ------------------------------------------------------------------------------------ records
class RecordStore:
    """Records as JSON lines, appended and flushed one by one: an interrupted run loses at most the task
    it was on, and the next run with the same file skips what is there (same configuration name, task,
    and fingerprint of settings and task text; records made with other settings are kept but ignored)."""

    def __init__(self, path: str | os.PathLike[str] | None, *, fresh: bool = False) -> None:
        self.path = Path(path) if path else None
        self.records: list[Record] = []
        self.ignored = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh and self.path.exists():
                self.path.unlink()
            if self.path.exists():
                text = self.path.read_text(encoding="utf-8")
                if text and not text.endswith("\n"):  # a write cut by a kill: end it, or the next record joins it
                    with self.path.open("a", encoding="utf-8") as f:
                        f.write("\n")
                for n, line in enumerate(text.splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        self.records.append(Record.from_dict(json.loads(line)))
                    except (json.JSONDecodeError, TypeError) as exc:  # a line cut by a kill: skip it
                        print(f"note: {self.path}:{n} is not a record ({exc}); skipped", file=sys.stderr)

    def done(self, config: str, task: str, fingerprint: str) -> Record | None:
        for r in self.records:
            if r.config == config and r.task == task and r.fingerprint == fingerprint:
                return r
        return None

    def add(self, record: Record) -> None:
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())


def fingerprint_of(source: ModelSource, config: str, task: Task) -> str:
    return f"{source.fingerprint(config)}:{task.fingerprint()}"


def run_suite(
    configs: Iterable[str],
    tasks: Sequence[Task],
    source: ModelSource,
    store: RecordStore,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Every task under every configuration, configuration by configuration (one client at a time),
    skipping what ``store`` already holds. Returns this run's records in the order of the arguments,
    resumed ones included."""
    out: list[Record] = []
    say = progress or (lambda _line: None)
    try:
        for config in configs:
            for i, task in enumerate(tasks, 1):
                fp = fingerprint_of(source, config, task)
                record = store.done(config, task.id, fp)
                if record is not None:
                    say(f"[{config} {i}/{len(tasks)}] {task.id}: resumed ({record.reason})")
                else:
                    record = run_task(config, task, source.model(config, task))
                    record.fingerprint = fp
                    store.add(record)
                    say(_line(config, i, len(tasks), task, record))
                out.append(record)
            source.close()
    finally:
        source.close()
    return out


def _line(config: str, i: int, n: int, task: Task, r: Record) -> str:
    mark = "ok  " if r.success else "FAIL"
    extra = f" repeated={r.repeated_calls}" if r.repeated_calls else ""
    detail = r.error or (r.final[:60].replace("\n", " ") if r.final else "")
    return (
        f"[{config} {i}/{n}] {mark} {task.id:<14} {r.reason:<9} calls={r.tool_calls}/{r.min_calls}{extra} "
        f"turns={r.turns} {r.wall_s:6.1f}s  {detail}"
    )


def printer(stream: TextIO | None = None) -> Callable[[str], None]:
    """Progress lines, flushed at once (to stderr by default, looked up at each line: it may be redirected)."""

    def say(line: str) -> None:
        print(line, file=stream or sys.stderr, flush=True)

    return say


def standard_error(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")
