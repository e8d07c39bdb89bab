"""build_engines: dry-run command lines per example config, the python route on the fake runtime, and
validate() on engine config.json files written here (good, old format, missing flags, mismatched vocab)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from fakes.model_dirs import FAKES, OLD_FORMAT_CONFIG, REAL_VOCAB, engine_config, make_engine_dir, make_hf_dir

from glimp_llm.config import GlimpConfig
from glimp_llm.engines.tensorrt_llm_validate import tokenizer_facts, validate_engine_dir

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "build_engines" / "configs").glob("*.yaml"))


@pytest.fixture
def be(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    from build_engines import build

    return build


def test_there_are_example_configs_for_the_issue_pairs() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"qwen2.5-0.5b-7b", "qwen3-4b_r1-distill-qwen-32b"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_dry_run_prints_the_exact_commands_and_changes_nothing(
    be, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELS", "/models")
    monkeypatch.setenv("TRTLLM_REPO", "/opt/TensorRT-LLM")
    monkeypatch.chdir(tmp_path)
    spec = be.load_spec(config)
    assert be.main(["build", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written
    lines = [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]
    builds = [a for a in lines if a[0] == "trtllm-build"]
    converts = [a for a in lines if a[1].endswith("convert_checkpoint.py")]
    assert len(builds) == len(converts) == 2
    for role, conv, argv in zip(("small", "large"), converts, builds, strict=True):
        s, m = spec.settings(role), spec.model(role)
        assert conv[1] == f"/opt/TensorRT-LLM/examples/models/core/{spec.family}/convert_checkpoint.py"
        opts = dict(zip(conv[2::2], conv[3::2], strict=False))
        assert opts["--model_dir"] == str(spec.hf_dir(role)) and opts["--model_dir"].startswith("/models/")
        assert opts["--dtype"] == s.dtype and opts["--tp_size"] == str(m.tp_size)
        assert "--gather_generation_logits" in argv
        expected = {
            "--checkpoint_dir": opts["--output_dir"],
            "--output_dir": str(spec.engine_dir(role)),
            "--kv_cache_type": "paged",
            "--use_paged_context_fmha": "enable",
            "--tokens_per_block": str(s.tokens_per_block),
            "--max_batch_size": str(s.max_batch_size),
            "--max_num_tokens": str(s.max_num_tokens),
            "--max_seq_len": str(s.max_seq_len),
            "--max_input_len": str(s.max_seq_len - 1),
            "--workers": str(m.tp_size * m.pp_size),
        }
        pos = argv.index("--gather_generation_logits")
        pairs = dict(zip(argv[1:pos:2], argv[2:pos:2], strict=True)) | dict(
            zip(argv[pos + 1 :: 2], argv[pos + 2 :: 2], strict=True)
        )
        assert {k: pairs[k] for k in expected} == expected
    if spec.name.startswith("qwen3-4b"):
        assert spec.pair == "text" and spec.model("large").tp_size == 2


def test_dry_run_of_the_python_route(
    be, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELS", "/models")
    monkeypatch.chdir(tmp_path)
    config = ROOT / "build_engines" / "configs" / "qwen2.5-0.5b-7b.yaml"
    assert be.main(["build", str(config), "--dry-run", "--route", "python"]) == 0
    out = capsys.readouterr().out
    spec = be.load_spec(config).model_copy(update={"route": "python"})
    actions = be.plan_build(spec)
    assert [a.title for a in actions] == ["LLM(...).save", "copy tokenizer"] * 2
    for action in actions:
        if action.argv is None:  # LLM.save writes no generation_config.json: the HF files are copied after it
            assert "generation_config.json" in action.command_line()
            continue
        assert action.command_line() in out  # printed exactly as it would run
        program = action.argv[2]
        compile(program, "<python route>", "exec")
        assert "BuildConfig(" in program and "gather_generation_logits=True" in program
        assert "bc.plugin_config.use_paged_context_fmha = True" in program
        assert "from tensorrt_llm._tensorrt_engine import LLM" in program and "llm.save(" in program
    assert list(tmp_path.iterdir()) == []


def test_unset_variables_stop_a_real_build(be, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELS", raising=False)
    monkeypatch.setattr(be, "installed_tensorrt_llm", lambda: "1.2.1")
    spec = be.load_spec(ROOT / "build_engines" / "configs" / "qwen2.5-0.5b-7b.yaml")
    with pytest.raises(be.ConfigurationError, match=r"\$MODELS"):
        be.build(spec, Path("x.yaml"), dry_run=False, force=False)


def test_python_route_builds_and_validates_on_the_fake_runtime(
    be, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_hf_dir(tmp_path / "hf" / "small")
    make_hf_dir(tmp_path / "hf" / "large")
    config = tmp_path / "pair.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "fake-pair",
                "output_dir": str(tmp_path / "engines"),
                "route": "python",
                "defaults": {"max_seq_len": 512, "max_batch_size": 8},
                "small": {"hf_dir": str(tmp_path / "hf" / "small")},
                "large": {"hf_dir": str(tmp_path / "hf" / "large")},
            }
        )
    )
    monkeypatch.setenv("PYTHONPATH", f"{FAKES}:{ROOT}")  # the subprocess imports the fake tensorrt_llm
    monkeypatch.setattr(be, "installed_tensorrt_llm", lambda: "1.2.1")
    assert be.main(["build", str(config)]) == 0, capsys.readouterr()
    root = tmp_path / "engines"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["tensorrt_llm"] == "1.2.1" and manifest["validation"]["ok"]
    assert manifest["config"]["name"] == "fake-pair"
    small = manifest["engines"]["small"]
    assert len(small["files"]["rank0.engine"]) == 64 and "llm.save(" in small["commands"][0]
    built = json.loads((root / "small" / "config.json").read_text())["build_config"]
    assert built["gather_generation_logits"] is True and built["max_input_len"] == 511
    assert built["plugin_config"]["use_paged_context_fmha"] is True
    glimp = GlimpConfig.validated(yaml.safe_load((root / "glimp.yaml").read_text()))
    assert glimp.small.kind == "tensorrt_llm" and glimp.small.model == str(root / "small")
    assert be.main(["build", str(config)]) == 0  # built and valid: skipped the second time
    assert "already built and valid" in capsys.readouterr().out


def test_python_route_keeps_the_models_extra_eos_ids(
    be, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13, defect 5: LLM.save writes the tokenizer only; generation_config.json (Qwen's second EOS id)
    must reach the engine directory, and validate warns when it is missing."""
    for role in ("small", "large"):
        hf = make_hf_dir(tmp_path / "hf" / role)
        eos = json.loads((hf / "generation_config.json").read_text())["eos_token_id"]
        (hf / "generation_config.json").write_text(json.dumps({"eos_token_id": [*eos, 3]}))
    config = tmp_path / "pair.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "fake-pair",
                "output_dir": str(tmp_path / "engines"),
                "route": "python",
                "defaults": {"max_seq_len": 512, "max_num_tokens": 512, "max_batch_size": 8},
                "small": {"hf_dir": str(tmp_path / "hf" / "small")},
                "large": {"hf_dir": str(tmp_path / "hf" / "large"), "settings": {"gather_context_logits": True}},
            }
        )
    )
    monkeypatch.setenv("PYTHONPATH", f"{FAKES}:{ROOT}")
    monkeypatch.setattr(be, "installed_tensorrt_llm", lambda: "1.2.1")
    assert be.main(["build", str(config)]) == 0, capsys.readouterr()
    for role in ("small", "large"):
        engine = tmp_path / "engines" / role
        assert json.loads((engine / "generation_config.json").read_text())["eos_token_id"][-1] == 3
        assert not any("generation_config" in w for w in validate_engine_dir(engine).warnings)
    assert validate_engine_dir(tmp_path / "engines" / "large").gather_context_logits
    assert not validate_engine_dir(tmp_path / "engines" / "small").gather_context_logits
    (tmp_path / "engines" / "small" / "generation_config.json").unlink()
    assert any("generation_config.json" in w for w in validate_engine_dir(tmp_path / "engines" / "small").warnings)


def test_gather_context_logits_setting_adds_the_build_flag(be, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELS", "/models")
    monkeypatch.setenv("TRTLLM_REPO", "/opt/TensorRT-LLM")
    spec = be.load_spec(ROOT / "build_engines" / "configs" / "qwen2.5-0.5b-7b.yaml")
    large = spec.large.model_copy(update={"settings": {"gather_context_logits": True}})
    builds = [a.argv for a in be.plan_build(spec.model_copy(update={"large": large})) if a.title == "trtllm-build"]
    assert "--gather_context_logits" not in builds[0] and builds[1][-1] == "--gather_context_logits"
    python = be.python_route_program(spec.model_copy(update={"large": large, "route": "python"}), "large")
    assert "gather_context_logits=True" in python


def test_example_configs_accept_whole_window_prompts_without_chunked_context(be) -> None:
    """Issue 13, defect 2: max_num_tokens below max_input_len caps prompts where chunked context is off."""
    for config in CONFIGS:
        spec = be.load_spec(config)
        for role in ("small", "large"):
            s = spec.settings(role)
            assert s.max_num_tokens >= s.input_len, (config.name, role)


def test_supported_versions(be) -> None:
    assert be.supports_engine_flow("1.2.1") and be.supports_engine_flow("1.1.0")
    assert not be.supports_engine_flow("1.0.0")  # below the driver's floor (cache_salt, cached_tokens)
    assert be.supports_engine_flow("1.3.0rc20") and not be.supports_engine_flow("1.3.0rc21")
    assert not be.supports_engine_flow("1.4.0rc1") and not be.supports_engine_flow("0.21.0")


# ------------------------------------------------------------------------------------------ validate


def test_validate_a_good_engine(be, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine_dir(tmp_path / "e")
    report = validate_engine_dir(engine)
    assert report.ok and report.vocab_size > REAL_VOCAB and report.has_tokenizer
    assert be.main(["validate", str(engine)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (OLD_FORMAT_CONFIG, "pre-0.8"),
        (engine_config(gather_generation_logits=False), "gather_generation_logits"),
        (engine_config(kv_cache_type="CONTINUOUS"), "not paged"),
        (engine_config(use_paged_context_fmha=False), "use_paged_context_fmha"),
        (engine_config(use_paged_context_fmha=None), "use_paged_context_fmha"),
    ],
    ids=["old-format", "no-logits-flag", "continuous-kv", "fmha-off", "fmha-unknown"],
)
def test_validate_rejects_unusable_engines(
    be, tmp_path: Path, config: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine_dir(tmp_path / "e", config=config)
    report = validate_engine_dir(engine)
    assert not report.ok and any(message in p for p in report.problems), report.problems
    assert be.main(["validate", str(engine)]) == 1
    assert message in capsys.readouterr().out


def test_validate_missing_rank_and_short_input(tmp_path: Path) -> None:
    engine = make_engine_dir(tmp_path / "e", tp_size=2, max_input_len=1024, max_seq_len=8192)
    (engine / "rank1.engine").unlink()
    report = validate_engine_dir(engine)
    assert any("rank1.engine" in p for p in report.problems)
    assert any("max_input_len" in w for w in report.warnings)


def test_pair_with_mismatched_tokenizers_is_rejected_unless_text_mode(be, tmp_path: Path) -> None:
    small = make_engine_dir(tmp_path / "small")
    large = make_engine_dir(tmp_path / "large")
    tj = json.loads((large / "tokenizer.json").read_text())
    tj["added_tokens"].append({"id": REAL_VOCAB, "content": "<|other|>", "special": True})
    (large / "tokenizer.json").write_text(json.dumps(tj))
    result = be.validate(small, large)
    assert not result.ok and any("different tokenizers" in p for p in result.problems)
    relaxed = be.validate(small, large, allow_different_tokenizers=True)
    assert relaxed.ok and any("travel as text" in n for n in relaxed.notes)


def test_pair_with_one_tokenizer_and_different_padding_is_valid(be, tmp_path: Path) -> None:
    # Qwen2.5-0.5B (151936) and -7B (152064) share one tokenizer: padded widths alone prove nothing
    small = make_engine_dir(tmp_path / "small", vocab_size=REAL_VOCAB + 28)
    large = make_engine_dir(tmp_path / "large", vocab_size=REAL_VOCAB + 156)
    result = be.validate(small, large)
    assert result.ok, result.render()
    s_facts, l_facts = tokenizer_facts(small), tokenizer_facts(large)
    assert s_facts is not None and l_facts is not None
    assert s_facts.fingerprint == l_facts.fingerprint and s_facts.real_vocab_size == REAL_VOCAB


def test_pair_without_tokenizers_and_different_widths_needs_tokenizers(
    be, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = make_engine_dir(tmp_path / "small", with_tokenizer=False, vocab_size=600)
    large = make_engine_dir(tmp_path / "large", with_tokenizer=False, vocab_size=640)
    result = be.validate(small, large)
    assert not result.ok and any("--tokenizer" in p for p in result.problems)
    hf = make_hf_dir(tmp_path / "hf")
    assert be.main(["validate", str(small), str(large), "--tokenizer", str(hf), "--tokenizer2", str(hf)]) == 0
    narrow = make_engine_dir(tmp_path / "narrow", with_tokenizer=False, vocab_size=REAL_VOCAB - 1)
    assert be.main(["validate", str(narrow), "--tokenizer", str(hf)]) == 1
    assert "another model" in capsys.readouterr().out


# ------------------------------------------------------------------------------- backends/tensorrt_llm

BACKEND = ROOT / "backends" / "tensorrt_llm"


def test_trtllm_serve_options_switch_on_logits_and_block_reuse() -> None:
    for role in ("small", "large"):
        options = yaml.safe_load((BACKEND / f"{role}.yaml").read_text())
        assert options["gather_generation_logits"] is True
        assert options["kv_cache_config"]["enable_block_reuse"] is True
        assert 0 < options["kv_cache_config"]["free_gpu_memory_fraction"] < 1


def test_glimp_config_for_the_two_servers_is_valid() -> None:
    cfg = GlimpConfig.load(BACKEND / "glimp-openai.yaml", env={})
    assert cfg.small.kind == cfg.large.kind == "openai"
    assert cfg.small.base_urls[0].endswith(":8001/v1") and cfg.large.base_urls[0].endswith(":8002/v1")


def test_serve_script_dry_run(tmp_path: Path) -> None:
    import subprocess

    engine = make_engine_dir(tmp_path / "engine")
    hf = make_hf_dir(tmp_path / "hf")
    out = subprocess.run(
        ["bash", str(BACKEND / "serve.sh"), "--dry-run", str(engine), str(hf)],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "LARGE_TP": "2"},
    )  # fmt: skip
    small, large = out.stdout.splitlines()
    assert "--backend tensorrt" in small and f"{BACKEND}/small.yaml" in small and "--port 8001" in small
    assert "--backend pytorch" in large and "--tp_size 2" in large and f"{BACKEND}/large.yaml" in large
