"""End to end on the default CPU pair (Qwen2.5-Coder 0.5B -> 1.5B): a GSM8K question, routed."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest
from conftest import UNGUARDED

pytestmark = [pytest.mark.qwen, pytest.mark.slow]

# The math prompt of the paper's code (from SpecReason), which asks for "\n\n"-separated steps.
QUESTION = (
    "Solve the following math problem. Please reason step by step, separate logical reasoning steps with two "
    "newline characters (\n\n), and put your final answer within \\boxed{}.\n\n"
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


#: The paper's loop alone (no guards) for the tests that pin which model the entropy picks.
UNGUARDED_ENV = {f"GLIMP_ROUTER__{k.upper()}": json.dumps(v) for k, v in UNGUARDED.items()}


def glimp_run_json(*extra: str, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "glimp_llm.cli", "run", QUESTION, "--json", "--max-tokens", "256", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_routed_gsm8k_answer_uses_both_models(qwen_pair_paths: tuple[str, str]) -> None:
    # First pass with every step on the small model tells us the entropies along its trajectory; a
    # threshold at their median must then split the steps between the two models.
    probe = glimp_run_json("--threshold", "1000", env=UNGUARDED_ENV)
    assert len(probe["steps"]) >= 2
    assert {s["model"] for s in probe["steps"]} == {"small"}
    tau = statistics.median(s["entropy"] for s in probe["steps"])
    routed = glimp_run_json("--threshold", f"{tau:.6f}", env=UNGUARDED_ENV)
    models = [s["model"] for s in routed["steps"]]
    assert len(models) >= 2
    assert set(models) == {"small", "large"}, models
    assert routed["text"] == "".join(s["text"] for s in routed["steps"])
    assert routed["usage"]["small_tokens"] + routed["usage"]["large_tokens"] == routed["usage"]["completion_tokens"]
    assert "72" in routed["text"]


def test_the_shipped_defaults_verify_every_small_step(qwen_pair_paths: tuple[str, str]) -> None:
    """With the defaults (``verify: auto`` on this llama.cpp pair) the large model reads every step the small
    model wrote, the final one included, and the answer is right."""
    result = glimp_run_json()
    steps = result["steps"]
    small = [s for s in steps if s["model"] == "small"]
    assert small and all(s["verified"] for s in small)
    assert result["usage"]["verified_steps"] >= len(small)
    assert steps[0]["model"] == "large" and steps[0]["routed_by"] == "first_step"  # the first-step guard is on
    assert steps[-1]["model"] == "large" or steps[-1]["verified"]  # the answer: the large model's, or read by it
    assert result["text"] == "".join(s["text"] for s in steps)
    assert "72" in result["text"]
