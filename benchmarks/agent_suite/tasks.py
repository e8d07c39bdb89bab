"""The agent tasks: a question, the tools bound for it, the exact answer, and a reference plan.

Written in the project (no data set to download): 24 tasks from one call of one tool (the case of issue
14, verbatim, is ``mul-37x23``) to five calls over three tools. Every task has

* ``expected``: the exact number a correct run states in its final message;
* ``plan``: one correct sequence of tool calls. ``tests/test_agent_suite.py`` replays it through the real
  tools and checks it yields ``expected``, so an answer key cannot drift from the tools; its length is the
  fewest calls the task needs (``min_calls``), which sizes the task's turn limit;
* one system prompt line, the kind a user writes (no tuning per model or per configuration).

The questions never contain the expected number, so echoing the question does not pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool

from benchmarks.agent_suite.tools import TOOLS

SYSTEM = "Use the tools for every calculation, conversion and lookup, then state the result."
ISSUE_SYSTEM = "Use the multiply tool for every multiplication, then state the result."

Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """One tool-use task. ``tools`` are the names bound to the agent (see :data:`tools.TOOLS`)."""

    id: str
    question: str
    expected: float
    plan: tuple[Call, ...]
    tools: tuple[str, ...]
    system: str = SYSTEM
    category: str = field(default="")

    @property
    def min_calls(self) -> int:
        return len(self.plan)

    def tool_objects(self) -> list[BaseTool]:
        return [TOOLS[name] for name in self.tools]

    def fingerprint(self) -> str:
        """Identifies what the task asks, so records of an edited task are not resumed as if unchanged."""
        data = [self.question, self.system, list(self.tools), self.expected]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:12]


def _t(id: str, question: str, expected: float, plan: Sequence[Call], tools: Sequence[str] = (), **kw: Any) -> Task:
    bound = tuple(tools) or tuple(dict.fromkeys(name for name, _ in plan))
    category = "single" if len(plan) == 1 else "multi"
    return Task(id, question, expected, tuple(plan), bound, category=kw.pop("category", category), **kw)


M, A, C, P, S = "multiply", "add", "convert_units", "lookup_price", "lookup_stock"

TASKS: tuple[Task, ...] = (
    # --- one call, one tool (the issue's case first, with its own system prompt)
    _t("mul-37x23", "What is 37 times 23? Use the tool.", 851, [(M, {"a": 37, "b": 23})], system=ISSUE_SYSTEM),
    _t("mul-48x19", "What is 48 times 19?", 912, [(M, {"a": 48, "b": 19})]),
    _t("mul-125x64", "What is 125 multiplied by 64?", 8000, [(M, {"a": 125, "b": 64})]),
    _t("mul-3.5x14", "Multiply 3.5 by 14.", 49, [(M, {"a": 3.5, "b": 14})]),
    _t("add-1234+5678", "What is 1234 plus 5678?", 6912, [(A, {"a": 1234, "b": 5678})]),
    _t("add-987+2345", "Add 987 and 2345.", 3332, [(A, {"a": 987, "b": 2345})]),
    _t(
        "conv-km-m",
        "How many meters are in 4.2 kilometers?",
        4200,
        [(C, {"value": 4.2, "from_unit": "km", "to_unit": "m"})],
    ),
    _t("conv-h-min", "Convert 3 hours to minutes.", 180, [(C, {"value": 3, "from_unit": "h", "to_unit": "min"})]),
    _t(
        "conv-lb-oz", "How many ounces are in 12 pounds?", 192, [(C, {"value": 12, "from_unit": "lb", "to_unit": "oz"})]
    ),
    _t("conv-mi-ft", "Convert 2 miles to feet.", 10560, [(C, {"value": 2, "from_unit": "mi", "to_unit": "ft"})]),
    _t(
        "conv-day-min",
        "How many minutes are in 2 days?",
        2880,
        [(C, {"value": 2, "from_unit": "day", "to_unit": "min"})],
    ),
    _t("price-lantern", "How much does a lantern cost at the store?", 18, [(P, {"item": "lantern"})]),
    _t("price-compass", "What is the price of a compass?", 27.5, [(P, {"item": "compass"})]),
    _t("stock-tent", "How many tents does the store have in stock?", 42, [(S, {"item": "tent"})]),
    # --- two or more calls: a result feeds the next call
    _t("mul-add", "What is 12 times 15, plus 7?", 187, [(M, {"a": 12, "b": 15}), (A, {"a": 180, "b": 7})]),
    _t(
        "add-mul",
        "Add 250 and 175, then multiply the sum by 4.",
        1700,
        [(A, {"a": 250, "b": 175}), (M, {"a": 425, "b": 4})],
    ),
    _t("mul-mul", "What is 19 times 21 times 3?", 1197, [(M, {"a": 19, "b": 21}), (M, {"a": 399, "b": 3})]),
    _t("price-x7", "How much do 7 lanterns cost?", 126, [(P, {"item": "lantern"}), (M, {"a": 18, "b": 7})]),
    _t(
        "conv-add",
        "Convert 2.5 kilometers to meters and add 300 meters. How many meters is that?",
        2800,
        [(C, {"value": 2.5, "from_unit": "km", "to_unit": "m"}), (A, {"a": 2500, "b": 300})],
    ),
    _t(
        "laps-km",
        "A runner does 8 laps of 400 meters. How many kilometers is that?",
        3.2,
        [(M, {"a": 8, "b": 400}), (C, {"value": 3200, "from_unit": "m", "to_unit": "km"})],
    ),
    _t(
        "flour-oz",
        "A batch of bread needs 3 pounds of flour. How many ounces of flour do 4 batches need?",
        192,
        [(M, {"a": 3, "b": 4}), (C, {"value": 12, "from_unit": "lb", "to_unit": "oz"})],
    ),
    _t(
        "price-sum",
        "What do one compass and one tent cost together?",
        147.5,
        [(P, {"item": "compass"}), (P, {"item": "tent"}), (A, {"a": 27.5, "b": 120})],
    ),
    _t(
        "stock-value",
        "What is the total value of the tents in stock (units in stock times price)?",
        5040,
        [(S, {"item": "tent"}), (P, {"item": "tent"}), (M, {"a": 42, "b": 120})],
    ),
    _t(
        "basket",
        "How much do 3 compasses and 2 lanterns cost together?",
        118.5,
        [
            (P, {"item": "compass"}),
            (M, {"a": 27.5, "b": 3}),
            (P, {"item": "lantern"}),
            (M, {"a": 18, "b": 2}),
            (A, {"a": 82.5, "b": 36}),
        ],
    ),
)

BY_ID: dict[str, Task] = {t.id: t for t in TASKS}


def select(ids: str | None = None, limit: int | None = None) -> list[Task]:
    """Tasks by comma-separated ids (in the order given) and/or the first ``limit`` of them."""
    tasks = list(TASKS)
    if ids:
        wanted = [i.strip() for i in ids.split(",") if i.strip()]
        unknown = [i for i in wanted if i not in BY_ID]
        if unknown:
            raise ValueError(f"unknown task id(s) {', '.join(unknown)}; `--list` shows them")
        tasks = [BY_ID[i] for i in wanted]
    return tasks[:limit] if limit is not None else tasks
