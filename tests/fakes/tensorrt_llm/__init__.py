"""Tests only: a fake of the tensorrt_llm names glimp-llm uses. Never installed; tests put tests/fakes on
sys.path. The machinery and what it is faithful to are in ``_fake.py``."""

from tensorrt_llm._fake import BuildConfig, SamplingParams
from tensorrt_llm._fake import TorchLLM as LLM

__glimp_fake__ = True
__all__ = ["LLM", "BuildConfig", "SamplingParams"]
