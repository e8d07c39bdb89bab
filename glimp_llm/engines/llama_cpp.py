"""llama.cpp in-process (llama-cpp-python): the embedded CPU default.

Why the low-level path: llama-cpp-python 0.3.36 no longer copies logits into ``Llama.scores`` unless
``logits_all=True`` (which costs ``n_ctx x vocab`` floats and slows prefill), so we read the last row
straight from the context with ``llama_get_logits_ith(ctx, -1)``: zero-copy, full vocabulary. We drive
``Llama.eval`` ourselves so that a context extending the previous one evaluates only its new tokens
(``n_tokens`` is set to the common prefix; ``eval`` drops the stale KV entries).

One ``Llama`` object is one sequence and is not thread-safe. Each slot owns one (the weights are
memory-mapped, so extra slots cost only their KV cache); :class:`~glimp_llm.engines.slots.SlotPool`
queues callers fairly and runs the work off the event loop.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glimp_llm.engines.base import EngineInfo, vocab_fingerprint
from glimp_llm.engines.in_process import InProcessEngine
from glimp_llm.errors import EngineUnavailableError, ModelNotFoundError

_TOKEN_ATTR_UNUSED = 1 << 1  # llama_token_attr: LLAMA_TOKEN_ATTR_UNUSED (padding rows such as [PAD151665])
# Loading (and freeing) two models at once from two threads kills the process inside llama.cpp's backend
# initialisation (observed with 0.3.36: the process exits silently). Loads are rare: serialise them.
_LOAD_LOCK = threading.Lock()


#: libgomp's spinning for llama.cpp's OpenMP threads, set before llama.cpp loads unless the user set them. The
#: small and the large model each run an OpenMP team of n_threads (all cores by default) from their own thread:
#: more OpenMP threads than cores, so libgomp "throttles" its spin-wait to 100 spins and the waiting threads
#: sleep between tokens. Every routed configuration then decoded ~50 % slower than the large model alone in
#: the same process (agent task conv-km-m, warm: large steps 3.6-4.1 s vs 2.5 s). ACTIVE raises the throttled
#: spin to 1000; GOMP_SPINCOUNT keeps the unthrottled spin at libgomp's own default (~3 ms), not ACTIVE's
#: minutes of burnt CPU. Measured in benchmarks/RESULTS.md ("OpenMP spin").
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}


def import_llama_cpp() -> Any:
    if "llama_cpp" not in sys.modules:  # libgomp reads its environment once, when llama.cpp's library loads
        for key, value in OPENMP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailableError(
            "the llama.cpp engine needs llama-cpp-python: pip install 'glimp-llm[cpu]' "
            "(it compiles llama.cpp; see the README for the CMAKE_ARGS that halve the build)"
        ) from exc
    return llama_cpp


class LlamaCppEngine(InProcessEngine[Any]):
    """A GGUF model in this process. ``model`` is a registered name or a path to a ``.gguf`` file."""

    backend_name = "llama.cpp"

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_slots: int = 1,
        max_queue: int | None = None,
        seed: int = 0,
        chat_template: str | None = None,
    ) -> None:
        super().__init__(name=name or Path(model).stem, n_slots=n_slots, max_queue=max_queue, seed=seed)
        self.model = model
        self._n_ctx = n_ctx
        self._n_threads = n_threads or max(1, os.cpu_count() or 1)
        self._n_batch = n_batch
        self._chat_template_override = chat_template
        self._llama_cpp: Any = None
        self._pieces: dict[int, bytes] = {}
        self._vocab: Any = None

    def _load(self) -> tuple[list[Any], EngineInfo]:
        from glimp_llm import models

        llama_cpp = import_llama_cpp()
        self._llama_cpp = llama_cpp
        path = models.resolve(self.model)
        with _LOAD_LOCK:
            llamas = self._load_llamas(llama_cpp, path)
        return self._describe(llama_cpp, llamas, path)

    def _load_llamas(self, llama_cpp: Any, path: Path) -> list[Any]:
        llamas: list[Any] = []
        for _ in range(self._n_slots):
            try:
                llamas.append(
                    llama_cpp.Llama(
                        model_path=str(path),
                        n_ctx=self._n_ctx,
                        n_threads=self._n_threads,
                        n_threads_batch=self._n_threads,
                        n_batch=self._n_batch,
                        logits_all=False,
                        verbose=False,
                    )
                )
            except ValueError as exc:  # llama-cpp-python raises ValueError("Failed to load model ...")
                raise ModelNotFoundError(
                    f"llama.cpp could not load {path}: {exc}. The file may be corrupt or of an unsupported "
                    "architecture; for a registered model run `glimp models verify`"
                ) from exc
        return llamas

    def _describe(self, llama_cpp: Any, llamas: list[Any], path: Path) -> tuple[list[Any], EngineInfo]:
        first = llamas[0]
        model = first._model
        self._vocab = model.vocab
        n_vocab = first.n_vocab()
        real_vocab = n_vocab
        while real_vocab > 1 and model.token_get_attr(real_vocab - 1) & _TOKEN_ATTR_UNUSED:
            real_vocab -= 1  # trailing padding rows are not tokens: keep them out of the entropy
        eog = frozenset(i for i in range(real_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i))
        meta = first.metadata
        bos_id, eos_id = model.token_bos(), model.token_eos()
        bos_text = self._piece(bos_id).decode("utf-8", "replace") if bos_id >= 0 else ""
        eos_text = self._piece(eos_id).decode("utf-8", "replace") if eos_id >= 0 else ""
        info = EngineInfo(
            name=self.name,
            model=meta.get("general.name", path.stem),
            backend=self.backend_name,
            vocab_size=real_vocab,
            context_window=first.n_ctx(),
            eos_token_ids=eog,
            # the real vocabulary's texts are the HF tokenizer's: the same fingerprint as TensorRT-LLM's of the model
            tokenizer_fingerprint=vocab_fingerprint({model.token_get_text(i): i for i in range(real_vocab)}),
            entropy_kind="exact",
            batches_in_flight=False,
            chat_template=self._chat_template_override or meta.get("tokenizer.chat_template"),
            bos_token=bos_text,
            eos_token=eos_text,
            add_bos=bool(model.add_bos_token()),
            can_score=True,
        )
        self.path = path
        return llamas, info

    def _unload(self, states: list[Any]) -> None:
        with _LOAD_LOCK:
            for llm in states:
                llm.close()

    def _piece(self, token_id: int) -> bytes:
        # A buffer per call: pieces are cached, and slots' worker threads must not share one.
        buf = (self._llama_cpp.ctypes.c_char * 64)()
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, 64, 0, True)
        if n < 0:  # longer than the buffer: ask again with the size llama.cpp reported
            buf = (self._llama_cpp.ctypes.c_char * -n)()
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, -n, 0, True)
        return bytes(buf[:n])

    def _token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        return piece

    def _tokenize(self, text: str) -> list[int]:
        state = self._require_pool().slots[0].state.backend
        return list(state.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _evaluate_each(self, state: Any, tokens: Sequence[int], keep: int) -> Iterator[np.ndarray]:
        """Every row of one batched evaluation (verification reads a whole step at prefill speed, not one
        decode per token). ``Llama.eval`` keeps only the last row unless the model was loaded with
        ``logits_all`` (n_ctx x vocab floats), so the batch is built here with a logit flag on every token,
        as ``eval`` does for ``logits_all`` in llama-cpp-python 0.3.36 (``LlamaBatch.set_batch``)."""
        llama_cpp = self._llama_cpp
        ctx = state._ctx
        ctx.kv_cache_seq_rm(-1, keep, -1)
        state.n_tokens = keep
        n_vocab = state.n_vocab()
        for start in range(keep, len(tokens), state.n_batch):
            batch = list(tokens[start : start + state.n_batch])
            n_past = state.n_tokens
            state._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            ctx.decode(state._batch)
            state.input_ids[n_past : n_past + len(batch)] = batch
            state.n_tokens += len(batch)
            for i in range(len(batch)):
                ptr = llama_cpp.llama_get_logits_ith(ctx.ctx, i)
                yield np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    def _evaluate(self, state: Any, tokens: Sequence[int], keep: int) -> np.ndarray:
        state.n_tokens = keep
        state.eval(tokens[keep:])
        ptr = self._llama_cpp.llama_get_logits_ith(state._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(state.n_vocab(),))
