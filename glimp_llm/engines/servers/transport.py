"""HTTP to the replicas of one served model: one pooled client, one retry policy, typed errors.

Why one policy: every request the engine makes (start-up facts, tokenize, a glimpse, a streamed step, a
health probe) fails in the same few ways, so the rule is stated once (tenacity: bounded attempts, jittered
exponential wait) and the predicate decides what another attempt can fix: connection errors, timeouts, 429
and 5xx, never another 4xx. The whole call, retries included, is bounded by ``timeout_s``. Replicas
(:mod:`glimp_llm.engines.replicas`) are chosen per attempt, so a retry may go to another one.

Streams are parsed by ``httpx-sse`` (the maintained SSE decoder for httpx: multi-line ``data:``, comments,
CRLF); leaving the iterator closes the HTTP stream, which frees the server's slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
from httpx_sse import SSEError, aconnect_sse
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from glimp_llm.engines.base import EngineHealth, EngineStats
from glimp_llm.engines.replicas import Replica, ReplicaPool
from glimp_llm.errors import (
    ContextTooLongError,
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    MalformedResponseError,
    NoReplicaError,
)

T = TypeVar("T")


def _transient(exc: BaseException) -> bool:
    """The retry predicate of model calls: what another attempt (maybe on another replica) can fix."""
    if isinstance(exc, EngineFailureError):
        return exc.transient
    return isinstance(exc, NoReplicaError)  # every replica out: the soonest comes back


class ServerTransport:
    """The replicas of one model and the client that talks to them, for :class:`OpenAICompatEngine`."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        engine: str,
        stats: EngineStats,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        replica_retry_s: float = 5.0,
        health_interval_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.pool = ReplicaPool(base_urls, retry_after_s=replica_retry_s)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._stats = stats
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._health_interval_s = health_interval_s
        self._transport = transport  # None: real sockets; tests pass recorded servers (httpx.MockTransport)
        self._client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task[None] | None = None
        #: Set once the server is known: they make a 404 and a context error say what to fix.
        self.dialect = "auto"
        self.context_window = -1

    # ------------------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=self._connect_timeout_s),
            # servers drop idle keep-alive connections after ~5 s (llama-server, uvicorn): expire ours first
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=2.0),
            trust_env=False,  # never send loopback traffic through a proxy from the environment
            transport=self._transport,
        )

    def watch(self) -> None:
        """Start the health loop that lets replicas taken out after failures back in."""
        self._health_task = asyncio.create_task(self._health_loop(), name=f"glimp-health-{self.engine}")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EngineUnavailableError(f"engine {self.engine!r} is not connected; call `await engine.start()` first")
        return self._client

    # ------------------------------------------------------------------------------ health
    async def health(self) -> EngineHealth:
        results = await asyncio.gather(*(self.probe(r) for r in self.pool.replicas))
        detail = ", ".join(
            f"{r.url}: {'up' if ok else 'down (' + (r.last_error or 'unhealthy') + ')'}"
            for r, ok in zip(self.pool.replicas, results, strict=True)
        )
        return EngineHealth(ok=any(results), detail=detail, in_flight=self.pool.in_flight)

    async def probe(self, replica: Replica) -> bool:
        """GET /health on one replica; takes it out or lets it back in. A second try (the policy's, with one
        retry on connection errors): the first may have met a keep-alive connection the server just closed."""
        policy = self._policy(retries=1, retry_on=lambda exc: isinstance(exc, httpx.TransportError))
        try:
            resp: httpx.Response = await policy(
                self._require_client().get, f"{replica.url}/health", timeout=min(self.timeout_s, 5.0)
            )
            ok, reason = resp.status_code == 200, f"/health answered HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            ok, reason = False, f"/health failed: {type(exc).__name__}"
        if ok:
            self.pool.mark_up(replica)
        else:
            self.pool.mark_down(replica, reason)
        return ok

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self._health_interval_s, self.pool.retry_after_s))
            now = time.monotonic()
            for replica in self.pool.replicas:
                if not replica.available(now) or replica.failures:
                    with contextlib.suppress(Exception):
                        await self.probe(replica)

    # ------------------------------------------------------------------------------ calls
    def _policy(self, *, retries: int, retry_on: Callable[[BaseException], bool]) -> AsyncRetrying:
        """The one retry policy: ``retries`` more attempts on what ``retry_on`` accepts, jittered backoff."""
        return AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            retry=retry_if_exception(retry_on),
            reraise=True,
        )

    async def call(self, attempt: Callable[[Replica], Awaitable[T]], *, key: int | None = None) -> T:
        """Run ``attempt`` on a replica, retried per the one policy, within ``timeout_s`` overall."""
        try:
            async with asyncio.timeout(self.timeout_s):
                async for try_ in self._policy(retries=self.max_retries, retry_on=_transient):
                    with try_:
                        if try_.retry_state.attempt_number > 1:
                            self._stats.extra["retries"] += 1
                        return await self._on_replica(attempt, key)
        except TimeoutError:
            raise EngineTimeoutError(
                f"engine {self.engine!r}: no answer within timeout_s={self.timeout_s:g} s (retries included) from "
                f"{', '.join(r.url for r in self.pool.replicas)}; the server is stalled or overloaded. Check it, "
                "add replicas, or raise timeout_s",
                engine=self.engine,
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _on_replica(self, attempt: Callable[[Replica], Awaitable[T]], key: int | None) -> T:
        replica = self.pool.acquire(key)
        try:
            result = await attempt(replica)
        except BaseException as exc:
            if isinstance(exc, EngineFailureError) and exc.transient:
                self._stats.extra["replica_failures"] += 1
                refused = isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
                self.pool.release(replica, failed=str(exc)[:200], hard=refused or isinstance(exc, EngineTimeoutError))
            else:
                self.pool.release(replica)
            raise
        self.pool.release(replica, key=key)
        return result

    # ------------------------------------------------------------------------------ requests
    async def request_json(self, replica: Replica, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST ``body`` (GET without one); the answer's JSON object."""
        client = self._require_client()
        try:
            resp = await client.request("GET" if body is None else "POST", replica.url + path, json=body)
        except httpx.HTTPError as exc:
            raise self._http_error(exc, replica) from exc
        if resp.status_code != 200:
            raise await self._status_error(resp, replica, path)
        return self._json(resp.content, replica, path)

    async def sse(self, replica: Replica, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST with ``stream: true``; yield each event's JSON. Leaving the iterator closes the stream."""
        client = self._require_client()
        try:
            async with aconnect_sse(client, "POST", replica.url + path, json=body) as source:
                if source.response.status_code != 200:
                    raise await self._status_error(source.response, replica, path)
                async for message in source.aiter_sse():
                    if not message.data:
                        continue
                    if message.data.strip() == "[DONE]":
                        return
                    event = self._json(message.data, replica, path)
                    if "error" in event and not event.get("choices"):
                        raise EngineFailureError(
                            f"engine {self.engine!r}: {replica.url}{path} reported an error mid-stream: "
                            f"{event['error']}",
                            transient=False,
                            engine=self.engine,
                        )
                    yield event
        except SSEError as exc:  # before httpx.HTTPError, its base: the server answered, but not a stream
            raise MalformedResponseError(
                f"engine {self.engine!r}: {replica.url}{path} did not answer with an event stream ({exc})",
                engine=self.engine,
            ) from None
        except httpx.HTTPError as exc:
            raise self._http_error(exc, replica) from exc

    # ------------------------------------------------------------------------------ errors
    def _http_error(self, exc: httpx.HTTPError, replica: Replica) -> EngineFailureError:
        if isinstance(exc, httpx.TimeoutException):
            return EngineTimeoutError(
                f"engine {self.engine!r}: {replica.url} did not answer in time ({type(exc).__name__})",
                engine=self.engine,
            )
        return EngineFailureError(
            f"engine {self.engine!r}: {replica.url} is unreachable or dropped the connection ({type(exc).__name__}: "
            f"{exc}); is the server running?",
            transient=True,
            engine=self.engine,
        )

    async def _status_error(self, resp: httpx.Response, replica: Replica, path: str) -> EngineFailureError:
        """A typed error for a non-200 answer; 429 and 5xx are transient, other 4xx are not."""
        try:
            body = (await resp.aread()).decode("utf-8", "replace")[:300]
        except httpx.HTTPError:
            body = ""
        status = resp.status_code
        where = f"engine {self.engine!r}: {replica.url}{path} answered HTTP {status}: {body}"
        if status == 429 or status >= 500:
            return EngineFailureError(where + " (retried)", transient=True, engine=self.engine)
        if status in (401, 403):
            raise EngineUnavailableError(where + ". Set api_key to the server's key")
        if status == 404:
            raise EngineUnavailableError(where + f". The endpoint is missing: is dialect={self.dialect!r} right?")
        if "context" in body.lower() and ("exceed" in body.lower() or "too long" in body.lower()):
            raise ContextTooLongError(where, context_tokens=-1, window=self.context_window)
        return EngineFailureError(where + ". The request cannot succeed as sent", transient=False, engine=self.engine)

    def _json(self, raw: bytes | str, replica: Replica, path: str) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedResponseError(
                f"engine {self.engine!r}: {replica.url}{path} answered something that is not JSON ({exc}): "
                f"{raw[:120]!r}. Is it an OpenAI-compatible server?",
                engine=self.engine,
            ) from None
        if not isinstance(data, dict):
            raise MalformedResponseError(
                f"engine {self.engine!r}: {replica.url}{path} answered JSON {type(data).__name__}, expected an object",
                engine=self.engine,
            )
        return data
