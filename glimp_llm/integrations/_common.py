"""What both adapters need from the client and nothing framework-specific: the fields that build or adopt a
:class:`~glimp_llm.Glimp`, its models named without loading them, and the routing trace put into metadata.

The chat itself (prompt, tools, parsing, the streaming hold-back, usage) is :mod:`glimp_llm.chat`, shared
with ``glimp serve``; no routing happens here: every request goes through :class:`~glimp_llm.Glimp`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from glimp_llm.client import Glimp
from glimp_llm.config import EngineConfig, GlimpConfig
from glimp_llm.errors import ConfigurationError
from glimp_llm.router import Router
from glimp_llm.trace import RoutedResult

PROVIDER = "glimp"
_STEP_DETAIL = {"index", "model", "entropy", "tokens", "ended_by", "glimpse_reused"}


class GlimpFields(BaseModel):
    """The fields both adapters share: the client and the request options.

    Every option left at ``None`` falls back to the client's :class:`~glimp_llm.config.RouterConfig`;
    each can also be given per call (``llm.invoke(x, temperature=0.7)`` or ``llm.bind(threshold=0.5)``).
    The client is the one given (``glimp=``), a new one around an existing ``router=`` (its engines and
    settings), or a new one from ``config=`` (``None``: the embedded default). Engines start on first use,
    so constructing an adapter never loads a model.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    glimp: Glimp | None = Field(default=None, exclude=True, description="an existing client to share")
    config: GlimpConfig | str | None = Field(
        default=None, exclude=True, description="a GlimpConfig (or config file) to build a client from"
    )
    router: Router | None = Field(
        default=None, exclude=True, description="an existing Router to wrap: its engines and its settings"
    )
    model_name: str | None = Field(
        default=None, alias="model", description="name reported in metadata; default: the configured small->large"
    )
    temperature: float | None = Field(default=None, description="sampling temperature (0 = greedy)")
    max_tokens: int | None = Field(default=None, description="budget of generated tokens per request")
    top_p: float | None = None
    seed: int | None = None
    threshold: float | None = Field(default=None, description="entropy threshold (nats) above which a step goes large")
    stop: list[str] | None = Field(default=None, description="stop strings; the output is cut before the first")
    timeout: float | None = Field(default=None, description="deadline per routed request, seconds")

    _client: Glimp = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _build_glimp_client(self) -> Any:
        # the field types are checked by pydantic already; only the combination is ours to refuse
        given = [name for name in ("glimp", "config", "router") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ConfigurationError(
                f"pass one of glimp= (an existing Glimp client), router= (an existing Router) or config= (a "
                f"GlimpConfig to build one), not both {' and '.join(given)}"
            )
        self._client = self.glimp if self.glimp is not None else Glimp(self.config, router=self.router)
        self._owns_client = self.glimp is None  # a client around router= closes that router's engines
        return self

    @property
    def client(self) -> Glimp:
        """The routed generator this adapter runs on (share it with ``glimp=`` to load models once)."""
        return self._client

    @property
    def model_label(self) -> str:
        """``model_name``, else ``small->large`` (or the one name when both roles use the same model), e.g.
        ``qwen2.5-coder-0.5b-instruct->qwen2.5-coder-1.5b-instruct``. Engines the client adopted
        (``router=``, ``small=``/``large=``) are named by their own ``name``."""
        if self.model_name:
            return self.model_name
        client = self._client
        if client.config is None:
            small, large = client.manager.small.name, client.manager.large.name
        else:
            small, large = engine_label(client.config.small), engine_label(client.config.large)
        return small if small == large else f"{small}->{large}"

    def close(self) -> None:
        """Release the engines of a client this adapter built; a shared one (``glimp=``) is left to its owner."""
        if self._owns_client:
            self._client.close()


def engine_label(cfg: EngineConfig) -> str:
    """A model's name as configured (no engine is started to learn it)."""
    model = getattr(cfg, "model", None)
    if isinstance(model, str) and model:
        return model
    return f"{cfg.kind}:{getattr(cfg, 'name', 'engine')}"


def routing_trace(result: RoutedResult) -> dict[str, Any]:
    """The routing summary plus one compact line per step (who wrote it, the glimpse entropy, how
    many tokens, why it ended): what LangSmith-style tracing and LlamaIndex ``raw`` show."""
    trace: dict[str, Any] = dict(result.summary())
    trace["steps_detail"] = [
        {**s.model_dump(include=_STEP_DETAIL), "entropy": None if s.entropy is None else round(s.entropy, 4)}
        for s in result.steps
    ]
    return trace
