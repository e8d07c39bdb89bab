"""``Glimp``: the routed generator as one object, usable from sync code, threads and any event loop.

The engines live on an event loop of their own, behind an anyio blocking portal owned by the client (see
:mod:`glimp_llm._portal`), so the same object serves a script, LangChain's executor threads, a LlamaIndex
query engine on the user's loop, and the HTTP server. Async methods are real async: they await the engine
loop's work without blocking the caller's loop, and cancelling the caller cancels the routed request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from glimp_llm._portal import EnginePortal
from glimp_llm.config import GlimpConfig
from glimp_llm.engines.base import Engine, EngineInfo
from glimp_llm.errors import EngineUnavailableError, RequestCancelledError
from glimp_llm.manager import BackendManager
from glimp_llm.router import Router, RouteRequest, as_request, validate_request
from glimp_llm.trace import RoutedResult, RouterEvent

_DONE = object()


class Glimp:
    """Routed small/large generation. ``Glimp()`` is the embedded CPU default (Qwen2.5-Coder 0.5B -> 1.5B).

    Start is lazy (first call) and idempotent; ``close()`` or a ``with`` block releases the engines.
    """

    def __init__(
        self,
        config: GlimpConfig | str | None = None,
        *,
        small: Engine | None = None,
        large: Engine | None = None,
        router: Router | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(config, str):
            config = GlimpConfig.load(config, **overrides)
        elif config is None:
            config = GlimpConfig.load(**overrides) if overrides else GlimpConfig()
        elif overrides:
            config = GlimpConfig.validated({**config.model_dump(), **overrides})
        self.manager = BackendManager(config, small=small, large=large, router=router)
        # what the engines were built from; None when they were adopted (see BackendManager)
        self.config: GlimpConfig | None = self.manager.config
        self._portal: EnginePortal | None = None
        self._lock = threading.Lock()
        self._closed = False

    # --------------------------------------------------------------------------- lifecycle
    @property
    def router(self) -> Router:
        return self.manager.router

    def start(self) -> Glimp:
        with self._lock:
            if self._closed:
                raise EngineUnavailableError("this Glimp client was closed; create a new one")
            if self._portal is None:
                self._portal = EnginePortal(
                    name="glimp-engines", startup=self.manager.start, shutdown=self.manager.close
                )
        return self

    def _started(self) -> EnginePortal:
        return self._portal if self._portal is not None else self.start()._portal  # type: ignore[return-value]

    async def _astarted(self) -> EnginePortal:
        return self._portal if self._portal is not None else await asyncio.to_thread(self._started)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            portal, self._portal = self._portal, None
        if portal is not None:
            portal.close()  # closes the engines on their loop first

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Glimp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Glimp:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def small_info(self) -> EngineInfo:
        self._started()
        return self.manager.small.info

    @property
    def large_info(self) -> EngineInfo:
        self._started()
        return self.manager.large.info

    def health(self) -> dict[str, Any]:
        return self._started().call(self.manager.health)

    # ----------------------------------------------------------------------------- calls
    def generate(self, prompt: str | RouteRequest | None = None, **options: Any) -> RoutedResult:
        """Route one request and wait for it. ``options``: messages, raw, tools, max_tokens, stop,
        threshold, temperature, top_p, seed, timeout_s."""
        req = _checked(prompt, options)
        return self._started().call(self.router.generate, req)

    async def agenerate(self, prompt: str | RouteRequest | None = None, **options: Any) -> RoutedResult:
        return await self._aroute(_checked(prompt, options))

    async def _aroute(self, req: RouteRequest) -> RoutedResult:
        """A checked request, routed on the engines' loop."""
        portal = await self._astarted()
        try:
            return await portal.acall(self.router.generate, req)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller cancelled us: let the cancellation propagate
            raise RequestCancelledError("the routed request was cancelled (the client was closed)") from None

    def batch(self, prompts: Sequence[str | RouteRequest], **options: Any) -> list[RoutedResult]:
        """Route many requests *concurrently* (engines that batch in flight run them together). Every request
        is checked before any starts; the first that fails cancels the others (their results would be lost)."""
        reqs = [_checked(p, options) for p in prompts]
        return self._started().call(self._abatch, reqs)  # on the engines' loop, where acall awaits directly

    async def abatch(self, prompts: Sequence[str | RouteRequest], **options: Any) -> list[RoutedResult]:
        return await self._abatch([_checked(p, options) for p in prompts])

    async def _abatch(self, reqs: Sequence[RouteRequest]) -> list[RoutedResult]:
        tasks = [asyncio.ensure_future(self._aroute(r)) for r in reqs]
        try:
            return list(await asyncio.gather(*tasks))
        finally:  # one failed (or the caller cancelled): stop the rest, whose results no one would read
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stream(self, prompt: str | RouteRequest | None = None, **options: Any) -> Iterator[RouterEvent]:
        """Events (tokens, steps, done) as they happen. Breaking out of the loop cancels the request."""
        req = _checked(prompt, options)
        events: queue.Queue[Any] = queue.Queue()
        future = self._pump(self._started(), req, events.put)
        try:
            while (event := _unwrap(events.get())) is not None:
                yield event
        finally:
            future.cancel()

    async def astream(self, prompt: str | RouteRequest | None = None, **options: Any) -> AsyncIterator[RouterEvent]:
        req = _checked(prompt, options)
        portal = await self._astarted()
        caller = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def deliver(item: Any) -> None:
            if not caller.is_closed():
                caller.call_soon_threadsafe(events.put_nowait, item)

        future = self._pump(portal, req, deliver)
        try:
            while (event := _unwrap(await events.get())) is not None:
                yield event
        finally:
            future.cancel()

    def _pump(self, portal: EnginePortal, req: RouteRequest, deliver: Callable[[Any], None]) -> Future[None]:
        """Run ``req``'s stream on the engines' loop, handing each event to ``deliver``, then what it raised
        (if anything), then ``_DONE``. Cancelling the returned future cancels the request."""

        async def pump() -> None:
            try:
                async for event in self.router.stream(req):
                    deliver(event)
            except BaseException as exc:  # delivered to the consumer
                deliver(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                deliver(_DONE)

        future = portal.submit(pump)

        # A pump cancelled before it ran (the client closed meanwhile) never reaches its `finally`:
        # end the stream from the future too, or the consumer would wait for events forever.
        def end(_: Any) -> None:
            deliver(asyncio.CancelledError())
            deliver(_DONE)

        future.add_done_callback(end)
        return future

    def tokenize(self, text: str) -> list[int]:
        """Token ids with the small model's tokenizer (LangChain's ``get_token_ids``)."""
        return self._started().call(self.manager.small.tokenize, text)

    def render_chat(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        return self._started().call(partial(self.manager.small.render_chat, messages, tools=tools))


def _checked(prompt: str | RouteRequest | None, options: dict[str, Any]) -> RouteRequest:
    """The request, validated here: a bad one fails before any engine starts (a first call loads the models)."""
    req = as_request(prompt, options)
    validate_request(req)
    return req


def _unwrap(item: Any) -> RouterEvent | None:
    """A streamed item as its event; None at the end; what the engines' side raised, raised here."""
    if item is _DONE:
        return None
    if isinstance(item, asyncio.CancelledError):  # the engines' side, not our caller, cancelled
        raise RequestCancelledError("the routed request was cancelled")
    if isinstance(item, BaseException):
        raise item
    return item
