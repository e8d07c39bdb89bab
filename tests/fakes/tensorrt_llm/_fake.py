"""Tests only: a faithful fake of the tensorrt_llm 1.1/1.2 API surface glimp-llm uses (see __init__.py).

It is exactly as unkind as the real runtime wherever the driver depends on it; each point names the
upstream source it was read from (NVIDIA/TensorRT-LLM) and has a test of the fake itself in
tests/test_tensorrt_llm_engine.py:

* ``SamplingParams``/``KvCacheConfig`` are dataclasses with exactly the appendix's fields (an unknown keyword is a
  ``TypeError``). Validation as ``SamplingParams._validate`` (sampling_params.py, 1.1+): ``top_p`` in [0, 1],
  ``top_k >= 0``, ``temperature >= 0``, ``best_of >= n``; **no** ``max_tokens`` check. Greedy as
  ``params_imply_greedy_decoding``: temperature, top_k and top_p all unset, or top_k 1, top_p 0 or temperature 0;
  a temperature alone samples.
* ``LLM`` (PyTorch backend) rejects TensorRT-only arguments with the real message; both constructors reject
  keywords outside the appendix lists; tensor parallelism beyond the (one) fake GPU raises ``RuntimeError``.
* Length checks as each backend does them (llm.py ``BaseLLM._check_arguments``, base_worker.py
  ``_deduce_max_tokens``, llmRequest.cpp ``LlmRequest::validate``, trtGptModel.h ``TrtGptModel``):
  PyTorch: prompt > ``max_num_tokens`` is a ``ValueError`` unless ``enable_chunked_prefill``; a prompt that leaves
  no room under ``max_seq_len`` is a ``RequestError``; a larger ``max_tokens`` is clamped. TensorRT: prompt +
  max_tokens > ``max_seq_len`` is a ``ValueError`` in Python unless chunked prefill is on; a prompt longer than the
  executor's max input length (``min(max_seq_len - 1, max_num_tokens)``, or ``max_seq_len - 1`` with chunked
  context) fails *asynchronously* (awaiting the result raises ``RequestError``). Chunked context on the
  TensorRT backend needs paged context FMHA (``TrtGptModelInflightBatching``).
* End ids (worker ``_enqueue_request``: ``end_id=-1`` when ``ignore_eos``): the TensorRT backend leaves the end id
  out of ``token_ids`` (NVIDIA/TensorRT-LLM#2190) while its logits row exists, and ``result.py`` slices
  ``generation_logits[:len(token_ids)]``, so an EOS-only request returns ``[0, vocab]``; the PyTorch sampler
  (``TorchSampler.update_requests``: ``add_token`` then ``_handle_stop_criteria``) keeps the EOS token.
* ``generation_logits`` is a CPU tensor-like (``.float().cpu().numpy()``), padded rows at logit 0 (not -inf);
  non-streaming: ``[tokens, vocab_padded]``; streaming: only the rows of the tokens new in that response
  (``LlmRequest::createResult`` slices the current step).
* Stop strings are matched as token sequences (stop words) *and* on the detokenized text, after which the
  result aborts the request (``DetokenizedGenerationResultBase._handle_response``); the text is cut at the stop
  string, ``token_ids`` are not.
* ``cached_tokens`` is reported on the PyTorch backend only (``_handle_response``:
  ``getattr(response_result, 'cached_tokens', 0)``; the C++ ``Result`` bindings have no such field). The TensorRT
  backend reports reused blocks in ``request_perf_metrics.kv_cache_metrics.num_reused_blocks`` when
  ``return_perf_metrics`` is set (``LlmRequest::createResult``).
* Context logits (``return_context_logits``): one row per *recomputed* prompt position (reused blocks are
  skipped). TensorRT: the engine must be built with ``gather_context_logits``, else the request fails
  asynchronously ("Return context logit need to build engine with gather_context_logits", executorImpl.cpp);
  PyTorch: no flag needed.
* ``save()`` writes what the real one writes (llm_utils.py ``save``: ``engine.save`` + rank 0
  ``tokenizer.save_pretrained``): config.json, rank engines and the tokenizer files, **not**
  ``generation_config.json``.
* ``RequestOutput``/``CompletionOutput`` carry the real attribute names; ``abort()`` ends a request with
  finish_reason "cancelled"; a request made without a running event loop cannot be awaited.

The "model" is the scripted engine's distribution (``fake_script.json`` in the model directory, the stand-in
for weights), over the fake tokenizer's vocabulary (tests/fakes/transformers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PAD_LOGIT = 0.0
#: What ``PreTrainedTokenizerFast.save_pretrained`` writes (no generation_config.json: that is the model's).
SAVE_PRETRAINED_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
FAKE_GPUS = 1
INSTANCES: list[Any] = []  # every LLM created, so tests can look at their executors


def _names(text: str) -> list[str]:
    """The appendix's space-separated keyword lists, as written there."""
    return text.split()


_COMMON = _names(
    "model tokenizer tokenizer_mode skip_tokenizer_init trust_remote_code tensor_parallel_size dtype "
    "revision tokenizer_revision pipeline_parallel_size context_parallel_size gpus_per_node "
    "moe_cluster_parallel_size moe_tensor_parallel_size moe_expert_parallel_size enable_attention_dp "
    "enable_lm_head_tp_in_adp cp_config load_format fail_fast_on_attention_window_too_large enable_lora "
    "lora_config kv_cache_config enable_chunked_prefill guided_decoding_backend batched_logits_processor "
    "iter_stats_max_iterations request_stats_max_iterations peft_cache_config scheduler_config "
    "cache_transceiver_config sparse_attention_config speculative_config max_batch_size max_input_len "
    "max_seq_len max_beam_width max_num_tokens gather_generation_logits num_postprocess_workers "
    "postprocess_tokenizer_dir reasoning_parser decoding_config mpi_session backend return_perf_metrics "
    "orchestrator_type "
)
TORCH_ARGS = frozenset(
    _COMMON
    + _names(
        "garbage_collection_gen0_threshold cuda_graph_config attention_dp_config disable_overlap_scheduler "
        "moe_config attn_backend sampler_type enable_iter_perf_stats enable_iter_req_stats print_iter_log "
        "perf_metrics_max_requests batch_wait_timeout_ms batch_wait_timeout_iters batch_wait_max_tokens_ratio "
        "torch_compile_config enable_autotuner enable_layerwise_nvtx_marker enable_min_latency "
        "stream_interval force_dynamic_quantization allreduce_strategy checkpoint_loader checkpoint_format "
        "kv_connector_config mm_encoder_only ray_worker_extension_cls "
    )
)
TRT_ARGS = frozenset(
    _COMMON
    + _names(
        "enable_tqdm workspace enable_build_cache extended_runtime_perf_knob_config calib_config quant_config "
        "embedding_parallel_mode fast_build build_config enable_prompt_adapter max_prompt_adapter_token "
        "batching_type normalize_log_probs "
    )
)
# reference §1.3: the PyTorch LLM raises on TensorRT-only arguments such as build_config
TRT_ONLY = (TRT_ARGS - TORCH_ARGS) | {"build_config"}


@dataclass
class SamplingParams:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    bad: Any = None
    bad_token_ids: list[int] | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    embedding_bias: Any = None
    logits_processor: Any = None
    apply_batched_logits_processor: bool = False
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    top_p: float | None = None
    top_p_min: float | None = None
    top_p_reset_ids: int | None = None
    top_p_decay: float | None = None
    seed: int | None = None
    temperature: float | None = None
    min_tokens: int | None = None
    beam_search_diversity_rate: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    prompt_ignore_length: int | None = None
    length_penalty: float | None = None
    early_stopping: int | None = None
    no_repeat_ngram_size: int | None = None
    min_p: float | None = None
    beam_width_array: list[int] | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_from_output: bool = True
    return_encoder_output: bool = False
    return_perf_metrics: bool = False
    additional_model_outputs: list[str] | None = None
    lookahead_config: Any = None
    guided_decoding: Any = None
    ignore_eos: bool = False
    detokenize: bool = True
    add_special_tokens: bool = True
    truncate_prompt_tokens: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True

    def __post_init__(self) -> None:
        self.best_of = self.best_of or self.n
        # sampling_params.py SamplingParams._validate (1.1+): no max_tokens check
        if self.top_p is not None and (self.top_p < 0 or self.top_p > 1):
            raise ValueError(f"require 0 <= top_p <= 1, got top_p={self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"require top_k >= 0, got top_k={self.top_k}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"require temperature >= 0, got temperature={self.temperature}")
        if self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) cannot be less than n ({self.n})")

    @staticmethod
    def params_imply_greedy_decoding(*, temperature: float | None, top_p: float | None, top_k: int | None) -> bool:
        return (
            (temperature is None and top_p is None and top_k is None) or top_k == 1 or top_p == 0.0 or temperature == 0
        )

    @property
    def _greedy_decoding(self) -> bool:
        return not self.use_beam_search and self.params_imply_greedy_decoding(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
        )


@dataclass
class KvCacheConfig:
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    max_attention_window: list[int] | None = None
    sink_token_length: int | None = None
    free_gpu_memory_fraction: float | None = 0.9
    host_cache_size: int | None = None
    onboard_blocks: bool = True
    cross_kv_cache_fraction: float | None = None
    secondary_offload_min_priority: int | None = None
    event_buffer_max_size: int = 0
    attention_dp_events_gather_period_ms: int = 5
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0
    dtype: str = "auto"
    mamba_ssm_cache_dtype: str = "auto"
    tokens_per_block: int = 32

    def __post_init__(self) -> None:
        f = self.free_gpu_memory_fraction
        if f is not None and not 0.0 <= f <= 1.0:
            raise ValueError(f"free_gpu_memory_fraction must be within [0, 1], got {f}")


@dataclass(slots=True)  # slots: a misspelt attribute raises AttributeError, as on the real pydantic models
class PluginConfig:
    use_paged_context_fmha: bool = True
    tokens_per_block: int = 32
    paged_kv_cache: bool = True
    gemm_plugin: str | None = "auto"


@dataclass(slots=True)
class BuildConfig:
    max_input_len: int = 1024
    max_seq_len: int | None = None
    opt_batch_size: int = 8
    max_batch_size: int = 2048
    max_beam_width: int = 1
    max_num_tokens: int = 8192
    opt_num_tokens: int | None = None
    max_prompt_embedding_table_size: int = 0
    kv_cache_type: str | None = None
    gather_context_logits: bool = False
    gather_generation_logits: bool = False
    strongly_typed: bool = True
    force_num_profiles: int | None = None
    profiling_verbosity: str = "layer_names_only"
    enable_debug_output: bool = False
    max_draft_len: int = 0
    speculative_decoding_mode: Any = None
    use_refit: bool = False
    input_timing_cache: str | None = None
    output_timing_cache: str = "model.cache"
    lora_config: Any = None
    weight_sparsity: bool = False
    weight_streaming: bool = False
    plugin_config: PluginConfig = field(default_factory=PluginConfig)
    use_strip_plan: bool = False
    max_encoder_input_len: int = 1024
    dry_run: bool = False
    visualize_network: str | None = None
    monitor_memory: bool = False
    use_mrope: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kv_cache_type"] = self.kv_cache_type or "PAGED"
        return d


class _HostTensor:
    """What ``generation_logits`` is on a GPU host: a CPU torch tensor (here in bfloat16-like "half")."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array.astype(np.float16)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    def float(self) -> _HostTensor:
        t = _HostTensor.__new__(_HostTensor)
        t._array = self._array.astype(np.float32)
        return t

    def cpu(self) -> _HostTensor:
        return self

    def __getitem__(self, index: Any) -> _HostTensor:
        t = _HostTensor.__new__(_HostTensor)
        t._array = self._array[index]
        return t

    def numpy(self) -> np.ndarray:
        if self._array.dtype == np.float16:
            raise TypeError("Got unsupported ScalarType BFloat16")  # torch: bf16 has no numpy dtype
        return self._array


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: Any = None
    prompt_logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    generation_logits: Any = None
    additional_context_outputs: Any = None
    additional_generation_outputs: Any = None
    disaggregated_params: Any = None
    request_perf_metrics: Any = None
    _last_token_ids_len: int = 0
    _last_text_len: int = 0

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len :]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len :]


_NO_LOOP = "The asyncio event loop was not present during initialization, so async operations are not available."


class RequestError(RuntimeError):
    """``tensorrt_llm.executor.utils.RequestError``: a request the executor refused or failed."""


@dataclass
class KvCacheMetrics:
    num_total_allocated_blocks: int = 0
    num_new_allocated_blocks: int = 0
    num_reused_blocks: int = 0
    num_missed_blocks: int = 0
    kv_cache_hit_rate: float = 0.0


@dataclass
class RequestPerfMetrics:
    kv_cache_metrics: KvCacheMetrics = field(default_factory=KvCacheMetrics)


class RequestOutput:
    """The result handle of one request (``GenerationResult``): await it, iterate it when streaming, abort it."""

    def __init__(
        self, executor: _Executor, request_id: int, prompt_token_ids: list[int], sp: SamplingParams, streaming: bool
    ) -> None:
        self.request_id = request_id
        self.id = request_id
        self.prompt: str | None = None
        self.prompt_token_ids = prompt_token_ids
        self.outputs = [CompletionOutput(index=0)]
        self.context_logits: Any = None
        self.finished = False
        self.cached_tokens = 0  # GenerationResultBase.__init__; only the PyTorch result ever changes it
        self.sampling_params = sp
        self._executor = executor
        self._streaming = streaming
        try:
            asyncio.get_running_loop()
            self._queue: asyncio.Queue[dict[str, Any]] | None = asyncio.Queue()
        except RuntimeError:
            self._queue = None
        self._done = False

    def _apply(self, update: dict[str, Any]) -> None:
        out = self.outputs[0]
        out._last_token_ids_len = len(out.token_ids)
        out._last_text_len = len(out.text)
        if "error" in update:
            self.finished = self._done = True
            raise update["error"]
        out.token_ids = list(update["token_ids"])
        out.text = update["text"]
        out.generation_logits = update.get("logits")
        if update.get("perf") is not None:
            out.request_perf_metrics = update["perf"]
        if update.get("context_logits") is not None:
            self.context_logits = update["context_logits"]
        if update.get("cached_tokens") is not None:
            self.cached_tokens = update["cached_tokens"]
        if update.get("finish_reason") is not None:
            out.finish_reason = update["finish_reason"]
            out.stop_reason = update.get("stop_reason")
            self.finished = True

    async def aresult(self) -> RequestOutput:
        if self._queue is None:
            raise RuntimeError(_NO_LOOP)
        while not self.finished:
            self._apply(await self._queue.get())
        return self

    def __await__(self) -> Any:
        return self.aresult().__await__()

    def __aiter__(self) -> RequestOutput:
        if not self._streaming:
            raise RuntimeError("async iteration needs streaming=True")
        return self

    async def __anext__(self) -> RequestOutput:
        if self._queue is None:
            raise RuntimeError(_NO_LOOP)
        if self._done:
            raise StopAsyncIteration
        self._apply(await self._queue.get())
        if self.finished:
            self._done = True
        return self

    def abort(self) -> None:
        self._executor.abort(self.request_id)


@dataclass
class _Request:
    out: RequestOutput
    prompt: list[int]
    sp: SamplingParams
    salt: str | None
    rng: np.random.Generator
    stop_words: list[tuple[str, list[int]]]
    max_new: int
    reused: int = 0
    generated: list[int] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    sent_rows: int = 0
    posted: int = 0
    aborted: bool = False


class _Executor:
    """In-flight batching on the event loop: one token per running request per iteration."""

    def __init__(self, llm: _LLMBase) -> None:
        self.llm = llm
        self.running: list[_Request] = []
        self.max_batch_seen = 0
        self.calls: list[dict[str, Any]] = []
        self.aborted: list[int] = []
        self.fail_next: list[BaseException] = []
        self.drop_logits = False
        self.iteration_seconds = 0.001
        self._blocks: set[tuple[Any, ...]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)

    def submit(
        self, prompt: list[int], sp: SamplingParams, streaming: bool, salt: str | None, max_new: int
    ) -> RequestOutput:
        out = RequestOutput(self, next(self._ids), prompt, sp, streaming)
        self.calls.append({"inputs": list(prompt), "sampling_params": sp, "streaming": streaming, "cache_salt": salt})
        if out._queue is None:
            return out  # never scheduled: awaiting it fails, as in the real runtime
        if self.fail_next:
            out._queue.put_nowait({"error": self.fail_next.pop(0)})
            return out
        error = self.llm.executor_check(prompt, sp)
        if error is not None:  # refused by the C++ executor: the error arrives with the response
            out._queue.put_nowait({"error": RequestError(error)})
            return out
        tok = self.llm.tokenizer
        stops = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
        words = [(s, tok.encode(s, add_special_tokens=False)) for s in stops]
        req = _Request(out, prompt, sp, salt, np.random.default_rng(sp.seed), words, max_new)
        req.reused = self._reused(prompt, salt)
        self.running.append(req)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return out

    def abort(self, request_id: int) -> None:
        self.aborted.append(request_id)
        for r in self.running:
            if r.out.request_id == request_id:
                r.aborted = True

    # KV block reuse: whole blocks of a finished request's tokens, keyed by prefix (and salt)
    def _block_keys(self, tokens: list[int], salt: str | None) -> list[tuple[Any, ...]]:
        b = self.llm.tokens_per_block
        return [(salt, tuple(tokens[: (i + 1) * b])) for i in range(len(tokens) // b)]

    def _reused(self, prompt: list[int], salt: str | None) -> int:
        if not self.llm.kv_cache_config.enable_block_reuse:
            return 0
        n = 0
        for key in self._block_keys(prompt[:-1], salt):  # at least the last token is computed
            if key not in self._blocks:
                break
            n = len(key[1])
        return n

    async def _loop(self) -> None:
        while self.running:
            await asyncio.sleep(self.iteration_seconds)
            self.max_batch_seen = max(self.max_batch_seen, len(self.running))
            for req in list(self.running):
                self._step(req)

    def _finish(self, req: _Request, reason: str, stop_reason: Any = None, text: str | None = None) -> None:
        self.running.remove(req)
        if self.llm.kv_cache_config.enable_block_reuse and reason != "cancelled":
            self._blocks.update(self._block_keys(req.prompt + req.generated, req.salt))
        self._post(req, reason, stop_reason, text)

    def _post(self, req: _Request, reason: str | None, stop_reason: Any = None, text: str | None = None) -> None:
        if reason is None and not req.out._streaming:
            return
        sp = req.sp
        logits = None
        if sp.return_generation_logits and not self.drop_logits and req.logits:
            rows = np.stack(req.logits)
            if req.out._streaming:  # createResult: only the rows of this response's new tokens
                rows = rows[req.sent_rows : len(req.generated)]
            logits = _HostTensor(rows[: len(req.generated)])  # result.py: [src_idx, :output.length]
        req.sent_rows = len(req.generated)
        update: dict[str, Any] = {
            "token_ids": list(req.generated),
            "text": text if text is not None else self._text(req),
            "logits": logits,
            "finish_reason": reason,
            "stop_reason": stop_reason,
        }
        if req.posted == 0:
            if self.llm._backend == "pytorch":
                update["cached_tokens"] = req.reused
            if sp.return_context_logits:
                update["context_logits"] = _HostTensor(
                    np.stack([self.llm.padded_logits(req.prompt[: i + 1]) for i in range(req.reused, len(req.prompt))])
                )
        if self.llm._backend == "tensorrt" and (sp.return_perf_metrics or self.llm.args.get("return_perf_metrics")):
            blocks = req.reused // self.llm.tokens_per_block
            update["perf"] = RequestPerfMetrics(KvCacheMetrics(num_reused_blocks=blocks))
        req.posted += 1
        assert req.out._queue is not None
        req.out._queue.put_nowait(update)

    def _text(self, req: _Request) -> str:
        if not req.sp.detokenize:
            return ""
        return self.llm.tokenizer.decode(req.generated, skip_special_tokens=req.sp.skip_special_tokens)

    def _text_stop(self, req: _Request) -> bool:
        """DetokenizedGenerationResultBase._handle_response: a stop string in the decoded text ends the request
        (text cut there, token_ids not) and the result aborts it."""
        if not req.sp.detokenize:
            return False
        text = self._text(req)
        for stop, _ids in req.stop_words:
            pos = text.find(stop)
            if stop and pos >= 0:
                cut = text[: pos + len(stop)] if req.sp.include_stop_str_in_output else text[:pos]
                self.aborted.append(req.out.request_id)
                self._finish(req, "stop", stop, cut)
                return True
        return False

    def _step(self, req: _Request) -> None:
        if req.aborted:
            self._finish(req, "cancelled")
            return
        sp = req.sp
        real = self.llm.model_logits(req.prompt + req.generated)
        req.logits.append(self.llm.pad(real))
        if sp._greedy_decoding:
            token = int(np.argmax(real))
        else:
            x = real.astype(np.float64) / (sp.temperature if sp.temperature is not None else 1.0)
            if sp.top_k:
                kth = np.partition(x, -sp.top_k)[-sp.top_k]
                x = np.where(x >= kth, x, -np.inf)
            p = np.exp(x - x.max())
            p /= p.sum()
            token = int(req.rng.choice(p.shape[0], p=p))
        # base_worker._enqueue_request: end_id=-1 if ignore_eos else sp.end_id (set from the tokenizer by _setup)
        end_id = -1 if sp.ignore_eos else (sp.end_id if sp.end_id is not None else self.llm.tokenizer.eos_token_id)
        if token == end_id:
            if self.llm._backend == "pytorch":
                req.generated.append(token)  # the PyTorch sampler adds the token, then stops on it
            self._finish(req, "stop")  # the TensorRT executor leaves the end id out of token_ids
            return
        req.generated.append(token)
        if sp.stop_token_ids and token in sp.stop_token_ids and not sp.ignore_eos:
            if not sp.include_stop_str_in_output:
                req.generated.pop()
            self._finish(req, "stop", token)
            return
        for text, ids in req.stop_words:
            if ids and req.generated[-len(ids) :] == ids:
                if not sp.include_stop_str_in_output:
                    del req.generated[-len(ids) :]
                self._finish(req, "stop", text)
                return
        if (req.out._streaming or len(req.generated) >= req.max_new) and self._text_stop(req):
            return
        if len(req.generated) >= req.max_new:
            self._finish(req, "length")
            return
        self._post(req, None)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


class _LLMBase:
    _allowed: frozenset[str] = frozenset()
    _backend = ""

    def __init__(self, model: str, tokenizer: str | None = None, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in self._allowed:
                if self._backend == "pytorch" and key in TRT_ONLY:
                    raise ValueError(
                        f"{key} is not supported by the PyTorch backend. Please use "
                        "'from tensorrt_llm._tensorrt_engine import LLM' instead to use the TensorRT backend."
                    )
                raise ValueError(f"{type(self).__name__} got invalid argument: {key}")
        from transformers import AutoTokenizer

        self.args = dict(kwargs, model=model, tokenizer=tokenizer)
        path = Path(model)
        cfg = _read_json(path / "config.json")
        if not cfg:
            raise ValueError(f"model {model} is not a local model directory with a config.json")
        self.is_engine = "build_config" in cfg
        self._check_model(cfg)
        tp = kwargs.get("tensor_parallel_size", 1) * kwargs.get("pipeline_parallel_size", 1)
        if tp > FAKE_GPUS:
            raise RuntimeError(f"Only {FAKE_GPUS} GPUs are available, but {tp} are required.")
        self.kv_cache_config: KvCacheConfig = kwargs.get("kv_cache_config") or KvCacheConfig()
        self.gather_generation_logits = bool(kwargs.get("gather_generation_logits", False))
        self.model_dir = path
        # like the real LLM: a tokenizer directory (or the model's own), or a tokenizer object used as it is
        is_path = tokenizer is None or isinstance(tokenizer, str | Path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer or model)) if is_path else tokenizer
        self.enable_chunked_prefill = bool(kwargs.get("enable_chunked_prefill", False))
        if self.is_engine:
            pre, build = cfg["pretrained_config"], cfg["build_config"]
            self.vocab_padded = pre["vocab_size"]
            self.max_seq_len = build["max_seq_len"]
            self.max_num_tokens = kwargs.get("max_num_tokens") or build.get("max_num_tokens", 8192)
            self.tokens_per_block = build["plugin_config"].get("tokens_per_block", 32)
            self.gather_context_logits = build.get("gather_context_logits") is True
            paged_fmha = build["plugin_config"].get("use_paged_context_fmha") is True
            self.build_config = build
        elif self._backend == "tensorrt":  # builds an engine at load time, with BuildConfig's sizes
            bc = kwargs.get("build_config") or BuildConfig()
            self.vocab_padded = cfg["vocab_size"]
            self.max_seq_len = bc.max_seq_len or cfg["max_position_embeddings"]
            self.max_num_tokens = kwargs.get("max_num_tokens") or bc.max_num_tokens
            self.tokens_per_block = bc.plugin_config.tokens_per_block
            self.gather_context_logits = bc.gather_context_logits
            paged_fmha = bc.plugin_config.use_paged_context_fmha
            self.build_config = bc
        else:
            self.vocab_padded = cfg["vocab_size"]
            self.max_seq_len = kwargs.get("max_seq_len") or cfg["max_position_embeddings"]
            self.max_num_tokens = kwargs.get("max_num_tokens") or 8192  # BaseLlmArgs default
            self.tokens_per_block = self.kv_cache_config.tokens_per_block
            self.gather_context_logits = True  # PyTorch: context logits per request, no build flag
            paged_fmha = True
            self.build_config = kwargs.get("build_config")
        if self._backend == "tensorrt":
            if self.enable_chunked_prefill and not paged_fmha:  # TrtGptModelInflightBatching constructor
                raise RuntimeError(
                    "Chunked context requires context FMHA, paged kv_cache and paged context FMHA all enabled at the "
                    "same time."
                )
            # trtGptModel.h: the executor's max input length
            self.max_input_len = (
                self.max_seq_len - 1 if self.enable_chunked_prefill else min(self.max_seq_len - 1, self.max_num_tokens)
            )
        else:
            self.max_input_len = self.max_seq_len
        script = _read_json(path / "fake_script.json")
        from glimp_llm.engines.scripted import ScriptedEngine

        self._oracle = ScriptedEngine(script.get("response", "Hello world."), entropies=script.get("entropies", 0.05))
        self._executor = _Executor(self)
        self._shutdown = False
        INSTANCES.append(self)

    def _check_model(self, cfg: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def executor(self) -> _Executor:
        return self._executor

    def model_logits(self, tokens: list[int]) -> np.ndarray:
        return self._oracle._logits_for(tokens)

    def pad(self, real: np.ndarray) -> np.ndarray:
        padded = np.full(self.vocab_padded, PAD_LOGIT, dtype=np.float32)
        padded[: real.shape[0]] = real
        return padded

    def padded_logits(self, tokens: list[int]) -> np.ndarray:
        return self.pad(self.model_logits(tokens))

    def executor_check(self, prompt: list[int], sp: SamplingParams) -> str | None:
        """What the C++ executor refuses when it fetches a request (TensorRT backend only): the error comes back
        with the response, not from generate_async."""
        if self._backend != "tensorrt":
            return None
        if len(prompt) > self.max_input_len:  # LlmRequest::validate
            return (
                f"Prompt length ({len(prompt)}) exceeds maximum input length ({self.max_input_len}). Set log level "
                "to info and check TRTGptModel logs for how maximum input length is set"
            )
        if sp.return_context_logits and not self.gather_context_logits:  # executorImpl.cpp fetchNewRequests
            return "Return context logit need to build engine with gather_context_logits"
        return None

    def generate_async(
        self,
        inputs: Any,
        sampling_params: SamplingParams | None = None,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        streaming: bool = False,
        kv_cache_retention_config: Any = None,
        disaggregated_params: Any = None,
        _postproc_params: Any = None,
        scheduling_params: Any = None,
        cache_salt: str | None = None,
    ) -> RequestOutput:
        if self._shutdown:
            raise RuntimeError("LLM is shut down")
        sp = sampling_params or SamplingParams()
        if isinstance(inputs, dict):
            inputs = inputs.get("prompt_token_ids", inputs.get("prompt"))
        if isinstance(inputs, str):
            prompt = self.tokenizer.encode(inputs, add_special_tokens=sp.add_special_tokens)
        elif isinstance(inputs, list) and all(isinstance(t, int) for t in inputs):
            prompt = list(inputs)
        else:
            raise TypeError(f"The inputs must be type str or list of int, but got {type(inputs)}")
        if any(not 0 <= t < self.vocab_padded for t in prompt):
            raise ValueError("Token ID out of range")
        if (sp.return_generation_logits or sp.logprobs) and not self.gather_generation_logits:
            raise ValueError("`gather_generation_logits` must be True to return generation logits or logprobs")
        max_new = sp.max_tokens
        if self._backend == "pytorch":
            # llm.py _check_arguments: only the prompt against max_num_tokens, unless chunked prefill
            if not self.enable_chunked_prefill and len(prompt) > self.max_num_tokens:
                raise ValueError(
                    f"The sum of prompt length ({float(len(prompt))}), query length (0) should not exceed "
                    f"max_num_tokens ({self.max_num_tokens})"
                )
            # base_worker.py _deduce_max_tokens (in-process worker: raised from generate_async)
            room = self.max_seq_len - len(prompt)
            if room <= 0:
                raise RequestError(
                    f"`default_max_tokens` ({room}) must be greater than 0, `default_max_tokens` ({room}) = "
                    f"max_seq_len ({self.max_seq_len}) - `splited_prompt_len` ({len(prompt)}) - `query_token_len` (0)"
                )
            max_new = min(max_new, room)
        else:
            # llm.py _check_arguments: prompt + max_tokens against the engine's max_seq_len, unless chunked prefill
            if not self.enable_chunked_prefill and len(prompt) + sp.max_tokens > self.max_seq_len:
                raise ValueError(
                    f"The sum of prompt length ({float(len(prompt))}) and query length (0) max_tokens "
                    f"({sp.max_tokens}) should not exceed max_seq_len ({self.max_seq_len})"
                )
            max_new = min(max_new, max(self.max_seq_len - len(prompt), 1))  # LlmRequest::validate clamps
        return self._executor.submit(prompt, sp, streaming, cache_salt, max_new)

    def save(self, engine_dir: str) -> None:
        if not self.is_engine and self._backend != "tensorrt":
            raise ValueError("save() is only supported by the TensorRT backend")
        out = Path(engine_dir)
        out.mkdir(parents=True, exist_ok=True)
        bc: BuildConfig = self.build_config if isinstance(self.build_config, BuildConfig) else BuildConfig()
        tp = self.args.get("tensor_parallel_size", 1)
        cfg = {
            "version": "1.2.1",
            "pretrained_config": {
                "architecture": "Qwen2ForCausalLM",
                "dtype": self.args.get("dtype", "bfloat16"),
                "logits_dtype": "float32",
                "vocab_size": self.vocab_padded,
                "mapping": {"world_size": tp, "tp_size": tp, "pp_size": 1},
            },
            "build_config": bc.to_dict(),
        }
        (out / "config.json").write_text(json.dumps(cfg))
        for r in range(tp):
            (out / f"rank{r}.engine").write_bytes(b"fake engine")
        # rank 0: tokenizer.save_pretrained(engine_dir) — tokenizer files only, no generation_config.json
        for name in SAVE_PRETRAINED_FILES:
            if (self.model_dir / name).is_file():
                shutil.copy(self.model_dir / name, out / name)
        shutil.copy(self.model_dir / "fake_script.json", out / "fake_script.json")  # the fake's "weights"

    def shutdown(self) -> None:
        self._shutdown = True


class TorchLLM(_LLMBase):
    """``tensorrt_llm.LLM``: the PyTorch backend, HF checkpoints."""

    _allowed = TORCH_ARGS
    _backend = "pytorch"

    def _check_model(self, cfg: dict[str, Any]) -> None:
        if "build_config" in cfg:
            raise ValueError("an engine directory needs the TensorRT backend (tensorrt_llm._tensorrt_engine.LLM)")


class TrtLLM(_LLMBase):
    """``tensorrt_llm._tensorrt_engine.LLM``: the TensorRT backend, engine directories (or builds one)."""

    _allowed = TRT_ARGS
    _backend = "tensorrt"

    def _check_model(self, cfg: dict[str, Any]) -> None:
        if "builder_config" in cfg or "plugin_config" in cfg:
            raise KeyError("plugin_config")
