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
from collections.abc import Callable
from typing import Any

from glimp_llm._loop import LoopThread
from glimp_llm.config import (
    GlimpConfig,
    LlamaCppEngineConfig,
    OpenAICompatEngineConfig,
    ScriptedEngineConfig,
    TensorRTLLMEngineConfig,
)
from glimp_llm.engines.base import Engine
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router

log = logging.getLogger("glimp_llm.manager")


def _llama_cpp(cfg: LlamaCppEngineConfig, role: str) -> Engine:
    from glimp_llm.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(
        cfg.model,
        name=role,
        n_ctx=cfg.n_ctx,
        n_threads=cfg.n_threads,
        n_batch=cfg.n_batch,
        n_slots=cfg.n_slots,
        max_queue=cfg.max_queue,
        seed=cfg.seed,
        chat_template=cfg.chat_template,
    )


def _scripted(cfg: ScriptedEngineConfig, role: str) -> Engine:
    from glimp_llm.engines.scripted import ScriptedEngine

    return ScriptedEngine(
        cfg.response,
        entropies=cfg.entropies,
        name=cfg.name if cfg.name != "scripted" else role,
        token_seconds=cfg.token_seconds,
        context_window=cfg.context_window,
        n_slots=cfg.n_slots,
        max_queue=cfg.max_queue,
    )


def _openai(cfg: OpenAICompatEngineConfig, role: str) -> Engine:
    from glimp_llm.engines.openai_compat import OpenAICompatEngine

    return OpenAICompatEngine.from_config(cfg, name=role)


def _tensorrt_llm(cfg: TensorRTLLMEngineConfig, role: str) -> Engine:
    from glimp_llm.engines.tensorrt_llm import TensorRTLLMEngine

    return TensorRTLLMEngine.from_config(cfg, name=role)


ENGINE_FACTORIES: dict[str, Callable[[Any, str], Engine]] = {
    "llama_cpp": _llama_cpp,
    "scripted": _scripted,
    "openai": _openai,
    "tensorrt_llm": _tensorrt_llm,
}


def build_engine(cfg: Any, role: str) -> Engine:
    factory = ENGINE_FACTORIES.get(cfg.kind)
    if factory is None:
        raise ConfigurationError(f"{role}.kind={cfg.kind!r} has no engine; use one of {sorted(ENGINE_FACTORIES)}")
    return factory(cfg, role)


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
