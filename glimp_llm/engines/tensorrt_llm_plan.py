"""Load planning for the TensorRT-LLM engine: what to construct, decided from files alone.

Which backend (an engine directory runs on the TensorRT backend, an HF checkpoint on the PyTorch one), which
directories hold the model and the tokenizer, the context window, the vocabulary width, the parallel mapping,
the KV block size and whether context logits (``score``) are available: all read from ``config.json`` and the
tokenizer files, with engine directories validated by :mod:`glimp_llm.engines.tensorrt_llm_validate`. Nothing
here imports ``tensorrt_llm``, so every configuration mistake is reported before the multi-minute load, and on
machines without a GPU; :mod:`glimp_llm.engines.tensorrt_llm` is the runtime that carries the plan out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from glimp_llm.engines.tensorrt_llm_validate import (
    EngineDirReport,
    detect_model_format,
    has_tokenizer_files,
    int_or_none,
    read_config_json,
    validate_engine_dir,
)
from glimp_llm.errors import ConfigurationError, ModelNotFoundError

if TYPE_CHECKING:
    from glimp_llm.engines.tensorrt_llm import Runtime, TensorRTLLMEngine

log = logging.getLogger("glimp_llm.engines.tensorrt_llm")

Backend = Literal["tensorrt", "pytorch"]


@dataclass(frozen=True)
class LoadPlan:
    """What :meth:`TensorRTLLMEngine.start` will construct, resolved from the files and the settings (no GPU needed)."""

    backend: Backend
    model_dir: Path
    tokenizer_dir: Path
    context_window: int
    model_vocab_size: int | None
    tensor_parallel_size: int
    pipeline_parallel_size: int
    engine_report: EngineDirReport | None
    tokens_per_block: int = 32
    """KV block size: how the TensorRT backend's reused-block count becomes a token count."""
    context_logits: bool = False
    """Whether requests may ask for context logits (``score``): PyTorch always; TensorRT only for an engine
    built with ``gather_context_logits``."""

    def llm_kwargs(self, runtime: Runtime, kv_cache_config: Any, engine: TensorRTLLMEngine) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": str(self.model_dir),
            # the runtime takes a tokenizer object as well as a directory: a given object is passed as it is
            "tokenizer": str(self.tokenizer_dir) if engine._given_tokenizer is None else engine._given_tokenizer,
            "gather_generation_logits": True,
            # prompts up to max_seq_len - 1 instead of max_num_tokens ("Long contexts" in engines/tensorrt_llm.py)
            "enable_chunked_prefill": True,
            "kv_cache_config": kv_cache_config,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            **_batch_limits(engine),
        }
        if self.backend == "pytorch" and engine.max_seq_len is not None:
            kwargs["max_seq_len"] = engine.max_seq_len  # an engine's own max_seq_len always wins on TensorRT
        if self.backend == "tensorrt" and self.engine_report is None:
            kwargs["build_config"] = self.build_config(runtime, engine)
        return kwargs

    def build_config(self, runtime: Runtime, engine: TensorRTLLMEngine) -> Any:
        """The engine the TensorRT backend builds from an HF checkpoint at load time: the context window the
        router was told (BuildConfig's own default would cap prompts at 1,024 tokens), generation logits,
        and paged context FMHA for KV block reuse, as ``build_engines`` would build it."""
        bc = runtime.BuildConfig(
            gather_generation_logits=True,
            max_seq_len=self.context_window,
            max_input_len=self.context_window - 1,
            **_batch_limits(engine),
        )
        bc.plugin_config.use_paged_context_fmha = True
        return bc


def _batch_limits(engine: TensorRTLLMEngine) -> dict[str, int]:
    """The batch limits the engine was given; unset ones are left to the runtime's defaults."""
    limits = {"max_batch_size": engine.max_batch_size, "max_num_tokens": engine.max_num_tokens}
    return {key: value for key, value in limits.items() if value is not None}


def plan_load(engine: TensorRTLLMEngine) -> LoadPlan:
    """Resolve backend, directories, window and parallelism from the files; validate engine dirs."""
    model_dir = Path(engine.model).expanduser()
    if not model_dir.exists():
        raise ModelNotFoundError(
            f"{model_dir} does not exist; set `model` to an engine directory (python -m build_engines build) "
            "or an HF checkpoint directory"
        )
    fmt = detect_model_format(model_dir)
    if fmt == "trtllm_checkpoint":
        raise ConfigurationError(
            f"{model_dir} is a converted TensorRT-LLM checkpoint, not an engine: build it with trtllm-build "
            "(python -m build_engines build CONFIG), or point `model` at the HF checkpoint"
        )
    detected: Backend = "tensorrt" if fmt == "engine" else "pytorch"
    backend: Backend = detected if engine.backend_choice == "auto" else engine.backend_choice
    if fmt == "engine" and backend == "pytorch":
        raise ConfigurationError(
            f"{model_dir} is a TensorRT engine directory, which only the TensorRT backend loads; set backend: "
            "tensorrt (or auto), or point `model` at the HF checkpoint for the PyTorch backend"
        )
    report: EngineDirReport | None = None
    if fmt == "engine":
        report = validate_engine_dir(model_dir).raise_for_problems()
        for w in report.warnings:
            log.warning("%s: %s", engine.name, w)
        window = report.max_seq_len
        vocab = report.vocab_size
        tokens_per_block = report.tokens_per_block or 32
        context_logits = report.gather_context_logits
        if engine.tensor_parallel_size not in (1, report.tp_size):
            raise ConfigurationError(
                f"tensor_parallel_size={engine.tensor_parallel_size} but engine {model_dir} was built for tp "
                f"{report.tp_size}; drop the setting (engines carry their mapping) or rebuild"
            )
        tp, pp = report.tp_size, report.pp_size
        if window is not None and engine.max_seq_len not in (None, window):
            log.warning(
                "%s: max_seq_len=%s ignored, %s has max_seq_len=%s", engine.name, engine.max_seq_len, model_dir, window
            )
    else:
        if backend == "tensorrt":
            log.warning(
                "%s: the TensorRT backend will build an engine from %s at load time (slow; built with generation "
                "logits, paged context FMHA and max_seq_len = the context window); prefer python -m build_engines",
                engine.name,
                model_dir,
            )
        cfg = read_config_json(model_dir)
        window = engine.max_seq_len or int_or_none(cfg.get("max_position_embeddings"))
        vocab = int_or_none(cfg.get("vocab_size"))
        tp, pp = engine.tensor_parallel_size, 1
        tokens_per_block = 32  # KvCacheConfig / PluginConfig default
        # PyTorch: per request, no build flag (upstream tests/unittest/_torch/sampler/test_return_logits.py);
        # an engine built here at load time is built without context logits (they cost GPU and host memory)
        context_logits = backend == "pytorch"
    if not window:
        raise ConfigurationError(
            f"cannot tell the context window of {model_dir} (no max_seq_len); set max_seq_len in the engine config"
        )
    return LoadPlan(
        backend=backend,
        model_dir=model_dir,
        tokenizer_dir=_tokenizer_dir(engine, model_dir, fmt),
        context_window=int(window),
        model_vocab_size=vocab,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        engine_report=report,
        tokens_per_block=tokens_per_block,
        context_logits=context_logits,
    )


def _tokenizer_dir(engine: TensorRTLLMEngine, model_dir: Path, fmt: str) -> Path:
    if engine._tokenizer_path is not None:
        path = Path(engine._tokenizer_path).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"tokenizer directory {path} does not exist; set `tokenizer` to the HF dir")
        return path
    # a given tokenizer object needs no files, but the runtime still takes a directory
    if fmt == "engine" and engine._given_tokenizer is None and not has_tokenizer_files(model_dir):
        raise ConfigurationError(
            f"engine directory {model_dir} holds no tokenizer files (trtllm-build does not copy them); set "
            "`tokenizer:` to the HF model directory the engine was built from"
        )
    return model_dir
