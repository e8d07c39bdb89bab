"""Real llama.cpp servers for tests: xllamacpp serving a GGUF model on 127.0.0.1, one process each.

Shared by the OpenAI-compatible engine's contract and fault tests and by the real-server load test, so
both start servers the same way (``backends/llama_cpp/launch.py``, the launcher users run)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import require

LAUNCH = Path(__file__).resolve().parents[1] / "backends" / "llama_cpp" / "launch.py"


class LlamaServer:
    """One xllamacpp server process on 127.0.0.1 (killed on teardown, whatever happened)."""

    def __init__(self, model: str, *, parallel: int = 2) -> None:
        require("xllamacpp", "the OpenAI-compatible engine is tested against llama.cpp's server")
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCH), "--model", model, "--parallel", str(parallel), "--ctx", "4096"]
            + ["--threads", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        if not ready or not ready[0].startswith("READY "):
            self.stop()
            pytest.fail(f"llama server did not start within 60 s (said {ready!r})")
        self.url = ready[0].split()[1]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
