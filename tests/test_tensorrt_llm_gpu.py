"""The real TensorRT-LLM on a GPU (marker ``gpu``): skipped, with the reason, where tensorrt_llm cannot be imported.

It runs examples/tensorrt_llm_smoke.py's checks in-process when ``GLIMP_TRT_SMALL`` and ``GLIMP_TRT_LARGE``
name two model directories (engine directories or HF checkpoints of one family). These tests are never
required in CPU CI; GLIMP_TEST_STRICT does not turn their skip into a failure because no CPU machine can
satisfy them (see docs/deploy-nvidia.md).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent


def _real_tensorrt_llm_reason() -> str | None:
    """Why the real tensorrt_llm is not there (a skip reason), or None when it is.

    Only an ``ImportError`` (the package, or a module it needs, is not installed) means "not here". Any other
    exception while importing it (a missing libcuda surfacing as ``OSError``, a CUDA/MPI ``RuntimeError``) is a
    broken install on what is meant to be a GPU host, and must fail the test run loudly, not skip it.
    """
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "tensorrt_llm is not installed (needs an NVIDIA GPU host; see docs/deploy-nvidia.md)"
    try:
        mod = importlib.import_module("tensorrt_llm")
    except ImportError as exc:
        return f"tensorrt_llm cannot be imported here: {type(exc).__name__}: {exc}"
    if getattr(mod, "__glimp_fake__", False):
        return "only the test fake of tensorrt_llm is importable"
    return None


@pytest.fixture(scope="module")
def model_dirs() -> tuple[str, str]:
    reason = _real_tensorrt_llm_reason()
    if reason:
        pytest.skip(reason)
    small, large = os.environ.get("GLIMP_TRT_SMALL"), os.environ.get("GLIMP_TRT_LARGE")
    if not small or not large:
        pytest.skip("set GLIMP_TRT_SMALL and GLIMP_TRT_LARGE to two engine or HF checkpoint directories")
    return small, large


async def test_smoke_on_a_real_gpu(model_dirs: tuple[str, str]) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        smoke = importlib.import_module("tensorrt_llm_smoke")
    finally:
        sys.path.remove(str(ROOT / "examples"))
    report = await smoke.run_smoke(model_dirs[0], model_dirs[1], concurrency=8)
    assert report.ok, report.render()
