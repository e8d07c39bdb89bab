"""The engine contract: what the router needs from a model, and nothing more.

The router holds two objects that satisfy :class:`Engine` and knows nothing else about them (the role
httpx's transports play for its client). An engine:

* tokenises, detokenises and renders its own chat template (contexts travel as token ids, so the
  small and the large model see exactly the same prefix when they share a tokenizer);
* ``glimpse``: produces one token from the next-token distribution of a context, with the entropy of
  that distribution (nats, temperature 1, real vocabulary only) and how it was obtained;
* ``generate``: continues a context until a stop string, end of sequence or a token cap, optionally
  reporting each token as it is produced;
* ``score`` (engines with ``info.can_score``): the log-probability of each token another model wrote, so
  the large model can verify the small model's steps (``router.verify``);
* reuses the shared prefix of successive contexts (KV cache, block reuse or a server's prefix cache);
* is safe to call concurrently (it batches in flight or queues fairly);
* frees its slot when a call is cancelled, and releases everything on ``close``.

:class:`EngineBase` is the small concrete base the engines share (as httpx's transports share
``BaseTransport``): name, info once started, counters, an idempotent start under a lock, the closed state,
the argument and context-window checks, and the typing of unexpected failures. Each engine is built from
its configuration by ``from_config`` (the registry is :data:`glimp_llm.config.ENGINE_KINDS`).

The typed errors live in :mod:`glimp_llm.errors` and are re-exported here for engine authors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

from glimp_llm.errors import (
    ContextTooLongError,
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    GlimpError,
    InvalidRequestError,
    MalformedResponseError,
)

__all__ = [
    "Completion",
    "ContextTooLongError",
    "Delta",
    "Engine",
    "EngineBase",
    "EngineFailureError",
    "EngineHealth",
    "EngineInfo",
    "EngineStats",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "EntropyKind",
    "FinishReason",
    "Glimpse",
    "MalformedResponseError",
    "Message",
    "SamplingParams",
    "TokenCallback",
    "TokenScores",
]

EntropyKind = Literal["exact", "top-k estimate", "top-k renormalized"]
"""How an entropy was obtained: from full logits, bounded from top-k logprobs, or the paper's top-k."""

FinishReason = Literal["stop", "length", "eos", "cancelled"]
"""Why an engine call ended: a stop string, the token cap, end of sequence, or cancellation."""

Message = dict[str, Any]
"""A chat message in the OpenAI shape: ``{"role": ..., "content": ..., "tool_calls"?: [...]}``."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How the next token is chosen. ``temperature == 0`` is greedy decoding (the default)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        """Engines are called directly too (benchmarks, adapters): values no engine can take are refused
        here, typed, instead of failing differently in each (the router's requests are bounded already)."""
        if not (0.0 < self.top_p <= 1.0 and self.top_k >= 0 and self.temperature >= 0.0):
            raise InvalidRequestError(f"{self}: use temperature >= 0, top_p in (0, 1] and top_k >= 0")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidRequestError(f"seed={self.seed}: use an integer within 0..2**63-1, or None for unseeded")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True, slots=True)
class Glimpse:
    """One token produced by the small model, and the entropy of the distribution it came from."""

    token_id: int
    text: str
    logprob: float
    entropy: float
    entropy_kind: EntropyKind
    is_eos: bool = False
    top_k: int | None = None
    captured_mass: float | None = None
    entropy_error_bound: float = 0.0
    top_logprobs: tuple[tuple[int, float], ...] = ()
    seconds: float = 0.0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Delta:
    """Tokens an engine produced since the last delta, and their text."""

    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True, slots=True)
class TokenScores:
    """How likely an engine finds tokens that another model wrote: one log-probability (nats, temperature 1,
    full distribution where the engine has it) per scored token, each given the context and the scored
    tokens before it. The router's verification accepts the longest prefix the large model agrees with."""

    logprobs: tuple[float, ...]
    best_logprobs: tuple[float, ...] = ()
    """Per scored position, the log-probability of the token this engine finds most likely there (empty when
    the engine cannot tell): how far a token is from what this model would have written."""
    best_ids: tuple[int, ...] = ()
    """Per scored position, the id of that most likely token (empty when the engine cannot tell): the large
    model's own token where it rejects one of the small model's, at no extra cost (``verify_resume=small``)."""
    seconds: float = 0.0
    cached_tokens: int = 0


TokenCallback = Callable[[Delta], None]
"""Called on the event loop's thread for every delta an engine produces during ``generate``."""


@dataclass(frozen=True, slots=True)
class Completion:
    """The result of one ``generate`` call. ``token_ids``/``text`` exclude the context."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: FinishReason
    stop_string: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """Static facts about a started engine, used by the router, the manager and the adapters."""

    name: str
    model: str
    backend: str
    vocab_size: int
    context_window: int
    eos_token_ids: frozenset[int]
    tokenizer_fingerprint: str
    entropy_kind: EntropyKind
    batches_in_flight: bool
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False
    can_score: bool = False
    """Whether :meth:`Engine.score` works (full logits per position, or a server's prompt logprobs)."""


def vocab_fingerprint(vocab: Mapping[str, int]) -> str:
    """:attr:`EngineInfo.tokenizer_fingerprint`: a short hash of the real vocabulary's token -> id mapping. Same
    mapping, same fingerprint, whichever backend or files it came from (a GGUF's token texts, ``transformers``'
    ``get_vocab()``, a ``tokenizer.json``), so the router knows token ids can be exchanged across backends too."""
    h = hashlib.sha256()
    for token, tid in sorted(vocab.items(), key=lambda kv: (kv[1], kv[0])):
        h.update(f"{tid}\x00{token}\x01".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


@dataclass(slots=True)
class EngineStats:
    """Counters an engine keeps; ``tokens_evaluated`` proves prefix reuse (it counts only new tokens)."""

    tokens_evaluated: int = 0
    tokens_reused: int = 0
    tokens_generated: int = 0
    glimpses: int = 0
    generate_calls: int = 0
    cancelled_calls: int = 0
    failed_calls: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineHealth:
    ok: bool
    detail: str = ""
    in_flight: int = 0
    queued: int = 0


@runtime_checkable
class Engine(Protocol):
    """What the router requires of a model backend. All methods are coroutines on the caller's loop."""

    #: What errors and the adapters call the engine (its role, ``small`` or ``large``, when built from a config).
    name: str

    @property
    def info(self) -> EngineInfo:
        """Facts about the loaded model; valid after :meth:`start`."""
        ...

    @property
    def stats(self) -> EngineStats: ...

    async def start(self) -> None:
        """Load the model or connect to the server. Idempotent."""

    async def close(self) -> None:
        """Release the model, threads, connections. Idempotent; later calls raise EngineUnavailableError."""

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens written in it parsed as such. Never adds a BOS token:
        the router adds ``info.bos_token`` to prompts of models that want one (``info.add_bos``)."""
        ...

    async def detokenize(self, token_ids: Sequence[int]) -> str: ...

    async def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The model's own chat template applied to ``messages`` (opening the assistant turn)."""
        ...

    async def glimpse(self, context: Sequence[int], sampling: SamplingParams, *, top_logprobs: int = 0) -> Glimpse:
        """One token after ``context`` and the entropy of its distribution. With ``top_logprobs=k``
        the ``k`` most likely tokens are returned too (used by the paper-faithful mode)."""
        ...

    async def generate(
        self,
        context: Sequence[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        sampling: SamplingParams = SamplingParams(),
        on_token: TokenCallback | None = None,
    ) -> Completion:
        """Continue ``context`` until a string in ``stop`` appears in the new text (it is kept in the
        output), end of sequence (the EOS token is not part of the output), or ``max_tokens``."""
        ...

    async def score(self, context: Sequence[int], continuation: Sequence[int]) -> TokenScores:
        """The log-probability of each token of ``continuation`` after ``context`` (and the continuation
        tokens before it). Leaves the engine's prefix cache holding ``context + continuation``, so the
        read is the catch-up prefill the engine would do before its next step anyway. An engine whose
        ``info.can_score`` is false raises :class:`EngineUnavailableError` naming what it lacks."""
        ...

    async def health(self) -> EngineHealth: ...


class EngineBase:
    """What every engine shares, written once: lifecycle, counters and the checks of its arguments.

    Subclasses implement ``_start`` (load or connect; return the :class:`EngineInfo`), optionally ``_close``
    and ``_health``, ``from_config``, and the model calls of :class:`Engine`. ``start`` is idempotent and
    serialised, a closed engine stays closed (``EngineUnavailableError``), and ``info`` stays readable after
    ``close`` (the router reports on engines it has closed).
    """

    backend_name: ClassVar[str] = "engine"
    #: How to make a context fit, for :class:`ContextTooLongError` messages (the setting differs per engine).
    window_fix: ClassVar[str] = "shorten the prompt or lower max_tokens"
    #: Whether ``info.vocab_size`` bounds the token ids (the model's own tokenizer); a server engine's
    #: configured size only bounds the entropy estimate, and the server checks the ids itself.
    bounds_token_ids: bool = True

    def __init__(self, *, name: str, stats: EngineStats | None = None) -> None:
        self.name = name
        self._info: EngineInfo | None = None
        self._stats = stats or EngineStats()
        self._start_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, cfg: Any, *, name: str) -> Self:
        """The engine a validated engine configuration describes, as the ``small`` or ``large`` role. One
        convention: a configuration's fields (less ``kind``) are its engine's keyword arguments."""
        return cls(**{**cfg.model_dump(exclude={"kind"}), "name": name})

    # ------------------------------------------------------------------------------- lifecycle
    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineUnavailableError(f"engine {self.name!r} is not started; call `await engine.start()`")
        return self._info

    @property
    def stats(self) -> EngineStats:
        return self._stats

    async def start(self) -> None:
        async with self._start_lock:
            if self._closed:
                raise EngineUnavailableError(f"engine {self.name!r} was closed; create a new one")
            if self._info is None:
                self._info = await self._start()

    async def _start(self) -> EngineInfo:
        """Load the model or connect to the server; called once, under the start lock."""
        raise NotImplementedError

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def _close(self) -> None:
        """Release what ``_start`` acquired (called once, also for an engine that never started)."""

    def _require_started(self) -> None:
        if self._closed:  # a closed engine does not start again: the advice to start it would be wrong
            raise EngineUnavailableError(
                f"engine {self.name!r} was closed (by its client or manager, or `await engine.close()`); create a "
                "new one"
            )
        if self._info is None:
            raise EngineUnavailableError(f"engine {self.name!r} is not started; call `await engine.start()` first")

    async def health(self) -> EngineHealth:
        if self._info is None or self._closed:
            return EngineHealth(ok=False, detail="closed" if self._closed else "not started")
        return await self._health()

    async def _health(self) -> EngineHealth:
        return EngineHealth(ok=True, detail="ready")

    # ------------------------------------------------------------------------------- checks
    def _check_ids(self, token_ids: Sequence[int]) -> list[int]:
        """``token_ids`` as ints, refused when one is no token: an in-process model would read a wrong row
        of its logits or abort the process (llama.cpp), a server would answer 500 and lose the replica."""
        ids = [int(t) for t in token_ids]
        vocab = self.info.vocab_size if self.bounds_token_ids else None
        if ids and (min(ids) < 0 or (vocab is not None and max(ids) >= vocab)):
            bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
            raise InvalidRequestError(
                f"token ids {bad[:5]} are not tokens of {self.name!r}"
                + (f" (its vocabulary has {vocab})" if vocab is not None else "")
                + "; pass ids from this model's tokenizer"
            )
        return ids

    def _check_context(self, context: Sequence[int]) -> list[int]:
        """The context as checked ids (:meth:`_check_ids`), refused when empty or when it leaves no room for
        one more token."""
        ids = self._check_ids(context)
        if not ids:
            raise InvalidRequestError("the context is empty: pass at least one token (e.g. the chat template)")
        window = self.info.context_window
        if len(ids) >= window:
            raise ContextTooLongError(
                f"context of {len(ids)} tokens does not fit the {window}-token window of {self.name!r}; "
                + self.window_fix,
                context_tokens=len(ids),
                window=window,
            )
        return ids

    def _check_score(self, context: Sequence[int], continuation: Sequence[int]) -> list[int]:
        """``context + continuation`` as checked ids for :meth:`Engine.score`: each token is scored from the
        distribution after the ones before it, so the first needs at least one token of context."""
        if not context:
            raise InvalidRequestError("score needs a non-empty context: the first token has no distribution to read")
        return self._check_context([*context, *continuation])

    def _step_budget(self, context: Sequence[int], max_tokens: int) -> int:
        """``max_tokens`` checked and capped to the room the window leaves after ``context``."""
        if max_tokens < 1:
            raise InvalidRequestError(f"max_tokens={max_tokens}: ask for at least one token")
        return min(max_tokens, self.info.context_window - len(self._check_context(context)))

    @contextlib.contextmanager
    def _counted(self, failure: str | None = None) -> Iterator[None]:
        """Count a call that was cancelled or failed; an untyped failure (a backend bug, a native error)
        becomes an :class:`EngineFailureError` with its cause, so callers catch one error tree."""
        try:
            yield
        except asyncio.CancelledError:
            self._stats.cancelled_calls += 1
            raise
        except GlimpError:
            self._stats.failed_calls += 1
            raise
        except Exception as exc:
            self._stats.failed_calls += 1
            what = failure or f"engine {self.name!r} failed"
            raise EngineFailureError(f"{what}: {type(exc).__name__}: {exc}", engine=self.name) from exc
