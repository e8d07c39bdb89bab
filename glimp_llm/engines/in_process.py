"""Shared machinery of engines that run a model in this process and read its full logits.

llama.cpp (and the scripted test engine) differ only in how they load a model, evaluate tokens into a
context, and spell a token. Everything else — prefix reuse, exact entropy, token choice, stop strings,
streaming deltas, fair queueing, cancellation — is written once here, so the scripted engine used by
the unit tests exercises the very code that runs the real model.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from glimp_llm.chat_template import ChatTemplate
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
)
from glimp_llm.engines.decoding import StopMatcher, Utf8Pieces, choose_token, token_logprob
from glimp_llm.engines.slots import CancelFlag, Slot, SlotPool, common_prefix_length
from glimp_llm.entropy import entropy_from_logits, top_k_logprobs
from glimp_llm.errors import InvalidRequestError

StateT = TypeVar("StateT")
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class SlotState(Generic[StateT]):
    """What a slot holds: the backend's context object, its RNG, and the logits after ``cached[-1]``."""

    backend: StateT
    rng: np.random.Generator
    logits: np.ndarray | None = None


class InProcessEngine(EngineBase, abc.ABC, Generic[StateT]):
    """Base of in-process engines with full-vocabulary logits. Subclasses implement the hooks below."""

    backend_name = "in-process"
    window_fix = "shorten the prompt, lower max_tokens, or raise n_ctx"

    def __init__(self, *, name: str, n_slots: int = 1, max_queue: int | None = None, seed: int = 0) -> None:
        if n_slots < 1:
            raise InvalidRequestError(f"n_slots={n_slots}: an engine needs at least one slot")
        super().__init__(name=name)
        self._n_slots = n_slots
        self._max_queue = max_queue
        self._seed = seed
        self._pool: SlotPool[SlotState[StateT]] | None = None
        self._template: ChatTemplate | None = None

    # ----------------------------------------------------------------- hooks (run in worker threads)
    @abc.abstractmethod
    def _load(self) -> tuple[list[StateT], EngineInfo]:
        """Load the model once and create ``n_slots`` independent contexts."""

    @abc.abstractmethod
    def _evaluate(self, state: StateT, tokens: Sequence[int], keep: int) -> np.ndarray:
        """Make the backend's cache hold ``tokens``, of which the first ``keep`` are already cached
        (drop what follows them, evaluate the rest); return the logits row after ``tokens[-1]``.
        A view is fine: it is used before the next evaluation."""

    def _evaluate_each(self, state: StateT, tokens: Sequence[int], keep: int) -> Iterator[np.ndarray]:
        """Evaluate ``tokens[keep:]`` (the cache holds ``tokens[:keep]``) and yield the logits row after each
        of them, in order: what :meth:`score` reads. This default evaluates one token at a time; backends
        that can return every row of one batch override it."""
        for end in range(keep + 1, len(tokens) + 1):
            yield self._evaluate(state, tokens[:end], end - 1)

    @abc.abstractmethod
    def _token_bytes(self, token_id: int) -> bytes:
        """The bytes a token contributes to the text."""

    @abc.abstractmethod
    def _tokenize(self, text: str) -> list[int]: ...

    def _unload(self, states: list[StateT]) -> None:
        """Free backend resources."""

    # ------------------------------------------------------------------------------- lifecycle
    async def _start(self) -> EngineInfo:
        states, info = await asyncio.to_thread(self._load)
        slot_states = [SlotState(backend=s, rng=np.random.default_rng(self._seed + i)) for i, s in enumerate(states)]
        if not info.chat_template:
            log.warning(
                "%s: %s ships no chat template: chats are rendered as ChatML (<|im_start|>role ...), which a model not "
                "trained on it reads poorly; set chat_template to the model's own",
                self.name,
                info.model,
            )
        self._template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        self._pool = SlotPool(slot_states, name=self.name, max_queue=self._max_queue)
        return info

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.reject_waiters()  # on the loop: the waiters are its futures
            await asyncio.to_thread(pool.close)
            await asyncio.to_thread(self._unload, [s.state.backend for s in pool.slots])

    def _require_pool(self) -> SlotPool[SlotState[StateT]]:
        self._require_started()
        assert self._pool is not None
        return self._pool

    async def _health(self) -> EngineHealth:
        pool = self._require_pool()
        return EngineHealth(ok=True, detail="ready", in_flight=pool.in_flight, queued=pool.queued)

    # ------------------------------------------------------------------------------ text
    async def tokenize(self, text: str) -> list[int]:
        self._require_pool()
        return self._tokenize(text)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        self._require_pool()
        return b"".join(self._token_bytes(t) for t in self._check_ids(token_ids)).decode("utf-8", errors="replace")

    async def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        self._require_pool()
        assert self._template is not None
        return self._template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt)

    # ------------------------------------------------------------------------------ model calls
    def _sync_context(self, slot: Slot[SlotState[StateT]], context: Sequence[int]) -> tuple[np.ndarray, int]:
        """Make the slot's cache hold exactly ``context``; return the next-token logits and reuse count."""
        keep = common_prefix_length(slot.cached, context)
        state = slot.state
        if keep == len(context) == len(slot.cached) and state.logits is not None:
            self._stats.tokens_reused += keep
            return state.logits, keep
        if keep == len(context):
            keep -= 1  # the logits after the last token are needed: evaluate it again
        slot.cached = list(context)
        try:
            logits = self._evaluate(state.backend, slot.cached, keep)
        except BaseException:
            slot.cached = []  # the backend's cache state is unknown now: rebuild it next time
            raise
        state.logits = None
        self._stats.tokens_evaluated += len(context) - keep
        self._stats.tokens_reused += keep
        return logits, keep

    def _advance(self, slot: Slot[SlotState[StateT]], token: int) -> np.ndarray:
        slot.cached.append(token)
        try:
            logits = self._evaluate(slot.state.backend, slot.cached, len(slot.cached) - 1)
        except BaseException:
            slot.cached = []
            raise
        self._stats.tokens_evaluated += 1
        return logits

    def _keep_logits(self, slot: Slot[SlotState[StateT]], logits: np.ndarray) -> None:
        slot.state.logits = np.array(logits, dtype=np.float32, copy=True)

    @staticmethod
    def _rng(slot: Slot[SlotState[StateT]], sampling: SamplingParams, context: Sequence[int]) -> np.random.Generator:
        """A seeded request draws from a generator keyed by (seed, position): reproducible for the same
        context whatever ran before on this slot. Unseeded requests share the slot's generator."""
        if sampling.seed is None:
            return slot.state.rng
        return np.random.default_rng((sampling.seed, len(context)))

    async def _run(self, context: Sequence[int], work: Callable[[Slot[SlotState[StateT]], CancelFlag], T]) -> T:
        pool = self._require_pool()
        with self._counted():
            return await pool.run(context, work)

    async def glimpse(self, context: Sequence[int], sampling: SamplingParams, *, top_logprobs: int = 0) -> Glimpse:
        self._check_context(context)
        info = self.info

        def work(slot: Slot[SlotState[StateT]], cancel: CancelFlag) -> Glimpse:
            t0 = time.perf_counter()
            logits, reused = self._sync_context(slot, context)
            self._keep_logits(slot, logits)
            entropy = entropy_from_logits(logits, info.vocab_size)
            token, logprob = choose_token(logits, info.vocab_size, sampling, self._rng(slot, sampling, context))
            top = tuple(top_k_logprobs(logits, top_logprobs, info.vocab_size)) if top_logprobs > 0 else ()
            is_eos = token in info.eos_token_ids  # the end token is no text (as generate leaves it out)
            return Glimpse(
                token_id=token,
                text="" if is_eos else self._token_bytes(token).decode("utf-8", errors="replace"),
                logprob=logprob,
                entropy=entropy,
                entropy_kind="exact",
                is_eos=is_eos,
                top_logprobs=top,
                seconds=time.perf_counter() - t0,
                cached_tokens=reused,
            )

        result = await self._run(context, work)
        self._stats.glimpses += 1
        return result

    async def score(self, context: Sequence[int], continuation: Sequence[int]) -> TokenScores:
        self._check_score(context, continuation)
        if not continuation:
            return TokenScores(logprobs=())
        vocab = self.info.vocab_size

        def work(slot: Slot[SlotState[StateT]], cancel: CancelFlag) -> TokenScores:
            t0 = time.perf_counter()
            logits, reused = self._sync_context(slot, context)
            slot.cached = full = [*context, *continuation]
            rows = itertools.chain([logits], self._evaluate_each(slot.state.backend, full, len(context)))
            scored: list[tuple[float, float, int]] = []  # (logprob, best logprob, best id) per scored token
            try:
                for token, row in zip(continuation, rows, strict=False):  # each row: the logits before its token
                    best_id = int(np.argmax(row[:vocab]))
                    scored.append((token_logprob(row[:vocab], token), token_logprob(row[:vocab], best_id), best_id))
                last = next(rows, None)  # the logits after the continuation
            except BaseException:
                slot.cached = []  # the backend's cache state is unknown now: rebuild it next time
                raise
            if last is not None:
                self._keep_logits(slot, last)  # the large model's next step starts here without an evaluation
            self._stats.tokens_evaluated += len(continuation)
            return TokenScores(
                tuple(s[0] for s in scored),
                tuple(s[1] for s in scored),
                tuple(s[2] for s in scored),
                seconds=time.perf_counter() - t0,
                cached_tokens=reused,
            )

        return await self._run(context, work)

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
        info = self.info
        loop = asyncio.get_running_loop()

        def emit(delta: Delta) -> None:
            if on_token is not None and not loop.is_closed():
                loop.call_soon_threadsafe(on_token, delta)

        def work(slot: Slot[SlotState[StateT]], cancel: CancelFlag) -> Completion:
            t0 = time.perf_counter()
            logits, reused = self._sync_context(slot, context)
            out: list[int] = []
            pieces = Utf8Pieces()
            matcher = StopMatcher(stop)
            finish: FinishReason = "length"
            matched: str | None = None
            rng = self._rng(slot, sampling, context)
            while True:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                token, _ = choose_token(logits, info.vocab_size, sampling, rng)
                if token in info.eos_token_ids:
                    finish = "eos"
                    break
                out.append(token)
                piece = pieces.feed(self._token_bytes(token))
                emit(Delta((token,), piece))
                matched = matcher.feed(piece)
                if matched is not None:
                    finish = "stop"
                    break
                if len(out) >= max_tokens:
                    break
                logits = self._advance(slot, token)
            self._keep_logits(slot, logits)
            tail = pieces.flush()
            if tail:
                emit(Delta((), tail))
                matcher.feed(tail)
            self._stats.tokens_generated += len(out)
            return Completion(
                token_ids=tuple(out),
                text=matcher.text,
                finish_reason=finish,
                stop_string=matched,
                prompt_tokens=len(context),
                cached_tokens=reused,
                seconds=time.perf_counter() - t0,
            )

        result = await self._run(context, work)
        self._stats.generate_calls += 1
        return result
