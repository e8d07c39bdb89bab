"""``glimp bench`` modes (issues 14 and 15) on the scripted engines: the registry, ``--modes``, calibration
only for what needs it, the random baseline at ours' share, the report and plots of what ran, resuming.
No timing assertions: only what runs, what is computed and what is written."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_bench import _dataset, _scripted_config

from glimp_llm.bench import runner as bench_runner
from glimp_llm.bench.modes import GUARDS, parse_modes, registry
from glimp_llm.bench.runner import Record, read_records
from glimp_llm.cli import bench as bench_cli
from glimp_llm.cli import main as glimp_main
from glimp_llm.config import RouterConfig
from glimp_llm.errors import ConfigurationError, EngineUnavailableError

ALL_MODES = [
    "small", "large", "ours", "paper", "ours+k8", "random", "guard-first", "guard-tool", "guard-forced",
    "guard-final", "guards", "verify", "verify+guards", "verify-4", "spec", "defaults+verify-4", "defaults",
]  # fmt: skip


# ------------------------------------------------------------------------------ the registry and --modes
def test_registry_holds_every_mode_as_valid_router_settings() -> None:
    modes = registry()
    assert list(modes) == ALL_MODES
    for spec in modes.values():
        RouterConfig(**spec.overrides)  # every override is a real, valid RouterConfig setting
    assert modes["small"].overrides == {"routing": "small-only"}
    assert modes["large"].overrides == {"routing": "large-only"}
    assert modes["random"].overrides == {"routing": "random"} and modes["random"].share_of == "ours"
    assert modes["guard-forced"].overrides == {"forced_entropy": 0.05, "forced_max_tokens": 8}
    assert modes["guards"].overrides == GUARDS
    assert modes["verify+guards"].overrides == {**GUARDS, "verify": True}
    assert modes["spec"].overrides == {
        "verify": True, "verify_resume": "small", "verify_margin": 0.0, "verify_draft_tokens": 8
    }  # fmt: skip
    assert modes["verify-4"].overrides == {"verify": True, "verify_logprob": -4.0}
    needs = [n for n, s in modes.items() if s.needs_scoring]
    assert needs == ["verify", "verify+guards", "verify-4", "spec", "defaults+verify-4"]  # defaults: no verify
    assert RouterConfig(**modes["defaults"].overrides) == RouterConfig()  # exactly what the library ships
    assert "ours+k4" in registry(4) and not any(n.startswith("ours+k") for n in registry(1))


def test_parse_modes_keeps_run_order_and_rejects_bad_names() -> None:
    modes = registry()
    default = parse_modes(None, modes)
    assert default.names == ALL_MODES and default.sweep and not default.explicit
    assert parse_modes("all", modes).names == ALL_MODES
    chosen = parse_modes("ours, LARGE", modes)
    assert chosen.names == ["large", "ours"] and not chosen.sweep and chosen.explicit
    assert parse_modes("sweep,ours", modes).sweep
    for bad, message in [
        ("large,oops", "unknown mode 'oops'"),
        ("ours,ours", "more than once"),
        ("", "empty"),
        ("large,,ours", "empty name"),
        ("ours+k4", "--lookahead-tokens"),
    ]:
        with pytest.raises(ConfigurationError, match=message) as info:
            parse_modes(bad, modes)
        text = str(info.value)
        assert "large, ours" in text or "once" in text or "commas" in text  # the valid values, or the fix


def test_bad_modes_value_is_a_typed_error_before_any_generation(
    tmp_path: Path, no_generation: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = glimp_main([*_bench_args(tmp_path), "--modes", "large,bigger"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "ConfigurationError" in err and "unknown mode 'bigger'" in err and "verify+guards" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ running chosen modes
def test_modes_run_exactly_the_named_modes(tmp_path: Path) -> None:
    """--modes large,ours: two modes per problem, ours calibrated (and nothing else), the report and the
    plots show only those two."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    rc = glimp_main([*_bench_args(tmp_path), "--modes", "large,ours", "--plots", str(out / "plots")])
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    assert {r["mode"] for r in doc["records"]} == {"large", "ours"}
    assert len(doc["records"]) == 2 * 3
    assert set(doc["summary"]) == {"large", "ours"} and doc["sweep_summary"] == {}
    assert [m["name"] for m in doc["meta"]["modes"]] == ["large", "ours"]
    assert [row["mode"] for row in doc["calibration"]["taus"]] == ["ours"]
    assert doc["summary"]["ours"]["large_step_share"] == pytest.approx(0.4)
    md = (out / "RESULTS.md").read_text()
    assert "| ours |" in md and "| large |" in md and "| small |" not in md and "| paper |" not in md
    assert {p.name for p in (out / "plots").iterdir()} == {
        "accuracy_vs_latency.png",
        "entropy_histogram.png",
        "time_breakdown.png",
    }


def test_single_model_modes_need_no_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """small,large: no tau, so no held-out problems are read and no calibration runs (the file holds only
    the evaluated problems, fewer than a calibration would need)."""

    async def no_calibration(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibration ran for modes that do not route on entropy")

    monkeypatch.setattr("glimp_llm.calibrate.collect_glimpses", no_calibration)
    out = tmp_path / "out"
    rc = glimp_main(
        [*_bench_args(tmp_path, problems=3), "--modes", "small,large", "--calibrate-problems", "8", "--no-plots"]
    )
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    assert doc["calibration"] is None
    assert set(doc["summary"]) == {"small", "large"}
    assert doc["summary"]["small"]["large_step_share"] == 0.0 and doc["summary"]["small"]["glimpses"] == 0
    assert doc["summary"]["large"]["large_step_share"] == 1.0 and doc["summary"]["large"]["glimpses"] == 0
    assert not (out / "plots").exists()


def test_every_mode_by_default_with_accuracy_error_and_shares(tmp_path: Path) -> None:
    """The default runs all modes (verification included on an engine that can score), and the report
    gives accuracy ± its standard error, latency / large-only and the large-token share for each."""
    out = tmp_path / "out"
    rc = glimp_main([*_bench_args(tmp_path, limit=2), "--sweep-shares", "0.2", "--sweep-problems", "1", "--no-plots"])
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    assert list(doc["summary"]) == ALL_MODES
    assert set(doc["sweep_summary"]) == {*ALL_MODES, "ours@0.20"}
    for name, row in doc["summary"].items():
        assert row["n"] == 2, name
        assert row["accuracy_se"] == pytest.approx((row["accuracy"] * (1 - row["accuracy"]) / 2) ** 0.5)
        assert {"latency_ratio_mean", "large_token_share", "large_step_share"} <= set(row)
    taus = {m["name"]: m["threshold"] for m in doc["meta"]["modes"]}
    for name in ALL_MODES[ALL_MODES.index("guard-first") : ALL_MODES.index("defaults") + 1]:
        assert taus[name] == taus["ours"]  # guards and verification are measured at ours' tau
    assert taus["random"] is None and taus["small"] is None
    assert {row["mode"] for row in doc["calibration"]["taus"]} == {"ours", "paper", "ours+k8", "ours@0.20"}
    md = (out / "RESULTS.md").read_text()
    assert "### The modes that ran" in md and " ± " in md
    for name in ALL_MODES:
        assert f"| {name} |" in md


def test_random_mode_takes_ours_measured_share(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = glimp_main([*_bench_args(tmp_path), "--modes", "ours,random", "--no-plots"])
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    ours = [r for r in doc["records"] if r["mode"] == "ours"]
    randoms = [r for r in doc["records"] if r["mode"] == "random"]
    assert len(randoms) == 3
    for i, record in enumerate(randoms):  # ours' cumulative share over the problems so far, this one included
        steps = sum(r["small_steps"] + r["large_steps"] for r in ours[: i + 1])
        assert record["random_large_share"] == pytest.approx(sum(r["large_steps"] for r in ours[: i + 1]) / steps)
    assert doc["summary"]["random"]["random_large_share_mean"] == pytest.approx(0.4)
    mode = next(m for m in doc["meta"]["modes"] if m["name"] == "random")
    assert mode["overrides"]["routing"] == "random" and mode["overrides"]["random_seed"] == 42
    assert "random_large_share=0.400 (mean; the share ours measured so far)" in (out / "RESULTS.md").read_text()


def test_random_mode_alone_needs_ours_or_an_explicit_share(tmp_path: Path, no_generation: None) -> None:
    args = bench_cli_args(tmp_path, "--modes", "random")
    with pytest.raises(ConfigurationError, match="add ours to --modes, or pass --random-share"):
        bench_cli.prepare(args, print)


def test_random_mode_with_an_explicit_share(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = glimp_main([*_bench_args(tmp_path), "--modes", "random", "--random-share", "0.5", "--no-plots"])
    assert rc == 0
    doc = json.loads((out / "r.json").read_text())
    assert doc["calibration"] is None  # nothing routes on entropy
    assert {r["random_large_share"] for r in doc["records"]} == {0.5}


def test_verification_on_an_engine_that_cannot_score() -> None:
    """Named in --modes: a typed error before the first generation; only in the default set: dropped
    with one warning, the other modes run."""
    large = SimpleNamespace(info=SimpleNamespace(can_score=False, model="no-logits"))
    warnings: list[str] = []
    console = SimpleNamespace(print=lambda text, **_: warnings.append(text))
    explicit = parse_modes("ours,verify", registry())
    with pytest.raises(EngineUnavailableError, match="drop verify from --modes"):
        bench_cli._check_scoring(explicit, large, console)
    kept = bench_cli._check_scoring(parse_modes(None, registry()), large, console)
    assert "verify" not in kept.names and "verify+guards" not in kept.names and "guards" in kept.names
    assert "spec" not in kept.names and "verify-4" not in kept.names
    assert len(warnings) == 1 and "verify, verify+guards, verify-4, spec, defaults+verify-4" in warnings[0]
    able = SimpleNamespace(info=SimpleNamespace(can_score=True, model="x"))
    assert bench_cli._check_scoring(explicit, able, console) is explicit


# ------------------------------------------------------------------------------ resuming
def test_interrupted_run_resumes_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [*_bench_args(tmp_path), "--modes", "small,large,ours", "--no-plots", "--records", str(out / "rec.jsonl")]
    real_run = bench_runner.ModeRunner.run
    calls = {"n": 0}

    async def interrupted(self, *a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the fifth run
        return await real_run(self, *a, **k)

    monkeypatch.setattr(bench_runner.ModeRunner, "run", interrupted)
    assert glimp_main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted: 4 finished runs are in" in err and "rerun the same command to resume" in err
    assert len(read_records(out / "rec.jsonl")) == 4
    assert not (out / "r.json").exists()

    # A killed process can leave a cut-off last line: that run is dropped and runs again.
    with (out / "rec.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"problem": "tiny:1", "mode": "lar')
    monkeypatch.setattr(bench_runner.ModeRunner, "run", real_run)
    assert glimp_main(args) == 0
    err = capsys.readouterr().err
    assert "unfinished record" in err
    assert "resuming from" in err and "4 of 9 runs already done, 5 to go" in err
    doc = json.loads((out / "r.json").read_text())
    assert len(doc["records"]) == 9


def test_resume_with_another_mode_reuses_the_saved_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun that adds a mode keeps the earlier modes' taus and calibrates the new one on the saved
    samples (no new generation of sample solutions), then runs only what is missing."""
    out = tmp_path / "out"
    base = [*_bench_args(tmp_path), "--no-plots", "--records", str(out / "rec.jsonl")]
    assert glimp_main([*base, "--modes", "large,ours"]) == 0
    first = json.loads((out / "r.json").read_text())

    async def no_calibration(*args: object, **kwargs: object) -> None:
        raise AssertionError("the saved calibration samples should have been reused")

    monkeypatch.setattr("glimp_llm.calibrate.collect_glimpses", no_calibration)
    assert glimp_main([*base, "--modes", "large,ours,paper"]) == 0
    doc = json.loads((out / "r.json").read_text())
    assert set(doc["summary"]) == {"large", "ours", "paper"}
    taus = {m["name"]: m["threshold"] for m in doc["meta"]["modes"]}
    assert taus["ours"] == next(m["threshold"] for m in first["meta"]["modes"] if m["name"] == "ours")
    assert {row["mode"] for row in doc["calibration"]["taus"]} == {"ours", "paper"}
    assert len(read_records(out / "rec.jsonl")) == 3 * 3
    # and a later run with fewer modes reports only those
    assert glimp_main([*base, "--modes", "ours"]) == 0
    assert set(json.loads((out / "r.json").read_text())["summary"]) == {"ours"}


def test_random_mode_added_later_takes_the_share_of_ours_earlier_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = [*_bench_args(tmp_path), "--no-plots", "--records", str(out / "rec.jsonl")]
    assert glimp_main([*base, "--modes", "ours"]) == 0
    assert glimp_main([*base, "--modes", "random"]) == 0
    doc = json.loads((out / "r.json").read_text())
    assert set(doc["summary"]) == {"random"} and len(doc["records"]) == 3
    assert [r["random_large_share"] for r in doc["records"]] == pytest.approx([0.4] * 3)


def test_a_broken_record_before_the_end_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    record = Record("p:0", "ours", 1.0, True, "18", "18", 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, "eos", 0.0)
    line = json.dumps(record.to_dict())
    path.write_text(f"{line}\nnot json\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"rec.jsonl:2 .*delete that line"):
        read_records(path)


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def no_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_generation(monkeypatch)


def forbid_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any engine starts, generates or glimpses: the checks must come first."""
    from glimp_llm.engines.scripted import ScriptedEngine

    async def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an engine ran before the checks failed")

    monkeypatch.setattr(ScriptedEngine, "generate", forbidden)
    monkeypatch.setattr(ScriptedEngine, "glimpse", forbidden)
    monkeypatch.setattr(ScriptedEngine, "start", forbidden)


def _bench_args(tmp_path: Path, *, limit: int = 3, problems: int = 6) -> list[str]:
    out = tmp_path / "out"
    return [
        "bench", "--config", str(_scripted_config(tmp_path)), "--data", str(_dataset(tmp_path, problems)),
        "--limit", str(limit), "--calibrate-problems", str(problems - limit), "--main-share", "0.4",
        "--sweep-problems", "0", "--json", str(out / "r.json"), "--results-md", str(out / "RESULTS.md"), "--quiet",
    ]  # fmt: skip


def bench_cli_args(tmp_path: Path, *extra: str) -> object:
    """The parsed ``glimp bench`` namespace, for calling the CLI's functions directly."""
    from glimp_llm.cli import build_parser

    return build_parser().parse_args([*_bench_args(tmp_path), *extra])
