"""BackendManager: builds both engines from one validated config and owns their lifecycle.

The client side of two engines (as vLLM's core client is of its engine core): one shared engine when small
and large name the same model; started together (in order when an engine asks), checked, closed together; an
async context manager, or a sync one whose engines run behind an :class:`~glimp_llm._portal.EnginePortal`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

from glimp_llm._portal import EnginePortal
from glimp_llm.config import GlimpConfig
from glimp_llm.engines.base import Engine
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router

log = logging.getLogger("glimp_llm.manager")


class BackendManager:
    """Owns the small and the large engine. ``async with`` or ``with`` it; then use :attr:`router`."""

    def __init__(
        self,
        config: GlimpConfig | None = None,
        *,
        small: Engine | None = None,
        large: Engine | None = None,
        router: Router | None = None,
    ) -> None:
        """Build engines from ``config``; or adopt ``small``/``large`` engine objects given directly (then
        only ``config.router`` is used); or adopt an existing ``router``, its engines and its settings.

        :attr:`config` is what the engines were built from, and None when they were adopted: no GlimpConfig
        describes engines built elsewhere (their settings are ``router.config`` and each engine's ``info``)."""
        if router is not None:
            if small is not None or large is not None:
                raise ConfigurationError("pass router= or small=/large= engines, not both")
            small, large = router.small, router.large
        if (small is None) != (large is None):
            raise ConfigurationError("pass both small= and large= engines, or neither")
        self.config: GlimpConfig | None = None
        if small is not None and large is not None:
            self.small, self.large = small, large
            settings = (config or GlimpConfig()).router
        else:
            self.config = built = config or GlimpConfig()
            # each engine configuration names its class (config.ENGINE_KINDS), built by EngineBase.from_config
            self.small = built.small.engine_class().from_config(built.small, name="small")
            if built.large == built.small:
                self.large = self.small
            else:
                self.large = built.large.engine_class().from_config(built.large, name="large")
            settings = built.router
        self.router = router or Router(self.small, self.large, settings)
        self._started = False
        self._portal: EnginePortal | None = None

    @property
    def shared_engine(self) -> bool:
        return self.small is self.large

    @property
    def _engines(self) -> list[Engine]:
        """The distinct engines (one when small and large share it)."""
        return [self.small] if self.shared_engine else [self.small, self.large]

    async def start(self) -> None:
        if self._started:
            return
        try:
            if any(getattr(e, "start_in_order", False) for e in self._engines):
                # e.g. two TensorRT-LLM engines on one GPU: each takes a fraction of the memory free when it
                # loads, so the small one must be fully loaded before the large one starts.
                for engine in self._engines:
                    await engine.start()
            else:
                results = await asyncio.gather(*(e.start() for e in self._engines), return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            small, large = self.small.info, self.large.info
            if small.tokenizer_fingerprint != large.tokenizer_fingerprint:
                log.warning(
                    "small (%s) and large (%s) tokenizers differ: contexts travel as text and each step is "
                    "re-tokenised for the other model (slower; exact prefixes are not guaranteed)",
                    small.model,
                    large.model,
                )
            self.router.check_engines()
        except Exception:
            await self.close()
            raise
        self._started = True

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self._engines), return_exceptions=True)
        self._started = False

    async def health(self) -> dict[str, Any]:
        small = await self.small.health()
        large = small if self.shared_engine else await self.large.health()
        return {
            "ok": small.ok and large.ok,
            "small": asdict(small),
            "large": asdict(large),
            "requests_running": self.router.admission.running,
            "requests_waiting": self.router.admission.waiting,
        }

    async def __aenter__(self) -> BackendManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Synchronous use: the engines live on the event loop behind a blocking portal.
    def __enter__(self) -> BackendManager:
        self._portal = EnginePortal(name="glimp-manager", startup=self.start, shutdown=self.close)
        return self

    def __exit__(self, *exc: object) -> None:
        portal, self._portal = self._portal, None
        if portal is not None:
            portal.close()  # closes the engines on their loop first

    @property
    def portal(self) -> EnginePortal | None:
        """Inside ``with``: where to run coroutines on the engines' loop (``manager.portal.call(fn, *args)``)."""
        return self._portal
