"""BackendManager: builds both engines from one validated config and owns their lifecycle.

It is the client side of two engines (as vLLM's core client is of its engine core): it constructs them
from :class:`~glimp_llm.config.GlimpConfig` (one shared object when small and large name the same
model), starts them together, checks that they can exchange token ids, reports health, and closes
everything on exit — as an async context manager, or a sync one that runs the engines on a private
event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from glimp_llm._loop import LoopThread
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
        only ``config.router`` is used); or adopt an existing ``router``, its engines and its settings."""
        if router is not None:
            if small is not None or large is not None:
                raise ConfigurationError("pass router= or small=/large= engines, not both")
            small, large = router.small, router.large
            config = (config or GlimpConfig()).model_copy(update={"router": router.config})
        self.config = config or GlimpConfig()
        if (small is None) != (large is None):
            raise ConfigurationError("pass both small= and large= engines, or neither")
        self.adopted = small is not None
        if small is not None and large is not None:
            self.small, self.large = small, large
        else:
            self.small = build_engine(self.config.small, "small")
            self.large = (
                self.small if self.config.large == self.config.small else build_engine(self.config.large, "large")
            )
        self.router = router or Router(self.small, self.large, self.config.router)
        self._started = False
        self._loop_thread: LoopThread | None = None

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

    # Synchronous use: the engines live on a private event-loop thread.
    def __enter__(self) -> BackendManager:
        self._loop_thread = LoopThread(name="glimp-manager")
        try:
            self._loop_thread.run(self.start())
        except BaseException:
            self._loop_thread.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop_thread is not None:
            try:
                self._loop_thread.run(self.close())
            finally:
                self._loop_thread.stop()
                self._loop_thread = None

    @property
    def loop_thread(self) -> LoopThread | None:
        return self._loop_thread
