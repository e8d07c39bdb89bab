"""Tests only: ``tensorrt_llm._tensorrt_engine`` (the TensorRT backend, tensorrt-llm <= 1.2.x) of the fake."""

from tensorrt_llm._fake import TrtLLM as LLM

__all__ = ["LLM"]
