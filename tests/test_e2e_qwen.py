"""End to end on the default CPU pair (Qwen2.5-Coder 0.5B -> 1.5B): a GSM8K question, routed."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.qwen, pytest.mark.slow]

# The math prompt of the paper's code (from SpecReason), which asks for "\n\n"-separated steps.
QUESTION = (
    "Solve the following math problem. Please reason step by step, separate logical reasoning steps with two "
    "newline characters (\n\n), and put your final answer within \\boxed{}.\n\n"
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


def glimp_run_json(*extra: str) -> dict:
    cmd = [sys.executable, "-m", "glimp_llm.cli", "run", QUESTION, "--json", "--max-tokens", "256", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_routed_gsm8k_answer_uses_both_models(qwen_pair_paths: tuple[str, str]) -> None:
    # First pass with every step on the small model tells us the entropies along its trajectory; a
    # threshold at their median must then split the steps between the two models.
    probe = glimp_run_json("--threshold", "1000")
    assert len(probe["steps"]) >= 2
    assert {s["model"] for s in probe["steps"]} == {"small"}
    tau = statistics.median(s["entropy"] for s in probe["steps"])
    routed = glimp_run_json("--threshold", f"{tau:.6f}")
    models = [s["model"] for s in routed["steps"]]
    assert len(models) >= 2
    assert set(models) == {"small", "large"}, models
    assert routed["text"] == "".join(s["text"] for s in routed["steps"])
    assert routed["usage"]["small_tokens"] + routed["usage"]["large_tokens"] == routed["usage"]["completion_tokens"]
    assert "72" in routed["text"]
