"""A private event loop on its own thread, so sync callers (and callers on other loops) can share
engines that must live on one loop (TensorRT-LLM requires its calls from inside the running loop;
asyncio primitives bind to the loop that first uses them)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from glimp_llm.errors import EngineUnavailableError, RequestCancelledError

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "glimp-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        # Futures handed out and not done yet: a coroutine submitted while the loop stops may never run,
        # and its caller would wait forever; stop() cancels what is left (tests/test_load_faults.py).
        self._lock = threading.Lock()
        self._pending: set[Future[Any]] = set()
        self._stopping = False
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop. Once :meth:`stop` has begun this raises
        :class:`~glimp_llm.errors.EngineUnavailableError` instead of returning a future nothing will run."""
        with self._lock:
            if self._stopping:
                coro.close()
                raise EngineUnavailableError(
                    "the engines' event loop has stopped (the client was closed); create a new one"
                )
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block for its result. Ctrl-C cancels the coroutine; a coroutine
        cancelled on the loop's side raises :class:`~glimp_llm.errors.RequestCancelledError`."""
        if self.in_loop_thread:
            coro.close()
            raise RuntimeError("LoopThread.run() called from its own loop; await the coroutine instead")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            # not asyncio.CancelledError: without this, sync callers saw an untyped exception
            raise RequestCancelledError("the request was cancelled (its client was closed while it ran)") from None
        except BaseException:
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from another event loop; cancelling the caller cancels the coroutine."""
        if self.in_loop_thread:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        if self.loop.is_closed():
            return

        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_drain(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
        with self._lock:
            stranded, self._pending = list(self._pending), set()
        for future in stranded:  # submitted as the loop stopped: they will never run
            future.cancel()
