"""Admission control: how many routed requests run at once, and how many may wait.

Past the waiting bound a request fails at once with :class:`~glimp_llm.errors.OverloadedError` (HTTP 429
in ``glimp serve``) rather than queueing without limit: memory stays bounded and callers learn early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from glimp_llm.errors import OverloadedError


class Admission:
    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self.waiting = 0
        # bound to the loop that first waits on it (asyncio primitives bind lazily since Python 3.10)
        self._semaphore = asyncio.Semaphore(max_running)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one running slot; yields the seconds spent waiting for it."""
        start = time.perf_counter()
        if self._semaphore.locked() and self.waiting >= self.max_queued:
            raise OverloadedError(
                f"{self.running} routed requests are running and {self.waiting} waiting "
                f"(limits {self.max_running}/{self.max_queued}); retry later or raise "
                "router.max_concurrent_requests / router.max_queued_requests"
            )
        self.waiting += 1  # only observable while acquire() waits: with a slot free it returns without suspending
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield time.perf_counter() - start
        finally:
            self.running -= 1
            self._semaphore.release()
