"""Fair, cancellable access to in-process model state that is not thread-safe.

A llama.cpp context holds one sequence's KV cache and must not be touched by two threads at once. An
in-process engine therefore owns a small pool of *slots* (one context each), and every call:

1. waits its turn in a FIFO queue (bounded: past ``max_queue`` waiters it fails fast with
   :class:`~glimp_llm.errors.OverloadedError` instead of growing memory);
2. gets the free slot whose cached tokens share the longest prefix with its context (cache affinity,
   as llama-server picks slots), so interleaved requests keep their prefix reuse;
3. runs in a worker thread, off the event loop, with a cancellation flag checked between tokens;
4. on cancellation, raises the flag and waits for the thread to stop before the slot is handed on, so
   no state is shared by two calls and nothing outlives its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from glimp_llm.errors import EngineUnavailableError, OverloadedError

StateT = TypeVar("StateT")
T = TypeVar("T")


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@dataclass
class Slot(Generic[StateT]):
    """One independent model context and the tokens its cache currently holds."""

    index: int
    state: StateT
    cached: list[int] = field(default_factory=list)


CancelFlag = threading.Event
"""Set from the loop when the caller is cancelled; polled by the worker thread between tokens."""


class SlotPool(Generic[StateT]):
    """FIFO-fair pool of slots whose work runs in dedicated worker threads."""

    def __init__(self, states: Sequence[StateT], *, name: str, max_queue: int | None = None) -> None:
        if not states:
            raise ValueError("a slot pool needs at least one slot")
        self.slots = [Slot(i, s) for i, s in enumerate(states)]
        self._free: list[Slot[StateT]] = list(self.slots)
        self._waiters: deque[asyncio.Future[Slot[StateT]]] = deque()
        self._max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=len(states), thread_name_prefix=f"glimp-{name}")
        self._name = name
        self._closed = False
        self.in_flight = 0

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def _acquire(self, context: Sequence[int]) -> Slot[StateT]:
        if self._closed:
            raise EngineUnavailableError(f"engine {self._name!r} is closed; create and start a new one")
        if self._free and not self._waiters:
            best = max(self._free, key=lambda s: common_prefix_length(s.cached, context))
            self._free.remove(best)
            return best
        if self._max_queue is not None and self.queued >= self._max_queue:
            raise OverloadedError(
                f"engine {self._name!r} has {self.queued} calls queued (limit {self._max_queue}); "
                "retry later or raise max_queue / add slots"
            )
        waiter: asyncio.Future[Slot[StateT]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed a slot just as we were cancelled: pass it on
            raise

    def _release(self, slot: Slot[StateT]) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    async def run(self, context: Sequence[int], work: Callable[[Slot[StateT], CancelFlag], T]) -> T:
        """Run ``work(slot, cancel)`` in a worker thread on the best free slot, cancellably."""
        slot = await self._acquire(context)
        cancel = CancelFlag()
        loop = asyncio.get_running_loop()
        self.in_flight += 1
        try:
            future = loop.run_in_executor(self._executor, work, slot, cancel)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                cancel.set()
                # The thread must stop touching the slot before anyone else gets it (however often we are
                # cancelled meanwhile, and whatever it raises).
                while not future.done():
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.shield(future)
                raise
        finally:
            self.in_flight -= 1
            self._release(slot)

    def reject_waiters(self) -> None:
        """Refuse new work and fail queued waiters. Call it on the loop thread: the waiters are asyncio
        futures, which only their own loop may complete (from another thread their tasks may never wake)."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(EngineUnavailableError(f"engine {self._name!r} was closed"))

    def close(self) -> None:
        """Refuse new work, fail queued waiters, and stop the worker threads (after running calls). It
        blocks: from a coroutine, call :meth:`reject_waiters` first, then this in a thread."""
        self.reject_waiters()
        self._executor.shutdown(wait=True, cancel_futures=True)
