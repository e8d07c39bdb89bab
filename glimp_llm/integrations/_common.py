"""What both adapters need from the client and nothing framework-specific: building or adopting a
:class:`~glimp_llm.Glimp`, naming its models without loading them, and the routing trace put into metadata.

The chat itself (prompt, tools, parsing, the streaming hold-back, usage) is :mod:`glimp_llm.chat`, shared
with ``glimp serve``; no routing happens here: every request goes through :class:`~glimp_llm.Glimp`.
"""

from __future__ import annotations

from typing import Any

from glimp_llm.client import Glimp
from glimp_llm.config import EngineConfig, GlimpConfig
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router
from glimp_llm.trace import RoutedResult

PROVIDER = "glimp"


def resolve_glimp(glimp: Glimp | None, config: GlimpConfig | str | None, router: Router | None = None) -> Glimp:
    """The client an adapter uses: the one given, a new one around an existing ``router`` (its engines and
    settings), or a new one from ``config`` (``None``: the embedded default). Engines start on first use,
    so constructing an adapter never loads a model."""
    given = [name for name, value in (("glimp", glimp), ("config", config), ("router", router)) if value is not None]
    if len(given) > 1:
        raise ConfigurationError(
            f"pass one of glimp= (an existing Glimp client), router= (an existing Router) or config= (a "
            f"GlimpConfig to build one), not both {' and '.join(given)}"
        )
    if glimp is not None:
        if not isinstance(glimp, Glimp):
            raise ConfigurationError(f"glimp= must be a glimp_llm.Glimp client; got {type(glimp).__name__}")
        return glimp
    if router is not None:
        if not isinstance(router, Router):
            raise ConfigurationError(f"router= must be a glimp_llm.Router; got {type(router).__name__}")
        return Glimp(router=router)
    if config is not None and not isinstance(config, GlimpConfig | str):
        raise ConfigurationError(
            f"config= must be a GlimpConfig or a path to a config file; got {type(config).__name__}"
        )
    return Glimp(config)


def engine_label(cfg: EngineConfig) -> str:
    """A model's name as configured (no engine is started to learn it)."""
    model = getattr(cfg, "model", None)
    if isinstance(model, str) and model:
        return model
    return f"{cfg.kind}:{getattr(cfg, 'name', 'engine')}"


def pair_label(glimp: Glimp) -> str:
    """``small->large`` (or the one name when both roles use the same model): the ``model_name``
    frameworks report, e.g. ``qwen2.5-coder-0.5b-instruct->qwen2.5-coder-1.5b-instruct``. Engines the
    client adopted (``router=``, ``small=``/``large=``) are named by their own ``name``."""
    if glimp.config is None:
        small, large = glimp.manager.small.name, glimp.manager.large.name
    else:
        small, large = engine_label(glimp.config.small), engine_label(glimp.config.large)
    return small if small == large else f"{small}->{large}"


def routing_trace(result: RoutedResult) -> dict[str, Any]:
    """The routing summary plus one compact line per step (who wrote it, the glimpse entropy, how
    many tokens, why it ended): what LangSmith-style tracing and LlamaIndex ``raw`` show."""
    trace: dict[str, Any] = dict(result.summary())
    trace["steps_detail"] = [
        {
            "index": s.index,
            "model": s.model,
            "entropy": None if s.entropy is None else round(s.entropy, 4),
            "tokens": s.tokens,
            "ended_by": s.ended_by,
            "glimpse_reused": s.glimpse_reused,
        }
        for s in result.steps
    ]
    return trace
