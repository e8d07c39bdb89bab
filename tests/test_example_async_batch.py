"""examples/async_batch.py runs end to end on the test model and reports every request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.llama_cpp
def test_async_batch_example(smollm2_path: str) -> None:
    cmd = [sys.executable, str(ROOT / "examples" / "async_batch.py"), "--small", smollm2_path, "--large", smollm2_path]
    out = subprocess.run(
        [*cmd, "--max-tokens", "24"], capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": ""}
    )
    assert out.returncode == 0, out.stderr
    assert "3 routed requests" in out.stdout
    assert out.stdout.count("length") + out.stdout.count("eos") + out.stdout.count("repetition") >= 3
