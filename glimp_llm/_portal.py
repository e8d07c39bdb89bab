"""The engines' event loop: an anyio blocking portal, with the typed errors and the clean close we promise.

Engines must be called from inside the one running loop that owns them (TensorRT-LLM's ``generate_async``;
asyncio primitives bind to the loop that first uses them). A blocking portal
(:func:`anyio.from_thread.start_blocking_portal`) runs that loop on its own thread, so a plain script,
LangChain's executor threads and another event loop (LlamaIndex's, a notebook's) all reach the same engines.

:class:`EnginePortal` adds only what the portal leaves to its user: a closed portal answers
:class:`~glimp_llm.errors.EngineUnavailableError` and a call cancelled on the engines' side
:class:`~glimp_llm.errors.RequestCancelledError` (not anyio's ``RuntimeError`` or a bare ``CancelledError``);
Ctrl-C in a blocking call cancels the call; awaiting from another loop cancels with the awaiting task;
:meth:`EnginePortal.close` runs the owner's ``shutdown`` (closing the engines), cancels what still runs and never
strands a caller that submits while it closes (anyio checks that the loop runs, then schedules: between the two
the loop can stop and the caller would wait forever, tests/test_load_faults.py); and a portal still open when
the interpreter exits is closed by an ``atexit`` hook. Without it a script that never closed its client hung at
exit: the portal's thread is a daemon, frozen once finalisation begins, while the garbage collector's close of
the portal waits for that thread to stop the loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from anyio.from_thread import start_blocking_portal

from glimp_llm.errors import EngineUnavailableError, RequestCancelledError

T = TypeVar("T")
log = logging.getLogger(__name__)

#: portals not closed yet, for the exit hook (weak: a portal nobody holds closes as its owner is collected)
_OPEN: weakref.WeakSet[EnginePortal] = weakref.WeakSet()


@atexit.register
def _close_open_portals() -> None:
    """atexit handlers run before daemon threads are frozen: the last moment a portal can still close."""
    for portal in list(_OPEN):
        try:
            portal.close()
        except Exception:  # at exit nobody can handle it; say what failed
            log.exception("closing the engines at interpreter exit failed")


class EnginePortal:
    """An event loop on its own thread named ``name``, started at construction (then ``startup()`` is run on it;
    if that fails, the loop is closed again), reached from any thread or loop. ``shutdown()`` is run on it by
    :meth:`close`, once, when the startup succeeded."""

    def __init__(
        self,
        name: str = "glimp-engines",
        startup: Callable[[], Awaitable[Any]] | None = None,
        shutdown: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._exit = contextlib.ExitStack()
        self._portal = self._exit.enter_context(start_blocking_portal(name=name))
        self._thread_id = self._portal.call(threading.get_ident)
        # Submissions in progress and whether close() began: close waits for the first to finish, so no
        # submission can fall between the portal's "is it running?" check and its scheduling.
        self._state = threading.Condition()
        self._submitting = 0
        self._closing = False
        self._shutdown: Callable[[], Awaitable[Any]] | None = None
        _OPEN.add(self)
        if startup is not None:
            try:
                self.call(startup)
            except BaseException:
                self.close()
                raise
        self._shutdown = shutdown

    @property
    def in_portal_thread(self) -> bool:
        return threading.get_ident() == self._thread_id

    def submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> Future[T]:
        """Start ``func(*args)`` on the loop; cancelling the returned future cancels it. After :meth:`close`
        began this raises :class:`~glimp_llm.errors.EngineUnavailableError`."""
        with self._state:
            if self._closing:
                raise EngineUnavailableError(
                    "the engines' event loop has stopped (the client was closed); create a new one"
                )
            self._submitting += 1
        try:
            return self._portal.start_task_soon(func, *args)
        finally:
            with self._state:
                self._submitting -= 1
                self._state.notify_all()

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the loop and block for its result. Ctrl-C cancels it."""
        if self.in_portal_thread:
            raise RuntimeError("EnginePortal.call() from the engines' own loop would deadlock; await it instead")
        future = self.submit(func, *args)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # cancelled on the loop's side (the client closed): without this, sync callers saw an untyped error
            raise RequestCancelledError("the request was cancelled (its client was closed while it ran)") from None
        except BaseException:
            future.cancel()
            raise

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``func(*args)`` from any loop; cancelling the awaiting task cancels it on the engines' loop."""
        if self.in_portal_thread:
            return await func(*args)
        return await asyncio.wrap_future(self.submit(func, *args))

    def close(self) -> None:
        """Refuse new calls, run ``shutdown``, cancel what still runs, stop the loop and join its thread (also
        when ``shutdown`` fails: its error is raised after). Idempotent."""
        with self._state:
            if self._closing:
                return
            self._closing = True
            self._state.wait_for(lambda: self._submitting == 0)
        _OPEN.discard(self)
        try:
            if self._shutdown is not None:
                self._portal.call(self._shutdown)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop ended already
                self._portal.call(self._portal.stop, True)
            self._exit.close()
