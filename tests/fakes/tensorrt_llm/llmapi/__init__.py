"""Tests only: ``tensorrt_llm.llmapi`` of the fake."""

from tensorrt_llm._fake import BuildConfig, CompletionOutput, KvCacheConfig, RequestOutput, SamplingParams
from tensorrt_llm._fake import TorchLLM as LLM

__all__ = ["LLM", "BuildConfig", "CompletionOutput", "KvCacheConfig", "RequestOutput", "SamplingParams"]
