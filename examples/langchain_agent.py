"""A LangChain agent (``create_agent``) on the routed CPU default, answering a word problem with a calculator.

    .venv/bin/python examples/langchain_agent.py
    .venv/bin/python examples/langchain_agent.py --small qwen2.5-coder-0.5b-instruct --large qwen2.5-coder-0.5b-instruct
    .venv/bin/python examples/langchain_agent.py --router verify=false        # any RouterConfig field
    .venv/bin/python examples/langchain_agent.py --force   # a middleware forces the tool call, then the answer

By default the agent is exactly what a user writes: ``create_agent(ChatGlimp(...), tools=[calculator],
system_prompt=...)``, no middleware, every choice left to the model. It works because of the router's
default guards (docs/calibration.md): the first step of every turn is the large model's, so the turn after
the tool's answer states the result instead of the small model calling the tool again. ``ChatGlimp`` renders
the calculator through the model's own chat template (Qwen2.5 answers with a ``<tool_call>`` JSON block), the
agent runs the tool and hands the result back, and every model turn carries its routing trace in
``response_metadata["glimp"]``: which model (small or large) wrote each step, at what glimpse entropy.

``--force`` adds a middleware that requires a tool call until the calculator has answered
(``tool_choice="any"``, which ``ChatGlimp`` implements by prefilling a ``<tool_call>`` opening) and then
asks for the answer (``"none"``): a way to make a weak model use its tools, not something the routed model
needs. The output ends with lines a test can check (``TOOL CALL``, ``ANSWER``).
Needs the ``langchain`` extra: ``pip install 'glimp-llm[cpu,langchain]'``.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
from collections.abc import Callable
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from glimp_llm import Glimp, GlimpConfig
from glimp_llm.integrations.langchain import ChatGlimp

QUESTION = "A school orders 37 boxes with 23 pencils in each box. How many pencils is that in total? Use the tool."
EXPECTED = 851
SYSTEM = "Use the calculator tool for every calculation, then state the result."

_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    """Arithmetic only: numbers and + - * / // % ** (no names, calls or attributes: never ``eval``)."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '48 + 48 / 2' and return the result."""
    try:
        value = _evaluate(ast.parse(expression.replace("^", "**"), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}. Write a plain arithmetic expression, e.g. '48 + 48 / 2'"
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


@wrap_model_call
def compute_first(request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
    """Compute first, then answer: a tool call is required until a tool has answered (``tool_choice="any"``),
    after which the tools are hidden (``"none"``) and the model answers from the result.

    Small models often do the arithmetic in their head instead of calling the tool, or keep calling it
    after it answered. ``ChatGlimp`` turns a forcing ``tool_choice`` into a prefilled ``<tool_call>``
    opening, so the first turn is a calculator call.
    """
    answered = any(isinstance(m, ToolMessage) for m in request.messages)
    return handler(request.override(tool_choice="none" if answered else "any"))


def _setting(text: str) -> tuple[str, Any]:
    """``verify=false`` -> ``("verify", False)``: the value as JSON when it is JSON."""
    name, _, raw = text.partition("=")
    try:
        return name.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return name.strip(), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", default=None, help="small model (default: the embedded default pair)")
    parser.add_argument("--large", default=None, help="large model")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument(
        "--force", action="store_true", help="add a middleware that forces the tool call, then the answer"
    )
    parser.add_argument(
        "--router",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a RouterConfig setting, e.g. verify=false or threshold=0.5 (repeatable)",
    )
    args = parser.parse_args()

    overrides: dict[str, Any] = {}
    for role in ("small", "large"):
        model = getattr(args, role)
        if model:
            overrides[role] = {"kind": "llama_cpp", "model": model}
    if args.router:
        overrides["router"] = dict(_setting(s) for s in args.router)
    config = GlimpConfig.load(**overrides) if overrides else GlimpConfig()

    with Glimp(config) as glimp:
        model = ChatGlimp(glimp=glimp, max_tokens=args.max_tokens)
        middleware = [compute_first] if args.force else []
        agent = create_agent(model, tools=[calculator], system_prompt=SYSTEM, middleware=middleware)
        state = agent.invoke({"messages": [("user", QUESTION)]}, config={"recursion_limit": 8})

    print(f"question: {QUESTION}\n")
    for message in state["messages"]:
        if isinstance(message, AIMessage):
            trace = message.response_metadata.get("glimp", {})
            steps = " ".join(
                f"{s['model'][0].upper()}({s['tokens']}t,H={s['entropy']})" for s in trace.get("steps_detail", [])
            )
            print(
                f"[ai] small/large steps {trace.get('small_steps')}/{trace.get('large_steps')}, "
                f"tokens {trace.get('small_tokens')}/{trace.get('large_tokens')}: {steps}"
            )
            for call in message.tool_calls:
                print(f"TOOL CALL {call['name']}({call['args']})")
            if message.content:
                print(f"  {str(message.content).strip()[:300]}")
        elif isinstance(message, ToolMessage):
            print(f"TOOL RESULT {message.name}: {message.content}")
    final = state["messages"][-1]
    numbers = re.findall(r"-?\d+(?:\.\d+)?", str(final.content).replace(",", ""))
    print(f"\nANSWER {numbers[-1] if numbers else '?'} (expected {EXPECTED})")


if __name__ == "__main__":
    main()
