"""Issue 15: ``glimp bench``, ``glimp calibrate`` and the micro-benchmarks check everything a run needs before
its first generation, and fail with a typed error that names the problem and the fix (scripted engines;
every test here that expects a failure also fails the test if an engine is started)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_bench import _dataset, _scripted_config
from test_bench_modes import _bench_args, forbid_generation

from glimp_llm.bench import preflight
from glimp_llm.cli import main as glimp_main
from glimp_llm.errors import ConfigurationError, EngineUnavailableError, ModelNotFoundError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_generation(monkeypatch)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run the CLI, expect the typed-error exit (2) and every needle in the message."""
    rc = glimp_main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "glimp: error:" in err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------------------ plots
def test_plots_asked_for_without_matplotlib_fail_before_any_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_generation: None
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    _fails(
        [*_bench_args(tmp_path), "--plots", str(tmp_path / "plots")],
        capsys,
        "ConfigurationError",
        "needs the plotting library",
        "pip install 'glimp-llm[bench]'",
        "--no-plots",
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "plots").exists()


def test_default_plots_without_matplotlib_are_skipped_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.chdir(tmp_path)  # the default plots folder is relative: keep it out of the repository
    rc = glimp_main([*_bench_args(tmp_path), "--modes", "large,ours"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.count("plots skipped") == 1 and "pip install 'glimp-llm[bench]'" in err
    assert err.index("plots skipped") < err.index("calibrating")  # said before the first generation
    assert (tmp_path / "out" / "r.json").is_file() and not (tmp_path / "benchmarks").exists()


def test_plots_flags_contradicting(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_generation: None) -> None:
    _fails([*_bench_args(tmp_path), "--plots", str(tmp_path / "p"), "--no-plots"], capsys, "contradict")


def test_plots_dir_policy() -> None:
    warnings: list[str] = []
    assert preflight.plots_dir(None, disabled=True, default="d", warn=warnings.append) is None
    if preflight.plotting_missing() is None:
        assert preflight.plots_dir(None, disabled=False, default="d", warn=warnings.append) == Path("d")
        assert preflight.plots_dir("x", disabled=False, default="d", warn=warnings.append) == Path("x")
    assert warnings == []


# ------------------------------------------------------------------------------ the data file
@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing", ["--data", "no such file", "GSM8K-format JSONL"]),
        ("folder", ["not a file"]),
        ("not-json", [":2: not a GSM8K record", "fix the line"]),
        ("no-answer", [":2: not a GSM8K record", "'answer'"]),
        ("too-few", ["has 4 of the 5 problems", "--limit 5", "lower --limit to 4"]),
        ("no-held-out", ["has 1 of the 3 problems the calibration needs", "problems 3..5", "--taus"]),
        ("binary", ["not UTF-8"]),
    ],
)
def test_data_file_problems_fail_before_any_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_generation: None, case: str, needles: list[str]
) -> None:
    argv = [*_bench_args(tmp_path), "--modes", "ours"]  # writes the 6-problem file changed below
    data = _dataset(tmp_path, 6)
    rows = data.read_text().splitlines()
    extra: list[str] = []
    if case == "missing":
        data = tmp_path / "nope.jsonl"
    elif case == "folder":
        data = tmp_path
    elif case == "not-json":
        data.write_text("\n".join([rows[0], "{not json", *rows[2:]]) + "\n")
    elif case == "no-answer":
        data.write_text("\n".join([rows[0], json.dumps({"question": "q"}), *rows[2:]]) + "\n")
    elif case == "too-few":
        extra = ["--offset", "2", "--limit", "5"]
    elif case == "no-held-out":
        data.write_text("\n".join(rows[:4]) + "\n")  # 3 evaluated + 1 held out, 3 needed
    elif case == "binary":
        data.write_bytes(b"\xff\xfe\x00bad")
    argv += extra
    argv[argv.index("--data") + 1] = str(data)
    _fails(argv, capsys, "ConfigurationError", *needles)
    assert not (tmp_path / "out").exists()


def test_explicit_taus_need_no_held_out_problems(tmp_path: Path) -> None:
    """With the taus given, nothing is calibrated, so a file with only the evaluated problems is enough."""
    argv = [*_bench_args(tmp_path, problems=3), "--modes", "small,ours,paper", "--taus", "1.0", "--no-plots"]
    assert glimp_main(argv) == 0
    doc = json.loads((tmp_path / "out" / "r.json").read_text())
    assert doc["calibration"] is None and set(doc["summary"]) == {"small", "ours", "paper"}


# ------------------------------------------------------------------------------ outputs and models
@pytest.mark.parametrize("flag", ["--json", "--results-md", "--records", "--plots"])
def test_unwritable_outputs_fail_before_any_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_generation: None, flag: str
) -> None:
    if flag == "--plots" and preflight.plotting_missing():
        pytest.skip("the plots folder is checked when the plots can be drawn")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "inside" / "out.json"  # a path below a file can never be created
    argv = [*_bench_args(tmp_path), "--modes", "large"]
    if flag in argv:
        argv[argv.index(flag) + 1] = str(target)
    else:
        argv += [flag, str(target)]
    _fails(argv, capsys, "ConfigurationError", flag, "is not a folder")


def test_check_writable_cases(tmp_path: Path) -> None:
    preflight.check_writable(tmp_path / "new" / "deeper" / "x.json", "--json")  # creatable: fine
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigurationError, match="is a folder"):
        preflight.check_writable(tmp_path / "dir", "--json")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="not a folder"):
        preflight.check_writable(tmp_path / "file", "--plots", directory=True)
    preflight.check_writable(tmp_path / "dir", "--plots", directory=True)


def test_missing_model_is_a_typed_error_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.gguf")
    argv = [*_bench_args(tmp_path), "--modes", "large"]
    i = argv.index("--config")
    del argv[i : i + 2]
    err = _fails([*argv, "--small", missing, "--large", missing], capsys)
    if importlib.util.find_spec("llama_cpp") is None:
        assert "EngineUnavailableError" in err and "glimp-llm[cpu]" in err
    else:
        assert "ModelNotFoundError" in err and "nope.gguf" in err and "does not exist" in err and "Fix:" in err
    with pytest.raises((ModelNotFoundError, EngineUnavailableError)):
        preflight.check_llama_model(missing, "small")


# ------------------------------------------------------------------------------ glimp calibrate
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--out", "tuned.txt"], ["use a .yaml, .json or .toml"]),
        (["--limit", "5"], ["has 2 of the 5 problems", "lower --limit to 2"]),
        (["--trajectories", "smal"], ["--trajectories"]),
        (["--target-large-share", "1.5"], ["within 0..1"]),
        (["--data", "missing.jsonl"], ["no such file"]),
        (["--out", "a-file/inside/tuned.yaml"], ["is not a folder"]),
    ],
)
def test_calibrate_checks_before_any_generation(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_generation: None,
    extra: list[str],
    needles: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    argv = ["calibrate", "--config", str(_scripted_config(tmp_path)), "--data", str(_dataset(tmp_path, 2)),
            "--target-large-share", "0.4", "--limit", "2", "--out", "tuned.yaml", *extra]  # fmt: skip
    _fails(argv, capsys, "ConfigurationError", *needles)
    assert not (tmp_path / "tuned.yaml").exists()


# ------------------------------------------------------------------------------ benchmarks/micro.py
def _micro() -> object:
    spec = importlib.util.spec_from_file_location("glimp_micro_script", ROOT / "benchmarks" / "micro.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--skip", "glimpse,speed"], ["--skip", "concurrency, glimpse, overhead"]),
        (["--offset", "0"], ["has 6 of the 100 problems", "lower --offset"]),
        (["--offset", "0", "--json", "a-file/x.json"], ["has 6 of the 100"]),
        (["--from-results", "bad.json"], ["--from-results", "--tau"]),
    ],
)
def test_micro_benchmarks_check_before_any_generation(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needles: list[str],
) -> None:
    micro = _micro()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{}")

    async def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a measurement ran before the checks failed")

    monkeypatch.setattr(micro, "run", forbidden)
    argv = ["--data", str(_dataset(tmp_path, 6)), "--json", "m.json", "--results-md", "R.md", *extra]
    assert micro.main(argv) == 2  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert "ConfigurationError" in err
    for needle in needles:
        assert needle in err, err


def test_micro_benchmarks_check_the_models_and_outputs(tmp_path: Path) -> None:
    micro = _micro()
    (tmp_path / "a-file").write_text("x")
    data = _dataset(tmp_path, 110)
    args = micro.parse_args(  # type: ignore[attr-defined]
        ["--data", str(data), "--offset", "10", "--json", str(tmp_path / "a-file" / "m.json"), "--tau", "1"]
    )
    with pytest.raises(ConfigurationError, match="--json"):
        micro.preflight(args)  # type: ignore[attr-defined]
    args = micro.parse_args(  # type: ignore[attr-defined]
        ["--data", str(data), "--offset", "10", "--json", str(tmp_path / "m.json"), "--tau", "1",
         "--results-md", str(tmp_path / "R.md"), "--small", str(tmp_path / "none.gguf"), "--skip", "concurrency"]
    )  # fmt: skip
    with pytest.raises((ModelNotFoundError, EngineUnavailableError)):
        micro.preflight(args)  # type: ignore[attr-defined]
