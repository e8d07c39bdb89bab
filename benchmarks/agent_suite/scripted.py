"""Scripted models for the agent suite: the harness's own tests and ``--dry-run``, in seconds, offline.

An agent needs a model whose turn *after a tool result* differs from its first: the library's
:class:`~glimp_llm.engines.scripted.ScriptedEngine` takes one script per turn (``next_turns``) and picks
it by the number of tool results in the context; :func:`turn_scripted_engine` gives it a task's turns.

Two models built from a task's reference plan reproduce issue 14 on scripted engines:

* the large model is an *oracle*: turn k makes call k of the plan, the turn after the last call states
  the answer;
* the small model is *blind*: it writes the first call of the plan in every turn, at low glimpse entropy,
  so entropy routing gives it every step. That is what the real 0.5B model did: after the first turn it
  glimpsed ``<tool_call>`` at 0.3-0.8 nats and repeated the call it had already seen answered.

Under these, large-only passes every task with ``min_calls`` calls; small-only and plain entropy routing
loop; a guard that lets the large model decide the turn (``first_step_large``) passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from benchmarks.agent_suite.tasks import Task
from benchmarks.agent_suite.tools import fmt
from glimp_llm.config import RouterConfig
from glimp_llm.engines.scripted import ScriptedEngine


def turn_scripted_engine(turns: Sequence[str], *, entropies: float = 0.05, **kwargs: Any) -> ScriptedEngine:
    """A scripted engine with one script per agent turn: turn k (k tool results in the context so far)
    writes ``turns[min(k, len(turns) - 1)]``."""
    if not turns:
        raise ValueError("a turn-scripted engine needs at least one turn")
    return ScriptedEngine(turns[0], next_turns=turns[1:], entropies=entropies, **kwargs)


def call_text(name: str, args: dict[str, Any]) -> str:
    """A tool call as Qwen2.5's template writes it (and ChatGlimp parses it)."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def answer_text(task: Task) -> str:
    return f"The result is {fmt(task.expected)}."


def oracle_turns(task: Task) -> list[str]:
    """Call k of the plan in turn k, then the answer."""
    return [call_text(name, args) for name, args in task.plan] + [answer_text(task)]


def blind_turns(task: Task) -> list[str]:
    """The first call of the plan, in every turn."""
    name, args = task.plan[0]
    return [call_text(name, args)]


class ScriptedSource:
    """Models for the harness on scripted engines: a blind small and an oracle large model per task
    (see the module docstring), routed by ``RouterConfig(**overrides)``; ``token_seconds`` make the
    large model slower, so latencies order as on real pairs."""

    def __init__(
        self,
        overrides: dict[str, dict[str, Any]],
        *,
        small_turns: Any = blind_turns,
        large_turns: Any = oracle_turns,
        small_token_seconds: float = 0.0,
        large_token_seconds: float = 0.0,
    ) -> None:
        self.configs = {name: RouterConfig(**o) for name, o in overrides.items()}
        self.small_turns = small_turns
        self.large_turns = large_turns
        self.seconds = (small_token_seconds, large_token_seconds)
        self._open: list[Any] = []

    def fingerprint(self, config: str) -> str:
        return "scripted:" + self.configs[config].model_dump_json()

    def model(self, config: str, task: Task) -> BaseChatModel:
        from glimp_llm.integrations.langchain import ChatGlimp
        from glimp_llm.router import Router

        self.close()  # the previous task's engines
        small = turn_scripted_engine(self.small_turns(task), name="small", token_seconds=self.seconds[0])
        large = turn_scripted_engine(self.large_turns(task), name="large", token_seconds=self.seconds[1])
        chat = ChatGlimp(router=Router(small, large, self.configs[config]))
        self._open.append(chat)
        return chat

    def close(self) -> None:
        while self._open:
            self._open.pop().close()
