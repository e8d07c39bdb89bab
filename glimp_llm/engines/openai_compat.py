"""An engine over OpenAI-compatible servers: llama-server (llama.cpp), vLLM, SGLang, trtllm-serve.

When one machine is not enough the models run on serving engines that batch in flight, shard over GPUs and
keep a prefix cache; this engine speaks to them over HTTP and satisfies the same
:class:`~glimp_llm.engines.base.Engine` contract as the in-process ones. It is three parts, one job each:

* this module: the contract (argument checks, counters, concurrency bound, replica affinity by prefix);
* :mod:`glimp_llm.engines.servers.transport`: HTTP, the one tenacity retry policy, replicas, typed errors;
* one module per server dialect in :mod:`glimp_llm.engines.servers` (``dialect=``, or ``auto`` from the
  ``owned_by`` field of ``GET /v1/models``): how that server is asked for each fact and call.

Entropy: servers return only the top-k logprobs, so the glimpse entropy is the bounded estimate of
:func:`~glimp_llm.entropy.entropy_from_topk` (``entropy_kind="top-k estimate"``, with ``k``, the captured
mass and the error bound). Raise ``top_logprobs`` to tighten it (llama.cpp: top-1000 costs ~20 ms;
vLLM caps it with ``--max-logprobs``).

A streamed step is retried only while none of its tokens has reached the caller. Cancelling a call closes
its HTTP stream, which frees the server slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from glimp_llm.chat_template import ChatTemplate
from glimp_llm.engines.base import (
    Completion,
    Delta,
    EngineBase,
    EngineHealth,
    EngineInfo,
    EngineStats,
    Glimpse,
    Message,
    SamplingParams,
    TokenCallback,
    TokenScores,
)
from glimp_llm.engines.replicas import Replica, prefix_key
from glimp_llm.engines.servers import DIALECTS, OWNED_BY, Dialect
from glimp_llm.engines.servers.dialect import model_cards
from glimp_llm.engines.servers.transport import ServerTransport
from glimp_llm.errors import ConfigurationError, EngineFailureError, EngineUnavailableError

DialectName = Literal["llama.cpp", "vllm", "sglang", "trtllm"]


class OpenAICompatEngine(EngineBase):
    """One model served by one or more OpenAI-compatible servers (replicas of the same model)."""

    backend_name = "openai-compat"

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        dialect: Literal["auto"] | DialectName = "auto",
        top_logprobs: int = 20,
        vocab_size: int | None = None,
        context_window: int | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        token_ids: Literal["always", "never"] = "always",
        max_concurrency: int = 64,
        health_interval_s: float = 10.0,
        replica_retry_s: float = 5.0,
        chat_template: str | None = None,
        tokenizer_from: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        stats = EngineStats(extra={"retries": 0.0, "retokenized_steps": 0.0, "replica_failures": 0.0})
        super().__init__(name=name or model, stats=stats)
        self.model = model
        self.http = ServerTransport(
            base_urls,
            engine=self.name,
            stats=stats,
            api_key=api_key,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            replica_retry_s=replica_retry_s,
            health_interval_s=health_interval_s,
            transport=transport,  # None: real sockets; tests pass recorded servers (httpx.MockTransport)
        )
        self.pool = self.http.pool
        self._server: Dialect | None = None if dialect == "auto" else DIALECTS[dialect](self)
        self.k = top_logprobs
        self.vocab_size_setting = vocab_size
        # a configured size bounds the entropy estimate only; a size the server reports (llama-server) bounds ids
        self.bounds_token_ids = vocab_size is None
        self.context_window_setting = context_window
        self.chat_template_setting = chat_template
        self.tokenizer_from = tokenizer_from
        self._send_ids = token_ids == "always"
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._template: ChatTemplate | None = None
        self._local_tokenizer: Any = None
        self._token_texts: dict[int, str] = {}

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def server(self) -> Dialect:
        """How this engine's server is asked (known once started: ``auto`` is read from the server)."""
        if self._server is None:
            raise EngineUnavailableError(f"engine {self.name!r} is not started; its dialect is detected on start")
        return self._server

    @property
    def dialect(self) -> str:
        return self.server.name

    async def _start(self) -> EngineInfo:
        self.http.open()
        try:
            info = await self.http.call(self._describe)
        except BaseException:
            await self.http.close()
            raise
        self.http.context_window = info.context_window
        self.http.watch()
        return info

    async def _describe(self, replica: Replica) -> EngineInfo:
        if self._server is None:
            owned = {str(m.get("owned_by", "")) for m in await model_cards(self.http, replica)}
            found = [OWNED_BY[o] for o in owned if o in OWNED_BY]
            if not found:
                raise ConfigurationError(
                    f"engine {self.name!r}: cannot tell the server kind from /v1/models owned_by={sorted(owned)}; "
                    f"set dialect to one of {', '.join(DIALECTS)}"
                )
            self._server = found[0](self)
        self.http.dialect = self._server.name
        return await self._server.describe(replica)

    async def _close(self) -> None:
        await self.http.close()

    async def _health(self) -> EngineHealth:
        return await self.http.health()

    # ------------------------------------------------------------------------------ text
    async def tokenize(self, text: str) -> list[int]:
        self._require_started()
        return await self.http.call(lambda r: self.server.tokenize(r, text))

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        self._require_started()
        return await self.server.detokenize(self._check_ids(token_ids))

    async def token_text(self, token: int) -> str:
        """The text of one token (cached: only end tokens are looked up, once each)."""
        if token not in self._token_texts:
            self._token_texts[token] = await self.server.detokenize([token])
        return self._token_texts[token]

    def local_decode(self, ids: list[int]) -> str:
        """Decode with the model's own ``tokenizer.json`` (``tokenizer_from``), for servers that do not."""
        if self._local_tokenizer is None:
            if not self.tokenizer_from:
                raise EngineUnavailableError(
                    f"engine {self.name!r}: trtllm-serve has no /detokenize; set tokenizer_from to the model's "
                    "Hugging Face directory (its tokenizer.json is used)"
                )
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EngineUnavailableError("detokenising for trtllm-serve needs: pip install tokenizers") from exc
            self._local_tokenizer = Tokenizer.from_file(str(Path(self.tokenizer_from) / "tokenizer.json"))
        return str(self._local_tokenizer.decode(ids, skip_special_tokens=False))

    async def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        self._require_started()
        if self._template is not None:
            return self._template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        # only vLLM's /tokenize renders messages (SGLang's takes a prompt only)
        return await self.server.render_chat_on_server(
            list(messages), list(tools) if tools else None, add_generation_prompt
        )

    # ------------------------------------------------------------------------------ model calls
    async def _prompt(self, context: list[int]) -> list[int] | str:
        return context if self._send_ids else await self.detokenize(context)

    def _count(self, context: Sequence[int], cached: int, generated: int = 0) -> None:
        self._stats.tokens_reused += cached
        self._stats.tokens_evaluated += max(0, len(context) - cached) + generated

    async def glimpse(self, context: Sequence[int], sampling: SamplingParams, *, top_logprobs: int = 0) -> Glimpse:
        ids = self._check_context(context)
        prompt = await self._prompt(ids)
        path, body = self.server.glimpse_request(prompt, max(self.k, top_logprobs), sampling)

        async def attempt(replica: Replica) -> Glimpse:
            return self.server.parse_glimpse(await self.http.request_json(replica, path, body), replica)

        t0 = time.perf_counter()
        async with self._semaphore:
            with self._counted():
                g = await self.http.call(attempt, key=prefix_key(ids))
        self._stats.glimpses += 1
        self._count(ids, g.cached_tokens)
        # the estimate used all ``self.k`` the server returned; the caller gets the ``top_logprobs`` it asked for
        top = tuple(sorted(g.top_logprobs, key=lambda t: -t[1])[:top_logprobs])
        return dataclasses.replace(g, top_logprobs=top, seconds=time.perf_counter() - t0)

    async def score(self, context: Sequence[int], continuation: Sequence[int]) -> TokenScores:
        """Log-probability of each ``continuation`` token (vLLM's ``prompt_logprobs``; see the dialect).
        llama-server, SGLang's OpenAI routes and trtllm-serve return no prompt logprobs: those cannot score."""
        if not self.info.can_score:
            raise EngineUnavailableError(
                f"engine {self.name!r}: a {self.dialect} server returns no prompt logprobs on its OpenAI routes, "
                "so it cannot score another model's tokens; put the large model on vLLM (or an in-process engine) "
                "to verify steps"
            )
        full = self._check_score(context, continuation)
        if not continuation:
            return TokenScores(logprobs=())
        t0 = time.perf_counter()
        async with self._semaphore:
            with self._counted():
                scores = await self.http.call(lambda r: self.server.score(r, full, len(context)), key=prefix_key(full))
        self._count(full, scores.cached_tokens)
        return dataclasses.replace(scores, seconds=time.perf_counter() - t0)

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
        ids = [int(t) for t in context]
        prompt = await self._prompt(ids)
        stops = [s for s in stop if s]
        delivered = False

        def emit(delta: Delta) -> None:
            nonlocal delivered
            if on_token is not None and (delta.text or delta.token_ids):
                delivered = True
                on_token(delta)

        async def attempt(replica: Replica) -> Completion:
            try:
                return await self.server.generate(replica, prompt, max_tokens, stops, sampling, emit)
            except EngineFailureError as exc:
                if delivered and exc.transient:  # tokens reached the caller: a retry would repeat them
                    raise EngineFailureError(
                        f"{exc} (the step was streaming; not retried to avoid repeating its tokens)",
                        transient=False,
                        engine=self.name,
                    ) from exc
                raise

        t0 = time.perf_counter()
        async with self._semaphore:
            with self._counted():
                completion = await self.http.call(attempt, key=prefix_key(ids))
        self._stats.generate_calls += 1
        self._stats.tokens_generated += len(completion.token_ids)
        self._count(ids, completion.cached_tokens, len(completion.token_ids))
        return dataclasses.replace(completion, seconds=time.perf_counter() - t0)
