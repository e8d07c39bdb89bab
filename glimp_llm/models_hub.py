"""The Hugging Face Hub route of model resolution: references, the hub's own cache, downloads, pins.

Users name GGUF models the way llama-cpp-python, vLLM and llama.cpp's ``-hf`` flag do, by repository id,
and expect the file to land in the hub's shared cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``) where
every other tool finds it. So this module only decides *which* file of a repository is meant and checks
the optional pins; finding and downloading are ``huggingface_hub``'s own ``try_to_load_from_cache``,
``list_repo_files`` and ``hf_hub_download``. ``huggingface_hub`` is imported inside the functions that
need it: ``import glimp_llm`` stays light, and the offline-package route works without it.

Reference syntax (what ``--small`` / ``model:`` accept besides registered names and paths)::

    [hf://]OWNER/REPO[:QUANT | /FILE | /PATTERN][@REVISION][#sha256=HEX]

    Qwen/Qwen2.5-0.5B-Instruct-GGUF                       the repo's only GGUF, else its Q4_K_M file
    Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0                  the file whose name carries that quant
    Qwen/Qwen2.5-0.5B-Instruct-GGUF/*q4_k_m.gguf          a glob over the repo's files (case-insensitive)
    Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf@<commit>#sha256=<64 hex>

A pattern must select exactly one model: a split GGUF (``-00001-of-00003.gguf``) counts as one and all
of its shards are fetched. Zero or several matches are a :class:`~glimp_llm.errors.ModelPatternError`
listing the candidates, never a guess.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glimp_llm.errors import GlimpError, ModelNotFoundError, ModelPatternError

ProgressFn = Callable[[str, int, int], None]
"""``progress(label, done_bytes, total_bytes)`` during assembly, download and hashing."""

#: The quant chosen when a repository holds several GGUF models and the name does not say which one:
#: the same default as llama.cpp's ``-hf`` flag, the usual size/quality balance for CPU inference.
DEFAULT_QUANT = "Q4_K_M"

# Hub naming rules: letters, digits, '-', '_', '.'; at most 96 characters; no '--' or '..'.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_QUANT = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_GLOB_CHARS = frozenset("*?[")


class HubMiss(Exception):
    """The hub route did not produce the file (no network, no such repo/file/revision, gated repo).

    Caught by the resolver and reported as one line of the "tried" list of a ModelNotFoundError."""


@dataclass(frozen=True)
class HubRef:
    """One model in a Hugging Face repository: exactly one of ``filename`` / ``pattern``, or neither
    (then: the repo's only GGUF model, else its :data:`DEFAULT_QUANT` file)."""

    repo_id: str
    filename: str | None = None
    pattern: str | None = None
    revision: str | None = None
    sha256: str | None = None

    @property
    def selector(self) -> str:
        """What picks the file, for messages."""
        return self.filename or self.pattern or f"the only GGUF model, else *{DEFAULT_QUANT}*.gguf"

    @property
    def at(self) -> str:
        return f"@{self.revision or 'main'}"

    def __str__(self) -> str:
        path = f"/{self.selector}" if self.filename or self.pattern else ""
        revision = f"@{self.revision}" if self.revision else ""
        return self.repo_id + path + revision + (f"#sha256={self.sha256}" if self.sha256 else "")


def parse_hub_ref(text: str) -> HubRef | None:
    """``text`` as a hub reference, or None when it does not have the shape of one.

    Shape errors in something that clearly *is* meant for the hub (an ``hf://`` prefix, a ``#sha256=``
    pin, an ``@revision``) raise ModelNotFoundError with the syntax, since guessing would fetch the wrong
    file."""
    raw = text.strip()
    forced = raw.startswith("hf:")
    if forced:
        raw = raw.removeprefix("hf:").removeprefix("//")
    if not forced and (raw.startswith(("/", "./", "../", "~")) or (os.sep != "/" and os.sep in raw)):
        return None  # a filesystem path, not a repo id
    body, hash_sign, fragment = raw.partition("#")
    body, at_sign, revision = body.partition("@")
    strict = forced or bool(hash_sign) or bool(at_sign)
    parts = body.split("/")
    if len(parts) < 2:
        return _bad(text, "expected OWNER/REPO") if strict else None
    owner, repo = parts[0], parts[1]
    repo, colon, quant = repo.partition(":")
    rest = "/".join(parts[2:])
    if not (_NAME.match(owner) and _NAME.match(repo)) or "--" in owner + repo or ".." in owner + repo:
        return _bad(text, f"{owner}/{repo} is not a valid repo id") if strict else None
    if not forced and not rest and not colon and repo.lower().endswith(".gguf"):
        return None  # dir/model.gguf: a relative path, not a repository named "model.gguf"
    filename = pattern = None
    if colon:
        if rest or not _QUANT.match(quant):
            return _bad(text, "a quant (REPO:Q4_K_M) cannot be combined with a file, and must be a plain name")
        pattern = f"*{quant}*.gguf"
    elif rest:
        if rest.startswith("/") or rest.endswith("/") or "//" in rest or ".." in rest.split("/"):
            return _bad(text, f"{rest!r} is not a file path inside the repository")
        if _GLOB_CHARS & set(rest):
            pattern = rest
        else:
            filename = rest
    sha256 = None
    if hash_sign:
        key, _, value = fragment.partition("=")
        if key != "sha256" or not _SHA256.match(value.lower()):
            return _bad(text, "the pin must be #sha256= followed by 64 hex digits")
        sha256 = value.lower()
    if at_sign and not revision:
        return _bad(text, "empty revision after '@'")
    return HubRef(f"{owner}/{repo}", filename, pattern, revision or None, sha256)


def _bad(text: str, why: str) -> HubRef:
    raise ModelNotFoundError(
        f"{text!r} is not a valid Hugging Face model reference: {why}. "
        "Syntax: OWNER/REPO[:QUANT | /FILE | /PATTERN][@REVISION][#sha256=HEX], "
        "e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    )


# --------------------------------------------------------------------------------- environment
def hub_cache_dir() -> Path:
    """The hub's own cache, located as ``huggingface_hub`` does but read at call time: the library reads
    its environment once at import, and a process (or a test) may set ``HF_HUB_CACHE`` after that."""
    if explicit := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(explicit).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "huggingface" / "hub"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value, read at call time."""
    values = (os.environ.get(var, "").strip().upper() for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(value in {"1", "ON", "YES", "TRUE"} for value in values)


def hub_installed() -> bool:
    return importlib.util.find_spec("huggingface_hub") is not None


# ------------------------------------------------------------------------------------ choosing
def _shard_names(filename: str) -> list[str]:
    """Every shard of a split GGUF named by one of them (llama.cpp loads the rest from beside it)."""
    m = _SHARD.match(filename)
    if not m:
        return [filename]
    return [f"{m['stem']}-{i:05d}-of-{m['count']}.gguf" for i in range(1, int(m["count"]) + 1)]


def select_files(ref: HubRef, files: list[str], where: str) -> list[str]:
    """The files of ``ref`` among a repository listing ``files``: one GGUF, or every shard of one split
    GGUF (first shard first). Raises ModelPatternError unless exactly one model matches."""
    if ref.filename:
        wanted = _shard_names(ref.filename)
        missing = [f for f in wanted if f not in files]
        if missing:
            raise ModelPatternError(
                f"{ref.repo_id}{ref.at}: no file {missing[0]!r} {where}", matches=[], available=_ggufs(files)
            )
        return wanted
    ggufs = _ggufs(files)
    models = [f for f in ggufs if not Path(f).name.lower().startswith("mmproj")]  # vision projectors
    if ref.pattern or len(_group(models)) != 1:  # the pattern, else the default quant among several models
        pattern = (ref.pattern or f"*{DEFAULT_QUANT}*.gguf").lower()
        matches = [f for f in (ggufs if ref.pattern else models) if fnmatch.fnmatchcase(f.lower(), pattern)]
    else:
        matches = models
    groups = _group(matches)
    if len(groups) == 1:
        chosen = sorted(next(iter(groups.values())))
        wanted = _shard_names(chosen[0])
        if chosen != wanted:
            raise ModelPatternError(
                f"{ref.repo_id}{ref.at}: the split model {chosen[0]!r} is incomplete {where} "
                f"({len(chosen)} of {len(wanted)} shards)",
                matches=chosen,
                available=ggufs,
            )
        return chosen
    shown = ", ".join(sorted(groups)[:12]) if groups else ", ".join(ggufs[:12]) or "(no GGUF files)"
    if not groups:
        message = f"{ref.repo_id}{ref.at}: no GGUF file matches {ref.selector} {where}; GGUF files there: {shown}"
    else:
        message = (
            f"{ref.repo_id}{ref.at}: {ref.selector} matches {len(groups)} models {where}: {shown}. "
            "Name one file (OWNER/REPO/FILE.gguf) or a narrower quant (OWNER/REPO:Q4_K_M)"
        )
    raise ModelPatternError(message, matches=sorted(matches), available=ggufs)


def _ggufs(files: list[str]) -> list[str]:
    return sorted(f for f in files if f.lower().endswith(".gguf"))


def _group(files: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for f in files:
        m = _SHARD.match(f)
        key = f"{m['stem']}-*-of-{m['count']}.gguf" if m else f
        groups.setdefault(key, []).append(f)
    return groups


# ---------------------------------------------------------------------------------- the cache
def cached_snapshot(ref: HubRef, cache: Path) -> Path | None:
    """The snapshot folder of ``ref``'s revision in the hub cache (``refs/<branch>`` names the commit;
    a full commit hash names its snapshot directly), or None."""
    repo = cache / ("models--" + ref.repo_id.replace("/", "--"))
    revision = ref.revision or "main"
    commit: str | None = revision if _COMMIT.match(revision) else None
    ref_file = repo / "refs" / revision
    if ref_file.is_file():
        commit = ref_file.read_text().strip()
    if not commit:
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def find_in_cache(ref: HubRef, cache: Path) -> Path | None:
    """The cached file of ``ref`` (first shard of a split model), or None when any part is missing.

    An exact file goes through ``try_to_load_from_cache``; a pattern is matched against the files of
    the cached snapshot (listing the repository would need the network)."""
    from huggingface_hub import try_to_load_from_cache

    if ref.filename:
        paths: list[str] = []
        for name in _shard_names(ref.filename):
            hit = try_to_load_from_cache(ref.repo_id, name, cache_dir=str(cache), revision=ref.revision)
            if not isinstance(hit, str):  # None or the "known not to exist" sentinel
                return None
            paths.append(hit)
        return Path(paths[0])
    snapshot = cached_snapshot(ref, cache)
    if snapshot is None:
        return None
    listing = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    try:
        chosen = select_files(ref, listing, f"in the cached snapshot {snapshot}")
    except ModelPatternError as exc:
        if exc.matches:  # ambiguous or incomplete: the user must say more; never pick one
            raise
        return None  # not downloaded yet: a miss, the hub may still have it
    return snapshot / chosen[0]


# ------------------------------------------------------------------------------------ the hub
def download(ref: HubRef, cache: Path, *, progress: ProgressFn | None = None, force: bool = False) -> Path:
    """Fetch ``ref`` into the hub cache with ``hf_hub_download`` (resumable, shared with other tools)
    and return the local path of its (first) file. Hub failures become :class:`HubMiss`."""
    from huggingface_hub import hf_hub_download, list_repo_files
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def bar_kwargs(name: str) -> dict[str, Any]:  # tqdm_class: huggingface_hub >= 1.2, the cpu extra's floor
        return {"tqdm_class": _forwarding_bar(progress, name)} if progress else {}

    try:
        if ref.filename:
            files = _shard_names(ref.filename)
        else:
            listing = list_repo_files(ref.repo_id, revision=ref.revision)
            files = select_files(ref, listing, "in the repository")
        paths = [
            hf_hub_download(
                ref.repo_id,
                name,
                revision=ref.revision,
                cache_dir=str(cache),
                force_download=force,
                **bar_kwargs(name),
            )
            for name in files
        ]
    except GlimpError:
        raise
    except GatedRepoError as exc:
        raise HubMiss(f"{ref.repo_id} is gated: accept its terms on the hub and set HF_TOKEN ({exc})") from exc
    except RepositoryNotFoundError as exc:
        raise HubMiss(f"no repository {ref.repo_id} (or it is private: set HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise HubMiss(f"{ref.repo_id} has no revision {ref.revision!r}") from exc
    except LocalEntryNotFoundError as exc:  # what hf_hub_download raises when it cannot connect
        raise HubMiss(f"cannot reach the hub for {ref}: {exc}") from exc
    except EntryNotFoundError as exc:
        raise HubMiss(f"{ref.repo_id}{ref.at} has no file {ref.filename or ref.selector!r}") from exc
    except Exception as exc:  # network down, proxy, TLS, offline mode set inside the library, ...
        raise HubMiss(f"download from {ref.repo_id}{ref.at} failed: {type(exc).__name__}: {exc}") from exc
    return Path(str(paths[0]))


def _forwarding_bar(progress: ProgressFn, name: str) -> type[Any]:
    """A tqdm class for ``hf_hub_download(tqdm_class=...)`` that reports bytes to ``progress`` instead of
    drawing: the CLI draws one rich progress display for assembly and download alike."""
    from tqdm.auto import tqdm

    label = f"downloading {name}"

    class _Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._glimp_done = int(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> bool | None:
            self._glimp_done += int(n or 0)
            progress(label, self._glimp_done, int(self.total or 0))
            return None

    return _Forward
