"""Shared fixtures. Tests that need an optional part (llama.cpp, the Qwen pair, a framework) skip with
the reason when it is missing — except under ``GLIMP_TEST_STRICT=1`` (set by ``.ci/run``), where a
missing part is a failure: CI must never pass by skipping what it was meant to test."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from glimp_llm.engines.scripted import ScriptedEngine

STRICT = os.environ.get("GLIMP_TEST_STRICT") == "1"

# Property and fuzz tests explore new random inputs on every local run (and keep what failed in
# .hypothesis/). In CI they replay a fixed sequence instead: a run that lands must not fail, or pass, by the
# luck of the draw. A new failure found locally is pinned as an @example or a bad-input row.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:  # hypothesis is a dev extra; without it those tests are skipped or fail on import
    pass


#: The paper's step loop with none of the guards the router ships on (issue 14): tests of the entropy loop
#: itself (which model a given entropy picks, glimpse reuse, budgets) pass it; the guards have their own
#: tests in test_router_guards.py.
UNGUARDED = {
    "first_step_large": False,
    "tool_call_large": False,
    "forced_entropy": 0.0,
    "final_step_check": False,
    "verify": False,
}


def require(module: str, why: str) -> None:
    """Skip (or fail under GLIMP_TEST_STRICT=1) when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed ({why})"
        if STRICT:
            pytest.fail(message + " and GLIMP_TEST_STRICT=1 forbids skipping it")
        pytest.skip(message, allow_module_level=True)  # also from a module's top, before its imports


def require_model(name: str) -> str:
    """Provision a registered model (assembling it from its packages once) or skip/fail."""
    from glimp_llm import models
    from glimp_llm.errors import ModelNotFoundError

    try:
        return str(models.provision(name))
    except ModelNotFoundError as exc:
        if STRICT:
            pytest.fail(f"{exc} (GLIMP_TEST_STRICT=1 forbids skipping)")
        pytest.skip(str(exc))


@pytest.fixture
def scripted_pair() -> Callable[..., tuple[ScriptedEngine, ScriptedEngine]]:
    """Factory: ``scripted_pair(small_text, small_entropies, large_text, **engine_kwargs)``."""

    def make(
        small: str = "Small one.\n\nSmall two.\n\nSmall three.",
        entropies: list[float] | float = 0.1,
        large: str = "Large one.\n\nLarge two.\n\nLarge three.",
        **kwargs: object,
    ) -> tuple[ScriptedEngine, ScriptedEngine]:
        return (
            ScriptedEngine(small, entropies=entropies, name="small", **kwargs),  # type: ignore[arg-type]
            ScriptedEngine(large, entropies=0.1, name="large", **kwargs),  # type: ignore[arg-type]
        )

    return make


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    require("llama_cpp", "the llama.cpp engine tests need llama-cpp-python")
    return require_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen_pair_paths() -> tuple[str, str]:
    require("llama_cpp", "the Qwen pair runs on llama-cpp-python")
    return require_model("qwen2.5-coder-0.5b-instruct"), require_model("qwen2.5-coder-1.5b-instruct")


# ------------------------------------------------------------------------------------ a real vLLM server
class VllmServer:
    """The one vLLM OpenAI server of a test run (``backends/vllm/cpu.py``, SmolLM2-135M on 127.0.0.1)."""

    def __init__(
        self, url: str, model_dir: str, proc: subprocess.Popen[bytes] | None, log: Path, ready_s: float
    ) -> None:
        self.url, self.model_dir, self.proc, self.log, self.ready_s = url, model_dir, proc, log, ready_s
        self.model = "smollm2"

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def _load_vllm_recipe() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "backends" / "vllm" / "cpu.py"
    spec = importlib.util.spec_from_file_location("glimp_vllm_cpu_recipe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """Start one vLLM server for the whole run (its start-up, ~40 s on 2 cores, is paid once) and stop it at
    the end. Needs ``.venv-vllm`` (``python backends/vllm/cpu.py install``; scripts/test.sh does it): without
    it the vLLM tests skip, or fail under GLIMP_TEST_STRICT=1."""
    external = os.environ.get("GLIMP_TEST_VLLM_URL")  # a server already running (local iteration only)
    if external:
        import json
        import urllib.request

        with urllib.request.urlopen(external + "/v1/models", timeout=5) as resp:
            root = json.load(resp)["data"][0]["root"]
        yield VllmServer(external, root, None, Path(os.devnull), 0.0)
        return
    recipe = _load_vllm_recipe()
    if not recipe.installed():
        message = f"{recipe.VENV} is missing: run `python backends/vllm/cpu.py install` (scripts/test.sh does)"
        if STRICT:
            pytest.fail(message + " and GLIMP_TEST_STRICT=1 forbids skipping")
        pytest.skip(message)
    gguf = require_model("smollm2-135m-instruct")
    model_dir = recipe.convert(Path(gguf), log=lambda *_: None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with log.open("wb") as out:
        # its own session: the engine-core child goes down with it (killpg on the group we created)
        proc = subprocess.Popen(
            recipe.server_command(model_dir, port=port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=recipe.server_env(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = recipe.wait_ready(url, proc, timeout_s=600)
    except Exception as exc:
        _stop_group(proc)
        pytest.fail(f"the vLLM server did not start: {exc}\n{log.read_text(errors='replace')[-3000:]}")
    yield VllmServer(url, str(model_dir), proc, log, ready_s)
    _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (the test run created it), wait for the server, then SIGKILL
    whatever of that group is left (an engine-core child that outlived it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@contextlib.contextmanager
def serve_app(app: object, *, start_timeout_s: float = 30.0, lifespan: str = "auto") -> Iterator[str]:
    """A real uvicorn server for ``app`` on a free port of 127.0.0.1, in a thread: yields its base URL,
    and stops it (and checks that it stopped) on exit. The tests of ``glimp serve`` talk to it over HTTP."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            assert thread.is_alive(), "the server thread died while starting"
            assert time.monotonic() < deadline, f"the server did not start within {start_timeout_s:g} s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server thread did not stop"
