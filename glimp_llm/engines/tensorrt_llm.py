"""TensorRT-LLM in-process engine: exact glimpse entropy from full generation logits, in-flight batching.

One :class:`TensorRTLLMEngine` drives one TensorRT-LLM ``LLM`` object through its request-level API,
which is the same on both backends (the LLM API of tensorrt-llm 1.x, ``tensorrt_llm.llmapi``):

* a prebuilt **engine directory** runs on the TensorRT backend, ``tensorrt_llm._tensorrt_engine.LLM``
  (tensorrt-llm 1.1 – 1.2.x; the backend was removed after 1.3.0rc20), with the tokenizer from the HF
  directory (or from the engine directory when ``LLM.save``/build_engines put it there);
* an **HF checkpoint** runs on the PyTorch backend, ``tensorrt_llm.LLM``.

Both are created with ``gather_generation_logits=True`` (runtime switch; the build flag alone is not
enough in 1.x), ``enable_chunked_prefill=True`` and ``KvCacheConfig(enable_block_reuse=True,
free_gpu_memory_fraction=...)``. Supported: tensorrt-llm **>= 1.1, < 1.3** (see "Version floor").

Why it is written this way (upstream sources read: ``tensorrt_llm/executor/result.py``
``GenerationResultBase._handle_sequence``/``_handle_response``, ``tensorrt_llm/llmapi/llm.py``
``BaseLLM.generate_async``/``_check_arguments``/``_TrtLLM._build_model``, ``tensorrt_llm/sampling_params.py``
``SamplingParams._validate``/``params_imply_greedy_decoding``, ``tensorrt_llm/executor/base_worker.py``
``_enqueue_request``, ``cpp/tensorrt_llm/batch_manager/llmRequest.cpp`` ``LlmRequest::createResult``/``validate``,
``cpp/tensorrt_llm/batch_manager/trtGptModel.h`` ``TrtGptModel`` (max input length), and the nanobind
``Result`` bindings in ``cpp/tensorrt_llm/nanobind/executor/request.cpp``):

* **Glimpse** = ``generate_async(token_ids, SamplingParams(max_tokens=1, return_generation_logits=True,
  ignore_eos=True))``. ``outputs[0].generation_logits`` is ``[1, vocab_padded]`` on the CPU; the padded rows
  are not ``-inf``, so the row is sliced to ``len(tokenizer)`` before :func:`~glimp_llm.entropy.entropy_from_logits`.
  ``ignore_eos`` is what makes an end-of-sequence glimpse work on the TensorRT backend: there the C++ executor
  leaves the end id out of the output tokens (NVIDIA/TensorRT-LLM#2190, "expected behavior"), and
  ``_handle_sequence`` slices ``generation_logits[src_idx, :output.length]``, so an EOS glimpse would come back
  as a ``[0, vocab]`` tensor and no token. With ``ignore_eos`` the worker sends ``end_id=-1``
  (``_enqueue_request``): the token is returned on both backends and we recognise EOS ourselves.
  Prompts are **token ids**, so the prefix of step *k+1* matches step *k*'s blocks exactly and is reused.
* **Long contexts**: without chunked prefill the PyTorch backend rejects prompts longer than ``max_num_tokens``
  (``_check_arguments``, ``ValueError``) and a TensorRT engine caps prompts at ``min(max_seq_len - 1,
  max_num_tokens)`` (``TrtGptModel``), rejecting longer ones asynchronously (``LlmRequest::validate``).
  ``enable_chunked_prefill=True`` lifts both limits to ``max_seq_len - 1``, the window we advertise. On the
  TensorRT backend it needs paged context FMHA and a paged KV cache, which every engine we load has
  (validation requires them for block reuse anyway).
* **Prefix reuse measured**: the PyTorch backend reports ``RequestOutput.cached_tokens``; the TensorRT backend
  always reports 0 there (``_handle_response`` reads ``getattr(result, "cached_tokens", 0)`` and the C++
  ``Result`` has no such field). There we ask for ``return_perf_metrics`` and count
  ``request_perf_metrics.kv_cache_metrics.num_reused_blocks * tokens_per_block`` (filled per request by
  ``KVCacheManager::addSequence``): a block-granular figure, capped at the prompt length minus one.
* **Steps** stream (``streaming=True``) whenever stop strings are given. The runtime matches ``stop`` strings
  as token sequences *and* on the detokenized text (``DetokenizedGenerationResultBase._handle_response``, which
  then aborts the request); we still match on our own decoded text (``skip_special_tokens=False``, the same
  rule as every other engine) and ``abort()`` the request the moment a stop string or an end-of-sequence token
  appears, so the step ends at the same token whatever the runtime version does.
* **Scoring** (``score``, for the router's verification): ``SamplingParams(max_tokens=1,
  return_context_logits=True)`` on ``context + continuation``; ``RequestOutput.context_logits`` holds one row
  per *recomputed* prompt position (block reuse skips the reused ones), so the rows we read are located from
  the end. The TensorRT backend needs an engine built with ``gather_context_logits`` (the executor rejects the
  request otherwise: "Return context logit need to build engine with gather_context_logits",
  ``executorImpl.cpp``); the PyTorch backend needs nothing at build or load time.
* **Version floor**: ``cache_salt`` arrived after 1.0 (PR 7106, Aug 2025; 1.0 raises ``TypeError`` on a
  salted request), ``cached_tokens`` later (PR 7637), and 1.0 decodes greedily whenever top_k/top_p are unset.
  An installed version below 1.1 is refused at ``start()`` with the reason; an unknown version is
  feature-detected (a configured ``cache_salt`` needs ``generate_async(cache_salt=...)``).
* **Every call is made from inside the running event loop** that started the engine: the runtime
  creates each request's result queue on the loop present at ``generate_async`` time (awaiting fails with
  "The asyncio event loop was not present during initialization" otherwise), and our request limiter
  binds to that loop. Sync callers use :class:`~glimp_llm.manager.BackendManager`'s portal.
* **Concurrency** is the runtime's in-flight batching: concurrent routed requests become concurrent
  ``generate_async`` calls on one ``LLM``; a cancelled caller's request is aborted, which frees its slot.
* **Two engines in one process**: ``free_gpu_memory_fraction`` is a fraction of the memory that is free
  *when that engine allocates its KV cache*, so start the small engine first with a small fraction (the
  manager starts ``small`` and only then ``large``: ``start_in_order``).
  Whether two executors coexist in one process is open point 3 of the reference; the documented fallback
  is one process per model (``backends/tensorrt_llm``: two ``trtllm-serve`` servers and the
  OpenAI-compatible engine).
* ``start()`` constructs the ``LLM`` on the loop's own thread (blocking it for the load): the runtime
  sets up its executor, CUDA and MPI state on the constructing thread, and constructing it on a worker
  thread has not been verified on a GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np

from glimp_llm.chat_template import template_messages
from glimp_llm.engines.base import (
    Completion,
    Delta,
    EngineBase,
    EngineHealth,
    EngineInfo,
    FinishReason,
    Glimpse,
    Message,
    SamplingParams,
    TokenCallback,
    TokenScores,
    vocab_fingerprint,
)
from glimp_llm.engines.decoding import StopMatcher, token_logprob
from glimp_llm.engines.tensorrt_llm_plan import Backend, LoadPlan, plan_load
from glimp_llm.engines.tensorrt_llm_validate import int_or_none, json_object
from glimp_llm.entropy import entropy_from_logits, top_k_logprobs
from glimp_llm.errors import (
    ConfigurationError,
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    MalformedResponseError,
    ModelNotFoundError,
)

log = logging.getLogger("glimp_llm.engines.tensorrt_llm")

#: Every tensorrt_llm name used by this module (and where), for auditing against a new release; each was read in
#: the upstream sources (``llmapi/llm.py``, ``executor/result.py``, the nanobind bindings).
TENSORRT_LLM_NAMES: dict[str, str] = {
    "tensorrt_llm.LLM": "PyTorch backend, HF checkpoints (1.1+)",
    "tensorrt_llm._tensorrt_engine.LLM": "TensorRT backend, engine directories (1.1 - 1.2.x, 1.3.0rc<=20)",
    "tensorrt_llm.SamplingParams": "per-request settings",
    "tensorrt_llm.llmapi.KvCacheConfig": "KV cache: enable_block_reuse, free_gpu_memory_fraction",
    "LLM(model, tokenizer, gather_generation_logits, enable_chunked_prefill, kv_cache_config, tensor_parallel_size, "
    "pipeline_parallel_size, max_batch_size, max_num_tokens, max_seq_len)": "constructor keywords",
    "tensorrt_llm.BuildConfig(max_seq_len, max_input_len, max_batch_size, max_num_tokens, gather_generation_logits)"
    " + plugin_config.use_paged_context_fmha": "TensorRT backend building from an HF checkpoint at load time",
    "LLM.generate_async(inputs, sampling_params, streaming, cache_salt)": "every model call",
    "LLM.shutdown()": "close()",
    "SamplingParams(max_tokens, temperature, top_k, top_p, seed, stop, stop_token_ids, ignore_eos, "
    "include_stop_str_in_output, return_generation_logits, return_context_logits, return_perf_metrics)": "calls",
    "RequestOutput: await, async for, abort(), outputs, finished, cached_tokens, context_logits": "results",
    "CompletionOutput: token_ids, generation_logits, finish_reason, stop_reason, "
    "request_perf_metrics.kv_cache_metrics.num_reused_blocks": "results",
}

#: The tensorrt-llm releases this driver supports (the ``tensorrt`` extra pins the same range).
SUPPORTED_RANGE = ">=1.1,<1.3"
MIN_VERSION = (1, 1)

INSTALL_HINT = (
    f"install tensorrt-llm{SUPPORTED_RANGE} on a Linux host with an NVIDIA GPU and a CUDA 13 driver, Python 3.12 "
    "(tensorrt-llm 1.2 ships wheels for 3.10 and 3.12; glimp-llm needs 3.11+): "
    "`pip install 'glimp-llm[tensorrt]' --extra-index-url https://pypi.nvidia.com` (PyPI alone holds only a stub "
    "that downloads the real wheel from NVIDIA's index), or run inside the NGC container "
    "nvcr.io/nvidia/tensorrt-llm/release:1.2.1 (see docs/deploy-nvidia.md). Without a GPU, use the OpenAI-compatible "
    "engine (kind: openai) against trtllm-serve on a GPU host, or the llama.cpp engine"
)


def version_problem(version: str) -> str | None:
    """Why an installed tensorrt-llm cannot run this driver ("Version floor" in the module docstring), or None,
    also for a version that cannot be read ("unknown"): then the driver feature-detects."""
    major_minor = re.match(r"(\d+)\.(\d+)", version)
    if major_minor is None or (int(major_minor[1]), int(major_minor[2])) >= MIN_VERSION:
        return None
    return (
        f"tensorrt-llm {version} is older than this driver supports ({SUPPORTED_RANGE}): 1.0 has no "
        "generate_async(cache_salt=...) and no RequestOutput.cached_tokens; upgrade with "
        f"pip install 'tensorrt-llm{SUPPORTED_RANGE}' --extra-index-url https://pypi.nvidia.com"
    )


@dataclass(frozen=True)
class Runtime:
    LLM: Any
    SamplingParams: Any
    KvCacheConfig: Any
    version: str
    BuildConfig: Any = None  # the TensorRT backend only: sizes of an engine built at load time


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tensorrt-llm")
    except PackageNotFoundError:
        return "unknown"


def import_runtime(backend: Backend) -> Runtime:
    """Import the TensorRT-LLM classes for ``backend`` lazily; typed error naming what to install and where.

    ``import tensorrt_llm`` is eager and heavy in 1.x (torch, libnvinfer, CUDA, MPI), so it happens only
    here, when an engine starts. ``OSError`` is caught too: a missing libcuda/libpython surfaces as one.
    """
    try:
        from tensorrt_llm import SamplingParams as TrtSamplingParams
        from tensorrt_llm.llmapi import KvCacheConfig
    except (ImportError, OSError) as exc:
        raise EngineUnavailableError(f"TensorRT-LLM cannot be imported ({exc}); {INSTALL_HINT}") from exc
    version = _installed_version()
    if (problem := version_problem(version)) is not None:
        raise EngineUnavailableError(problem)
    if backend == "pytorch":
        try:
            from tensorrt_llm import LLM
        except ImportError as exc:
            raise EngineUnavailableError(f"tensorrt_llm.LLM cannot be imported ({exc}); {INSTALL_HINT}") from exc
        return Runtime(LLM, TrtSamplingParams, KvCacheConfig, version)
    try:
        from tensorrt_llm import BuildConfig
        from tensorrt_llm._tensorrt_engine import LLM as TrtLLM
    except ImportError as exc:
        raise EngineUnavailableError(
            f"tensorrt-llm {version} has no TensorRT-engine backend (tensorrt_llm._tensorrt_engine; it was removed "
            f"after 1.3.0rc20): pin tensorrt-llm{SUPPORTED_RANGE} to load engine directories, or point `model` at "
            f"the HF checkpoint with backend: pytorch ({exc})"
        ) from exc
    return Runtime(TrtLLM, TrtSamplingParams, KvCacheConfig, version, BuildConfig)


def load_hf_tokenizer(path: Path) -> Any:
    """The HF tokenizer of a model directory (``transformers`` is a dependency of tensorrt-llm)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise EngineUnavailableError(
            f"transformers cannot be imported ({exc}); it is installed with tensorrt-llm, so {INSTALL_HINT}"
        ) from exc
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as exc:
        raise ModelNotFoundError(
            f"no HF tokenizer in {path} ({exc}); set `tokenizer:` to the HF model directory the engine was built from"
        ) from exc


def _eos_ids(tokenizer: Any, dirs: Sequence[Path]) -> frozenset[int]:
    """EOS ids from the tokenizer and the model's ``generation_config.json`` (Qwen lists two): never hard-coded."""
    ids: set[int] = set()
    if isinstance(getattr(tokenizer, "eos_token_id", None), int):
        ids.add(tokenizer.eos_token_id)
    for d in dirs:
        gc = d / "generation_config.json"
        if gc.is_file():
            value = json_object(gc, "a generation config", "copy the model's file again").get("eos_token_id")
            # bool is an int subclass: true/false are not token ids
            ids.update(v for v in (value if isinstance(value, list) else [value]) if type(v) is int)
            break
    return frozenset(ids)


def logits_row(logits: Any, vocab_size: int, *, engine: str) -> np.ndarray:
    """The first generated position's logits (``generation_logits`` is ``[tokens, vocab_padded]``) as float32
    numpy, checked to cover the real vocabulary."""
    if logits is None:
        raise EngineFailureError(
            f"engine {engine!r} returned no generation_logits: the LLM must run with gather_generation_logits=True "
            "and the request must set return_generation_logits=True (the driver does both); on the PyTorch backend "
            "generation logits are unsupported together with speculative decoding — disable it for the small model",
            engine=engine,
        )
    arr = _host_array(logits)
    if arr.ndim == 2 and arr.shape[0] >= 1:
        arr = arr[0]
    elif arr.ndim == 2:
        # what the TensorRT backend returns for an EOS token when end ids are not ignored: result.py slices
        # generation_logits to [:len(token_ids)] and the end id is not in token_ids
        raise MalformedResponseError(
            f"engine {engine!r}: generation_logits has no rows (shape {arr.shape}): the request ended on an end id "
            "without ignore_eos=True",
            engine=engine,
        )
    elif arr.ndim != 1:
        raise MalformedResponseError(
            f"engine {engine!r}: generation_logits has shape {arr.shape}, expected [tokens, vocab]", engine=engine
        )
    if arr.shape[0] < vocab_size:
        raise EngineFailureError(
            f"engine {engine!r}: the logits are {arr.shape[0]} wide but the tokenizer has {vocab_size} entries: the "
            "tokenizer belongs to another model; set `tokenizer:` to the model's own HF directory",
            engine=engine,
        )
    return arr


def _host_array(logits: Any) -> np.ndarray:
    """A runtime logits tensor as float32 numpy: a CPU ``torch.Tensor``, often bf16, which numpy cannot hold
    (hence ``.float()`` first); array-likes are taken as they are."""
    if hasattr(logits, "float") and hasattr(logits, "cpu"):
        logits = logits.float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32)


def _accepts_keyword(func: Any, name: str) -> bool:
    """Whether ``func`` takes the keyword ``name`` (feature detection where the version is unknown)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: let the call decide
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class _TextStream:
    """Token ids -> text deltas with the model's own tokenizer, never splitting a multi-byte character.

    ``tokenizers``' ``DecodeStream`` does the incremental part (a character whose bytes span tokens is held
    back until it is whole; SentencePiece leading spaces and byte-level pieces come out right, since it
    decodes against the tokens before); :meth:`flush` hands out what it still holds when the step ends.
    """

    def __init__(self, tokenizer: Any, decode_stream: Any) -> None:
        self._tokenizer = tokenizer
        self._stream = decode_stream(skip_special_tokens=False)
        self._ids: list[int] = []
        self._text = ""

    def push(self, token: int) -> str:
        self._ids.append(token)
        piece = self._stream.step(self._tokenizer, token) or ""
        self._text += piece
        return piece

    def flush(self) -> str:
        """The rest of the step's text (an incomplete character at its end decodes to U+FFFD)."""
        full = str(self._tokenizer.decode(self._ids, skip_special_tokens=False))
        tail = full[len(self._text) :] if full.startswith(self._text) else ""
        self._text += tail
        return tail


def _text_streams(tokenizer: Any, tokenizer_dir: Path) -> Callable[[], _TextStream]:
    """A factory of :class:`_TextStream` over the ``tokenizers.Tokenizer`` behind an HF fast tokenizer (or
    the directory's ``tokenizer.json``); checked at start, so a missing piece fails there and not mid-step."""
    try:
        from tokenizers import Tokenizer
        from tokenizers.decoders import DecodeStream
    except ImportError as exc:  # DecodeStream arrived in tokenizers 0.21
        raise EngineUnavailableError(
            f"tokenizers>=0.21 cannot be imported ({exc}): pip install 'tokenizers>=0.21' (transformers brings it)"
        ) from exc
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        path = tokenizer_dir / "tokenizer.json"
        if not path.is_file():
            raise ConfigurationError(
                f"the tokenizer in {tokenizer_dir} is not a fast tokenizer and there is no tokenizer.json: steps "
                "are decoded incrementally with the tokenizers library; use the model's own HF tokenizer directory"
            )
        backend = Tokenizer.from_file(str(path))
    return lambda: _TextStream(backend, DecodeStream)


@dataclass
class _Collector:
    """Applies the engine contract's end conditions to the tokens a request produced, as they arrive."""

    decoder: _TextStream
    eos_ids: frozenset[int]
    matcher: StopMatcher
    on_token: TokenCallback | None
    seen: int = 0
    tokens: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    stop_string: str | None = None

    def feed(self, cumulative: Sequence[int]) -> bool:
        """Take the new part of a cumulative ``token_ids``; True once the output is complete (the caller then
        stops feeding)."""
        new = cumulative[self.seen :]
        self.seen = len(cumulative)
        for tok in new:
            if tok in self.eos_ids:
                self.finish = "eos"  # the EOS token is not part of the output
                break
            self.tokens.append(tok)
            self._emit((tok,), self.decoder.push(tok))
            if self.finish is not None:
                break
        return self.finish is not None

    def close(self) -> None:
        tail = self.decoder.flush()
        if tail:
            self._emit((), tail)

    def _emit(self, token_ids: tuple[int, ...], piece: str) -> None:
        if self.on_token is not None:
            self.on_token(Delta(token_ids, piece))
        hit = self.matcher.feed(piece)
        if hit is not None and self.finish is None:
            self.finish, self.stop_string = "stop", hit


class TensorRTLLMEngine(EngineBase):
    """The engine contract (:class:`~glimp_llm.engines.base.Engine`) on TensorRT-LLM. See the module docstring."""

    backend_name = "tensorrt_llm"
    window_fix = "shorten the prompt, lower max_tokens, or rebuild the engine with a larger --max_seq_len"
    #: BackendManager starts such engines one after the other (small first), never concurrently: see
    #: "Two engines in one process" in the module docstring.
    start_in_order = True

    def __init__(
        self,
        model: str | Path,
        *,
        name: str = "tensorrt_llm",
        tokenizer: str | Path | Any | None = None,
        backend: Literal["auto", "tensorrt", "pytorch"] = "auto",
        free_gpu_memory_fraction: float = 0.45,
        max_batch_size: int | None = None,
        max_num_tokens: int | None = None,
        max_seq_len: int | None = None,
        tensor_parallel_size: int = 1,
        cache_salt: str | None = None,
        max_concurrency: int = 256,
    ) -> None:
        """``tokenizer`` is an HF directory, or an already-loaded HF tokenizer object (shared between two
        engines, or supplied by tests). ``tensor_parallel_size`` applies to HF checkpoints; an engine
        directory carries its own mapping (a value other than 1 must then agree with it)."""
        if not 0.0 < free_gpu_memory_fraction <= 1.0:
            raise ConfigurationError(
                f"free_gpu_memory_fraction={free_gpu_memory_fraction}: use a fraction in (0, 1], e.g. 0.15 for the "
                "small model and 0.8 for the large one (each is a fraction of the memory free when it loads)"
            )
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency={max_concurrency}: allow at least one request at a time")
        super().__init__(name=name)
        self.model = str(model)
        self.backend_choice = backend
        self.free_gpu_memory_fraction = free_gpu_memory_fraction
        self.max_batch_size = max_batch_size
        self.max_num_tokens = max_num_tokens
        self.max_seq_len = max_seq_len
        self.tensor_parallel_size = tensor_parallel_size
        self.cache_salt = cache_salt
        self.max_concurrency = max_concurrency
        self._tokenizer_path = tokenizer if isinstance(tokenizer, str | Path) else None
        self._given_tokenizer = None if isinstance(tokenizer, str | Path) else tokenizer
        self._tokenizer: Any = None
        self._llm: Any = None
        self._runtime: Runtime | None = None
        self._plan: LoadPlan | None = None
        self._text_stream: Callable[[], _TextStream] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._active: set[Any] = set()
        #: Diagnostics (the GPU smoke test): keep the raw ``generation_logits`` of the latest glimpse, so its
        #: entropy can be recomputed independently from the very request that produced it.
        self.keep_last_logits = False
        self.last_logits: Any = None

    def plan(self) -> LoadPlan:
        """What :meth:`start` will construct, from the files alone (no GPU needed): see :func:`plan_load`."""
        return plan_load(self)

    # ------------------------------------------------------------------------------- lifecycle
    async def _start(self) -> EngineInfo:
        plan = self.plan()
        runtime = import_runtime(plan.backend)
        tokenizer = load_hf_tokenizer(plan.tokenizer_dir) if self._given_tokenizer is None else self._given_tokenizer
        real_vocab = len(tokenizer)
        if plan.model_vocab_size is not None and real_vocab > plan.model_vocab_size:
            raise ConfigurationError(
                f"the tokenizer in {plan.tokenizer_dir} has {real_vocab} entries but {plan.model_dir} has a "
                f"{plan.model_vocab_size}-wide vocabulary: the tokenizer belongs to another model"
            )
        info = self._make_info(plan, tokenizer, real_vocab)  # every tokenizer check before the minutes-long load
        kv = runtime.KvCacheConfig(enable_block_reuse=True, free_gpu_memory_fraction=self.free_gpu_memory_fraction)
        kwargs = plan.llm_kwargs(runtime, kv, self)
        log.info(
            "%s: loading %s (%s backend, tensorrt-llm %s)", self.name, plan.model_dir, plan.backend, runtime.version
        )
        try:
            llm = runtime.LLM(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"TensorRT-LLM rejected the settings for {plan.model_dir} on the {plan.backend} backend: {exc}"
            ) from exc
        except Exception as exc:  # CUDA/MPI/runtime failures: the engine cannot be used
            text = str(exc).lower()
            if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__ or "out of memory" in text:
                raise EngineUnavailableError(
                    f"out of GPU memory while loading {plan.model_dir} ({exc}); lower free_gpu_memory_fraction (now "
                    f"{self.free_gpu_memory_fraction}; it is a share of the memory free when this engine loads), load "
                    "the small engine first, or run one process per model (backends/tensorrt_llm)"
                ) from exc
            raise EngineUnavailableError(
                f"TensorRT-LLM failed to load {plan.model_dir} ({type(exc).__name__}: {exc}); check the GPU "
                f"(nvidia-smi), the tensorrt-llm version ({runtime.version}; engines must be built by the same "
                "version) and the logs above"
            ) from exc
        if self.cache_salt is not None and not _accepts_keyword(llm.generate_async, "cache_salt"):
            with contextlib.suppress(Exception):
                llm.shutdown()
            raise ConfigurationError(
                f"cache_salt is set but tensorrt-llm {runtime.version} has no generate_async(cache_salt=...) (it "
                f"arrived after 1.0): upgrade to tensorrt-llm{SUPPORTED_RANGE}, or drop cache_salt"
            )
        self._loop = asyncio.get_running_loop()
        self._limiter = anyio.CapacityLimiter(self.max_concurrency)  # FIFO; counts who holds and who waits
        self._text_stream = _text_streams(tokenizer, plan.tokenizer_dir)
        self._tokenizer, self._llm, self._runtime, self._plan = tokenizer, llm, runtime, plan
        return info

    def _make_info(self, plan: LoadPlan, tokenizer: Any, real_vocab: int) -> EngineInfo:
        get_vocab = getattr(tokenizer, "get_vocab", None)
        fingerprint = vocab_fingerprint(get_vocab()) if callable(get_vocab) else f"unknown:{plan.tokenizer_dir}"
        bos_id = getattr(tokenizer, "bos_token_id", None)
        add_bos = isinstance(bos_id, int) and list(tokenizer.encode("a", add_special_tokens=True))[:1] == [bos_id]
        eos_ids = _eos_ids(tokenizer, [plan.tokenizer_dir, plan.model_dir])
        if not eos_ids:
            raise ConfigurationError(
                f"the tokenizer in {plan.tokenizer_dir} names no EOS token (eos_token_id) and there is no "
                "generation_config.json: generation could never end; use the model's own HF tokenizer directory"
            )
        template = getattr(tokenizer, "chat_template", None)
        if not plan.context_logits:
            log.info("%s: score() is unavailable: %s", self.name, self._no_score_reason(plan))
        return EngineInfo(
            name=self.name,
            model=str(plan.model_dir),
            backend=f"{self.backend_name}[{plan.backend}]",
            vocab_size=real_vocab,
            context_window=plan.context_window,
            eos_token_ids=eos_ids,
            tokenizer_fingerprint=fingerprint,
            entropy_kind="exact",
            batches_in_flight=True,
            chat_template=template if isinstance(template, str) else None,
            bos_token=str(getattr(tokenizer, "bos_token", None) or ""),
            eos_token=str(getattr(tokenizer, "eos_token", None) or ""),
            add_bos=add_bos,
            can_score=plan.context_logits,
        )

    def _no_score_reason(self, plan: LoadPlan) -> str:
        if plan.backend == "tensorrt" and plan.engine_report is not None:
            return (
                f"engine {plan.model_dir} was built without context logits; rebuild it with trtllm-build "
                "--gather_context_logits (build_engines: settings gather_context_logits: true), or load the HF "
                "checkpoint on the PyTorch backend, which needs no build flag"
            )
        return (
            f"the TensorRT backend builds {plan.model_dir} at load time without context logits; build an engine "
            "with --gather_context_logits (python -m build_engines) or use backend: pytorch"
        )

    async def _close(self) -> None:
        for out in list(self._active):
            with contextlib.suppress(Exception):
                out.abort()
        llm, self._llm = self._llm, None
        if llm is not None:
            try:
                llm.shutdown()
            except Exception as exc:  # closing must not raise; the process is going away or reusing the GPU
                log.warning("%s: TensorRT-LLM shutdown failed: %r", self.name, exc)

    async def _health(self) -> EngineHealth:
        assert self._limiter is not None
        in_flight, queued = int(self._limiter.borrowed_tokens), self._limiter.statistics().tasks_waiting
        return EngineHealth(ok=True, detail="ready", in_flight=in_flight, queued=queued)

    def _require_llm(self) -> Any:
        self._require_started()
        if asyncio.get_running_loop() is not self._loop:
            raise EngineUnavailableError(
                f"engine {self.name!r} was started on another event loop: TensorRT-LLM requests must be made from "
                "inside the loop that owns the engine; use Glimp or a sync BackendManager (their EnginePortal)"
            )
        return self._llm

    # ------------------------------------------------------------------------------------ text
    @property
    def tokenizer(self) -> Any:
        self._require_llm()
        return self._tokenizer

    async def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        tokenizer = self.tokenizer
        return str(tokenizer.decode(self._check_ids(token_ids), skip_special_tokens=False))

    async def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        tok = self.tokenizer
        conversation = template_messages(messages)
        if not getattr(tok, "chat_template", None):
            raise ConfigurationError(
                f"the tokenizer of {self.model} has no chat template; use an instruct/chat model's tokenizer directory"
            )
        try:
            return str(
                tok.apply_chat_template(
                    conversation,
                    tools=list(tools) if tools else None,
                    add_generation_prompt=add_generation_prompt,
                    tokenize=False,
                )
            )
        except Exception as exc:  # jinja2 errors, raise_exception() in the template
            raise InvalidRequestError(f"the model's chat template failed on these messages: {exc}") from exc

    # ----------------------------------------------------------------------------- model calls
    def _params(self, sampling: SamplingParams, **fields: Any) -> Any:
        """Our sampling settings as TensorRT-LLM ``SamplingParams``.

        Greedy is the runtime default (temperature, top_k and top_p all unset). In 1.1+ the runtime samples
        whenever a temperature above 0 is given, and decodes greedily for temperature 0, top_k 1 or top_p 0
        (``SamplingParams.params_imply_greedy_decoding``); we pass ``top_p`` explicitly anyway, so that our
        top_p (default 1.0) is what the runtime applies. On the TensorRT backend every request asks for its
        perf metrics: they carry the reused KV blocks, the only reuse figure that backend reports.
        """
        assert self._runtime is not None
        assert self._plan is not None
        if not sampling.greedy:
            fields["temperature"] = sampling.temperature
            fields["top_p"] = sampling.top_p
            if sampling.top_k > 0:
                fields["top_k"] = sampling.top_k
        if sampling.seed is not None:
            fields["seed"] = sampling.seed
        if self._plan.backend == "tensorrt":
            fields["return_perf_metrics"] = True
        try:
            return self._runtime.SamplingParams(**fields)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"TensorRT-LLM rejected the sampling settings {fields}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _request(
        self, ids: list[int], params: Any, *, streaming: bool, cache_salt: str | None = None
    ) -> AsyncIterator[Any]:
        """One runtime request: at most ``max_concurrency`` at a time (the rest wait FIFO), aborted on
        cancellation or early exit, errors typed."""
        llm = self._require_llm()
        assert self._limiter is not None
        kwargs: dict[str, Any] = {"sampling_params": params, "streaming": streaming}
        salt = cache_salt if cache_salt is not None else self.cache_salt
        if salt is not None:
            kwargs["cache_salt"] = salt
        out: Any = None
        async with self._limiter:
            in_flight = int(self._limiter.borrowed_tokens)
            self._stats.extra["max_in_flight"] = max(self._stats.extra.get("max_in_flight", 0), in_flight)
            try:
                with self._counted(f"TensorRT-LLM request on engine {self.name!r} failed"):
                    try:
                        out = llm.generate_async(ids, **kwargs)
                    except ValueError as exc:  # _check_arguments: prompt + max_tokens > max_seq_len, bad params
                        raise InvalidRequestError(f"TensorRT-LLM rejected the request to {self.name!r}: {exc}") from exc
                    except TypeError as exc:  # a keyword this version lacks (cache_salt before 1.1)
                        raise EngineUnavailableError(
                            f"tensorrt-llm {self._runtime.version if self._runtime else '?'} does not accept this "
                            f"request ({exc}); this driver needs tensorrt-llm{SUPPORTED_RANGE}"
                        ) from exc
                    self._active.add(out)
                    yield out
            finally:
                # stopped reading early (stop string or EOS seen), cancelled or failed: free the slot now
                if out is not None:
                    self._active.discard(out)
                    if not getattr(out, "finished", True):
                        with contextlib.suppress(Exception):
                            out.abort()

    def _count_prompt(self, out: Any, completion: Any, prompt_tokens: int) -> int:
        """Count the prompt's tokens as reused (served from KV blocks, as each backend can tell: see "Prefix
        reuse measured") or evaluated; return the reused ones."""
        assert self._plan is not None
        if self._plan.backend == "pytorch":
            reused = int_or_none(getattr(out, "cached_tokens", None)) or 0
        else:
            metrics = getattr(completion, "request_perf_metrics", None)
            blocks = int_or_none(getattr(getattr(metrics, "kv_cache_metrics", None), "num_reused_blocks", None)) or 0
            reused = min(max(blocks, 0) * self._plan.tokens_per_block, max(prompt_tokens - 1, 0))
        self._stats.tokens_reused += reused
        self._stats.tokens_evaluated += prompt_tokens - reused
        return reused

    def _check_finish(self, completion: Any) -> Any:
        """``completion`` (a ``CompletionOutput``), unless the runtime timed its request out."""
        if completion.finish_reason == "timeout":
            raise EngineTimeoutError(f"TensorRT-LLM timed out the request on engine {self.name!r}", engine=self.name)
        return completion

    async def glimpse(self, context: Sequence[int], sampling: SamplingParams, *, top_logprobs: int = 0) -> Glimpse:
        ids = self._check_context(context)
        info = self.info
        # ignore_eos: an EOS token comes back as a token with its logits row on both backends (module docstring)
        params = self._params(sampling, max_tokens=1, return_generation_logits=True, ignore_eos=True)
        t0 = time.perf_counter()
        async with self._request(ids, params, streaming=False) as out:
            await out
            completion = self._check_finish(out.outputs[0])
            if self.keep_last_logits:
                self.last_logits = completion.generation_logits
            row = logits_row(completion.generation_logits, info.vocab_size, engine=self.name)[: info.vocab_size]
            entropy = entropy_from_logits(row, info.vocab_size)
            if not completion.token_ids:
                raise MalformedResponseError(
                    f"engine {self.name!r} returned no token for a glimpse (finish_reason="
                    f"{completion.finish_reason!r})",
                    engine=self.name,
                )
            token = int(completion.token_ids[0])
            if not 0 <= token < info.vocab_size:
                raise MalformedResponseError(
                    f"engine {self.name!r} produced token {token} outside the {info.vocab_size}-token vocabulary",
                    engine=self.name,
                )
            reused = self._count_prompt(out, completion, len(ids))
        is_eos = token in info.eos_token_ids
        self._stats.glimpses += 1
        return Glimpse(
            token_id=token,
            text="" if is_eos else await self.detokenize([token]),
            logprob=token_logprob(row, token),
            entropy=entropy,
            entropy_kind="exact",
            is_eos=is_eos,
            top_logprobs=tuple(top_k_logprobs(row, top_logprobs, info.vocab_size)) if top_logprobs > 0 else (),
            seconds=time.perf_counter() - t0,
            cached_tokens=reused,
        )

    async def generate(
        self,
        context: Sequence[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        sampling: SamplingParams = SamplingParams(),
        on_token: TokenCallback | None = None,
    ) -> Completion:
        max_tokens = self._step_budget(context, max_tokens)
        ids = self._check_context(context)
        info = self.info
        stops = [s for s in stop if s]
        fields: dict[str, Any] = {"max_tokens": max_tokens, "stop_token_ids": sorted(info.eos_token_ids)}
        if stops:
            fields.update(stop=stops, include_stop_str_in_output=True)
        params = self._params(sampling, **fields)
        assert self._text_stream is not None
        collector = _Collector(
            decoder=self._text_stream(),
            eos_ids=info.eos_token_ids,
            matcher=StopMatcher(stops),
            on_token=on_token,
        )
        streaming = bool(stops) or on_token is not None
        t0 = time.perf_counter()
        async with self._request(ids, params, streaming=streaming) as out:
            if streaming:  # each response is the same RequestOutput, updated in place
                async for part in out:
                    if collector.feed(part.outputs[0].token_ids):
                        break
            else:
                await out
                collector.feed(out.outputs[0].token_ids)
            collector.close()
            completion = self._check_finish(out.outputs[0])
            reused = self._count_prompt(out, completion, len(ids))
        finish, stop_string = collector.finish, collector.stop_string
        if finish is None:
            finish, stop_string = self._runtime_finish(completion)
        self._stats.generate_calls += 1
        self._stats.tokens_generated += len(collector.tokens)
        return Completion(
            token_ids=tuple(collector.tokens),
            text=collector.matcher.text,
            finish_reason=finish,
            stop_string=stop_string,
            prompt_tokens=len(ids),
            cached_tokens=reused,
            seconds=time.perf_counter() - t0,
        )

    def _runtime_finish(self, completion: Any) -> tuple[FinishReason, str | None]:
        """Map the runtime's finish reason when our own checks saw no EOS token and no stop string."""
        reason = completion.finish_reason
        if reason in ("length", "cancelled"):
            return reason, None
        if reason == "stop":  # a stop string, else the end id (or a stop token id = an EOS id) the runtime strips
            stop_reason = getattr(completion, "stop_reason", None)
            return ("stop", stop_reason) if isinstance(stop_reason, str) else ("eos", None)
        raise MalformedResponseError(
            f"engine {self.name!r} ended a request with finish_reason={reason!r}; expected stop/length/cancelled",
            engine=self.name,
        )

    # ------------------------------------------------------------------------------------ score
    async def score(self, context: Sequence[int], continuation: Sequence[int]) -> TokenScores:
        """Log-probabilities of ``continuation`` after ``context``, from the context logits of one request
        ("Scoring" in the module docstring; upstream's tests/unittest/_torch/sampler/test_return_logits.py
        accepts either length of them). The request leaves the prefix cache holding the whole sequence (the
        catch-up prefill the next step needs anyway). When reuse covered part of the continuation (the same
        tokens scored twice), the request is repeated once with a fresh ``cache_salt``, which disables reuse."""
        info = self.info
        if not info.can_score:
            assert self._plan is not None
            raise EngineUnavailableError(f"engine {self.name!r} cannot score: {self._no_score_reason(self._plan)}")
        ids = self._check_score(context, continuation)
        cont = ids[len(context) :]
        if not cont:
            return TokenScores(logprobs=())
        t0 = time.perf_counter()
        params = self._params(SamplingParams(), max_tokens=1, return_context_logits=True)
        need = len(context) - 1  # the position whose logits predict cont[0]
        rows, first, reused = await self._context_rows(ids, params, cache_salt=None)
        if first > need:
            log.info("%s: block reuse covered scored tokens; scoring again without reuse", self.name)
            rows, first, reused = await self._context_rows(ids, params, cache_salt=f"glimp-score-{uuid.uuid4().hex}")
            if first > need:
                raise MalformedResponseError(
                    f"engine {self.name!r} returned context logits for positions {first}.. only, but position {need} "
                    "was needed even without block reuse",
                    engine=self.name,
                )
        block = rows[need - first : need - first + len(cont), : info.vocab_size].astype(np.float64)
        top = block.max(axis=1, keepdims=True)
        logp = block - (top + np.log(np.exp(block - top).sum(axis=1, keepdims=True)))  # log-softmax per row
        self._stats.extra["score_calls"] = self._stats.extra.get("score_calls", 0) + 1
        return TokenScores(
            logprobs=tuple(logp[np.arange(len(cont)), cont].tolist()),
            best_logprobs=tuple(logp.max(axis=1).tolist()),
            best_ids=tuple(logp.argmax(axis=1).tolist()),
            seconds=time.perf_counter() - t0,
            cached_tokens=reused,
        )

    async def _context_rows(
        self, ids: list[int], params: Any, *, cache_salt: str | None
    ) -> tuple[np.ndarray, int, int]:
        """``(rows, first_position, reused)``: the context logits as float32 ``[rows, vocab_padded]`` and the
        prompt position of their first row."""
        async with self._request(ids, params, streaming=False, cache_salt=cache_salt) as out:
            await out
            completion = self._check_finish(out.outputs[0])
            logits = getattr(out, "context_logits", None)
            reused = self._count_prompt(out, completion, len(ids))
        if logits is None:
            raise EngineFailureError(
                f"engine {self.name!r} returned no context_logits although return_context_logits=True was set",
                engine=self.name,
            )
        arr = _host_array(logits)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or not 1 <= arr.shape[0] <= len(ids) or arr.shape[1] < self.info.vocab_size:
            raise MalformedResponseError(
                f"engine {self.name!r}: context_logits has shape {arr.shape} for a {len(ids)}-token prompt; expected "
                f"[recomputed positions, >= {self.info.vocab_size}]",
                engine=self.name,
            )
        return arr, len(ids) - arr.shape[0], reused
