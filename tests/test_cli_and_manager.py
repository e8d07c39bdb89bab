"""The `glimp` command line and the BackendManager, on scripted engines (fast) and SmolLM2."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import UNGUARDED

from glimp_llm import BackendManager, Glimp, GlimpConfig, ScriptedEngineConfig
from glimp_llm.cli import main as glimp_main
from glimp_llm.config import RouterConfig
from glimp_llm.engines.scripted import ScriptedEngine
from glimp_llm.errors import ConfigurationError, InvalidRequestError, RequestTimeoutError
from glimp_llm.router import Router, RouteRequest

SCRIPTED = {
    "small": {
        "kind": "scripted",
        "response": "Add them.\n\nThen check.\n\nThe answer is 7.",
        "entropies": [0.1, 2.0, 0.2],
    },
    "large": {"kind": "scripted", "response": "L1.\n\nL2 check.\n\nL3.", "name": "big"},
    "router": {"threshold": 1.0, **UNGUARDED},  # the entropy loop itself: these tests pin its routes
}


@pytest.fixture
def scripted_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "glimp.yaml"
    path.write_text(yaml.safe_dump(SCRIPTED))
    return path


def test_run_json_has_the_documented_shape(scripted_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert glimp_main(["run", "What is 3+4?", "--config", str(scripted_config_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"text", "steps", "usage"}
    assert [s["model"] for s in data["steps"]] == ["small", "large", "small"]
    assert all({"model", "entropy", "tokens", "text"} <= set(s) for s in data["steps"])
    assert data["text"] == "".join(s["text"] for s in data["steps"])
    assert data["usage"]["completion_tokens"] == sum(s["tokens"] for s in data["steps"])
    assert all(s["glimpse_tokens"] == 1 for s in data["steps"])


@pytest.mark.parametrize("columns", [80, 100, 160])  # 80: the narrowest terminal it is made for
def test_the_trace_table_fits_the_terminal_and_keeps_its_narrow_columns(
    scripted_config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert glimp_main(["run", "What is 3+4?", "--config", str(scripted_config_file), "--threshold", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line and line[0] in "┏┃┡│└"]
    assert table and all(len(line) <= columns for line in table)
    assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in table)  # the right border is there: nothing cut off
    header = next(line for line in table if "model" in line)
    assert "H nats" in header and "tokens" in header and "end" in header


def test_run_glimpse_tokens_flag_sets_the_look_ahead(
    scripted_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "What is 3+4?", "--config", str(scripted_config_file), "--json", "--glimpse-tokens", "3"]
    assert glimp_main(argv) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert [s["glimpse_tokens"] for s in steps] == [min(3, s["tokens"]) if s["model"] == "small" else 3 for s in steps]


def test_run_prints_a_coloured_trace(
    scripted_config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert glimp_main(["run", "What is 3+4?", "--config", str(scripted_config_file), "--threshold", "5"]) == 0
    out = capsys.readouterr().out
    assert "routing trace" in out and "3 small" in out and "0 large" in out


def test_bad_input_exits_2_with_the_fix(scripted_config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert glimp_main(["run", "", "--config", str(scripted_config_file)]) == 2
    assert "InvalidRequestError" in capsys.readouterr().err
    assert glimp_main(["run", "hi", "--config", str(scripted_config_file), "--threshold", "-1"]) == 2
    assert "threshold" in capsys.readouterr().err
    assert glimp_main(["run", "hi", "--small", "no-such-model", "--large", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "qwen2.5-coder-0.5b-instruct" in err


def test_serve_flags_out_of_range_exit_2_naming_the_flag(
    scripted_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert glimp_main(["serve", "--config", str(scripted_config_file), "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert "ConfigurationError" in err and "--port" in err and "65535" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "chat", "serve", "calibrate", "bench"])
def test_every_model_loading_command_fetches_its_models_with_progress_first(
    command: str, scripted_config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start downloads or assembles the models with a progress bar (fetch_config_models) before the
    engines load them behind a spinner: in each command that loads models, not only ``glimp run``."""
    import glimp_llm.cli.bench
    import glimp_llm.cli.models
    from glimp_llm.errors import ModelNotFoundError

    fetched: list[GlimpConfig] = []

    def fetch(config: GlimpConfig, console: object) -> None:
        fetched.append(config)
        raise ModelNotFoundError("stopped at the fetch")

    monkeypatch.setattr(glimp_llm.cli.models, "fetch_config_models", fetch)
    monkeypatch.setattr(glimp_llm.cli.bench, "fetch_config_models", fetch)
    extra = {
        "run": ["hi"],
        "calibrate": ["--target-large-share", "0.5", "--out", str(tmp_path / "c.yaml")],
        "bench": ["--taus", "1", "--limit", "1", "--json", str(tmp_path / "b.json")]
        + ["--results-md", str(tmp_path / "b.md"), "--no-plots", "--modes", "ours"],
    }.get(command, [])
    assert glimp_main([command, *extra, "--config", str(scripted_config_file)]) == 2
    assert len(fetched) == 1 and fetched[0].small.kind == "scripted"


def test_invalid_config_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("router:\n  threshold: lots\n  unknown_field: 1\n")
    assert glimp_main(["run", "hi", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "router.threshold" in err and "router.unknown_field" in err


def test_models_list_and_doctor(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert glimp_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-1.5b-instruct" in out and "smollm2-135m-instruct" in out
    assert glimp_main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["engines"]) >= {"llama_cpp", "openai", "tensorrt_llm", "scripted"}
    assert "present" in report["gpu"]


def test_console_script_is_installed() -> None:
    """The `glimp` entry point of pyproject's [project.scripts], installed beside this interpreter, runs
    (``python -m glimp_llm.cli`` would pass with no script installed at all)."""
    script = Path(sysconfig.get_path("scripts")) / "glimp"
    assert script.is_file(), f"{script} is missing: install the package into this environment (pip install -e .)"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "glimp-llm" in out.stdout


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, glimp_llm; heavy = {'llama_cpp', 'langchain_core', 'llama_index', 'tensorrt_llm', 'torch',"
        " 'fastapi', 'httpx'}; print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_config_precedence_file_env_kwargs(scripted_config_file: Path) -> None:
    env = {"GLIMP_ROUTER__THRESHOLD": "0.5", "GLIMP_ROUTER__MAX_TOKENS": "99"}
    cfg = GlimpConfig.load(scripted_config_file, env=env, router={"max_tokens": 12})
    assert cfg.router.threshold == 0.5  # env beats the file
    assert cfg.router.max_tokens == 12  # keywords beat env
    with pytest.raises(ConfigurationError, match="router.threshold"):
        GlimpConfig.load(scripted_config_file, env={"GLIMP_ROUTER__THRESHOLD": "NaN"})


async def test_manager_shares_one_engine_for_the_same_model_and_closes_it() -> None:
    engine_cfg = ScriptedEngineConfig(response="One.\n\nTwo.")
    async with BackendManager(GlimpConfig(small=engine_cfg, large=engine_cfg)) as manager:
        assert manager.shared_engine and manager.small is manager.large
        health = await manager.health()
        assert health["ok"]
        result = await manager.router.generate("hi")
        assert result.text == "One.\n\nTwo."
    assert not (await manager.small.health()).ok


def test_manager_sync_context_and_glimp_facade() -> None:
    cfg = GlimpConfig.validated(SCRIPTED)
    with BackendManager(cfg) as manager:
        assert manager.portal is not None
        result = manager.portal.call(manager.router.generate, "hi")
        assert result.usage.large_steps == 1
    with Glimp(cfg) as glimp:
        results = glimp.batch(["a", "b", "c"])
        assert len(results) == 3 and all(r.finish_reason == "eos" for r in results)
        streamed = [e for e in glimp.stream("hi")]
        assert streamed[-1].type == "done"
        assert glimp.tokenize("hello world")
        # keyword options beside a request object apply to it, in every call of the facade
        request = RouteRequest(prompt="hi", max_tokens=200)
        assert glimp.generate(request, max_tokens=2).usage.completion_tokens == 2
        assert [r.usage.completion_tokens for r in glimp.batch([request, request], max_tokens=2)] == [2, 2]
        assert [e for e in glimp.stream(request, max_tokens=2)][-1].result.usage.completion_tokens == 2


def test_a_bad_request_in_a_batch_starts_nothing_and_a_failure_stops_the_rest() -> None:
    """One empty prompt in a batch raised while the others ran on unseen (their results lost), and a first
    call loaded the models before refusing it. Every request is checked first now, and when one fails at
    run time (here: its deadline) the others are cancelled rather than left running."""
    slow = {**SCRIPTED, "small": {**SCRIPTED["small"], "token_seconds": 0.02}, "large": {**SCRIPTED["large"]}}
    glimp = Glimp(GlimpConfig.validated(slow))
    with pytest.raises(InvalidRequestError, match="prompt is empty"):
        glimp.batch(["hi", "", "hi"])
    with pytest.raises(InvalidRequestError, match="prompt is empty"):
        asyncio.run(glimp.abatch(["hi", ""]))
    assert glimp.manager.small._info is None  # refused before any engine started (a model load, for real ones)
    try:
        requests = [RouteRequest(prompt="hi"), RouteRequest(prompt="hi", timeout_s=0.05), RouteRequest(prompt="hi")]
        with pytest.raises(RequestTimeoutError):
            glimp.batch(requests)
        admission = glimp.router.admission
        assert admission.running == admission.waiting == 0  # the siblings were cancelled, not left to run
        assert glimp.manager.small.stats.cancelled_calls >= 2
    finally:
        glimp.close()


def test_adopted_engines_have_no_config_describing_other_engines() -> None:
    """With router= or small=/large= the engines were built elsewhere: ``config`` is None rather than the
    default llama.cpp pair the client does not use, and the router settings are the ones given."""
    small, large = ScriptedEngine("a", name="s"), ScriptedEngine("b", name="l")
    router = Router(small, large, RouterConfig(threshold=0.3))
    adopted = Glimp(router=router)
    assert adopted.config is None and adopted.router is router and adopted.router.config.threshold == 0.3
    given = Glimp(GlimpConfig(router=RouterConfig(threshold=0.4)), small=small, large=large)
    assert given.config is None and given.router.config.threshold == 0.4 and given.manager.small is small
    cfg = GlimpConfig.validated(SCRIPTED)
    assert Glimp(cfg).config == cfg


@pytest.mark.llama_cpp
def test_run_on_smollm2_end_to_end(smollm2_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "Name two fruits.", "--small", smollm2_path, "--large", smollm2_path, "--max-tokens", "40", "--json"]
    assert glimp_main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] and data["usage"]["completion_tokens"] <= 40


_UNCLOSED = """
import atexit
import sys

seen = {}
# registered before glimp_llm is imported, so it runs after glimp_llm's exit hook (atexit runs in reverse order)
atexit.register(lambda: print("engine closed:", seen["engine"]._closed, flush=True))
from glimp_llm import Glimp, GlimpConfig
from glimp_llm.integrations.langchain import ChatGlimp

config = GlimpConfig.validated({
    "small": {"kind": "scripted", "response": "Hi."},
    "large": {"kind": "scripted", "response": "Hello.", "name": "big"},
})
chat = ChatGlimp(config=config)
print(chat.invoke("hi").content)
glimp = Glimp(config).start()
seen["engine"] = glimp.manager.small
print(glimp.generate("hi").text)
if len(sys.argv) > 1:
    raise RuntimeError(sys.argv[1])
"""


@pytest.mark.parametrize("failing", [False, True])
def test_a_script_that_never_closes_its_clients_exits_and_closes_the_engines(failing: bool) -> None:
    """A plain script (``ChatGlimp(...).invoke``, ``Glimp(...)``, no close, no ``with``) used to hang at exit:
    the engines' portal thread is a daemon, frozen during finalisation, while the collector's close of the portal
    waited for it. An exit hook closes open portals, engines first, on a normal exit and after an exception."""
    argv = [sys.executable, "-c", _UNCLOSED, *(["boom"] if failing else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == (1 if failing else 0), done.stderr[-2000:]
    assert done.stdout.splitlines()[:2] == ["Hello.", "Hello."]
    assert "engine closed: True" in done.stdout
    assert ("RuntimeError: boom" in done.stderr) == failing
