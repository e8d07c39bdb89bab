"""The LangChain agent and LlamaIndex query-engine examples run end to end on real models; their output
is checked: the agent called the calculator and got 72, the query engine retrieved and cited the right
document.

The agent runs on Qwen2.5-Coder 0.5B as both small and large (the fastest model that writes tool calls;
SmolLM2 cannot). The query engine runs on SmolLM2 (retrieval is the embedding's job; the model only has to
produce an answer from the retrieved text)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require, require_model

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.llama_cpp
@pytest.mark.qwen
def test_langchain_agent_calls_the_calculator() -> None:
    """The example as a user runs it: a plain ``create_agent(ChatGlimp(), tools=[calculator])`` on the
    default pair, no middleware. One tool call, then the answer that uses its result (issue 14: with the
    paper's loop alone the small model repeated the call and the agent ended with an empty answer)."""
    require("langchain", "the agent example needs the langchain extra")
    require("llama_cpp", "the example runs on llama-cpp-python")
    require_model("qwen2.5-coder-0.5b-instruct")
    require_model("qwen2.5-coder-1.5b-instruct")
    stdout = _run("langchain_agent.py")
    assert stdout.count("TOOL CALL calculator(") == 1
    assert "TOOL RESULT calculator: 851" in stdout  # the model's expression evaluated to the right number
    assert "[ai] small/large steps" in stdout  # the routed trace of each model turn is printed
    assert "\nANSWER 851 (expected 851)" in stdout  # and the final answer used it


@pytest.mark.llama_cpp
@pytest.mark.qwen
def test_langchain_agent_forced_variant_on_the_small_model() -> None:
    """The ``--force`` option (a middleware forces the call, then the answer) on the 0.5B model alone."""
    require("langchain", "the agent example needs the langchain extra")
    require("llama_cpp", "the example runs on llama-cpp-python")
    qwen = require_model("qwen2.5-coder-0.5b-instruct")
    stdout = _run("langchain_agent.py", "--small", qwen, "--large", qwen, "--max-tokens", "96", "--force")
    assert "TOOL CALL calculator(" in stdout
    assert "TOOL RESULT calculator: 851" in stdout
    assert "\nANSWER 851 (expected 851)" in stdout


@pytest.mark.llama_cpp
def test_llamaindex_query_engine_cites_the_right_document(smollm2_path: str) -> None:
    require("llama_index.core", "the query-engine example needs the llamaindex extra")
    stdout = _run("llamaindex_query_engine.py", "--small", smollm2_path, "--large", smollm2_path, "--max-tokens", "48")
    sources = [line for line in stdout.splitlines() if line.startswith("SOURCE ")]
    assert sources and sources[0].startswith("SOURCE lighthouse.txt")
    answer = next(line for line in stdout.splitlines() if line.startswith("ANSWER "))
    assert "1871" in answer  # the fact is in lighthouse.txt only
    assert "ROUTING small/large steps" in stdout
    tokens = next(line for line in stdout.splitlines() if line.startswith("TOKENS "))
    assert "completion=0" not in tokens  # TokenCountingHandler saw the usage of the streamed answer
