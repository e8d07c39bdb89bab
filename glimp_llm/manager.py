"""BackendManager: builds both engines from one validated config and owns their lifecycle.

It is the client side of two engines (as vLLM's core client is of its engine core): it constructs them
from :class:`~glimp_llm.config.GlimpConfig` (one shared object when small and large name the same
model), starts them together, checks that they can exchange token ids, reports health, and closes
everything on exit — as an async context manager, or a sync one that runs the engines on an event loop of
their own behind an anyio blocking portal (:class:`~glimp_llm._portal.EnginePortal`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from glimp_llm._portal import EnginePortal
from glimp_llm.config import EngineConfig, GlimpConfig
from glimp_llm.engines.base import Engine
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router

log = logging.getLogger("glimp_llm.manager")


def build_engine(cfg: EngineConfig, role: str) -> Engine:
    """The engine ``cfg`` describes (its kind's class, from :data:`~glimp_llm.config.ENGINE_KINDS`), as ``role``."""
    engine: Engine = cfg.engine_class().from_config(cfg, name=role)
    return engine


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
        self.adopted = small is not None
        self.config: GlimpConfig | None = None
        if small is not None and large is not None:
            self.small, self.large = small, large
            settings = (config or GlimpConfig()).router
        else:
            self.config = built = config or GlimpConfig()
            self.small = build_engine(built.small, "small")
            self.large = self.small if built.large == built.small else build_engine(built.large, "large")
            settings = built.router
        self.router = router or Router(self.small, self.large, settings)
        self._started = False
        self._portal: EnginePortal | None = None

    @property
    def shared_engine(self) -> bool:
        return self.small is self.large

    async def start(self) -> None:
        if self._started:
            return
        engines = [self.small] if self.shared_engine else [self.small, self.large]
        errors: list[BaseException] = []
        if any(getattr(e, "start_in_order", False) for e in engines):
            # e.g. two TensorRT-LLM engines on one GPU: each takes a fraction of the memory free when it
            # loads, so the small one must be fully loaded before the large one starts.
            for engine in engines:
                try:
                    await engine.start()
                except Exception as exc:
                    errors.append(exc)
                    break
        else:
            results = await asyncio.gather(*(e.start() for e in engines), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(e.close() for e in engines), return_exceptions=True)
            raise errors[0]
        if not self.shared_engine:
            s, lg = self.small.info, self.large.info
            if s.tokenizer_fingerprint != lg.tokenizer_fingerprint:
                log.warning(
                    "small (%s) and large (%s) tokenizers differ: contexts travel as text and each step is "
                    "re-tokenised for the other model (slower; exact prefixes are not guaranteed)",
                    s.model,
                    lg.model,
                )
        try:
            self.router.check_engines()
        except Exception:
            await asyncio.gather(*(e.close() for e in engines), return_exceptions=True)
            raise
        self._started = True

    async def close(self) -> None:
        engines = [self.small] if self.shared_engine else [self.small, self.large]
        await asyncio.gather(*(e.close() for e in engines), return_exceptions=True)
        self._started = False

    async def health(self) -> dict[str, Any]:
        small = await self.small.health()
        large = small if self.shared_engine else await self.large.health()
        return {
            "ok": small.ok and large.ok,
            "small": {"ok": small.ok, "detail": small.detail, "in_flight": small.in_flight, "queued": small.queued},
            "large": {"ok": large.ok, "detail": large.detail, "in_flight": large.in_flight, "queued": large.queued},
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
        self._portal = EnginePortal(name="glimp-manager")
        try:
            self._portal.call(self.start)
        except BaseException:
            self._portal.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._portal is not None:
            try:
                self._portal.call(self.close)
            finally:
                self._portal.close()
                self._portal = None

    @property
    def portal(self) -> EnginePortal | None:
        """Inside ``with``: where to run coroutines on the engines' loop (``manager.portal.call(fn, *args)``)."""
        return self._portal
