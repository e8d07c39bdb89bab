"""An engine over OpenAI-compatible servers: llama-server (llama.cpp), vLLM, SGLang, trtllm-serve.

When one machine is not enough the models run on serving engines that batch in flight, shard over GPUs and
keep a prefix cache; this engine speaks to them over HTTP and satisfies the same
:class:`~glimp_llm.engines.base.Engine` contract as the in-process ones.

Dialects (``dialect=``, or ``auto`` from the ``owned_by`` field of ``GET /v1/models``):

=============  ==========================================  ===============================================
dialect        glimpse / steps                             tokenize, detokenize, chat template
=============  ==========================================  ===============================================
``llama.cpp``  ``POST /completion`` with ``n_probs=k``,    ``/tokenize``, ``/detokenize``; the template
               token-id prompt, ``return_tokens``           from ``/props`` rendered here (ChatTemplate)
``vllm``       ``POST /v1/completions`` with ``logprobs``,  ``/tokenize``, ``/detokenize``; template from
               token-id prompt, ``return_token_ids``,       config / ``tokenizer_from``, else rendered by
               ``include_stop_str_in_output``               the server (``/tokenize`` with ``messages``)
``sglang``     as vllm, with ``no_stop_trim``               as vllm
``trtllm``     as vllm; only fields trtllm-serve's          ``/_internal/tokenize``; the template and
               protocol declares (it forbids extra ones)    detokenisation from ``tokenizer_from``
=============  ==========================================  ===============================================

Why ``/v1/completions`` and not chat completions for trtllm-serve: only a completion takes a token-id prompt,
so only it glimpses at the exact context the router holds (chat completions re-render messages). The
trtllm-serve protocol accepts ``logprobs`` on completions with the PyTorch backend or engines built with
``gather_generation_logits`` (older releases rejected it: the glimpse then fails with a typed error naming
the fix).

Entropy: servers return only the top-k logprobs, so the glimpse entropy is the bounded estimate of
:func:`~glimp_llm.entropy.entropy_from_topk` (``entropy_kind="top-k estimate"``, with ``k``, the captured
mass and the error bound). Raise ``top_logprobs`` to tighten it (llama.cpp: top-1000 costs ~20 ms;
vLLM caps it with ``--max-logprobs``).

Reliability: one pooled :class:`httpx.AsyncClient` with explicit timeouts; every call is retried by one
tenacity policy (bounded attempts, jittered exponential wait) on connection errors, timeouts, 429 and 5xx,
never on other 4xx; the whole call, retries included, is bounded by ``timeout_s``. A streamed step is
retried only while none of its tokens has reached the caller. Replicas: see
:mod:`glimp_llm.engines.replicas`. Cancelling a call closes its HTTP stream, which frees the server slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from glimp_llm.chat_template import ChatTemplate
from glimp_llm.config import OpenAICompatEngineConfig
from glimp_llm.engines.base import (
    Completion,
    Delta,
    EngineHealth,
    EngineInfo,
    EngineStats,
    FinishReason,
    Glimpse,
    Message,
    SamplingParams,
    TokenCallback,
    TokenScores,
)
from glimp_llm.engines.replicas import NoReplicaError, Replica, ReplicaPool, prefix_key
from glimp_llm.entropy import entropy_from_topk
from glimp_llm.errors import (
    ConfigurationError,
    ContextTooLongError,
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    MalformedResponseError,
)

log = logging.getLogger("glimp_llm.engines.openai_compat")

Dialect = Literal["llama.cpp", "vllm", "sglang", "trtllm"]
T = TypeVar("T")

#: ``owned_by`` in ``GET /v1/models`` -> dialect (what ``dialect="auto"`` reads).
OWNED_BY: dict[str, Dialect] = {"llamacpp": "llama.cpp", "vllm": "vllm", "sglang": "sglang", "tensorrt_llm": "trtllm"}
#: Tokenised by both models to tell whether they can exchange token ids (see ``tokenizer_fingerprint``).
FINGERPRINT_PROBE = "Step 1: 12 + 7 = 19.\n\nThe naïve café's résumé — 東京 🙂 <think>\tdef f(x): return x**2"


def _transient(exc: BaseException) -> bool:
    """The retry predicate: what another attempt (maybe on another replica) can fix."""
    if isinstance(exc, EngineFailureError):
        return exc.transient
    return isinstance(exc, NoReplicaError)  # every replica out: the soonest comes back


class OpenAICompatEngine:
    """One model served by one or more OpenAI-compatible servers (replicas of the same model)."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        name: str | None = None,
        api_key: str | None = None,
        dialect: Literal["auto"] | Dialect = "auto",
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
        self.name = name or model
        self._transport = transport  # None: real sockets; tests pass recorded servers (httpx.MockTransport)
        self.model = model
        self.pool = ReplicaPool(base_urls, retry_after_s=replica_retry_s)
        self._api_key = api_key
        self._dialect_setting = dialect
        self._dialect: Dialect | None = None if dialect == "auto" else dialect
        self.k = top_logprobs
        self._vocab_size = vocab_size
        self._context_window = context_window
        self.timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self._send_ids = token_ids == "always"
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._health_interval_s = health_interval_s
        self._chat_template_override = chat_template
        self._tokenizer_from = tokenizer_from
        self._client: httpx.AsyncClient | None = None
        self._info: EngineInfo | None = None
        self._template: ChatTemplate | None = None
        self._local_tokenizer: Any = None
        self._token_texts: dict[int, str] = {}
        self._health_task: asyncio.Task[None] | None = None
        self._stats = EngineStats(extra={"retries": 0.0, "retokenized_steps": 0.0, "replica_failures": 0.0})
        self._start_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, cfg: OpenAICompatEngineConfig, *, name: str) -> OpenAICompatEngine:
        return cls(
            cfg.base_urls,
            cfg.model,
            name=name,
            api_key=cfg.api_key,
            dialect=cfg.dialect,
            top_logprobs=cfg.top_logprobs,
            vocab_size=cfg.vocab_size,
            context_window=cfg.context_window,
            timeout_s=cfg.timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
            max_retries=cfg.max_retries,
            token_ids=cfg.token_ids,
            max_concurrency=cfg.max_concurrency,
            health_interval_s=cfg.health_interval_s,
            replica_retry_s=cfg.replica_retry_s,
            chat_template=cfg.chat_template,
            tokenizer_from=cfg.tokenizer_from,
        )

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineUnavailableError(f"engine {self.name!r} is not started; call `await engine.start()`")
        return self._info

    @property
    def stats(self) -> EngineStats:
        return self._stats

    @property
    def dialect(self) -> Dialect:
        if self._dialect is None:
            raise EngineUnavailableError(f"engine {self.name!r} is not started; its dialect is detected on start")
        return self._dialect

    async def start(self) -> None:
        async with self._start_lock:
            if self._closed:
                raise EngineUnavailableError(f"engine {self.name!r} was closed; create a new one")
            if self._info is not None:
                return
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s, connect=self._connect_timeout_s),
                # servers drop idle keep-alive connections after ~5 s (llama-server, uvicorn): expire ours first
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=2.0),
                trust_env=False,  # never send loopback traffic through a proxy from the environment
                transport=self._transport,
            )
            try:
                self._info = await self._call(self._describe)
            except BaseException:
                await self._client.aclose()
                self._client = None
                raise
            self._health_task = asyncio.create_task(self._health_loop(), name=f"glimp-health-{self.name}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            state = "closed" if self._closed else "not started"
            raise EngineUnavailableError(f"engine {self.name!r} is {state}; call `await engine.start()` first")
        return self._client

    async def health(self) -> EngineHealth:
        if self._client is None:
            return EngineHealth(ok=False, detail="closed" if self._closed else "not started")
        results = await asyncio.gather(*(self._probe(r) for r in self.pool.replicas))
        live = sum(results)
        detail = ", ".join(
            f"{r.url}: {'up' if ok else 'down (' + (r.last_error or 'unhealthy') + ')'}"
            for r, ok in zip(self.pool.replicas, results, strict=True)
        )
        return EngineHealth(ok=live > 0, detail=detail, in_flight=self.pool.in_flight)

    async def _probe(self, replica: Replica) -> bool:
        """GET /health on one replica; takes it out or lets it back in."""
        client = self._require_client()
        ok, reason = False, ""
        for _ in range(2):  # a second try: the first may have met a keep-alive connection the server just closed
            try:
                resp = await client.get(f"{replica.url}/health", timeout=min(self.timeout_s, 5.0))
            except httpx.HTTPError as exc:
                reason = f"/health failed: {type(exc).__name__}"
                continue
            ok, reason = resp.status_code == 200, f"/health answered HTTP {resp.status_code}"
            break
        if ok:
            self.pool.mark_up(replica)
        else:
            self.pool.mark_down(replica, reason)
        return ok

    async def _health_loop(self) -> None:
        """Let replicas that were taken out back in once they answer /health again."""
        while True:
            await asyncio.sleep(min(self._health_interval_s, self.pool.retry_after_s))
            now = time.monotonic()
            for replica in self.pool.replicas:
                if not replica.available(now) or replica.failures:
                    with contextlib.suppress(Exception):
                        await self._probe(replica)

    # ------------------------------------------------------------------------------ transport
    async def _call(self, attempt: Callable[[Replica], Awaitable[T]], *, key: int | None = None) -> T:
        """Run ``attempt`` on a replica, retried per the one policy, within ``timeout_s`` overall."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                async for try_ in retrying:
                    with try_:
                        if try_.retry_state.attempt_number > 1:
                            self._stats.extra["retries"] += 1
                        return await self._on_replica(attempt, key)
        except TimeoutError:
            raise EngineTimeoutError(
                f"engine {self.name!r}: no answer within timeout_s={self.timeout_s:g} s (retries included) from "
                f"{', '.join(r.url for r in self.pool.replicas)}; the server is stalled or overloaded. Check it, "
                "add replicas, or raise timeout_s",
                engine=self.name,
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _on_replica(self, attempt: Callable[[Replica], Awaitable[T]], key: int | None) -> T:
        replica = self.pool.acquire(key)
        try:
            result = await attempt(replica)
        except EngineFailureError as exc:
            if exc.transient:
                self._stats.extra["replica_failures"] += 1
                refused = isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
                self.pool.release(replica, failed=str(exc)[:200], hard=refused or isinstance(exc, EngineTimeoutError))
            else:
                self.pool.release(replica)
            raise
        except BaseException:
            self.pool.release(replica)
            raise
        self.pool.release(replica, key=key)
        return result

    def _http_error(self, exc: httpx.HTTPError, replica: Replica) -> EngineFailureError:
        if isinstance(exc, httpx.TimeoutException):
            return EngineTimeoutError(
                f"engine {self.name!r}: {replica.url} did not answer in time ({type(exc).__name__})", engine=self.name
            )
        return EngineFailureError(
            f"engine {self.name!r}: {replica.url} is unreachable or dropped the connection ({type(exc).__name__}: "
            f"{exc}); is the server running?",
            transient=True,
            engine=self.name,
        )

    async def _status_error(self, resp: httpx.Response, replica: Replica, path: str) -> EngineFailureError:
        """A typed error for a non-200 answer; 429 and 5xx are transient, other 4xx are not."""
        try:
            body = (await resp.aread()).decode("utf-8", "replace")[:300]
        except httpx.HTTPError:
            body = ""
        status = resp.status_code
        where = f"engine {self.name!r}: {replica.url}{path} answered HTTP {status}: {body}"
        if status == 429 or status >= 500:
            return EngineFailureError(where + " (retried)", transient=True, engine=self.name)
        if status in (401, 403):
            raise EngineUnavailableError(where + ". Set api_key to the server's key")
        if status == 404:
            raise EngineUnavailableError(where + f". The endpoint is missing: is dialect={self._dialect!r} right?")
        if "context" in body.lower() and ("exceed" in body.lower() or "too long" in body.lower()):
            raise ContextTooLongError(where, context_tokens=-1, window=self._info.context_window if self._info else -1)
        return EngineFailureError(where + ". The request cannot succeed as sent", transient=False, engine=self.name)

    async def _post_json(self, replica: Replica, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = self._require_client()
        try:
            resp = await client.post(replica.url + path, json=body)
        except httpx.HTTPError as exc:
            raise self._http_error(exc, replica) from exc
        if resp.status_code != 200:
            raise await self._status_error(resp, replica, path)
        return self._json(resp.content, replica, path)

    async def _get_json(self, replica: Replica, path: str) -> dict[str, Any]:
        client = self._require_client()
        try:
            resp = await client.get(replica.url + path)
        except httpx.HTTPError as exc:
            raise self._http_error(exc, replica) from exc
        if resp.status_code != 200:
            raise await self._status_error(resp, replica, path)
        return self._json(resp.content, replica, path)

    def _json(self, raw: bytes | str, replica: Replica, path: str) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedResponseError(
                f"engine {self.name!r}: {replica.url}{path} answered something that is not JSON ({exc}): "
                f"{bytes(raw[:120]) if isinstance(raw, bytes) else raw[:120]!r}. Is it an OpenAI-compatible server?",
                engine=self.name,
            ) from None
        if not isinstance(data, dict):
            raise MalformedResponseError(
                f"engine {self.name!r}: {replica.url}{path} answered JSON {type(data).__name__}, expected an object",
                engine=self.name,
            )
        return data

    async def _sse(self, replica: Replica, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST with ``stream: true``; yield each ``data:`` event. Leaving the iterator closes the stream."""
        client = self._require_client()
        try:
            async with client.stream("POST", replica.url + path, json=body) as resp:
                if resp.status_code != 200:
                    raise await self._status_error(resp, replica, path)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, "event:" lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    event = self._json(payload, replica, path)
                    if "error" in event and not event.get("choices"):
                        raise EngineFailureError(
                            f"engine {self.name!r}: {replica.url}{path} reported an error mid-stream: {event['error']}",
                            transient=False,
                            engine=self.name,
                        )
                    yield event
        except httpx.HTTPError as exc:
            raise self._http_error(exc, replica) from exc

    # ------------------------------------------------------------------------------ start-up facts
    async def _describe(self, replica: Replica) -> EngineInfo:
        if self._dialect is None:
            models = await self._model_cards(replica)
            owned = {str(m.get("owned_by", "")) for m in models}
            found = [OWNED_BY[o] for o in owned if o in OWNED_BY]
            if not found:
                raise ConfigurationError(
                    f"engine {self.name!r}: cannot tell the server kind from /v1/models owned_by={sorted(owned)}; "
                    "set dialect to one of llama.cpp, vllm, sglang, trtllm"
                )
            self._dialect = found[0]
        if self._dialect == "llama.cpp":
            return await self._describe_llama_cpp(replica)
        return await self._describe_openai(replica)

    async def _model_cards(self, replica: Replica) -> list[dict[str, Any]]:
        """The model cards of ``GET /v1/models`` (``{"data": [...]}``); anything else is a typed error, since
        every fact the engine starts from (dialect, vocabulary, window) is read from them."""
        models = await self._get_json(replica, "/v1/models")
        data = models.get("data", [])
        if not isinstance(data, list):
            raise MalformedResponseError(
                f"engine {self.name!r}: {replica.url}/v1/models answered 'data' as {type(data).__name__}, "
                "not a list of model cards: is this an OpenAI-compatible server? Check base_urls",
                engine=self.name,
            )
        return [m for m in data if isinstance(m, dict)]

    async def _describe_llama_cpp(self, replica: Replica) -> EngineInfo:
        props = await self._get_json(replica, "/props")
        models = await self._model_cards(replica)
        meta: dict[str, Any] = {}
        for m in models:
            if isinstance(m.get("meta"), dict):
                meta = m["meta"]
        vocab = self._vocab_size or meta.get("n_vocab")
        window = self._context_window or (props.get("default_generation_settings") or {}).get("n_ctx")
        if not isinstance(vocab, int) or not isinstance(window, int):
            raise MalformedResponseError(
                f"engine {self.name!r}: llama-server gave no n_vocab/n_ctx in /v1/models and /props; "
                "set vocab_size and context_window in the config",
                engine=self.name,
            )
        bos, eos = str(props.get("bos_token") or ""), str(props.get("eos_token") or "")
        plain = await self._llama_tokenize(replica, "a", add_special=False)
        special = await self._llama_tokenize(replica, "a", add_special=True)
        eos_ids = frozenset(await self._llama_tokenize(replica, eos, add_special=False)) if eos else frozenset()
        template = self._chat_template_override or props.get("chat_template") or None
        return await self._finish_info(replica, vocab, window, template, bos, eos, len(special) > len(plain), eos_ids)

    async def _describe_openai(self, replica: Replica) -> EngineInfo:
        models = await self._model_cards(replica)
        card = next((m for m in models if m.get("id") == self.model), None)
        if card is None:
            ids = [m.get("id") for m in models]
            raise ConfigurationError(f"engine {self.name!r}: the server serves {ids}, not model={self.model!r}")
        window = self._context_window or card.get("max_model_len")
        if self._vocab_size is None or not isinstance(window, int):
            raise ConfigurationError(
                f"engine {self.name!r}: a {self._dialect} server does not report the vocabulary size"
                + ("" if isinstance(window, int) else " or the context window")
                + "; set vocab_size (the real vocabulary, for the entropy bound) and context_window in the config"
            )
        template, bos, eos = self._chat_template_override, "", ""
        eos_ids: frozenset[int] = frozenset()
        if self._tokenizer_from:
            template, bos, eos = _hf_template(Path(self._tokenizer_from), template)
            # the end token's id, so that callers (the router's verification) can score ending the answer
            ids = await self._tokenize_on(replica, eos) if eos else []
            eos_ids = frozenset(ids) if len(ids) == 1 else frozenset()
        return await self._finish_info(replica, self._vocab_size, window, template, bos, eos, False, eos_ids)

    async def _finish_info(
        self,
        replica: Replica,
        vocab: int,
        window: int,
        template: str | None,
        bos: str,
        eos: str,
        add_bos: bool,
        eos_ids: frozenset[int],
    ) -> EngineInfo:
        self._template = ChatTemplate(template, bos_token=bos, eos_token=eos) if template else None
        probe = await self._tokenize_on(replica, FINGERPRINT_PROBE)
        fingerprint = hashlib.sha256(json.dumps([vocab, probe, bos, eos]).encode()).hexdigest()[:16]
        return EngineInfo(
            name=self.name,
            model=self.model,
            backend=f"openai-compat ({self._dialect})",
            vocab_size=vocab,
            context_window=window,
            eos_token_ids=eos_ids,
            tokenizer_fingerprint=fingerprint,
            entropy_kind="top-k estimate",
            batches_in_flight=True,
            chat_template=template,
            bos_token=bos,
            eos_token=eos,
            add_bos=add_bos,
            can_score=self._dialect == "vllm",
        )

    # ------------------------------------------------------------------------------ text
    async def _llama_tokenize(self, replica: Replica, text: str, *, add_special: bool) -> list[int]:
        data = await self._post_json(
            replica, "/tokenize", {"content": text, "add_special": add_special, "parse_special": True}
        )
        return _int_list(data.get("tokens"), self.name, "/tokenize tokens")

    async def _tokenize_on(self, replica: Replica, text: str) -> list[int]:
        if self._dialect == "llama.cpp":
            return await self._llama_tokenize(replica, text, add_special=False)
        if self._dialect == "trtllm":
            data = await self._post_json(replica, "/_internal/tokenize", {"model": self.model, "prompt": text})
        else:
            data = await self._post_json(
                replica, "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
            )
        return _int_list(data.get("tokens"), self.name, "tokenize tokens")

    async def tokenize(self, text: str) -> list[int]:
        self._require_client()
        return await self._call(lambda r: self._tokenize_on(r, text))

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        self._require_client()
        ids = [int(t) for t in token_ids]
        if self.dialect == "trtllm":
            return self._local_detokenize(ids)

        async def attempt(replica: Replica) -> str:
            if self._dialect == "llama.cpp":
                data = await self._post_json(replica, "/detokenize", {"tokens": ids})
                text = data.get("content")
            elif self._dialect == "sglang":  # SGLang skips special tokens unless told, and answers `text`
                body = {"model": self.model, "tokens": ids, "skip_special_tokens": False}
                text = (await self._post_json(replica, "/detokenize", body)).get("text")
            else:
                data = await self._post_json(replica, "/detokenize", {"model": self.model, "tokens": ids})
                text = data.get("prompt")
            if not isinstance(text, str):
                raise MalformedResponseError(f"engine {self.name!r}: /detokenize gave no text", engine=self.name)
            return text

        return await self._call(attempt)

    async def _drop_end_token(
        self, tokens: list[int], text: str, reason: int | None, *, local: bool
    ) -> tuple[list[int], str]:
        """Remove the end-of-sequence token from the last chunk of a step (the contract leaves it out).

        vLLM (measured: 0.32 CPU) returns the EOS id in ``token_ids`` and, with ``skip_special_tokens: false``,
        its text (``<|im_end|>``) in ``text``; ``stop_reason`` is then null. SGLang reports the token in
        ``matched_stop``. trtllm-serve says null as well; its EOS is recognised by the tokenizer's eos_token.
        """
        last = tokens[-1]
        if isinstance(reason, int):
            is_end = last == reason
        elif self.dialect == "vllm" or last in self.info.eos_token_ids:
            is_end = True  # vLLM: finish "stop" with no stop_reason is end of sequence, and the id is included
        else:
            is_end = bool(self.info.eos_token) and await self._token_text(last) == self.info.eos_token
        if not is_end:
            return tokens, text
        if not local:
            piece = await self._token_text(last)
            if piece and text.endswith(piece):
                text = text[: -len(piece)]
        return tokens[:-1], text

    async def _token_text(self, token: int) -> str:
        """The text of one token (cached: only end tokens are looked up, once each)."""
        if token not in self._token_texts:
            self._token_texts[token] = (
                self._local_detokenize([token]) if self.dialect == "trtllm" else await self.detokenize([token])
            )
        return self._token_texts[token]

    def _text_delta(self, ids: list[int], pieces: list[str]) -> str:
        """The new text of a stream the engine detokenises itself: all ids decoded, minus what was emitted.
        A trailing U+FFFD is a character whose bytes are still incomplete; it waits for the next token."""
        decoded = self._local_detokenize(ids)
        done = sum(len(p) for p in pieces)
        if decoded.endswith("\ufffd"):
            decoded = decoded.rstrip("\ufffd")
        return decoded[done:] if len(decoded) > done else ""

    def _local_detokenize(self, ids: list[int]) -> str:
        if self._local_tokenizer is None:
            if not self._tokenizer_from:
                raise EngineUnavailableError(
                    f"engine {self.name!r}: trtllm-serve has no /detokenize; set tokenizer_from to the model's "
                    "Hugging Face directory (its tokenizer.json is used)"
                )
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EngineUnavailableError("detokenising for trtllm-serve needs: pip install tokenizers") from exc
            self._local_tokenizer = Tokenizer.from_file(str(Path(self._tokenizer_from) / "tokenizer.json"))
        return str(self._local_tokenizer.decode(ids, skip_special_tokens=False))

    async def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        self._require_client()
        if self._template is not None:
            return self._template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        if self.dialect != "vllm":  # only vLLM's /tokenize renders messages (SGLang's takes a prompt only)
            raise ConfigurationError(
                f"engine {self.name!r}: the server exposes no chat template; set chat_template or tokenizer_from"
            )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "add_generation_prompt": add_generation_prompt,
            "add_special_tokens": False,
        }
        if tools:
            body["tools"] = list(tools)
        data = await self._call(lambda r: self._post_json(r, "/tokenize", body))
        return await self.detokenize(_int_list(data.get("tokens"), self.name, "/tokenize tokens"))

    # ------------------------------------------------------------------------------ model calls
    def _check_context(self, context: Sequence[int]) -> None:
        if len(context) == 0:
            raise InvalidRequestError("the context is empty: pass at least one token (e.g. the chat template)")
        window = self.info.context_window
        if len(context) >= window:
            raise ContextTooLongError(
                f"context of {len(context)} tokens does not fit the {window}-token window of {self.name!r}; "
                "shorten the prompt or lower max_tokens",
                context_tokens=len(context),
                window=window,
            )

    async def _prompt(self, context: Sequence[int]) -> list[int] | str:
        return [int(t) for t in context] if self._send_ids else await self.detokenize(context)

    def _sampling_fields(self, sampling: SamplingParams) -> dict[str, Any]:
        fields: dict[str, Any] = {"temperature": max(0.0, sampling.temperature), "top_p": sampling.top_p}
        if self.dialect == "llama.cpp":
            # llama-server's defaults (top_k 40, min_p 0.05) would change the distribution we sample from
            fields.update(top_k=sampling.top_k, min_p=0.0, seed=-1 if sampling.seed is None else sampling.seed)
        else:
            if sampling.top_k:
                fields["top_k"] = sampling.top_k
            if sampling.seed is not None:
                fields["seed"] = sampling.seed
        return fields

    async def glimpse(self, context: Sequence[int], sampling: SamplingParams, *, top_logprobs: int = 0) -> Glimpse:
        self._check_context(context)
        k = max(self.k, top_logprobs)
        prompt = await self._prompt(context)
        t0 = time.perf_counter()
        if self.dialect == "llama.cpp":
            body: dict[str, Any] = {
                "prompt": prompt,
                "n_predict": 1,
                "n_probs": k,
                "cache_prompt": True,
                "return_tokens": True,
                **self._sampling_fields(sampling),
            }
            parse = self._parse_llama_glimpse
            path = "/completion"
        else:
            body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "logprobs": k}
            body.update(self._sampling_fields(sampling))
            body.update(self._openai_extras())
            if self.dialect == "vllm":
                # the top logprobs keyed by "token_id:N", not by decoded text, where two tokens that decode
                # alike would collide and lose probability mass from the estimate
                body["return_tokens_as_token_ids"] = True
            parse = self._parse_openai_glimpse
            path = "/v1/completions"

        async def attempt(replica: Replica) -> Glimpse:
            data = await self._post_json(replica, path, body)
            return parse(data, replica)

        g = await self._call(attempt, key=prefix_key(context))
        self._stats.glimpses += 1
        self._stats.tokens_reused += g.cached_tokens
        self._stats.tokens_evaluated += max(0, len(context) - g.cached_tokens)
        return dataclasses.replace(g, seconds=time.perf_counter() - t0)

    async def score(self, context: Sequence[int], continuation: Sequence[int]) -> TokenScores:
        """Log-probability of each ``continuation`` token, read from vLLM's ``prompt_logprobs``.

        Why this shape: ``/v1/completions`` with the token-id prompt ``context + continuation``, ``max_tokens=1``
        and ``prompt_logprobs=0`` makes vLLM return, for every prompt position, a dict holding the actual
        token's logprob (full distribution, temperature 1). The one generated token is the price of the
        request and is thrown away. The prefill leaves ``context + continuation`` in the server's prefix
        cache, which the next step from there would compute anyway. llama-server, SGLang's OpenAI routes and
        trtllm-serve return no prompt logprobs (SGLang only on its native ``/generate``, trtllm-serve not at
        all), so those dialects cannot score.
        """
        if not self.info.can_score:
            raise EngineUnavailableError(
                f"engine {self.name!r}: a {self.dialect} server returns no prompt logprobs on its OpenAI routes, "
                "so it cannot score another model's tokens; put the large model on vLLM (or an in-process engine) "
                "to verify steps"
            )
        if not continuation:
            return TokenScores(logprobs=())
        full = [int(t) for t in context] + [int(t) for t in continuation]
        self._check_context(full)
        body = {
            "model": self.model,
            "prompt": full,
            "max_tokens": 1,
            "prompt_logprobs": 0,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        start = len(context)

        async def attempt(replica: Replica) -> TokenScores:
            data = await self._post_json(replica, "/v1/completions", body)
            try:
                choice = data["choices"][0]
                rows = choice["prompt_logprobs"]
                values = []
                for i, token in enumerate(full[start:], start):
                    entry = rows[i][str(token)]
                    values.append(float(entry["logprob"] if isinstance(entry, dict) else entry))
                usage = data.get("usage") or {}
                cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise MalformedResponseError(
                    f"engine {self.name!r}: {replica.url}/v1/completions answered without prompt_logprobs for "
                    f"every position ({type(exc).__name__}: {exc}); is it vLLM?",
                    engine=self.name,
                ) from None
            return TokenScores(logprobs=tuple(values), cached_tokens=cached)

        t0 = time.perf_counter()
        async with self._semaphore:
            scores = await self._call(attempt, key=prefix_key(context))
        seconds = time.perf_counter() - t0
        self._stats.tokens_reused += scores.cached_tokens
        self._stats.tokens_evaluated += max(0, len(full) - scores.cached_tokens)
        return dataclasses.replace(scores, seconds=seconds)

    def _estimate(self, logprobs: list[float]) -> tuple[float, float, float]:
        if not logprobs:
            raise MalformedResponseError(
                f"engine {self.name!r}: the server returned no top logprobs; it must allow k={self.k} "
                "(vLLM: --max-logprobs; trtllm-serve: PyTorch backend or gather_generation_logits)",
                engine=self.name,
            )
        est = entropy_from_topk(logprobs, self.info.vocab_size)
        return est.estimate, est.captured_mass, est.error_bound

    def _parse_llama_glimpse(self, data: dict[str, Any], replica: Replica) -> Glimpse:
        try:
            probs = data["completion_probabilities"]
            first = probs[0]
            top = [(int(t["id"]), float(t["logprob"])) for t in first["top_logprobs"]]
            token_id, logprob, text = int(first["id"]), float(first["logprob"]), str(data.get("content", ""))
            cached = int((data.get("timings") or {}).get("cache_n", 0))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedResponseError(
                f"engine {self.name!r}: {replica.url}/completion answered without completion_probabilities "
                f"({type(exc).__name__}: {exc}); is it llama-server?",
                engine=self.name,
            ) from None
        entropy, mass, bound = self._estimate([lp for _, lp in top])
        is_eos = data.get("stop_type") == "eos" or token_id in self.info.eos_token_ids
        if not text and not is_eos:
            text = str(first.get("token", ""))
        return Glimpse(
            token_id=token_id,
            text="" if is_eos else text,
            logprob=logprob,
            entropy=entropy,
            entropy_kind="top-k estimate",
            is_eos=is_eos,
            top_k=len(top),
            captured_mass=mass,
            entropy_error_bound=bound,
            top_logprobs=tuple(top),
            cached_tokens=cached,
        )

    def _openai_extras(self) -> dict[str, Any]:
        """Fields beyond OpenAI's that make each server return token ids and keep stop strings.

        * vLLM: ``return_token_ids`` (ids of the step), ``include_stop_str_in_output``. (A glimpse adds
          ``return_tokens_as_token_ids``: see :meth:`glimpse`.)
        * SGLang: ``no_stop_trim`` keeps the stop string, ``return_token_ids`` returns the ids (else the step
          would be re-tokenised and a glimpse would have no token id at all).
        * trtllm-serve forbids undeclared fields; it returns token ids only with ``detokenize: false`` (then
          its text is empty, and the engine detokenises with ``tokenizer_from``, which trtllm needs anyway).
        """
        if self.dialect == "vllm":
            return {
                "return_token_ids": True,
                "include_stop_str_in_output": True,
                "skip_special_tokens": False,
            }
        if self.dialect == "sglang":
            return {"no_stop_trim": True, "skip_special_tokens": False, "return_token_ids": True}
        return {"include_stop_str_in_output": True, "skip_special_tokens": False, "detokenize": False}

    def _parse_openai_glimpse(self, data: dict[str, Any], replica: Replica) -> Glimpse:
        try:
            choice = data["choices"][0]
            lp = choice["logprobs"]
            token_id, logprob, top = _openai_first_token(choice, lp)
            text = str(choice.get("text") or "")
            if self.dialect == "trtllm":  # detokenize: false -> no text from the server
                text = self._local_detokenize([token_id])
            usage = data.get("usage") or {}
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MalformedResponseError(
                f"engine {self.name!r}: {replica.url}/v1/completions answered without logprobs "
                f"({type(exc).__name__}: {exc}); the server must return top-{self.k} logprobs and token ids",
                engine=self.name,
            ) from None
        entropy, mass, bound = self._estimate([v for _, v in top])
        is_eos = choice.get("finish_reason") == "stop" and choice.get("stop_reason") is None
        return Glimpse(
            token_id=token_id,
            text="" if is_eos else text,
            logprob=logprob,
            entropy=entropy,
            entropy_kind="top-k estimate",
            is_eos=is_eos,
            top_k=len(top),
            captured_mass=mass,
            entropy_error_bound=bound,
            top_logprobs=tuple(top),
            cached_tokens=cached,
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
        if max_tokens < 1:
            raise InvalidRequestError(f"max_tokens={max_tokens}: ask for at least one token")
        self._check_context(context)
        max_tokens = min(max_tokens, self.info.context_window - len(context))
        prompt = await self._prompt(context)
        stops = [s for s in stop if s]
        delivered = False

        def emit(delta: Delta) -> None:
            nonlocal delivered
            if on_token is not None and (delta.text or delta.token_ids):
                delivered = True
                on_token(delta)

        async def attempt(replica: Replica) -> Completion:
            try:
                if self.dialect == "llama.cpp":
                    return await self._generate_llama(replica, prompt, max_tokens, stops, sampling, emit)
                return await self._generate_openai(replica, prompt, max_tokens, stops, sampling, emit)
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
            try:
                completion = await self._call(attempt, key=prefix_key(context))
            except asyncio.CancelledError:
                self._stats.cancelled_calls += 1
                raise
            except Exception:
                self._stats.failed_calls += 1
                raise
        self._stats.generate_calls += 1
        self._stats.tokens_generated += len(completion.token_ids)
        self._stats.tokens_reused += completion.cached_tokens
        self._stats.tokens_evaluated += max(0, len(context) - completion.cached_tokens) + len(completion.token_ids)
        return dataclasses.replace(completion, seconds=time.perf_counter() - t0)

    async def _generate_llama(
        self,
        replica: Replica,
        prompt: list[int] | str,
        max_tokens: int,
        stops: list[str],
        sampling: SamplingParams,
        emit: Callable[[Delta], None],
    ) -> Completion:
        body = {
            "prompt": prompt,
            "n_predict": max_tokens,
            "stop": stops,
            "stream": True,
            "cache_prompt": True,
            "return_tokens": True,
            **self._sampling_fields(sampling),
        }
        ids: list[int] = []
        pieces: list[str] = []
        final: dict[str, Any] | None = None
        async with contextlib.aclosing(self._sse(replica, "/completion", body)) as events:
            async for event in events:
                tokens = _int_list(event.get("tokens") or [], self.name, "stream tokens")
                content = event.get("content", "")
                if not isinstance(content, str):
                    raise MalformedResponseError(f"engine {self.name!r}: stream content is not text", engine=self.name)
                ids.extend(tokens)
                if content:
                    pieces.append(content)
                emit(Delta(tuple(tokens), content))
                if event.get("stop"):
                    final = event
        if final is None:
            raise EngineFailureError(
                f"engine {self.name!r}: {replica.url} closed the stream before the end of the step",
                transient=True,
                engine=self.name,
            )
        stop_type = final.get("stop_type")
        eos_ids = self.info.eos_token_ids
        ids = [t for t in ids if t not in eos_ids] if stop_type == "eos" else ids
        text = "".join(pieces)
        matched: str | None = None
        finish: FinishReason = "length"
        if stop_type == "eos":
            finish = "eos"
        elif stop_type == "word":
            finish, matched = "stop", str(final.get("stopping_word") or "") or None
            # llama-server withholds the stop string (and what followed it in the same token) from `content`;
            # the token ids are complete, so the exact text is theirs
            # (its own retried call: a pooled connection the server closed meanwhile must not fail the step)
            full = await self.detokenize(ids)
            emit(Delta((), full[len(text) :] if full.startswith(text) else ""))
            text = full
        timings = final.get("timings") or {}
        return Completion(
            token_ids=tuple(ids),
            text=text,
            finish_reason=finish,
            stop_string=matched,
            prompt_tokens=len(prompt) if isinstance(prompt, list) else int(final.get("tokens_evaluated", 0)),
            cached_tokens=int(timings.get("cache_n", 0)),
        )

    async def _generate_openai(
        self,
        replica: Replica,
        prompt: list[int] | str,
        max_tokens: int,
        stops: list[str],
        sampling: SamplingParams,
        emit: Callable[[Delta], None],
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self._sampling_fields(sampling),
            **self._openai_extras(),
        }
        if stops:
            body["stop"] = stops
        ids: list[int] = []
        pieces: list[str] = []
        have_ids = True
        local_text = self.dialect == "trtllm"
        finish_reason: str | None = None
        stop_reason: Any = None
        cached = 0
        async with contextlib.aclosing(self._sse(replica, "/v1/completions", body)) as events:
            async for event in events:
                usage = event.get("usage") or {}
                cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or cached)
                for choice in event.get("choices") or []:
                    text = choice.get("text") or ""
                    tokens = choice.get("token_ids")
                    if tokens is None:
                        have_ids = False
                        tokens = []
                    tokens = _int_list(tokens, self.name, "stream token_ids")
                    reason = choice.get("stop_reason", choice.get("matched_stop"))
                    if choice.get("finish_reason") == "stop" and not isinstance(reason, str) and tokens:
                        tokens, text = await self._drop_end_token(tokens, text, reason, local=local_text)
                    ids.extend(tokens)
                    if local_text:  # trtllm-serve with detokenize: false: the text is ours to decode
                        text = self._text_delta(ids, pieces)
                    pieces.append(text)
                    emit(Delta(tuple(tokens), text))
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                        # vLLM and trtllm-serve say `stop_reason`, SGLang `matched_stop` (a string or a token id)
                        stop_reason = choice.get("stop_reason", choice.get("matched_stop"))
        if finish_reason is None:
            raise EngineFailureError(
                f"engine {self.name!r}: {replica.url} closed the stream before the end of the step",
                transient=True,
                engine=self.name,
            )
        if local_text:  # what a held-back partial character resolved to
            tail = self._local_detokenize(ids)[len("".join(pieces)) :]
            if tail:
                emit(Delta((), tail))
                pieces.append(tail)
        text = "".join(pieces)
        matched = stop_reason if isinstance(stop_reason, str) and stop_reason in stops else None
        if matched is None and finish_reason == "stop":
            matched = next((s for s in stops if s in text), None)
        if matched is not None and matched not in text:  # a server that trimmed the stop string anyway
            emit(Delta((), matched))
            text += matched
        if matched is not None and have_ids and not local_text and ids:
            # vLLM (measured) cuts the text right after the stop string, also inside a token, while token_ids
            # hold that whole token: the context continues from the ids, so the text must be theirs
            full = await self.detokenize(ids)
            if full != text and full.startswith(text):
                emit(Delta((), full[len(text) :]))
                text = full
        if not have_ids:
            # the server returned no token ids: re-tokenise the step (counted; exact prefixes not guaranteed)
            self._stats.extra["retokenized_steps"] += 1
            ids = await self._tokenize_on(replica, text)
        finish: FinishReason = "length" if finish_reason == "length" else ("stop" if matched else "eos")
        return Completion(
            token_ids=tuple(ids),
            text=text,
            finish_reason=finish,
            stop_string=matched,
            prompt_tokens=len(prompt) if isinstance(prompt, list) else 0,
            cached_tokens=cached,
        )


# ------------------------------------------------------------------------------------ helpers
def _int_list(value: Any, engine: str, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MalformedResponseError(f"engine {engine!r}: {what} is not a list of token ids: {value!r:.80}")
    return value


def _token_id(token: Any) -> int:
    """vLLM's ``return_tokens_as_token_ids`` spells tokens ``"token_id:123"``; otherwise ids are unknown (-1)."""
    if isinstance(token, str) and token.startswith("token_id:"):
        return int(token[len("token_id:") :])
    return -1


def _openai_first_token(choice: dict[str, Any], lp: dict[str, Any]) -> tuple[int, float, list[tuple[int, float]]]:
    """(token id, logprob, top list) of the first generated token, from either logprobs shape:
    legacy completions (``tokens``/``token_logprobs``/``top_logprobs`` dicts: vLLM, SGLang, trtllm-serve)
    or chat-style ``content`` entries (llama-server's /v1/completions)."""
    ids = choice.get("token_ids")
    if lp.get("content"):
        first = lp["content"][0]
        top = [(int(t.get("id", -1)), float(t["logprob"])) for t in first["top_logprobs"]]
        token_id = int(first["id"]) if "id" in first else int(ids[0])
        return token_id, float(first["logprob"]), top
    top_map = lp["top_logprobs"][0] or {}
    top = [(_token_id(tok), float(v)) for tok, v in top_map.items()]
    token_id = int(ids[0]) if ids else _token_id(lp["tokens"][0])
    if token_id < 0:
        raise ValueError("the server returned no token id for the glimpsed token")
    return token_id, float(lp["token_logprobs"][0]), top


def _hf_template(directory: Path, override: str | None) -> tuple[str | None, str, str]:
    """The chat template and BOS/EOS strings of a Hugging Face model directory (no transformers needed)."""
    cfg_path = directory / "tokenizer_config.json"
    if not cfg_path.is_file():
        raise ConfigurationError(f"tokenizer_from={directory}: no tokenizer_config.json; give a HF model directory")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    template = override or cfg.get("chat_template")
    jinja = directory / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")

    def token(value: Any) -> str:
        return str(value.get("content", "")) if isinstance(value, dict) else str(value or "")

    return template, token(cfg.get("bos_token")), token(cfg.get("eos_token"))
