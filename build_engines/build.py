"""Compile the small and the large model of a build config into TensorRT-LLM engines; validate engine dirs.

    python -m build_engines build build_engines/configs/qwen2.5-0.5b-7b.yaml --dry-run   # print, change nothing
    python -m build_engines build build_engines/configs/qwen2.5-0.5b-7b.yaml             # build both
    python -m build_engines validate ENGINE_DIR [ENGINE_DIR2] [--tokenizer HF] [--tokenizer2 HF]

For tensorrt-llm 1.1 - 1.2.x (the TensorRT-engine flow was removed after 1.3.0rc20; the driver needs 1.1+). Two
routes:

* ``cli``: the model family's ``convert_checkpoint.py`` (from a TensorRT-LLM source checkout; it is not in
  the wheel), then ``trtllm-build`` with generation logits, a paged KV cache, paged context FMHA (KV block
  reuse) and the sizes of the config; the HF tokenizer files are copied next to the engine so the engine
  directory is self-contained and its vocabulary can be checked.
* ``python``: ``BuildConfig(gather_generation_logits=True)`` and the TensorRT-backend ``LLM(...).save(dir)``,
  run as a separate ``python -c`` program (the runtime wants its own process and a ``__main__`` guard).
  ``LLM.save`` writes the engine and ``tokenizer.save_pretrained`` only (tensorrt_llm/llmapi/llm_utils.py), so
  the HF files are copied afterwards as on the cli route: ``generation_config.json`` carries the model's extra
  end-of-sequence ids (Qwen: 151643), which would otherwise never stop a step.

``trtllm-build`` prints a deprecation warning for ``--gather_generation_logits`` on every build ("a build flag
is not required anymore"): it is expected, and the flag stays (the C++ runtime behind Triton reads it).
``gather_context_logits: true`` (a setting, for the verifying large model) adds ``--gather_context_logits``:
``score`` (router.verify) needs it on the TensorRT backend.

Every command is printed before it runs (``--dry-run`` prints them and stops). After the build, each
engine is checked with :func:`glimp_llm.engines.tensorrt_llm_validate.validate_engine_dir` — the same
rules the driver applies when it loads one — the pair is checked, and ``manifest.json`` records versions,
the resolved config, the commands, durations and sha256 hashes; ``glimp.yaml`` is a ready GlimpConfig.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from glimp_llm._version import __version__ as glimp_version
from glimp_llm.config import GlimpConfig, format_validation_error
from glimp_llm.engines.tensorrt_llm_validate import (
    TOKENIZER_FILES,
    EngineDirReport,
    check_pair,
    tokenizer_facts,
    validate_engine_dir,
)
from glimp_llm.errors import ConfigurationError, GlimpError

Role = Literal["small", "large"]
ROLES: tuple[Role, Role] = ("small", "large")
SUPPORTED = "tensorrt-llm>=1.1,<1.3 (or 1.3.0rc0 - rc20)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildSettings(_Strict):
    """Engine sizes and precision; ``defaults`` in the config, overridable per model."""

    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    max_batch_size: int = Field(64, ge=1, description="requests batched in flight")
    max_num_tokens: int = Field(8192, ge=1, description="tokens per forward pass (prefill chunking)")
    max_seq_len: int = Field(8192, ge=64, description="context window: prompt + generated")
    max_input_len: int | None = Field(
        None, ge=1, description="longest prompt; default max_seq_len - 1 (routed contexts are prompts)"
    )
    tokens_per_block: int = Field(32, ge=1, description="KV block size: the unit of prefix reuse")
    logits_dtype: Literal["float32", "float16"] = "float32"
    gemm_plugin: str = "auto"
    gather_context_logits: bool = Field(
        False,
        description="context logits for score() (router.verify) on the TensorRT backend; costs GPU memory for "
        "[max_num_tokens, vocab] logits and host memory for [prompt, vocab] per scoring request",
    )

    @model_validator(mode="after")
    def _lengths(self) -> BuildSettings:
        if self.max_input_len is not None and self.max_input_len >= self.max_seq_len:
            raise ValueError(f"max_input_len ({self.max_input_len}) must be below max_seq_len ({self.max_seq_len})")
        return self

    @property
    def input_len(self) -> int:
        return self.max_input_len if self.max_input_len is not None else self.max_seq_len - 1


class ModelBuild(_Strict):
    """One model of the pair."""

    hf_dir: str = Field(description="HF checkpoint directory ($VARS and ~ are expanded)")
    family: str | None = Field(None, description="convert_checkpoint.py family folder; default: the config's")
    tp_size: int = Field(1, ge=1, description="tensor parallelism (GPUs per model)")
    pp_size: int = Field(1, ge=1, description="pipeline parallelism")
    settings: dict[str, Any] = Field(default_factory=dict, description="overrides of `defaults` for this model")
    convert_args: list[str] = Field(default_factory=list, description="extra convert_checkpoint.py arguments")


class BuildSpec(_Strict):
    """A build config file (see build_engines/configs/)."""

    name: str
    family: str = Field("qwen", description="examples/models/core/<family>/convert_checkpoint.py")
    trtllm_repo: str = Field(
        "$TRTLLM_REPO", description="TensorRT-LLM source checkout matching the installed version (cli route)"
    )
    output_dir: str
    route: Literal["cli", "python"] = "cli"
    pair: Literal["same_tokenizer", "text"] = Field(
        "same_tokenizer", description="text: the models have different tokenizers (contexts travel as text)"
    )
    defaults: BuildSettings = BuildSettings()
    small: ModelBuild
    large: ModelBuild
    small_memory_fraction: float = Field(0.15, gt=0, le=1, description="written to glimp.yaml")
    large_memory_fraction: float = Field(0.8, gt=0, le=1, description="written to glimp.yaml")

    def model(self, role: Role) -> ModelBuild:
        return self.small if role == "small" else self.large

    def settings(self, role: Role) -> BuildSettings:
        merged = {**self.defaults.model_dump(), **self.model(role).settings}
        try:
            return BuildSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc, f"{self.name}: {role}.settings")) from None

    def hf_dir(self, role: Role) -> Path:
        return Path(os.path.expanduser(os.path.expandvars(self.model(role).hf_dir)))

    def engine_dir(self, role: Role) -> Path:
        return Path(os.path.expanduser(os.path.expandvars(self.output_dir))) / role

    def checkpoint_dir(self, role: Role) -> Path:
        return Path(os.path.expanduser(os.path.expandvars(self.output_dir))) / "_checkpoints" / role

    def repo(self) -> Path:
        return Path(os.path.expanduser(os.path.expandvars(self.trtllm_repo)))


def load_spec(path: Path) -> BuildSpec:
    if not path.is_file():
        raise ConfigurationError(f"build config {path} does not exist; see build_engines/configs/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"build config {path} is not valid YAML: {exc}") from None
    try:
        return BuildSpec.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigurationError(format_validation_error(exc, str(path))) from None


# ------------------------------------------------------------------------------------------- planning


@dataclass
class Action:
    """One step of a build: a command to run, or an in-process step described by an equivalent line."""

    role: Role
    title: str
    argv: list[str] | None = None
    describe: str | None = None
    run: Callable[[], None] | None = None

    def command_line(self) -> str:
        return shlex.join(self.argv) if self.argv is not None else f"# {self.describe}"


def python_route_program(spec: BuildSpec, role: Role) -> str:
    """The program the python route runs for one model (printed verbatim by --dry-run)."""
    s, m = spec.settings(role), spec.model(role)
    return "\n".join(
        [
            "from tensorrt_llm import BuildConfig",
            "from tensorrt_llm._tensorrt_engine import LLM",
            "from tensorrt_llm.llmapi import KvCacheConfig",
            "",
            "if __name__ == '__main__':",
            f"    bc = BuildConfig(max_batch_size={s.max_batch_size}, max_num_tokens={s.max_num_tokens}, "
            f"max_seq_len={s.max_seq_len}, max_input_len={s.input_len}, gather_generation_logits=True"
            + (", gather_context_logits=True)" if s.gather_context_logits else ")"),
            "    bc.plugin_config.use_paged_context_fmha = True",
            f"    bc.plugin_config.tokens_per_block = {s.tokens_per_block}",
            f"    llm = LLM(model={str(spec.hf_dir(role))!r}, tokenizer={str(spec.hf_dir(role))!r}, dtype={s.dtype!r}, "
            f"tensor_parallel_size={m.tp_size}, pipeline_parallel_size={m.pp_size}, build_config=bc, "
            "gather_generation_logits=True, "
            "kv_cache_config=KvCacheConfig(enable_block_reuse=True, free_gpu_memory_fraction=0.5))",
            f"    llm.save({str(spec.engine_dir(role))!r})",
            "    llm.shutdown()",
        ]
    )


def _copy_tokenizer(src: Path, dest: Path) -> None:
    copied = [f for f in TOKENIZER_FILES if (src / f).is_file()]
    if "tokenizer_config.json" not in copied:
        raise ConfigurationError(f"{src} has no tokenizer_config.json: is it the HF checkpoint directory?")
    for f in copied:
        shutil.copy2(src / f, dest / f)


def plan_build(spec: BuildSpec, *, python: str = sys.executable) -> list[Action]:
    actions: list[Action] = []
    for role in ROLES:
        s, m = spec.settings(role), spec.model(role)
        hf, engine, ckpt = spec.hf_dir(role), spec.engine_dir(role), spec.checkpoint_dir(role)
        if spec.route == "cli":
            family = m.family or spec.family
            script = spec.repo() / "examples" / "models" / "core" / family / "convert_checkpoint.py"
            convert = [
                python,
                str(script),
                "--model_dir",
                str(hf),
                "--output_dir",
                str(ckpt),
                "--dtype",
                s.dtype,
                "--tp_size",
                str(m.tp_size),
            ]
            if m.pp_size > 1:
                convert += ["--pp_size", str(m.pp_size)]
            actions.append(Action(role, "convert_checkpoint", convert + list(m.convert_args)))
            trtllm_build = [
                "trtllm-build", "--checkpoint_dir", str(ckpt), "--output_dir", str(engine),
                "--max_batch_size", str(s.max_batch_size), "--max_num_tokens", str(s.max_num_tokens),
                "--max_seq_len", str(s.max_seq_len), "--max_input_len", str(s.input_len),
                "--kv_cache_type", "paged", "--use_paged_context_fmha", "enable",
                "--tokens_per_block", str(s.tokens_per_block), "--gemm_plugin", s.gemm_plugin,
                "--gather_generation_logits", "--logits_dtype", s.logits_dtype,
                "--workers", str(m.tp_size * m.pp_size),
            ]  # fmt: skip
            if s.gather_context_logits:
                trtllm_build.append("--gather_context_logits")
            actions.append(Action(role, "trtllm-build", trtllm_build))
        else:
            actions.append(Action(role, "LLM(...).save", [python, "-c", python_route_program(spec, role)]))
        # both routes: trtllm-build copies no tokenizer, LLM.save no generation_config.json
        actions.append(
            Action(
                role,
                "copy tokenizer",
                describe=f"copy the HF tokenizer files present among {', '.join(TOKENIZER_FILES)} "
                f"from {hf} to {engine}",
                run=lambda hf=hf, engine=engine: _copy_tokenizer(hf, engine),
            )
        )
    return actions


# ------------------------------------------------------------------------------------------- running


def installed_tensorrt_llm() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tensorrt-llm")
    except PackageNotFoundError:
        return None


def supports_engine_flow(ver: str) -> bool:
    """True for 1.1 - 1.2.x and 1.3.0rc0 - rc20: the releases that still build TensorRT engines and that the
    driver supports (engines only load on the version that built them, and 1.0 lacks what the driver uses)."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:rc(\d+))?", ver)
    if not m:
        return False
    major, minor, _patch, rc = int(m[1]), int(m[2]), int(m[3]), m[4]
    if major != 1:
        return False
    if 1 <= minor <= 2:
        return True
    return minor == 3 and rc is not None and int(rc) <= 20 and _patch == 0


def gpu_description() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def engine_hashes(engine: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(engine.iterdir()) if f.is_file()}


@dataclass
class PairResult:
    reports: dict[str, EngineDirReport]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.reports.values())

    def render(self) -> str:
        lines: list[str] = []
        for role, r in self.reports.items():
            lines.append(f"{role}: {r.summary()}")
            lines += [f"  warning: {w}" for w in r.warnings]
            lines += [f"  PROBLEM: {p}" for p in r.problems]
        lines += [f"pair: {n}" for n in self.notes]
        lines += [f"pair PROBLEM: {p}" for p in self.problems]
        lines.append("valid" if self.ok else "NOT VALID")
        return "\n".join(lines)


def validate(
    engine_dir: Path,
    engine_dir2: Path | None = None,
    *,
    tokenizer: Path | None = None,
    tokenizer2: Path | None = None,
    allow_different_tokenizers: bool = False,
) -> PairResult:
    """Validate one engine directory, or a small/large pair (also: shared tokenizer and vocabulary)."""
    first = validate_engine_dir(engine_dir)
    if engine_dir2 is None:
        result = PairResult({"engine": first})
        if tokenizer is not None:
            facts = tokenizer_facts(tokenizer)
            if facts is not None and first.vocab_size is not None and facts.real_vocab_size > first.vocab_size:
                result.problems.append(
                    f"tokenizer {tokenizer} has {facts.real_vocab_size} entries but the engine is {first.vocab_size} "
                    "wide: it belongs to another model"
                )
        return result
    second = validate_engine_dir(engine_dir2)
    problems, notes = check_pair(
        first,
        second,
        small_tokenizer=tokenizer_facts(tokenizer) if tokenizer else None,
        large_tokenizer=tokenizer_facts(tokenizer2) if tokenizer2 else None,
        allow_different_tokenizers=allow_different_tokenizers,
    )
    return PairResult({"small": first, "large": second}, problems, notes)


def glimp_config_for(spec: BuildSpec) -> dict[str, Any]:
    """A GlimpConfig (as a dict) that loads the built engines in-process; validated before it is written."""
    data: dict[str, Any] = {}
    for role, fraction in zip(ROLES, (spec.small_memory_fraction, spec.large_memory_fraction), strict=True):
        data[role] = {
            "kind": "tensorrt_llm",
            "model": str(spec.engine_dir(role)),
            "backend": "tensorrt",
            "free_gpu_memory_fraction": fraction,
        }
    GlimpConfig.validated(data, source=f"glimp.yaml for {spec.name}")
    return data


def build(spec: BuildSpec, config_path: Path, *, dry_run: bool, force: bool, out: Any = None) -> int:
    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    version = installed_tensorrt_llm()
    actions = plan_build(spec)
    say(f"# build {spec.name}: {spec.route} route, tensorrt-llm {version or 'not installed'}, output {spec.output_dir}")
    paths = [str(spec.hf_dir(r)) for r in ROLES] + ([str(spec.repo())] if spec.route == "cli" else [])
    unset = sorted({m for p in paths for m in re.findall(r"\$\{?\w+", p)})
    if unset:
        message = f"environment variables not set: {', '.join(unset)} (they name the HF and TensorRT-LLM directories)"
        if not dry_run:
            raise ConfigurationError(message + "; export them before building")
        say(f"# note: {message}")
    if dry_run:
        for i, a in enumerate(actions, 1):
            say(f"# [{i}/{len(actions)}] {a.role}: {a.title}")
            say(a.command_line())
        say(
            f"# then: validate both engines and the pair, write {spec.engine_dir('small').parent}/manifest.json "
            "and glimp.yaml"
        )
        return 0
    if version is None or not supports_engine_flow(version):
        raise ConfigurationError(
            f"building TensorRT engines needs {SUPPORTED}; installed: {version or 'none'}. Install it on the GPU host "
            "(docs/deploy-nvidia.md) or use --dry-run to print the commands"
        )
    if spec.route == "cli" and shutil.which("trtllm-build") is None:
        raise ConfigurationError("trtllm-build is not on PATH; activate the environment that has tensorrt-llm")
    out_root = spec.engine_dir("small").parent
    out_root.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "glimp_llm": glimp_version,
        "tensorrt_llm": version,
        "python": platform.python_version(),
        "gpu": gpu_description(),
        "config_file": str(config_path),
        "config": spec.model_dump(),
        "route": spec.route,
        "engines": {},
    }
    t_all = time.perf_counter()
    for role in ROLES:
        engine = spec.engine_dir(role)
        mine = [a for a in actions if a.role == role]
        entry: dict[str, Any] = {
            "dir": str(engine),
            "hf_dir": str(spec.hf_dir(role)),
            "commands": [a.command_line() for a in mine],
        }
        if (engine / "config.json").is_file() and validate_engine_dir(engine).ok and not force:
            say(f"# {role}: {engine} is already built and valid; skipping (--force rebuilds)")
            entry["skipped"] = True
        else:
            t0 = time.perf_counter()
            engine.mkdir(parents=True, exist_ok=True)
            for i, a in enumerate(mine, 1):
                say(f"# [{role} {i}/{len(mine)}] {a.title} ({time.perf_counter() - t_all:.0f} s elapsed)")
                say(a.command_line())
                if a.argv is not None:
                    subprocess.run(a.argv, check=True)
                elif a.run is not None:
                    a.run()
            entry["seconds"] = round(time.perf_counter() - t0, 1)
        say(f"# {role}: hashing {engine}")
        entry["files"] = engine_hashes(engine)
        facts = tokenizer_facts(engine)
        entry["tokenizer_fingerprint"] = facts.fingerprint if facts else None
        manifest["engines"][role] = entry
    result = validate(
        spec.engine_dir("small"), spec.engine_dir("large"), allow_different_tokenizers=spec.pair == "text"
    )
    say(result.render())
    manifest["validation"] = {
        "ok": result.ok,
        "problems": result.problems,
        "notes": result.notes,
        "engines": {k: {"problems": r.problems, "warnings": r.warnings} for k, r in result.reports.items()},
    }
    (out_root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out_root / "glimp.yaml").write_text(yaml.safe_dump(glimp_config_for(spec), sort_keys=False))
    say(f"# wrote {out_root / 'manifest.json'} and {out_root / 'glimp.yaml'} in {time.perf_counter() - t_all:.0f} s")
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build_engines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile the small and the large model of a build config")
    b.add_argument("config", type=Path)
    b.add_argument("--dry-run", action="store_true", help="print the exact commands; change nothing")
    b.add_argument("--route", choices=["cli", "python"], help="override the config's route")
    b.add_argument("--force", action="store_true", help="rebuild engines that already exist and validate")
    v = sub.add_parser("validate", help="check engine directories (one, or a small/large pair)")
    v.add_argument("engine_dir", type=Path)
    v.add_argument("engine_dir2", type=Path, nargs="?")
    v.add_argument("--tokenizer", type=Path, help="HF directory of the first engine's tokenizer")
    v.add_argument("--tokenizer2", type=Path, help="HF directory of the second engine's tokenizer")
    v.add_argument(
        "--allow-different-tokenizers",
        action="store_true",
        help="accept a pair whose tokenizers differ (contexts travel as text)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            spec = load_spec(args.config)
            if args.route:
                spec = spec.model_copy(update={"route": args.route})
            return build(spec, args.config, dry_run=args.dry_run, force=args.force)
        result = validate(
            args.engine_dir,
            args.engine_dir2,
            tokenizer=args.tokenizer,
            tokenizer2=args.tokenizer2,
            allow_different_tokenizers=args.allow_different_tokenizers,
        )
        print(result.render())
        return 0 if result.ok else 1
    except GlimpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: command failed with exit status {exc.returncode}: {shlex.join(exc.cmd)}", file=sys.stderr)
        return 1
