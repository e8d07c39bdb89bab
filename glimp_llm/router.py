"""The step loop of GlimpRouter: glimpse with the small model, route the step by entropy, repeat.

Per request the context is the model's own chat template with the assistant turn opened (inside
``<think>`` for thinking models). Then, until the request ends:

1. ``g = small.glimpse(context)``: one token, and the entropy of its distribution (nats).
2. If ``g.entropy <= tau`` the small model writes the step, *continuing from the glimpsed token* (it was
   drawn with the step's own sampling settings, so nothing is wasted); otherwise the large model writes
   the step from the context and the glimpse is dropped.
3. A step ends at the delimiter ("\\n\\n"), the step cap, end of sequence, the end-of-thinking marker, a
   caller's stop string or the budget. It is appended *as token ids* (no re-tokenisation drift when the
   two models share a tokenizer), reported as a :class:`~glimp_llm.trace.StepEvent`, and the loop goes on.
4. The request ends at end of sequence, a stop string, the token budget, or a repeated identical step.
   After ``</think>`` the answer is written by ``answer_model`` (the large one by default, as in the paper).

``paper_faithful=True`` reproduces the authors' code for comparison runs: the entropy of the
renormalised top-20 probabilities, a greedy glimpse that is discarded in both branches, and the
``>=`` comparison.

The router knows nothing about engines beyond :class:`~glimp_llm.engines.base.Engine`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from glimp_llm.admission import Admission
from glimp_llm.chat.content import content_text
from glimp_llm.chat.options import MAX_STOP_SEQUENCES, RequestOptions, check_options, stop_list
from glimp_llm.chat.prompt import prompt_ids, thinking
from glimp_llm.chat.stream import StopFilter
from glimp_llm.config import RouterConfig
from glimp_llm.engines.base import Completion, Delta, Engine, Glimpse, Message, SamplingParams, TokenScores
from glimp_llm.engines.decoding import first_stop
from glimp_llm.entropy import renormalized_topk_entropy
from glimp_llm.errors import (
    ConfigurationError,
    ContextTooLongError,
    EngineFailureError,
    InvalidRequestError,
    RequestTimeoutError,
)
from glimp_llm.trace import (
    DoneEvent,
    ModelRole,
    Phase,
    RoutedBy,
    RoutedFinishReason,
    RoutedResult,
    RouterEvent,
    Step,
    StepEnd,
    StepEvent,
    Timings,
    TokenEvent,
    Usage,
)

log = logging.getLogger(__name__)

EventSink = Callable[[RouterEvent], None]
__all__ = ["MAX_STOP_SEQUENCES", "RouteRequest", "Router", "as_request", "look_ahead", "stop_list", "validate_request"]


@dataclass(frozen=True)
class RouteRequest:
    """One routed generation. Give ``messages`` (chat) or ``prompt`` (a user message, or with
    ``raw=True`` text that is already formatted and is used as it is). ``prefill`` begins the assistant's
    answer (a forced tool call, :mod:`glimp_llm.chat.tools`); the result's text is what follows it."""

    prompt: str | None = None
    messages: Sequence[Message] | None = None
    raw: bool = False
    tools: Sequence[dict[str, Any]] | None = None
    max_tokens: int | None = None
    stop: Sequence[str] = ()
    threshold: float | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    timeout_s: float | None = None
    prefill: str = ""


@dataclass
class _Run:
    """Mutable state of one request while it is routed."""

    contexts: dict[ModelRole, list[int]]
    shared_tokens: bool
    budget: int
    stops: tuple[str, ...]
    sampling: SamplingParams
    threshold: float
    sink: EventSink | None
    steps: list[Step] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    has_tools: bool = False
    verify: bool = False  # Router.verifying, resolved once for the request
    hold_small: bool = False
    rng: random.Random = field(default_factory=random.Random)
    text: str = ""
    generated: int = 0
    phase: Phase = "thinking"

    def emit(self, event: RouterEvent) -> None:
        if self.sink is not None:
            self.sink(event)


def as_request(request: RouteRequest | str | None, options: dict[str, Any]) -> RouteRequest:
    """``request`` as a :class:`RouteRequest`, with the keyword ``options`` (its fields) applied over it: options
    given beside a request object replace its fields rather than being dropped."""
    if isinstance(request, RouteRequest):
        return dataclasses.replace(request, **options) if options else request
    return RouteRequest(prompt=request, **options)


def validate_request(request: RouteRequest) -> None:
    """Fail fast, with the fix, on input that cannot be served."""
    if request.messages is None:
        if not isinstance(request.prompt, str):
            raise InvalidRequestError(
                f"prompt must be a string (or pass messages=[...]); got {type(request.prompt).__name__}"
            )
        if not request.prompt.strip():
            raise InvalidRequestError("prompt is empty: pass the question or instruction to answer")
        _check_text(request.prompt, "prompt")
    else:
        if isinstance(request.messages, str | bytes) or not request.messages:
            raise InvalidRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        for m in request.messages:
            if not isinstance(m, dict) or "role" not in m:
                raise InvalidRequestError(f"each message needs a 'role' and 'content'; got {m!r:.80}")
            _check_text(content_text(m.get("content")), "a message")
    # the bounds are one pydantic model shared with glimp serve's request bodies (glimp_llm.chat.options)
    check_options(**{name: getattr(request, name) for name in RequestOptions.model_fields})


def _check_text(text: str, what: str) -> None:
    """Refuse text a tokenizer cannot take: NUL characters, or lone surrogates (which cannot be encoded)."""
    if "\x00" in text:
        raise InvalidRequestError(f"{what} contains NUL characters (binary data?); pass text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f"{what} is not valid Unicode text (lone surrogates: bytes decoded with errors='surrogateescape'?); "
            "decode it as UTF-8 first"
        ) from None


class Router:
    """Routes each step of a generation between a small and a large engine by glimpse entropy."""

    def __init__(self, small: Engine, large: Engine, config: RouterConfig | None = None) -> None:
        self.small = small
        self.large = large
        self.config = config or RouterConfig()
        self.admission = Admission(self.config.max_concurrent_requests, self.config.max_queued_requests)
        self._warned_no_verify = False

    # -------------------------------------------------------------------------------- public
    async def generate(
        self, request: RouteRequest | str, *, on_event: EventSink | None = None, **options: Any
    ) -> RoutedResult:
        """Route one request to completion. ``options`` are :class:`RouteRequest` fields."""
        req = as_request(request, options)
        validate_request(req)
        return await self._generate(req, on_event)

    async def _generate(self, req: RouteRequest, on_event: EventSink | None) -> RoutedResult:
        """A validated request, within its deadline and the admission bound."""
        timeout = req.timeout_s or self.config.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async with self.admission.slot() as waited:
                    return await self._route(req, on_event, waited)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the routed request did not finish within {timeout:.3g} s; its engine work was cancelled. "
                "Raise timeout_s / router.request_timeout_s or lower max_tokens"
            ) from None

    async def stream(self, request: RouteRequest | str, **options: Any) -> AsyncGenerator[RouterEvent, None]:
        """Events as they happen: tokens, finished steps, and a final :class:`DoneEvent`. The tokens add up
        to the result's text (step events carry whole steps). Closing the iterator early cancels the request
        and frees its engines."""
        req = as_request(request, options)
        validate_request(req)
        queue: asyncio.Queue[RouterEvent | BaseException | None] = asyncio.Queue()  # None: the end
        # tokens stream as the result's text is cut: never a stop string, not even its start
        sink = StopFilter(stop_list(req.stop), queue.put_nowait) if req.stop else queue.put_nowait
        task = asyncio.create_task(self._generate(req, sink))
        task.add_done_callback(lambda t: queue.put_nowait(t.exception()) if not t.cancelled() else None)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def prepare_prompt(self, request: RouteRequest, engine: Engine) -> list[int]:
        """The token ids of the request's prompt for ``engine`` (see :mod:`glimp_llm.chat.prompt`)."""
        return await prompt_ids(request, engine, self.config)

    @property
    def _shared_tokens(self) -> bool:
        return self.small is self.large or (
            self.small.info.tokenizer_fingerprint == self.large.info.tokenizer_fingerprint
        )

    def check_engines(self) -> None:
        """Fail, typed and with the fix, when a setting needs what a started engine lacks. The manager
        calls it right after starting the engines; every request checks it again (it is cheap).
        ``verify: auto`` never fails: it verifies where the pair can (:attr:`verifying`), and says once
        why not where it cannot."""
        setting = self.config.verify
        if setting is False:
            return
        missing = self._cannot_verify()
        if missing is None:
            return
        if setting == "auto":
            if not self._warned_no_verify:
                self._warned_no_verify = True
                log.warning("router.verify=auto: routing without verification: %s", missing)
            return
        raise ConfigurationError(f"router.verify {missing}, or set router.verify=false (or auto)")

    @property
    def verifying(self) -> bool:
        """Whether the large model verifies small-model steps: ``verify: true``, or ``auto`` on a pair that
        can (a large engine that scores, reports its end-of-sequence ids, and shares the tokenizer)."""
        setting = self.config.verify
        return setting is True or (setting == "auto" and self._cannot_verify() is None)

    def _cannot_verify(self) -> str | None:
        """Why this pair cannot verify, as the first half of an error message; None when it can."""
        large = self.large.info
        if not large.can_score:
            return (
                f"needs a large engine that scores tokens; {large.name!r} ({large.backend}) cannot: use llama.cpp, "
                "a TensorRT-LLM engine built with context logits, or a vLLM server (prompt_logprobs)"
            )
        if not large.eos_token_ids:
            return (
                f"scores the end of the answer too, but {large.name!r} reports no end-of-sequence token ids: give "
                "the engine tokenizer_from (servers) or use a model whose metadata names them"
            )
        if not self._shared_tokens:
            return (
                "needs the two models to share a tokenizer (the large model scores the small model's token ids); "
                f"{self.small.info.model!r} and {large.model!r} do not: pick a same-family pair"
            )
        return None

    # ------------------------------------------------------------------------------- the loop
    async def _route(self, req: RouteRequest, sink: EventSink | None, waited: float) -> RoutedResult:
        cfg = self.config
        t_start = time.perf_counter()
        self.check_engines()
        verify = self.verifying
        shared = self._shared_tokens
        small_ids = await self.prepare_prompt(req, self.small)
        large_ids = small_ids if shared else await self.prepare_prompt(req, self.large)
        window = min(self.small.info.context_window, self.large.info.context_window)
        longest = max(len(small_ids), len(large_ids))
        if longest + 1 >= window:
            raise ContextTooLongError(
                f"the prompt is {longest} tokens but the smaller context window is {window}; "
                "shorten the prompt or raise n_ctx",
                context_tokens=longest,
                window=window,
            )
        budget = min(req.max_tokens or cfg.max_tokens, window - longest - 1)
        overrides = {k: v for k in ("temperature", "top_p", "seed") if (v := getattr(req, k)) is not None}
        context = list(small_ids)  # with a shared tokenizer one list: both models see the same ids
        run = _Run(
            contexts={"small": context, "large": context if shared else list(large_ids)},
            shared_tokens=shared,
            budget=budget,
            stops=tuple(stop_list(req.stop)),
            sampling=SamplingParams(**(cfg.sampling.model_dump() | overrides)),
            threshold=cfg.threshold if req.threshold is None else float(req.threshold),
            sink=sink,
            has_tools=bool(req.tools),
            verify=verify,
            # checks that may discard a small-model step hold it back from the stream until they pass
            hold_small=cfg.routing in ("entropy", "random")
            and (verify or cfg.final_step_check or (cfg.tool_call_large and bool(req.tools))),
            # seeded by the prompt only when it is used: hashing a long prompt is not free
            rng=random.Random(f"{cfg.random_seed}:{hashlib.sha256(repr(small_ids).encode()).hexdigest()}")
            if cfg.routing == "random"
            else random.Random(),
        )
        run.usage.prompt_tokens = len(small_ids)
        run.timings.queue_seconds = waited
        finish = await self._loop(run)
        run.timings.wall_seconds = time.perf_counter() - t_start + waited
        usage = run.usage
        usage.completion_tokens = run.generated
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        result = RoutedResult(
            text=run.text,
            finish_reason=finish,
            steps=run.steps,
            usage=usage,
            timings=run.timings,
            threshold=run.threshold,
            mode="paper" if cfg.paper_faithful else "glimp",
            small_model=self.small.info.model,
            large_model=self.large.info.model,
        )
        run.emit(DoneEvent(result=result))
        return result

    async def _loop(self, run: _Run) -> RoutedFinishReason:
        cfg = self.config
        while True:
            remaining = run.budget - run.generated
            if remaining <= 0:
                return "length"
            if run.phase == "answer" and cfg.answer_model != "router":
                step = await self._write_step(run, cfg.answer_model, None, min(remaining, cfg.answer_max_tokens))
                step.routed_by = "answer"
            else:
                step = await self._routed_step(run, min(remaining, cfg.step_max_tokens))
            other_ids: list[int] = []
            if not run.shared_tokens:  # the other model re-reads the step with its own tokenizer
                other = self.large if step.model == "small" else self.small
                other_ids = await other.tokenize(step.text)
            finish = self._after_step(run, step, other_ids)
            if finish is not None:
                return finish

    def _decided_role(self, run: _Run) -> tuple[ModelRole, RoutedBy] | None:
        """A route known without a glimpse: one-model routing (no guard applies: it is a baseline), or the
        turn's first step (guard)."""
        cfg = self.config
        if cfg.routing == "small-only":
            return "small", "fixed"
        if cfg.routing == "large-only":
            return "large", "fixed"
        if cfg.first_step_large and not run.steps:
            return "large", "first_step"
        if cfg.routing == "random":
            return ("large" if run.rng.random() < cfg.random_large_share else "small"), "random"
        return None

    async def _routed_step(self, run: _Run, cap: int) -> Step:
        cfg = self.config
        decided = self._decided_role(run)
        if decided is not None:
            role, why = decided
            step = await self._write_step(run, role, None, cap)
            step.routed_by = why
            return await self._check_small_step(run, step, cap) if role == "small" else step
        paper = cfg.paper_faithful
        glimpse_sampling = SamplingParams() if paper else run.sampling
        t0 = time.perf_counter()
        forced: list[Glimpse] = []
        decider: Glimpse | None
        try:
            g = await self.small.glimpse(
                run.contexts["small"], glimpse_sampling, top_logprobs=cfg.paper_top_k if paper else 0
            )
            if cfg.forced_entropy > 0 and not paper:
                forced, decider = await self._past_forced(run, g, cap)
                ahead = [*forced, decider] if decider is not None else forced
            else:
                ahead = [g]
                if not paper and cfg.glimpse_tokens > 1:
                    tokens = min(cfg.glimpse_tokens, cap)
                    ahead = await look_ahead(
                        self.small, run.contexts["small"], g, run.sampling, tokens=tokens, stops=self._step_stops(run)
                    )
                decider = None
        except EngineFailureError as exc:
            if not cfg.fallback_on_engine_failure:
                raise
            step = await self._write_step(run, "large", None, cap, fallback=f"small glimpse failed: {exc}")
            step.routed_by = "fallback"
            return step
        glimpse_seconds = time.perf_counter() - t0
        run.timings.glimpse_seconds += glimpse_seconds
        run.usage.glimpses += len(forced) + 1 if forced else 1
        reason: RoutedBy = "entropy"
        if paper:
            entropy = renormalized_topk_entropy([lp for _, lp in g.top_logprobs])
            kind, bound = "top-k renormalized", 0.0
            to_large = entropy >= run.threshold
        else:
            # one token: the paper's signal; several: the most uncertain of them (see RouterConfig.glimpse_tokens);
            # past forced tokens: the first uncertain one (or, when all were forced, the small model goes on)
            peak = decider if decider is not None else max(ahead, key=lambda x: x.entropy)
            entropy, kind, bound = peak.entropy, peak.entropy_kind, peak.entropy_error_bound
            to_large = entropy > run.threshold and (decider is not None or not forced)
        if (
            not to_large
            and run.has_tools
            and cfg.tool_call_large
            and _opens_tool_call("".join(x.text for x in ahead), cfg.tool_call_markers)
        ):
            to_large, reason = True, "tool_call"
        if paper or to_large:  # the paper's glimpse is discarded in both branches (it has no forced tokens)
            prefix = _Prefix.of(forced) if forced else None
            run.usage.glimpse_tokens_discarded += len(ahead) - len(forced)
        else:
            prefix = _Prefix.of(ahead)
        run.usage.forced_tokens += len(forced)
        step = await self._write_step(
            run, "large" if to_large else "small", prefix, cap, glimpse_seconds=glimpse_seconds
        )
        step.routed_by = reason
        if not to_large:
            step = await self._check_small_step(run, step, cap)
        step.entropy, step.entropy_kind, step.entropy_error_bound = entropy, kind, bound
        step.glimpse_text = "".join(x.text for x in ahead)
        step.glimpse_tokens = len(ahead)
        step.forced_tokens = len(forced)
        return step

    async def _past_forced(self, run: _Run, first: Glimpse, cap: int) -> tuple[list[Glimpse], Glimpse | None]:
        """Glimpse past forced tokens (``router.forced_entropy``): decode the small model's near-certain
        tokens one at a time, up to ``forced_max_tokens``, and return them with the first uncertain glimpse,
        which decides the route. None instead of it: every token was forced (the cap, a stop string or the
        step's end came first), so the small model goes on. The forced tokens are kept by either model."""
        cfg = self.config
        forced: list[Glimpse] = []
        g = first
        text = ""
        stops = self._step_stops(run)
        limit = min(cfg.forced_max_tokens, cap - 1)
        while g.entropy < cfg.forced_entropy and not g.is_eos:
            forced.append(g)
            text += g.text
            if len(forced) >= limit or _first_stop(text, stops) is not None:
                return forced, None
            g = await self.small.glimpse([*run.contexts["small"], *(x.token_id for x in forced)], run.sampling)
        return forced, g

    def _step_stops(self, run: _Run) -> list[str]:
        """What ends the next step: the delimiter while thinking (or when the router writes the answer),
        the end-of-thinking marker for thinking models, and the caller's stop strings."""
        cfg = self.config
        stops = [cfg.step_delimiter] if run.phase == "thinking" or cfg.answer_model == "router" else []
        if run.phase == "thinking" and thinking(self.small, self.config):
            stops.append(cfg.end_of_thinking)
        return stops + list(run.stops)

    # ------------------------------------------------------------------ checks of small-model steps
    async def _check_small_step(self, run: _Run, step: Step, cap: int) -> Step:
        """The large model's checks of a step the small model wrote (held back from the stream until
        they pass). A step that opens a tool call is rewritten from the marker on, verification or not: a
        repeated call is plausible to the large model token by token, but calling or answering is its
        decision. Then verification (``router.verify``) reads the step; without it, a step that ends the
        answer is rewritten."""
        cfg = self.config
        if step.ended_by == "cancelled" or not run.hold_small:
            return step
        guard_tools = cfg.tool_call_large and run.has_tools
        markers = [i for m in cfg.tool_call_markers if (i := step.text.find(m)) >= 0] if guard_tools else []
        if markers:
            kept = await _ids_within(self.small, step.token_ids, min(markers))
            return await self._rewrite(run, step, kept, cap, "tool_call")
        if run.verify:
            return await self._verify(run, step, cap)
        if cfg.final_step_check and self._ends_answer(run, step):
            return await self._rewrite(run, step, 0, cap, "final_check")
        self._release(run, step)
        return step

    def _ends_answer(self, run: _Run, step: Step) -> bool:
        """Whether ``step`` would end the answer: end of sequence, or a final-answer marker. Thinking
        models in their reasoning phase are left out: their answer has ``answer_model``."""
        if run.phase == "thinking" and thinking(self.small, self.config):
            return False
        return step.ended_by == "eos" or any(m in step.text for m in self.config.final_answer_markers)

    async def _verify(self, run: _Run, step: Step, cap: int) -> Step:
        """Score the small model's step under the large model; keep the longest prefix it agrees with
        (:meth:`_agreed`); from the first rejected token on, the large model writes the step
        (``verify_resume=large``) or puts its own token there and lets the small model draft on
        (``verify_resume=small``, :meth:`_speculate`)."""
        if self.config.verify_resume == "small":
            return await self._speculate(run, step, cap)
        t0 = time.perf_counter()
        ids = step.token_ids
        scores = await self._scored(run.contexts["large"], ids, ends=step.ended_by == "eos")
        accepted = self._agreed(scores.logprobs, scores.best_logprobs)
        run.timings.verify_seconds += time.perf_counter() - t0
        run.usage.verified_steps += 1
        least = min(scores.logprobs) if scores.logprobs else None
        if accepted == len(scores.logprobs):
            step.verified, step.accepted_tokens, step.min_logprob = True, len(ids), least
            self._release(run, step)
            return step
        run.usage.rejected_steps += 1
        new = await self._rewrite(run, step, accepted, cap, step.routed_by)
        new.verified, new.accepted_tokens, new.min_logprob = True, accepted, least
        return new

    async def _scored(self, context: list[int], ids: Sequence[int], *, ends: bool) -> TokenScores:
        """The large model's scores of ``ids`` after ``context``; when they end the answer (``ends``) and
        are all agreed, the end of sequence is scored too, as one more position: ending the answer here is
        a decision as well (its log-probability is that of the large model's likeliest end token)."""
        scores = await self.large.score(context, ids) if ids else TokenScores(())
        if not ends or self._agreed(scores.logprobs, scores.best_logprobs) < len(ids):
            return scores
        full = [*context, *ids]
        ends_scored = [await self.large.score(full, [e]) for e in sorted(self._eos_ids)]
        best, best_ids = scores.best_logprobs, scores.best_ids
        if len(best) == len(ids) and all(e.best_logprobs for e in ends_scored):
            best = (*best, ends_scored[0].best_logprobs[0])
        if len(best_ids) == len(ids) and all(e.best_ids for e in ends_scored):
            best_ids = (*best_ids, ends_scored[0].best_ids[0])
        return TokenScores(
            (*scores.logprobs, max(e.logprobs[0] for e in ends_scored)),
            best,
            best_ids,
            seconds=scores.seconds + sum(e.seconds for e in ends_scored),
            cached_tokens=scores.cached_tokens,
        )

    async def _speculate(self, run: _Run, draft: Step, cap: int) -> Step:
        """``verify_resume=small``: speculative decoding inside the step. The large model scores each
        draft; the agreed prefix is kept, the first rejected token is replaced by the large model's own
        (read from the same scores, so no large-model decode is spent on it), and the small model drafts on
        from there, ``verify_draft_tokens`` at a time, until the step ends. With ``verify_margin=0`` every
        kept token is the one the large model would have chosen greedily: the large model's answer, for the
        price of its prefill-speed scoring plus the small model's decoding."""
        context = run.contexts["large"]  # shared with the small model's (check_engines)
        stops = self._step_stops(run)
        eos = self.large.info.eos_token_ids
        ids: list[int] = []
        draft_ids, draft_end = list(draft.token_ids), draft.ended_by
        more = draft_end in ("step_cap", "budget") and len(draft_ids) < cap  # only the draft size ended it
        accepted = rejected = corrected = 0
        rejected_text: str | None = None
        least: float | None = None
        end: StepEnd = draft_end
        small_seconds = 0.0
        while True:
            t0 = time.perf_counter()
            scores = await self._scored(context + ids, draft_ids, ends=draft_end == "eos")
            run.timings.verify_seconds += time.perf_counter() - t0
            agreed = self._agreed(scores.logprobs, scores.best_logprobs)
            if scores.logprobs:
                low = min(scores.logprobs)
                least = low if least is None else min(least, low)
            ids += draft_ids[:agreed]
            accepted += min(agreed, len(draft_ids))
            if agreed == len(scores.logprobs):  # all kept (and the end of sequence, when the draft ended so)
                if not more:
                    end = draft_end
                    break
            else:
                if len(scores.best_ids) <= agreed:
                    raise ConfigurationError(
                        f"router.verify_resume=small needs the large model's own token at each scored position, "
                        f"but {self.large.name!r} ({self.large.info.backend}) returned none: use an engine that "
                        "reports it (llama.cpp, TensorRT-LLM, vLLM) or set router.verify_resume=large"
                    )
                run.usage.rejected_steps += 1 if rejected_text is None else 0
                tail = draft_ids[agreed:]
                rejected += len(tail)
                if rejected_text is None:
                    rejected_text = await self.small.detokenize(tail) if tail else ""
                own = scores.best_ids[agreed]
                corrected += 1
                if own in eos:
                    end = "eos"
                    break
                ids.append(own)
            text = await self.small.detokenize(ids)
            hit = _first_stop(text, stops)
            if hit is not None:
                ids = await _ids_through_stop(self.small, ids, stops)
                end = self._ended_by(hit, run)
                break
            if len(ids) >= cap:
                end = self._cap_end(run, cap)
                break
            d = await self.small.generate(
                context + ids,
                max_tokens=self._draft_size(run, cap - len(ids)),
                stop=stops,
                sampling=run.sampling,
            )
            small_seconds += d.seconds
            draft_ids = list(d.token_ids)
            if d.finish_reason == "cancelled":
                ids += draft_ids
                end = "cancelled"
                break
            draft_end = self._completion_end(d, run, cap)
            more = d.finish_reason == "length" and len(ids) + len(draft_ids) < cap
        run.timings.small_seconds += small_seconds
        run.usage.verified_steps += 1
        run.usage.small_tokens_rejected += rejected
        run.usage.corrected_tokens += corrected
        step = draft.model_copy(
            update={
                "tokens": len(ids),
                "token_ids": ids,
                "text": await self.small.detokenize(ids) if ids else "",
                "ended_by": end,
                "generation_seconds": draft.generation_seconds + small_seconds,
                "verified": True,
                "accepted_tokens": accepted,
                "rejected_tokens": rejected,
                "rejected_text": rejected_text,
                "corrected_tokens": corrected,
                "min_logprob": least,
            }
        )
        self._release(run, step)
        return step

    def _draft_size(self, run: _Run, room: int) -> int:
        """How many tokens the small model drafts before the next scoring (``verify_draft_tokens``, only
        where a verification will read the draft and the small model drafts on after it)."""
        cfg = self.config
        speculative = run.verify and cfg.verify_resume == "small" and run.hold_small
        return min(room, cfg.verify_draft_tokens) if speculative and cfg.verify_draft_tokens > 0 else room

    def _agreed(self, logprobs: Sequence[float], best: Sequence[float]) -> int:
        """How many leading tokens the large model accepts: each at or above ``verify_logprob`` and, with
        ``verify_margin``, within that many nats of the large model's own likeliest token."""
        cfg = self.config
        margin = cfg.verify_margin
        for i, lp in enumerate(logprobs):
            if lp < cfg.verify_logprob or (margin is not None and i < len(best) and lp < best[i] - margin):
                return i
        return len(logprobs)

    async def _rewrite(self, run: _Run, step: Step, keep: int, cap: int, reason: RoutedBy) -> Step:
        """The large model writes ``step`` again after its first ``keep`` small-model tokens."""
        kept_ids = step.token_ids[:keep]
        kept_text = await self.small.detokenize(kept_ids) if kept_ids else ""
        rejected = step.tokens - keep
        run.usage.small_tokens_rejected += rejected
        # the discarded tokens' time stays in timings.small_seconds: the small model did spend it
        new = await self._write_step(
            run, "large", _Prefix(kept_ids, kept_text), cap, glimpse_seconds=step.glimpse_seconds
        )
        new.routed_by = reason
        new.generation_seconds += step.generation_seconds
        new.rejected_tokens = rejected
        new.rejected_text = step.text[len(kept_text) :] if step.text.startswith(kept_text) else step.text
        return new

    def _release(self, run: _Run, step: Step) -> None:
        """Stream a held-back small-model step once the checks have passed."""
        if step.text:
            run.emit(TokenEvent(step=step.index, model="small", text=step.text))

    @property
    def _eos_ids(self) -> frozenset[int]:
        both = self.small.info.eos_token_ids & self.large.info.eos_token_ids
        return both or self.large.info.eos_token_ids

    # ------------------------------------------------------------------------------- writing a step
    async def _write_step(
        self,
        run: _Run,
        role: ModelRole,
        prefix: _Prefix | None,
        cap: int,
        *,
        glimpse_seconds: float = 0.0,
        fallback: str | None = None,
    ) -> Step:
        """One step by ``role``, starting with ``prefix``: tokens the small model wrote and that are kept
        (its glimpse when it writes the step; forced or verified tokens when the large model continues)."""
        cfg = self.config
        index = len(run.steps)
        stops = self._step_stops(run)
        held = role == "small" and run.hold_small
        live = run.sink is not None and not held

        def on_token(delta: Delta) -> None:
            if delta.text:
                run.emit(TokenEvent(step=index, model=role, text=delta.text))

        prefix = prefix or _Prefix([], "")
        ids = list(prefix.ids)
        if role == "large" and ids and not run.shared_tokens:
            ids = await self.large.tokenize(prefix.text)
        kept_small = len(ids) if role == "large" else 0
        text = prefix.text
        if live and text:
            run.emit(TokenEvent(step=index, model="small", text=text))

        def finish(step_ids: list[int], step_text: str, ended: StepEnd, seconds: float) -> Step:
            if role == "small":
                run.timings.small_seconds += seconds
            else:
                run.timings.large_seconds += seconds
            return Step(
                index=index,
                model=role,
                phase=run.phase,
                glimpse_reused=role == "small" and bool(ids or prefix.eos),
                tokens=len(step_ids),
                token_ids=step_ids,
                text=step_text,
                ended_by=ended,
                glimpse_seconds=glimpse_seconds,
                generation_seconds=seconds,
                fallback=fallback,
                kept_small_tokens=kept_small,
            )

        if prefix.eos:
            return finish(ids, text, "eos", 0.0)
        if ids:
            hit = _first_stop(text, stops)
            if hit is not None or len(ids) >= cap:
                if "\ufffd" in text:
                    text = await self.small.detokenize(prefix.ids)
                return finish(ids, text, self._ended_by(hit, run) if hit is not None else self._cap_end(run, cap), 0.0)
        engine = self.small if role == "small" else self.large
        t0 = time.perf_counter()
        try:
            completion = await engine.generate(
                run.contexts[role] + ids,
                max_tokens=self._draft_size(run, cap - len(ids)) if role == "small" else cap - len(ids),
                stop=stops,
                sampling=run.sampling,
                # per-token callbacks cross threads; only pay for them when someone listens
                on_token=on_token if live else None,
            )
        except EngineFailureError as exc:
            if not cfg.fallback_on_engine_failure or fallback is not None:
                raise
            other: ModelRole = "large" if role == "small" else "small"
            # the other model starts afresh: the kept tokens are dropped after all
            run.usage.glimpse_tokens_discarded += len(prefix.ids)
            step = await self._write_step(run, other, None, cap, fallback=f"{role} failed: {exc}")
            step.routed_by = "fallback"
            return step
        seconds = time.perf_counter() - t0
        all_ids = ids + list(completion.token_ids)
        text += completion.text
        if "\ufffd" in prefix.text:  # a multi-byte character split across the prefix: decode as one
            text = await engine.detokenize(all_ids)
        return finish(all_ids, text, self._completion_end(completion, run, cap), seconds)

    def _completion_end(self, completion: Completion, run: _Run, cap: int) -> StepEnd:
        """How an engine's generation ended, as a step's end."""
        if completion.finish_reason == "stop":
            return self._ended_by(completion.stop_string, run)
        if completion.finish_reason in ("eos", "cancelled"):
            return completion.finish_reason
        return self._cap_end(run, cap)

    def _ended_by(self, stop: str | None, run: _Run) -> StepEnd:
        if stop == self.config.step_delimiter:
            return "delimiter"
        if stop == self.config.end_of_thinking and run.phase == "thinking":
            return "end_of_thinking"
        return "stop_sequence"

    def _cap_end(self, run: _Run, cap: int) -> StepEnd:
        return "budget" if run.generated + cap >= run.budget else "step_cap"

    def _after_step(self, run: _Run, step: Step, other_ids: list[int]) -> RoutedFinishReason | None:
        """Append the step, report it, and decide whether the request is over."""
        previous = run.steps[-1] if run.steps else None
        run.steps.append(step)
        run.generated += step.tokens
        run.contexts[step.model].extend(step.token_ids)
        if not run.shared_tokens:
            run.contexts["large" if step.model == "small" else "small"].extend(other_ids)
        if step.model == "small":  # its corrected tokens are the large model's (verify_resume=small)
            run.usage.small_steps += 1
            run.usage.small_tokens += step.tokens - step.corrected_tokens
            run.usage.large_tokens += step.corrected_tokens
        else:
            run.usage.large_steps += 1
            run.usage.large_tokens += step.tokens - step.kept_small_tokens
            run.usage.small_tokens += step.kept_small_tokens
        start = len(run.text)
        run.text += step.text
        run.emit(StepEvent(step=step))
        if run.stops:
            hit = first_stop(run.text, run.stops, max(0, start - max(map(len, run.stops))))
            if hit is not None:
                run.text = run.text[: hit[0]]
                return "stop"
        if step.ended_by == "cancelled":
            return "cancelled"
        if step.ended_by == "eos":
            return "eos"
        if step.ended_by == "end_of_thinking":
            run.phase = "answer"
        if run.generated >= run.budget:
            return "length"
        if (
            self.config.stop_on_repeated_step
            and previous is not None
            and step.text.strip()
            and step.text == previous.text
        ):
            return "repetition"
        return None


@dataclass(frozen=True)
class _Prefix:
    """Tokens a step starts with, written by the small model and kept; ``eos``: it ended the answer there."""

    ids: list[int]
    text: str
    eos: bool = False

    @classmethod
    def of(cls, glimpses: Sequence[Glimpse]) -> _Prefix:
        kept = [g for g in glimpses if not g.is_eos]
        return cls([g.token_id for g in kept], "".join(g.text for g in kept), eos=len(kept) < len(glimpses))


def _opens_tool_call(text: str, markers: Sequence[str]) -> bool:
    """Whether the glimpsed start of a step is (the start of) a tool-call marker."""
    head = text.lstrip()
    return bool(head) and any(head.startswith(m) or m.startswith(head) for m in markers)


async def _ids_through_stop(engine: Engine, ids: list[int], stops: Sequence[str]) -> list[int]:
    """``ids`` (whose text holds a stop string) up to the token that completes the first one, as an engine's
    own generation ends: a stop can span a correction token and the next draft, which no single engine call
    saw whole. Usually the last token completes it, which one detokenisation confirms."""
    n = len(ids)
    while n > 1 and _first_stop(await engine.detokenize(ids[: n - 1]), stops) is not None:
        n -= 1
    return ids[:n]


async def _ids_within(engine: Engine, ids: Sequence[int], chars: int) -> int:
    """The most leading tokens of ``ids`` whose text fits in ``chars`` characters (binary search: the
    text length grows with the token count, and each probe is one detokenisation)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(await engine.detokenize(ids[:mid])) <= chars:
            lo = mid
        else:
            hi = mid - 1
    return lo


async def look_ahead(
    engine: Engine,
    context: Sequence[int],
    first: Glimpse,
    sampling: SamplingParams,
    *,
    tokens: int,
    stops: Sequence[str],
) -> list[Glimpse]:
    """Glimpse on past ``first``, one token at a time (each glimpse extends the context by the token before
    it, so an engine with prefix reuse evaluates one token per glimpse), up to ``tokens`` in all, and not
    past end of sequence or a stop string: what the small model would write first, had it the step. The
    router routes on these (``router.glimpse_tokens``); calibration measures the same signal with it."""
    ahead = [first]
    text = first.text
    while len(ahead) < tokens and not ahead[-1].is_eos and _first_stop(text, stops) is None:
        ahead.append(await engine.glimpse([*context, *(x.token_id for x in ahead)], sampling))
        text += ahead[-1].text
    return ahead


def _first_stop(text: str, stops: Sequence[str]) -> str | None:
    hit = first_stop(text, stops)
    return hit[1] if hit else None
